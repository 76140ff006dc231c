//! etcdctl end-to-end: the same `etcdctl` (v3 API) commands run against the reference etcd and
//! against Ballast, outputs compared after normalizing what identifies a server (cluster and
//! member IDs, raft term, ports, generated lease IDs, timings). Also count_only through the gRPC
//! client, which etcdctl 3.4 cannot send.
//!
//! Invariants: each test starts its own pair of servers (so tests run in parallel and under
//! nextest); every etcdctl has a timeout; a comparison also requires the reference to have
//! succeeded (or failed, where failure is the point), so two identical failures to connect can
//! never pass as "the same output".

use std::time::Duration;

use ballast_conformance::diff::normalize_header;
use ballast_conformance::etcdctl::{self, json_shape, CtlOutput, Normalizer, CMD_TIMEOUT};
use ballast_conformance::{Pair, Server};
use ballast_proto::etcdserverpb::{PutRequest, RangeRequest, RangeResponse};
use prost::Message;
use serde_json::Value;

/// Bound on one whole test.
const TEST_TIMEOUT: Duration = Duration::from_secs(120);
/// A streaming etcdctl is stopped after its output has been quiet this long.
const QUIET: Duration = Duration::from_millis(1200);
/// Hard bound on one streaming etcdctl.
const STREAM_MAX: Duration = Duration::from_secs(10);

/// What a comparison looks at: exit code, stdout, stderr without the client's own log lines.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

struct Duo {
    pair: Pair,
    norm: [Normalizer; 2],
}

/// Drops etcdctl's client-side JSON log lines (they carry timestamps and random client IDs).
fn clean_stderr(s: &str) -> String {
    s.lines()
        .filter(|l| !l.starts_with("{\"level\""))
        .map(|l| format!("{l}\n"))
        .collect()
}

impl Duo {
    async fn start() -> Duo {
        let pair = Pair::start().await.expect("starting the servers");
        let norm = [
            Normalizer::for_server(&pair.etcd).await.expect("etcd ids"),
            Normalizer::for_server(&pair.ballast)
                .await
                .expect("ballast ids"),
        ];
        Duo { pair, norm }
    }

    fn servers(&self) -> [&Server; 2] {
        self.pair.both()
    }

    fn seen(&self, side: usize, out: &CtlOutput) -> Seen {
        Seen {
            code: out.code,
            stdout: self.norm[side].text(&out.stdout_text()),
            stderr: self.norm[side].text(&clean_stderr(&out.stderr)),
        }
    }

    async fn run_both(&self, args: &[&str], stdin: Option<&str>) -> [CtlOutput; 2] {
        let mut outs = Vec::new();
        for s in self.servers() {
            outs.push(
                etcdctl::run(&s.endpoint(), args, stdin, CMD_TIMEOUT)
                    .await
                    .expect("running etcdctl"),
            );
        }
        [outs.remove(0), outs.remove(0)]
    }

    fn compare(&self, what: &str, outs: &[CtlOutput; 2], want_ok: bool) -> Seen {
        let a = self.seen(0, &outs[0]);
        let b = self.seen(1, &outs[1]);
        let ok = a.code == Some(0);
        assert_eq!(
            ok,
            want_ok,
            "etcdctl {what}: the reference etcd {} (so the command itself is wrong):\n{a:#?}",
            if ok { "succeeded" } else { "failed" }
        );
        assert_eq!(
            a,
            b,
            "etcdctl {what}: outputs differ\n--- etcd (normalized) ---\n{}\n--- ballast (normalized) ---\n{}\n--- raw etcd ---\n{}\n--- raw ballast ---\n{}",
            pretty(&a),
            pretty(&b),
            raw(&outs[0]),
            raw(&outs[1])
        );
        a
    }

    /// Runs `args` on both; the reference must succeed; outputs must be equal.
    async fn same(&self, args: &[&str]) -> Seen {
        let outs = self.run_both(args, None).await;
        self.compare(&args.join(" "), &outs, true)
    }

