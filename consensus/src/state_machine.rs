//! A shard's state machine: the MVCC store and the watcher registry it feeds, shared on the
//! shard's thread as `Rc<RefCell<ShardState>>` between openraft's apply step and the shard's
//! command loop (reads, watch commands). No borrow is ever held across an `.await`.
//!
//! Invariants:
//! - Entries are applied in log order, each exactly once; `last_applied` is the last one.
//! - Every write entry takes effect through [`ShardState::apply_command`], which notifies
//!   watchers of its events before the reply is sent, so a client that sees a write's reply
//!   and then creates a watch never misses that write's events.
//! - A refused write (an engine error) still consumes its log index and changes nothing.
//! - On a durable shard (`durable.rs`) a snapshot is a checkpoint: the store's changes since
//!   the last one are written to the page log as of the last applied entry, and the snapshot's
//!   data is that checkpoint ([`SnapshotData::Checkpoint`]). In memory, a snapshot is a full
//!   copy of the store ([`SnapshotData::Store`]) plus the applied log id and membership.
//!   Installing a copy replaces the store and makes every watcher catch up from history.
//! - A snapshot received from the leader (`snapshot.rs`) arrives whole before it is
//!   installed: in memory as a new store, on a durable shard as a new page log committed at
//!   the snapshot's log id ([`SnapshotData::Received`]). Installing the latter waits for a
//!   running checkpoint to end and keeps new ones from starting, then switches the shard to
//!   that page log (`durable.rs`); every watcher then catches up from history.
//! - A failed checkpoint or install latches [`ShardState::failure`]: the shard is stopped
//!   (fail-stop).
//! - Shard 0's state includes the cluster's alarm table (`alarms.rs`): applied from
//!   [`LogCommand::Alarm`] entries, saved in each checkpoint's facts as of the same applied
//!   entry as the store, and replaced by the table a received snapshot carries.
//! - [`ShardState::backend_bytes`] is the shard's backend size in use (the figure the storage
//!   quota is checked against, [`BackendSize`]), published after every applied batch,
//!   checkpoint and install.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ballast_engine::mvcc::image::RECORDS_PER_PAUSE;
use ballast_engine::mvcc::paging::Access;
use ballast_engine::{Error as EngineError, Store};
use futures::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};

use crate::alarms::{AlarmTable, NodeAlarms};
use crate::auth::{AuthState, NodeAuth};
use crate::codec::LogCommand;
use crate::durable::{encode_app, Durability};
use crate::network::ShardSnapshot;
use crate::shard::{Reply, Response};
use crate::stages::{Stages, WriteStages};
use crate::stats::Histogram;
use crate::types::{ApplyResult, LogId, ShardRaft, SnapshotMeta, StoredMembership};
use crate::watchers::Registry;

/// What a snapshot carries besides its metadata.
#[derive(Clone, Debug)]
pub enum SnapshotData {
    /// The durable checkpoint at the snapshot's last log id, in this shard's page log (sent
    /// to a follower by reading that page log, `snapshot.rs`).
    Checkpoint(ImageHandle),
    /// A whole copy of the store (in-memory shards).
    Store(Box<Store>),
    /// A snapshot received from the leader into a new page log, committed at the snapshot's
    /// last log id and not yet in use (durable shards; see the module comment).
    Received,
}

/// The durable side of a shard, as a snapshot names it.
#[derive(Clone)]
pub struct ImageHandle(pub Rc<dyn Durability>);

impl std::fmt::Debug for ImageHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ImageHandle")
    }
}

