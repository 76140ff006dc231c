//! Running `etcdctl` (v3 API) against a server with a timeout, and normalizing its output so the
//! reference etcd's and Ballast's can be compared.
//!
//! Invariants:
//! - Every spawned etcdctl is bounded: a plain command is killed after its timeout, a streaming
//!   one (watch, interactive watch) after its output went quiet or its deadline passed. The
//!   child is also killed when dropped (`kill_on_drop`), so a panicking test leaks nothing.
//! - Normalization replaces only what identifies a server rather than a result: its cluster
//!   and member IDs (decimal and hex), raft term, its client and peer ports, and whatever the
//!   test registers (lease IDs the servers generated). Everything else is compared verbatim.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use ballast_proto::etcdserverpb::MemberListRequest;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use crate::server::Server;

/// Default bound on a non-streaming etcdctl command.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(15);

/// What one etcdctl run produced.
#[derive(Debug, Clone, PartialEq)]
pub struct CtlOutput {
    /// Exit code; `None` when it was killed (timeout or end of a streaming read).
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub timed_out: bool,
}

impl CtlOutput {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

fn command(endpoint: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("etcdctl");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("ETCDCTL_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("--dial-timeout=3s")
        .arg("--command-timeout=8s")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Runs `etcdctl --endpoints=<endpoint> <args>` feeding `stdin` (then closing it); kills it
/// after `timeout`.
pub async fn run(
    endpoint: &str,
    args: &[&str],
    stdin: Option<&str>,
    timeout: Duration,
) -> Result<CtlOutput> {
    let mut child = command(endpoint, args)
        .spawn()
        .context("spawning etcdctl (is it installed? scripts/install-deps.sh)")?;
    let mut input = child.stdin.take().context("etcdctl stdin")?;
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).await?;
    }
    drop(input);
    let mut out = child.stdout.take().context("etcdctl stdout")?;
    let mut err = child.stderr.take().context("etcdctl stderr")?;
    let work = async {
        let mut o = Vec::new();
        let mut e = Vec::new();
        let (r1, r2, status) = tokio::join!(
            out.read_to_end(&mut o),
            err.read_to_end(&mut e),
            child.wait()
        );
        r1?;
        r2?;
        anyhow::Ok((status?, o, e))
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(done) => {
            let (status, o, e) = done?;
            Ok(CtlOutput {
                code: status.code(),
                stdout: o,
                stderr: String::from_utf8_lossy(&e).into_owned(),
                timed_out: false,
            })
        }
        Err(_) => {
            let _ = child.kill().await;
            Ok(CtlOutput {
                code: None,
                stdout: Vec::new(),
                stderr: format!(
                    "conformance harness: etcdctl {args:?} timed out after {timeout:?}"
                ),
                timed_out: true,
            })
        }
    }
}

/// One etcdctl step as the step-by-step comparisons show it (`auth.rs`, `restore.rs`,
/// `snapshot.rs`): exit code, stdout, and the `Error:` lines of stderr (etcdctl's own
/// messages; its retry logs carry times and client ids).
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutcome {
    pub code: Option<i32>,
    /// Stdout, the server's endpoint replaced by `<endpoint>`.
    pub stdout: String,
    pub errors: Vec<String>,
}

impl StepOutcome {
    /// The text two servers' answers are compared by.
    pub fn shown(&self) -> String {
        format!(
            "code {:?}\n{}{}",
            self.code,
            self.stdout,
            self.errors.join("\n")
        )
    }
}

/// Runs one step against `endpoint` (killed after `timeout`, which fails the step) and keeps
/// what [`StepOutcome`] shows.
pub async fn step(
    endpoint: &str,
    args: &[&str],
    stdin: Option<&str>,
    timeout: Duration,
) -> Result<StepOutcome> {
    let out = run(endpoint, args, stdin, timeout).await?;
    ensure!(!out.timed_out, "etcdctl {args:?} timed out");
    Ok(StepOutcome {
        code: out.code,
        stdout: out.stdout_text().replace(endpoint, "<endpoint>"),
        errors: out
            .stderr
            .lines()
            .filter(|l| l.starts_with("Error:"))
            .map(str::to_owned)
            .collect(),
    })
}

/// Runs each of `steps` against `endpoint`; every one must exit 0 (a setup, not a comparison).
pub async fn run_all(endpoint: &str, steps: &[&[&str]], timeout: Duration) -> Result<()> {
    for args in steps {
        let out = run(endpoint, args, None, timeout).await?;
        ensure!(out.code == Some(0), "etcdctl {args:?}: {}", out.stderr);
    }
    Ok(())
}

/// Users, roles and key permissions, a few keys, then `auth enable`: the state the restore and
/// snapshot tests carry from one server to another (root `root:rootpw`; `alice:apw` with roles
/// `reader` — read `/a/`, readwrite `k1`, write `[w1, w5)` — and `idle`; `carol` without a
/// password).
pub const AUTH_SETUP: &[&[&str]] = &[
    &["user", "add", "root:rootpw"],
    &["user", "grant-role", "root", "root"],
    &["role", "add", "reader"],
    &["role", "add", "idle"],
    &[
        "role",
        "grant-permission",
        "reader",
        "read",
        "/a/",
        "--prefix",
    ],
    &["role", "grant-permission", "reader", "readwrite", "k1"],
    &["role", "grant-permission", "reader", "write", "w1", "w5"],
    &["user", "add", "alice:apw"],
    &["user", "grant-role", "alice", "reader"],
    &["user", "grant-role", "alice", "idle"],
    &["user", "add", "carol", "--no-password"],
    &["put", "/a/x", "1"],
    &["put", "foo", "bar"],
    &["put", "k1", "v"],
    &["auth", "enable"],
];

/// Runs a streaming etcdctl (e.g. `watch`), writes `stdin` and keeps it open, and reads its
/// output until `want_lines` lines arrived (then a short grace period, to catch extra output)
/// or nothing new arrived for `quiet`, bounded by `max`; then kills it.
pub async fn run_streaming(
    endpoint: &str,
    args: &[&str],
    stdin: Option<&str>,
    want_lines: Option<usize>,
    quiet: Duration,
    max: Duration,
) -> Result<CtlOutput> {
    let mut child = command(endpoint, args)
        .spawn()
        .context("spawning etcdctl")?;
    let mut input = child.stdin.take().context("etcdctl stdin")?;
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).await?;
        input.flush().await?;
    }
    let mut out = child.stdout.take().context("etcdctl stdout")?;
    let mut err = child.stderr.take().context("etcdctl stderr")?;
    let start = Instant::now();
    let mut last_data = Instant::now();
    let mut stdout = Vec::new();
    let mut buf = [0u8; 4096];
    let grace = Duration::from_millis(300);
    let mut exited = None;
    loop {
        let lines = stdout.iter().filter(|&&b| b == b'\n').count();
        let wait = match want_lines {
            Some(n) if lines >= n => grace.saturating_sub(last_data.elapsed()),
            _ => quiet.saturating_sub(last_data.elapsed()),
        };
        let left = max.saturating_sub(start.elapsed());
        if wait.is_zero() || left.is_zero() {
            break;
        }
        match tokio::time::timeout(wait.min(left), out.read(&mut buf)).await {
            Err(_) => continue,
            Ok(Ok(0)) => {
                exited = tokio::time::timeout(Duration::from_secs(2), child.wait())
                    .await
                    .ok()
                    .and_then(|s| s.ok());
                break;
            }
            Ok(Ok(n)) => {
                stdout.extend_from_slice(&buf[..n]);
                last_data = Instant::now();
            }
            Ok(Err(e)) => return Err(e.into()),
        }
    }
    let _ = child.kill().await;
    drop(input);
    let mut e = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), err.read_to_end(&mut e)).await;
    Ok(CtlOutput {
        code: exited.and_then(|s| s.code()),
        stdout,
        stderr: String::from_utf8_lossy(&e).into_owned(),
        timed_out: false,
    })
}

