//! What etcd 3.4's backend keeps in its bbolt file, and so what a Ballast snapshot writes
//! (checked byte for byte against files `etcdctl snapshot save` fetched from etcd 3.4.23):
//!
//! - bucket `key`: one entry per change the MVCC store holds. Key: the revision, 17 bytes:
//!   main as 8 bytes big-endian, `_`, sub as 8 bytes big-endian; a deletion appends `t`
//!   (18 bytes). Value: the marshalled `mvccpb.KeyValue` (a deletion's holds only the key).
//!   Big-endian revisions make byte order revision order.
//! - bucket `lease`: key the lease id as 8 bytes big-endian, value a marshalled
//!   `leasepb.Lease { ID = 1, TTL = 2, RemainingTTL = 3 }` (int64 fields; remaining 0 unless
//!   etcd checkpoints leases).
//! - bucket `meta`: `finishedCompactRev` and `scheduledCompactRev`, each a 17-byte revision
//!   (main = the compact revision, sub 0), once the store has been compacted; etcd also keeps
//!   `consistent_index` (its Raft applied index), which `etcdctl snapshot restore` rewrites.
//! - buckets `auth`, `authUsers`, `authRoles`: etcd's auth store, written by a snapshot from
//!   shard 0's auth state ([`auth_entries`], [`user_entry`], [`role_entry`]) and read by
//!   `ballast snapshot restore` (`restore.rs`). `auth` holds `authRevision` (8 bytes
//!   big-endian; 1 in a new store) and, once auth was enabled or disabled, `authEnabled` (one
//!   byte, 1 on, 0 off; etcd writes it only then, and reads its absence as off: a Ballast
//!   snapshot writes it only while auth is on). `authUsers` maps a user name to its
//!   marshalled `authpb.User { name = 1, password = 2 (the bcrypt hash), roles = 3 (sorted),
//!   options = 4 { no_password = 1 } }`; etcd 3.4.23 stores `options` for every user added
//!   through etcdctl, empty (`"\x00`) unless `--no-password`, and so does a snapshot.
//!   `authRoles` maps a role name to its `authpb.Role { name = 1, keyPermission = 2
//!   { permType = 1, key = 2, range_end = 3 } }`, permissions sorted by key; the `root` role
//!   is not stored unless added (granting it creates nothing, in etcd as in Ballast).
//! - bucket `alarm`: the alarms in force, keys the marshalled `etcdserverpb.AlarmMember
//!   { memberID = 1, alarm = 2 }`, values empty ([`alarm_key`]).
//! - buckets `cluster`, `members`, `members_removed`: etcd's cluster metadata. A snapshot
//!   carries what a new etcd 3.4 member holds there (`cluster`: `clusterVersion` = `3.4.0`)
//!   and no members (restore drops them anyway and the restored member writes its own).
//!
//! What etcd reads back (`mvcc.store.restore`): the key bucket in order; the first entry of a
//! key starts its generation with the entry's `create_revision` and `version`, later puts add
//! one to the version, a `t` entry ends the generation; the store's revision is the last
//! entry's main revision, or the finished compact revision when that is higher.

use ballast_consensus::auth::{Role, User};
use ballast_consensus::{AlarmMember, AuthState};
use ballast_engine::mvcc::export::HistoryEntry;
use ballast_engine::{LeaseId, Revision};
use ballast_proto::{authpb, etcdserverpb, mvccpb};
use bytes::Bytes;
use prost::Message;

pub const KEY_BUCKET: &[u8] = b"key";
pub const LEASE_BUCKET: &[u8] = b"lease";
pub const META_BUCKET: &[u8] = b"meta";
pub const FINISHED_COMPACT_REV: &[u8] = b"finishedCompactRev";
pub const SCHEDULED_COMPACT_REV: &[u8] = b"scheduledCompactRev";
pub const AUTH_BUCKET: &[u8] = b"auth";
pub const AUTH_USERS_BUCKET: &[u8] = b"authUsers";
pub const AUTH_ROLES_BUCKET: &[u8] = b"authRoles";
pub const ALARM_BUCKET: &[u8] = b"alarm";
pub const AUTH_ENABLED: &[u8] = b"authEnabled";
pub const AUTH_REVISION: &[u8] = b"authRevision";
/// A bucket's fixed entries: keys and values.
pub type Entries = &'static [(&'static [u8], &'static [u8])];

/// etcd 3.4's other buckets, with what a new member keeps in them.
pub const METADATA_BUCKETS: [(&[u8], Entries); 3] = [
    (b"cluster", &[(b"clusterVersion", b"3.4.0")]),
    (b"members", &[]),
    (b"members_removed", &[]),
];

/// Length of a revision key; a tombstone's is one more.
pub const REV_BYTES: usize = 17;
const TOMBSTONE_MARK: u8 = b't';

/// The key bucket's key for a change at `(main, sub)`.
pub fn rev_key(main: Revision, sub: i64, tombstone: bool) -> Vec<u8> {
    let mut k = Vec::with_capacity(REV_BYTES + 1);
    k.extend_from_slice(&(main as u64).to_be_bytes());
    k.push(b'_');
    k.extend_from_slice(&(sub as u64).to_be_bytes());
    if tombstone {
        k.push(TOMBSTONE_MARK);
    }
    k
}

