//! The storage quota (`--quota-backend-bytes`) and the alarms' hold on writes, checked at the
//! client edge before a request is routed, as etcd 3.4 checks them:
//!
//! - Before a Put, a Txn or a LeaseGrant is proposed, the member compares its backend size in
//!   use plus the request's estimated cost with the quota ([`cost`]: a put costs 256 bytes plus
//!   its encoded size, a txn the larger of its two branches' top-level puts, a lease grant 64
//!   bytes). When `size + cost >= quota` the member raises the NOSPACE alarm for itself (a
//!   change to shard 0's alarm table, through its log, so every member learns it) and the
//!   request fails with etcd's `ResourceExhausted` "etcdserver: mvcc: database space
//!   exceeded". As in etcd, this also refuses a txn without puts once the backend is full.
//! - While any member's NOSPACE alarm is in force, a Put, a LeaseGrant and a Txn with a
//!   top-level put fail the same way on every member and shard (etcd's "capped" applier);
//!   reads, deletes, lease revokes, compaction and defragmentation go on, so an operator can
//!   free space and then disarm the alarm.
//! - While a CORRUPT alarm is in force, every write (Put, DeleteRange, a Txn that writes,
//!   Compact, LeaseGrant, LeaseRevoke) fails with `DataLoss` "etcdserver: corrupt cluster";
//!   reads go on.
//!
//! The member's backend size in use is the sum of its shards' (each shard publishes its own:
//! `ballast_consensus::state_machine::BackendSize`, which says why the quota counts the bytes
//! in use where etcd counts its whole file). A member learns of an alarm when its
//! replica of shard 0 applies it, so a member refuses writes a moment (one replication) after
//! the alarm is raised elsewhere, where etcd refuses them at apply time.
//!
//! Invariants: a quota of `None` (negative `--quota-backend-bytes`) never refuses; the alarm
//! raised is always this member's own.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ballast_consensus::{AlarmAction, AlarmMember, AlarmType, NodeAlarms, Request, Response};
use ballast_engine::{PutRequest, RequestOp, TxnRequest};
use tonic::Status;

use crate::router::Router;
use crate::status;

/// etcd's estimate of what storing one key costs besides its bytes.
pub const KV_OVERHEAD_BYTES: u64 = 256;
/// etcd's estimate of what storing one lease costs.
pub const LEASE_OVERHEAD_BYTES: u64 = 64;

/// The quota and what it is checked against.
#[derive(Clone, Debug)]
pub struct Quota {
    /// `None`: no quota (etcd's negative `--quota-backend-bytes`).
    pub limit_bytes: Option<u64>,
    /// The cluster's alarms as this member's replica of shard 0 applied them.
    pub alarms: Arc<NodeAlarms>,
    /// Each shard's published backend size in use.
    pub backend_bytes: Vec<Arc<AtomicU64>>,
    /// This member's id: the one a NOSPACE alarm raised here names.
    pub member_id: u64,
}

impl Quota {
    /// No quota, no alarms, no shards (tests).
    pub fn unlimited() -> Quota {
        Quota {
            limit_bytes: None,
            alarms: Arc::default(),
            backend_bytes: Vec::new(),
            member_id: 0,
        }
    }