/// The state a shard's core owns.
pub struct ShardState {
    pub store: Store,
    pub watchers: Registry,
    pub last_applied: Option<LogId>,
    pub last_membership: StoredMembership,
    /// Lease deadlines are milliseconds on this clock (leader-local, as in etcd).
    pub started: Instant,
    /// Time spent applying one entry (store change and watcher notification), nanoseconds.
    pub apply_latency_ns: Histogram,
    pub entries_applied: u64,
    /// Where each write's time goes (`stages.rs`); the log store shares it.
    pub stages: Stages,
    current_snapshot: Option<ShardSnapshot>,
    /// The page-log image and WAL of a durable shard (`None`: in memory only).
    pub durable: Option<Rc<dyn Durability>>,
    pub checkpoints: CheckpointFigures,
    /// Store operations as etcd's mvcc counts them (`op_counts.rs`).
    pub ops: crate::op_counts::OpCounts,
    /// Why the shard stopped (a failed checkpoint); every later request is refused with it.
    pub failure: Option<String>,
    /// Requests loading data from the page log right now (housekeeping does not evict
    /// meanwhile, or a read larger than the cache bound would never finish loading).
    pub loading: usize,
    /// The snapshot being received from the leader, between its chunks (`snapshot.rs`).
    pub incoming: Option<crate::snapshot::Incoming>,
    /// A received snapshot is being installed: no checkpoint starts meanwhile.
    installing: bool,
    /// The cluster's alarm table as this replica applied it (shard 0: the node's shared view;
    /// other shards never apply alarm entries and keep an empty one of their own).
    pub alarms: Arc<NodeAlarms>,
    /// The cluster's auth state as this replica applied it (`auth.rs`; shard 0: the node's
    /// shared view, other shards an unused one of their own).
    pub auth: Arc<NodeAuth>,
    /// The alarm table a snapshot being installed carries, set just before the install.
    /// ... and the auth state (`auth.rs`).
    pub received_alarms: Option<(AlarmTable, AuthState)>,
    /// Where the shard publishes its backend size in use (see the module comment).
    pub backend_bytes: Arc<AtomicU64>,
}

/// A shard's backend size (etcd's `db_size`) and the part of it in use (`db_size_in_use`),
/// which is what the storage quota counts.
///
/// On a durable shard, the size is the page-log bytes written (pages appended to segments
/// the cleaner has not reclaimed yet, live or dead) plus the superblock file; in use, the
/// live pages only. Both add the key and value bytes applied since the last durable
/// checkpoint (not yet in the page log). The quota counts the bytes in use because Ballast
/// reclaims dead pages itself (the cleaner, at checkpoints), where an etcd member's file
/// keeps its free pages until a defragmentation: after deletes or a compaction, the space
/// counts as free once the next checkpoint has written the change. In memory: the store's
/// approximate size, both figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendSize {
    pub total_bytes: u64,
    pub in_use_bytes: u64,
}

/// What the shard's checkpoints did so far.
#[derive(Clone, Debug, Default)]
pub struct CheckpointFigures {
    pub running: bool,
    pub count: u64,
    pub last_at: Option<Instant>,
    /// Backend (1-based) log index of the last checkpoint.
    pub last_index: u64,
    pub last_duration_ms: u64,
    /// Each checkpoint's page-log write and sync (`Durability::checkpoint`).
    pub commit_durations: ballast_engine::histogram::DiskHistogram,
    /// Key and value bytes of the running checkpoint's changes (0 when none runs): taken out
    /// of the store's journal and not yet durable in the page log.
    pub inflight_bytes: u64,
}

pub type Shared = Rc<RefCell<ShardState>>;

impl ShardState {
    pub fn new(store: Store) -> ShardState {
        ShardState {
            store,
            watchers: Registry::default(),
            last_applied: None,
            last_membership: StoredMembership::default(),
            started: Instant::now(),
            apply_latency_ns: Histogram::new(),
            entries_applied: 0,
            stages: WriteStages::new_shared(),
            current_snapshot: None,
            durable: None,
            checkpoints: CheckpointFigures::default(),
            ops: crate::op_counts::OpCounts::default(),
            failure: None,
            loading: 0,
            incoming: None,
            installing: false,
            alarms: Arc::default(),
            auth: Arc::default(),
            received_alarms: None,
            backend_bytes: Arc::default(),
        }
    }

    /// The shard's backend size now (see [`BackendSize`]). Costs O(1) on a durable shard and
    /// a pass over the key index in memory.
    pub fn backend_size(&self) -> BackendSize {
        match &self.durable {
            Some(d) => {
                let pages = d.page_stats();
                let unwritten =
                    self.store.pending_changes().payload_bytes + self.checkpoints.inflight_bytes;
                BackendSize {
                    total_bytes: pages.written_bytes
                        + 2 * ballast_engine::btree::SLOT_SIZE as u64
                        + unwritten,
                    in_use_bytes: pages.live_bytes + unwritten,
                }
            }
            None => {
                let bytes = self.store.approximate_size_bytes();
                BackendSize {
                    total_bytes: bytes,
                    in_use_bytes: bytes,
                }
            }
        }
    }

    /// Publishes the backend size in use for the node's quota check
    /// ([`ShardState::backend_bytes`]).
    pub fn publish_backend_size(&self) {
        self.backend_bytes
            .store(self.backend_size().in_use_bytes, Ordering::Relaxed);
    }

