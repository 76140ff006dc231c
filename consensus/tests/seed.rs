//! A shard seeded with a store built elsewhere (`seed::seed`, what `ballast snapshot restore`
//! writes) starts from it on real files: it elects itself over the seeded state, serves its
//! keys and old revisions, takes the next revision for a write, and after a restart still holds
//! both the seeded state and the write. Seeding storage that holds a page log is refused.
//! Shard 0 seeded with an auth state and alarms (what a restore carries from etcd's `auth*`
//! and `alarm` buckets) starts with them in the node's tables, applies auth changes on top,
//! and keeps them over a restart.

use std::collections::BTreeMap;

use ballast_consensus::auth::{AuthCommand, PermType, Permission};
use ballast_consensus::durable::ShardStorage;
use ballast_consensus::{
    AlarmMember, AlarmTable, AlarmType, AuthAnswer, AuthError, AuthState, Request, Response,
    ShardConfig,
};
use ballast_engine::mvcc::import::StoreBuilder;
use ballast_engine::{KeyValue, RangeRequest};
use bytes::Bytes;

mod common;
use common::*;

fn kv(key: &str, value: &str, create: i64, main: i64, version: i64, lease: i64) -> KeyValue {
    KeyValue {
        key: b(key),
        create_revision: create,
        mod_revision: main,
        version,
        value: b(value),
        lease,
    }
}

fn built() -> ballast_engine::Store {
    let mut builder = StoreBuilder::new();
    builder.lease(0x77, 600).unwrap();
    builder
        .change(2, 0, kv("a", "1", 2, 2, 1, 0), false)
        .unwrap();
    builder
        .change(3, 0, kv("a", "2", 2, 3, 2, 0), false)
        .unwrap();
    builder
        .change(4, 0, kv("b", "x", 4, 4, 1, 0x77), false)
        .unwrap();
    let (store, _) = builder.finish(6, Some(3)).unwrap();
    store
}

/// (key, value, create, mod, version, lease) of every key at `revision` (0: current), and the
/// header revision.
async fn read(shard: &Shard, revision: i64) -> (i64, Vec<(Bytes, Bytes, i64, i64, i64, i64)>) {
    let reply = shard
        .call(Request::Range(RangeRequest {
            key: b("\0"),
            range_end: b("\0"),
            revision,
            ..RangeRequest::default()
        }))
        .await
        .expect("range");
    let Response::Range(r) = reply.response else {
        panic!("range answered otherwise")
    };
    let kvs = r
        .kvs
        .into_iter()
        .map(|k| {
            (
                k.key,
                k.value,
                k.create_revision,
                k.mod_revision,
                k.version,
                k.lease,
            )
        })
        .collect();
    (reply.revision, kvs)
}

#[tokio::test]
async fn a_seeded_shard_starts_from_its_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = ShardStorage::new(dir.path());
    let config = || ShardConfig {
        storage: Some(storage.clone()),
        ..ShardConfig::default()
    };
    ballast_consensus::seed::seed(
        &storage,
        built(),
        &BTreeMap::from([(1, String::new())]),
        &AlarmTable::default(),
        &AuthState::default(),
    )
    .expect("seeds");

    let mut shard = Shard::start(config());
    let (revision, now) = read(&shard, 0).await;
    assert_eq!(revision, 6);
    assert_eq!(
        now,
        vec![
            (b("a"), b("2"), 2, 3, 2, 0),
            (b("b"), b("x"), 4, 4, 1, 0x77)
        ]
    );
    assert_eq!(
        read(&shard, 3).await.1.len(),
        1,
        "a read at the compact revision"
    );
    assert!(
        shard
            .call(Request::Range(RangeRequest {
                key: b("a"),
                revision: 2,
                ..RangeRequest::default()
            }))
            .await
            .is_err(),
        "a read below the compact revision"
    );
    let ttl = shard
        .call(Request::LeaseTimeToLive {
            id: 0x77,
            keys: true,
        })
        .await
        .expect("time to live");
    let Response::LeaseTimeToLive(ttl) = ttl.response else {
        panic!("time to live answered {:?}", ttl.response)
    };
    assert_eq!((ttl.granted_ttl, ttl.keys), (600, vec![b("b")]));
    let put = shard.call(put("a", "3")).await.expect("put");
    assert_eq!(put.revision, 7);
    shard.stop();

    let shard = Shard::start(config());
    let (revision, now) = read(&shard, 0).await;
    assert_eq!(revision, 7);
    assert_eq!(now[0], (b("a"), b("3"), 2, 7, 3, 0));
    assert_eq!(read(&shard, 6).await.1[0], (b("a"), b("2"), 2, 3, 2, 0));
    drop(shard);

    let err = ballast_consensus::seed::seed(
        &storage,
        built(),
        &BTreeMap::from([(1, String::new())]),
        &AlarmTable::default(),
        &AuthState::default(),
    )
    .expect_err("a page log is there");
    assert!(err.contains("not empty"), "{err}");
}