/// The key bucket's value for a change.
pub fn kv_value(entry: &HistoryEntry) -> Vec<u8> {
    let kv = &entry.kv;
    let pb = if entry.tombstone {
        mvccpb::KeyValue {
            key: kv.key.clone(),
            ..mvccpb::KeyValue::default()
        }
    } else {
        mvccpb::KeyValue {
            key: kv.key.clone(),
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            value: kv.value.clone(),
            lease: kv.lease,
        }
    };
    pb.encode_to_vec()
}

/// The lease bucket's key and value for a lease granted `ttl` seconds.
pub fn lease_entry(id: LeaseId, ttl: i64) -> (Vec<u8>, Vec<u8>) {
    let mut value = Vec::with_capacity(22);
    for (field, n) in [(1u32, id), (2, ttl)] {
        if n != 0 {
            prost::encoding::encode_key(field, prost::encoding::WireType::Varint, &mut value);
            prost::encoding::encode_varint(n as u64, &mut value);
        }
    }
    (id.to_be_bytes().to_vec(), value)
}

/// A bucket's entries: (key, value), in key order.
pub type BucketEntries = Vec<(Vec<u8>, Vec<u8>)>;

/// The `auth` bucket's entries for `auth` (module comment: `authEnabled` only while on).
pub fn auth_entries(auth: &AuthState) -> BucketEntries {
    let mut out = Vec::with_capacity(2);
    if auth.enabled {
        out.push((AUTH_ENABLED.to_vec(), vec![1]));
    }
    out.push((AUTH_REVISION.to_vec(), auth.revision.to_be_bytes().to_vec()));
    out
}

/// The `authUsers` bucket's key and value for user `name`.
pub fn user_entry(name: &str, user: &User) -> (Vec<u8>, Vec<u8>) {
    let pb = authpb::User {
        name: Bytes::copy_from_slice(name.as_bytes()),
        password: user.password_hash.clone(),
        roles: user.roles.clone(),
        options: Some(authpb::UserAddOptions {
            no_password: user.no_password,
        }),
    };
    (name.as_bytes().to_vec(), pb.encode_to_vec())
}

/// The `authRoles` bucket's key and value for role `name`.
pub fn role_entry(name: &str, role: &Role) -> (Vec<u8>, Vec<u8>) {
    let pb = authpb::Role {
        name: Bytes::copy_from_slice(name.as_bytes()),
        key_permission: role
            .permissions
            .iter()
            .map(|p| authpb::Permission {
                perm_type: p.perm_type.0,
                key: p.key.clone(),
                range_end: p.range_end.clone(),
            })
            .collect(),
    };
    (name.as_bytes().to_vec(), pb.encode_to_vec())
}

/// The `alarm` bucket's key for an alarm in force (its value is empty).
pub fn alarm_key(m: &AlarmMember) -> Vec<u8> {
    etcdserverpb::AlarmMember {
        member_id: m.member_id,
        alarm: m.alarm.0,
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ballast_engine::KeyValue;
    use bytes::Bytes;

    #[test]
    fn revision_keys_sort_as_revisions() {
        assert_eq!(
            rev_key(0x0102, 3, false),
            [0, 0, 0, 0, 0, 0, 1, 2, b'_', 0, 0, 0, 0, 0, 0, 0, 3]
        );
        assert_eq!(rev_key(2, 0, true).len(), REV_BYTES + 1);
        assert_eq!(rev_key(2, 0, true)[REV_BYTES], b't');
        let mut keys = [
            rev_key(256, 0, false),
            rev_key(2, 1, true),
            rev_key(2, 0, false),
            rev_key(3, 0, false),
        ];
        keys.sort();
        assert_eq!(keys[0], rev_key(2, 0, false));
        assert_eq!(keys[3], rev_key(256, 0, false));
    }

    #[test]
    fn values_are_etcds_protobufs() {
        let entry = HistoryEntry {
            main: 5,
            sub: 0,
            tombstone: false,
            kv: KeyValue {
                key: Bytes::from_static(b"foo"),
                create_revision: 2,
                mod_revision: 5,
                version: 3,
                value: Bytes::from_static(b"bar"),
                lease: 0,
            },
        };
        // Fields in number order, zero fields left out (as gogoproto marshals them).
        assert_eq!(
            kv_value(&entry),
            b"\x0a\x03foo\x10\x02\x18\x05\x20\x03\x2a\x03bar".to_vec()
        );
        let tomb = HistoryEntry {
            tombstone: true,
            ..entry
        };
        assert_eq!(kv_value(&tomb), b"\x0a\x03foo".to_vec());
        let (k, v) = lease_entry(0x694d_77e2_d3a3_9a04, 60);
        assert_eq!(k, 0x694d_77e2_d3a3_9a04u64.to_be_bytes());
        let decoded = decode_lease(&v);
        assert_eq!(decoded, (0x694d_77e2_d3a3_9a04, 60));
    }

    fn decode_lease(mut b: &[u8]) -> (i64, i64) {
        let (mut id, mut ttl) = (0, 0);
        while !b.is_empty() {
            let (tag, wire) = prost::encoding::decode_key(&mut b).expect("key");
            assert_eq!(wire, prost::encoding::WireType::Varint);
            let n = prost::encoding::decode_varint(&mut b).expect("varint") as i64;
            match tag {
                1 => id = n,
                2 => ttl = n,
                other => panic!("field {other}"),
            }
        }
        (id, ttl)
    }
}
