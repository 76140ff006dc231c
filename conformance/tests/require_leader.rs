//! A member left without a leader answers as etcd 3.4.23's does, side by side: in a
//! three-member cluster two members are killed, and the one left, once it finds no leader,
//! - answers `/health` with 503 and `"health":"false"`, and `/metrics` with
//!   `etcd_server_has_leader 0` and `etcd_server_is_leader 0`;
//! - names no leader in Status and lists "etcdserver: no leader" among its errors;
//! - refuses a request that carries `hasleader: true` (clientv3's `WithRequireLeader`, which
//!   kube-apiserver puts on its watches) with Unavailable "etcdserver: no leader", and serves
//!   the same serializable Range without it;
//! - ends a watch opened with that metadata before the kill with the same status, and keeps
//!   one opened without it.
//!
//! Before the kill every member reports a leader (and exactly one that it is the leader). Run
//! with the member left being the leader (it then has no quorum answering it) and a follower
//! (it no longer hears from the leader).
//!
//! Invariants: every wait is bounded ([`WAIT`]); the servers are killed and their temp dirs
//! removed when the test ends, also when it fails. Keys live under `/require-leader/`, in
//! shard 0 with any shard count.

use std::time::{Duration, Instant};

use ballast_conformance::{Kind, Server};
use ballast_proto::etcdserverpb::{
    watch_request, RangeRequest, WatchCreateRequest, WatchRequest, WatchResponse,
};
use tokio_stream::StreamExt;
use tonic::Streaming;

/// Bound on each wait: the member noticing it has no leader, a watch being ended (etcd's
/// takes three election timeouts of 1 s after that).
const WAIT: Duration = Duration::from_secs(20);
const KEY: &str = "/require-leader/k";

#[derive(Clone, Copy, Debug)]
enum Left {
    Leader,
    Follower,
}

/// What the member left answered, for comparison with the other kind.
#[derive(Debug, PartialEq)]
struct Answers {
    health: (u16, String),
    has_leader: String,
    is_leader: String,
    status_leader: u64,
    status_errors: Vec<String>,
    required_range: Result<usize, (tonic::Code, String)>,
    plain_range: Result<usize, (tonic::Code, String)>,
    required_watch: Result<String, (tonic::Code, String)>,
    plain_watch_open: bool,
}

fn with_leader_required<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("hasleader", "true".parse().expect("ascii"));
    request
}

fn range() -> RangeRequest {
    RangeRequest {
        key: KEY.as_bytes().to_vec().into(),
        serializable: true,
        ..Default::default()
    }
}

async fn range_outcome(server: &Server, required: bool) -> Result<usize, (tonic::Code, String)> {
    let mut c = server.clients().await.expect("clients");
    let answer = if required {
        c.kv.range(with_leader_required(range())).await
    } else {
        c.kv.range(range()).await
    };
    answer
        .map(|r| r.into_inner().kvs.len())
        .map_err(|s| (s.code(), s.message().to_owned()))
}

/// Opens a watch on [`KEY`] and waits for its "created" answer.
async fn open_watch(server: &Server, required: bool) -> Streaming<WatchResponse> {
    let create = WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                key: KEY.as_bytes().to_vec().into(),
                ..Default::default()
            },
        )),
    };
    let requests = tokio_stream::iter(vec![create]).chain(tokio_stream::pending());
    let mut c = server.clients().await.expect("clients");
    let answers = if required {
        c.watch.watch(with_leader_required(requests)).await
    } else {
        c.watch.watch(requests).await
    };
    let mut answers = answers.expect("watch opens").into_inner();
    let first = tokio::time::timeout(WAIT, answers.message())
        .await
        .expect("watch created in time")
        .expect("watch create answer")
        .expect("watch stream open");
    assert!(first.created, "{first:?}");
    answers
}

/// The metric's value as the page shows it.
fn metric(page: &str, name: &str) -> String {
    page.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or("(absent)")
        .to_owned()
}

