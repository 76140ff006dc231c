//! What a learner serves, side by side with etcd 3.4.23: a learner added to a three-member
//! cluster and started answers Status (saying it is a learner) and serializable Ranges, and
//! refuses everything else — a linearizable Range, Put, Txn, DeleteRange, LeaseGrant,
//! MemberList, a Watch — with Unavailable "etcdserver: rpc not supported for learner", as
//! etcd's interceptors do; once promoted it serves them all. The answers of both kinds are
//! compared call by call.
//!
//! Invariants: every wait is bounded; the servers are killed and their temp dirs removed when
//! the test ends, also when it fails. Keys live under `/learner/`, in shard 0 with any shard
//! count.

use std::time::Duration;

use ballast_conformance::{Kind, Server};
use ballast_proto::etcdserverpb::{
    watch_request, DeleteRangeRequest, LeaseGrantRequest, MemberAddRequest, MemberListRequest,
    MemberPromoteRequest, PutRequest, RangeRequest, StatusRequest, TxnRequest, WatchCreateRequest,
    WatchRequest,
};
use tokio_stream::StreamExt;

const KEY: &str = "/learner/k";
/// Bound on the promotion (the learner catching up) and on each call.
const PROMOTE_TRIES: usize = 200;
const CALL: Duration = Duration::from_secs(10);

type Outcome = Result<String, (tonic::Code, String)>;

fn outcome<T>(
    answer: Result<tonic::Response<T>, tonic::Status>,
    ok: impl Fn(T) -> String,
) -> Outcome {
    answer
        .map(|r| ok(r.into_inner()))
        .map_err(|s| (s.code(), s.message().to_owned()))
}

fn key() -> bytes::Bytes {
    bytes::Bytes::from_static(KEY.as_bytes())
}

/// Every call of the list at `server`, in order, with what it answered.
async fn calls(server: &Server) -> Vec<(&'static str, Outcome)> {
    let mut c = server.clients().await.expect("clients");
    let mut out = Vec::new();
    let status = c.maintenance.status(StatusRequest {}).await;
    out.push((
        "status",
        outcome(status, |s| format!("learner {}", s.is_learner)),
    ));
    let range = |serializable| RangeRequest {
        key: key(),
        serializable,
        ..Default::default()
    };
    let r = c.kv.range(range(true)).await;
    out.push((
        "serializable range",
        outcome(r, |r| format!("{} kvs", r.kvs.len())),
    ));
    let r = c.kv.range(range(false)).await;
    out.push((
        "linearizable range",
        outcome(r, |r| format!("{} kvs", r.kvs.len())),
    ));
    let r =
        c.kv.put(PutRequest {
            key: key(),
            value: bytes::Bytes::from_static(b"v"),
            ..Default::default()
        })
        .await;
    out.push(("put", outcome(r, |_| "put".to_owned())));
    let r = c.kv.txn(TxnRequest::default()).await;
    out.push(("txn", outcome(r, |r| format!("succeeded {}", r.succeeded))));
    let r =
        c.kv.delete_range(DeleteRangeRequest {
            key: bytes::Bytes::from_static(b"/learner/none"),
            ..Default::default()
        })
        .await;
    out.push(("delete", outcome(r, |r| format!("{} deleted", r.deleted))));
    let r = c
        .lease
        .lease_grant(LeaseGrantRequest { ttl: 60, id: 0 })
        .await;
    out.push(("lease grant", outcome(r, |r| format!("ttl {}", r.ttl))));
    let r = c.cluster.member_list(MemberListRequest::default()).await;
    out.push((
        "member list",
        outcome(r, |r| format!("{} members", r.members.len())),
    ));
    let create = WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                key: key(),
                ..Default::default()
            },
        )),
    };
    let requests = tokio_stream::iter(vec![create]).chain(tokio_stream::pending());
    let watch = match c.watch.watch(requests).await {
        Err(s) => Err((s.code(), s.message().to_owned())),
        Ok(stream) => {
            let mut stream = stream.into_inner();
            match tokio::time::timeout(CALL, stream.message()).await {
                Err(_) => Ok("no answer".to_owned()),
                Ok(Ok(Some(first))) => Ok(format!("created {}", first.created)),
                Ok(Ok(None)) => Ok("ended".to_owned()),
                Ok(Err(s)) => Err((s.code(), s.message().to_owned())),
            }
        }
    };
    out.push(("watch", watch));
    out
}

/// The calls at a learner of a fresh cluster of `kind`, then at the same member once promoted.
async fn scenario(kind: Kind) -> (Vec<(&'static str, Outcome)>, Vec<(&'static str, Outcome)>) {
    let servers = Server::start_cluster(kind, 3, &[]).await.expect("cluster");
    let mut cluster = servers[0].clients().await.expect("clients").cluster;
    let mut learner = Server::new_member(kind, "m3", &[]).expect("new member");
    // etcd refuses changes until its members have been connected a while ("unhealthy
    // cluster"); asked again, as an operator would.
    let mut added = None;
    for _ in 0..PROMOTE_TRIES {
        let add = MemberAddRequest {
            peer_ur_ls: vec![learner.peer_url()],
            is_learner: true,
        };
        match cluster.member_add(add).await {
            Ok(r) => {
                added = Some(r.into_inner());
                break;
            }
            Err(e) if e.message() == "etcdserver: unhealthy cluster" => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("{kind:?}: member add --learner: {e}"),
        }
    }
    let added = added.expect("the cluster took the learner");
    let id = added.member.expect("the added member").id;
    learner
        .join(&[&servers[0], &servers[1], &servers[2]])
        .await
        .expect("the learner joins");
    let as_learner = tokio::time::timeout(CALL * 2, calls(&learner))
        .await
        .expect("calls at the learner in time");
    let mut promoted = false;
    for _ in 0..PROMOTE_TRIES {
        match cluster.member_promote(MemberPromoteRequest { id }).await {
            Ok(_) => {
                promoted = true;
                break;
            }
            Err(e) if e.message().contains("in sync with leader") => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("{kind:?}: member promote: {e}"),
        }
    }
    assert!(promoted, "{kind:?}: the learner never caught up");
    // The promoted member learns it votes once the change reaches it.
    let deadline = tokio::time::Instant::now() + CALL;
    let as_voter = loop {
        let answers = tokio::time::timeout(CALL * 2, calls(&learner))
            .await
            .expect("calls at the promoted member in time");
        if answers[0].1.as_deref() == Ok("learner false") || tokio::time::Instant::now() > deadline
        {
            break answers;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    (as_learner, as_voter)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_serves_status_and_serializable_ranges_only_like_etcd() {
    let etcd = scenario(Kind::Etcd).await;
    let refused = Err((
        tonic::Code::Unavailable,
        "etcdserver: rpc not supported for learner".to_owned(),
    ));
    assert_eq!(
        etcd.0[0].1,
        Ok("learner true".to_owned()),
        "etcd: {:?}",
        etcd.0
    );
    assert_eq!(etcd.0[1].1, Ok("0 kvs".to_owned()), "etcd: {:?}", etcd.0);
    assert!(
        etcd.0[2..].iter().all(|(_, o)| *o == refused),
        "etcd 3.4.23 answered otherwise than expected: {:#?}",
        etcd.0
    );
    assert!(
        etcd.1.iter().all(|(_, o)| o.is_ok()),
        "etcd's promoted member: {:#?}",
        etcd.1
    );
    let ballast = scenario(Kind::Ballast).await;
    assert_eq!(ballast.0, etcd.0, "at the learner");
    assert_eq!(ballast.1, etcd.1, "once promoted");
}