/// Rewrites one server's identity out of etcdctl output.
#[derive(Debug, Clone)]
pub struct Normalizer {
    cluster_id: u64,
    member_id: u64,
    replacements: Vec<(String, String)>,
}

impl Normalizer {
    /// Learns the server's cluster and member IDs (through MemberList) and its ports.
    pub async fn for_server(server: &Server) -> Result<Normalizer> {
        let mut clients = server.clients().await?;
        let resp = clients
            .cluster
            .member_list(MemberListRequest {
                linearizable: false,
            })
            .await
            .with_context(|| format!("MemberList on {}", server.kind().label()))?
            .into_inner();
        let header = resp.header.unwrap_or_default();
        let member_id = resp
            .members
            .first()
            .map(|m| m.id)
            .unwrap_or(header.member_id);
        let mut n = Normalizer {
            cluster_id: header.cluster_id,
            member_id,
            replacements: Vec::new(),
        };
        for (id, name) in [
            (member_id, "<member-id>"),
            (header.cluster_id, "<cluster-id>"),
        ] {
            if id != 0 {
                n.add(format!("{id:x}"), name);
                n.add(format!("{id}"), name);
            }
        }
        if header.member_id != 0 && header.member_id != member_id {
            n.add(format!("{:x}", header.member_id), "<member-id>");
            n.add(format!("{}", header.member_id), "<member-id>");
        }
        n.add(format!("127.0.0.1:{}", server.client_port()), "<client>");
        n.add(format!("localhost:{}", server.client_port()), "<client>");
        n.add(format!("127.0.0.1:{}", server.peer_port()), "<peer>");
        n.add(format!("localhost:{}", server.peer_port()), "<peer>");
        Ok(n)
    }

