//! A single-node shard end to end through its public handle: writes commit through the shard's
//! Raft group, reads (linearizable and serializable) see them, watchers are fed at apply time,
//! expired leases are revoked through the log. Each test starts its own shard and stops it by
//! dropping the handle (the executor thread is joined, with a bound on the wait).

use std::time::{Duration, Instant};

use ballast_consensus::shard::EXPIRY_REPORT_AGAIN;
use ballast_consensus::{
    LeaseExpiry, Request, Response, ShardConfig, ShardError, WatchCreate, WatchMessage,
};
use ballast_engine::{
    Compare, CompareResult, CompareTarget, CompareValue, DeleteRangeRequest, Error as EngineError,
    EventKind, PutRequest, RangeRequest, RequestOp, TxnRequest, WatchFilter,
};
use bytes::Bytes;
use tokio::sync::mpsc;

mod common;
use common::*;

#[tokio::test]
async fn puts_commit_through_raft_and_reads_see_them() {
    let shard = Shard::start(ShardConfig::default());
    let before = shard.status().await;
    assert!(
        before.is_leader,
        "a single node leads its group: {before:?}"
    );
    assert_eq!(before.leader_id, ShardConfig::default().node_id);
    assert!(before.raft_term >= 1, "{before:?}");
    // Initialization and election put entries in the log before any client write.
    assert!(before.raft_index >= 1, "{before:?}");
    assert_eq!(before.applied_index, before.raft_index);

    for i in 0..50 {
        let reply = shard
            .call(put(&format!("k{i:02}"), &format!("v{i}")))
            .await
            .expect("put");
        assert_eq!(reply.revision, before.revision + 1 + i);
        assert!(matches!(reply.response, Response::Put(_)));
    }
    let after = shard.status().await;
    assert_eq!(after.revision, before.revision + 50);
    assert_eq!(
        after.raft_index,
        before.raft_index + 50,
        "one entry per put"
    );
    assert_eq!(after.applied_index, after.raft_index);
    assert_eq!(after.raft_commit_index, after.raft_index);
    assert_eq!(after.raft_term, before.raft_term);
    assert!(after.entries_applied >= 50);
    assert!(after.write_latency_us_p99 > 0 && after.apply_latency_ns_p99 > 0);
    assert_eq!(after.writes_in_flight, 0);

    for serializable in [false, true] {
        let reply = shard.call(get("k07", serializable)).await.expect("get");
        assert_eq!(reply.revision, after.revision);
        assert_eq!(range_values(reply), vec![b("v7")]);
    }
    // An engine refusal comes back as such and still takes its log entry.
    let refused = shard.call(Request::LeaseRevoke { id: 12345 }).await;
    assert_eq!(
        refused.map(|r| r.revision),
        Err(ShardError::Engine(EngineError::LeaseNotFound {
            lease_id: 12345
        }))
    );
    assert_eq!(shard.status().await.raft_index, after.raft_index + 1);
}

#[tokio::test]
async fn concurrent_writes_and_linearizable_reads_are_consistent() {
    let shard = Shard::start(ShardConfig::default());
    let handle = shard.h().clone();
    let mut tasks = Vec::new();
    for writer in 0..8 {
        let h = handle.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                let key = format!("w{writer}");
                h.call(put(&key, &i.to_string())).await.expect("put");
                // A linearizable read after an acknowledged write sees it (or a later one of
                // this writer: there is none, the writer is sequential).
                let reply = h.call(get(&key, false)).await.expect("get");
                assert_eq!(range_values(reply), vec![Bytes::from(i.to_string())]);
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(WAIT, t)
            .await
            .expect("writers finish")
            .expect("writer ok");
    }
    let status = shard.status().await;
    assert_eq!(status.revision, 1 + 8 * 25);
}

#[tokio::test]
async fn txns_write_through_the_log_and_read_only_txns_do_not() {
    let shard = Shard::start(ShardConfig::default());
    let create = |key: &str| TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Equal,
            target: CompareTarget::Create,
            key: b(key),
            range_end: Bytes::new(),
            target_union: Some(CompareValue::CreateRevision(0)),
        }],
        success: vec![RequestOp::Put(PutRequest {
            key: b(key),
            value: b("created"),
            ..PutRequest::default()
        })],
        failure: vec![RequestOp::Range(RangeRequest {
            key: b(key),
            ..RangeRequest::default()
        })],
    };
    let first = shard.call(Request::Txn(create("t"))).await.expect("txn");
    let Response::Txn(t) = first.response else {
        panic!("txn answered otherwise")
    };
    assert!(t.succeeded);
    let index = shard.status().await.raft_index;
    let second = shard.call(Request::Txn(create("t"))).await.expect("txn");
    let Response::Txn(t) = second.response else {
        panic!("txn answered otherwise")
    };
    assert!(!t.succeeded, "the key exists now");
    assert_eq!(
        second.revision, first.revision,
        "a failed txn takes no revision"
    );
    assert_eq!(
        shard.status().await.raft_index,
        index + 1,
        "a txn that could write goes through the log even when it fails"
    );
    let read_only = TxnRequest {
        success: vec![RequestOp::Range(RangeRequest {
            key: b("t"),
            ..RangeRequest::default()
        })],
        ..TxnRequest::default()
    };
    let reply = shard.call(Request::Txn(read_only)).await.expect("txn");
    assert_eq!(reply.revision, first.revision);
    assert_eq!(
        shard.status().await.raft_index,
        index + 1,
        "a read-only txn writes no log entry"
    );
}

