//! The router: the one place in the server that knows there are several shards. Services hand
//! it a [`Request`]; it sends the request to the shard that owns its keys (the partition map),
//! or splits it over several and puts the answers together.
//!
//! What a request becomes (design.md §4, §5, §8):
//! - Put, a DeleteRange or a Txn whose keys lie in one shard: that shard, unchanged. Every
//!   request Kubernetes makes is such a request. A DeleteRange or Txn whose ranges may reach
//!   several shards runs in the one shard that holds keys of its ranges and takes its puts,
//!   when there is one (`Router::narrow`: so `etcdctl del --prefix ""` works while keys live in
//!   one shard); otherwise it is refused ([`RouteError::CrossShard`], gRPC FailedPrecondition
//!   naming the shards): no cross-shard atomicity exists, and half a delete would be worse
//!   than none.
//! - A Range over several shards: a scatter-gather read at one revision `R` (the request's, or
//!   the highest revision any shard has answered with). A shard below `R` first applies an
//!   `Advance` to `R`; each shard is read at `R`, and the answers are merged as one store
//!   would have answered (key order, then the request's sort; limit, `more`, `count`).
//! - Compact(R), Hash, HashKV: every shard, after advancing the ones below the revision.
//! - Leases: shard 0 owns the lease table (ids, TTLs, deadlines, keep-alives). A grant is made
//!   in shard 0 first, then with the same id in every other shard, so any shard can attach its
//!   keys; a revoke runs in the other shards first and in shard 0 last, so a revoke cut short
//!   leaves the lease alive in shard 0, where it expires again. Shard 0 reports expired leases
//!   on a channel ([`LeaseExpiry::Report`]) and the router revokes them everywhere; the other
//!   shards keep no deadlines ([`LeaseExpiry::Ignore`]).
//! - Status: the shards' figures put together (revision: the highest; sizes and counts: sums).
//! - Alarm (list, activate, deactivate): shard 0, which holds the cluster's alarm table.
//!
//! Revisions: each shard counts its own; the router remembers the highest revision each shard
//! has answered with, and every [`ALIGN_INTERVAL`] advances the shards behind the highest one,
//! so revisions stay comparable across shards (Lamport-style). With one shard nothing is
//! split, advanced or merged: every request goes to shard 0 as it is, and revisions are
//! exactly etcd's.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ballast_consensus::{
    MembershipChange, MembershipError, NodeId, RaftMember, Reply, Request, Response, ShardError,
    ShardHandle, ShardStatus, TransferError,
};
use ballast_engine::{
    sort_range_kvs, Error as EngineError, LeaseId, RangeRequest, RangeResponse, RequestOp,
    Revision, SortTarget, TxnRequest,
};
use bytes::Bytes;
use futures::future::join_all;
use tokio::sync::mpsc;

use crate::partition::{PartitionMap, ShardSet};

/// How often shards behind the highest revision are advanced to it.
pub const ALIGN_INTERVAL: Duration = Duration::from_millis(100);
/// Expired leases reported by shard 0 and not yet revoked, at most.
pub const EXPIRED_LEASES_MAX: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("shard {shard}: {source}")]
    Shard { shard: usize, source: ShardError },
    /// A request that must be atomic touches several shards.
    #[error(
        "ballast: {what} spans shards {shards}; a {what} must keep its keys in one shard \
         (keys under /registry/<resource>/ are spread over shards by resource; see --partition)"
    )]
    CrossShard { what: &'static str, shards: String },
}

impl RouteError {
    /// The shard answered that the lease does not exist (etcd answers some lease requests for
    /// an unknown lease without an error, and a revoke skips shards that never had it).
    pub fn is_lease_not_found(&self) -> bool {
        matches!(
            self,
            RouteError::Shard {
                source: ShardError::Engine(EngineError::LeaseNotFound { .. }),
                ..
            }
        )
    }

    fn engine(shard: usize, err: EngineError) -> RouteError {
        RouteError::Shard {
            shard,
            source: ShardError::Engine(err),
        }
    }
}

