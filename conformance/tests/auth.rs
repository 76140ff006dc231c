//! etcd's Auth service and its enforcement, side by side with etcd 3.4.23.
//!
//! - `etcdctl_auth_like_etcd`: the same `etcdctl` sequence against etcd and Ballast: `auth
//!   enable` without a root user (refused), users and roles added (twice: already exists),
//!   permissions granted (key, range, prefix), `auth enable`, requests without a user, with a
//!   wrong password, permitted and denied get/put/del/txn, user and role reads by root and by
//!   the user, root's protections, revokes, a password change, a role delete, compaction and
//!   lease grant (no permission needed), `endpoint hashkv` (root only), `auth disable`. Exit
//!   code, stdout and the `Error:` line compared step by step.
//! - `grpc_auth_like_etcd`: the same requests over gRPC with explicit tokens: Authenticate's
//!   errors, a malformed and an unknown token, a watch create refused (its cancel reason) and
//!   permitted, a txn whose failure branch writes a denied key, a put with `prev_kv`, each
//!   answer's code and message compared; then the JSON gateway: `auth/authenticate`, and
//!   `kv/range`, `kv/put`, `auth/user/list` with the token in `Authorization`, none, or a junk
//!   one (status and body compared, headers left out).
//! - `auth_survives_restart_and_spans_a_cluster`: Ballast alone. Auth state and users survive
//!   a `kill -9` and restart (from a checkpoint's facts and from the log after it); on a 3-member cluster a user added through one member
//!   authenticates at another, is enforced there, and a token taken at one member is valid at
//!   another.
//!
//! Invariants: every wait is bounded; the servers are killed and their directories removed when
//! the test ends, also when it fails.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use ballast_conformance::etcdctl::{self, CMD_TIMEOUT};
use ballast_conformance::{Kind, Pair, Server};
use ballast_proto::etcdserverpb::auth_client::AuthClient;
use ballast_proto::etcdserverpb::kv_client::KvClient;
use ballast_proto::etcdserverpb::watch_client::WatchClient;
use ballast_proto::etcdserverpb::{
    compare, request_op, watch_request, AuthenticateRequest, Compare, PutRequest, RangeRequest,
    RequestOp, TxnRequest, WatchCreateRequest, WatchRequest,
};
use tokio_stream::StreamExt as _;
use tonic::transport::Channel;

/// One etcdctl step: its arguments and what it writes to stdin.
struct Step {
    args: &'static [&'static str],
    stdin: Option<&'static str>,
}

const fn step(args: &'static [&'static str]) -> Step {
    Step { args, stdin: None }
}

const fn step_in(args: &'static [&'static str], stdin: &'static str) -> Step {
    Step {
        args,
        stdin: Some(stdin),
    }
}

