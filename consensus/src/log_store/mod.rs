//! A shard's Raft log storage: openraft's `RaftLogStorage`/`RaftLogReader` over a small seam of
//! our own, [`LogBackend`], shaped like the WAL (`ballast_engine::wal::Wal`): records of
//! `(term, index, kind, payload)`, appends visible at once and durable when their future
//! resolves, Raft's truncate and purge, and the vote in the same store. [`WalLog`], over the
//! engine's WAL, is the backend of every durable shard (the server's); [`MemLog`] keeps the log
//! in memory for shards without storage (tests, examples). Both pass the same contract test.
//!
//! Entry kinds and payloads (the payload is what a backend stores, opaque to it):
//! ```text
//! kind 1 blank       (empty)
//! kind 2 normal      codec::encode(LogCommand)
//! kind 3 membership  version:u8 (= MEMBERSHIP_FORMAT_VERSION)
//!                    configs:u32 { voters:u32 { node_id:u64 } }
//!                    nodes:u32 { node_id:u64 addr_len:u32 addr }
//! ```
//! Numbering: openraft counts log indexes from 0 (the first entry is the initial membership at
//! index 0); a backend, like the WAL and etcd's raft, counts from 1 with 0 meaning "no entry".
//! The adapter adds one on the way down and subtracts it on the way up: openraft index `i` is
//! backend index `i + 1`, and the figures a shard reports use the backend's (etcd's) numbering.
//!
//! The adapter keeps recently appended entries decoded ([`RecentEntries`]): openraft's apply
//! step reads every committed entry back through the log reader, and serving it from memory
//! spares a device read and a decode per apply round.
//!
//! Invariants: the log has no holes (`prev < first..=last`); appends extend `last` by one each;
//! an entry read back is the entry appended (the encoding round-trips, tested below); every
//! write (vote included) is applied to the backend in call order.

mod memory;
mod wal;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Debug;
use std::future::Future;
use std::io;
use std::ops::{Bound, Range, RangeBounds};
use std::pin::Pin;
use std::rc::Rc;

use bytes::{BufMut, Bytes};
use futures::FutureExt;
use openraft::impls::BasicNode;
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{EntryPayload, LogState, OptionalSend, RaftLogReader};

pub use memory::MemLog;
pub use wal::WalLog;

use crate::codec;
use crate::stages::Stages;
use crate::types::{CommittedLeaderId, Entry, LeaderId, LogId, Membership, ShardRaft, Vote};

pub const KIND_BLANK: u8 = 1;
pub const KIND_NORMAL: u8 = 2;
pub const KIND_MEMBERSHIP: u8 = 3;
/// Version of the membership payload. 1: first layout.
pub const MEMBERSHIP_FORMAT_VERSION: u8 = 1;

/// A future a backend returns; it runs on the shard's thread.
pub type LocalFuture<T> = Pin<Box<dyn Future<Output = T>>>;

/// One log entry as a backend stores it (the WAL's `wal::Entry`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub term: u64,
    pub index: u64,
    pub kind: u8,
    pub payload: Bytes,
}

/// `(term, index)` of an entry; `(0, 0)` is "before the first entry".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogPosition {
    pub term: u64,
    pub index: u64,
}

/// Raft's persistent vote (the WAL's `wal::Vote`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoredVote {
    pub term: u64,
    pub voted_for: Option<u64>,
    pub committed: bool,
}

/// The storage a shard's Raft log lives in. Handles are cheap clones of one log (the log reader
/// and the writer share it), used on one thread only.
///
/// Contract:
/// - `append`: records are contiguous and start at `last().index + 1`. They are in the log —
///   `read` returns them, `last` covers them — when the call returns; the future resolves `Ok`
///   only once they are durable. Futures resolve in call order.
/// - `truncate_after(i)`: drops every entry after index `i` (`prev().index <= i <= last`),
///   at once in memory; durable when the future resolves.
/// - `purge_upto(p)`: entries up to `p.index` may be dropped and `prev()` becomes `p` once no
///   entry at or below it remains; when `p` is past `last`, the log is reset to end at `p`.
/// - `save_vote`: durable when the future resolves; `vote()` returns it from the call on.
/// - An `Err` from any call means the backend is fail-stopped: later calls fail too.
pub trait LogBackend: Clone + 'static {
    fn prev(&self) -> LogPosition;
    fn last(&self) -> LogPosition;
    fn vote(&self) -> Option<StoredVote>;
    fn append(&self, records: Vec<LogRecord>) -> LocalFuture<io::Result<()>>;
    fn truncate_after(&self, index: u64) -> LocalFuture<io::Result<()>>;
    fn purge_upto(&self, upto: LogPosition) -> LocalFuture<io::Result<()>>;
    fn read(&self, range: Range<u64>) -> LocalFuture<io::Result<Vec<LogRecord>>>;
    fn save_vote(&self, vote: StoredVote) -> LocalFuture<io::Result<()>>;
}

