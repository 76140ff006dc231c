//! Third-party etcd v3 clients on other gRPC and HTTP stacks, run unchanged against the
//! reference etcd and Ballast: python-etcd3 (grpcio, the C core), etcd3gw (the JSON gateway
//! over `requests`) and the `etcd3` npm package (@grpc/grpc-js). Each client runs one script
//! (`conformance/clients/`) that prints a transcript, a line per observation; the transcript
//! Ballast gets must be etcd's, and both must be the expected one kept beside the script, so a
//! run that is all errors on both sides, or empty, fails too.
//!
//! The scripts print what legitimately differs between servers in a normalized form (lease ids
//! as L1, L2, ...; member ids and ports left out; TTLs as range checks) and write keys outside
//! `/registry/` only, so revisions are etcd's with any `BALLAST_SHARDS`.
//!
//! Invariants: each test starts its own etcd and Ballast; every script runs under
//! [`SCRIPT_BOUND`] (and a per-step watchdog of its own), killed at the bound; a missing client
//! install fails the test with the command that installs it (`scripts/install-deps.sh`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ballast_conformance::process::{run_bounded, Run};
use ballast_conformance::{Pair, Server};

/// Bound on one script run against one server (each script's own watchdog ends a step that
/// takes more than 20 s).
const SCRIPT_BOUND: Duration = Duration::from_secs(150);

/// `conformance/clients`.
fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients")
}

/// Fails the test (it does not skip) unless `scripts/install-deps.sh` installed the clients
/// from the pin file `pins`: it leaves a copy of that file at `installed`.
fn require_installed(pins: &str, installed: &str, what: &str) {
    let dir = clients_dir();
    let pins = std::fs::read(dir.join(pins)).expect("reading the pin file");
    match std::fs::read(dir.join(installed)) {
        Ok(copy) if copy == pins => {}
        Ok(_) => panic!("{what} were installed from other pins: run scripts/install-deps.sh"),
        Err(_) => panic!(
            "{what} are not installed ({} is missing): run scripts/install-deps.sh",
            dir.join(installed).display()
        ),
    }
}

/// The Python of the clients' virtualenv.
fn python() -> PathBuf {
    require_installed(
        "python/requirements.txt",
        ".deps/venv/installed-requirements.txt",
        "the Python etcd clients (etcd3, etcd3gw)",
    );
    clients_dir().join(".deps/venv/bin/python")
}

/// `node`, with the npm client installed beside the script.
fn node() -> PathBuf {
    require_installed(
        "js/package-lock.json",
        "js/node_modules/installed-package-lock.json",
        "the npm etcd client (etcd3)",
    );
    PathBuf::from("node")
}

/// Runs `program script args... <server>` and returns its run; the server's address is
/// appended as the script wants it.
fn run_script(mut cmd: Command, server_args: Vec<String>) -> Run {
    cmd.args(server_args)
        .current_dir(clients_dir())
        // Nothing written into the source tree.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1");
    let run = run_bounded(&mut cmd, SCRIPT_BOUND).expect("running the client script");
    assert!(
        !run.timed_out,
        "{cmd:?} ran past {SCRIPT_BOUND:?}; its output:\n{}",
        run.output()
    );
    run
}

/// Line-by-line difference of two transcripts, for failure messages.
fn diff(left: &str, right: &str, left_name: &str, right_name: &str) -> String {
    let l: Vec<&str> = left.lines().collect();
    let r: Vec<&str> = right.lines().collect();
    let mut out = String::new();
    for i in 0..l.len().max(r.len()) {
        let (a, b) = (l.get(i).copied(), r.get(i).copied());
        if a != b {
            out.push_str(&format!(
                "line {}:\n  {left_name}: {}\n  {right_name}: {}\n",
                i + 1,
                a.unwrap_or("<none>"),
                b.unwrap_or("<none>")
            ));
        }
    }
    out
}

