//! Moving the leader of a three-member cluster, side by side with a three-member etcd: the
//! same refusals (MoveLeader at a follower, to a member that does not exist) with etcd's codes
//! and texts; `etcdctl move-leader` moves it and says so; every member's Status then names the
//! new leader, `etcdctl endpoint status --cluster` lists every member with it, the term in
//! response headers has grown, and writes through every member still land. Then SIGTERM stops
//! each member promptly (the last ones with no quorum left).
//!
//! Invariants: every wait is bounded; the servers are killed and their temp dirs removed when
//! the test ends, also when it fails.

use std::time::{Duration, Instant};

use ballast_conformance::etcdctl;
use ballast_conformance::{Kind, Server};
use ballast_proto::etcdserverpb::{MoveLeaderRequest, PutRequest};

const WAIT: Duration = Duration::from_secs(20);
/// A member stops this soon after SIGTERM (measured: etcd 12-125 ms, Ballast 12-60 ms; a
/// Ballast member used to wait out a pending Advance with no quorum left, up to 7 s).
const STOP_WITHIN: Duration = Duration::from_secs(5);

/// What one cluster kind answered, for comparison with the other.
#[derive(Debug, PartialEq)]
struct Answers {
    at_follower: (tonic::Code, String),
    bad_target: (tonic::Code, String),
}

/// Each member's Status: (member id from the header, leader it names, raft term).
async fn statuses(servers: &[Server]) -> Vec<(u64, u64, u64)> {
    let mut out = Vec::new();
    for s in servers {
        let st = s.status().await.expect("status");
        let member = st.header.expect("header").member_id;
        out.push((member, st.leader, st.raft_term));
    }
    out
}

/// Waits until every member names the same leader (and, if given, that one); returns the
/// statuses then.
async fn agreed(servers: &[Server], want: Option<u64>) -> Vec<(u64, u64, u64)> {
    let deadline = Instant::now() + WAIT;
    loop {
        let st = statuses(servers).await;
        let leader = st[0].1;
        if leader != 0 && st.iter().all(|s| s.1 == leader) && want.is_none_or(|w| w == leader) {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "no agreed leader {want:?}: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn put_term(server: &Server, key: &str) -> u64 {
    let mut c = server.clients().await.expect("clients");
    let r =
        c.kv.put(PutRequest {
            key: bytes::Bytes::copy_from_slice(format!("/move-leader/{key}").as_bytes()),
            value: bytes::Bytes::from_static(b"v"),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("put through {}: {e}", server.endpoint()))
        .into_inner();
    r.header.expect("header").raft_term
}

async fn refusal(server: &Server, target_id: u64) -> (tonic::Code, String) {
    let mut c = server.clients().await.expect("clients");
    let err = c
        .maintenance
        .move_leader(MoveLeaderRequest { target_id })
        .await
        .expect_err("refused");
    (err.code(), err.message().to_owned())
}

async fn scenario(kind: Kind) -> Answers {
    let servers = Server::start_cluster(kind, 3, &[]).await.expect("cluster");
    let label = kind.label();
    let before = agreed(&servers, None).await;
    let old = before[0].1;
    let index_of = |id: u64| before.iter().position(|s| s.0 == id).expect("a member");
    let leader = &servers[index_of(old)];
    let (follower_id, _, _) = *before.iter().find(|s| s.0 != old).expect("a follower");
    let follower = &servers[index_of(follower_id)];
    let term_before = put_term(leader, "before").await;
    assert!(term_before >= 1, "{label}: a term in the header");

    let answers = Answers {
        at_follower: refusal(follower, follower_id).await,
        bad_target: refusal(leader, 0xdead_beef).await,
    };

    let endpoints: Vec<String> = servers.iter().map(|s| s.endpoint()).collect();
    let moved = etcdctl::run(
        &endpoints.join(","),
        &["move-leader", &format!("{follower_id:x}")],
        None,
        etcdctl::CMD_TIMEOUT,
    )
    .await
    .expect("etcdctl runs");
    assert_eq!(moved.code, Some(0), "{label}: {moved:?}");
    assert_eq!(
        moved.stdout_text().trim(),
        format!("Leadership transferred from {old:x} to {follower_id:x}"),
        "{label}"
    );
    let after = agreed(&servers, Some(follower_id)).await;
    eprintln!("{label}: leader {old:x} -> {follower_id:x}, statuses {after:?}");

    // endpoint status --cluster: every member (found through MemberList) names the new leader.
    let listed = etcdctl::run(
        &servers[0].endpoint(),
        &["endpoint", "status", "--cluster", "-w", "json"],
        None,
        etcdctl::CMD_TIMEOUT,
    )
    .await
    .expect("etcdctl runs");
    assert_eq!(listed.code, Some(0), "{label}: {listed:?}");
    let rows: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("json");
    let rows = rows.as_array().expect("one row per member");
    assert_eq!(rows.len(), 3, "{label}: {rows:?}");
    for row in rows {
        assert_eq!(
            row["Status"]["leader"].as_u64(),
            Some(follower_id),
            "{label}: {row}"
        );
    }

    // The term grew with the new leader's election, and headers carry it.
    let deadline = Instant::now() + WAIT;
    loop {
        let term = put_term(follower, "after").await;
        if term > term_before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{label}: header term stays {term} after the move"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (i, s) in servers.iter().enumerate() {
        put_term(s, &format!("m{i}")).await;
    }
    // SIGTERM stops each member promptly, the last ones without a quorum.
    for mut s in servers {
        let (status, took) = s.terminate(STOP_WITHIN).expect("stops on SIGTERM");
        eprintln!("{label}: member stopped on SIGTERM in {took:?} ({status})");
        if took > Duration::from_secs(1) {
            for line in s.log_tail().lines().filter(|l| !l.contains("openraft")) {
                eprintln!("  | {line}");
            }
        }
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_leader_as_etcd_does() {
    let etcd = scenario(Kind::Etcd).await;
    let ballast = scenario(Kind::Ballast).await;
    assert_eq!(
        etcd.at_follower,
        (
            tonic::Code::FailedPrecondition,
            "etcdserver: not leader".to_owned()
        )
    );
    assert_eq!(ballast, etcd);
}