    /// The quota as `Status.db_size_quota` and the `etcd_server_quota_backend_bytes` gauge
    /// report it: the bytes in force, or -1 with no quota (etcd reports its negative setting).
    pub fn reported_bytes(&self) -> i64 {
        self.limit_bytes
            .map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX))
    }

    /// The member's backend size in use: every shard's, added.
    pub fn backend_size(&self) -> u64 {
        self.backend_bytes
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .sum()
    }

    /// Whether `request` may be proposed (module comment); raises this member's NOSPACE alarm
    /// through `router` when the quota would be passed.
    /// The order is etcd's: its gRPC edge checks the quota before proposing, and the alarms
    /// act where entries are applied.
    pub async fn check(&self, router: &Router, request: &Request) -> Result<(), Status> {
        let cost = cost(request);
        if let (Some(cost), Some(limit)) = (cost, self.limit_bytes) {
            if self.backend_size().saturating_add(cost) >= limit {
                self.raise_nospace(router).await;
                return Err(status::no_space());
            }
        }
        if self.alarms.corrupt() && writes(request) {
            return Err(status::corrupt());
        }
        // Every put and lease grant costs something; a txn without puts costs nothing.
        if self.alarms.nospace() && cost.is_some_and(|c| c > 0) {
            return Err(status::no_space());
        }
        Ok(())
    }

    /// Raises NOSPACE for this member, unless it is in force already; waits for the change to
    /// apply, and ignores its failure (the write fails with NOSPACE either way, as in etcd).
    async fn raise_nospace(&self, router: &Router) {
        let member = AlarmMember {
            alarm: AlarmType::NOSPACE,
            member_id: self.member_id,
        };
        if self.alarms.contains(member) {
            return;
        }
        let raised = router
            .call(Request::Alarm {
                action: AlarmAction::Activate,
                member,
            })
            .await;
        match raised {
            Ok(reply) if matches!(reply.response, Response::Alarms(_)) => {}
            Ok(_) => tracing::warn!("raising the NOSPACE alarm: unexpected answer"),
            Err(err) => tracing::warn!(%err, "raising the NOSPACE alarm failed"),
        }
    }
}

/// What `request` is estimated to add to the backend (etcd's `backendQuota.Cost`), for the
/// requests the quota checks; `None` for the others.
pub fn cost(request: &Request) -> Option<u64> {
    match request {
        Request::Put(p) => Some(put_cost(p)),
        Request::Txn(t) => Some(txn_cost(t)),
        Request::LeaseGrant { .. } => Some(LEASE_OVERHEAD_BYTES),
        _ => None,
    }
}

fn put_cost(p: &PutRequest) -> u64 {
    KV_OVERHEAD_BYTES + put_encoded_len(p)
}

/// The larger of the two branches' costs, counting only their top-level puts (as etcd does:
/// a nested txn's puts are not counted).
fn txn_cost(t: &TxnRequest) -> u64 {
    let branch = |ops: &[RequestOp]| -> u64 {
        ops.iter()
            .map(|op| match op {
                RequestOp::Put(p) => put_cost(p),
                _ => 0,
            })
            .sum()
    };
    branch(&t.success).max(branch(&t.failure))
}

/// The size of etcd's `PutRequest` message encoding `p` (protobuf: key 1, value 2, lease 3,
/// prev_kv 4, ignore_value 5, ignore_lease 6; default values take no bytes).
fn put_encoded_len(p: &PutRequest) -> u64 {
    let bytes_field = |len: usize| -> u64 {
        if len == 0 {
            0
        } else {
            1 + varint_len(len as u64) + len as u64
        }
    };
    let lease = if p.lease == 0 {
        0
    } else {
        1 + varint_len(p.lease as u64)
    };
    let flags = [p.prev_kv, p.ignore_value, p.ignore_lease]
        .iter()
        .filter(|b| **b)
        .count() as u64;
    bytes_field(p.key.len()) + bytes_field(p.value.len()) + lease + 2 * flags
}

fn varint_len(v: u64) -> u64 {
    u64::from((64 - v.leading_zeros()).max(1).div_ceil(7))
}

