//! The router over real in-memory shards: placement, refusals, scatter-gather ranges at one
//! revision, compaction, leases across shards, and the merge rules on their own.

use std::time::Duration;

use ballast_consensus::{ShardConfig, ShardHandle};
use ballast_engine::{
    Compare, CompareResult, CompareTarget, CompareValue, DeleteRangeRequest, KeyValue, PutRequest,
    RequestOp, SortOrder, SortTarget, TxnRequest,
};
use bytes::Bytes;

use super::*;
use crate::partition::Pin;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// Keys `/a/...` in shard 0, `/b/...` in shard 1 (pinned), in-memory shards.
fn two_shards(expired: Option<mpsc::Sender<LeaseId>>) -> Router {
    let map = PartitionMap::new(2, vec![Pin::new("/a/", 0), Pin::new("/b/", 1)]).unwrap();
    let handles = (0..2)
        .map(|id| {
            let config = ShardConfig {
                shard_id: ballast_consensus::ShardId(id),
                min_lease_ttl_secs: 1,
                tick: Duration::from_millis(20),
                lease_expiry: match (&expired, id) {
                    (Some(tx), 0) => LeaseExpiry::Report(tx.clone()),
                    (Some(_), _) => LeaseExpiry::Ignore,
                    (None, _) => LeaseExpiry::Revoke,
                },
                ..ShardConfig::default()
            };
            // The thread ends when the router (the last handle) is dropped.
            ShardHandle::spawn(&format!("test-{id}"), config).unwrap().0
        })
        .collect();
    Router::new(handles, map)
}

use ballast_consensus::LeaseExpiry;

async fn put(router: &Router, key: &str, value: &str) -> Revision {
    put_leased(router, key, value, 0).await
}

async fn put_leased(router: &Router, key: &str, value: &str, lease: LeaseId) -> Revision {
    let reply = router
        .call(Request::Put(PutRequest {
            key: b(key),
            value: b(value),
            lease,
            ..PutRequest::default()
        }))
        .await
        .expect("put");
    reply.revision
}

async fn range(router: &Router, r: RangeRequest) -> Result<(Revision, RangeResponse), RouteError> {
    let reply = router.call(Request::Range(r)).await?;
    match reply.response {
        Response::Range(resp) => Ok((reply.revision, resp)),
        other => panic!("range answered {other:?}"),
    }
}

fn keys(resp: &RangeResponse) -> Vec<String> {
    resp.kvs
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect()
}

fn everything() -> RangeRequest {
    RangeRequest {
        key: b("/"),
        range_end: b("0"),
        ..RangeRequest::default()
    }
}

#[tokio::test]
async fn writes_go_to_their_shard_and_each_shard_counts_its_own_revisions() {
    let router = two_shards(None);
    router.load_revisions().await.unwrap();
    assert_eq!(put(&router, "/a/1", "x").await, 2);
    assert_eq!(put(&router, "/a/2", "x").await, 3);
    // Shard 1 has its own counter: its first write is its revision 2.
    assert_eq!(put(&router, "/b/1", "x").await, 2);
    assert_eq!(router.max_revision(), 3);
    // A single-shard read answers with that shard's revision.
    let (rev, resp) = range(
        &router,
        RangeRequest {
            key: b("/b/"),
            range_end: b("/b0"),
            ..RangeRequest::default()
        },
    )
    .await
    .unwrap();
    assert_eq!((rev, keys(&resp)), (2, vec!["/b/1".to_owned()]));
}

