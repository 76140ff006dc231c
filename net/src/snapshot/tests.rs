//! A snapshot of two real in-memory shards, read back: the stream (chunk sizes, remaining
//! bytes, the SHA-256 last), and the file (bbolt checked as `tx.Check()` does, then etcd's
//! buckets: merged revisions, tombstones, what compaction keeps, leases, compact revision).
//! `conformance/tests/snapshot.rs` restores such files into the real etcd.

use std::time::Duration;

use ballast_consensus::{ShardConfig, ShardHandle};
use ballast_engine::{DeleteRangeRequest, PutRequest};
use ballast_proto::mvccpb;
use bytes::Bytes;
use futures::StreamExt;
use prost::Message;

use super::*;
use crate::partition::{PartitionMap, Pin};

/// Keys `/a/...` in shard 0, `/b/...` in shard 1.
fn two_shards() -> Router {
    let map = PartitionMap::new(2, vec![Pin::new("/a/", 0), Pin::new("/b/", 1)]).unwrap();
    let handles = (0..2)
        .map(|id| {
            let config = ShardConfig {
                shard_id: ballast_consensus::ShardId(id),
                tick: Duration::from_millis(20),
                lease_expiry: ballast_consensus::LeaseExpiry::Ignore,
                ..ShardConfig::default()
            };
            ShardHandle::spawn(&format!("snap-{id}"), config).unwrap().0
        })
        .collect();
    Router::new(handles, map)
}

async fn call(router: &Router, request: Request) -> Revision {
    router.call(request).await.expect("request").revision
}

fn put(key: &str, value: &str, lease: LeaseId) -> Request {
    Request::Put(PutRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::copy_from_slice(value.as_bytes()),
        lease,
        ..PutRequest::default()
    })
}

fn del(key: &str) -> Request {
    Request::DeleteRange(DeleteRangeRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        ..DeleteRangeRequest::default()
    })
}

/// Streams the snapshot; checks the messages and returns the file (without the digest).
async fn streamed(snapshot: Snapshot) -> Vec<u8> {
    let size = snapshot.size_bytes;
    let messages: Vec<pb::SnapshotResponse> = stream(snapshot)
        .map(|m| m.expect("message"))
        .collect()
        .await;
    let (digest, chunks) = messages.split_last().expect("messages");
    let mut file = Vec::new();
    for m in chunks {
        assert!(!m.blob.is_empty() && m.blob.len() <= SEND_CHUNK_BYTES);
        file.extend_from_slice(&m.blob);
        assert_eq!(m.remaining_bytes, size - file.len() as u64);
    }
    assert_eq!(file.len() as u64, size);
    assert_eq!(digest.remaining_bytes, 0);
    assert_eq!(digest.blob.to_vec(), Sha256::digest(&file).to_vec());
    file
}

