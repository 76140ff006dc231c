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
//! - A snapshot is a full copy of the store (the engine's `Store` is `Clone`) plus the applied
//!   log id and membership; installing one replaces the store and makes every watcher catch up
//!   from history.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::time::Instant;

use ballast_engine::{Error as EngineError, Store};
use futures::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};

use crate::codec::LogCommand;
use crate::network::ShardSnapshot;
use crate::shard::{Reply, Response};
use crate::stats::Histogram;
use crate::types::{ApplyResult, LogId, ShardRaft, SnapshotMeta, StoredMembership};
use crate::watchers::Registry;

/// What a snapshot carries besides its metadata: the whole store.
pub type SnapshotData = Store;

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
    current_snapshot: Option<ShardSnapshot>,
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
            current_snapshot: None,
        }
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
                (a.revision, Response::Put(a.response), a.events)
            }
            LogCommand::DeleteRange(r) => {
                let a = store.delete_range(&r)?;
                (a.revision, Response::DeleteRange(a.response), a.events)
            }
            LogCommand::Txn(r) => {
                let a = store.txn(&r)?;
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
            snapshot: self.store.clone(),
        };
        self.current_snapshot = Some(snapshot.clone());
        snapshot
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
        Ok(self.shared.borrow_mut().snapshot())
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
            let result = self
                .shared
                .borrow_mut()
                .apply_entry(entry.payload, entry.log_id);
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
        let mut st = self.shared.borrow_mut();
        st.store = snapshot.clone();
        st.last_applied = meta.last_log_id;
        st.last_membership = meta.last_membership.clone();
        st.current_snapshot = Some(ShardSnapshot {
            meta: meta.clone(),
            snapshot,
        });
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
        assert_eq!(snap.snapshot.revision(), 2);
        let all = RangeRequest {
            key: Bytes::from_static(b"\0"),
            range_end: Bytes::from_static(b"\0"),
            ..RangeRequest::default()
        };
        assert_eq!(snap.snapshot.range(&all).expect("range").count, 1);
        assert_eq!(st.store.range(&all).expect("range").count, 2);
    }
}
