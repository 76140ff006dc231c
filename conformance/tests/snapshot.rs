//! `etcdctl snapshot save` against Ballast, then `snapshot status` and `snapshot restore`, and
//! the reference etcd 3.4.23 started on the restored data dir: it must serve what Ballast
//! served. On one shard and on two (unless `BALLAST_SHARDS` fixes the count; with
//! `BALLAST_CONFORMANCE_BOTH_ETCD=1` the "Ballast" side is an etcd, which validates the test).
//!
//! The history written ([`HISTORY`], see `ballast_conformance::history`): leases (one with
//! keys, one that gets its key after the compaction, one revoked with its key), keys in both
//! shards (so two shards hold changes at the same main revision), overwrites, deletes and
//! re-creations, a txn writing two keys, a compaction in the middle, writes after it.
//! Compared, Ballast against the restored etcd:
//! - `snapshot status`: its revision is Ballast's revision, its key count at least the changes
//!   kept plus the leases;
//! - the current revision (a Range's header), and every key with value, create and mod
//!   revision, version and lease, read at every revision from the compact revision to the
//!   current one;
//! - a read below the compact revision and a compaction at it: both refused as compacted;
//! - the leases: ids, granted TTLs, attached keys.
//!
//! The cluster's state in the file (`users_roles_and_auth_reach_etcd`,
//! `a_nospace_alarm_reaches_etcd`): Ballast is given users, roles, key permissions and auth
//! ([`etcdctl::AUTH_SETUP`]), or filled until a small `--quota-backend-bytes` raises NOSPACE; `etcdctl
//! snapshot save` (as root), `etcdctl snapshot restore`, etcd 3.4.23 started on the result;
//! then the same etcdctl steps ([`AUTH_STEPS`], [`ALARM_STEPS`]) run against that etcd and the
//! original Ballast, exit code, stdout and `Error:` lines compared step by step (as `auth.rs`
//! and `restore.rs` compare them): the users with their original passwords, the roles, what
//! is allowed and denied, `auth disable`; the alarm listed under the same member and refusing
//! the same put. After `alarm disarm` the restored etcd, whose quota is etcd's default, takes
//! writes again (the original Ballast is still over its quota and raises the alarm again, as
//! etcd would, so that part is checked on the etcd alone).
//!
//! Bounded: every etcdctl run has a timeout, the restored etcd must answer within 30 s, and
//! every process is killed when the test ends (also on failure).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use ballast_conformance::etcdctl;
use ballast_conformance::history::put;
use ballast_conformance::history::{History, Last};
use ballast_conformance::server::{ballast_shards, free_port};
use ballast_conformance::{both_etcd, Kind, Server};
use ballast_proto::etcdserverpb::{
    kv_client::KvClient, lease_client::LeaseClient, CompactionRequest, LeaseLeasesRequest,
    LeaseTimeToLiveRequest, RangeRequest,
};
use tonic::transport::Channel;

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const CTL_TIMEOUT: Duration = Duration::from_secs(30);

/// The reference etcd on a restored data dir; killed and reaped on drop.
struct Restored {
    child: Child,
    client_url: String,
    log: std::path::PathBuf,
}