/// Whether `request` changes the store (what a CORRUPT alarm refuses).
fn writes(request: &Request) -> bool {
    fn txn_writes(t: &TxnRequest) -> bool {
        t.success.iter().chain(&t.failure).any(|op| match op {
            RequestOp::Range(_) => false,
            RequestOp::Put(_) | RequestOp::DeleteRange(_) => true,
            RequestOp::Txn(t) => txn_writes(t),
        })
    }
    match request {
        Request::Put(_)
        | Request::DeleteRange(_)
        | Request::Compact { .. }
        | Request::LeaseGrant { .. }
        | Request::LeaseRevoke { .. } => true,
        Request::Txn(t) => txn_writes(t),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ballast_proto::etcdserverpb as pb;
    use bytes::Bytes;
    use prost::Message;

    fn put(key: &str, value_len: usize, lease: i64) -> PutRequest {
        PutRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::from(vec![7u8; value_len]),
            lease,
            ..PutRequest::default()
        }
    }

    #[test]
    fn put_cost_is_etcds_overhead_plus_the_encoded_request() {
        for (key, len, lease, prev_kv) in [
            ("", 0, 0, false),
            ("k", 1, 0, true),
            ("key", 127, 1, false),
            ("key", 128, -1, true),
            ("k", 300_000, i64::MAX, false),
        ] {
            let mut p = put(key, len, lease);
            p.prev_kv = prev_kv;
            p.ignore_lease = prev_kv;
            let encoded = pb::PutRequest {
                key: p.key.clone(),
                value: p.value.clone(),
                lease,
                prev_kv,
                ignore_value: false,
                ignore_lease: prev_kv,
            }
            .encoded_len() as u64;
            assert_eq!(put_encoded_len(&p), encoded, "{key:?} {len} {lease}");
            assert_eq!(cost(&Request::Put(p)), Some(256 + encoded));
        }
    }

    /// Two in-memory shards (`/a/` in shard 0, `/b/` in shard 1) sharing one node's alarm
    /// table, and a quota over their published sizes.
    fn node(limit_bytes: Option<u64>) -> (Router, Quota) {
        use crate::partition::{PartitionMap, Pin};
        use ballast_consensus::{ShardConfig, ShardHandle, ShardId};
        let map = PartitionMap::new(2, vec![Pin::new("/a/", 0), Pin::new("/b/", 1)]).unwrap();
        let alarms = Arc::new(NodeAlarms::default());
        let sizes: Vec<Arc<AtomicU64>> = (0..2).map(|_| Arc::default()).collect();
        let handles = (0..2)
            .map(|id| {
                let config = ShardConfig {
                    shard_id: ShardId(id),
                    tick: std::time::Duration::from_millis(10),
                    alarms: alarms.clone(),
                    backend_bytes: sizes[id as usize].clone(),
                    ..ShardConfig::default()
                };
                ShardHandle::spawn(&format!("quota-{id}"), config)
                    .unwrap()
                    .0
            })
            .collect();
        let quota = Quota {
            limit_bytes,
            alarms,
            backend_bytes: sizes,
            member_id: 42,
        };
        (Router::new(handles, map), quota)
    }

    async fn call(router: &Router, quota: &Quota, request: Request) -> Result<Response, Status> {
        quota.check(router, &request).await?;
        router
            .call(request)
            .await
            .map(|r| r.response)
            .map_err(crate::context::route_error)
    }

    fn put_req(key: &str, len: usize) -> Request {
        Request::Put(put(key, len, 0))
    }

    /// Waits (bounded) until the shards have published a size of at least `bytes`.
    async fn size_reaches(quota: &Quota, bytes: u64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while quota.backend_size() < bytes && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn passing_the_quota_raises_nospace_and_caps_every_shard() {
        let (router, quota) = node(Some(64 << 10));
        let mut accepted = 0;
        let refused = loop {
            assert!(accepted < 64, "no refusal after {accepted} puts");
            match call(&router, &quota, put_req(&format!("/a/{accepted}"), 4096)).await {
                Ok(_) => accepted += 1,
                Err(s) => break s,
            }
            // In memory the size is published by housekeeping: let it catch up.
            size_reaches(&quota, 4096 * accepted as u64).await;
        };
        assert!(accepted >= 8, "{accepted}");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            refused.message(),
            "etcdserver: mvcc: database space exceeded"
        );
        let raised = AlarmMember {
            alarm: AlarmType::NOSPACE,
            member_id: 42,
        };
        assert_eq!(quota.alarms.list(), vec![raised]);
        // Listed by shard 0, through the router.
        let listed = call(
            &router,
            &quota,
            Request::Alarm {
                action: AlarmAction::Get,
                member: AlarmMember::default(),
            },
        )
        .await
        .unwrap();
        assert!(matches!(listed, Response::Alarms(a) if a == vec![raised]));
        // Capped everywhere: a small put in the other shard, a lease grant, a txn with a put.
        for request in [
            put_req("/b/x", 1),
            Request::LeaseGrant { id: 0, ttl: 60 },
            Request::Txn(TxnRequest {
                success: vec![RequestOp::Put(put("/b/y", 1, 0))],
                ..TxnRequest::default()
            }),
        ] {
            let s = call(&router, &quota, request).await.unwrap_err();
            assert_eq!(s.code(), tonic::Code::ResourceExhausted);
        }
        // Deletes, reads and compaction go on.
        let delete = Request::DeleteRange(ballast_engine::DeleteRangeRequest {
            key: Bytes::from_static(b"/a/"),
            range_end: Bytes::from_static(b"/a0"),
            ..Default::default()
        });
        quota.check(&router, &delete).await.unwrap();
        let deleted = router.call(delete).await.unwrap();
        assert!(
            matches!(deleted.response, Response::DeleteRange(ref d) if d.deleted == accepted as i64)
        );
        call(
            &router,
            &quota,
            Request::Compact {
                revision: deleted.revision,
            },
        )
        .await
        .unwrap();
        // Disarmed, with the data gone: writes are taken again.
        let disarmed = call(
            &router,
            &quota,
            Request::Alarm {
                action: AlarmAction::Deactivate,
                member: raised,
            },
        )
        .await
        .unwrap();
        assert!(matches!(disarmed, Response::Alarms(a) if a == vec![raised]));
        assert!(!quota.alarms.nospace());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while quota.backend_size() > 32 << 10 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        call(&router, &quota, put_req("/b/z", 1)).await.unwrap();
    }

    #[tokio::test]
    async fn corrupt_refuses_writes_and_no_quota_refuses_nothing() {
        let (router, quota) = node(None);
        let corrupt = AlarmMember {
            alarm: AlarmType::CORRUPT,
            member_id: 7,
        };
        for _ in 0..2 {
            call(
                &router,
                &quota,
                Request::Alarm {
                    action: AlarmAction::Activate,
                    member: corrupt,
                },
            )
            .await
            .unwrap();
        }
        assert!(quota.alarms.corrupt());
        for request in [
            put_req("/a/x", 1),
            Request::DeleteRange(ballast_engine::DeleteRangeRequest {
                key: Bytes::from_static(b"/b/x"),
                ..Default::default()
            }),
            Request::Compact { revision: 1 },
            Request::LeaseRevoke { id: 1 },
        ] {
            let s = call(&router, &quota, request).await.unwrap_err();
            assert_eq!(s.code(), tonic::Code::DataLoss);
            assert_eq!(s.message(), "etcdserver: corrupt cluster");
        }
        let read = call(
            &router,
            &quota,
            Request::Range(ballast_engine::RangeRequest {
                key: Bytes::from_static(b"/a/x"),
                ..Default::default()
            }),
        )
        .await;
        assert!(read.is_ok());
        call(
            &router,
            &quota,
            Request::Alarm {
                action: AlarmAction::Deactivate,
                member: corrupt,
            },
        )
        .await
        .unwrap();
        // No quota: a put far larger than any size is taken.
        call(&router, &quota, put_req("/a/big", 1 << 20))
            .await
            .unwrap();
        assert_eq!(quota.reported_bytes(), -1);
    }

    #[test]
    fn txn_cost_is_the_larger_branch_of_top_level_puts() {
        let (a, b) = (put("a", 10, 0), put("bb", 100, 0));
        let t = TxnRequest {
            compare: vec![],
            success: vec![RequestOp::Put(a.clone()), RequestOp::Put(a.clone())],
            failure: vec![
                RequestOp::Put(b.clone()),
                RequestOp::Txn(TxnRequest {
                    success: vec![RequestOp::Put(b.clone())],
                    ..TxnRequest::default()
                }),
            ],
        };
        assert_eq!(
            cost(&Request::Txn(t)),
            Some((2 * put_cost(&a)).max(put_cost(&b)))
        );
        assert_eq!(cost(&Request::Txn(TxnRequest::default())), Some(0));
        assert_eq!(
            cost(&Request::LeaseGrant { id: 0, ttl: 5 }),
            Some(LEASE_OVERHEAD_BYTES)
        );
        assert_eq!(cost(&Request::Compact { revision: 1 }), None);
    }
}