#[tokio::test]
async fn txns_and_deletes_over_two_shards_are_refused_naming_them() {
    let router = two_shards(None);
    put(&router, "/a/1", "x").await;
    put(&router, "/b/1", "x").await;
    let txn = TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Equal,
            target: CompareTarget::Version,
            key: b("/a/1"),
            range_end: Bytes::new(),
            target_union: Some(CompareValue::Version(1)),
        }],
        success: vec![RequestOp::Put(PutRequest {
            key: b("/b/1"),
            value: b("y"),
            ..PutRequest::default()
        })],
        failure: vec![],
    };
    let err = router.call(Request::Txn(txn)).await.unwrap_err();
    assert!(
        matches!(&err, RouteError::CrossShard { what: "txn", shards } if shards == "0, 1"),
        "{err}"
    );
    let err = router
        .call(Request::DeleteRange(DeleteRangeRequest {
            key: b("/"),
            range_end: b("0"),
            ..DeleteRangeRequest::default()
        }))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("delete range spans shards 0, 1"),
        "{err}"
    );
    // Nothing changed.
    let (_, resp) = range(&router, everything()).await.unwrap();
    assert_eq!(resp.count, 2);
    assert!(resp.kvs.iter().all(|kv| kv.value == b("x")));
    // Inside one shard both work.
    router
        .call(Request::DeleteRange(DeleteRangeRequest {
            key: b("/b/"),
            range_end: b("/b0"),
            ..DeleteRangeRequest::default()
        }))
        .await
        .expect("one shard's delete");
}

#[tokio::test]
async fn a_request_over_shards_runs_in_the_one_shard_holding_its_keys() {
    let router = two_shards(None);
    put(&router, "/a/1", "x").await;
    put(&router, "/a/2", "x").await;
    // Every key of the whole-keyspace delete is in shard 0: it runs there, like etcd.
    let reply = router
        .call(Request::DeleteRange(DeleteRangeRequest {
            key: b("/"),
            range_end: b("0"),
            prev_kv: true,
        }))
        .await
        .expect("delete of keys that live in one shard");
    let Response::DeleteRange(d) = reply.response else {
        panic!()
    };
    assert_eq!(d.deleted, 2);
    assert_eq!(reply.revision, 4, "shard 0's revision, as etcd would count");
    // A txn comparing a missing key anywhere, reading everything and writing in shard 1:
    // nothing is held anywhere, so it runs where its put goes.
    let txn = TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Equal,
            target: CompareTarget::Version,
            key: b("/a/missing"),
            range_end: Bytes::new(),
            target_union: Some(CompareValue::Version(0)),
        }],
        success: vec![
            RequestOp::Range(everything()),
            RequestOp::Put(PutRequest {
                key: b("/b/new"),
                value: b("y"),
                ..PutRequest::default()
            }),
        ],
        failure: vec![],
    };
    let reply = router.call(Request::Txn(txn.clone())).await.expect("txn");
    let Response::Txn(t) = reply.response else {
        panic!()
    };
    assert!(t.succeeded);
    // Now shard 1 holds a key the txn's range reads, and shard 0 one it compares: refused.
    put(&router, "/a/missing", "now present").await;
    let err = router.call(Request::Txn(txn)).await.unwrap_err();
    assert!(err.to_string().contains("txn spans shards 0, 1"), "{err}");
}

