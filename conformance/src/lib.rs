//! Test support for Ballast's black-box conformance suite: the same requests are sent to the
//! reference etcd and to Ballast, and the answers compared.
//!
//! - [`server`]: start etcd and ballast on free loopback ports with temp data dirs, wait until
//!   they serve, kill them in `Drop` (printing their logs when a test fails).
//! - [`diff`]: ops, both servers' outcomes, the comparison and its normalizations.
//! - [`gen`]: seeded random op sequences and a directed sequence covering every error case.
//! - [`etcdctl`]: run `etcdctl` with a timeout and normalize its output.
//! - [`history`]: a varied history of puts, deletes, a txn, leases and a compaction, for the
//!   tests that carry a store through a snapshot file.
//! - [`netns`]: members in Linux network namespaces on a test-made bridge, for partition
//!   tests (needs root).
//! - [`tls`]: a throwaway CA and the certificates of a TLS-serving member and its clients.
//! - [`process`]: run a short-lived child command to its end within a time bound, capturing
//!   its output.
//! - [`partition`]: which shard Ballast keeps a key in (the Kubernetes preset), for tests run
//!   with several shards.
//!
//! Invariant: nothing here listens beyond 127.0.0.1 (or, in [`netns`], a private subnet on a
//! bridge the test made), and every wait is bounded.

pub mod crash;
pub mod diff;
pub mod etcdctl;
pub mod gen;
pub mod history;
pub mod linearizability;
pub mod netns;
pub mod partition;
pub mod process;
pub mod server;
pub mod tls;

pub use server::{both_etcd, Clients, Kind, Pair, Server};
