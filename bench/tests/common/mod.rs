//! Shared test fixtures: a reference etcd on a free 127.0.0.1 port with a temporary data
//! directory (killed on drop, also when a test panics), and small run specs.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use ballast_bench::conn::Pool;
use ballast_bench::driver::RunSpec;
use ballast_bench::local_server::LocalServer;

/// Runs `cmd` (a `ballast-bench` command printing JSON), requires it to succeed (its stderr
/// otherwise) and parses its stdout.
pub fn run_json<T: serde::de::DeserializeOwned>(cmd: &mut std::process::Command) -> T {
    let out = cmd.output().expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON document on stdout")
}

/// Starts the reference etcd from PATH.
pub async fn etcd() -> LocalServer {
    LocalServer::start(Path::new("etcd"), "bench-test")
        .await
        .expect("reference etcd starts")
}

/// A pool of `conns` channels to `server`.
pub async fn pool(server: &LocalServer, conns: usize) -> Pool {
    Pool::connect(std::slice::from_ref(&server.client_url), conns)
        .await
        .expect("connects")
}

/// A bounded run: `total` operations over `clients`, 10 s per request at most.
pub fn spec(clients: usize, total: u64) -> RunSpec {
    RunSpec {
        clients,
        total: Some(total),
        duration: Some(Duration::from_secs(60)),
        rate: None,
        warmup: Duration::ZERO,
        op_timeout: Duration::from_secs(10),
        progress: false,
        label: String::new(),
        server_pids: Vec::new(),
    }
}

/// The Ballast binary: `$BALLAST_BIN`, else `$CARGO_TARGET_DIR/debug/ballast`, else the
/// workspace's `target/debug/ballast` (build it with `cargo build -p ballast-net --bin ballast`).
pub fn ballast_bin() -> PathBuf {
    let bin = match std::env::var_os("BALLAST_BIN") {
        Some(p) => PathBuf::from(p),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
            .join("debug")
            .join("ballast"),
    };
    assert!(
        bin.exists(),
        "no Ballast binary at {}: run `cargo build -p ballast-net --bin ballast` or set BALLAST_BIN",
        bin.display()
    );
    bin
}