    /// Registers a textual replacement (e.g. a generated lease ID).
    pub fn add(&mut self, from: impl Into<String>, to: impl Into<String>) {
        let from = from.into();
        if !from.is_empty() {
            self.replacements.push((from, to.into()));
            // Longer first, so "12345" is replaced before "1234".
            self.replacements
                .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        }
    }

    /// Normalizes output text: JSON documents structurally, other text line by line.
    pub fn text(&self, raw: &str) -> String {
        let trimmed = raw.trim();
        if (trimmed.starts_with('{') || trimmed.starts_with('['))
            && serde_json::from_str::<Value>(trimmed).is_ok()
        {
            let mut v: Value = serde_json::from_str(trimmed).expect("checked above");
            self.json(&mut v);
            return format!("{v}\n");
        }
        let mut out = String::new();
        for line in raw.split_inclusive('\n') {
            // `-w fields` prints one `"Name" : value` per line.
            let identity = ["\"RaftTerm\" :", "\"ClusterID\" :", "\"MemberID\" :"]
                .into_iter()
                .find(|key| line.trim_start().starts_with(key));
            let json_line = line.trim();
            match identity {
                Some(key) => out.push_str(&format!("{key} <normalized>\n")),
                // Interactive commands (txn -i) print prompts, then one JSON document.
                None if json_line.starts_with('{')
                    && serde_json::from_str::<Value>(json_line).is_ok() =>
                {
                    let mut v: Value = serde_json::from_str(json_line).expect("checked above");
                    self.json(&mut v);
                    out.push_str(&format!("{v}\n"));
                }
                None => out.push_str(&table_line(&self.replace(line))),
            }
        }
        out
    }

    fn replace(&self, s: &str) -> String {
        let mut s = s.to_string();
        for (from, to) in &self.replacements {
            s = s.replace(from.as_str(), to);
        }
        s
    }

    /// Normalizes a JSON value in place: header identity fields zeroed, IDs and ports replaced.
    pub fn json(&self, v: &mut Value) {
        match v {
            Value::Object(map) => {
                for (k, val) in map.iter_mut() {
                    match k.as_str() {
                        "cluster_id" | "member_id" | "raft_term" => *val = Value::from(0),
                        _ => self.json(val),
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|x| self.json(x)),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    if u != 0 && u == self.member_id {
                        *v = Value::from("<member-id>");
                    } else if u != 0 && u == self.cluster_id {
                        *v = Value::from("<cluster-id>");
                    } else {
                        let s = self.replace(&u.to_string());
                        if s != u.to_string() {
                            *v = Value::from(s);
                        }
                    }
                }
            }
            Value::String(s) => *s = self.replace(s),
            _ => {}
        }
    }
}

/// `-w table` pads every column to its widest value, so a value replaced by a placeholder (or a
/// member ID with fewer hex digits) changes the padding: cells are trimmed and rules shortened.
fn table_line(line: &str) -> String {
    let body = line.trim_end_matches('\n');
    let newline = if line.ends_with('\n') { "\n" } else { "" };
    if body.starts_with('+') && body.chars().all(|c| c == '+' || c == '-') {
        let cols = body.matches('+').count().saturating_sub(1);
        return format!("+{}{newline}", "-+".repeat(cols));
    }
    if body.starts_with('|') && body.ends_with('|') {
        let cells: Vec<&str> = body.split('|').map(str::trim).collect();
        return format!("{}{newline}", cells.join("|"));
    }
    line.to_string()
}

/// Replaces a JSON value's leaves by their type, for comparing the shape of outputs whose
/// values legitimately differ (e.g. `endpoint status`).
pub fn json_shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            Value::Object(m.iter().map(|(k, x)| (k.clone(), json_shape(x))).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(json_shape).collect()),
        Value::Number(_) => Value::from("number"),
        Value::String(_) => Value::from("string"),
        Value::Bool(_) => Value::from("bool"),
        Value::Null => Value::Null,
    }
}
