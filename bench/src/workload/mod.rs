//! The workload contract the driver runs, and one module per workload.
//!
//! Contract for implementers: `setup` prepares the server and any background tasks once,
//! before warm-up; `client` builds per-client state; `op` performs one operation and returns
//! the gRPC status of a failure (the driver times it and counts it); `finish` runs once after
//! the measured phase, stops background tasks and adds workload-specific counters and latency
//! distributions to the result. `op` must be bounded: the driver also cancels it at the
//! per-request timeout.

use std::collections::BTreeMap;
use std::future::Future;

use anyhow::Result;
use tonic::Status;

use crate::conn::Pool;
use crate::latency::Latency;
use crate::result::BenchResult;
use crate::tally::Tally;

pub mod k8s;
pub mod list;
pub mod pager;
pub mod preload;
pub mod put;
pub mod range;
pub mod stamp;
pub mod txn_cas;
pub mod watch;
pub mod watcher;

/// Named latency distributions beyond the operations' own.
pub type Latencies = BTreeMap<String, Latency>;

/// A benchmark workload.
pub trait Workload: Send + Sync + 'static {
    /// Per-client state, moved into the client's task.
    type Client: Send + 'static;

    /// The workload's name, as on the command line.
    fn name(&self) -> &'static str;

    /// Prepares the server once (preload keys, open watchers).
    fn setup(&self, pool: &Pool) -> impl Future<Output = Result<()>> + Send;

    /// State for client number `index`.
    fn client(&self, index: usize, pool: &Pool) -> Self::Client;

    /// One operation; `seq` numbers operations across all clients from 0.
    fn op<'a>(
        &'a self,
        client: &'a mut Self::Client,
        seq: u64,
        tally: &'a mut Tally,
    ) -> impl Future<Output = Result<(), Status>> + Send + 'a;

    /// Runs once after the measured phase; may add counters to `result` and named latency
    /// distributions (e.g. `event`) to `latencies`.
    fn finish(
        &self,
        result: &mut BenchResult,
        latencies: &mut Latencies,
    ) -> impl Future<Output = Result<()>> + Send;
}