#[tokio::test]
async fn compaction_goes_through_the_log() {
    let shard = Shard::start(ShardConfig::default());
    for i in 0..5 {
        shard.call(put("c", &i.to_string())).await.expect("put");
    }
    let index = shard.status().await.raft_index;
    shard
        .call(Request::Compact { revision: 4 })
        .await
        .expect("compact");
    let status = shard.status().await;
    assert_eq!(status.compact_revision, 4);
    assert_eq!(status.raft_index, index + 1);
    let old = shard
        .call(Request::Range(RangeRequest {
            key: b("c"),
            revision: 3,
            ..RangeRequest::default()
        }))
        .await;
    assert!(matches!(
        old,
        Err(ShardError::Engine(EngineError::Compacted { .. }))
    ));
}

/// `Advance` goes through the log, moves the revision without an event, and the next write
/// takes advance + 1; reads at a skipped revision see the state before the advance.
/// Creates watch 0 of stream 1 on `[key, range_end)` from the next revision and waits for its
/// `Created`.
async fn watch_from_now(shard: &Shard, key: &str, range_end: &str) -> mpsc::Receiver<WatchMessage> {
    let (tx, mut rx) = mpsc::channel(64);
    shard
        .h()
        .watch_create(WatchCreate {
            stream: 1,
            watch_id: 0,
            filter: WatchFilter {
                key: b(key),
                range_end: b(range_end),
                ..WatchFilter::default()
            },
            start_revision: 0,
            progress_notify: false,
            sender: tx,
        })
        .await
        .expect("watch");
    let created = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("created");
    assert!(
        matches!(created, Some(WatchMessage::Created { watch_id: 0, .. })),
        "{created:?}"
    );
    rx
}

#[tokio::test]
async fn advance_moves_the_revision_through_the_log_without_events() {
    let shard = Shard::start(ShardConfig::default());
    let mut rx = watch_from_now(&shard, "\0", "\0").await;
    let first = shard.call(put("a", "1")).await.expect("put");
    let index = shard.status().await.raft_index;
    let to = first.revision + 100;

    let advanced = shard.call(Request::Advance { to }).await.expect("advance");
    assert_eq!(advanced.revision, to);
    assert!(matches!(advanced.response, Response::Advance));
    let status = shard.status().await;
    assert_eq!((status.revision, status.raft_index), (to, index + 1));
    // Behind the revision: answered with the revision as it is, still one log entry.
    let behind = shard
        .call(Request::Advance { to: 2 })
        .await
        .expect("advance behind");
    assert_eq!(behind.revision, to);
    assert_eq!(shard.status().await.raft_index, index + 2);

    let skipped = shard
        .call(Request::Range(RangeRequest {
            key: b("a"),
            revision: to - 1,
            ..RangeRequest::default()
        }))
        .await
        .expect("read at a skipped revision");
    assert_eq!(skipped.revision, to);
    assert_eq!(range_values(skipped), vec![b("1")]);
    let next = shard.call(put("a", "2")).await.expect("put");
    assert_eq!(next.revision, to + 1, "the next write takes advance + 1");

    // The watcher saw the two puts and nothing for the advances in between.
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match tokio::time::timeout(WAIT, rx.recv()).await.expect("event") {
            Some(WatchMessage::Events {
                revision, events, ..
            }) => seen.extend(events.into_iter().map(|e| (revision, e.kv.value))),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, vec![(first.revision, b("1")), (to + 1, b("2"))]);
    assert!(rx.try_recv().is_err(), "no message beyond the two puts");
}