/// The way to every shard; cheap to clone.
#[derive(Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Vec<ShardHandle>,
    map: PartitionMap,
    /// The highest revision each shard has answered with.
    revisions: Vec<AtomicI64>,
    /// Whether other members write to these shards too (a cluster): then the answers this
    /// router saw do not tell every shard's revision.
    clustered: bool,
}

impl Router {
    /// A router over `shards`, placed by `map` (which must count as many shards), on a single
    /// node: every write to them goes through this router.
    pub fn new(shards: Vec<ShardHandle>, map: PartitionMap) -> Router {
        Router::build(shards, map, false)
    }

    /// A router over this member's replicas of a cluster's shards.
    pub fn for_cluster(shards: Vec<ShardHandle>, map: PartitionMap) -> Router {
        Router::build(shards, map, true)
    }

    fn build(shards: Vec<ShardHandle>, map: PartitionMap, clustered: bool) -> Router {
        assert_eq!(
            shards.len(),
            map.shards(),
            "one handle per shard of the map"
        );
        let revisions = shards.iter().map(|_| AtomicI64::new(0)).collect();
        Router {
            inner: Arc::new(Inner {
                shards,
                map,
                revisions,
                clustered,
            }),
        }
    }

    pub fn shard_count(&self) -> usize {
        self.inner.shards.len()
    }

    pub fn shard(&self, shard: usize) -> &ShardHandle {
        &self.inner.shards[shard]
    }

    pub fn map(&self) -> &PartitionMap {
        &self.inner.map
    }

    /// The shards a watch of `[key, range_end)` must be registered in.
    pub fn shards_of_range(&self, key: &[u8], range_end: &[u8]) -> ShardSet {
        if self.shard_count() == 1 {
            return ShardSet::one(0);
        }
        nonempty(self.inner.map.shards_of_range(key, range_end))
    }

    /// The highest revision any shard has answered with.
    pub fn max_revision(&self) -> Revision {
        self.inner
            .revisions
            .iter()
            .map(|r| r.load(Ordering::Acquire))
            .max()
            .unwrap_or(0)
    }

    /// Makes a membership change in every shard's group, shard 0 first (its membership is the
    /// cluster's), and returns shard 0's members after it. A later shard where the change is
    /// already in effect (the change run again after it failed part way) is not an error:
    /// shard 0 took it, so the member exists (add), is gone (remove) or votes (promote) there.
    pub async fn change_membership(
        &self,
        change: MembershipChange,
    ) -> Result<Vec<RaftMember>, RouteError> {
        let mut members = Vec::new();
        // A promote that shard 0 already made (an earlier try failed in a later shard) goes on
        // to the others; it is "not a learner" only if no shard still had it as one.
        let mut already_voter = false;
        let mut promoted_somewhere = false;
        for shard in 0..self.shard_count() {
            let answer = self
                .call_shard(shard, Request::Membership(change.clone()))
                .await;
            match answer {
                Ok(Reply {
                    response: Response::Members(m),
                    ..
                }) => {
                    promoted_somewhere = true;
                    if shard == 0 {
                        members = m;
                    }
                }
                Err(RouteError::Shard {
                    source: ShardError::Membership(MembershipError::NotLearner),
                    ..
                }) if shard == 0 && matches!(change, MembershipChange::Promote { .. }) => {
                    already_voter = true;
                }
                Ok(_) => {
                    return Err(RouteError::Shard {
                        shard,
                        source: ShardError::Stopped,
                    })
                }
                Err(RouteError::Shard {
                    source:
                        ShardError::Membership(
                            MembershipError::NotFound
                            | MembershipError::NotLearner
                            | MembershipError::PeerUrlExists
                            | MembershipError::IdExists,
                        ),
                    ..
                }) if shard > 0 => {}
                Err(e) => return Err(e),
            }
        }
        if already_voter {
            if !promoted_somewhere {
                return Err(RouteError::Shard {
                    shard: 0,
                    source: ShardError::Membership(MembershipError::NotLearner),
                });
            }
            let status = self.call_shard(0, Request::Status).await?;
            if let Response::Status(s) = status.response {
                members = s.members;
            }
        }
        Ok(members)
    }

