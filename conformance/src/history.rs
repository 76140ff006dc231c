//! A varied history written through the KV and Lease APIs, for the tests that move a store
//! through a snapshot file: `tests/snapshot.rs` (Ballast saved, restored into etcd) and
//! `tests/restore.rs` (etcd saved, restored into Ballast). Each compares what the two servers
//! then serve, so the history holds every kind of change a snapshot must carry:
//!
//! - leases: `l1` (300 s) with keys in both shards, `l2` (120 s) that gets a key after the
//!   compaction, `l3` (90 s) revoked with its key, and with [`History::keyless_lease`] a
//!   fourth (200 s) that never holds a key;
//! - three rounds of puts of [`SHARD0_KEYS`] and [`SHARD1_KEYS`] (overwrites), keys attached
//!   to `l1` and `l3`, a deletion, one txn putting [`History::txn_keys`] (one revision);
//! - `/app/mid`, whose revision is the compact revision, a deletion after it, the compaction
//!   (physical), `l3` revoked, a deleted key re-created with `l2` and another one re-created;
//! - the last change, [`Last`]: an overwrite, or a put and its deletion.
//!
//! With two shards (the Kubernetes preset) both shards hold changes at the same main revisions;
//! the keys are checked against [`shard_of`] before anything is written.

use anyhow::{ensure, Context, Result};
use ballast_proto::etcdserverpb::{
    kv_client::KvClient, lease_client::LeaseClient, request_op, CompactionRequest,
    DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest, PutRequest, RequestOp, TxnRequest,
};
use tonic::transport::Channel;

use crate::partition::shard_of;

/// Keys in shard 0 when a server runs two shards (and every key is, with one).
pub const SHARD0_KEYS: [&str; 3] = ["/app/config", "/registry/events/default/e1", "/app/lock"];
/// Keys in shard 1 when a server runs two shards.
pub const SHARD1_KEYS: [&str; 2] = ["/registry/pods/default/a", "/registry/pods/default/b"];

/// What the tests' histories differ in (module comment).
#[derive(Clone, Copy, Debug)]
pub struct History {
    /// Also grant a lease that never holds a key.
    pub keyless_lease: bool,
    /// The keys the one txn puts, at one revision.
    pub txn_keys: &'static [&'static str],
    pub last: Last,
}

/// The history's last change.
#[derive(Clone, Copy, Debug)]
pub enum Last {
    /// `/app/config` overwritten.
    Overwrite,
    /// `/app/last` put and deleted: the store's revision is a deletion's.
    Deletion,
}

/// A put of `key` with `value`, attached to `lease` (0: none).
pub fn put(key: &str, value: &str, lease: i64) -> PutRequest {
    PutRequest {
        key: key.as_bytes().to_vec().into(),
        value: value.as_bytes().to_vec().into(),
        lease,
        ..Default::default()
    }
}

fn delete(key: &str) -> DeleteRangeRequest {
    DeleteRangeRequest {
        key: key.as_bytes().to_vec().into(),
        ..Default::default()
    }
}

impl History {
    /// Writes the history through `ch`; returns the compact revision.
    pub async fn write(&self, ch: Channel) -> Result<i64> {
        for k in SHARD0_KEYS {
            ensure!(shard_of(k.as_bytes(), 2) == 0, "{k} is in shard 0");
        }
        for k in SHARD1_KEYS {
            ensure!(shard_of(k.as_bytes(), 2) == 1, "{k} is in shard 1");
        }
        let mut kv = KvClient::new(ch.clone());
        let mut lease = LeaseClient::new(ch);
        let grant = |ttl| LeaseGrantRequest { ttl, id: 0 };
        let l1 = lease.lease_grant(grant(300)).await?.into_inner().id;
        let l2 = lease.lease_grant(grant(120)).await?.into_inner().id;
        let l3 = lease.lease_grant(grant(90)).await?.into_inner().id;
        if self.keyless_lease {
            lease.lease_grant(grant(200)).await?;
        }
        for round in 0..3 {
            for k in SHARD0_KEYS.iter().chain(&SHARD1_KEYS) {
                kv.put(put(k, &format!("{k}-v{round}"), 0)).await?;
            }
        }
        kv.put(put(SHARD1_KEYS[0], "leased", l1)).await?;
        kv.put(put(SHARD0_KEYS[2], "leased-too", l1)).await?;
        kv.put(put("/app/doomed", "revoked with its lease", l3))
            .await?;
        kv.delete_range(delete(SHARD0_KEYS[1])).await?;
        kv.txn(TxnRequest {
            success: self
                .txn_keys
                .iter()
                .map(|k| RequestOp {
                    request: Some(request_op::Request::RequestPut(put(k, "txn", 0))),
                })
                .collect(),
            ..Default::default()
        })
        .await?;
        let mid = kv.put(put("/app/mid", "m", 0)).await?.into_inner();
        let compact = mid.header.context("header")?.revision;
        kv.delete_range(delete(SHARD1_KEYS[1])).await?;
        kv.compact(CompactionRequest {
            revision: compact,
            physical: true,
        })
        .await?;
        lease.lease_revoke(LeaseRevokeRequest { id: l3 }).await?;
        kv.put(put(SHARD1_KEYS[1], "re-created", l2)).await?;
        kv.put(put(SHARD0_KEYS[1], "back", 0)).await?;
        match self.last {
            Last::Overwrite => {
                kv.put(put(SHARD0_KEYS[0], "last", 0)).await?;
            }
            Last::Deletion => {
                kv.put(put("/app/last", "x", 0)).await?;
                kv.delete_range(delete("/app/last")).await?;
            }
        }
        Ok(compact)
    }
}
