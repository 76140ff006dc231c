//! The binary end to end: `--json` output fields, and `compare` starting the reference etcd
//! itself and alternating A B A B against another etcd, with the CPU time of the server it
//! started.

mod common;

use std::process::Command;

use ballast_bench::compare::CompareOutput;
use common::{etcd, run_json};

fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ballast-bench"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_json_has_the_documented_fields() {
    let server = etcd().await;
    let v: serde_json::Value = run_json(
        bench()
            .args([
                "put",
                "--total",
                "200",
                "--clients",
                "2",
                "--json",
                "--endpoints",
            ])
            .arg(&server.client_url),
    );
    for field in ["qps", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms"] {
        assert!(v[field].as_f64().is_some_and(|x| x > 0.0), "{field} in {v}");
    }
    assert_eq!(v["ops"], 200);
    assert!(v["errors"].is_object());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_alternates_sides_and_reports_ratios() {
    let server = etcd().await;
    let c: CompareOutput = run_json(
        bench()
            .args(["compare", "--a", "etcd", "--b"])
            .arg(&server.client_url)
            .args([
                "--rounds",
                "2",
                "--json",
                "put",
                "--total",
                "100",
                "--clients",
                "2",
            ]),
    );
    let labels: Vec<&str> = c.runs.iter().map(|r| &r.label[..1]).collect();
    assert_eq!(labels, ["A", "B", "A", "B"]);
    assert_eq!(c.a.ops, 200);
    assert_eq!(c.b.ops, 200);
    assert!(c.a.counts_add_up() && c.b.counts_add_up());
    assert!(
        c.a.endpoints[0] != c.b.endpoints[0],
        "A is the etcd compare started"
    );
    let qps = c.ratios.0["qps"].expect("both sides ran");
    assert!((qps - c.b.qps / c.a.qps).abs() < 1e-9);
    let cpu_s =
        c.a.server_cpu_s
            .expect("compare knows the pid of the etcd it started");
    let per_op = c.a.server_cpu_ms_per_op.expect("and its ops");
    assert!((per_op - cpu_s * 1000.0 / 200.0).abs() < 1e-9);
    let rounds: f64 = c.runs[0].server_cpu_s.unwrap() + c.runs[2].server_cpu_s.unwrap();
    assert!((cpu_s - rounds).abs() < 1e-9, "A's CPU is its rounds' sum");
    assert_eq!(c.b.server_cpu_s, None, "B is a user's endpoint: no pid");
    assert_eq!(c.ratios.0["server_cpu_ms_per_op"], None);
}
