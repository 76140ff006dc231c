//! A 3-member cluster of the reference etcd started by `LocalCluster`: the members agree on the
//! leader it reports, take writes, and are gone (processes and directories) once it is dropped;
//! the same for Ballast (whose Status names shard 0's leader; the binary as in
//! `tests/server_bench.rs`); `compare --members 3` measures both sides on such clusters and
//! charges every member's CPU.

mod common;

use std::path::PathBuf;
use std::process::Command;

use ballast_bench::compare::CompareOutput;
use ballast_bench::local_cluster::{ClusterSpec, LocalCluster};
use ballast_bench::proc_cpu::read_cpu;
use common::{ballast_bin, run_json};

fn etcd_cluster_spec(name: &str) -> ClusterSpec {
    ClusterSpec {
        binary: PathBuf::from("etcd"),
        name: name.to_string(),
        members: 3,
        extra_args: Vec::new(),
        parent: None,
        tls: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_etcd_members_elect_the_reported_leader_and_are_cleaned_up() {
    let cluster = LocalCluster::start(&etcd_cluster_spec("lc-test"))
        .await
        .expect("a 3-member etcd cluster starts");
    let pids = cluster.pids();
    assert_eq!(pids.len(), 3);
    let urls = cluster.client_urls();
    let mut distinct = urls.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        3,
        "each member on its own client port: {urls:?}"
    );
    assert_eq!(
        cluster.current_leader().await.expect("a leader"),
        cluster.leader(),
        "asked again, the members name the same leader"
    );
    let names: Vec<&str> = cluster.members().iter().map(|m| m.name()).collect();
    assert_eq!(names, ["lc-test-0", "lc-test-1", "lc-test-2"]);
    let dirs: Vec<PathBuf> = cluster
        .members()
        .iter()
        .map(|m| m.data_dir.parent().unwrap().to_path_buf())
        .collect();
    for d in &dirs {
        assert!(d.join("data").is_dir(), "{} holds a data dir", d.display());
    }
    drop(cluster);
    for d in &dirs {
        assert!(!d.exists(), "{} removed with the cluster", d.display());
    }
    for pid in pids {
        let stat = format!("/proc/{pid}/stat");
        let gone = std::fs::read_to_string(&stat).map_or(true, |s| !s.contains("(etcd)"));
        assert!(gone, "member {pid} was killed and reaped");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_ballast_members_agree_on_shard_0s_leader_and_are_cleaned_up() {
    let spec = ClusterSpec {
        binary: ballast_bin(),
        name: "lc-ballast".into(),
        members: 3,
        extra_args: vec!["--shards".into(), "2".into()],
        parent: None,
        tls: None,
    };
    let cluster = LocalCluster::start(&spec)
        .await
        .expect("a 3-member Ballast cluster starts");
    let pids = cluster.pids();
    assert_eq!(pids.len(), 3);
    for &pid in &pids {
        read_cpu(pid).expect("every member is running");
    }
    assert_eq!(
        cluster.current_leader().await.expect("a leader"),
        cluster.leader(),
        "asked again, the members name the same leader"
    );
    let dirs: Vec<PathBuf> = cluster
        .members()
        .iter()
        .map(|m| m.data_dir.parent().unwrap().to_path_buf())
        .collect();
    drop(cluster);
    for d in &dirs {
        assert!(!d.exists(), "{} removed with the cluster", d.display());
    }
    for pid in pids {
        assert!(read_cpu(pid).is_err(), "member {pid} was killed and reaped");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_cannot_start_fails_the_start_with_its_log() {
    let mut spec = etcd_cluster_spec("lc-bad");
    spec.extra_args = vec!["--no-such-flag".into()];
    let err = LocalCluster::start(&spec)
        .await
        .err()
        .expect("etcd refuses the flag");
    let text = format!("{err:#}");
    assert!(
        text.contains("member lc-bad-0") && text.contains("exited") && text.contains("log:"),
        "names the member, its exit and its log: {text}"
    );
}

#[test]
fn compare_on_three_member_clusters_sums_every_members_cpu() {
    let c: CompareOutput = run_json(Command::new(env!("CARGO_BIN_EXE_ballast-bench")).args([
        "compare",
        "--a",
        "etcd",
        "--b",
        "etcd",
        "--members",
        "3",
        "--rounds",
        "1",
        "--json",
        "put",
        "--total",
        "200",
        "--clients",
        "4",
        "--conns",
        "4",
    ]));
    for side in [&c.a, &c.b] {
        assert_eq!(side.ops, 200);
        assert!(side.label.ends_with("etcd x3 all"), "{}", side.label);
        assert_eq!(
            side.endpoints.len(),
            3,
            "connections spread over all members"
        );
        assert!(
            side.server_cpu_s.is_some(),
            "compare started the members, so it knows their pids"
        );
    }
    assert!(
        c.a.endpoints.iter().all(|e| !c.b.endpoints.contains(e)),
        "two clusters, not one"
    );
}

#[test]
fn compare_targets_the_leader_of_given_endpoints() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cluster = rt
        .block_on(LocalCluster::start(&etcd_cluster_spec("lc-eps")))
        .expect("starts");
    let leader_url = cluster.client_urls()[cluster.leader()].clone();
    let c: CompareOutput = run_json(
        Command::new(env!("CARGO_BIN_EXE_ballast-bench"))
            .args(["compare", "--a", "etcd", "--b"])
            .arg(cluster.client_urls().join(","))
            .args(["--target", "leader", "--rounds", "1", "--json"])
            .args(["put", "--total", "50"]),
    );
    assert_eq!(c.b.endpoints, [leader_url], "only the leader");
    assert_eq!(c.a.endpoints.len(), 1, "a single etcd node");
    drop(cluster);
}