    /// Hands shard 0's leadership to member `to` (etcd's `MoveLeader`): the other shards'
    /// leaders follow shard 0's by the placement rule (`ballast_consensus::placement`).
    pub async fn move_leader(&self, to: NodeId) -> Result<(), TransferError> {
        self.inner.shards[0].move_leader(to).await
    }

    /// One request to one shard; remembers the revision it answers with.
    pub async fn call_shard(&self, shard: usize, request: Request) -> Result<Reply, RouteError> {
        let reply = self.inner.shards[shard]
            .call(request)
            .await
            .map_err(|source| RouteError::Shard { shard, source })?;
        self.inner.revisions[shard].fetch_max(reply.revision, Ordering::AcqRel);
        Ok(reply)
    }

    /// Serves a client request (see the module comment for what each becomes).
    pub async fn call(&self, request: Request) -> Result<Reply, RouteError> {
        if self.shard_count() == 1 && !matches!(request, Request::Status) {
            return self.call_shard(0, request).await;
        }
        let map = &self.inner.map;
        match request {
            Request::Put(ref p) => {
                let shard = map.shard_of(&p.key);
                self.call_shard(shard, request).await
            }
            Request::DeleteRange(ref d) => {
                let shards = nonempty(map.shards_of_range(&d.key, &d.range_end));
                let shard = match shards.single() {
                    Some(shard) => shard,
                    None => {
                        let touched = [Touch::Range {
                            key: &d.key,
                            range_end: &d.range_end,
                            revision: 0,
                        }];
                        self.narrow(&touched, shards, "delete range").await?
                    }
                };
                self.call_shard(shard, request).await
            }
            Request::Txn(ref t) => {
                let shards = nonempty(map.shards_of_txn(t));
                let shard = match shards.single() {
                    Some(shard) => shard,
                    None => {
                        let mut touched = Vec::new();
                        txn_touches(t, &mut touched);
                        self.narrow(&touched, shards, "txn").await?
                    }
                };
                self.call_shard(shard, request).await
            }
            Request::Range(r) => self.range(r).await,
            Request::Compact { revision } => self.compact(revision).await,
            Request::Advance { to } => {
                self.advance(ShardSet::all(self.shard_count()), to).await?;
                Ok(Reply {
                    revision: self.max_revision(),
                    response: Response::Advance,
                })
            }
            Request::LeaseGrant { id, ttl } => self.lease_grant(id, ttl).await,
            Request::LeaseRevoke { id } => self.lease_revoke(id).await,
            Request::LeaseTimeToLive { id, keys } => self.lease_time_to_live(id, keys).await,
            Request::LeaseKeepAlive { .. } | Request::LeaseLeases => {
                self.call_shard(0, request).await
            }
            // Shard 0 holds the cluster's alarm table.
            Request::Alarm { .. } | Request::Auth { .. } => self.call_shard(0, request).await,
            Request::Hash => self.hash().await,
            Request::HashKv { revision } => self.hash_kv(revision).await,
            // One shard's history: a snapshot reads each shard through `call_shard`.
            Request::History { .. } => self.call_shard(0, request).await,
            Request::Status => self.status().await,
            Request::Membership(change) => {
                let members = self.change_membership(change).await?;
                Ok(Reply {
                    revision: self.max_revision(),
                    response: Response::Members(members),
                })
            }
        }
    }

    /// The server's status: every shard's, combined ([`combine_statuses`]), also with one shard,
    /// so a failure is always named the same way.
    async fn status(&self) -> Result<Reply, RouteError> {
        let mut all = Vec::with_capacity(self.shard_count());
        for (shard, status) in self.statuses().await.into_iter().enumerate() {
            all.push(status.map_err(|source| RouteError::Shard { shard, source })?);
        }
        Ok(Reply {
            revision: self.max_revision(),
            response: Response::Status(combine_statuses(&all)),
        })
    }