// ------------------------------------------------------------------ entry <-> record

pub fn record_of(entry: &Entry) -> LogRecord {
    let (kind, payload) = match &entry.payload {
        EntryPayload::Blank => (KIND_BLANK, Bytes::new()),
        EntryPayload::Normal(cmd) => (KIND_NORMAL, codec::encode(cmd)),
        EntryPayload::Membership(m) => (KIND_MEMBERSHIP, encode_membership(m)),
    };
    LogRecord {
        term: entry.log_id.leader_id.term,
        index: entry.log_id.index + 1,
        kind,
        payload,
    }
}

pub fn entry_of(record: &LogRecord) -> io::Result<Entry> {
    let bad = |what: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("log entry {}@{}: {what}", record.index, record.term),
        )
    };
    let payload = match record.kind {
        KIND_BLANK => EntryPayload::Blank,
        KIND_NORMAL => {
            EntryPayload::Normal(codec::decode(&record.payload).map_err(|e| bad(e.to_string()))?)
        }
        KIND_MEMBERSHIP => EntryPayload::Membership(
            decode_membership(&record.payload).ok_or_else(|| bad("bad membership".into()))?,
        ),
        kind => return Err(bad(format!("unknown kind {kind}"))),
    };
    let index = record
        .index
        .checked_sub(1)
        .ok_or_else(|| bad("index 0 is not an entry".into()))?;
    Ok(Entry {
        log_id: log_id(record.term, index),
        payload,
    })
}

/// An openraft log id (0-based index).
pub fn log_id(term: u64, index: u64) -> LogId {
    openraft::LogId {
        leader_id: CommittedLeaderId::new(term),
        index,
    }
}

/// The backend position (1-based) of an openraft log id.
fn position(id: &LogId) -> LogPosition {
    LogPosition {
        term: id.leader_id.term,
        index: id.index + 1,
    }
}

/// The openraft log id of a backend position, `None` for "no entry".
fn id_of(p: LogPosition) -> Option<LogId> {
    p.index.checked_sub(1).map(|index| log_id(p.term, index))
}

pub(crate) fn encode_membership(m: &Membership) -> Bytes {
    let mut out = Vec::new();
    out.put_u8(MEMBERSHIP_FORMAT_VERSION);
    let configs = m.get_joint_config();
    out.put_u32_le(configs.len() as u32);
    for voters in configs {
        out.put_u32_le(voters.len() as u32);
        for id in voters {
            out.put_u64_le(*id);
        }
    }
    let nodes: Vec<_> = m.nodes().collect();
    out.put_u32_le(nodes.len() as u32);
    for (id, node) in nodes {
        out.put_u64_le(*id);
        out.put_u32_le(node.addr.len() as u32);
        out.put_slice(node.addr.as_bytes());
    }
    Bytes::from(out)
}

pub(crate) fn decode_membership(b: &[u8]) -> Option<Membership> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Option<&[u8]> {
        let s = b.get(at..at.checked_add(n)?)?;
        at += n;
        Some(s)
    };
    if take(1)?[0] != MEMBERSHIP_FORMAT_VERSION {
        return None;
    }
    let u32_at = |s: &[u8]| u32::from_le_bytes(s.try_into().expect("4 bytes")) as usize;
    let u64_at = |s: &[u8]| u64::from_le_bytes(s.try_into().expect("8 bytes"));
    let config_count = u32_at(take(4)?);
    let mut configs = Vec::new();
    for _ in 0..config_count {
        let n = u32_at(take(4)?);
        let mut voters = BTreeSet::new();
        for _ in 0..n {
            voters.insert(u64_at(take(8)?));
        }
        configs.push(voters);
    }
    let node_count = u32_at(take(4)?);
    let mut nodes = BTreeMap::new();
    for _ in 0..node_count {
        let id = u64_at(take(8)?);
        let len = u32_at(take(4)?);
        let addr = String::from_utf8(take(len)?.to_vec()).ok()?;
        nodes.insert(id, BasicNode { addr });
    }
    if take(1).is_some() {
        return None;
    }
    Membership::new(configs, nodes).ok()
}