    /// The state of a durable shard as opened: the store and the Raft facts of its last
    /// checkpoint, which is also its current snapshot.
    pub fn durable(
        store: Store,
        last_applied: Option<LogId>,
        membership: StoredMembership,
        durable: Rc<dyn Durability>,
    ) -> ShardState {
        let mut st = ShardState::new(store);
        st.current_snapshot = last_applied.map(|_| ShardSnapshot {
            meta: SnapshotMeta {
                last_log_id: last_applied,
                last_membership: membership.clone(),
            },
            snapshot: SnapshotData::Checkpoint(ImageHandle(durable.clone())),
        });
        st.checkpoints.last_index = last_applied.map_or(0, |id| id.index + 1);
        st.last_applied = last_applied;
        st.last_membership = membership;
        st.durable = Some(durable);
        st
    }

    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Applies one write to the store and hands its events to the watchers.
    pub fn apply_command(&mut self, cmd: LogCommand) -> Result<Reply, EngineError> {
        let now = self.now_ms();
        let store = &mut self.store;
        let (revision, response, events) = match cmd {
            LogCommand::Put(r) => {
                let a = store.put(&r)?;
                self.ops.put(&r);
                (a.revision, Response::Put(a.response), a.events)
            }
            LogCommand::DeleteRange(r) => {
                let a = store.delete_range(&r)?;
                self.ops.delete(&r);
                (a.revision, Response::DeleteRange(a.response), a.events)
            }
            LogCommand::Txn(r) => {
                let a = store.txn(&r)?;
                self.ops.txn(&r, &a.response, crate::shard::txn_writes(&r));
                (a.revision, Response::Txn(a.response), a.events)
            }
            LogCommand::Compact { revision } => {
                let a = store.compact(revision)?;
                (a.revision, Response::Compact, a.events)
            }
            LogCommand::LeaseGrant { id, ttl } => {
                let (id, ttl) = store.lease_grant(id, ttl, now)?;
                (
                    store.revision(),
                    Response::LeaseGrant { id, ttl },
                    Vec::new(),
                )
            }
            LogCommand::LeaseRevoke { id } => {
                let a = store.lease_revoke(id)?;
                (a.revision, Response::LeaseRevoke, a.events)
            }
            // No key changes, so no event: watchers only learn the new revision from their
            // next progress notification or the next write.
            LogCommand::Advance { to } => {
                let a = store.advance(to);
                (a.revision, Response::Advance, a.events)
            }
            // The alarm table is not part of the keyspace: no revision, no event.
            LogCommand::Alarm { action, member } => (
                store.revision(),
                Response::Alarms(self.alarms.apply(action, member)),
                Vec::new(),
            ),
            // Not part of the keyspace either. `apply_entry` applies log entries with their
            // index (a simple token's suffix); here there is none.
            LogCommand::Auth { by, cmd } => (
                store.revision(),
                Response::Auth(self.auth.apply(&by, &cmd, 0)),
                Vec::new(),
            ),
        };
        self.watchers.notify(revision, &events);
        Ok(Reply { revision, response })
    }

    fn apply_entry(
        &mut self,
        payload: EntryPayload<LogCommand, u64, openraft::impls::BasicNode>,
        log_id: LogId,
    ) -> ApplyResult {
        let started = Instant::now();
        self.last_applied = Some(log_id);
        let result = match payload {
            // The index completes a simple token and orders replays (`auth.rs`).
            EntryPayload::Normal(LogCommand::Auth { by, cmd }) => Ok(Reply {
                revision: self.store.revision(),
                response: Response::Auth(self.auth.apply(&by, &cmd, log_id.index + 1)),
            }),
            EntryPayload::Normal(cmd) => self.apply_command(cmd),
            EntryPayload::Blank => Ok(Reply {
                revision: self.store.revision(),
                response: Response::Noop,
            }),
            EntryPayload::Membership(m) => {
                self.last_membership = StoredMembership::new(Some(log_id), m);
                Ok(Reply {
                    revision: self.store.revision(),
                    response: Response::Noop,
                })
            }
        };
        self.entries_applied += 1;
        self.apply_latency_ns
            .record(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX));
        result
    }

    fn snapshot(&mut self) -> ShardSnapshot {
        let snapshot = ShardSnapshot {
            meta: SnapshotMeta {
                last_log_id: self.last_applied,
                last_membership: self.last_membership.clone(),
            },
            snapshot: SnapshotData::Store(Box::new(self.store.clone())),
        };
        self.current_snapshot = Some(snapshot.clone());
        snapshot
    }
}