#[tokio::test]
async fn two_shards_make_one_etcd_history() {
    let router = two_shards();
    assert_eq!(call(&router, put("/a/x", "1", 0)).await, 2);
    assert_eq!(
        call(&router, put("/b/y", "1", 0)).await,
        2,
        "its own counter"
    );
    let lease = match router
        .call(Request::LeaseGrant { id: 0, ttl: 90 })
        .await
        .expect("grant")
        .response
    {
        Response::LeaseGrant { id, .. } => id,
        other => panic!("grant answered {other:?}"),
    };
    router.advance(ShardSet::all(2), 2).await.expect("advance");
    assert_eq!(call(&router, put("/a/x", "2", 0)).await, 3);
    assert_eq!(call(&router, put("/b/z", "leased", lease)).await, 3);
    assert_eq!(call(&router, del("/a/x")).await, 4);
    assert_eq!(call(&router, put("/a/w", "1", 0)).await, 5);
    // Shard 1 is advanced to 4 to compact there too; its next write takes 5, as shard 0's did.
    call(&router, Request::Compact { revision: 4 }).await;
    assert_eq!(call(&router, put("/b/y", "2", 0)).await, 5);

    let dir = tempfile::tempdir().expect("tempdir");
    let snapshot = take(&router, dir.path()).await.expect("snapshot");
    assert_eq!(snapshot.revision, 5);
    assert_eq!(snapshot.compact_revision, 4);
    assert_eq!(snapshot.leases, 1);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "the temporary file is unlinked"
    );
    let file = streamed(snapshot).await;
    let buckets = crate::bolt::writer::tests::read(&file);
    let names: Vec<String> = buckets
        .keys()
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "alarm",
            "auth",
            "authRoles",
            "authUsers",
            "cluster",
            "key",
            "lease",
            "members",
            "members_removed",
            "meta"
        ]
    );
    assert_eq!(
        buckets[&b"cluster"[..]],
        vec![(b"clusterVersion".to_vec(), b"3.4.0".to_vec())]
    );
    assert!(buckets[&b"members"[..]].is_empty());
    let changes: Vec<(Vec<u8>, mvccpb::KeyValue)> = buckets[&b"key"[..]]
        .iter()
        .map(|(k, v)| (k.clone(), mvccpb::KeyValue::decode(&v[..]).expect("kv")))
        .collect();
    let summary: Vec<(i64, i64, bool, String, i64, i64)> = changes
        .iter()
        .map(|(k, kv)| {
            (
                i64::from_be_bytes(k[..8].try_into().unwrap()),
                i64::from_be_bytes(k[9..17].try_into().unwrap()),
                k.len() == 18 && k[17] == b't',
                String::from_utf8_lossy(&kv.key).into_owned(),
                kv.version,
                kv.lease,
            )
        })
        .collect();
    // Compacted at 4: /a/x's versions (2, 3) and its tombstone (4) are gone, /b/y@2 stays (its
    // version at 4); at 5 both shards changed a key: shard 0's change first.
    assert_eq!(
        summary,
        vec![
            (2, 0, false, "/b/y".into(), 1, 0),
            (3, 0, false, "/b/z".into(), 1, lease),
            (5, 0, false, "/a/w".into(), 1, 0),
            (5, 1, false, "/b/y".into(), 2, 0),
        ]
    );
    assert!(changes.iter().all(|(k, _)| k[8] == b'_'));
    let meta = &buckets[&b"meta"[..]];
    let rev4 = layout::rev_key(4, 0, false);
    assert_eq!(
        meta,
        &vec![
            (b"finishedCompactRev".to_vec(), rev4.clone()),
            (b"scheduledCompactRev".to_vec(), rev4)
        ]
    );
    assert_eq!(buckets[&b"lease"[..]], vec![layout::lease_entry(lease, 90)]);
}

#[tokio::test]
async fn changes_of_two_shards_at_one_revision_take_consecutive_subs() {
    let router = two_shards();
    call(&router, put("/b/1", "x", 0)).await;
    call(&router, put("/a/1", "x", 0)).await;
    router
        .call(Request::Txn(ballast_engine::TxnRequest {
            success: vec![
                ballast_engine::RequestOp::Put(PutRequest {
                    key: Bytes::from_static(b"/b/2"),
                    ..PutRequest::default()
                }),
                ballast_engine::RequestOp::Put(PutRequest {
                    key: Bytes::from_static(b"/b/3"),
                    ..PutRequest::default()
                }),
            ],
            ..ballast_engine::TxnRequest::default()
        }))
        .await
        .expect("txn");
    let dir = tempfile::tempdir().expect("tempdir");
    let snapshot = take(&router, dir.path()).await.expect("snapshot");
    assert_eq!(snapshot.revision, 3);
    assert_eq!(snapshot.compact_revision, -1);
    let buckets = crate::bolt::writer::tests::read(&streamed(snapshot).await);
    let keys: Vec<(Vec<u8>, String)> = buckets[&b"key"[..]]
        .iter()
        .map(|(k, v)| {
            let kv = mvccpb::KeyValue::decode(&v[..]).expect("kv");
            (k.clone(), String::from_utf8_lossy(&kv.key).into_owned())
        })
        .collect();
    assert_eq!(
        keys,
        vec![
            (layout::rev_key(2, 0, false), "/a/1".into()),
            (layout::rev_key(2, 1, false), "/b/1".into()),
            (layout::rev_key(3, 0, false), "/b/2".into()),
            (layout::rev_key(3, 1, false), "/b/3".into()),
        ]
    );
    assert!(buckets[&b"meta"[..]].is_empty(), "never compacted");
}
