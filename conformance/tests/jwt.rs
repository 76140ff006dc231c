//! `--auth-token jwt,...` side by side with etcd 3.4.23, on RSA and EC key pairs the test
//! makes with `openssl`.
//!
//! - `jwt_auth_like_etcd`: for RS256 and ES256, etcd and Ballast started with the same keys
//!   (`ttl=5s`): the same etcdctl steps (users, permissions, a wrong password, a user without
//!   one, an auth change between two commands), then over gRPC: each token's header and
//!   claim names, its user and auth revision, its lifetime, and that it verifies with the
//!   public key; requests with a valid, a garbled and a tampered token; a token made old by an
//!   auth change (Range, Put, Txn, a watch create, LeaseGrant, UserList: which fail, and how);
//!   an expired token; after `auth disable`, a token from before on Range and Put. Answers
//!   compared. Then each server's token is used at the other (they
//!   share the keys and the auth revision). Last, a member with only the public key (one of
//!   each): Authenticate's answer, and the signing etcd's token there (newer than the
//!   member's auth state: a Put takes it, a Range does not).
//! - `jwt_flag_refused_like_etcd`: malformed option strings and bad keys: both refuse to start,
//!   and Ballast's error carries the text etcd prints.
//! - `jwt_tokens_span_a_cluster`: Ballast alone, three members with the same keys: a token
//!   taken at one member works at the others, and an auth change made through another member
//!   makes it old everywhere.
//!
//! Invariants: every wait is bounded; servers are killed and their directories removed when
//! the test ends, also when it fails.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use ballast_conformance::etcdctl::{self, CMD_TIMEOUT};
use ballast_conformance::{Kind, Server};
use ballast_proto::etcdserverpb::auth_client::AuthClient;
use ballast_proto::etcdserverpb::kv_client::KvClient;
use ballast_proto::etcdserverpb::lease_client::LeaseClient;
use ballast_proto::etcdserverpb::watch_client::WatchClient;
use ballast_proto::etcdserverpb::{
    request_op, watch_request, AuthDisableRequest, AuthEnableRequest, AuthUserAddRequest,
    AuthUserListRequest, AuthenticateRequest, LeaseGrantRequest, PutRequest, RangeRequest,
    RequestOp, TxnRequest, WatchCreateRequest, WatchRequest,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use tokio_stream::StreamExt as _;
use tonic::transport::Channel;

/// The tokens' lifetime in these tests (short, so expiry is seen).
const TTL_S: i64 = 5;
/// Bound on one openssl run.
const OPENSSL_TIMEOUT: Duration = Duration::from_secs(60);

/// Key pairs made for one test, in a temporary directory.
struct Keys {
    dir: tempfile::TempDir,
}

impl Keys {
    /// `rsa.pem`/`rsa.pub.pem` (2048 bits), `ec.pem`/`ec.pub.pem` (P-256, SEC1 private key),
    /// `e3.pub.pem` (another RSA key, exponent 3).
    async fn make() -> Result<Keys> {
        let dir = tempfile::tempdir()?;
        let keys = Keys { dir };
        let p = |name: &str| keys.path(name).to_string_lossy().into_owned();
        let runs: [Vec<String>; 6] = [
            vec!["genrsa".into(), "-out".into(), p("rsa.pem"), "2048".into()],
            vec![
                "rsa".into(),
                "-in".into(),
                p("rsa.pem"),
                "-pubout".into(),
                "-out".into(),
                p("rsa.pub.pem"),
            ],
            vec![
                "genrsa".into(),
                "-3".into(),
                "-out".into(),
                p("e3.pem"),
                "2048".into(),
            ],
            vec![
                "rsa".into(),
                "-in".into(),
                p("e3.pem"),
                "-pubout".into(),
                "-out".into(),
                p("e3.pub.pem"),
            ],
            vec![
                "ecparam".into(),
                "-name".into(),
                "prime256v1".into(),
                "-genkey".into(),
                "-noout".into(),
                "-out".into(),
                p("ec.pem"),
            ],
            vec![
                "ec".into(),
                "-in".into(),
                p("ec.pem"),
                "-pubout".into(),
                "-out".into(),
                p("ec.pub.pem"),
            ],
        ];
        for args in runs {
            openssl(&args).await?;
        }
        Ok(keys)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn read(&self, name: &str) -> Result<Vec<u8>> {
        std::fs::read(self.path(name)).with_context(|| format!("reading {name}"))
    }

    /// `template` with `{name}` replaced by that key file's path.
    fn fill(&self, template: &str) -> String {
        let mut out = template.to_owned();
        for name in [
            "rsa.pem",
            "rsa.pub.pem",
            "e3.pub.pem",
            "ec.pem",
            "ec.pub.pem",
        ] {
            out = out.replace(&format!("{{{name}}}"), &self.path(name).to_string_lossy());
        }
        out
    }
}

async fn openssl(args: &[String]) -> Result<()> {
    let out = tokio::time::timeout(
        OPENSSL_TIMEOUT,
        tokio::process::Command::new("openssl")
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("openssl timed out")?
    .context("running openssl")?;
    ensure!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Starts etcd and Ballast with `--auth-token <flag>`, side by side.
async fn pair(flag: &str) -> Result<(Server, Server)> {
    let args = ["--auth-token", flag];
    let (etcd, ballast) = tokio::join!(
        Server::start_with_args(Kind::Etcd, &args),
        Server::start_with_args(Kind::Ballast, &args)
    );
    Ok((etcd?, ballast?))
}

/// What the etcdctl steps compare, after `etcdctl::AUTH_SETUP` (which ends with `auth enable`).
const STEPS: &[&[&str]] = &[
    &["--user", "root:rootpw", "get", "foo"],
    &["--user", "alice:apw", "get", "/a/x"],
    &["--user", "alice:apw", "put", "/a/x", "2"],
    &["--user", "alice:apw", "put", "k1", "v2"],
    &["--user", "alice:apw", "get", "k1"],
    &["--user", "alice:bad", "get", "k1"],
    &["--user", "carol:x", "get", "k1"],
    &["--user", "nobody:x", "get", "k1"],
    &["get", "foo"],
    &["--user", "alice:apw", "user", "list"],
    &["--user", "root:rootpw", "user", "add", "dave:dpw"],
    &["--user", "alice:apw", "get", "k1", "--print-value-only"],
    &[
        "--user",
        "root:rootpw",
        "role",
        "revoke-permission",
        "reader",
        "k1",
    ],
    &["--user", "alice:apw", "get", "k1"],
    &["--user", "root:rootpw", "user", "list"],
];

async fn steps_on(server: &Server) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for args in STEPS {
        let step = etcdctl::step(&server.endpoint(), args, None, CMD_TIMEOUT).await?;
        out.push(format!("etcdctl {args:?}\n{}", step.shown()));
    }
    Ok(out)
}

fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(t) = token {
        request
            .metadata_mut()
            .insert("token", t.parse().expect("an ASCII token"));
    }
    request
}

fn outcome<T>(r: std::result::Result<tonic::Response<T>, tonic::Status>) -> String {
    match r {
        Ok(_) => "ok".to_owned(),
        Err(s) => format!("{:?} {}", s.code(), s.message()),
    }
}

async fn token(channel: &Channel, name: &str, password: &str) -> Result<String> {
    Ok(AuthClient::new(channel.clone())
        .authenticate(AuthenticateRequest {
            name: name.into(),
            password: password.into(),
        })
        .await
        .with_context(|| format!("authenticating {name}"))?
        .into_inner()
        .token)
}

/// A token's header and claims, decoded (not verified).
fn decode(
    token: &str,
) -> Result<(
    serde_json::Value,
    serde_json::Map<String, serde_json::Value>,
)> {
    let mut parts = token.split('.');
    let mut part = |what: &str| -> Result<Vec<u8>> {
        let p = parts
            .next()
            .with_context(|| format!("no {what} in {token:?}"))?;
        URL_SAFE_NO_PAD
            .decode(p)
            .with_context(|| format!("{what} of {token:?}"))
    };
    let header = serde_json::from_slice(&part("header")?)?;
    let claims = serde_json::from_slice(&part("claims")?)?;
    ensure!(parts.next().is_some(), "no signature in {token:?}");
    Ok((header, claims))
}

fn claim_u64(claims: &serde_json::Map<String, serde_json::Value>, name: &str) -> Result<u64> {
    claims
        .get(name)
        .and_then(serde_json::Value::as_u64)
        .with_context(|| format!("claim {name} in {claims:?}"))
}

fn unix_now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// Whether `token` verifies with the public key `public_pem` for `method`.
fn verifies(token: &str, method: jsonwebtoken::Algorithm, public_pem: &[u8]) -> Result<bool> {
    let key = match method {
        jsonwebtoken::Algorithm::RS256 => jsonwebtoken::DecodingKey::from_rsa_pem(public_pem)?,
        jsonwebtoken::Algorithm::ES256 => jsonwebtoken::DecodingKey::from_ec_pem(public_pem)?,
        other => bail!("no key for {other:?}"),
    };
    let mut validation = jsonwebtoken::Validation::new(method);
    validation.leeway = 0;
    validation.set_required_spec_claims(&["exp"]);
    Ok(jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation).is_ok())
}

/// A watch create on `key` with `token`: its first answer.
async fn watch_create(channel: &Channel, key: &str, token: &str) -> Result<String> {
    let create = WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                key: key.as_bytes().to_vec().into(),
                ..Default::default()
            },
        )),
    };
    let stream = tokio_stream::iter(vec![create]).chain(tokio_stream::pending());
    let mut answers = WatchClient::new(channel.clone())
        .watch(with_token(stream, Some(token)))
        .await?
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(5), answers.message())
        .await
        .context("watch create answer")??
        .context("watch stream ended")?;
    Ok(format!(
        "created {} canceled {} reason {:?}",
        first.created, first.canceled, first.cancel_reason
    ))
}