    /// Same, feeding `stdin`.
    async fn same_stdin(&self, args: &[&str], stdin: &str) -> Seen {
        let outs = self.run_both(args, Some(stdin)).await;
        self.compare(&format!("{} <<< {stdin:?}", args.join(" ")), &outs, true)
    }

    /// Runs `args` on both; the reference must fail; outputs (error text included) equal.
    async fn same_err(&self, args: &[&str]) -> Seen {
        let outs = self.run_both(args, None).await;
        self.compare(&args.join(" "), &outs, false)
    }

    /// A streaming command (watch): etcd's output is read until quiet, Ballast's until it has
    /// as many lines (plus a grace period) or went quiet; then both are compared.
    async fn same_streaming(&self, args: &[&str], stdin: Option<&str>) -> Seen {
        let [e, b] = self.servers();
        let first = etcdctl::run_streaming(&e.endpoint(), args, stdin, None, QUIET, STREAM_MAX)
            .await
            .expect("etcdctl");
        let lines = first.stdout.iter().filter(|&&c| c == b'\n').count();
        let second =
            etcdctl::run_streaming(&b.endpoint(), args, stdin, Some(lines), QUIET, STREAM_MAX)
                .await
                .expect("etcdctl");
        let outs = [first, second];
        let a = self.seen(0, &outs[0]);
        let bb = self.seen(1, &outs[1]);
        assert_eq!(
            a,
            bb,
            "etcdctl {}: streamed outputs differ\n--- etcd ---\n{}\n--- ballast ---\n{}",
            args.join(" "),
            pretty(&a),
            pretty(&bb)
        );
        a
    }
}

fn raw(o: &CtlOutput) -> String {
    format!(
        "exit code: {:?}{}\nstdout:\n{}\nstderr:\n{}",
        o.code,
        if o.timed_out { " (timed out)" } else { "" },
        o.stdout_text(),
        o.stderr
    )
}

fn pretty(s: &Seen) -> String {
    format!(
        "exit code: {:?}\nstdout:\n{}\nstderr:\n{}",
        s.code, s.stdout, s.stderr
    )
}

async fn bounded<F: std::future::Future<Output = ()>>(f: F) {
    tokio::time::timeout(TEST_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| panic!("test not done within {TEST_TIMEOUT:?}"));
}

