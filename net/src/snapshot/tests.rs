//! A snapshot of two real in-memory shards, read back: the stream (chunk sizes, remaining
//! bytes, the SHA-256 last), and the file (bbolt checked as `tx.Check()` does, then etcd's
//! buckets: merged revisions, tombstones, what compaction keeps, leases, compact revision),
//! and the users, roles, auth switch and alarms shard 0 applied, read back by `ballast
//! snapshot restore`'s reader and pinned against etcd 3.4.23's own bytes.
//! `conformance/tests/snapshot.rs` restores such files into the real etcd.

use std::time::Duration;

use ballast_consensus::auth::{PermType, Permission};
use ballast_consensus::{
    AlarmAction, AlarmMember, AlarmType, AuthCommand, ShardConfig, ShardHandle,
};
use ballast_engine::{DeleteRangeRequest, PutRequest};
use ballast_proto::mvccpb;
use bytes::Bytes;
use futures::StreamExt;
use prost::Message;

use super::*;
use crate::partition::{PartitionMap, Pin};

/// Keys `/a/...` in shard 0, `/b/...` in shard 1; the tables shard 0 applies auth and alarm
/// changes to (as the server shares them).
fn two_shards() -> (Router, ClusterTables) {
    let map = PartitionMap::new(2, vec![Pin::new("/a/", 0), Pin::new("/b/", 1)]).unwrap();
    let tables = ClusterTables::default();
    let handles = (0..2)
        .map(|id| {
            let mut config = ShardConfig {
                shard_id: ballast_consensus::ShardId(id),
                tick: Duration::from_millis(20),
                lease_expiry: ballast_consensus::LeaseExpiry::Ignore,
                ..ShardConfig::default()
            };
            if id == 0 {
                config.auth = tables.auth.clone();
                config.alarms = tables.alarms.clone();
            }
            ShardHandle::spawn(&format!("snap-{id}"), config).unwrap().0
        })
        .collect();
    (Router::new(handles, map), tables)
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
    let (router, tables) = two_shards();
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
    let snapshot = take(&router, &tables, dir.path()).await.expect("snapshot");
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
    // No users, roles or alarms: a new etcd member's auth store (revision 1, auth off).
    assert_eq!(
        buckets[&b"auth"[..]],
        vec![(b"authRevision".to_vec(), 1u64.to_be_bytes().to_vec())]
    );
    for empty in ["alarm", "authRoles", "authUsers"] {
        assert!(buckets[empty.as_bytes()].is_empty(), "{empty}");
    }
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
    let (router, tables) = two_shards();
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
    let snapshot = take(&router, &tables, dir.path()).await.expect("snapshot");
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

/// An auth change as shard 0 applies it, by `by`.
async fn auth(router: &Router, by: &str, cmd: AuthCommand) {
    let reply = router
        .call_shard(
            0,
            Request::Auth {
                by: by.to_owned(),
                cmd,
            },
        )
        .await
        .expect("auth request");
    match reply.response {
        Response::Auth(Ok(_)) => {}
        other => panic!("auth answered {other:?}"),
    }
}

fn hashed(password: &str) -> Bytes {
    Bytes::from(bcrypt::hash(password, 4).expect("bcrypt"))
}

fn permission(perm_type: PermType, key: &str, range_end: &str) -> Permission {
    Permission {
        perm_type,
        key: Bytes::copy_from_slice(key.as_bytes()),
        range_end: Bytes::copy_from_slice(range_end.as_bytes()),
    }
}

/// The role `reader` of the conformance tests, as etcd 3.4.23 stored it in `authRoles`
/// (copied from a file `etcdctl snapshot save` fetched after `role grant-permission reader
/// read /a/ --prefix`, `readwrite k1`, `write w1 w5`).
const READER_FROM_ETCD: &[u8] =
    b"\n\x06reader\x12\n\x12\x03/a/\x1a\x03/a0\x12\x06\x08\x02\x12\x02k1\x12\n\x08\x01\x12\x02w1\x1a\x02w5";
/// etcd's bytes for `user add carol --no-password` (the same file).
const CAROL_FROM_ETCD: &[u8] = b"\n\x05carol\"\x02\x08\x01";

#[tokio::test]
async fn users_roles_auth_and_alarms_read_back_by_restore() {
    let (router, tables) = two_shards();
    call(&router, put("/a/x", "1", 0)).await;
    call(&router, put("/b/y", "1", 0)).await;
    let root_hash = hashed("rootpw");
    let alice_hash = hashed("apw");
    for cmd in [
        AuthCommand::UserAdd {
            name: "root".into(),
            password_hash: root_hash.clone(),
            no_password: false,
        },
        AuthCommand::UserGrantRole {
            user: "root".into(),
            role: "root".into(),
        },
        AuthCommand::RoleAdd {
            name: "reader".into(),
        },
        AuthCommand::RoleAdd {
            name: "idle".into(),
        },
        AuthCommand::RoleGrantPermission {
            name: "reader".into(),
            permission: permission(PermType::READ, "/a/", "/a0"),
        },
        AuthCommand::RoleGrantPermission {
            name: "reader".into(),
            permission: permission(PermType::READWRITE, "k1", ""),
        },
        AuthCommand::RoleGrantPermission {
            name: "reader".into(),
            permission: permission(PermType::WRITE, "w1", "w5"),
        },
        AuthCommand::UserAdd {
            name: "alice".into(),
            password_hash: alice_hash.clone(),
            no_password: false,
        },
        AuthCommand::UserGrantRole {
            user: "alice".into(),
            role: "reader".into(),
        },
        AuthCommand::UserGrantRole {
            user: "alice".into(),
            role: "idle".into(),
        },
        AuthCommand::UserAdd {
            name: "carol".into(),
            password_hash: Bytes::new(),
            no_password: true,
        },
        AuthCommand::Enable,
    ] {
        auth(&router, "root", cmd).await;
    }
    let nospace = AlarmMember {
        alarm: AlarmType::NOSPACE,
        member_id: 0x8e9e_05c5_2164_694d,
    };
    router
        .call_shard(
            0,
            Request::Alarm {
                action: AlarmAction::Activate,
                member: nospace,
            },
        )
        .await
        .expect("alarm");

    let dir = tempfile::tempdir().expect("tempdir");
    let snapshot = take(&router, &tables, dir.path()).await.expect("snapshot");
    assert_eq!((snapshot.users, snapshot.roles, snapshot.alarms), (3, 2, 1));
    let file = streamed(snapshot).await;

    // etcd's bytes where etcd 3.4.23's are known.
    let buckets = crate::bolt::writer::tests::read(&file);
    let revision = tables.auth.state().revision;
    assert!(revision > 1);
    assert_eq!(
        buckets[&b"auth"[..]],
        vec![
            (b"authEnabled".to_vec(), vec![1]),
            (b"authRevision".to_vec(), revision.to_be_bytes().to_vec()),
        ]
    );
    let users = &buckets[&b"authUsers"[..]];
    let names: Vec<&[u8]> = users.iter().map(|(k, _)| &k[..]).collect();
    assert_eq!(names, [&b"alice"[..], b"carol", b"root"]);
    let alice = [
        &b"\n\x05alice\x12<"[..],
        &alice_hash,
        b"\x1a\x04idle\x1a\x06reader\"\x00",
    ]
    .concat();
    assert_eq!(users[0].1, alice);
    assert_eq!(users[1].1, CAROL_FROM_ETCD);
    let roles = &buckets[&b"authRoles"[..]];
    assert_eq!(
        roles,
        &vec![
            (b"idle".to_vec(), b"\n\x04idle".to_vec()),
            (b"reader".to_vec(), READER_FROM_ETCD.to_vec()),
        ]
    );
    assert_eq!(
        buckets[&b"alarm"[..]],
        vec![(
            b"\x08\xcd\xd2\x91\x8b\xd2\xb8\x81\xcf\x8e\x01\x10\x01".to_vec(),
            Vec::new()
        )]
    );

    // Round trip: what `ballast snapshot restore` reads is what shard 0 held.
    let mut tmp = tempfile::tempfile().expect("tempfile");
    std::io::Write::write_all(&mut tmp, &file).expect("write");
    let read = crate::restore::read_etcd(&(tmp, file.len() as u64)).expect("restore reads it");
    let mut want = tables.auth.state();
    want.last_index = 0;
    assert_eq!(read.auth, want);
    assert!(read.auth.enabled);
    assert_eq!(read.auth.users["root"].password_hash, root_hash);
    let hash = std::str::from_utf8(&read.auth.users["alice"].password_hash).unwrap();
    assert!(bcrypt::verify("apw", hash).unwrap());
    assert!(read.auth.users["carol"].no_password);
    assert_eq!(read.alarms, tables.alarms.table());
    assert_eq!(read.alarms.get(AlarmType::NONE), vec![nospace]);
    let keys: Vec<&[u8]> = read.changes.iter().map(|c| &c.kv.key[..]).collect();
    assert_eq!(keys, [&b"/a/x"[..], b"/b/y"]);
}