/// The version a server reports in Status is its own (Ballast's is 3.5.17, see
/// docs/operations.md): on the `status:` lines it reads `version=<reported>` instead, after
/// checking that the client saw the one Status gives.
fn normalize_version(transcript: &str, version: &str) -> String {
    let reported = format!("version={version} ");
    transcript
        .lines()
        .map(|line| {
            if line.starts_with("status: ") {
                assert!(
                    line.contains(&reported),
                    "the client did not see the version {version} on: {line}"
                );
                format!("{}\n", line.replacen(&reported, "version=<reported> ", 1))
            } else {
                format!("{line}\n")
            }
        })
        .collect()
}

/// Runs one client script against etcd and against Ballast (at the same time, each on its own
/// server) and requires exit 0, Ballast's transcript equal to etcd's, and both equal to
/// `clients/expected/<name>.txt`.
async fn compare(name: &str, command: impl Fn(&Server) -> (Command, Vec<String>)) {
    let expected_path = clients_dir().join("expected").join(format!("{name}.txt"));
    let expected = std::fs::read_to_string(&expected_path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", expected_path.display()));
    let pair = Pair::start().await.expect("starting etcd and ballast");
    let versions = [
        pair.etcd.status().await.expect("etcd's status").version,
        pair.ballast
            .status()
            .await
            .expect("ballast's status")
            .version,
    ];
    let (etcd_cmd, etcd_args) = command(&pair.etcd);
    let (ballast_cmd, ballast_args) = command(&pair.ballast);
    let etcd_run = tokio::task::spawn_blocking(move || run_script(etcd_cmd, etcd_args));
    let ballast_run = tokio::task::spawn_blocking(move || run_script(ballast_cmd, ballast_args));
    let (etcd_run, ballast_run) = (etcd_run.await.unwrap(), ballast_run.await.unwrap());
    for (label, run) in [("etcd", &etcd_run), ("ballast", &ballast_run)] {
        eprintln!(
            "===== {name} against {label}: exit {:?} =====\n{}",
            run.code,
            run.output()
        );
    }
    let [etcd_out, ballast_out] = [(&etcd_run, &versions[0]), (&ballast_run, &versions[1])]
        .map(|(run, version)| normalize_version(&run.stdout, version));
    let differences = diff(&etcd_out, &ballast_out, "etcd", "ballast");
    assert!(
        differences.is_empty(),
        "{name}: Ballast's transcript differs from etcd's:\n{differences}"
    );
    assert!(
        etcd_run.success() && ballast_run.success(),
        "{name}: the script failed (etcd exit {:?}, ballast exit {:?})",
        etcd_run.code,
        ballast_run.code
    );
    let differences = diff(&expected, &etcd_out, "expected", "both");
    assert!(
        differences.is_empty(),
        "{name}: both servers' transcript differs from {}:\n{differences}",
        expected_path.display()
    );
    assert_eq!(
        expected.lines().last(),
        Some("done"),
        "{} must end with the scripts' last line",
        expected_path.display()
    );
}

fn host_port(server: &Server) -> Vec<String> {
    vec!["127.0.0.1".into(), server.client_port().to_string()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_etcd3_over_grpcio_sees_etcd() {
    let python = python();
    compare("python-etcd3", |server| {
        let mut cmd = Command::new(&python);
        cmd.arg("python/etcd3_transcript.py");
        (cmd, host_port(server))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_etcd3gw_over_the_json_gateway_sees_etcd() {
    let python = python();
    compare("python-etcd3gw", |server| {
        let mut cmd = Command::new(&python);
        cmd.arg("python/etcd3gw_transcript.py");
        (cmd, host_port(server))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_etcd3_over_grpc_js_sees_etcd() {
    let node = node();
    compare("node-etcd3", |server| {
        let mut cmd = Command::new(&node);
        cmd.arg("js/etcd3_transcript.js");
        (cmd, vec![server.endpoint()])
    })
    .await;
}