#[tokio::test]
async fn a_range_over_shards_reads_every_shard_at_one_revision() {
    let router = two_shards(None);
    router.load_revisions().await.unwrap();
    for i in 0..5 {
        put(&router, &format!("/a/{i}"), "a").await;
    }
    put(&router, "/b/0", "b0").await;
    put(&router, "/b/1", "b1").await;
    // Shard 0 is at 6, shard 1 at 3: the read runs at 6, advancing shard 1 first.
    let (rev, resp) = range(&router, everything()).await.unwrap();
    assert_eq!(rev, 6);
    assert_eq!(resp.count, 7);
    assert_eq!(
        keys(&resp),
        ["/a/0", "/a/1", "/a/2", "/a/3", "/a/4", "/b/0", "/b/1"]
    );
    // Shard 1 took the revision: its next write is above 6.
    assert_eq!(put(&router, "/b/2", "b2").await, 7);

    // A limit cuts across shards in key order, with `more` and the whole count.
    let (_, page) = range(
        &router,
        RangeRequest {
            limit: 6,
            ..everything()
        },
    )
    .await
    .unwrap();
    assert_eq!(page.kvs.len(), 6);
    assert!(page.more);
    assert_eq!(page.count, 8);
    assert_eq!(keys(&page).last().unwrap(), "/b/0");

    // A read at an older revision sees each shard as it was then.
    let (_, old) = range(
        &router,
        RangeRequest {
            revision: 6,
            ..everything()
        },
    )
    .await
    .unwrap();
    assert_eq!(old.count, 7, "/b/2 came later");

    // Sorted by value, descending, across shards.
    let (_, sorted) = range(
        &router,
        RangeRequest {
            sort_target: SortTarget::Value,
            sort_order: SortOrder::Descend,
            limit: 3,
            ..everything()
        },
    )
    .await
    .unwrap();
    assert_eq!(keys(&sorted), ["/b/2", "/b/1", "/b/0"]);
    // The same order without the values in the answer.
    let (_, keys_only) = range(
        &router,
        RangeRequest {
            sort_target: SortTarget::Value,
            sort_order: SortOrder::Descend,
            limit: 3,
            keys_only: true,
            ..everything()
        },
    )
    .await
    .unwrap();
    assert_eq!(keys(&keys_only), ["/b/2", "/b/1", "/b/0"]);
    assert!(keys_only.kvs.iter().all(|kv| kv.value.is_empty()));

    // A future revision is etcd's error.
    let err = range(
        &router,
        RangeRequest {
            revision: 100,
            ..everything()
        },
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("future revision"), "{err}");
}

#[tokio::test]
async fn compaction_reaches_every_shard() {
    let router = two_shards(None);
    router.load_revisions().await.unwrap();
    for i in 0..4 {
        put(&router, &format!("/a/{i}"), "a").await;
    }
    put(&router, "/b/0", "b").await;
    router
        .call(Request::Compact { revision: 4 })
        .await
        .expect("compact");
    for shard in 0..2 {
        let reply = router.call_shard(shard, Request::Status).await.unwrap();
        let Response::Status(s) = reply.response else {
            panic!()
        };
        assert_eq!(s.compact_revision, 4, "shard {shard}");
    }
    let err = range(
        &router,
        RangeRequest {
            revision: 3,
            ..everything()
        },
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("compacted"), "{err}");
    let err = router
        .call(Request::Compact { revision: 4 })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("compacted"), "{err}");
    // A txn reading every shard below the compaction gets etcd's error, not a refusal.
    let txn = TxnRequest {
        success: vec![RequestOp::Range(RangeRequest {
            revision: 3,
            ..everything()
        })],
        ..TxnRequest::default()
    };
    let err = router.call(Request::Txn(txn)).await.unwrap_err();
    assert!(err.to_string().contains("compacted"), "{err}");
}

#[tokio::test]
async fn leases_span_shards_and_expiry_reported_by_shard_0_revokes_everywhere() {
    let (tx, rx) = mpsc::channel(16);
    let router = two_shards(Some(tx));
    router.load_revisions().await.unwrap();
    // Paused at first, as under a CORRUPT alarm.
    let paused = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = paused.clone();
    tokio::spawn(router.clone().revoke_expired(
        rx,
        move || flag.load(std::sync::atomic::Ordering::Relaxed),
        std::future::pending(),
    ));
    let reply = router
        .call(Request::LeaseGrant { id: 0, ttl: 1 })
        .await
        .unwrap();
    let Response::LeaseGrant { id, .. } = reply.response else {
        panic!()
    };
    put_leased(&router, "/a/l", "x", id).await;
    put_leased(&router, "/b/l", "x", id).await;
    let reply = router
        .call(Request::LeaseTimeToLive { id, keys: true })
        .await
        .unwrap();
    let Response::LeaseTimeToLive(ttl) = reply.response else {
        panic!()
    };
    assert_eq!(ttl.keys, vec![b("/a/l"), b("/b/l")]);

    // Past its deadline, shard 0 reports it; paused, the router leaves it (and its keys).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, resp) = range(&router, everything()).await.unwrap();
    assert_eq!(resp.count, 2, "no revoke while paused");
    // Resumed, shard 0 reports it again and the router revokes it in both shards.
    paused.store(false, std::sync::atomic::Ordering::Relaxed);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, resp) = range(&router, everything()).await.unwrap();
        if resp.count == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "lease never revoked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for shard in 0..2 {
        assert_eq!(
            router.leases_of(shard).await.unwrap(),
            Vec::<LeaseId>::new()
        );
    }
}

