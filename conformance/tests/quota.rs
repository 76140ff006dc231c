//! `--quota-backend-bytes` and alarms, side by side with etcd 3.4.23.
//!
//! - `nospace_like_etcd`: etcd and Ballast, each with a [`QUOTA`] quota, are written to until a
//!   put is refused. On both the refusal is `ResourceExhausted` "etcdserver: mvcc: database
//!   space exceeded", later puts, lease grants and txns with a put are refused the same way,
//!   reads and deletes go on, and `etcdctl alarm list`, `endpoint status -w json` (its errors),
//!   `Status.errors`, `/health` and the `etcd_server_quota_backend_bytes` gauge say the same
//!   (member ids normalized). The alarm survives a `kill -9` and restart. Then, as etcd's
//!   maintenance guide says: delete, compact, defragment, wait until the size in use is under
//!   the quota (Ballast frees the space at its next checkpoint), `etcdctl alarm disarm` (the
//!   same output), and a put succeeds on both. The sizes themselves are not compared (etcd
//!   counts its bolt file, Ballast its pages in use), only that each refuses once its own
//!   count reaches the quota, within [`FILL_PUTS_MAX`] puts.
//! - `alarm_api_like_etcd`: ACTIVATE/GET/DEACTIVATE through the gRPC API for another member
//!   id and for CORRUPT, answers compared; a CORRUPT alarm refuses writes with `DataLoss`
//!   "etcdserver: corrupt cluster" and lets reads through, on both.
//! - `nospace_in_a_cluster`: a 3-member Ballast cluster filled through one member: every member
//!   then refuses puts with NOSPACE, lists the one alarm, and after `alarm disarm` through
//!   another member lists none; the alarm is the filling member's. (etcd's behaviour in a
//!   cluster is the same by construction: the alarm goes through the log; this part is not run
//!   against an etcd cluster to keep the test short.)
//!
//! Invariants: every wait is bounded; the servers are killed and their directories removed when
//! the test ends, also when it fails.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use ballast_conformance::etcdctl::{self, Normalizer, CMD_TIMEOUT};
use ballast_conformance::{Kind, Server};
use ballast_proto::etcdserverpb::{
    alarm_request::AlarmAction, compare, request_op, AlarmMember, AlarmRequest, AlarmType,
    CompactionRequest, Compare, DefragmentRequest, DeleteRangeRequest, LeaseGrantRequest,
    PutRequest, RangeRequest, RequestOp, StatusRequest, TxnRequest,
};
use serde_json::Value;

/// The quota both servers run with.
const QUOTA: u64 = 4 << 20;
const QUOTA_ARG: &str = "--quota-backend-bytes=4194304";
/// Each put of the fill writes this much.
const VALUE_BYTES: usize = 64 << 10;
/// Puts before the quota must have been reached (4 MiB / 64 KiB = 64, with room for either
/// side's overhead and etcd's size figure lagging its batch commits).
const FILL_PUTS_MAX: usize = 400;
/// How long a freed quota may take to show (Ballast: the next checkpoint).
const FREED_WITHIN: Duration = Duration::from_secs(30);
/// How long an alarm raised through one member may take to reach the others.
const REPLICATED_WITHIN: Duration = Duration::from_secs(10);
const NO_SPACE: &str = "etcdserver: mvcc: database space exceeded";

/// Ballast checkpoints twice a second here, so freed space shows soon.
fn args(kind: Kind) -> Vec<&'static str> {
    match kind {
        Kind::Etcd => vec![QUOTA_ARG],
        Kind::Ballast => vec![QUOTA_ARG, "--checkpoint-interval-ms=500"],
    }
}

fn key(i: usize) -> bytes::Bytes {
    bytes::Bytes::from(format!("quota/k{i:04}"))
}

fn refusal(r: Result<impl Sized, tonic::Status>) -> Result<(tonic::Code, String)> {
    match r {
        Ok(_) => bail!("accepted, where a refusal was expected"),
        Err(s) => Ok((s.code(), s.message().to_owned())),
    }
}