/// Each member's (member id, leader it names).
async fn leaders(servers: &[Server]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for s in servers {
        out.push(s.member_and_leader().await.expect("status"));
    }
    out
}

async fn scenario(kind: Kind, left: Left) -> Answers {
    let mut servers = Server::start_cluster(kind, 3, &[]).await.expect("cluster");
    let deadline = Instant::now() + WAIT;
    let statuses = loop {
        let st = leaders(&servers).await;
        if st[0].1 != 0 && st.iter().all(|s| s.1 == st[0].1) {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "{kind:?}: no agreed leader: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let leader = statuses[0].1;
    let keep = statuses
        .iter()
        .position(|&(id, _)| match left {
            Left::Leader => id == leader,
            Left::Follower => id != leader,
        })
        .expect("a member to keep");
    // With a leader: every member says so, one says it leads, require-leader requests pass.
    let mut leading = 0;
    for s in &servers {
        let page = s.metrics().await.expect("metrics");
        assert_eq!(metric(&page, "etcd_server_has_leader"), "1", "{kind:?}");
        if metric(&page, "etcd_server_is_leader") == "1" {
            leading += 1;
        }
        assert_eq!(range_outcome(s, true).await, Ok(0), "{kind:?}");
    }
    assert_eq!(leading, 1, "{kind:?}: members saying they lead");
    let member = &servers[keep];
    let mut required_watch = open_watch(member, true).await;
    let mut plain_watch = open_watch(member, false).await;

    for (i, s) in servers.iter_mut().enumerate() {
        if i != keep {
            s.kill9().expect("kill");
        }
    }
    let member = &servers[keep];
    let deadline = Instant::now() + WAIT;
    let page = loop {
        let page = member.metrics().await.expect("metrics");
        if metric(&page, "etcd_server_has_leader") != "1" {
            break page;
        }
        assert!(
            Instant::now() < deadline,
            "{kind:?} {left:?}: still has a leader"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (code, body) = member.http_get_any("/health").await.expect("/health");
    let body: serde_json::Value = serde_json::from_str(&body).expect("health JSON");
    let health = (code, body["health"].as_str().unwrap_or_default().to_owned());
    let status = member.status().await.expect("status");
    let required_range = range_outcome(member, true).await;
    let plain_range = range_outcome(member, false).await;
    let required_watch = match tokio::time::timeout(WAIT, required_watch.message()).await {
        Err(_) => Ok(format!("still open after {WAIT:?}")),
        Ok(Ok(answer)) => Ok(format!("answered {answer:?}")),
        Ok(Err(status)) => Err((status.code(), status.message().to_owned())),
    };
    let plain_watch_open = tokio::time::timeout(Duration::from_millis(500), plain_watch.message())
        .await
        .is_err();
    Answers {
        health,
        has_leader: metric(&page, "etcd_server_has_leader"),
        is_leader: metric(&page, "etcd_server_is_leader"),
        status_leader: status.leader,
        status_errors: status.errors,
        required_range,
        plain_range,
        required_watch,
        plain_watch_open,
    }
}

async fn compare(left: Left) {
    let etcd = scenario(Kind::Etcd, left).await;
    let expected = Answers {
        health: (503, "false".to_owned()),
        has_leader: "0".to_owned(),
        is_leader: "0".to_owned(),
        status_leader: 0,
        status_errors: vec!["etcdserver: no leader".to_owned()],
        required_range: Err((tonic::Code::Unavailable, "etcdserver: no leader".to_owned())),
        plain_range: Ok(0),
        required_watch: Err((tonic::Code::Unavailable, "etcdserver: no leader".to_owned())),
        plain_watch_open: true,
    };
    assert_eq!(
        etcd, expected,
        "etcd 3.4.23 answered otherwise than expected"
    );
    let ballast = scenario(Kind::Ballast, left).await;
    assert_eq!(ballast, etcd, "Ballast ({left:?} left) differs from etcd");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_left_alone_answers_no_leader_like_etcd() {
    compare(Left::Leader).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_left_alone_answers_no_leader_like_etcd() {
    compare(Left::Follower).await;
}