impl Drop for Restored {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- restored etcd log (last lines) ---");
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
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

async fn view(ch: Channel, compact: i64) -> Result<View> {
    let mut kv = KvClient::new(ch.clone());
    let mut lease = LeaseClient::new(ch);
    let all = |revision| RangeRequest {
        key: vec![0].into(),
        range_end: vec![0].into(),
        revision,
        ..Default::default()
    };
    let current = kv.range(all(0)).await?.into_inner();
    let revision = current.header.context("header")?.revision;
    let mut at = Vec::new();
    for r in compact..=revision {
        let resp = kv.range(all(r)).await?.into_inner();
        let kvs = resp
            .kvs
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
            .collect();
        at.push((r, kvs));
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
    let mut leases = Vec::new();
    let ids = lease
        .lease_leases(LeaseLeasesRequest {})
        .await?
        .into_inner();
    let mut ids: Vec<i64> = ids.leases.iter().map(|l| l.id).collect();
    ids.sort_unstable();
    for id in ids {
        let t = lease
            .lease_time_to_live(LeaseTimeToLiveRequest { id, keys: true })
            .await?
            .into_inner();
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
    keyless_lease: false,
    txn_keys: &["/registry/pods/default/c", "/registry/pods/default/d"],
    last: Last::Overwrite,
};

async fn start_restored(dir: &Path, snapshot: &Path, endpoint: &str) -> Result<Restored> {
    let client_port = free_port()?;
    let mut peer_port = free_port()?;
    while peer_port == client_port {
        peer_port = free_port()?;
    }
    let client_url = format!("http://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let data_dir = dir.join("restored");
    let initial = format!("restored={peer_url}");
    let snapshot_arg = snapshot.to_string_lossy().into_owned();
    let data_arg = data_dir.to_string_lossy().into_owned();
    let out = etcdctl::run(
        endpoint,
        &[
            "snapshot",
            "restore",
            &snapshot_arg,
            "--data-dir",
            &data_arg,
            "--name",
            "restored",
            "--initial-cluster",
            &initial,
            "--initial-advertise-peer-urls",
            &peer_url,
            "--initial-cluster-token",
            "snapshot-test",
        ],
        None,
        CTL_TIMEOUT,
    )
    .await?;
    ensure!(out.code == Some(0), "snapshot restore: {out:?}");
    let log = dir.join("restored.log");
    let log_file = std::fs::File::create(&log)?;
    let child = Command::new("etcd")
        .args(["--name", "restored", "--data-dir", &data_arg])
        .args(["--listen-client-urls", &client_url])
        .args(["--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &initial])
        .args(["--initial-cluster-token", "snapshot-test"])
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .spawn()
        .context("spawning etcd")?;
    let restored = Restored {
        child,
        client_url,
        log,
    };
    let started = Instant::now();
    loop {
        if let Ok(ch) = restored.channel().await {
            let answer = KvClient::new(ch)
                .range(RangeRequest {
                    key: "health".into(),
                    ..Default::default()
                })
                .await;
            match answer {
                Ok(_) => return Ok(restored),
                // Auth came back enabled: the read needs a user, but etcd answers.
                Err(s) if s.message().contains("user name is empty") => return Ok(restored),
                Err(_) => {}
            }
        }
        if started.elapsed() > READY_TIMEOUT {
            bail!("the restored etcd did not answer within {READY_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Restored {
    /// `127.0.0.1:<port>`, for etcdctl.
    fn endpoint(&self) -> String {
        self.client_url.trim_start_matches("http://").to_owned()
    }

    async fn channel(&self) -> Result<Channel> {
        Ok(Channel::from_shared(self.client_url.clone())?
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .await?)
    }
}

async fn round_trip(shard_args: &[&str], shards: usize) -> Result<()> {
    let ballast = Server::start_with_args(Kind::Ballast, shard_args).await?;
    let compact = HISTORY.write(ballast.channel().await?).await?;
    let before = view(ballast.channel().await?, compact).await?;

    let dir = tempfile::tempdir()?;
    let file = dir.path().join("backup.db");
    let file_arg = file.to_string_lossy().into_owned();
    let endpoint = ballast.endpoint();
    let saved = etcdctl::run(
        &endpoint,
        &["snapshot", "save", &file_arg],
        None,
        CTL_TIMEOUT,
    )
    .await?;
    ensure!(saved.code == Some(0), "snapshot save: {saved:?}");
    let size = std::fs::metadata(&file)?.len();
    // A bbolt file of whole pages, then the 32-byte SHA-256.
    ensure!(size % 4096 == 32, "snapshot of {size} bytes");

    let status = etcdctl::run(
        &endpoint,
        &["snapshot", "status", &file_arg, "-w", "json"],
        None,
        CTL_TIMEOUT,
    )
    .await?;
    ensure!(status.code == Some(0), "snapshot status: {status:?}");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout)?;
    ensure!(
        status["revision"].as_i64() == Some(before.revision),
        "snapshot status {status} against revision {}",
        before.revision
    );
    let kept: usize = before.at.first().map_or(0, |(_, kvs)| kvs.len());
    let total = status["totalKey"].as_u64().unwrap_or(0) as usize;
    ensure!(
        total >= kept + before.leases.len(),
        "snapshot status {status}: fewer keys than the {kept} kept at the compact revision"
    );

    let restored = start_restored(dir.path(), &file, &endpoint).await?;
    let after = view(restored.channel().await?, compact).await?;
    assert_eq!(
        after, before,
        "restored etcd against ballast ({shards} shards)"
    );
    // Ballast still serves after the snapshot, at the same revision.
    let again = view(ballast.channel().await?, compact).await?;
    assert_eq!(again.revision, before.revision);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ballast_snapshot_restores_into_etcd() {
    let runs: Vec<(Vec<&str>, usize)> = if both_etcd() {
        vec![(vec![], 1)]
    } else if let Some(n) = ballast_shards() {
        vec![(vec![], n)]
    } else {
        vec![(vec!["--shards", "1"], 1), (vec!["--shards", "2"], 2)]
    };
    for (args, shards) in runs {
        round_trip(&args, shards)
            .await
            .unwrap_or_else(|e| panic!("{shards} shard(s): {e:#}"));
    }
}

/// What is compared on the restored etcd and the original Ballast (module comment).
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
    &["--user", "alice:apw", "put", "w3", "x"],
    &["--user", "alice:apw", "get", "k1"],
    &["--user", "alice:apw", "user", "list"],
    &["--user", "alice:apw", "role", "add", "x"],
    &["--user", "root:rootpw", "get", "", "--from-key"],
    &["--user", "root:rootpw", "user", "delete", "root"],
    &["--user", "root:rootpw", "auth", "disable"],
    &["get", "foo"],
    &["user", "list"],
    &["role", "get", "reader"],
];

/// What is compared after restoring a file taken while NOSPACE was raised (module comment).
const ALARM_STEPS: &[&[&str]] = &[&["alarm", "list"], &["put", "x", "y"], &["get", "x"]];

/// One etcdctl step as it is compared ([`etcdctl::step`]).
async fn ctl_step(endpoint: &str, args: &[&str]) -> Result<String> {
    Ok(etcdctl::step(endpoint, args, None, CTL_TIMEOUT)
        .await?
        .shown())
}

/// Ballast's flags for these tests: two shards unless `BALLAST_SHARDS` fixes the count.
fn shard_args() -> Vec<&'static str> {
    if both_etcd() || ballast_shards().is_some() {
        Vec::new()
    } else {
        vec!["--shards", "2"]
    }
}

/// `etcdctl snapshot save` from `endpoint` as `user` (if any) into `dir`, restored into an
/// etcd 3.4.23 that is then started.
async fn save_and_restore(endpoint: &str, dir: &Path, user: Option<&str>) -> Result<Restored> {
    let file = dir.join("backup.db");
    let file_arg = file.to_string_lossy().into_owned();
    let mut args = Vec::new();
    if let Some(u) = user {
        args.extend(["--user", u]);
    }
    args.extend(["snapshot", "save", &file_arg]);
    let saved = etcdctl::run(endpoint, &args, None, CTL_TIMEOUT).await?;
    ensure!(saved.code == Some(0), "snapshot save: {saved:?}");
    start_restored(dir, &file, endpoint).await
}

/// Runs `steps` on the restored etcd and on Ballast; fails listing every step whose result
/// differs.
async fn compare_steps(etcd: &Restored, ballast: &Server, steps: &[&[&str]]) -> Result<()> {
    let mut mismatches = Vec::new();
    for (i, args) in steps.iter().enumerate() {
        let want = ctl_step(&etcd.endpoint(), args).await?;
        let got = ctl_step(&ballast.endpoint(), args).await?;
        if want != got {
            mismatches.push(format!(
                "step {i} etcdctl {args:?}\n--- restored etcd\n{want}\n--- ballast\n{got}"
            ));
        }
    }
    ensure!(mismatches.is_empty(), "{}", mismatches.join("\n\n"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_roles_and_auth_reach_etcd() -> Result<()> {
    let ballast = Server::start_with_args(Kind::Ballast, &shard_args()).await?;
    etcdctl::run_all(&ballast.endpoint(), etcdctl::AUTH_SETUP, CTL_TIMEOUT).await?;
    let dir = tempfile::tempdir()?;
    let etcd = save_and_restore(&ballast.endpoint(), dir.path(), Some("root:rootpw")).await?;
    // The restored etcd enforces auth at once: without a user nothing is read.
    let anonymous = ctl_step(&etcd.endpoint(), &["get", "foo"]).await?;
    ensure!(
        anonymous.contains("user name is empty"),
        "restored etcd: {anonymous}"
    );
    compare_steps(&etcd, &ballast, AUTH_STEPS).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nospace_alarm_reaches_etcd() -> Result<()> {
    let mut args = shard_args();
    args.push("--quota-backend-bytes=4194304");
    let ballast = Server::start_with_args(Kind::Ballast, &args).await?;
    let mut kv = KvClient::new(ballast.channel().await?);
    let value = "v".repeat(64 * 1024);
    let mut raised = false;
    // About 64 puts of 64 KiB fill a 4 MiB quota; bounded.
    for i in 0..160 {
        match kv.put(put(&format!("/fill/{i}"), &value, 0)).await {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                raised = true;
                break;
            }
            Err(s) => bail!("put {i}: {s}"),
        }
    }
    ensure!(raised, "ballast never reached its quota");
    let listed = ctl_step(&ballast.endpoint(), &["alarm", "list"]).await?;
    ensure!(listed.contains("alarm:NOSPACE"), "{listed}");
    let dir = tempfile::tempdir()?;
    let etcd = save_and_restore(&ballast.endpoint(), dir.path(), None).await?;
    compare_steps(&etcd, &ballast, ALARM_STEPS).await?;
    // Disarmed, the restored etcd (etcd's default quota) takes the write.
    let disarmed = ctl_step(&etcd.endpoint(), &["alarm", "disarm"]).await?;
    ensure!(disarmed.contains("alarm:NOSPACE"), "{disarmed}");
    let listed = ctl_step(&etcd.endpoint(), &["alarm", "list"]).await?;
    ensure!(listed == "code Some(0)\n", "{listed}");
    let put = ctl_step(&etcd.endpoint(), &["put", "x", "y"]).await?;
    ensure!(put == "code Some(0)\nOK\n", "{put}");
    Ok(())
}