    /// Every shard's own status, in shard order.
    pub async fn statuses(&self) -> Vec<Result<ShardStatus, ShardError>> {
        let calls = (0..self.shard_count()).map(|shard| async move {
            match self.call_shard(shard, Request::Status).await {
                Ok(Reply {
                    response: Response::Status(s),
                    ..
                }) => Ok(s),
                Ok(_) => Err(ShardError::Stopped),
                Err(RouteError::Shard { source, .. }) => Err(source),
                Err(RouteError::CrossShard { .. }) => Err(ShardError::Stopped),
            }
        });
        join_all(calls).await
    }

    /// Makes every shard of `shards` reach revision `to` (an `Advance` where one is behind, as
    /// far as the router knows: a shard whose last answer was below `to`).
    pub async fn advance(&self, shards: ShardSet, to: Revision) -> Result<(), RouteError> {
        let behind = shards
            .iter()
            .filter(|&s| self.inner.revisions[s].load(Ordering::Acquire) < to);
        let calls = behind.map(|shard| self.call_shard(shard, Request::Advance { to }));
        for result in join_all(calls).await {
            result?;
        }
        Ok(())
    }

    /// The one shard a request whose ranges may reach several shards can run in, if there is
    /// one: the shards its puts write to, plus those holding a key of one of its ranges now (or
    /// at the range's revision). Running it there answers as one store would: a key no other
    /// shard holds reads the same in any shard (absent), and a key another shard gains
    /// meanwhile comes from a write concurrent with this request, which may be ordered after
    /// it. Several such shards: refused, naming them.
    async fn narrow(
        &self,
        touched: &[Touch<'_>],
        candidates: ShardSet,
        what: &'static str,
    ) -> Result<usize, RouteError> {
        let mut needed = ShardSet::new();
        for touch in touched {
            match *touch {
                Touch::Put { key } => needed.insert(self.inner.map.shard_of(key)),
                Touch::Range {
                    key,
                    range_end,
                    revision,
                } => {
                    let shards = self.inner.map.shards_of_range(key, range_end);
                    if revision > self.max_revision() {
                        // A future revision: the shard that runs the request says so.
                        continue;
                    }
                    if revision > 0 {
                        // A shard behind a past revision could not count at it.
                        self.advance(shards, revision).await?;
                    }
                    let counts = shards.iter().map(|shard| async move {
                        let count = RangeRequest {
                            key: key.clone(),
                            range_end: range_end.clone(),
                            revision,
                            count_only: true,
                            ..RangeRequest::default()
                        };
                        let held = match self.call_shard(shard, Request::Range(count)).await {
                            Ok(Reply {
                                response: Response::Range(r),
                                ..
                            }) => r.count > 0,
                            // A revision compacted away (compactions reach every shard at
                            // one revision) or past every shard: whichever shard runs the
                            // request answers etcd's error for it, so this range needs none.
                            Err(RouteError::Shard {
                                source:
                                    ShardError::Engine(
                                        EngineError::Compacted { .. }
                                        | EngineError::FutureRevision { .. },
                                    ),
                                ..
                            }) => false,
                            Ok(_) => true,
                            Err(err) => return Err(err),
                        };
                        Ok((shard, held))
                    });
                    for result in join_all(counts).await {
                        let (shard, held) = result?;
                        if held {
                            needed.insert(shard);
                        }
                    }
                }
            }
        }
        match needed.len() {
            0 => Ok(candidates.iter().next().unwrap_or(0)),
            1 => Ok(needed.iter().next().unwrap_or(0)),
            _ => Err(RouteError::CrossShard {
                what,
                shards: needed.to_string(),
            }),
        }
    }

    /// The revision a read over several shards runs at: the one asked for, or the highest any
    /// shard has answered with. A revision above that is etcd's future-revision error, once
    /// the shards' own revisions are asked (in a cluster, writes other members forwarded reach
    /// this member's shards without this router seeing their answers).
    async fn read_revision(&self, asked: Revision) -> Result<Revision, RouteError> {
        if asked > self.max_revision() {
            self.statuses().await;
        }
        let current = self.max_revision();
        if asked > current {
            return Err(RouteError::engine(
                0,
                EngineError::FutureRevision {
                    revision: asked,
                    current,
                },
            ));
        }
        Ok(if asked > 0 { asked } else { current })
    }

    /// Learns each shard's revision as of now, linearizably (a count of the range in each,
    /// after its read index): a read over several shards at the highest of them then sees
    /// every write acknowledged before it began, wherever in the cluster it was made.
    async fn learn_linearizable_revisions(
        &self,
        r: &RangeRequest,
        shards: ShardSet,
    ) -> Result<(), RouteError> {
        if !self.inner.clustered {
            return Ok(());
        }
        let probes = shards.iter().map(|shard| {
            let probe = RangeRequest {
                key: r.key.clone(),
                range_end: r.range_end.clone(),
                count_only: true,
                ..RangeRequest::default()
            };
            self.call_shard(shard, Request::Range(probe))
        });
        for result in join_all(probes).await {
            result?;
        }
        Ok(())
    }

    async fn range(&self, r: RangeRequest) -> Result<Reply, RouteError> {
        let shards = nonempty(self.inner.map.shards_of_range(&r.key, &r.range_end));
        if let Some(shard) = shards.single() {
            return self.call_shard(shard, Request::Range(r)).await;
        }
        if r.revision == 0 && !r.serializable {
            self.learn_linearizable_revisions(&r, shards).await?;
        }
        let at = self.read_revision(r.revision).await?;
        self.advance(shards, at).await?;
        // Sorting by value needs the values, even when the answer drops them.
        let keys_only = r.keys_only && r.sort_target != SortTarget::Value;
        let calls = shards.iter().map(|shard| {
            let part = RangeRequest {
                revision: at,
                keys_only,
                ..r.clone()
            };
            self.call_shard(shard, Request::Range(part))
        });
        let mut parts = Vec::new();
        for result in join_all(calls).await {
            match result?.response {
                Response::Range(part) => parts.push(part),
                other => return Err(unexpected(other)),
            }
        }
        // The header of a read at the current revision is the revision it read at, as one
        // store's would be: a client lists, then watches from the header's revision + 1, so a
        // later header (a write landed meanwhile in some shard) would hide that write from both.
        // A read at a revision asked for answers with the current one, as etcd does.
        let revision = if r.revision > 0 {
            self.max_revision()
        } else {
            at
        };
        Ok(Reply {
            revision,
            response: Response::Range(merge_ranges(&r, parts)),
        })
    }

    /// Compacts every shard at one revision (etcd's errors for a revision not above the last
    /// compaction or above the current one come from the shards and `read_revision`).
    async fn compact(&self, revision: Revision) -> Result<Reply, RouteError> {
        let all = ShardSet::all(self.shard_count());
        let at = if revision > 0 {
            let at = self.read_revision(revision).await?;
            self.advance(all, at).await?;
            at
        } else {
            revision
        };
        let calls = all
            .iter()
            .map(|shard| self.call_shard(shard, Request::Compact { revision: at }));
        for result in join_all(calls).await {
            result?;
        }
        Ok(Reply {
            revision: self.max_revision(),
            response: Response::Compact,
        })
    }

    async fn lease_grant(&self, id: LeaseId, ttl: i64) -> Result<Reply, RouteError> {
        let first = self.call_shard(0, Request::LeaseGrant { id, ttl }).await?;
        let Response::LeaseGrant { id: granted, .. } = first.response else {
            return Err(unexpected(first.response));
        };
        let calls = (1..self.shard_count())
            .map(|shard| self.call_shard(shard, Request::LeaseGrant { id: granted, ttl }));
        for result in join_all(calls).await {
            if let Err(err) = result {
                // The lease must not live in part of the shards: take it back everywhere.
                let _ = self.lease_revoke(granted).await;
                return Err(err);
            }
        }
        Ok(Reply {
            revision: self.max_revision(),
            ..first
        })
    }

    /// Revokes a lease in every shard, shard 0 last (see the module comment).
    pub async fn lease_revoke(&self, id: LeaseId) -> Result<Reply, RouteError> {
        let calls = (1..self.shard_count())
            .map(|shard| self.call_shard(shard, Request::LeaseRevoke { id }));
        for result in join_all(calls).await {
            match result {
                Err(err) if !err.is_lease_not_found() => return Err(err),
                _ => {}
            }
        }
        let last = self.call_shard(0, Request::LeaseRevoke { id }).await?;
        Ok(Reply {
            revision: self.max_revision(),
            ..last
        })
    }

    /// The lease's TTL from shard 0, its keys from every shard.
    async fn lease_time_to_live(&self, id: LeaseId, keys: bool) -> Result<Reply, RouteError> {
        let first = self
            .call_shard(0, Request::LeaseTimeToLive { id, keys })
            .await?;
        let Response::LeaseTimeToLive(mut ttl) = first.response else {
            return Err(unexpected(first.response));
        };
        if keys {
            let calls = (1..self.shard_count())
                .map(|shard| self.call_shard(shard, Request::LeaseTimeToLive { id, keys }));
            for result in join_all(calls).await {
                match result {
                    Ok(Reply {
                        response: Response::LeaseTimeToLive(other),
                        ..
                    }) => ttl.keys.extend(other.keys),
                    Ok(other) => return Err(unexpected(other.response)),
                    Err(err) if err.is_lease_not_found() => {}
                    Err(err) => return Err(err),
                }
            }
            ttl.keys.sort();
        }
        Ok(Reply {
            revision: self.max_revision(),
            response: Response::LeaseTimeToLive(ttl),
        })
    }

    /// One hash over every shard's: CRC-32C of their hashes in shard order.
    async fn hash(&self) -> Result<Reply, RouteError> {
        let calls = (0..self.shard_count()).map(|shard| self.call_shard(shard, Request::Hash));
        let mut bytes = Vec::new();
        for result in join_all(calls).await {
            match result?.response {
                Response::Hash(h) => bytes.extend_from_slice(&h.to_be_bytes()),
                other => return Err(unexpected(other)),
            }
        }
        Ok(Reply {
            revision: self.max_revision(),
            response: Response::Hash(crc32c::crc32c(&bytes)),
        })
    }

    /// Every shard's HashKV at one revision, combined as [`Router::hash`] combines hashes.
    async fn hash_kv(&self, revision: Revision) -> Result<Reply, RouteError> {
        let at = self.read_revision(revision).await?;
        let all = ShardSet::all(self.shard_count());
        self.advance(all, at).await?;
        let calls = all
            .iter()
            .map(|shard| self.call_shard(shard, Request::HashKv { revision: at }));
        let mut bytes = Vec::new();
        let mut compact_revision = -1;
        for result in join_all(calls).await {
            match result?.response {
                Response::HashKv(h) => {
                    bytes.extend_from_slice(&h.hash.to_be_bytes());
                    compact_revision = compact_revision.max(h.compact_revision);
                }
                other => return Err(unexpected(other)),
            }
        }
        Ok(Reply {
            revision: self.max_revision(),
            response: Response::HashKv(ballast_engine::HashKv {
                hash: crc32c::crc32c(&bytes),
                compact_revision,
                hash_revision: at,
            }),
        })
    }

    /// Learns every shard's revision (at start-up, before serving).
    pub async fn load_revisions(&self) -> Result<(), RouteError> {
        for (shard, status) in self.statuses().await.into_iter().enumerate() {
            status.map_err(|source| RouteError::Shard { shard, source })?;
        }
        Ok(())
    }

    /// Repairs what a crash between shards can leave of the lease table: a lease shard 0 holds
    /// that another shard lacks is granted there (with shard 0's TTL); a lease another shard
    /// holds that shard 0 lacks is revoked there (with its keys: shard 0 forgot it).
    pub async fn reconcile_leases(&self) -> Result<(), RouteError> {
        if self.shard_count() == 1 {
            return Ok(());
        }
        let owned = self.leases_of(0).await?;
        for shard in 1..self.shard_count() {
            let held = self.leases_of(shard).await?;
            for &id in owned.iter().filter(|id| !held.contains(id)) {
                let reply = self
                    .call_shard(0, Request::LeaseTimeToLive { id, keys: false })
                    .await?;
                if let Response::LeaseTimeToLive(t) = reply.response {
                    tracing::info!(lease_id = id, shard, "granting a lease the shard missed");
                    self.call_shard(
                        shard,
                        Request::LeaseGrant {
                            id,
                            ttl: t.granted_ttl,
                        },
                    )
                    .await?;
                }
            }
            for &id in held.iter().filter(|id| !owned.contains(id)) {
                tracing::info!(
                    lease_id = id,
                    shard,
                    "revoking a lease shard 0 no longer has"
                );
                self.call_shard(shard, Request::LeaseRevoke { id }).await?;
            }
        }
        Ok(())
    }

    async fn leases_of(&self, shard: usize) -> Result<Vec<LeaseId>, RouteError> {
        match self.call_shard(shard, Request::LeaseLeases).await?.response {
            Response::LeaseLeases(mut ids) => {
                ids.sort_unstable();
                Ok(ids)
            }
            other => Err(unexpected(other)),
        }
    }

    /// Revokes, in every shard, the leases shard 0 reports expired; runs until `stop` resolves
    /// or the channel closes (shard 0 stopped). It holds the router, so the shards' handles:
    /// the server stops it before waiting for the shards to end. While `paused()` (a CORRUPT
    /// alarm is raised: etcd refuses every lease revoke then) a reported lease is left as it
    /// is; shard 0 reports it again while it is still expired.
    pub async fn revoke_expired(
        self,
        mut expired: mpsc::Receiver<LeaseId>,
        paused: impl Fn() -> bool,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        loop {
            let id = tokio::select! {
                () = &mut stop => return,
                id = expired.recv() => match id {
                    Some(id) => id,
                    None => return,
                },
            };
            if paused() {
                tracing::debug!(lease_id = id, "a CORRUPT alarm is raised: not revoking");
                continue;
            }
            // A revoke waits for a leader up to the request timeout; a stop does not wait for
            // it (shard 0 reports the lease again after a restart).
            let revoked = tokio::select! {
                () = &mut stop => return,
                revoked = self.lease_revoke(id) => revoked,
            };
            if let Err(err) = revoked {
                // Shard 0 reports it again while it is still expired.
                tracing::debug!(lease_id = id, %err, "revoking an expired lease");
            }
        }
    }

    /// Keeps the shards' revisions within one [`ALIGN_INTERVAL`] of each other: every interval,
    /// a shard below the highest revision is advanced to it. Runs until `stop` resolves.
    pub async fn align(self, stop: impl std::future::Future<Output = ()>) {
        if self.shard_count() == 1 {
            return stop.await;
        }
        let mut tick = tokio::time::interval(ALIGN_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return,
                _ = tick.tick() => {}
            }
            let to = self.max_revision();
            // An advance waits for a leader up to the request timeout; a stop does not wait.
            let advanced = tokio::select! {
                () = &mut stop => return,
                advanced = self.advance(ShardSet::all(self.shard_count()), to) => advanced,
            };
            if let Err(err) = advanced {
                tracing::debug!(%err, "advancing shards behind revision {to}");
            }
        }
    }
}