/// What applying `cmd` reads from the store.
pub fn access_of(cmd: &LogCommand) -> Option<Access<'_>> {
    match cmd {
        LogCommand::Put(r) => Some(Access::Put(r)),
        LogCommand::DeleteRange(r) => Some(Access::DeleteRange(r)),
        LogCommand::Txn(r) => Some(Access::Txn(r)),
        LogCommand::LeaseRevoke { id } => Some(Access::LeaseRevoke(*id)),
        LogCommand::Compact { .. }
        | LogCommand::LeaseGrant { .. }
        | LogCommand::Advance { .. }
        | LogCommand::Alarm { .. }
        | LogCommand::Auth { .. } => None,
    }
}

/// Brings into memory what `access` reads (`ballast_engine::mvcc::paging`). When this returns
/// `Ok`, the store held all of it at its last synchronous check, so a caller that runs the
/// request before its next `.await` reads only memory. A failed page-log read stops the shard
/// (fail-stop): the failure is latched and returned.
pub async fn make_resident(shared: &Shared, access: &Access<'_>) -> Result<(), String> {
    /// Counts the request among those loading while it lives.
    struct Loading<'a>(&'a Shared);
    impl Drop for Loading<'_> {
        fn drop(&mut self) {
            self.0.borrow_mut().loading -= 1;
        }
    }
    let mut guard = None;
    for _ in 0..MAKE_RESIDENT_ROUNDS_MAX {
        let (missing, durable) = {
            let mut st = shared.borrow_mut();
            if let Some(failure) = &st.failure {
                return Err(failure.clone());
            }
            match st.store.missing(access) {
                None => return Ok(()),
                Some(m) => (m, st.durable.clone()),
            }
        };
        if guard.is_none() {
            shared.borrow_mut().loading += 1;
            guard = Some(Loading(shared));
        }
        let durable = durable.expect("a paged store belongs to a durable shard");
        let fetched = durable.fetch(missing).await;
        let mut st = shared.borrow_mut();
        match fetched {
            Ok(loaded) => st.store.insert_loaded(loaded),
            Err(err) => {
                let failure = format!("page log read failed: {err}");
                tracing::error!(%failure, "shard stops (fail-stop)");
                st.failure = Some(failure.clone());
                return Err(failure);
            }
        }
    }
    // Each round loads what the previous one found missing; so many rounds mean the cache and
    // the page log disagree (a bug), not a slow disk.
    let failure = format!("page log reads did not settle after {MAKE_RESIDENT_ROUNDS_MAX} rounds");
    tracing::error!(%failure, "shard stops (fail-stop)");
    shared.borrow_mut().failure = Some(failure.clone());
    Err(failure)
}

/// Rounds of loading one request may take: a key range, then its records, then (rarely) again
/// after a checkpoint changed the image's epoch meanwhile.
const MAKE_RESIDENT_ROUNDS_MAX: usize = 64;

