//! End-to-end tests of the `ballast-tune` binary: each subcommand runs, and what `show` and
//! `advise` print parses back through the public config API to the settings they describe.
//!
//! Invariant: every child process is bounded in time and killed on timeout or panic (Drop).

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ballast_tuning::config::{from_yaml_file, resolve};
use ballast_tuning::settings::SETTINGS_KEYS;
use ballast_tuning::{ConfigFile, Profile};

/// Kills the child if it is still running when dropped.
struct Killer(Child);

impl Drop for Killer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn run(args: &[&str]) -> Out {
    let child = Command::new(env!("CARGO_BIN_EXE_ballast-tune"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ballast-tune");
    let mut k = Killer(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = k.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "ballast-tune {args:?} ran over 60 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    k.0.stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    k.0.stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    Out {
        ok: status.success(),
        stdout,
        stderr,
    }
}

#[test]
fn profiles_prints_one_row_per_profile_name_first() {
    let o = run(&["profiles"]);
    assert!(o.ok, "{}", o.stderr);
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines.len(), 1 + Profile::all().len(), "{}", o.stdout);
    for (line, p) in lines[1..].iter().zip(Profile::all()) {
        assert_eq!(line.split_whitespace().next(), Some(p.name));
    }
}

#[test]
fn show_yaml_round_trips_through_the_config_parser() {
    let dir = tempfile::tempdir().unwrap();
    for p in Profile::all() {
        let o = run(&["show", p.name, "--format", "yaml"]);
        assert!(o.ok, "{}", o.stderr);
        let path = dir.path().join(format!("{}.yml", p.name));
        std::fs::write(&path, &o.stdout).unwrap();
        let cf = from_yaml_file(&path).unwrap();
        assert!(cf.unknown_keys.is_empty(), "{:?}", cf.unknown_keys);
        let c = resolve(&[&cf]).unwrap();
        assert_eq!(c.profile.as_deref(), Some(p.name));
        assert_eq!(c.settings, p.settings(), "profile {}", p.name);
        // The file states every value itself, not only through `profile:`.
        let without_profile: String = o
            .stdout
            .lines()
            .filter(|l| !l.starts_with("profile:"))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&path, without_profile).unwrap();
        let c = resolve(&[&from_yaml_file(&path).unwrap()]).unwrap();
        assert_eq!(c.profile, None);
        assert_eq!(
            c.settings,
            p.settings(),
            "profile {} without profile key",
            p.name
        );
    }
}

#[test]
fn show_flags_are_etcd_style_flags_the_config_layer_accepts() {
    let o = run(&["show", "medium", "--format", "flags"]);
    assert!(o.ok, "{}", o.stderr);
    let mut flags = ConfigFile::default();
    for line in o.stdout.lines() {
        let flag = line.strip_prefix("--").expect("every line is a --flag");
        let (k, v) = flag.split_once('=').expect("--key=value");
        flags.set(k, v).unwrap();
    }
    assert!(o.stdout.contains("--heartbeat-interval=100\n"));
    assert!(o.stdout.contains("--election-timeout=1000\n"));
    let c = resolve(&[&flags]).unwrap();
    assert_eq!(c.settings, Profile::by_name("medium").unwrap().settings());
}

#[test]
fn show_unknown_profile_fails_naming_it() {
    let o = run(&["show", "galactic"]);
    assert!(!o.ok);
    assert!(o.stderr.contains("galactic"), "{}", o.stderr);
    assert!(o.stderr.contains("small"), "{}", o.stderr);
}

#[test]
fn advise_measures_a_temp_dir_and_a_loopback_peer() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("existing"), vec![1u8; 4096]).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = listener.local_addr().unwrap().to_string();
    let data_dir = dir.path().to_str().unwrap();
    let common = [
        "advise",
        "--data-dir",
        data_dir,
        "--probe-bytes",
        "23000",
        "--probe-seconds",
        "10",
        "--rtt-samples",
        "3",
        "--rtt-timeout-ms",
        "500",
        "--peers",
        &peer,
    ];

    // Both disk probes: the bench crate's (default) and the plain-std one.
    let mut args = common.to_vec();
    args.extend(["--nodes", "250", "--disk-probe", "std"]);
    let o = run(&args);
    assert!(o.ok, "{}", o.stderr);
    assert!(
        o.stdout.contains("disk: 10 writes of 2300 B"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains("(ballast-tune write+fdatasync)"),
        "{}",
        o.stdout
    );

    let mut args = common.to_vec();
    args.extend(["--nodes", "250"]);
    let o = run(&args);
    assert!(o.ok, "{}", o.stderr);
    assert!(
        o.stdout.contains("disk: 10 writes of 2300 B"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains("ballast-bench disk check"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains(&format!("peer {peer}: RTT")),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("data dir holds 4 KiB"), "{}", o.stdout);
    let table_keys: Vec<&str> = o
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("SETTING"))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(table_keys[0], "profile");
    for (k, _) in SETTINGS_KEYS {
        assert!(table_keys.contains(k), "{k} missing from\n{}", o.stdout);
    }
    assert!(
        o.stdout.contains("profile                    medium"),
        "{}",
        o.stdout
    );

    let mut args = common.to_vec();
    args.extend(["--rps", "20000", "--format", "yaml"]);
    let o = run(&args);
    assert!(o.ok, "{}", o.stderr);
    let path = dir.path().join("advised.yml");
    std::fs::write(&path, &o.stdout).unwrap();
    let c = resolve(&[&from_yaml_file(&path).unwrap()]).unwrap();
    assert_eq!(c.profile.as_deref(), Some("xlarge"));
    let cores = std::thread::available_parallelism().unwrap().get() as u32;
    assert!(c.settings.shards >= 1 && c.settings.shards <= cores.max(1));
    assert!(o.stdout.contains("# Why: "), "{}", o.stdout);
    // The probe file is gone; the data dir holds what it held plus the advice file.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    drop(listener);
}

#[test]
fn advise_refuses_nodes_and_rps_together() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(&[
        "advise",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--nodes",
        "5",
        "--rps",
        "5",
        "--skip-disk",
    ]);
    assert!(!o.ok);
    assert!(
        o.stderr.contains("--rps") || o.stderr.contains("--nodes"),
        "{}",
        o.stderr
    );
}

#[test]
fn check_reads_a_file_like_the_server_and_names_bad_keys() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yml");
    std::fs::write(
        &good,
        "profile: small\nheartbeat-interval: 200\nelection-timeout: 2000\nbogus: 1\n",
    )
    .unwrap();
    let o = run(&["check", good.to_str().unwrap()]);
    assert!(o.ok, "{}", o.stderr);
    assert!(o.stdout.contains("profile: small\n"), "{}", o.stdout);
    assert!(
        o.stdout.contains("heartbeat-interval: 200\n"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains("unknown config key `bogus`"),
        "{}",
        o.stdout
    );
    let o = run(&["check", good.to_str().unwrap(), "--strict"]);
    assert!(!o.ok);
    assert!(o.stderr.contains("bogus"), "{}", o.stderr);
    let o = run(&["check", good.to_str().unwrap(), "--profile", "large"]);
    assert!(o.ok, "{}", o.stderr);
    assert!(o.stdout.contains("profile: large\n"), "{}", o.stdout);

    let bad = dir.path().join("bad.yml");
    std::fs::write(&bad, "election-timeout: soon\n").unwrap();
    let o = run(&["check", bad.to_str().unwrap()]);
    assert!(!o.ok);
    assert!(o.stderr.contains("`election-timeout`"), "{}", o.stderr);
}
