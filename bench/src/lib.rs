//! ballast-bench: load generator, disk check, side-by-side comparison and reports for any etcd
//! v3 endpoint (Ballast or etcd). The binary is `src/main.rs`; everything else is library, so
//! `ballast-tuning` can call the disk probe and tests can drive workloads directly.

pub mod conn;
pub mod driver;
pub mod errors;
pub mod keys;
pub mod latency;
pub mod progress;
pub mod rate;
pub mod ratio;
pub mod result;
pub mod tally;
pub mod workload;
pub mod disk;
