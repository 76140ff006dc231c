//! `restart` and `memory` end to end at a tiny size against the reference etcd and Ballast:
//! the figures are there and plausible (never compared against a time), every key is back,
//! and the servers and temp dirs are gone afterwards — also after an error and a Ctrl-C.
//!
//! The Ballast binary is `$BALLAST_BIN`, else `$CARGO_TARGET_DIR/debug/ballast`, else the
//! workspace's `target/debug/ballast` (build it with `cargo build -p ballast-net --bin ballast`).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ballast_bench::output::server_table::{memory_table, restart_table};
use ballast_bench::server_bench::memory::MemoryOutput;
use ballast_bench::server_bench::restart::RestartOutput;
use common::{ballast_bin, run_json};

fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ballast-bench"))
}

/// Processes whose command line mentions `dir` (servers started with a data dir under it).
fn processes_under(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().to_string();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if text.contains(&needle) {
            out.push(format!("{}: {text}", entry.file_name().to_string_lossy()));
        }
    }
    out
}

fn assert_cleaned_up(tmp: &Path) {
    let left: Vec<_> = std::fs::read_dir(tmp).unwrap().flatten().collect();
    assert!(left.is_empty(), "temp dirs left behind: {left:?}");
    assert_eq!(
        processes_under(tmp),
        Vec::<String>::new(),
        "servers left running"
    );
}

#[test]
fn restart_reports_both_servers_after_kill_and_term() {
    let tmp = tempfile::tempdir().unwrap();
    let o: RestartOutput = run_json(
        bench()
            .args([
                "restart",
                "--size",
                "2MB",
                "--clients",
                "16",
                "--conns",
                "4",
                "--json",
            ])
            .args([
                "--servers",
                "etcd,ballast",
                "--stop",
                "kill,term",
                "--ballast-bin",
            ])
            .arg(ballast_bin())
            .arg("--tmp-dir")
            .arg(tmp.path())
            .args(["--load-timeout", "120s", "--ready-timeout", "120s"]),
    );
    assert_eq!(o.keys, 2_000_000 / 1024);
    assert_eq!(o.servers.len(), 2);
    for s in &o.servers {
        assert_eq!(s.load.keys, o.keys);
        let stops: Vec<&str> = s.restarts.iter().map(|r| r.stop.as_str()).collect();
        assert_eq!(stops, ["kill", "term"], "{}", s.server);
        for r in &s.restarts {
            assert!(
                r.first_range_s > 0.0 && r.health_s > 0.0,
                "{} {r:?}",
                s.server
            );
            assert_eq!(r.keys_after, o.keys as i64, "{} lost keys: {r:?}", s.server);
            assert!(r.wal.files > 0 && r.wal.bytes > 0, "{} {r:?}", s.server);
            assert!(r.data_dir.bytes >= r.wal.bytes, "{} {r:?}", s.server);
            assert!(r.vm_rss_bytes > 0, "{} {r:?}", s.server);
        }
    }
    let kill = &o.ratios[0];
    assert_eq!(kill.stop, "kill");
    assert!(kill.first_range_s.is_some() && kill.health_s.is_some());
    let table = restart_table(&o);
    for row in [
        "ballast/etcd",
        "after kill -9",
        "after SIGTERM",
        "first linearizable Range s",
        "/health true s",
        "WAL at stop MiB",
    ] {
        assert!(table.contains(row), "{row:?} missing from\n{table}");
    }
    assert_cleaned_up(tmp.path());
}

#[test]
fn memory_reports_bytes_per_key_for_both_servers() {
    let tmp = tempfile::tempdir().unwrap();
    let o: MemoryOutput = run_json(
        bench()
            .args([
                "memory",
                "--keys",
                "20000",
                "--clients",
                "32",
                "--conns",
                "4",
            ])
            .args([
                "--settle",
                "1s",
                "--json",
                "--servers",
                "etcd,ballast",
                "--ballast-bin",
            ])
            .arg(ballast_bin())
            .arg("--tmp-dir")
            .arg(tmp.path())
            .args(["--load-timeout", "300s"]),
    );
    assert_eq!(o.servers.len(), 2);
    for s in &o.servers {
        assert_eq!(s.keys_held, 20_000, "{}", s.server);
        assert!(s.loaded.vm_rss_bytes > 0 && s.loaded.vm_hwm_bytes >= s.loaded.vm_rss_bytes);
        assert!(s.rss_bytes_per_key > 0.0, "{s:?}");
        assert!(s.data_dir.bytes > 0, "{s:?}");
    }
    let r = o.ratios.as_ref().expect("both servers ran");
    assert!(r.rss_bytes_per_key.is_some_and(|x| x > 0.0));
    let table = memory_table(&o);
    for row in [
        "ballast/etcd",
        "VmRSS bytes per key",
        "VmHWM bytes per key",
        "RssFile",
    ] {
        assert!(table.contains(row), "{row:?} missing from\n{table}");
    }
    assert_cleaned_up(tmp.path());
}

#[test]
fn an_error_while_loading_stops_the_server() {
    let tmp = tempfile::tempdir().unwrap();
    // etcd refuses a 2 MB value (its request limit is 1.5 MiB): the load fails while the
    // server runs.
    let out = bench()
        .args([
            "restart",
            "--size",
            "4MB",
            "--val-size",
            "2000000",
            "--servers",
            "etcd",
        ])
        .arg("--tmp-dir")
        .arg(tmp.path())
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("put of key"), "{stderr}");
    assert_cleaned_up(tmp.path());
}

#[test]
fn ctrl_c_while_loading_stops_the_server() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = bench()
        .args(["restart", "--size", "1GB", "--servers", "etcd", "--tmp-dir"])
        .arg(tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs");
    // Wait until the server runs (a process mentions the temp dir), then a moment of loading.
    let deadline = Instant::now() + Duration::from_secs(60);
    while processes_under(tmp.path()).len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    let sent = Command::new("kill")
        .args(["-s", "INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ballast-bench did not stop within 30 s of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert_cleaned_up(tmp.path());
}