/// Checkpoints a durable shard as of its last applied entry (see the module comment).
async fn checkpoint(
    shared: &Shared,
    durable: Rc<dyn Durability>,
) -> Result<ShardSnapshot, io::Error> {
    let started = Instant::now();
    // An install switches the page log under the store: wait for it to end.
    while shared.borrow().installing {
        sleep(crate::snapshot::CHECKPOINT_WAIT).await;
    }
    let (meta, alarms) = {
        let mut st = shared.borrow_mut();
        if let Some(failure) = &st.failure {
            return Err(io::Error::other(failure.clone()));
        }
        st.checkpoints.running = true;
        let meta = SnapshotMeta {
            last_log_id: st.last_applied,
            last_membership: st.last_membership.clone(),
        };
        st.store.begin_take();
        // The alarm table as of the same applied entry as the changes.
        (meta, (st.alarms.table(), st.auth.state()))
    };
    // The changed records and key indexes, taken as of that entry a few hundred at a time:
    // applies go on between the steps (one step at a time held the shard's thread 13-31 ms
    // per 8 MiB checkpoint, docs/benchmarks.md).
    while !shared.borrow_mut().store.take_step(RECORDS_PER_PAUSE) {
        crate::runtime::yield_now().await;
    }
    let changes = {
        let mut st = shared.borrow_mut();
        let changes = st.store.finish_take();
        st.checkpoints.inflight_bytes = changes.payload_bytes();
        changes
    };
    let n_changes = changes.len();
    let applied_index = meta.last_log_id.map_or(0, |id| id.index + 1);
    let app = encode_app(
        meta.last_log_id.as_ref(),
        &meta.last_membership,
        &alarms.0,
        &alarms.1,
    );
    let commit_started = Instant::now();
    let result = durable.checkpoint(changes, applied_index, app).await;
    let committed_in = commit_started.elapsed();
    let mut st = shared.borrow_mut();
    st.checkpoints.running = false;
    st.checkpoints.inflight_bytes = 0;
    match result {
        Ok(report) => {
            st.store.checkpoint_done(report.sequence);
            let c = &mut st.checkpoints;
            c.count += 1;
            c.last_at = Some(Instant::now());
            c.last_index = applied_index;
            c.last_duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            c.commit_durations.observe(committed_in);
            let snapshot = ShardSnapshot {
                meta,
                snapshot: SnapshotData::Checkpoint(ImageHandle(durable)),
            };
            st.current_snapshot = Some(snapshot.clone());
            st.publish_backend_size();
            tracing::debug!(
                applied_index,
                changes = n_changes,
                pages = report.pages_written,
                "checkpoint"
            );
            Ok(snapshot)
        }
        Err(err) => {
            let failure = format!("checkpoint failed: {err}");
            tracing::error!(%failure, "shard stops (fail-stop)");
            st.failure = Some(failure.clone());
            Err(io::Error::other(failure))
        }
    }
}

/// openraft's view of the shard state.
pub struct ShardStateMachine {
    shared: Shared,
}

impl ShardStateMachine {
    pub fn new(shared: Shared) -> ShardStateMachine {
        ShardStateMachine { shared }
    }
}

/// Builds a snapshot by copying the store at the moment it runs (on the shard's thread, so no
/// entry is half applied).
pub struct SnapshotBuilder {
    shared: Shared,
}

impl RaftSnapshotBuilder<ShardRaft> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<ShardSnapshot, io::Error> {
        let durable = self.shared.borrow().durable.clone();
        match durable {
            Some(durable) => checkpoint(&self.shared, durable).await,
            None => Ok(self.shared.borrow_mut().snapshot()),
        }
    }
}