fn no_space() -> (tonic::Code, String) {
    (tonic::Code::ResourceExhausted, NO_SPACE.to_owned())
}

/// `len` incompressible bytes (neither side compresses values today; this keeps it so).
fn value(len: usize) -> bytes::Bytes {
    use rand::RngCore;
    let mut v = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut v);
    bytes::Bytes::from(v)
}

async fn put(server: &Server, k: bytes::Bytes, len: usize) -> Result<i64, tonic::Status> {
    let mut c = server
        .clients()
        .await
        .map_err(|e| tonic::Status::unknown(e.to_string()))?;
    let r =
        c.kv.put(PutRequest {
            key: k,
            value: value(len),
            ..Default::default()
        })
        .await?;
    Ok(r.into_inner().header.map_or(0, |h| h.revision))
}

/// Puts until one is refused; answers how many were accepted and the refusal.
async fn fill(server: &Server) -> Result<(usize, (tonic::Code, String))> {
    for i in 0..FILL_PUTS_MAX {
        if let Err(s) = put(server, key(i), VALUE_BYTES).await {
            return Ok((i, (s.code(), s.message().to_owned())));
        }
    }
    bail!(
        "{}: {FILL_PUTS_MAX} puts of {VALUE_BYTES} bytes and no refusal",
        server.kind().label()
    )
}

/// `etcdctl <args>` against `server`, its output normalized (member and cluster ids).
async fn ctl(server: &Server, args: &[&str]) -> Result<String> {
    let out = etcdctl::run(&server.endpoint(), args, None, CMD_TIMEOUT).await?;
    ensure!(
        out.code == Some(0),
        "{}: etcdctl {args:?}: {:?} {}",
        server.kind().label(),
        out.code,
        out.stderr
    );
    Ok(Normalizer::for_server(server)
        .await?
        .text(&out.stdout_text()))
}

/// `GET path` on the client port: status code and body.
async fn http_get(server: &Server, path: &str) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let work = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", server.client_port())).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
            .await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        anyhow::Ok(String::from_utf8_lossy(&raw).into_owned())
    };
    let text = tokio::time::timeout(Duration::from_secs(5), work)
        .await
        .context("GET timed out")??;
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP answer")?;
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status code")?;
    Ok((code, body.to_owned()))
}

/// The value of one gauge in `/metrics`.
async fn gauge(server: &Server, name: &str) -> Result<f64> {
    let text = server.metrics().await?;
    let line = text
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .with_context(|| format!("{}: no {name} in /metrics", server.kind().label()))?;
    Ok(line[name.len() + 1..].trim().parse()?)
}

/// `Status.errors`, member ids normalized.
async fn status_errors(server: &Server) -> Result<Vec<String>> {
    let norm = Normalizer::for_server(server).await?;
    let mut c = server.clients().await?;
    let s = c.maintenance.status(StatusRequest {}).await?.into_inner();
    Ok(s.errors.iter().map(|e| norm.text(e)).collect())
}

/// `etcdctl endpoint status -w json`'s errors, normalized.
async fn endpoint_status_errors(server: &Server) -> Result<Value> {
    let out = ctl(server, &["endpoint", "status", "-w", "json"]).await?;
    let v: Value = serde_json::from_str(out.trim()).context("endpoint status json")?;
    Ok(v[0]["Status"]["errors"].clone())
}

/// What one server showed between its first refusal and the disarm.
#[derive(Debug, PartialEq)]
struct Capped {
    refusal: (tonic::Code, String),
    put_again: (tonic::Code, String),
    lease_grant: (tonic::Code, String),
    txn_put: (tonic::Code, String),
    /// A range counts at least the accepted keys. (Not exactly: etcd also checks the quota
    /// where it applies a put, and when its size figure was updated between that and its gRPC
    /// check, it stores the put and still answers NOSPACE; so it may hold one key more.)
    reads_ok: bool,
    /// Keys deleted by a delete (must work).
    deleted: i64,
    alarm_list: String,
    status_errors: Vec<String>,
    endpoint_errors: Value,
    health: (u16, String),
    quota_gauge: f64,
    alarm_list_after_restart: String,
    put_after_restart: (tonic::Code, String),
}