/// Users, roles, permissions and enforcement through etcdctl (module comment).
const STEPS: &[Step] = &[
    step(&["auth", "enable"]),
    step(&["user", "add", "root:rootpw"]),
    step(&["user", "grant-role", "root", "root"]),
    step(&["role", "add", "reader"]),
    step(&["role", "add", "reader"]),
    step(&["user", "add", "alice:apw"]),
    step(&["user", "add", "alice:other"]),
    step(&["user", "get", "alice"]),
    step(&[
        "role",
        "grant-permission",
        "reader",
        "read",
        "/a/",
        "--prefix",
    ]),
    step(&["role", "grant-permission", "reader", "readwrite", "k1"]),
    step(&["role", "grant-permission", "reader", "write", "w1", "w5"]),
    step(&["role", "grant-permission", "nobody", "read", "x"]),
    step(&["role", "get", "reader"]),
    step(&["user", "grant-role", "alice", "nope"]),
    step(&["user", "grant-role", "alice", "reader"]),
    step(&["user", "grant-role", "alice", "reader"]),
    step(&["user", "list"]),
    step(&["role", "list"]),
    step(&["auth", "enable"]),
    // Auth is on: no user, a wrong password, then as root and as alice.
    step(&["auth", "enable"]),
    step(&["put", "foo", "bar"]),
    step(&["get", "foo"]),
    step(&["--user", "root:bad", "get", "foo"]),
    step(&["--user", "nobody:x", "get", "foo"]),
    step(&["--user", "root:rootpw", "put", "/a/x", "1"]),
    step(&["--user", "root:rootpw", "put", "foo", "bar"]),
    step(&["--user", "alice:apw", "get", "/a/x"]),
    step(&["--user", "alice:apw", "get", "/a/", "--prefix"]),
    step(&["--user", "alice:apw", "get", "/a/", "--from-key"]),
    step(&["--user", "alice:apw", "put", "/a/x", "2"]),
    step(&["--user", "alice:apw", "put", "k1", "v"]),
    step(&["--user", "alice:apw", "get", "k1"]),
    step(&["--user", "alice:apw", "del", "k1"]),
    step(&["--user", "alice:apw", "get", "foo"]),
    step(&["--user", "alice:apw", "del", "foo"]),
    step(&["--user", "alice:apw", "get", "w1"]),
    step(&["--user", "alice:apw", "put", "w3", "x"]),
    step(&["--user", "alice:apw", "del", "w1", "w5"]),
    step(&["--user", "alice:apw", "del", "w1", "w6"]),
    step_in(
        &["--user", "alice:apw", "txn"],
        "value(\"k1\") = \"v\"\n\nput k1 a\n\nput w2 b\n\n",
    ),
    step_in(
        &["--user", "alice:apw", "txn"],
        "value(\"k1\") = \"v\"\n\nput k1 a\n\nput foo b\n\n",
    ),
    step_in(
        &["--user", "alice:apw", "txn"],
        "value(\"foo\") = \"v\"\n\n\n\n",
    ),
    step(&["--user", "alice:apw", "user", "list"]),
    step(&["--user", "alice:apw", "role", "list"]),
    step(&["--user", "root:rootpw", "user", "list"]),
    step(&["--user", "root:rootpw", "role", "list"]),
    step(&["--user", "alice:apw", "user", "get", "alice"]),
    step(&["--user", "alice:apw", "user", "get", "root"]),
    step(&["--user", "alice:apw", "role", "get", "reader"]),
    step(&["--user", "alice:apw", "role", "get", "root"]),
    step(&["--user", "alice:apw", "role", "add", "x"]),
    step(&["--user", "root:rootpw", "user", "delete", "root"]),
    step(&["--user", "root:rootpw", "role", "delete", "root"]),
    step(&[
        "--user",
        "root:rootpw",
        "user",
        "revoke-role",
        "root",
        "root",
    ]),
    step(&[
        "--user",
        "root:rootpw",
        "user",
        "revoke-role",
        "alice",
        "nope",
    ]),
    step(&[
        "--user",
        "root:rootpw",
        "role",
        "revoke-permission",
        "reader",
        "zz",
    ]),
    step(&[
        "--user",
        "root:rootpw",
        "role",
        "revoke-permission",
        "reader",
        "k1",
    ]),
    step(&["--user", "alice:apw", "get", "k1"]),
    step(&["--user", "root:rootpw", "user", "get", "nobody"]),
    step(&["--user", "root:rootpw", "role", "get", "nobody"]),
    step_in(
        &[
            "--user",
            "root:rootpw",
            "user",
            "passwd",
            "alice",
            "--interactive=false",
        ],
        "newpw\n",
    ),
    step(&["--user", "alice:apw", "get", "/a/x"]),
    step(&["--user", "alice:newpw", "get", "/a/x"]),
    step(&["--user", "root:rootpw", "role", "delete", "reader"]),
    step(&["--user", "alice:newpw", "get", "/a/x"]),
    step(&["--user", "root:rootpw", "user", "get", "alice"]),
    step(&["--user", "alice:newpw", "compaction", "2"]),
    step(&["compaction", "3"]),
    step(&["--user", "alice:newpw", "endpoint", "hashkv"]),
    step(&["--user", "alice:newpw", "auth", "disable"]),
    step(&["--user", "root:rootpw", "auth", "disable"]),
    step(&["get", "foo", "--print-value-only"]),
    step(&["--user", "root:rootpw", "get", "foo", "--print-value-only"]),
    step(&["user", "list"]),
];

