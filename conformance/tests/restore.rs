//! Migrating from etcd: a varied history written into the reference etcd 3.4.23, `etcdctl
//! snapshot save` from it, `ballast snapshot restore` of that file, and Ballast started on the
//! restored data dir must serve what etcd serves. On one shard and on two (unless
//! `BALLAST_SHARDS` fixes the count), and as a 3-member cluster restored member by member from
//! the same file.
//!
//! The history ([`HISTORY`], see `ballast_conformance::history`): four leases (one with keys
//! in both shards, one that gets its key after the compaction, one without keys, one revoked
//! with its key), keys inside `/registry/` (spread over shards) and outside it (shard 0),
//! overwrites, deletes and re-creations, a txn writing three keys over both shards, a
//! compaction in the middle, writes after it, the last change a deletion. Compared, Ballast
//! against etcd: the header revision; every key with value, create and mod revision, version
//! and lease at every revision from the compact revision to the current one; a read below the
//! compact revision and a compaction at it (same code and message); the leases with granted
//! TTLs and attached keys; then a new put gets the revision etcd gives it.
//! Also the refusals: restoring into a data dir that holds Ballast data, a damaged file, and
//! starting the server on etcd's own data dir.
//!
//! etcd's cluster state in the file: a snapshot of an etcd with users, roles, key permissions
//! and auth enabled ([`etcdctl::AUTH_SETUP`]), and one of an etcd that raised NOSPACE, are each restored
//! with `etcdctl snapshot restore` into an etcd and with `ballast snapshot restore` into
//! Ballast; then the same etcdctl steps ([`AUTH_STEPS`], [`ALARM_STEPS`]) run against both,
//! exit code, stdout and `Error:` lines compared step by step as `auth.rs` compares them.
//!
//! Bounded: every etcdctl and restore run has a timeout, every server must answer within 30 s,
//! and every process is killed when the test ends (also on failure).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use ballast_conformance::etcdctl;
use ballast_conformance::history::{put, History, Last};
use ballast_conformance::process::run_to_exit;
use ballast_conformance::server::{ballast_bin, ballast_shards, both_etcd, free_port};
use ballast_conformance::{Kind, Server};
use ballast_proto::etcdserverpb::{
    kv_client::KvClient, lease_client::LeaseClient, CompactionRequest, LeaseLeasesRequest,
    LeaseTimeToLiveRequest, RangeRequest,
};
use tonic::transport::Channel;

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const CTL_TIMEOUT: Duration = Duration::from_secs(30);
const RESTORE_TIMEOUT: Duration = Duration::from_secs(60);

/// A Ballast process on a restored data dir; killed and reaped on drop.
struct Ballast {
    child: Child,
    client_url: String,
    log: PathBuf,
}

impl Drop for Ballast {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- {} log (last lines) ---", self.log.display());
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

impl Ballast {
    async fn channel(&self) -> Result<Channel> {
        Ok(Channel::from_shared(self.client_url.clone())?
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .await?)
    }