/// A request over no shard at all (an empty or inverted range) is answered by shard 0, which
/// answers it as etcd does (nothing found, nothing deleted).
fn nonempty(shards: ShardSet) -> ShardSet {
    if shards.is_empty() {
        ShardSet::one(0)
    } else {
        shards
    }
}

/// What a request reads or writes, for [`Router::narrow`].
enum Touch<'a> {
    Put {
        key: &'a Bytes,
    },
    /// A compare, a range or a delete: `[key, range_end)` as etcd reads it, at `revision`
    /// (0: the current one).
    Range {
        key: &'a Bytes,
        range_end: &'a Bytes,
        revision: Revision,
    },
}

/// Everything a txn compares, reads and writes, in either branch, at any depth.
fn txn_touches<'a>(t: &'a TxnRequest, out: &mut Vec<Touch<'a>>) {
    for c in &t.compare {
        out.push(Touch::Range {
            key: &c.key,
            range_end: &c.range_end,
            revision: 0,
        });
    }
    for op in t.success.iter().chain(&t.failure) {
        match op {
            RequestOp::Put(p) => out.push(Touch::Put { key: &p.key }),
            RequestOp::Range(r) => out.push(Touch::Range {
                key: &r.key,
                range_end: &r.range_end,
                revision: r.revision,
            }),
            RequestOp::DeleteRange(d) => out.push(Touch::Range {
                key: &d.key,
                range_end: &d.range_end,
                revision: 0,
            }),
            RequestOp::Txn(t) => txn_touches(t, out),
        }
    }
}