/// What a step shows: exit code, stdout, and the `Error:` lines of stderr (etcdctl's own
/// messages; its retry logs carry times and client ids).
async fn run_step(server: &Server, s: &Step) -> Result<String> {
    let mut out = etcdctl::step(&server.endpoint(), s.args, s.stdin, CMD_TIMEOUT).await?;
    // `endpoint hashkv` prints the hash, which differs between implementations.
    if s.args.contains(&"hashkv") && out.code == Some(0) {
        out.stdout = "<hashkv>".to_owned();
    }
    Ok(out.shown())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_auth_like_etcd() -> Result<()> {
    let pair = Pair::start().await?;
    let mut mismatches = Vec::new();
    for (i, s) in STEPS.iter().enumerate() {
        let etcd = run_step(&pair.etcd, s).await?;
        let ballast = run_step(&pair.ballast, s).await?;
        if etcd != ballast {
            mismatches.push(format!(
                "step {i} etcdctl {:?}\n--- etcd\n{etcd}\n--- ballast\n{ballast}",
                s.args
            ));
        }
    }
    ensure!(mismatches.is_empty(), "{}", mismatches.join("\n\n"));
    Ok(())
}

/// A gRPC request carrying `token` as etcd's clients send it.
fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(t) = token {
        request
            .metadata_mut()
            .insert("token", t.parse().expect("an ASCII token"));
    }
    request
}

fn outcome<T: std::fmt::Debug>(
    r: std::result::Result<tonic::Response<T>, tonic::Status>,
) -> String {
    match r {
        Ok(_) => "ok".to_owned(),
        Err(s) => format!("{:?} {}", s.code(), s.message()),
    }
}

/// Sets up root and a user `bob` with READWRITE on `b/` and enables auth, through etcdctl.
async fn setup_bob(server: &Server) -> Result<()> {
    const SETUP: &[&[&str]] = &[
        &["user", "add", "root:rootpw"],
        &["user", "grant-role", "root", "root"],
        &["user", "add", "bob:bpw"],
        &["role", "add", "b"],
        &[
            "role",
            "grant-permission",
            "b",
            "readwrite",
            "b/",
            "--prefix",
        ],
        &["user", "grant-role", "bob", "b"],
        &["auth", "enable"],
    ];
    etcdctl::run_all(&server.endpoint(), SETUP, CMD_TIMEOUT)
        .await
        .with_context(|| server.kind().label())
}

async fn token(channel: &Channel, name: &str, password: &str) -> Result<String> {
    let answer = AuthClient::new(channel.clone())
        .authenticate(AuthenticateRequest {
            name: name.into(),
            password: password.into(),
        })
        .await?
        .into_inner();
    Ok(answer.token)
}