/// Writes a fixed set of keys through etcdctl on both servers (outputs compared).
async fn seed_keys(d: &Duo) {
    for (k, v) in [
        ("foo", "bar"),
        ("foo1", "bar1"),
        ("foo2", "bar2"),
        ("fop", "x"),
        ("a/b", "1"),
        ("a/c", "2"),
        ("z", "last"),
    ] {
        let out = d.same(&["put", k, v]).await;
        assert_eq!(out.stdout, "OK\n");
    }
    d.same(&["put", "foo1", "bar1-again"]).await;
    d.same(&["put", "a/b", "11", "--prev-kv"]).await;
    d.same(&["put", "a/c", "22", "--prev-kv", "-w", "json"])
        .await;
    d.same(&["put", "foo2", "--ignore-value", "-w", "json"])
        .await;
    d.same(&["put", "foo", "bar", "-w", "fields"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_and_get_with_every_flag() {
    bounded(async {
        let d = Duo::start().await;
        seed_keys(&d).await;
        let gets: &[&[&str]] = &[
            &["get", "foo"],
            &["get", "missing"],
            &["get", "foo", "--prefix"],
            &["get", "fo", "--prefix", "--keys-only"],
            &["get", "foo", "fop"],
            &["get", "foo1", "--from-key"],
            &["get", "", "--from-key"],
            &["get", "", "--prefix"],
            &["get", "foo", "--rev=3"],
            &["get", "foo", "--prefix", "--rev=4"],
            &["get", "", "--from-key", "--limit=2"],
            &["get", "", "--from-key", "--limit=2", "-w", "json"],
            &[
                "get",
                "foo",
                "--prefix",
                "--sort-by=MODIFY",
                "--order=DESCEND",
            ],
            &[
                "get",
                "foo",
                "--prefix",
                "--sort-by=CREATE",
                "--order=ASCEND",
            ],
            &[
                "get",
                "",
                "--from-key",
                "--sort-by=VERSION",
                "--order=DESCEND",
            ],
            &["get", "", "--from-key", "--sort-by=VALUE"],
            &[
                "get",
                "",
                "--from-key",
                "--sort-by=KEY",
                "--order=DESCEND",
                "--limit=3",
            ],
            &["get", "foo", "--prefix", "--order=DESCEND"],
            &["get", "foo", "--consistency=s"],
            &["get", "foo", "--prefix", "--consistency=l"],
            &["get", "foo", "--print-value-only"],
            &["get", "foo", "--prefix", "--print-value-only"],
            &["get", "foo", "--prefix", "--keys-only", "-w", "json"],
            &["get", "foo", "-w", "json"],
            &["get", "foo", "--prefix", "-w", "fields"],
            &["get", "a/", "--prefix", "-w", "fields", "--keys-only"],
            &["get", "missing", "-w", "json"],
            &["get", "missing", "-w", "fields"],
            &["get", "foo", "--hex"],
        ];
        for args in gets {
            d.same(args).await;
        }
        // Future revision: an error, reported the same way.
        let err = d.same_err(&["get", "foo", "--rev=1000"]).await;
        assert!(err.stderr.contains("future revision"), "{err:?}");
        d.same_err(&["put", "nokey", "--ignore-value"]).await;

        // -w protobuf writes the raw RangeResponse: decode both and compare the messages.
        for args in [
            &["get", "foo", "--prefix", "-w", "protobuf"][..],
            &[
                "get",
                "",
                "--from-key",
                "--limit=3",
                "--sort-by=MODIFY",
                "-w",
                "protobuf",
            ][..],
        ] {
            let outs = d.run_both(args, None).await;
            let decoded: Vec<RangeResponse> = outs
                .iter()
                .map(|o| {
                    assert_eq!(o.code, Some(0), "{args:?}: {o:?}");
                    let mut r = RangeResponse::decode(o.stdout.as_slice())
                        .unwrap_or_else(|e| panic!("{args:?}: not a RangeResponse: {e}: {o:?}"));
                    normalize_header(&mut r.header);
                    r
                })
                .collect();
            assert!(!decoded[0].kvs.is_empty(), "{args:?}: {:?}", decoded[0]);
            assert_eq!(
                decoded[0], decoded[1],
                "etcdctl {args:?}: protobuf outputs differ"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_variants() {
    bounded(async {
        let d = Duo::start().await;
        seed_keys(&d).await;
        let out = d.same(&["del", "foo"]).await;
        assert_eq!(out.stdout, "1\n");
        d.same(&["del", "foo"]).await;
        d.same(&["del", "foo", "--prev-kv"]).await;
        d.same(&["del", "fo", "--prefix", "--prev-kv"]).await;
        d.same(&["put", "foo", "back"]).await;
        d.same(&["del", "a/", "--prefix", "-w", "json"]).await;
        d.same(&["del", "a", "z", "--prev-kv"]).await;
        d.same(&["del", "", "--from-key", "--prev-kv", "-w", "fields"])
            .await;
        let out = d.same(&["get", "", "--from-key"]).await;
        assert_eq!(out.stdout, "");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_from_stdin_and_interactive() {
    bounded(async {
        let d = Duo::start().await;
        seed_keys(&d).await;
        // Non-interactive: compares, blank line, success ops, blank line, failure ops.
        let succ = "mod(\"foo\") > \"0\"\nvalue(\"foo1\") = \"bar1-again\"\n\nput foo new\nget foo1\ndel fop\n\nput foo failed\n\n";
        let out = d.same_stdin(&["txn"], succ).await;
        assert!(out.stdout.starts_with("SUCCESS"), "{out:?}");
        let fail = "version(\"foo\") = \"1\"\ncreate(\"foo\") < \"2\"\n\nput foo never\n\nget foo\nput other v\n\n";
        let out = d.same_stdin(&["txn"], fail).await;
        assert!(out.stdout.starts_with("FAILURE"), "{out:?}");
        d.same_stdin(&["txn", "-w", "json"], succ).await;
        d.same_stdin(&["txn", "-w", "fields"], fail).await;
        d.same_stdin(
            &["txn"],
            "version(\"missing\") = \"0\"\nvalue(\"foo\") != \"x\"\n\nget \"\" --from-key --limit=2\n\n\n",
        )
        .await;
        // Interactive: prompts interleaved with the same input.
        d.same_stdin(&["txn", "-i"], succ).await;
        d.same_stdin(&["txn", "-i", "-w", "json"], fail).await;
        // Duplicate keys in one branch: the server's error.
        let out = d.run_both(&["txn"], Some("\nput dup 1\nput dup 2\n\n\n")).await;
        let seen = d.compare("txn with duplicate keys", &out, false);
        assert!(seen.stderr.contains("duplicate key"), "{seen:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_history_live_and_interactive() {
    bounded(async {
        let d = Duo::start().await;
        seed_keys(&d).await;
        d.same(&["del", "foo1"]).await;
        d.same(&["put", "foo", "again"]).await;
        // History replay.
        let out = d.same_streaming(&["watch", "foo", "--rev=1"], None).await;
        assert!(out.stdout.starts_with("PUT\nfoo\n"), "{out:?}");
        d.same_streaming(&["watch", "foo", "--prefix", "--rev=2"], None)
            .await;
        d.same_streaming(&["watch", "foo", "--prefix", "--rev=2", "--prev-kv"], None)
            .await;
        d.same_streaming(&["watch", "a/", "--prefix", "--rev=1", "-w", "json"], None)
            .await;
        d.same_streaming(&["watch", "foo", "fop", "--rev=3"], None)
            .await;
        // Interactive: a watch command on stdin (kept open). One watch only: the events of two
        // watches replaying history on one stream interleave in no fixed order.
        let out = d
            .same_streaming(
                &["watch", "-i"],
                Some("watch a/ --prefix --rev=1 --prev-kv\n"),
            )
            .await;
        assert!(out.stdout.contains("a/c\n22\n"), "{out:?}");
        // Live: the watch starts before the writes (no --rev).
        let [e, b] = d.servers();
        let mut outs = Vec::new();
        for s in [e, b] {
            let ep = s.endpoint();
            let watch = etcdctl::run_streaming(
                &ep,
                &["watch", "live", "--prefix", "--prev-kv"],
                None,
                Some(9),
                QUIET,
                STREAM_MAX,
            );
            let writes = async {
                tokio::time::sleep(Duration::from_millis(800)).await;
                for args in [
                    &["put", "live/1", "a"][..],
                    &["put", "live/1", "b"][..],
                    &["del", "live/1"][..],
                ] {
                    let o = etcdctl::run(&ep, args, None, CMD_TIMEOUT)
                        .await
                        .expect("etcdctl");
                    assert_eq!(o.code, Some(0), "{args:?}: {o:?}");
                }
            };
            let (w, ()) = tokio::join!(watch, writes);
            outs.push(w.expect("etcdctl watch"));
        }
        let outs = [outs.remove(0), outs.remove(0)];
        let a = d.seen(0, &outs[0]);
        let b = d.seen(1, &outs[1]);
        assert!(
            a.stdout.contains("DELETE"),
            "reference saw no live events: {a:?}"
        );
        assert_eq!(a, b, "live watch outputs differ");
    })
    .await;
}

/// The number in `remaining(NNs)` of `lease timetolive` output.
fn remaining(s: &str) -> Option<i64> {
    let start = s.find("remaining(")? + "remaining(".len();
    let end = s[start..].find("s)")? + start;
    s[start..end].parse().ok()
}

/// Masks the remaining seconds (compared with a tolerance instead) and sorts the attached
/// keys (etcd lists them in map order, i.e. random).
fn mask_remaining(s: &str) -> String {
    let s = match remaining(s) {
        Some(n) => s.replace(&format!("remaining({n}s)"), "remaining(<n>s)"),
        None => s.to_string(),
    };
    let open = "attached keys([";
    match (s.find(open), s.rfind("])")) {
        (Some(i), Some(j)) if j > i + open.len() => {
            let mut keys: Vec<&str> = s[i + open.len()..j].split(' ').collect();
            keys.sort_unstable();
            format!("{}{}{}", &s[..i + open.len()], keys.join(" "), &s[j..])
        }
        _ => s,
    }
}

/// `lease list` output with its ID lines sorted (etcd lists leases in map order, i.e. random).
fn sort_lease_list(s: &str) -> String {
    let mut lines: Vec<&str> = s.lines().collect();
    if lines.len() > 1 {
        lines[1..].sort_unstable();
    }
    lines.join("\n")
}

/// Runs a command built per side (it names a lease ID that differs between the servers).
async fn per_side(d: &Duo, build: impl Fn(usize) -> Vec<String>) -> (String, [CtlOutput; 2]) {
    let mut outs = Vec::new();
    for (side, s) in d.servers().into_iter().enumerate() {
        let cmd = build(side);
        let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
        outs.push(
            etcdctl::run(&s.endpoint(), &args, None, CMD_TIMEOUT)
                .await
                .expect("etcdctl"),
        );
    }
    let what = build(0).join(" ");
    (what, [outs.remove(0), outs.remove(0)])
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_lifecycle() {
    bounded(async {
        let mut d = Duo::start().await;
        // Grant two leases on each side; the IDs are the servers' picks, so they are learned
        // from the outputs and normalized to <lease-N>.
        let mut ids: Vec<[String; 2]> = Vec::new();
        for (n, ttl) in [(1, "100"), (2, "500")] {
            let outs = d.run_both(&["lease", "grant", ttl], None).await;
            let mut pair = [String::new(), String::new()];
            for (side, o) in outs.iter().enumerate() {
                assert_eq!(o.code, Some(0), "lease grant: {o:?}");
                let text = o.stdout_text();
                let id = text
                    .strip_prefix("lease ")
                    .and_then(|r| r.split_whitespace().next())
                    .unwrap_or_else(|| panic!("unexpected lease grant output {text:?}"))
                    .to_string();
                let dec = i64::from_str_radix(&id, 16)
                    .unwrap_or_else(|e| panic!("lease ID {id:?} is not hex: {e}"));
                d.norm[side].add(id.clone(), format!("<lease-{n}>"));
                d.norm[side].add(dec.to_string(), format!("<lease-{n}>"));
                pair[side] = id;
            }
            d.compare(&format!("lease grant {ttl}"), &outs, true);
            ids.push(pair);
        }
        let l1 = ids[0].clone();
        for key in ["k1", "k2"] {
            let (what, outs) = per_side(&d, |side| {
                strs(&["put", key, "v", &format!("--lease={}", l1[side])])
            })
            .await;
            d.compare(&what, &outs, true);
        }
        d.same(&["put", "k1", "v2", "--ignore-lease"]).await;
        d.same(&["get", "k", "--prefix", "-w", "json"]).await;

        // timetolive: remaining seconds may differ by one between the two servers.
        for keys in [true, false] {
            let (what, outs) = per_side(&d, |side| {
                let mut v = strs(&["lease", "timetolive", &l1[side]]);
                if keys {
                    v.push("--keys".into());
                }
                v
            })
            .await;
            let r: Vec<i64> = outs
                .iter()
                .map(|o| remaining(&o.stdout_text()).unwrap_or_else(|| panic!("{what}: {o:?}")))
                .collect();
            assert!((r[0] - r[1]).abs() <= 1, "{what}: remaining {r:?}");
            assert!((97..=100).contains(&r[0]), "{what}: remaining {r:?}");
            let a = mask_remaining(&d.seen(0, &outs[0]).stdout);
            let b = mask_remaining(&d.seen(1, &outs[1]).stdout);
            assert_eq!(a, b, "{what}: outputs differ");
        }
        // list: two leases, listed in no particular order.
        let outs = d.run_both(&["lease", "list"], None).await;
        let a = sort_lease_list(&d.seen(0, &outs[0]).stdout);
        let b = sort_lease_list(&d.seen(1, &outs[1]).stdout);
        assert!(a.starts_with("found 2 leases"), "{a}");
        assert_eq!(a, b, "lease list outputs differ");
        // keep-alive --once.
        let (what, outs) = per_side(&d, |side| {
            strs(&["lease", "keep-alive", "--once", &l1[side]])
        })
        .await;
        let seen = d.compare(&what, &outs, true);
        assert!(seen.stdout.contains("keepalived with TTL(100)"), "{seen:?}");
        // An unknown lease.
        d.same_err(&["lease", "keep-alive", "--once", "1234"]).await;
        d.same_err(&["lease", "revoke", "1234"]).await;
        d.same(&["lease", "timetolive", "1234"]).await;
        // revoke deletes the attached keys.
        let (what, outs) = per_side(&d, |side| strs(&["lease", "revoke", &l1[side]])).await;
        d.compare(&what, &outs, true);
        let out = d.same(&["get", "k", "--prefix"]).await;
        assert_eq!(out.stdout, "", "keys of a revoked lease remain: {out:?}");
        let (what, outs) = per_side(&d, |side| strs(&["lease", "timetolive", &l1[side]])).await;
        let seen = d.compare(&what, &outs, true);
        assert!(seen.stdout.contains("already expired"), "{seen:?}");
        let out = d.same(&["lease", "list"]).await;
        assert!(out.stdout.starts_with("found 1 leases"), "{out:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_and_compacted_reads() {
    bounded(async {
        let d = Duo::start().await;
        seed_keys(&d).await;
        let out = d.same(&["compaction", "4"]).await;
        assert_eq!(out.stdout, "compacted revision 4\n");
        d.same(&["get", "foo", "--rev=4"]).await;
        let err = d.same_err(&["get", "foo", "--rev=3"]).await;
        assert!(err.stderr.contains("compacted"), "{err:?}");
        d.same_err(&["compaction", "4"]).await;
        d.same_err(&["compaction", "2"]).await;
        d.same_err(&["compaction", "1000"]).await;
        d.same(&["compaction", "--physical", "6"]).await;
        d.same(&["get", "", "--from-key", "--rev=6", "-w", "json"])
            .await;
        // A watch from a compacted revision is cancelled.
        let out = d.same_streaming(&["watch", "foo", "--rev=2"], None).await;
        assert!(out.stderr.contains("compacted"), "{out:?}");
        // hashkv reports the compaction (the hash itself is implementation-defined).
        let h = hashkv(&d).await;
        assert_eq!(h[0].2, 6, "reference compact_revision: {h:?}");
        assert_eq!(
            (h[0].1, h[0].2),
            (h[1].1, h[1].2),
            "hashkv revisions differ: {h:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_status_health_hashkv() {
    bounded(async {
        let d = Duo::start().await;
        seed_keys(&d).await;
        // status: values differ by implementation (version, db size, raft index): compare the
        // shape of the JSON, the simple output's field count and leader/learner columns, and
        // the table's header.
        let outs = d
            .run_both(&["endpoint", "status", "-w", "json"], None)
            .await;
        let shapes: Vec<Value> = outs
            .iter()
            .enumerate()
            .map(|(side, o)| {
                assert_eq!(o.code, Some(0), "endpoint status: {o:?}");
                let v: Value = serde_json::from_slice(&o.stdout)
                    .unwrap_or_else(|e| panic!("endpoint status -w json: {e}: {o:?}"));
                let status = &v[0]["Status"];
                assert!(
                    status["version"]
                        .as_str()
                        .is_some_and(|s| s.starts_with("3.")),
                    "side {side}: {v}"
                );
                assert_eq!(
                    status["header"]["revision"],
                    Value::from(13),
                    "side {side}: {v}"
                );
                assert_eq!(
                    status["leader"], status["header"]["member_id"],
                    "side {side}: {v}"
                );
                json_shape(&v)
            })
            .collect();
        assert_eq!(
            shapes[0], shapes[1],
            "endpoint status -w json shapes differ"
        );
        let outs = d.run_both(&["endpoint", "status"], None).await;
        let fields: Vec<Vec<String>> = outs
            .iter()
            .enumerate()
            .map(|(side, o)| {
                assert_eq!(o.code, Some(0), "endpoint status: {o:?}");
                d.norm[side]
                    .text(&o.stdout_text())
                    .trim_end()
                    .split(", ")
                    .map(str::to_string)
                    .collect()
            })
            .collect();
        assert_eq!(fields[0].len(), fields[1].len(), "{fields:?}");
        assert_eq!(fields[0][0..2], fields[1][0..2], "{fields:?}");
        assert_eq!(fields[0][4..6], fields[1][4..6], "{fields:?}");
        let outs = d
            .run_both(&["endpoint", "status", "-w", "table"], None)
            .await;
        // The table: same column names and the same number of rows (column widths follow the
        // values, e.g. a member ID with fewer hex digits).
        let tables: Vec<(Vec<String>, usize)> = outs
            .iter()
            .map(|o| {
                assert_eq!(o.code, Some(0), "endpoint status -w table: {o:?}");
                let text = o.stdout_text();
                let header = text
                    .lines()
                    .nth(1)
                    .unwrap_or_default()
                    .split('|')
                    .map(|c| c.trim().to_string())
                    .collect();
                (header, text.lines().count())
            })
            .collect();
        assert!(tables[0].0.contains(&"IS LEADER".to_string()), "{tables:?}");
        assert_eq!(tables[0], tables[1], "endpoint status -w table differs");

        // health: only the timing differs.
        for args in [
            &["endpoint", "health"][..],
            &["endpoint", "health", "-w", "json"][..],
        ] {
            let outs = d.run_both(args, None).await;
            let seen: Vec<String> = outs
                .iter()
                .enumerate()
                .map(|(side, o)| {
                    assert_eq!(o.code, Some(0), "{args:?}: {o:?}");
                    let text = format!("{}{}", o.stdout_text(), clean_stderr(&o.stderr));
                    mask_took(&d.norm[side].text(&text))
                })
                .collect();
            assert!(seen[0].contains("health"), "{seen:?}");
            assert_eq!(seen[0], seen[1], "{args:?}: outputs differ");
        }

        // hashkv: the hash is implementation-defined; the revisions are not. The hash must be
        // the same for the same state and change with a write.
        let h1 = hashkv(&d).await;
        let h2 = hashkv(&d).await;
        for side in 0..2 {
            assert_eq!(
                h1[side].0, h2[side].0,
                "side {side}: hash changed without a write"
            );
        }
        assert_eq!(
            h1.iter().map(|h| (h.1, h.2)).collect::<Vec<_>>()[0],
            h1.iter().map(|h| (h.1, h.2)).collect::<Vec<_>>()[1],
            "hashkv header revision / compact revision differ: {h1:?}"
        );
        d.same(&["put", "foo", "changed"]).await;
        let h3 = hashkv(&d).await;
        for side in 0..2 {
            assert_ne!(
                h1[side].0, h3[side].0,
                "side {side}: hash unchanged after a write"
            );
        }
        let outs = d.run_both(&["endpoint", "hashkv"], None).await;
        let parts: Vec<String> = outs
            .iter()
            .enumerate()
            .map(|(side, o)| {
                assert_eq!(o.code, Some(0), "{o:?}");
                let t = d.norm[side].text(&o.stdout_text());
                t.split(", ").next().unwrap_or_default().to_string()
            })
            .collect();
        assert_eq!(parts[0], parts[1]);
    })
    .await;
}

/// (hash, header revision, compact_revision) per side from `endpoint hashkv -w json`.
async fn hashkv(d: &Duo) -> Vec<(u64, i64, i64)> {
    let outs = d
        .run_both(&["endpoint", "hashkv", "-w", "json"], None)
        .await;
    outs.iter()
        .map(|o| {
            assert_eq!(o.code, Some(0), "endpoint hashkv: {o:?}");
            let v: Value = serde_json::from_slice(&o.stdout)
                .unwrap_or_else(|e| panic!("hashkv json: {e}: {o:?}"));
            let h = &v[0]["HashKV"];
            (
                h["hash"].as_u64().unwrap_or(0),
                h["header"]["revision"].as_i64().unwrap_or(0),
                h["compact_revision"].as_i64().unwrap_or(0),
            )
        })
        .collect()
}

fn mask_took(s: &str) -> String {
    let mut out = String::new();
    for line in s.split_inclusive('\n') {
        if let Some(i) = line.find("took = ") {
            out.push_str(&line[..i]);
            out.push_str("took = <t>\n");
        } else if let Some(i) = line.find("\"took\":\"") {
            let rest = &line[i + 8..];
            let end = rest.find('"').map(|e| e + i + 8).unwrap_or(line.len());
            out.push_str(&line[..i]);
            out.push_str("\"took\":\"<t>\"");
            out.push_str(&line[end + 1..]);
        } else {
            out.push_str(line);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_list_outputs() {
    bounded(async {
        let d = Duo::start().await;
        for args in [
            &["member", "list"][..],
            &["member", "list", "-w", "json"][..],
            &["member", "list", "-w", "fields"][..],
            &["member", "list", "-w", "table"][..],
        ] {
            let out = d.same(args).await;
            assert!(out.stdout.contains("<member-id>"), "{args:?}: {out:?}");
        }
        // A change of a member a single-node cluster does not have.
        for args in [
            &["member", "remove", "1234"][..],
            &[
                "member",
                "update",
                "1234",
                "--peer-urls=https://127.0.0.1:1",
            ][..],
            &["member", "promote", "1234"][..],
        ] {
            let out = d.same_err(args).await;
            assert!(
                out.stderr.contains("etcdserver: member not found"),
                "{args:?}: {out:?}"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_only_via_grpc() {
    bounded(async {
        let d = Duo::start().await;
        let mut clients = Vec::new();
        for s in d.servers() {
            clients.push(s.clients().await.expect("clients"));
        }
        for (i, k) in ["c/1", "c/2", "c/3", "c/3", "d"].iter().enumerate() {
            for c in clients.iter_mut() {
                c.kv.put(PutRequest {
                    key: k.as_bytes().to_vec().into(),
                    value: format!("v{i}").into_bytes().into(),
                    ..Default::default()
                })
                .await
                .expect("put");
            }
        }
        let reqs = [
            RangeRequest {
                key: "c/".into(),
                range_end: "c0".into(),
                count_only: true,
                ..Default::default()
            },
            RangeRequest {
                key: "c/".into(),
                range_end: "c0".into(),
                count_only: true,
                limit: 1,
                ..Default::default()
            },
            RangeRequest {
                key: "\0".into(),
                range_end: "\0".into(),
                count_only: true,
                revision: 3,
                ..Default::default()
            },
            RangeRequest {
                key: "c/3".into(),
                count_only: true,
                keys_only: true,
                ..Default::default()
            },
            RangeRequest {
                key: "\0".into(),
                range_end: "\0".into(),
                count_only: true,
                min_mod_revision: 4,
                ..Default::default()
            },
        ];
        for req in reqs {
            let mut got = Vec::new();
            for c in clients.iter_mut() {
                let mut r = c.kv.range(req.clone()).await.expect("range").into_inner();
                normalize_header(&mut r.header);
                got.push(r);
            }
            assert!(
                got[0].kvs.is_empty() && got[0].count > 0,
                "{req:?}: {:?}",
                got[0]
            );
            assert_eq!(got[0], got[1], "count_only {req:?} differs");
        }
    })
    .await;
}