async fn capped(server: &mut Server) -> Result<Capped> {
    let (accepted, refused) = fill(server).await?;
    eprintln!(
        "{}: {accepted} puts of {VALUE_BYTES} bytes accepted before the refusal",
        server.kind().label()
    );
    ensure!(accepted > 0, "the very first put was refused");
    let mut c = server.clients().await?;
    let put_again = refusal(put(server, key(FILL_PUTS_MAX), 10).await)?;
    let lease_grant = refusal(
        c.lease
            .lease_grant(LeaseGrantRequest { ttl: 60, id: 0 })
            .await,
    )?;
    let txn = TxnRequest {
        compare: vec![Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Version as i32,
            key: key(0),
            target_union: Some(compare::TargetUnion::Version(1)),
            ..Default::default()
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: key(0),
                value: "small".into(),
                ..Default::default()
            })),
        }],
        failure: vec![],
    };
    let txn_put = refusal(c.kv.txn(txn).await)?;
    let range_count =
        c.kv.range(RangeRequest {
            key: "quota/".into(),
            range_end: "quota0".into(),
            count_only: true,
            ..Default::default()
        })
        .await?
        .into_inner()
        .count;
    let deleted =
        c.kv.delete_range(DeleteRangeRequest {
            key: key(0),
            ..Default::default()
        })
        .await?
        .into_inner()
        .deleted;
    let alarm_list = ctl(server, &["alarm", "list"]).await?;
    let status_errors = status_errors(server).await?;
    let endpoint_errors = endpoint_status_errors(server).await?;
    let health = http_get(server, "/health").await?;
    let quota_gauge = gauge(server, "etcd_server_quota_backend_bytes").await?;
    server.kill9()?;
    server.restart().await?;
    let alarm_list_after_restart = ctl(server, &["alarm", "list"]).await?;
    let put_after_restart = refusal(put(server, key(FILL_PUTS_MAX), 10).await)?;
    Ok(Capped {
        refusal: refused,
        put_again,
        lease_grant,
        txn_put,
        reads_ok: range_count >= i64::try_from(accepted)?,
        deleted,
        alarm_list,
        status_errors,
        endpoint_errors,
        health,
        quota_gauge,
        alarm_list_after_restart,
        put_after_restart,
    })
}