#[tokio::test]
async fn reconciling_repairs_a_lease_table_cut_short_by_a_crash() {
    let router = two_shards(None);
    // As if a grant stopped after shard 0, and a revoke after shard 1 only... of another lease.
    router
        .call_shard(0, Request::LeaseGrant { id: 7, ttl: 60 })
        .await
        .unwrap();
    router
        .call_shard(1, Request::LeaseGrant { id: 9, ttl: 60 })
        .await
        .unwrap();
    put_leased(&router, "/b/orphan", "x", 9).await;
    router.reconcile_leases().await.unwrap();
    assert_eq!(router.leases_of(0).await.unwrap(), vec![7]);
    assert_eq!(router.leases_of(1).await.unwrap(), vec![7]);
    let (_, resp) = range(&router, everything()).await.unwrap();
    assert_eq!(resp.count, 0, "the orphan lease's key went with it");
}

#[tokio::test]
async fn the_aligner_advances_a_shard_left_behind() {
    let router = two_shards(None);
    router.load_revisions().await.unwrap();
    for i in 0..10 {
        put(&router, &format!("/a/{i}"), "a").await;
    }
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(router.clone().align(async move {
        let _ = stop_rx.await;
    }));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while router.inner.revisions[1].load(Ordering::Acquire) < 11 {
        assert!(
            std::time::Instant::now() < deadline,
            "shard 1 never advanced"
        );
        tokio::time::sleep(ALIGN_INTERVAL).await;
    }
    let _ = stop_tx.send(());
    task.await.unwrap();
    assert_eq!(put(&router, "/b/x", "b").await, 12);
}

fn kv(key: &str, value: &str, modrev: i64) -> KeyValue {
    KeyValue {
        key: b(key),
        value: b(value),
        mod_revision: modrev,
        create_revision: modrev,
        version: 1,
        lease: 0,
    }
}

#[test]
fn merging_orders_as_one_store_and_counts_everything() {
    let r = RangeRequest {
        sort_target: SortTarget::Mod,
        sort_order: SortOrder::Ascend,
        limit: 3,
        ..RangeRequest::default()
    };
    let shard0 = RangeResponse {
        kvs: vec![kv("a", "1", 5), kv("c", "1", 2)],
        more: false,
        count: 2,
    };
    let shard1 = RangeResponse {
        kvs: vec![kv("b", "1", 2), kv("d", "1", 9)],
        more: false,
        count: 2,
    };
    let merged = merge_ranges(&r, vec![shard0, shard1]);
    // Ties on mod revision stay in key order, as one store's stable sort leaves them.
    assert_eq!(keys(&merged), ["b", "c", "a"]);
    assert!(merged.more);
    assert_eq!(merged.count, 4);
}

#[test]
fn combined_status_names_the_failed_shard() {
    let ok = ShardStatus {
        revision: 5,
        size_bytes: 10,
        watchers: 1,
        is_leader: true,
        ..ShardStatus::default()
    };
    let failed = ShardStatus {
        revision: 9,
        size_bytes: 20,
        watchers: 2,
        is_leader: true,
        failure: Some("fdatasync: EIO".into()),
        ..ShardStatus::default()
    };
    let s = combine_statuses(&[ok, failed]);
    assert_eq!((s.revision, s.size_bytes, s.watchers), (9, 30, 3));
    assert_eq!(
        s.failure.as_deref(),
        Some("shard 1 stopped after a storage failure: fdatasync: EIO")
    );
}
