//! ballast-bench: load generator, disk check, side-by-side comparison and reports for any etcd
//! v3 endpoint (Ballast or etcd). The binary is `src/main.rs`; everything else is library, so
//! `ballast-tuning` can call the disk probe (`disk::run_disk_probe`) and tests can drive
//! workloads directly. `server_bench` measures the server process itself (restart time,
//! resident memory per key) on servers it starts.

pub mod cli;
pub mod compare;
pub mod conn;
pub mod disk;
pub mod driver;
pub mod errors;
pub mod keys;
pub mod latency;
pub mod leader;
pub mod local_cluster;
pub mod local_server;
pub mod output;
pub mod proc_cpu;
pub mod progress;
pub mod rate;
pub mod ratio;
pub mod report;
pub mod result;
pub mod runner;
pub mod server_bench;
pub mod tally;
pub mod tls;
pub mod workload;