#[tokio::test]
async fn watchers_receive_events_at_apply_time() {
    let shard = Shard::start(ShardConfig::default());
    let mut rx = watch_from_now(&shard, "w/", "w0").await;
    let reply = shard.call(put("w/a", "1")).await.expect("put");
    shard.call(put("other", "x")).await.expect("put");
    shard
        .call(Request::DeleteRange(DeleteRangeRequest {
            key: b("w/a"),
            ..DeleteRangeRequest::default()
        }))
        .await
        .expect("delete");
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match tokio::time::timeout(WAIT, rx.recv()).await.expect("event") {
            Some(WatchMessage::Events {
                revision, events, ..
            }) => {
                for e in events {
                    seen.push((revision, e.kind, e.kv.key));
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        seen,
        vec![
            (reply.revision, EventKind::Put, b("w/a")),
            (reply.revision + 2, EventKind::Delete, b("w/a")),
        ]
    );
    let stopped = shard.h().watch_cancel(1, 0).await.expect("cancel");
    assert_eq!(stopped, reply.revision + 2);
    assert_eq!(shard.status().await.watchers, 0);
}

#[tokio::test]
async fn expired_leases_are_revoked_with_their_keys() {
    let shard = Shard::start(ShardConfig {
        min_lease_ttl_secs: 1,
        tick: Duration::from_millis(20),
        ..ShardConfig::default()
    });
    let grant = shard
        .call(Request::LeaseGrant { id: 0, ttl: 1 })
        .await
        .expect("grant");
    let Response::LeaseGrant { id, ttl } = grant.response else {
        panic!("grant answered otherwise")
    };
    assert_eq!(ttl, 1);
    shard
        .call(Request::Put(PutRequest {
            key: b("leased"),
            value: b("v"),
            lease: id,
            ..PutRequest::default()
        }))
        .await
        .expect("put with lease");
    let keep = shard
        .call(Request::LeaseKeepAlive { id })
        .await
        .expect("keep-alive");
    assert!(matches!(keep.response, Response::LeaseKeepAlive { ttl: 1 }));
    let index = shard.status().await.raft_index;
    assert_eq!(
        shard.status().await.raft_index,
        index,
        "a keep-alive writes no log entry"
    );

    let deadline = Instant::now() + WAIT;
    loop {
        let values = range_values(shard.call(get("leased", false)).await.expect("get"));
        if values.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "lease never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let leases = shard.call(Request::LeaseLeases).await.expect("leases");
    assert!(matches!(leases.response, Response::LeaseLeases(ref l) if l.is_empty()));
    assert!(
        shard.status().await.raft_index > index,
        "the revoke went through the log"
    );
    let gone = shard.call(Request::LeaseKeepAlive { id }).await;
    assert!(matches!(
        gone,
        Err(ShardError::Engine(EngineError::LeaseNotFound { .. }))
    ));
}

/// Grants a 1 s lease and attaches `key` to it.
async fn leased_key(shard: &Shard, key: &str) -> i64 {
    let grant = shard
        .call(Request::LeaseGrant { id: 0, ttl: 1 })
        .await
        .expect("grant");
    let Response::LeaseGrant { id, .. } = grant.response else {
        panic!("grant answered otherwise")
    };
    shard
        .call(Request::Put(PutRequest {
            key: b(key),
            value: b("v"),
            lease: id,
            ..PutRequest::default()
        }))
        .await
        .expect("put with lease");
    id
}

#[tokio::test]
async fn a_reporting_shard_reports_expiry_again_until_revoked_and_an_ignoring_one_keeps_it() {
    let (tx, mut rx) = mpsc::channel(4);
    let reporting = Shard::start(ShardConfig {
        min_lease_ttl_secs: 1,
        tick: Duration::from_millis(20),
        lease_expiry: LeaseExpiry::Report(tx),
        ..ShardConfig::default()
    });
    let ignoring = Shard::start(ShardConfig {
        min_lease_ttl_secs: 1,
        tick: Duration::from_millis(20),
        lease_expiry: LeaseExpiry::Ignore,
        ..ShardConfig::default()
    });
    let id = leased_key(&reporting, "reported").await;
    let other = leased_key(&ignoring, "ignored").await;

    let first = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("reported in time");
    assert_eq!(first, Some(id));
    let reported_at = Instant::now();
    // Reporting is not revoking: the key is still there, and the lease is reported once more
    // after the pause, since nobody revoked it.
    let values = range_values(reporting.call(get("reported", false)).await.expect("get"));
    assert_eq!(values, vec![b("v")]);
    let again = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("reported again");
    assert_eq!(again, Some(id));
    assert!(reported_at.elapsed() >= EXPIRY_REPORT_AGAIN - Duration::from_millis(100));
    reporting
        .call(Request::LeaseRevoke { id })
        .await
        .expect("the receiver revokes");
    let values = range_values(reporting.call(get("reported", false)).await.expect("get"));
    assert!(values.is_empty());
    assert!(
        tokio::time::timeout(EXPIRY_REPORT_AGAIN * 2, rx.recv())
            .await
            .is_err(),
        "a revoked lease is not reported again"
    );

    // The ignoring shard, long past the deadline, still holds its lease and key.
    let values = range_values(ignoring.call(get("ignored", false)).await.expect("get"));
    assert_eq!(values, vec![b("v")]);
    let leases = ignoring.call(Request::LeaseLeases).await.expect("leases");
    assert!(matches!(leases.response, Response::LeaseLeases(ref l) if l == &vec![other]));
}

#[tokio::test]
async fn dropping_every_handle_stops_the_shard() {
    let mut shard = Shard::start(ShardConfig::default());
    let clone = shard.h().clone();
    shard.call(put("a", "b")).await.expect("put");
    drop(clone);
    // `stop` drops the last handle and fails unless the executor thread ends in time.
    shard.stop();
}