fn vote_of(v: StoredVote) -> Vote {
    Vote {
        leader_id: LeaderId {
            term: v.term,
            voted_for: v.voted_for.unwrap_or_default(),
        },
        committed: v.committed,
    }
}

fn stored_vote(v: &Vote) -> StoredVote {
    StoredVote {
        term: v.leader_id.term,
        voted_for: Some(v.leader_id.voted_for),
        committed: v.committed,
    }
}

fn index_range(range: &impl RangeBounds<u64>) -> Range<u64> {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s + 1,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e + 1,
        Bound::Excluded(&e) => e,
        Bound::Unbounded => u64::MAX,
    };
    start..end
}

// ------------------------------------------------------------------ openraft adapter

/// openraft's log storage (and log reader) over a [`LogBackend`].
#[derive(Clone)]
pub struct LogStore<B: LogBackend> {
    backend: B,
    /// Where appends report their submission and durability instants (`stages.rs`).
    stages: Option<Stages>,
    /// Shared by the writer and every reader handed out (`get_log_reader` clones).
    recent: Rc<RefCell<RecentEntries>>,
}

/// Entries appended recently, kept as openraft entries so that the apply step, which reads
/// every committed entry back through the log reader, takes them from here instead of reading
/// them from the backend (on the WAL: an O_DIRECT read of the page just written, then a
/// checksum, a copy and a decode — ~40 us of a single put's ~150 us were measured there).
///
/// Invariants: `entries` are the log's entries `first..first + len`, equal to what the
/// backend holds at those indexes (appends push, truncation and purge cut, a gap clears);
/// bounded by [`RECENT_ENTRIES_MAX`] and [`RECENT_BYTES_MAX`] (the oldest go first). A read
/// takes the entries it returns out, and drops the older ones: the apply step reads each
/// entry once, in order. Any range not wholly here is read from the backend, so a miss costs
/// only the read this cache saves. (An append the backend refuses leaves its entries here,
/// but such a refusal fail-stops the shard: they are never committed, so never applied.)
#[derive(Default)]
struct RecentEntries {
    /// openraft index of `entries[0]`.
    first: u64,
    entries: VecDeque<(Entry, usize)>,
    /// Sum of the entries' encoded payload sizes.
    bytes: usize,
}

/// Bounds of [`RecentEntries`]: about one group-commit round's worth many times over.
pub const RECENT_ENTRIES_MAX: usize = 16 * 1024;
pub const RECENT_BYTES_MAX: usize = 16 << 20;

