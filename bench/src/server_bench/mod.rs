//! Benchmarks of the server process rather than of requests: `restart` (time to serve again
//! after a stop, with data) and `memory` (resident memory per key). Each starts the servers it
//! measures itself, through [`crate::local_server`], one after the other so they never compete
//! for the machine, and prints Ballast/etcd ratios.
//!
//! Invariants: every server started here is stopped and its temporary data dir removed when
//! the benchmark returns, fails, or is interrupted (SIGINT/SIGTERM: the run is dropped, and
//! dropping a `LocalServer` kills and reaps its process); figures are printed, never asserted.

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use ballast_proto::etcdserverpb::RangeRequest;

use crate::cli::{ServerArg, ServerBenchArgs};
use crate::conn::Pool;
use crate::local_server::LocalServer;

pub mod dir_usage;
pub mod loader;
pub mod memory;
pub mod probe;
pub mod procfs;
pub mod restart;

use loader::RegistryKeys;

/// etcd's default storage quota (2 GiB); loads that could come near it raise it for both sides.
const DEFAULT_QUOTA_BYTES: u64 = 2 << 30;

/// A server to measure and how to start it.
#[derive(Clone, Debug)]
pub struct ServerSetup {
    pub kind: ServerArg,
    pub binary: PathBuf,
    pub extra_args: Vec<String>,
}

impl ServerSetup {
    /// `etcd` or `ballast`.
    pub fn name(&self) -> &'static str {
        match self.kind {
            ServerArg::Etcd => "etcd",
            ServerArg::Ballast => "ballast",
        }
    }

    /// Starts a fresh single-node server with an empty data dir and waits until it serves.
    pub async fn start(&self, args: &ServerBenchArgs) -> Result<LocalServer> {
        LocalServer::start_with(
            &self.binary,
            &format!("bench-{}", self.name()),
            &self.extra_args,
            args.tmp_dir.as_deref(),
            None,
        )
        .await
    }
}

/// The servers `args` asks for, in order, each with its binary and flags; `data_bytes` sizes
/// the storage quota (raised above etcd's 2 GiB default when four times the data would exceed
/// it, the same for both).
pub fn setups(args: &ServerBenchArgs, data_bytes: u64) -> Result<Vec<ServerSetup>> {
    let quota = DEFAULT_QUOTA_BYTES.max(data_bytes.saturating_mul(4));
    let mut out = Vec::new();
    for kind in &args.servers {
        let (binary, extra) = match kind {
            ServerArg::Etcd => (args.etcd_bin.clone(), &args.etcd_arg),
            ServerArg::Ballast => (
                args.ballast_bin
                    .clone()
                    .ok_or_else(|| anyhow!("`ballast` among --servers needs --ballast-bin PATH"))?,
                &args.ballast_arg,
            ),
        };
        let mut extra_args = vec![format!("--quota-backend-bytes={quota}")];
        extra_args.extend(extra.iter().cloned());
        out.push(ServerSetup {
            kind: *kind,
            binary,
            extra_args,
        });
    }
    if out.is_empty() {
        return Err(anyhow!("--servers is empty"));
    }
    Ok(out)
}

/// How many of `keys` the server at `client_url` holds (one linearizable count-only Range).
pub async fn count_keys(client_url: &str, keys: &RegistryKeys) -> Result<i64> {
    let pool = Pool::connect(&[client_url.to_string()], 1).await?;
    let (key, range_end) = keys.range();
    let req = RangeRequest {
        key,
        range_end,
        count_only: true,
        ..Default::default()
    };
    Ok(pool.kv(0).range(req).await?.into_inner().count)
}

/// Runs `work` until it ends or the process is asked to stop (SIGINT or SIGTERM); on a signal
/// `work` is dropped, which stops every server it started, and an error is returned.
pub async fn until_interrupted<T>(work: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = work => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted (SIGINT); servers stopped")),
        _ = term.recv() => Err(anyhow!("terminated (SIGTERM); servers stopped")),
    }
}

/// `b / a`, `None` when undefined (see [`crate::ratio::ratio`]).
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    crate::ratio::ratio(a, b)
}