fn unexpected(response: Response) -> RouteError {
    RouteError::Shard {
        shard: 0,
        source: ShardError::Failed {
            cause: format!("unexpected shard reply {response:?}"),
        },
    }
}

/// Several shards' answers to one range, read at one revision, as one store would answer: the
/// same keys, order and limit; `count` is the sum (counts ignore filters and limits), and
/// `more` says the limit cut something off in any shard or in the merge.
pub fn merge_ranges(r: &RangeRequest, parts: Vec<RangeResponse>) -> RangeResponse {
    let count = parts.iter().map(|p| p.count).sum();
    let mut more = parts.iter().any(|p| p.more);
    let mut kvs: Vec<_> = parts.into_iter().flat_map(|p| p.kvs).collect();
    kvs.sort_by(|a, b| a.key.cmp(&b.key));
    sort_range_kvs(&mut kvs, r);
    if let Ok(limit) = usize::try_from(r.limit) {
        if limit > 0 && kvs.len() > limit {
            kvs.truncate(limit);
            more = true;
        }
    }
    if r.keys_only {
        for kv in &mut kvs {
            kv.value = Bytes::new();
        }
    }
    RangeResponse { kvs, more, count }
}

/// The server's figures from its shards': shard 0's Raft and identity, the highest revisions,
/// the sums of sizes, queues and counts, and the first failure, as a sentence naming the
/// shard (`shard 1 stopped after a storage failure: ...`).
pub fn combine_statuses(all: &[ShardStatus]) -> ShardStatus {
    let Some(first) = all.first() else {
        return ShardStatus::default();
    };
    let mut s = first.clone();
    for o in &all[1..] {
        s.revision = s.revision.max(o.revision);
        s.compact_revision = s.compact_revision.max(o.compact_revision);
        s.size_bytes += o.size_bytes;
        s.backend_bytes += o.backend_bytes;
        s.backend_in_use_bytes += o.backend_in_use_bytes;
        s.watchers += o.watchers;
        s.queue_depth += o.queue_depth;
        s.writes_in_flight += o.writes_in_flight;
        s.entries_applied += o.entries_applied;
        s.is_leader &= o.is_leader;
        s.checkpoint_pending_changes += o.checkpoint_pending_changes;
        s.cached_keys += o.cached_keys;
        s.cached_records += o.cached_records;
        s.cache_loads += o.cache_loads;
        s.page_log_bytes += o.page_log_bytes;
        s.page_cache_bytes += o.page_cache_bytes;
        s.wal_syncs += o.wal_syncs;
        s.wal_records += o.wal_records;
        // Histograms and counters add up; leader changes stay shard 0's (the first).
        let (mine, theirs) = (&mut *s.etcd, &*o.etcd);
        mine.wal_fsync.merge(&theirs.wal_fsync);
        mine.backend_commit.merge(&theirs.backend_commit);
        mine.proposals_failed += theirs.proposals_failed;
        mine.ops.puts += theirs.ops.puts;
        mine.ops.deletes += theirs.ops.deletes;
        mine.ops.ranges += theirs.ops.ranges;
        mine.ops.txns += theirs.ops.txns;
    }
    s.failure = all.iter().enumerate().find_map(|(shard, o)| {
        o.failure
            .as_ref()
            .map(|f| format!("shard {shard} stopped after a storage failure: {f}"))
    });
    s
}

#[cfg(test)]
mod tests;