/// An auth state as etcd's buckets would give it: root and alice, a role with a permission,
/// auth enabled, at auth revision 7.
fn etcd_auth() -> AuthState {
    let mut auth = AuthState::default();
    let cmds = [
        AuthCommand::UserAdd {
            name: "root".into(),
            password_hash: b("$2a$10$roothash"),
            no_password: false,
        },
        AuthCommand::UserGrantRole {
            user: "root".into(),
            role: "root".into(),
        },
        AuthCommand::UserAdd {
            name: "alice".into(),
            password_hash: b("$2a$10$alicehash"),
            no_password: false,
        },
        AuthCommand::RoleAdd {
            name: "reader".into(),
        },
        AuthCommand::RoleGrantPermission {
            name: "reader".into(),
            permission: Permission {
                perm_type: PermType::READ,
                key: b("/a/"),
                range_end: b("/a0"),
            },
        },
        AuthCommand::UserGrantRole {
            user: "alice".into(),
            role: "reader".into(),
        },
        AuthCommand::Enable,
    ];
    for cmd in &cmds {
        auth.apply("", cmd, 0).expect("applies");
    }
    assert!(auth.enabled);
    assert_eq!(auth.last_index, 0);
    assert_eq!(auth.revision, 7);
    auth
}

#[tokio::test]
async fn a_seeded_shard_0_starts_with_its_auth_state_and_alarms() {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = ShardStorage::new(dir.path());
    let auth = etcd_auth();
    let mut alarms = AlarmTable::default();
    let nospace = AlarmMember {
        alarm: AlarmType::NOSPACE,
        member_id: 0xbdae_9bbc_11dd_390d,
    };
    alarms.activate(nospace);
    let one = BTreeMap::from([(1, String::new())]);

    // A state that claims a log index is refused: the seeded log starts anew.
    let mut claimed = auth.clone();
    claimed.last_index = 5;
    let err = ballast_consensus::seed::seed(&storage, built(), &one, &alarms, &claimed)
        .expect_err("refused");
    assert!(err.contains("starts anew"), "{err}");

    ballast_consensus::seed::seed(&storage, built(), &one, &alarms, &auth).expect("seeds");
    let start = || {
        let config = ShardConfig {
            storage: Some(storage.clone()),
            ..ShardConfig::default()
        };
        let (node_auth, node_alarms) = (config.auth.clone(), config.alarms.clone());
        (Shard::start(config), node_auth, node_alarms)
    };
    let (mut shard, node_auth, node_alarms) = start();
    assert_eq!(read(&shard, 0).await.0, 6);
    assert_eq!(*node_auth.view(), auth);
    assert_eq!(node_alarms.table(), alarms);
    assert!(node_alarms.nospace());

    // Changes apply on top of the seeded state, with the seeded checks: alice is no admin.
    let by = |by: &str, cmd: AuthCommand| Request::Auth { by: by.into(), cmd };
    let answer = |reply: ballast_consensus::Reply| match reply.response {
        Response::Auth(outcome) => outcome,
        other => panic!("auth answered {other:?}"),
    };
    let denied = shard
        .call(by("alice", AuthCommand::RoleAdd { name: "x".into() }))
        .await
        .expect("applied");
    assert_eq!(answer(denied), Err(AuthError::PermissionDenied));
    let added = shard
        .call(by("root", AuthCommand::RoleAdd { name: "x".into() }))
        .await
        .expect("applied");
    assert_eq!(answer(added), Ok(AuthAnswer::Done));
    let after = node_auth.state();
    assert_eq!(after.revision, 8);
    assert!(after.roles.contains_key("x") && after.roles.contains_key("reader"));
    shard.stop();

    // After a restart (from the log after the seeded checkpoint), all of it is still there.
    let (shard, node_auth, node_alarms) = start();
    assert_eq!(read(&shard, 0).await.0, 6);
    assert_eq!(node_auth.state(), after);
    assert!(node_alarms.contains(nospace));
}