    async fn wait_ready(&self) -> Result<()> {
        let started = Instant::now();
        loop {
            if let Ok(ch) = self.channel().await {
                if KvClient::new(ch)
                    .range(RangeRequest {
                        key: "health".into(),
                        ..Default::default()
                    })
                    .await
                    .is_ok()
                {
                    return Ok(());
                }
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!(
                    "{} did not answer within {READY_TIMEOUT:?}",
                    self.client_url
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A key as read: (key, value, create revision, mod revision, version, lease).
type Kv = (String, String, i64, i64, i64, i64);

/// What one server answers, for comparison.
#[derive(Debug, PartialEq)]
struct View {
    revision: i64,
    /// Every key at every revision from the compact revision on.
    at: Vec<(i64, Vec<Kv>)>,
    below_compact: (tonic::Code, String),
    compact_again: (tonic::Code, String),
    /// (id, granted ttl, keys)
    leases: Vec<(i64, i64, Vec<String>)>,
}

fn kvs(resp: &ballast_proto::etcdserverpb::RangeResponse) -> Vec<Kv> {
    resp.kvs
        .iter()
        .map(|k| {
            (
                String::from_utf8_lossy(&k.key).into_owned(),
                String::from_utf8_lossy(&k.value).into_owned(),
                k.create_revision,
                k.mod_revision,
                k.version,
                k.lease,
            )
        })
        .collect()
}

fn all(revision: i64) -> RangeRequest {
    RangeRequest {
        key: vec![0].into(),
        range_end: vec![0].into(),
        revision,
        ..Default::default()
    }
}

async fn view(ch: Channel, compact: i64) -> Result<View> {
    let mut kv = KvClient::new(ch.clone());
    let mut lease = LeaseClient::new(ch);
    let current = kv.range(all(0)).await?.into_inner();
    let revision = current.header.context("header")?.revision;
    let mut at = Vec::new();
    for r in compact..=revision {
        at.push((r, kvs(&kv.range(all(r)).await?.into_inner())));
    }
    let below = kv
        .range(all(compact - 1))
        .await
        .expect_err("a read below the compact revision");
    let again = kv
        .compact(CompactionRequest {
            revision: compact,
            physical: false,
        })
        .await
        .expect_err("compacting at the compact revision again");
    let ids = lease
        .lease_leases(LeaseLeasesRequest {})
        .await?
        .into_inner();
    let mut ids: Vec<i64> = ids.leases.iter().map(|l| l.id).collect();
    ids.sort_unstable();
    let mut leases = Vec::new();
    for id in ids {
        let t = lease
            .lease_time_to_live(LeaseTimeToLiveRequest { id, keys: true })
            .await?
            .into_inner();
        ensure!(
            t.ttl > 0 && t.ttl <= t.granted_ttl,
            "lease {id:x}: {} s left of {}",
            t.ttl,
            t.granted_ttl
        );
        let mut keys: Vec<String> = t
            .keys
            .iter()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        keys.sort();
        leases.push((id, t.granted_ttl, keys));
    }
    Ok(View {
        revision,
        at,
        below_compact: (below.code(), below.message().to_owned()),
        compact_again: (again.code(), again.message().to_owned()),
        leases,
    })
}

/// The history (module comment).
const HISTORY: History = History {
    keyless_lease: true,
    // One txn, one revision, keys in both shards.
    txn_keys: &[
        "/registry/pods/default/c",
        "/app/txn",
        "/registry/pods/default/d",
    ],
    last: Last::Deletion,
};

/// Runs `ballast snapshot restore <args>` (bounded); returns (exit code, stdout and stderr).
fn run_restore(args: &[String]) -> Result<(Option<i32>, String)> {
    let mut cmd = Command::new(ballast_bin());
    cmd.args(["snapshot", "restore"]).args(args);
    let run = run_to_exit(&mut cmd, RESTORE_TIMEOUT)?;
    Ok((run.code, run.output()))
}

/// One member to restore and start: its name and ports.
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
}

fn members(n: usize) -> Result<Vec<Member>> {
    let mut used = Vec::new();
    let mut next = || -> Result<u16> {
        loop {
            let p = free_port()?;
            if !used.contains(&p) {
                used.push(p);
                return Ok(p);
            }
        }
    };
    (0..n)
        .map(|i| {
            Ok(Member {
                name: format!("m{i}"),
                client_port: next()?,
                peer_port: next()?,
            })
        })
        .collect()
}

/// Restores `file` once per member (same `--initial-cluster`) and starts them all.
async fn restore_and_start(
    dir: &Path,
    file: &Path,
    members: &[Member],
    shards: Option<usize>,
) -> Result<Vec<Ballast>> {
    let peer = |m: &Member| format!("http://127.0.0.1:{}", m.peer_port);
    let initial: Vec<String> = members
        .iter()
        .map(|m| format!("{}={}", m.name, peer(m)))
        .collect();
    let initial = initial.join(",");
    let mut started = Vec::new();
    for m in members {
        let data_dir = dir.join(&m.name);
        let client_url = format!("http://127.0.0.1:{}", m.client_port);
        let common: Vec<String> = [
            "--name",
            &m.name,
            "--data-dir",
            &data_dir.to_string_lossy(),
            "--initial-cluster",
            &initial,
            "--initial-advertise-peer-urls",
            &peer(m),
            "--initial-cluster-token",
            "restore-test",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut args = vec![file.to_string_lossy().into_owned()];
        args.extend(common.iter().cloned());
        if let Some(n) = shards {
            args.extend(["--shards".to_owned(), n.to_string()]);
        }
        let (code, out) = run_restore(&args)?;
        ensure!(code == Some(0), "restore of {}: {out}", m.name);
        ensure!(out.contains("restored into"), "{out}");
        let log = dir.join(format!("{}.log", m.name));
        let log_file = std::fs::File::create(&log)?;
        let child = Command::new(ballast_bin())
            .args(&common)
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer(m)])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .context("spawning ballast")?;
        started.push(Ballast {
            child,
            client_url,
            log,
        });
    }
    for b in &started {
        b.wait_ready().await?;
    }
    Ok(started)
}

/// etcd's snapshot of the history, restored into `members` Ballast members with `shards`;
/// each must serve what etcd serves.
async fn migrate(n: usize, shards: Option<usize>) -> Result<()> {
    let etcd = Server::start(Kind::Etcd).await?;
    let compact = HISTORY.write(etcd.channel().await?).await?;
    let want = view(etcd.channel().await?, compact).await?;
    ensure!(want.leases.len() == 3, "etcd's leases: {:?}", want.leases);
    ensure!(
        compact > 10 && want.at.len() >= 5 && want.at.iter().all(|(_, kvs)| kvs.len() >= 5),
        "the history etcd holds: {want:?}"
    );

    let dir = tempfile::tempdir()?;
    let file = dir.path().join("etcd.db");
    let file_arg = file.to_string_lossy().into_owned();
    let saved = etcdctl::run(
        &etcd.endpoint(),
        &["snapshot", "save", &file_arg],
        None,
        CTL_TIMEOUT,
    )
    .await?;
    ensure!(saved.code == Some(0), "snapshot save: {saved:?}");

    let servers = restore_and_start(dir.path(), &file, &members(n)?, shards).await?;
    for b in &servers {
        let got = view(b.channel().await?, compact).await?;
        ensure!(
            got == want,
            "{} serves\n{got:#?}\netcd serves\n{want:#?}",
            b.client_url
        );
    }
    // The next write takes the revision etcd gives it, and every member reads it.
    let mut e = KvClient::new(etcd.channel().await?);
    let mut first = KvClient::new(servers[0].channel().await?);
    let pe = e.put(put("/registry/pods/default/new", "n", 0)).await?;
    let pb = first.put(put("/registry/pods/default/new", "n", 0)).await?;
    let rev = |h: Option<ballast_proto::etcdserverpb::ResponseHeader>| h.map(|h| h.revision);
    ensure!(
        rev(pb.into_inner().header) == rev(pe.into_inner().header),
        "the put after the restore"
    );
    let want_now = kvs(&e.range(all(0)).await?.into_inner());
    for b in &servers {
        let got = kvs(&KvClient::new(b.channel().await?)
            .range(all(0))
            .await?
            .into_inner());
        ensure!(got == want_now, "{}: after the put", b.client_url);
    }

    // Refusals: a data dir already restored, and a damaged file; neither changes the dir.
    let m0 = dir.path().join("m0");
    let layout = std::fs::read(m0.join("ballast/layout"))?;
    let again = [
        file_arg.clone(),
        "--name".into(),
        "m0".into(),
        "--data-dir".into(),
        m0.to_string_lossy().into_owned(),
    ];
    let (code, out) = run_restore(&again)?;
    ensure!(code != Some(0), "a second restore into {}", m0.display());
    ensure!(out.contains("already holds Ballast data"), "{out}");
    ensure!(std::fs::read(m0.join("ballast/layout"))? == layout);
    let mut bytes = std::fs::read(&file)?;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    let damaged = dir.path().join("damaged.db");
    std::fs::write(&damaged, &bytes)?;
    let fresh = dir.path().join("fresh");
    let (code, out) = run_restore(&[
        damaged.to_string_lossy().into_owned(),
        "--data-dir".into(),
        fresh.to_string_lossy().into_owned(),
    ])?;
    ensure!(
        code != Some(0) && out.contains("integrity check failed"),
        "{out}"
    );
    ensure!(!fresh.exists(), "a failed restore left {}", fresh.display());
    Ok(())
}

fn shard_counts() -> Vec<Option<usize>> {
    match ballast_shards() {
        Some(n) => vec![Some(n)],
        None => vec![Some(1), Some(2)],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_snapshot_restores_into_ballast() {
    for shards in shard_counts() {
        migrate(1, shards)
            .await
            .unwrap_or_else(|e| panic!("shards {shards:?}: {e:#}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_restores_from_one_etcd_snapshot() {
    let shards = shard_counts().pop().flatten();
    migrate(3, shards).await.unwrap_or_else(|e| panic!("{e:#}"));
}

/// The server refuses to start on etcd's own data dir (no Ballast data beside it), naming the
/// command that migrates it, and writes nothing there; migrated in place, it starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_refuses_an_etcd_data_dir() {
    let mut etcd = Server::start(Kind::Etcd).await.expect("etcd starts");
    KvClient::new(etcd.channel().await.expect("channel"))
        .put(put("/k", "v", 0))
        .await
        .expect("put");
    etcd.terminate(Duration::from_secs(10)).expect("etcd stops");
    let data_dir = etcd.data_dir();
    assert!(data_dir.join("member/snap/db").is_file());
    let before = std::fs::read_dir(&data_dir).unwrap().count();
    let port = free_port().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let refused = run_to_exit(
        Command::new(ballast_bin())
            .args(["--data-dir", &data_dir.to_string_lossy()])
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ]),
        RESTORE_TIMEOUT,
    )
    .expect("ballast stops by itself");
    let (code, text) = (refused.code, refused.output());
    assert!(code.is_some_and(|c| c != 0), "{text}");
    assert!(text.contains("holds an etcd member"), "{text}");
    assert!(text.contains("ballast snapshot restore"), "{text}");
    assert_eq!(std::fs::read_dir(&data_dir).unwrap().count(), before);
    assert!(!data_dir.join("ballast").exists());

    // Migrated in place from the stopped etcd's own backend file (no hash: as etcdctl, only
    // with --skip-hash-check), the server starts beside member/ and serves the key.
    let db = data_dir
        .join("member/snap/db")
        .to_string_lossy()
        .into_owned();
    let dir_arg = data_dir.to_string_lossy().into_owned();
    let (code, out) = run_restore(&[db.clone(), "--data-dir".into(), dir_arg.clone()]).unwrap();
    assert!(
        code != Some(0) && out.contains("snapshot missing hash"),
        "{out}"
    );
    let (code, out) =
        run_restore(&[db, "--skip-hash-check".into(), "--data-dir".into(), dir_arg]).unwrap();
    assert_eq!(code, Some(0), "{out}");
    let log = data_dir.join("ballast.log");
    let ballast = Ballast {
        child: Command::new(ballast_bin())
            .args(["--data-dir", &data_dir.to_string_lossy()])
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("ballast starts"),
        client_url: url.clone(),
        log,
    };
    ballast.wait_ready().await.expect("ballast serves");
    let got = KvClient::new(ballast.channel().await.unwrap())
        .range(RangeRequest {
            key: "/k".into(),
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    assert_eq!(got.kvs.len(), 1);
    assert_eq!(&got.kvs[0].value[..], b"v");
    assert_eq!(got.kvs[0].mod_revision, 2);
}

/// What is compared on the restored etcd and Ballast (module comment): the users and roles
/// as root reads them, the original passwords, enforcement, root's protections, a change on
/// top of the restored state, then `auth disable`.
const AUTH_STEPS: &[&[&str]] = &[
    &["user", "list"],
    &["get", "foo"],
    &["--user", "root:rootpw", "user", "list"],
    &["--user", "root:rootpw", "role", "list"],
    &["--user", "root:rootpw", "user", "get", "root"],
    &["--user", "root:rootpw", "user", "get", "alice"],
    &["--user", "root:rootpw", "user", "get", "carol"],
    &["--user", "root:rootpw", "role", "get", "reader"],
    &["--user", "root:rootpw", "role", "get", "idle"],
    &["--user", "root:wrong", "get", "foo"],
    &["--user", "alice:apw", "get", "/a/x"],
    &["--user", "alice:wrong", "get", "/a/x"],
    &["--user", "carol:x", "get", "/a/x"],
    &["--user", "alice:apw", "get", "/a/", "--prefix"],
    &["--user", "alice:apw", "get", "foo"],
    &["--user", "alice:apw", "put", "foo", "x"],
    &["--user", "alice:apw", "put", "/a/x", "2"],
    &["--user", "alice:apw", "put", "k1", "v2"],
    &["--user", "alice:apw", "put", "w3", "x"],
    &["--user", "alice:apw", "get", "k1"],
    &["--user", "alice:apw", "user", "list"],
    &["--user", "alice:apw", "user", "get", "alice"],
    &["--user", "alice:apw", "role", "add", "x"],
    &["--user", "root:rootpw", "get", "", "--from-key"],
    &["--user", "root:rootpw", "put", "foo", "y"],
    &["--user", "root:rootpw", "user", "delete", "root"],
    &[
        "--user",
        "root:rootpw",
        "role",
        "grant-permission",
        "reader",
        "read",
        "foo",
    ],
    &["--user", "alice:apw", "get", "foo"],
    &["--user", "root:rootpw", "auth", "disable"],
    &["get", "foo"],
    &["user", "list"],
    &["role", "get", "reader"],
];

/// What is compared after restoring a file taken while NOSPACE was raised.
const ALARM_STEPS: &[&[&str]] = &[
    &["alarm", "list"],
    &["put", "x", "y"],
    &["get", "x"],
    &["alarm", "disarm"],
    &["alarm", "list"],
    &["put", "x", "y"],
    &["get", "x", "--print-value-only"],
];

/// One etcdctl step as it is compared ([`etcdctl::step`]).
async fn ctl_step(server: &Server, args: &[&str]) -> Result<String> {
    Ok(etcdctl::step(&server.endpoint(), args, None, CTL_TIMEOUT)
        .await?
        .shown())
}

/// A server of `kind` on a data dir restored from `file`: started once (for its ports and
/// dirs), stopped, its data dir replaced by `etcdctl snapshot restore` (etcd) or `ballast
/// snapshot restore` (Ballast, on two shards unless `BALLAST_SHARDS` says), then started on
/// it. Answers the server and what the restore printed.
async fn restored(kind: Kind, file: &Path) -> Result<(Server, String)> {
    let mut server = Server::start(kind).await?;
    server.terminate(Duration::from_secs(10))?;
    let data_dir = server.data_dir();
    std::fs::remove_dir_all(&data_dir)?;
    let peer = server.peer_url();
    let flags: Vec<String> = [
        "--data-dir".to_owned(),
        data_dir.to_string_lossy().into_owned(),
        "--name".to_owned(),
        server.name().to_owned(),
        "--initial-cluster".to_owned(),
        format!("{}={peer}", server.name()),
        "--initial-advertise-peer-urls".to_owned(),
        peer.clone(),
    ]
    .into();
    let mut cmd = if kind == Kind::Etcd || both_etcd() {
        let mut c = Command::new("etcdctl");
        c.env("ETCDCTL_API", "3").args(["snapshot", "restore"]);
        c.arg(file).args(&flags);
        c
    } else {
        let mut c = Command::new(ballast_bin());
        c.args(["snapshot", "restore"]).arg(file).args(&flags);
        if ballast_shards().is_none() {
            c.args(["--shards", "2"]);
        }
        c
    };
    let run = run_to_exit(&mut cmd, RESTORE_TIMEOUT)?;
    ensure!(run.success(), "{}: restore: {}", kind.label(), run.output());
    server.restart().await?;
    Ok((server, run.output()))
}

/// Runs `steps` on etcd and Ballast each restored from `file`; fails listing every step whose
/// result differs. Answers what Ballast's restore printed.
async fn compare_restored(file: &Path, steps: &[&[&str]]) -> Result<String> {
    let (etcd, _) = restored(Kind::Etcd, file).await?;
    let (ballast, printed) = restored(Kind::Ballast, file).await?;
    let mut mismatches = Vec::new();
    for (i, args) in steps.iter().enumerate() {
        let want = ctl_step(&etcd, args).await?;
        let got = ctl_step(&ballast, args).await?;
        if want != got {
            mismatches.push(format!(
                "step {i} etcdctl {args:?}\n--- etcd\n{want}\n--- ballast\n{got}"
            ));
        }
    }
    ensure!(mismatches.is_empty(), "{}", mismatches.join("\n\n"));
    Ok(printed)
}

/// `etcdctl snapshot save` from `server` into `dir` (as `user`, if any).
async fn save(server: &Server, dir: &Path, user: Option<&str>) -> Result<PathBuf> {
    let file = dir.join("etcd.db");
    let file_arg = file.to_string_lossy().into_owned();
    let mut args = Vec::new();
    if let Some(u) = user {
        args.extend(["--user", u]);
    }
    args.extend(["snapshot", "save", &file_arg]);
    let saved = etcdctl::run(&server.endpoint(), &args, None, CTL_TIMEOUT).await?;
    ensure!(saved.code == Some(0), "snapshot save: {saved:?}");
    Ok(file)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_roles_and_auth_restore_like_etcd() -> Result<()> {
    let source = Server::start(Kind::Etcd).await?;
    etcdctl::run_all(&source.endpoint(), etcdctl::AUTH_SETUP, CTL_TIMEOUT).await?;
    let dir = tempfile::tempdir()?;
    let file = save(&source, dir.path(), Some("root:rootpw")).await?;
    drop(source);
    let printed = compare_restored(&file, AUTH_STEPS).await?;
    if !both_etcd() {
        ensure!(
            printed.contains("3 users, 2 roles, auth enabled"),
            "{printed}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nospace_alarm_restores_like_etcd() -> Result<()> {
    let source = Server::start_with_args(Kind::Etcd, &["--quota-backend-bytes", "1000000"]).await?;
    let mut kv = KvClient::new(source.channel().await?);
    let value = "v".repeat(64 * 1024);
    let mut raised = false;
    // About 16 puts of 64 KiB fill a 1 MB quota; bounded.
    for i in 0..64 {
        match kv.put(put(&format!("/fill/{i}"), &value, 0)).await {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                raised = true;
                break;
            }
            Err(s) => bail!("put {i}: {s}"),
        }
    }
    ensure!(raised, "etcd never reached its quota");
    let listed = ctl_step(&source, &["alarm", "list"]).await?;
    ensure!(listed.contains("alarm:NOSPACE"), "{listed}");
    let dir = tempfile::tempdir()?;
    let file = save(&source, dir.path(), None).await?;
    drop(source);
    let printed = compare_restored(&file, ALARM_STEPS).await?;
    if !both_etcd() {
        ensure!(printed.contains(", 1 alarms,"), "{printed}");
    }
    Ok(())
}
