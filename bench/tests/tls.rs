//! `ballast-bench` against servers that serve TLS as kubeadm runs etcd (client certificates
//! required on client and peer URLs): `compare --tls` starts the reference etcd 3.4.23 and
//! Ballast (the binary as in `tests/server_bench.rs`) with the same flags and runs every
//! operation over TLS, on single nodes and on 3-member clusters (peers over TLS too); a
//! workload given `--endpoints` of a running TLS server dials it with etcdctl's
//! `--cacert/--cert/--key`, and without the client certificate every operation is refused,
//! so the servers really do require one.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use ballast_bench::compare::CompareOutput;
use ballast_bench::local_server::LocalServer;
use ballast_bench::result::BenchResult;
use ballast_bench::tls::Pki;
use common::{ballast_bin, run_json};

fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ballast-bench"))
}

/// Every one of `ops` operations succeeded, on `https://` endpoints only.
fn all_succeeded_over_tls(side: &BenchResult, ops: u64) {
    assert_eq!(side.ops, ops, "{}", side.label);
    assert_eq!(
        side.successes, ops,
        "{}: errors {:?}",
        side.label, side.errors
    );
    assert!(side.counts_add_up());
    assert!(
        !side.endpoints.is_empty() && side.endpoints.iter().all(|e| e.starts_with("https://")),
        "{}: {:?}",
        side.label,
        side.endpoints
    );
    assert!(side.qps > 0.0 && side.p99_ms > 0.0, "{}", side.label);
    assert!(
        side.server_cpu_s.is_some(),
        "{}: compare started it, so it knows its pids",
        side.label
    );
}

fn compare_tls(members: &str, total: u64) -> CompareOutput {
    run_json(
        bench()
            .args(["compare", "--tls", "--a", "etcd", "--b", "ballast"])
            .arg("--ballast-bin")
            .arg(ballast_bin())
            .args(["--members", members, "--rounds", "1", "--json"])
            .args(["put", "--clients", "4", "--conns", "2", "--timeout", "10s"])
            .args(["--total", &total.to_string()]),
    )
}

#[test]
fn compare_tls_runs_etcd_and_ballast_single_nodes_over_tls() {
    let c = compare_tls("1", 300);
    all_succeeded_over_tls(&c.a, 300);
    all_succeeded_over_tls(&c.b, 300);
    assert_eq!(c.a.label, "A etcd tls");
    assert_eq!(c.b.label, "B ballast tls");
    assert_ne!(c.a.endpoints, c.b.endpoints);
    assert_eq!(c.runs.len(), 2);
    assert!(
        c.ratios.0["qps"].is_some(),
        "both sides' figures: {:?}",
        c.ratios
    );
    assert!(c.ratios.0["p99_ms"].is_some());
}

#[test]
fn compare_tls_runs_three_member_clusters_with_peers_over_tls() {
    let c = compare_tls("3", 200);
    all_succeeded_over_tls(&c.a, 200);
    all_succeeded_over_tls(&c.b, 200);
    assert_eq!(c.a.label, "A etcd x3 all tls");
    assert_eq!(c.b.label, "B ballast x3 all tls");
    for side in [&c.a, &c.b] {
        assert_eq!(side.endpoints.len(), 3, "{}: every member", side.label);
    }
}

/// A `put` against a running server, with `tls_args` for its TLS.
fn put_against(server: &LocalServer, tls_args: &[&Path]) -> std::process::Output {
    let port = server.client_url.rsplit(':').next().unwrap();
    let mut cmd = bench();
    cmd.args(["put", "--total", "20", "--clients", "2", "--timeout", "3s"])
        .args(["--json", "--no-progress", "--endpoints"])
        .arg(format!("127.0.0.1:{port}"));
    for (flag, path) in ["--cacert", "--cert", "--key"].iter().zip(tls_args) {
        cmd.arg(flag).arg(path);
    }
    cmd.output().expect("runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_of_running_tls_servers_take_etcdctls_flags() {
    let pki = Arc::new(Pki::generate().unwrap());
    for (binary, name) in [
        (Path::new("etcd").to_path_buf(), "etcd"),
        (ballast_bin(), "ballast"),
    ] {
        let server = LocalServer::start_with(&binary, name, &[], None, Some(pki.clone()))
            .await
            .unwrap_or_else(|e| panic!("{name} starts with TLS: {e:#}"));
        assert!(server.client_url.starts_with("https://"));

        let full = [pki.ca.as_path(), &pki.client.cert, &pki.client.key];
        let out = put_against(&server, &full);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r: BenchResult = serde_json::from_slice(&out.stdout).expect("JSON");
        assert_eq!((r.ops, r.successes), (20, 20), "{name}: {:?}", r.errors);
        assert_eq!(
            r.endpoints.as_slice(),
            std::slice::from_ref(&server.client_url),
            "{name}: a bare host:port is https with --cacert"
        );

        // Without a client certificate the handshake or every call fails: either the run
        // cannot connect, or it connects and no operation succeeds.
        let out = put_against(&server, &full[..1]);
        if out.status.success() {
            let r: BenchResult = serde_json::from_slice(&out.stdout).expect("JSON");
            assert_eq!(
                r.successes, 0,
                "{name} took writes without a client certificate"
            );
        }
    }
}