impl RaftStateMachine<ShardRaft> for ShardStateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let st = self.shared.borrow();
        Ok((st.last_applied, st.last_membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<ShardRaft>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let stages = self.shared.borrow().stages.clone();
            stages
                .borrow_mut()
                .applying(entry.log_id.index + 1, Instant::now());
            if let EntryPayload::Normal(cmd) = &entry.payload {
                if let Some(access) = access_of(cmd) {
                    make_resident(&self.shared, &access)
                        .await
                        .map_err(io::Error::other)?;
                }
            }
            // No `.await` from the residency check to the apply: nothing is evicted between.
            let result = {
                let mut st = self.shared.borrow_mut();
                let result = st.apply_entry(entry.payload, entry.log_id);
                if st.durable.is_some() {
                    // Before the answer, so a client that sees it sees the size too. O(1)
                    // here; an in-memory shard publishes from housekeeping.
                    st.publish_backend_size();
                }
                result
            };
            // The borrow is released: the responder may run code that reads the state.
            if let Some(responder) = responder {
                responder.send(result);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            shared: self.shared.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        if let SnapshotData::Received = snapshot {
            return install_received(&self.shared, meta).await;
        }
        let mut st = self.shared.borrow_mut();
        let SnapshotData::Store(store) = &snapshot else {
            return Err(io::Error::other(
                "a checkpoint of this shard is not installed: only one received from the leader",
            ));
        };
        if st.durable.is_some() {
            return Err(io::Error::other(
                "a durable shard installs a snapshot received into its page log, not a store copy",
            ));
        }
        let min_lease_ttl = st.store.min_lease_ttl();
        st.store = (**store).clone();
        st.store.set_min_lease_ttl(min_lease_ttl);
        st.last_applied = meta.last_log_id;
        st.last_membership = meta.last_membership.clone();
        st.current_snapshot = Some(ShardSnapshot {
            meta: meta.clone(),
            snapshot,
        });
        if let Some((alarms, auth)) = st.received_alarms.take() {
            st.alarms.replace(alarms);
            st.auth.replace(auth);
        }
        st.watchers.resync_all();
        let ShardState {
            watchers, store, ..
        } = &mut *st;
        watchers.sync(store);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<ShardSnapshot>, io::Error> {
        Ok(self.shared.borrow().current_snapshot.clone())
    }
}

/// Waits `d` on the shard's runtime.
async fn sleep(d: std::time::Duration) {
    <crate::runtime::GlommioRuntime as openraft::AsyncRuntime>::sleep(d).await;
}

/// Installs a snapshot received into a new page log (see the module comment).
async fn install_received(shared: &Shared, meta: &SnapshotMeta) -> Result<(), io::Error> {
    let durable = shared
        .borrow()
        .durable
        .clone()
        .ok_or_else(|| io::Error::other("a received page log on an in-memory shard"))?;
    loop {
        {
            let mut st = shared.borrow_mut();
            if let Some(failure) = &st.failure {
                return Err(io::Error::other(failure.clone()));
            }
            if !st.checkpoints.running {
                st.installing = true;
                break;
            }
        }
        sleep(crate::snapshot::CHECKPOINT_WAIT).await;
    }
    let applied_index = meta.last_log_id.map_or(0, |id| id.index + 1);
    let installed = durable.install(applied_index).await;
    let mut st = shared.borrow_mut();
    st.installing = false;
    match installed {
        Ok(mut store) => {
            store.set_min_lease_ttl(st.store.min_lease_ttl());
            st.store = store;
            st.last_applied = meta.last_log_id;
            st.last_membership = meta.last_membership.clone();
            st.current_snapshot = Some(ShardSnapshot {
                meta: meta.clone(),
                snapshot: SnapshotData::Checkpoint(ImageHandle(durable)),
            });
            st.checkpoints.last_index = applied_index;
            st.checkpoints.last_at = Some(Instant::now());
            if let Some((alarms, auth)) = st.received_alarms.take() {
                st.alarms.replace(alarms);
                st.auth.replace(auth);
            }
            st.publish_backend_size();
            // Housekeeping catches every watcher up from history, reading the page log.
            st.watchers.resync_all();
            Ok(())
        }
        Err(err) => {
            let failure = format!("installing a received snapshot failed: {err}");
            tracing::error!(%failure, "shard stops (fail-stop)");
            st.failure = Some(failure.clone());
            Err(io::Error::other(failure))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log_store::log_id;
    use ballast_engine::{PutRequest, RangeRequest};
    use bytes::Bytes;

    fn put(key: &'static str) -> LogCommand {
        LogCommand::Put(PutRequest {
            key: Bytes::from_static(key.as_bytes()),
            value: Bytes::from_static(b"v"),
            ..PutRequest::default()
        })
    }

    #[test]
    fn refused_write_consumes_its_index_and_changes_nothing() {
        let mut st = ShardState::new(Store::new());
        st.apply_entry(EntryPayload::Normal(put("a")), log_id(1, 1))
            .expect("put applies");
        let refused = st.apply_entry(
            EntryPayload::Normal(LogCommand::LeaseRevoke { id: 5 }),
            log_id(1, 2),
        );
        assert_eq!(
            refused.map(|r| r.revision),
            Err(EngineError::LeaseNotFound { lease_id: 5 })
        );
        assert_eq!(st.last_applied, Some(log_id(1, 2)));
        assert_eq!(st.store.revision(), 2);
        assert_eq!(st.entries_applied, 2);
    }

    #[test]
    fn snapshot_copies_the_store_at_build_time() {
        let mut st = ShardState::new(Store::new());
        st.apply_entry(EntryPayload::Normal(put("a")), log_id(1, 1))
            .expect("put");
        let snap = st.snapshot();
        st.apply_entry(EntryPayload::Normal(put("b")), log_id(1, 2))
            .expect("put");
        assert_eq!(snap.meta.last_log_id, Some(log_id(1, 1)));
        let SnapshotData::Store(copy) = &snap.snapshot else {
            panic!("an in-memory shard's snapshot is a copy");
        };
        assert_eq!(copy.revision(), 2);
        let all = RangeRequest {
            key: Bytes::from_static(b"\0"),
            range_end: Bytes::from_static(b"\0"),
            ..RangeRequest::default()
        };
        assert_eq!(copy.range(&all).expect("range").count, 1);
        assert_eq!(st.store.range(&all).expect("range").count, 2);
    }
}