fn range(key: &str) -> RangeRequest {
    RangeRequest {
        key: key.as_bytes().to_vec().into(),
        ..Default::default()
    }
}

fn put(key: &str) -> PutRequest {
    PutRequest {
        key: key.as_bytes().to_vec().into(),
        value: b"v".to_vec().into(),
        ..Default::default()
    }
}

/// The gRPC-level checks on one server, after `AUTH_SETUP` (module comment).
async fn transcript(
    server: &Server,
    method: jsonwebtoken::Algorithm,
    public_pem: &[u8],
) -> Result<Vec<String>> {
    let label = server.kind().label();
    let channel = server.channel().await?;
    let mut kv = KvClient::new(channel.clone());
    let mut out = Vec::new();

    let alice = token(&channel, "alice", "apw").await?;
    let (header, claims) = decode(&alice)?;
    out.push(format!("header {header}"));
    out.push(format!(
        "claim names {:?}",
        claims.keys().collect::<Vec<_>>()
    ));
    out.push(format!("username {}", claims["username"]));
    let revision = claim_u64(&claims, "revision")?;
    out.push(format!("revision {revision}"));
    let exp = claim_u64(&claims, "exp")? as i64;
    let lifetime = exp - unix_now_s();
    ensure!(
        (TTL_S - 2..=TTL_S).contains(&lifetime),
        "{label}: token expires in {lifetime} s, not about {TTL_S} s"
    );
    out.push(format!(
        "verifies with the public key: {}",
        verifies(&alice, method, public_pem)?
    ));

    out.push(format!(
        "range /a/x: {}",
        outcome(kv.range(with_token(range("/a/x"), Some(&alice))).await)
    ));
    out.push(format!(
        "range foo: {}",
        outcome(kv.range(with_token(range("foo"), Some(&alice))).await)
    ));
    out.push(format!(
        "garbled: {}",
        outcome(kv.range(with_token(range("/a/x"), Some("malformed"))).await)
    ));
    // The claims of another user under alice's signature.
    let (head, rest) = alice.split_once('.').context("a JWT")?;
    let (_, signature) = rest.split_once('.').context("a JWT")?;
    let forged_claims = format!(r#"{{"exp":{exp},"revision":{revision},"username":"root"}}"#);
    let tampered = format!(
        "{head}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(forged_claims)
    );
    out.push(format!(
        "tampered: {}",
        outcome(kv.range(with_token(range("/a/x"), Some(&tampered))).await)
    ));
    out.push(format!(
        "watch /a/x: {}",
        watch_create(&channel, "/a/x", &alice).await?
    ));

    // An auth change makes every token taken before it old.
    let root = token(&channel, "root", "rootpw").await?;
    out.push(format!(
        "user add erin: {}",
        outcome(
            AuthClient::new(channel.clone())
                .user_add(with_token(
                    AuthUserAddRequest {
                        name: "erin".into(),
                        password: "epw".into(),
                        ..Default::default()
                    },
                    Some(&root),
                ))
                .await
        )
    ));
    out.push(format!(
        "old token, range /a/x: {}",
        outcome(kv.range(with_token(range("/a/x"), Some(&alice))).await)
    ));
    out.push(format!(
        "old token, put k1: {}",
        outcome(kv.put(with_token(put("k1"), Some(&alice))).await)
    ));
    out.push(format!(
        "old token, put foo: {}",
        outcome(kv.put(with_token(put("foo"), Some(&alice))).await)
    ));
    let txn = TxnRequest {
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestRange(range("/a/x"))),
        }],
        ..Default::default()
    };
    out.push(format!(
        "old token, txn: {}",
        outcome(kv.txn(with_token(txn, Some(&alice))).await)
    ));
    out.push(format!(
        "old token, watch /a/x: {}",
        watch_create(&channel, "/a/x", &alice).await?
    ));
    out.push(format!(
        "old token, lease grant: {}",
        outcome(
            LeaseClient::new(channel.clone())
                .lease_grant(with_token(
                    LeaseGrantRequest {
                        ttl: 30,
                        ..Default::default()
                    },
                    Some(&alice),
                ))
                .await
        )
    ));
    out.push(format!(
        "old root token, user list: {}",
        outcome(
            AuthClient::new(channel.clone())
                .user_list(with_token(AuthUserListRequest {}, Some(&root)))
                .await
        )
    ));
    out.push(format!(
        "old root token, range foo: {}",
        outcome(kv.range(with_token(range("foo"), Some(&root))).await)
    ));
    let fresh = token(&channel, "alice", "apw").await?;
    let (_, fresh_claims) = decode(&fresh)?;
    out.push(format!(
        "fresh token: revision {} (+{}), range /a/x: {}",
        claim_u64(&fresh_claims, "revision")?,
        claim_u64(&fresh_claims, "revision")? - revision,
        outcome(kv.range(with_token(range("/a/x"), Some(&fresh))).await)
    ));

    // Expiry: valid through its `exp` second, invalid after.
    let exp = claim_u64(&fresh_claims, "exp")? as i64;
    let wait_ms =
        (exp + 1) * 1000 + 200 - SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64;
    ensure!(
        (0..=(TTL_S + 2) * 1000).contains(&wait_ms),
        "{label}: wait {wait_ms} ms"
    );
    tokio::time::sleep(Duration::from_millis(wait_ms as u64)).await;
    out.push(format!(
        "expired: {}",
        outcome(kv.range(with_token(range("/a/x"), Some(&fresh))).await)
    ));

    // With auth disabled, a token from before still fails a Range (etcd compares revisions
    // there whether auth is on or not), not a Put.
    let root = token(&channel, "root", "rootpw").await?;
    out.push(format!(
        "auth disable: {}",
        outcome(
            AuthClient::new(channel.clone())
                .auth_disable(with_token(AuthDisableRequest {}, Some(&root)))
                .await
        )
    ));
    out.push(format!(
        "auth off, token from before, range foo: {}",
        outcome(kv.range(with_token(range("foo"), Some(&root))).await)
    ));
    out.push(format!(
        "auth off, token from before, put foo: {}",
        outcome(kv.put(with_token(put("foo"), Some(&root))).await)
    ));
    out.push(format!(
        "auth enable: {}",
        outcome(
            AuthClient::new(channel.clone())
                .auth_enable(AuthEnableRequest {})
                .await
        )
    ));
    Ok(out)
}