/// Frees the space as etcd's maintenance guide says, then disarms; answers the disarm's output
/// and the alarms listed after it.
async fn recover(server: &Server) -> Result<(String, String)> {
    let mut c = server.clients().await?;
    let deleted =
        c.kv.delete_range(DeleteRangeRequest {
            key: "quota/".into(),
            range_end: "quota0".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let revision = deleted.header.context("header")?.revision;
    c.kv.compact(CompactionRequest {
        revision,
        physical: true,
    })
    .await?;
    c.maintenance.defragment(DefragmentRequest {}).await?;
    let started = Instant::now();
    loop {
        let s = c.maintenance.status(StatusRequest {}).await?.into_inner();
        // What each side's quota counts: etcd its file, Ballast its pages in use.
        let counted = match server.kind() {
            Kind::Etcd => s.db_size,
            Kind::Ballast => s.db_size_in_use,
        };
        if u64::try_from(counted)? < QUOTA / 2 {
            break;
        }
        ensure!(
            started.elapsed() < FREED_WITHIN,
            "{}: size still {} (in use {}) {FREED_WITHIN:?} after compacting",
            server.kind().label(),
            s.db_size,
            s.db_size_in_use
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let disarm = ctl(server, &["alarm", "disarm"]).await?;
    let list = ctl(server, &["alarm", "list"]).await?;
    Ok((disarm, list))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nospace_like_etcd() -> Result<()> {
    let (etcd_args, ballast_args) = (args(Kind::Etcd), args(Kind::Ballast));
    let (mut etcd, mut ballast) = tokio::try_join!(
        Server::start_with_args(Kind::Etcd, &etcd_args),
        Server::start_with_args(Kind::Ballast, &ballast_args),
    )?;
    let (e, b) = tokio::join!(capped(&mut etcd), capped(&mut ballast));
    let (e, b) = (e?, b?);
    eprintln!("etcd: {e:#?}\nballast: {b:#?}");
    assert_eq!(e.refusal, no_space());
    // etcdctl prints the alarm's protobuf text form, trailing space included.
    assert_eq!(e.alarm_list, "memberID:<member-id> alarm:NOSPACE \n");
    assert_eq!(e.health, (503, "{\"health\":\"false\"}\n".to_owned()));
    assert_eq!(e.quota_gauge, QUOTA as f64);
    assert_eq!(b, e);
    let (e, b) = tokio::join!(recover(&etcd), recover(&ballast));
    let (e, b) = (e?, b?);
    assert_eq!(e.1, "", "etcd lists no alarm after the disarm");
    assert_eq!(b, e);
    for server in [&etcd, &ballast] {
        put(server, key(0), 10)
            .await
            .with_context(|| format!("{}: a put after the disarm", server.kind().label()))?;
    }
    Ok(())
}

/// One server's answers to the alarm API.
#[derive(Debug, PartialEq)]
struct ApiAnswers {
    activate: Vec<AlarmMember>,
    activate_again: Vec<AlarmMember>,
    get_all: Vec<AlarmMember>,
    get_corrupt: Vec<AlarmMember>,
    corrupt_put: (tonic::Code, String),
    corrupt_delete: (tonic::Code, String),
    corrupt_range_ok: bool,
    deactivate_absent: Vec<AlarmMember>,
    deactivate: Vec<AlarmMember>,
    deactivate_corrupt: Vec<AlarmMember>,
    get_after: Vec<AlarmMember>,
    put_after: bool,
}

async fn alarm_api(server: &Server) -> Result<ApiAnswers> {
    let mut c = server.clients().await?;
    let alarm = |action: AlarmAction, member_id: u64, alarm: AlarmType| {
        let mut m = c.maintenance.clone();
        async move {
            let mut alarms = m
                .alarm(AlarmRequest {
                    action: action as i32,
                    member_id,
                    alarm: alarm as i32,
                })
                .await?
                .into_inner()
                .alarms;
            alarms.sort_by_key(|a| (a.alarm, a.member_id));
            anyhow::Ok(alarms)
        }
    };
    let activate = alarm(AlarmAction::Activate, 12345, AlarmType::Nospace).await?;
    let activate_again = alarm(AlarmAction::Activate, 12345, AlarmType::Nospace).await?;
    alarm(AlarmAction::Activate, 777, AlarmType::Corrupt).await?;
    let get_all = alarm(AlarmAction::Get, 0, AlarmType::None).await?;
    let get_corrupt = alarm(AlarmAction::Get, 0, AlarmType::Corrupt).await?;
    let corrupt_put = refusal(put(server, key(1), 10).await)?;
    let corrupt_delete = refusal(
        c.kv.delete_range(DeleteRangeRequest {
            key: key(1),
            ..Default::default()
        })
        .await,
    )?;
    let corrupt_range_ok =
        c.kv.range(RangeRequest {
            key: key(1),
            ..Default::default()
        })
        .await
        .is_ok();
    let deactivate_absent = alarm(AlarmAction::Deactivate, 999, AlarmType::Nospace).await?;
    let deactivate = alarm(AlarmAction::Deactivate, 12345, AlarmType::Nospace).await?;
    let deactivate_corrupt = alarm(AlarmAction::Deactivate, 777, AlarmType::Corrupt).await?;
    let get_after = alarm(AlarmAction::Get, 0, AlarmType::None).await?;
    let put_after = put(server, key(1), 10).await.is_ok();
    Ok(ApiAnswers {
        activate,
        activate_again,
        get_all,
        get_corrupt,
        corrupt_put,
        corrupt_delete,
        corrupt_range_ok,
        deactivate_absent,
        deactivate,
        deactivate_corrupt,
        get_after,
        put_after,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarm_api_like_etcd() -> Result<()> {
    let (etcd, ballast) =
        tokio::try_join!(Server::start(Kind::Etcd), Server::start(Kind::Ballast),)?;
    let (e, b) = tokio::join!(alarm_api(&etcd), alarm_api(&ballast));
    let (e, b) = (e?, b?);
    eprintln!("etcd: {e:#?}\nballast: {b:#?}");
    assert!(e.put_after, "etcd takes writes once the alarms are gone");
    assert_eq!(b, e);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nospace_in_a_cluster() -> Result<()> {
    let ballast_args = args(Kind::Ballast);
    let members = Server::start_cluster(Kind::Ballast, 3, &ballast_args).await?;
    let ids: Vec<u64> = {
        let mut c = members[0].clients().await?;
        let list = c
            .cluster
            .member_list(ballast_proto::etcdserverpb::MemberListRequest { linearizable: true })
            .await?
            .into_inner();
        let mut ids = Vec::new();
        for m in &members {
            let url = m.client_url();
            let id = list
                .members
                .iter()
                .find(|x| x.client_ur_ls.contains(&url))
                .with_context(|| format!("no member serves {url}"))?
                .id;
            ids.push(id);
        }
        ids
    };
    let (_, first) = fill(&members[0]).await?;
    assert_eq!(first, no_space());
    let raised = format!("memberID:{} alarm:NOSPACE \n", ids[0]);
    // Every member refuses puts and lists the one alarm, once its replica of shard 0 has it.
    for m in &members {
        let started = Instant::now();
        loop {
            let out = etcdctl::run(&m.endpoint(), &["alarm", "list"], None, CMD_TIMEOUT).await?;
            if out.stdout_text() == raised {
                break;
            }
            ensure!(
                started.elapsed() < REPLICATED_WITHIN,
                "{}: alarm list {:?}",
                m.client_url(),
                out.stdout_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut c = m.clients().await?;
        let s = c.maintenance.status(StatusRequest {}).await?.into_inner();
        assert_eq!(
            s.errors,
            vec![format!("memberID:{} alarm:NOSPACE ", ids[0])]
        );
    }
    // Every member refuses puts. (Each holds the same data, so a member whose own size in use
    // is at the quota raises its own alarm too, as an etcd member would.)
    for m in &members {
        assert_eq!(refusal(put(m, key(9999), 10).await)?, no_space());
    }
    // Disarmed through another member: every alarm it listed is deactivated, and no member
    // lists any any more.
    let listed = etcdctl::run(
        &members[2].endpoint(),
        &["alarm", "list"],
        None,
        CMD_TIMEOUT,
    )
    .await?;
    assert!(listed.stdout_text().contains(&raised), "{listed:?}");
    let out = etcdctl::run(
        &members[2].endpoint(),
        &["alarm", "disarm"],
        None,
        CMD_TIMEOUT,
    )
    .await?;
    assert_eq!(out.stdout_text(), listed.stdout_text());
    for m in &members {
        let started = Instant::now();
        loop {
            let out = etcdctl::run(&m.endpoint(), &["alarm", "list"], None, CMD_TIMEOUT).await?;
            if out.stdout_text().is_empty() {
                break;
            }
            ensure!(
                started.elapsed() < REPLICATED_WITHIN,
                "{}: alarm list after disarm {:?}",
                m.client_url(),
                out.stdout_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // The space is still used: a put larger than the refused one raises the alarm again.
    assert_eq!(
        refusal(put(&members[0], key(9999), 2 * VALUE_BYTES).await)?,
        no_space()
    );
    let out = etcdctl::run(
        &members[0].endpoint(),
        &["alarm", "list"],
        None,
        CMD_TIMEOUT,
    )
    .await?;
    assert_eq!(out.stdout_text(), raised);
    Ok(())
}