impl RecentEntries {
    fn end(&self) -> u64 {
        self.first + self.entries.len() as u64
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    fn push(&mut self, entry: Entry, bytes: usize) {
        if self.entries.is_empty() || entry.log_id.index != self.end() {
            self.clear();
            self.first = entry.log_id.index;
        }
        self.entries.push_back((entry, bytes));
        self.bytes += bytes;
        while self.entries.len() > RECENT_ENTRIES_MAX || self.bytes > RECENT_BYTES_MAX {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some((_, bytes)) = self.entries.pop_front() {
            self.bytes -= bytes;
            self.first += 1;
        }
    }

    /// Takes entries `range` (openraft indexes) out when all of them are here; entries
    /// before `range.start` are dropped as well.
    fn take(&mut self, range: &Range<u64>) -> Option<Vec<Entry>> {
        if range.start < self.first || range.end > self.end() {
            return None;
        }
        while self.first < range.start {
            self.pop_front();
        }
        let n = (range.end - range.start) as usize;
        let mut taken = Vec::with_capacity(n);
        for (entry, bytes) in self.entries.drain(..n) {
            self.bytes -= bytes;
            taken.push(entry);
        }
        self.first = range.end;
        Some(taken)
    }

    /// Drops every entry after openraft index `last` (`None`: all).
    fn truncate_after(&mut self, last: Option<u64>) {
        let keep = last.map_or(0, |l| (l + 1).saturating_sub(self.first)) as usize;
        while self.entries.len() > keep {
            if let Some((_, bytes)) = self.entries.pop_back() {
                self.bytes -= bytes;
            }
        }
    }

    /// Drops every entry up to openraft index `upto`.
    fn purge(&mut self, upto: u64) {
        while !self.entries.is_empty() && self.first <= upto {
            self.pop_front();
        }
    }
}

impl<B: LogBackend> LogStore<B> {
    pub fn new(backend: B) -> LogStore<B> {
        LogStore {
            backend,
            stages: None,
            recent: Rc::default(),
        }
    }

    /// A log store that times its appends into `stages`.
    pub fn with_stages(backend: B, stages: Stages) -> LogStore<B> {
        LogStore {
            stages: Some(stages),
            ..LogStore::new(backend)
        }
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }
}

impl<B: LogBackend> RaftLogReader<ShardRaft> for LogStore<B> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let range = index_range(&range);
        let mut range = range.start.saturating_add(1)..range.end.saturating_add(1);
        range.start = range.start.max(self.backend.prev().index + 1);
        range.end = range.end.min(self.backend.last().index + 1);
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let wanted = range.start - 1..range.end - 1;
        if let Some(entries) = self.recent.borrow_mut().take(&wanted) {
            return Ok(entries);
        }
        let records = self.backend.read(range).await?;
        records.iter().map(entry_of).collect()
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.backend.vote().map(vote_of))
    }
}

impl<B: LogBackend> RaftLogStorage<ShardRaft> for LogStore<B> {
    type LogReader = LogStore<B>;