/// The answers of the gRPC-level checks on one server (module comment).
async fn grpc_transcript(server: &Server) -> Result<Vec<String>> {
    setup_bob(server).await?;
    let channel = server.channel().await?;
    let mut auth = AuthClient::new(channel.clone());
    let mut kv = KvClient::new(channel.clone());
    let mut out = Vec::new();
    let authenticate = |name: &str, password: &str| AuthenticateRequest {
        name: name.into(),
        password: password.into(),
    };
    out.push(outcome(
        auth.authenticate(authenticate("bob", "wrong")).await,
    ));
    out.push(outcome(auth.authenticate(authenticate("ghost", "x")).await));
    out.push(outcome(auth.authenticate(authenticate("", "")).await));
    let bob = token(&channel, "bob", "bpw").await?;
    // The form of a simple token: 16 letters, a dot, an index.
    let (letters, index) = bob.split_once('.').context("a simple token")?;
    ensure!(
        letters.len() == 16
            && letters.chars().all(|c| c.is_ascii_alphabetic())
            && index.parse::<u64>().is_ok(),
        "{}: token {bob:?}",
        server.kind().label()
    );
    let range = |key: &str| RangeRequest {
        key: key.as_bytes().to_vec().into(),
        ..Default::default()
    };
    let put = |key: &str, prev_kv: bool| PutRequest {
        key: key.as_bytes().to_vec().into(),
        value: b"v".to_vec().into(),
        prev_kv,
        ..Default::default()
    };
    out.push(outcome(
        kv.range(with_token(range("b/1"), Some("malformed"))).await,
    ));
    out.push(outcome(
        kv.range(with_token(range("b/1"), Some("abcdefghijklmnop.1")))
            .await,
    ));
    out.push(outcome(kv.range(with_token(range("b/1"), None)).await));
    out.push(outcome(
        kv.put(with_token(put("b/1", true), Some(&bob))).await,
    ));
    out.push(outcome(
        kv.put(with_token(put("c/1", false), Some(&bob))).await,
    ));
    out.push(outcome(
        kv.range(with_token(range("c/1"), Some(&bob))).await,
    ));
    // A txn whose failure branch writes a key bob may not write is refused whole.
    let txn = |failure_key: &str| TxnRequest {
        compare: vec![Compare {
            key: b"b/1".to_vec().into(),
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Version as i32,
            target_union: Some(compare::TargetUnion::Version(1)),
            ..Default::default()
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(put("b/2", false))),
        }],
        failure: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(put(failure_key, false))),
        }],
    };
    out.push(outcome(kv.txn(with_token(txn("c/2"), Some(&bob))).await));
    out.push(outcome(kv.txn(with_token(txn("b/3"), Some(&bob))).await));
    // Watches: refused with etcd's cancel reason, or created.
    for (key, range_end) in [("c/", "c0"), ("b/", "b0"), ("b/", "\0")] {
        let mut watch = WatchClient::new(channel.clone());
        let create = WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest {
                    key: key.as_bytes().to_vec().into(),
                    range_end: range_end.as_bytes().to_vec().into(),
                    ..Default::default()
                },
            )),
        };
        let stream = tokio_stream::iter(vec![create]).chain(tokio_stream::pending());
        let mut answers = watch
            .watch(with_token(stream, Some(&bob)))
            .await?
            .into_inner();
        let first = tokio::time::timeout(Duration::from_secs(5), answers.message())
            .await
            .context("watch create answer")??
            .context("watch stream ended")?;
        out.push(format!(
            "watch {key:?}..{range_end:?}: created {} canceled {} id {} reason {:?}",
            first.created, first.canceled, first.watch_id, first.cancel_reason
        ));
    }
    // The JSON gateway: authenticate, then the token in the Authorization header.
    let (status, body) = http_post(
        server,
        "/v3/auth/authenticate",
        None,
        r#"{"name":"bob","password":"bad"}"#,
    )
    .await?;
    out.push(format!("gateway authenticate bad: {status} {body}"));
    let (status, body) = http_post(
        server,
        "/v3/auth/authenticate",
        None,
        r#"{"name":"bob","password":"bpw"}"#,
    )
    .await?;
    ensure!(
        status == 200,
        "{}: gateway authenticate: {status} {body}",
        server.kind().label()
    );
    let answer: serde_json::Value = serde_json::from_str(&body)?;
    let gw_token = answer["token"].as_str().context("a token")?.to_owned();
    // b/1 and c/1, base64.
    for (path, body) in [
        ("/v3/kv/range", r#"{"key":"Yi8x"}"#),
        ("/v3/kv/put", r#"{"key":"Yy8x","value":"eA=="}"#),
        ("/v3/auth/user/list", "{}"),
    ] {
        for token in [Some(gw_token.as_str()), None, Some("junk.1")] {
            let (status, answer) = http_post(server, path, token, body).await?;
            let mut answer: serde_json::Value =
                serde_json::from_str(&answer).with_context(|| format!("{path}: {answer}"))?;
            if let Some(o) = answer.as_object_mut() {
                o.remove("header");
            }
            let token = token.map(|t| if t == gw_token { "token" } else { t });
            out.push(format!("gateway {path} {token:?}: {status} {answer}"));
        }
    }
    Ok(out)
}

/// `POST path` with a JSON body on the client port (HTTP/1.0), with an `Authorization`
/// header when given: status code and body.
async fn http_post(
    server: &Server,
    path: &str,
    authorization: Option<&str>,
    body: &str,
) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let auth = authorization
        .map(|t| format!("Authorization: {t}\r\n"))
        .unwrap_or_default();
    let work = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", server.client_port())).await?;
        let request = format!(
            "POST {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        anyhow::Ok(String::from_utf8_lossy(&raw).into_owned())
    };
    let raw = tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .context("gateway call timed out")??;
    let (head, body) = raw.split_once("\r\n\r\n").context("an HTTP answer")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("a status code")?;
    Ok((status, body.trim().to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_auth_like_etcd() -> Result<()> {
    let pair = Pair::start().await?;
    let etcd = grpc_transcript(&pair.etcd).await?;
    let ballast = grpc_transcript(&pair.ballast).await?;
    eprintln!("transcript:\n{}", ballast.join("\n"));
    ensure!(
        etcd == ballast,
        "etcd:\n{}\nballast:\n{}",
        etcd.join("\n"),
        ballast.join("\n")
    );
    Ok(())
}

/// Whether `etcdctl --user <user> <args>` on `server` succeeds, and its `Error:` line.
async fn ctl_as(server: &Server, user: &str, args: &[&str]) -> Result<(bool, String)> {
    let mut all = vec!["--user", user];
    all.extend_from_slice(args);
    let out = etcdctl::run(&server.endpoint(), &all, None, CMD_TIMEOUT).await?;
    let error = out
        .stderr
        .lines()
        .find(|l| l.starts_with("Error:"))
        .unwrap_or_default()
        .to_owned();
    Ok((out.code == Some(0), error))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_survives_restart_and_spans_a_cluster() -> Result<()> {
    // One member: kill -9 and restart. It checkpoints twice a second: the setup is in a
    // checkpoint's facts when a later user is added, which only the log holds.
    let mut single =
        Server::start_with_args(Kind::Ballast, &["--checkpoint-interval-ms=500"]).await?;
    setup_bob(&single).await?;
    ensure!(ctl_as(&single, "bob:bpw", &["put", "b/1", "x"]).await?.0);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (ok, error) = ctl_as(&single, "root:rootpw", &["user", "add", "carol:cpw"]).await?;
    ensure!(ok, "adding carol: {error}");
    single.kill9()?;
    single.restart().await?;
    let (ok, error) = ctl_as(&single, "bob:bpw", &["get", "b/1"]).await?;
    ensure!(ok, "after restart, bob cannot read b/1: {error}");
    let (ok, error) = ctl_as(&single, "bob:bpw", &["put", "c/1", "x"]).await?;
    ensure!(
        !ok && error == "Error: etcdserver: permission denied",
        "after restart: {error}"
    );
    let (ok, error) = ctl_as(&single, "root:rootpw", &["user", "list"]).await?;
    ensure!(ok, "after restart, root cannot list users: {error}");
    let (ok, error) = ctl_as(&single, "carol:cpw", &["get", "b/1"]).await?;
    ensure!(
        !ok && error == "Error: etcdserver: permission denied",
        "after restart, carol (added after the checkpoint): {error}"
    );
    let out = etcdctl::run(&single.endpoint(), &["get", "b/1"], None, CMD_TIMEOUT).await?;
    ensure!(
        out.stderr.contains("Error: etcdserver: user name is empty"),
        "after restart, auth is still enabled: {}",
        out.stderr
    );
    drop(single);

    // Three members: changes through member 0, used at members 1 and 2.
    let members = Server::start_cluster(Kind::Ballast, 3, &[]).await?;
    setup_bob(&members[0]).await?;
    let started = Instant::now();
    loop {
        let (ok, error) = ctl_as(&members[2], "bob:bpw", &["put", "b/2", "y"]).await?;
        if ok {
            break;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(10),
            "member 2 does not let bob write b/2: {error}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (ok, error) = ctl_as(&members[2], "bob:bpw", &["put", "c/2", "y"]).await?;
    ensure!(
        !ok && error == "Error: etcdserver: permission denied",
        "member 2: {error}"
    );
    let (ok, error) = ctl_as(&members[1], "root:rootpw", &["user", "list"]).await?;
    ensure!(ok, "member 1, root: {error}");
    // A token taken at member 0 is valid at member 1.
    let bob = token(&members[0].channel().await?, "bob", "bpw").await?;
    let mut kv1 = KvClient::new(members[1].channel().await?);
    let answer = kv1
        .range(with_token(
            RangeRequest {
                key: b"b/2".to_vec().into(),
                ..Default::default()
            },
            Some(&bob),
        ))
        .await?
        .into_inner();
    ensure!(
        answer.kvs.first().map(|kv| kv.value.as_ref()) == Some(&b"y"[..]),
        "member 1 with member 0's token: {answer:?}"
    );
    Ok(())
}