/// Range /a/x at `server` with a token taken at `from`.
async fn range_with_token_of(server: &Server, from: &Server) -> Result<String> {
    let t = token(&from.channel().await?, "alice", "apw").await?;
    let mut kv = KvClient::new(server.channel().await?);
    Ok(outcome(kv.range(with_token(range("/a/x"), Some(&t))).await))
}

fn compare(what: &str, etcd: &[String], ballast: &[String]) -> Result<()> {
    let mismatches: Vec<String> = etcd
        .iter()
        .zip(ballast)
        .filter(|(e, b)| e != b)
        .map(|(e, b)| format!("--- etcd\n{e}\n--- ballast\n{b}"))
        .collect();
    ensure!(
        mismatches.is_empty() && etcd.len() == ballast.len(),
        "{what}: answers differ\n{}\n(etcd {} lines, ballast {})",
        mismatches.join("\n"),
        etcd.len(),
        ballast.len()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_auth_like_etcd() -> Result<()> {
    let keys = Keys::make().await?;
    for (method, private, public) in [
        (jsonwebtoken::Algorithm::RS256, "rsa.pem", "rsa.pub.pem"),
        (jsonwebtoken::Algorithm::ES256, "ec.pem", "ec.pub.pem"),
    ] {
        let flag = keys.fill(&format!(
            "jwt,pub-key={{{public}}},priv-key={{{private}}},sign-method={method:?},ttl={TTL_S}s"
        ));
        let (etcd, ballast) = pair(&flag).await?;
        for s in [&etcd, &ballast] {
            etcdctl::run_all(&s.endpoint(), etcdctl::AUTH_SETUP, CMD_TIMEOUT)
                .await
                .with_context(|| s.kind().label())?;
        }
        let (e, b) = (steps_on(&etcd).await?, steps_on(&ballast).await?);
        compare(&format!("{method:?} etcdctl steps"), &e, &b)?;
        let public_pem = keys.read(public)?;
        let e = transcript(&etcd, method, &public_pem).await?;
        let b = transcript(&ballast, method, &public_pem).await?;
        eprintln!("{method:?} transcript:\n{}", b.join("\n"));
        compare(&format!("{method:?} gRPC"), &e, &b)?;
        ensure!(
            b.contains(&"verifies with the public key: true".to_owned()),
            "{b:?}"
        );
        // Same keys, same auth revision: each one's token is good at the other.
        for (at, from) in [(&ballast, &etcd), (&etcd, &ballast)] {
            let answer = range_with_token_of(at, from).await?;
            ensure!(
                answer == "ok",
                "{method:?}: {}'s token at {}: {answer}",
                from.kind().label(),
                at.kind().label()
            );
        }

        if method == jsonwebtoken::Algorithm::RS256 {
            // A member with only the public key verifies but does not sign.
            let verify_only = keys.fill("jwt,pub-key={rsa.pub.pem},sign-method=RS256");
            let (etcd_vo, ballast_vo) = pair(&verify_only).await?;
            let mut answers = Vec::new();
            for s in [&etcd_vo, &ballast_vo] {
                etcdctl::run_all(&s.endpoint(), etcdctl::AUTH_SETUP, CMD_TIMEOUT)
                    .await
                    .with_context(|| s.kind().label())?;
                let mut lines = Vec::new();
                for args in [
                    &["--user", "alice:apw", "get", "k1"][..],
                    &["--user", "alice:bad", "get", "k1"],
                ] {
                    let step = etcdctl::step(&s.endpoint(), args, None, CMD_TIMEOUT).await?;
                    lines.push(format!("etcdctl {args:?}\n{}", step.shown()));
                }
                let channel = s.channel().await?;
                lines.push(format!(
                    "authenticate: {}",
                    outcome(
                        AuthClient::new(channel.clone())
                            .authenticate(AuthenticateRequest {
                                name: "root".into(),
                                password: "rootpw".into(),
                            })
                            .await
                    )
                ));
                // The signing etcd's token, whose auth revision is ahead of this member's
                // (the changes after AUTH_SETUP above): a write checks only that it is not
                // older, a Range that it is the member's.
                let theirs = token(&etcd.channel().await?, "alice", "apw").await?;
                let mut kv = KvClient::new(channel.clone());
                lines.push(format!(
                    "signing etcd's token, put w2: {}",
                    outcome(kv.put(with_token(put("w2"), Some(&theirs))).await)
                ));
                lines.push(format!(
                    "signing etcd's token, range /a/x: {}",
                    outcome(kv.range(with_token(range("/a/x"), Some(&theirs))).await)
                ));
                answers.push(lines);
            }
            compare("verify-only member", &answers[0], &answers[1])?;
            ensure!(
                answers[1][2]
                    == "authenticate: Unknown auth: token signing attempted with verify-only key"
                    && answers[1][3] == "signing etcd's token, put w2: ok",
                "{:?}",
                answers[1]
            );
        }
    }
    Ok(())
}

/// Whether a server of `kind` refuses to start with `--auth-token <flag>`, and what it said.
async fn refusal(kind: Kind, flag: &str) -> Result<String> {
    match Server::start_with_args(kind, &["--auth-token", flag]).await {
        Ok(_) => bail!("{} started with --auth-token {flag}", kind.label()),
        Err(e) => Ok(format!("{e:#}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_flag_refused_like_etcd() -> Result<()> {
    let keys = Keys::make().await?;
    // Each value, and the text etcd 3.4.23 stops with.
    let cases = [
        ("jwt", "auth: invalid auth options"),
        ("bogus", "auth: invalid auth options"),
        (
            "jwt,priv-key={rsa.pem},sign-method=RS256,x",
            "auth: invalid auth options",
        ),
        (
            "jwt,priv-key={rsa.pem},sign-method=rs256",
            "auth: invalid auth options",
        ),
        (
            "jwt,priv-key={rsa.pem},sign-method=RS256,ttl=abc",
            "auth: invalid auth options",
        ),
        (
            "jwt,priv-key=/nonexistent.pem,sign-method=RS256",
            "auth: invalid auth options",
        ),
        ("jwt,sign-method=RS256", "auth: missing key data"),
        (
            "jwt,pub-key={e3.pub.pem},priv-key={rsa.pem},sign-method=RS256",
            "auth: public and private keys don't match",
        ),
        (
            "jwt,pub-key={ec.pub.pem},priv-key={rsa.pem},sign-method=RS256",
            "key is not a valid RSA public key",
        ),
        (
            "jwt,pub-key={rsa.pub.pem},sign-method=ES256",
            "key is not a valid ECDSA public key",
        ),
        (
            "jwt,priv-key={rsa.pem},sign-method=none",
            "unsupported signing method: *jwt.signingMethodNone",
        ),
    ];
    let mut problems = Vec::new();
    for (template, text) in cases {
        let flag = keys.fill(template);
        let (etcd, ballast) =
            tokio::join!(refusal(Kind::Etcd, &flag), refusal(Kind::Ballast, &flag));
        let (etcd, ballast) = (etcd?, ballast?);
        if !etcd.contains(text) {
            problems.push(format!("{template}: etcd did not say {text:?}:\n{etcd}"));
        }
        if !ballast.contains(text) {
            problems.push(format!(
                "{template}: ballast did not say {text:?}:\n{ballast}"
            ));
        }
    }
    ensure!(problems.is_empty(), "{}", problems.join("\n\n"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_tokens_span_a_cluster() -> Result<()> {
    let keys = Keys::make().await?;
    let flag = keys.fill("jwt,pub-key={ec.pub.pem},priv-key={ec.pem},sign-method=ES256,ttl=1m");
    let members = Server::start_cluster(Kind::Ballast, 3, &["--auth-token", &flag]).await?;
    etcdctl::run_all(&members[0].endpoint(), etcdctl::AUTH_SETUP, CMD_TIMEOUT).await?;
    let alice = token(&members[0].channel().await?, "alice", "apw").await?;
    // Members 1 and 2 take member 0's token once they applied the setup.
    for m in &members[1..] {
        let mut kv = KvClient::new(m.channel().await?);
        let started = Instant::now();
        loop {
            let answer = outcome(kv.range(with_token(range("/a/x"), Some(&alice))).await);
            if answer == "ok" {
                break;
            }
            ensure!(
                started.elapsed() < Duration::from_secs(10),
                "{}: member 0's token: {answer}",
                m.name()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // A change through member 1 makes it old at member 2 too.
    let root = token(&members[1].channel().await?, "root", "rootpw").await?;
    AuthClient::new(members[1].channel().await?)
        .user_add(with_token(
            AuthUserAddRequest {
                name: "erin".into(),
                password: "epw".into(),
                ..Default::default()
            },
            Some(&root),
        ))
        .await?;
    let mut kv2 = KvClient::new(members[2].channel().await?);
    let started = Instant::now();
    loop {
        let answer = outcome(kv2.range(with_token(range("/a/x"), Some(&alice))).await);
        if answer == "InvalidArgument etcdserver: revision of auth store is old" {
            break;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(10),
            "member 2, old token after the change: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A token from member 2 works at member 0.
    let fresh = token(&members[2].channel().await?, "alice", "apw").await?;
    let mut kv0 = KvClient::new(members[0].channel().await?);
    let answer = outcome(kv0.range(with_token(range("/a/x"), Some(&fresh))).await);
    ensure!(
        answer == "ok",
        "member 0 with member 2's fresh token: {answer}"
    );
    Ok(())
}