    async fn get_log_state(&mut self) -> Result<LogState<ShardRaft>, io::Error> {
        Ok(LogState {
            last_purged_log_id: id_of(self.backend.prev()),
            last_log_id: id_of(self.backend.last()),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.backend.save_vote(stored_vote(vote)).await
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<ShardRaft>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut records = Vec::new();
        {
            let mut recent = self.recent.borrow_mut();
            for entry in entries {
                let record = record_of(&entry);
                recent.push(entry, record.payload.len());
                records.push(record);
            }
        }
        let span = records
            .first()
            .zip(records.last())
            .map(|(f, l)| (f.index, l.index));
        let stages = self.stages.clone().zip(span);
        if let Some((stages, (first, last))) = &stages {
            stages
                .borrow_mut()
                .submitted(*first, *last, std::time::Instant::now());
        }
        let done = move |result: io::Result<()>| {
            if let (Some((stages, (_, last))), Ok(())) = (&stages, &result) {
                stages
                    .borrow_mut()
                    .durable(*last, std::time::Instant::now());
            }
            callback.io_completed(result);
        };
        let mut durable = self.backend.append(records);
        // A backend that is durable at once (memory) answers here; one that waits for a group
        // commit (the WAL) answers from a task when its sync completes.
        match (&mut durable).now_or_never() {
            Some(result) => done(result),
            None => {
                glommio::spawn_local(async move { done(durable.await) }).detach();
            }
        }
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let index = last_log_id.map_or(0, |id| position(&id).index);
        self.recent
            .borrow_mut()
            .truncate_after(last_log_id.map(|id| id.index));
        self.backend.truncate_after(index).await
    }

    async fn purge(&mut self, upto: LogId) -> Result<(), io::Error> {
        self.recent.borrow_mut().purge(upto.index);
        self.backend.purge_upto(position(&upto)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::LogCommand;
    use ballast_engine::PutRequest;

    #[test]
    fn every_entry_kind_round_trips_through_a_record() {
        let nodes = BTreeMap::from([
            (
                1,
                BasicNode {
                    addr: "127.0.0.1:2380".into(),
                },
            ),
            (
                2,
                BasicNode {
                    addr: "127.0.0.1:2381".into(),
                },
            ),
            (
                3,
                BasicNode {
                    addr: String::new(),
                },
            ),
        ]);
        let membership = Membership::new(vec![BTreeSet::from([1, 2]), BTreeSet::from([2])], nodes)
            .expect("valid membership");
        let entries = [
            Entry {
                log_id: log_id(1, 1),
                payload: EntryPayload::Blank,
            },
            Entry {
                log_id: log_id(2, 7),
                payload: EntryPayload::Normal(LogCommand::Put(PutRequest {
                    key: Bytes::from_static(b"k"),
                    value: Bytes::from_static(b"v"),
                    ..PutRequest::default()
                })),
            },
            Entry {
                log_id: log_id(3, 9),
                payload: EntryPayload::Membership(membership),
            },
        ];
        for entry in entries {
            let record = record_of(&entry);
            assert_eq!(
                record.index,
                entry.log_id.index + 1,
                "backend indexes are 1-based"
            );
            assert_eq!(entry_of(&record).expect("decodes"), entry);
        }
        let first = record_of(&Entry {
            log_id: log_id(0, 0),
            payload: EntryPayload::Blank,
        });
        assert_eq!((first.term, first.index), (0, 1));
    }

    #[test]
    fn damaged_records_are_refused() {
        let record = LogRecord {
            term: 1,
            index: 1,
            kind: 9,
            payload: Bytes::new(),
        };
        assert!(entry_of(&record).is_err());
        let membership = LogRecord {
            kind: KIND_MEMBERSHIP,
            payload: Bytes::from_static(&[MEMBERSHIP_FORMAT_VERSION, 1, 0, 0]),
            ..record.clone()
        };
        assert!(entry_of(&membership).is_err());
        let normal = LogRecord {
            kind: KIND_NORMAL,
            payload: Bytes::from_static(&[1, 1, 0]),
            ..record
        };
        assert!(entry_of(&normal).is_err());
    }

    fn put(index: u64) -> Entry {
        Entry {
            log_id: log_id(1, index),
            payload: EntryPayload::Normal(LogCommand::Put(PutRequest {
                key: Bytes::from(format!("k{index}")),
                ..PutRequest::default()
            })),
        }
    }

    fn indexes(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.log_id.index).collect()
    }

    #[test]
    fn recent_entries_are_taken_once_in_order_and_follow_truncation_and_purge() {
        let mut r = RecentEntries::default();
        for i in 3..10 {
            r.push(put(i), 10);
        }
        assert_eq!(r.bytes, 70);
        // Not wholly here: a miss, nothing taken.
        assert!(r.take(&(2..5)).is_none());
        assert!(r.take(&(8..11)).is_none());
        // Taking 5..7 drops 3 and 4 (read before, by the apply's order) and takes 5 and 6.
        assert_eq!(indexes(&r.take(&(5..7)).expect("here")), vec![5, 6]);
        assert_eq!((r.first, r.entries.len(), r.bytes), (7, 3, 30));
        assert!(r.take(&(5..7)).is_none(), "taken entries are gone");
        // Truncation keeps up to 7; an append continues at 8.
        r.truncate_after(Some(7));
        assert_eq!(r.end(), 8);
        r.push(put(8), 10);
        assert_eq!(indexes(&r.take(&(7..9)).expect("here")), vec![7, 8]);
        // A gap (an append not at the end) starts over.
        r.push(put(9), 10);
        r.push(put(20), 10);
        assert_eq!((r.first, r.entries.len(), r.bytes), (20, 1, 10));
        r.push(put(21), 10);
        r.purge(20);
        assert_eq!((r.first, r.entries.len(), r.bytes), (21, 1, 10));
        r.truncate_after(None);
        assert_eq!((r.entries.len(), r.bytes), (0, 0));
    }

    #[test]
    fn recent_entries_stay_bounded() {
        let mut r = RecentEntries::default();
        for i in 0..(RECENT_ENTRIES_MAX as u64 + 5) {
            r.push(put(i), 1);
        }
        assert_eq!(r.entries.len(), RECENT_ENTRIES_MAX);
        assert_eq!(r.first, 5);
        r.push(put(RECENT_ENTRIES_MAX as u64 + 5), RECENT_BYTES_MAX);
        assert_eq!(
            r.entries.len(),
            1,
            "a byte bound pushes the older entries out"
        );
        assert!(r.bytes <= RECENT_BYTES_MAX);
    }

    #[test]
    fn votes_round_trip() {
        for committed in [false, true] {
            let v = Vote {
                leader_id: LeaderId {
                    term: 5,
                    voted_for: 3,
                },
                committed,
            };
            assert_eq!(vote_of(stored_vote(&v)), v);
        }
    }
}
