//! Every stored version, keyed by revision: the in-memory stand-in for etcd's `key` bucket
//! (revision → key-value). It is also the revision index that watch catch-up and compaction
//! walk, so neither scans every key.
//!
//! Invariant: a record exists for exactly the revisions the key indexes hold; a tombstone
//! record's `kv` carries only the key and the deletion's `mod_revision` (as etcd's delete
//! events do).
//!
//! When journaling is on (a durable shard), every revision inserted or removed since the last
//! [`History::take_journal`] is remembered, so a checkpoint writes exactly the records that
//! changed to the page log (`mvcc::image`). Records are immutable, so "changed" means "now
//! present" or "now gone".

use std::collections::{BTreeMap, BTreeSet};
use std::ops::RangeBounds;

use super::Rev;
use crate::types::KeyValue;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Record {
    pub(super) kv: KeyValue,
    pub(super) tombstone: bool,
}

#[derive(Clone, Debug, Default)]
pub(super) struct History {
    records: BTreeMap<Rev, Record>,
    /// Sum of key and value lengths of all records, for size estimates.
    payload_bytes: u64,
    /// Revisions inserted or removed since the journal was last taken (`None`: not kept).
    journal: Option<BTreeSet<Rev>>,
    /// Key and value bytes inserted since the journal was last taken.
    journal_bytes: u64,
}

/// Per-record overhead assumed by `approximate_size_bytes`: the map entry (revision and
/// key-value fields), the key's and the value's allocations: about 160 bytes besides the key
/// and value bytes, estimated from the layout (the memory benchmark checks the total).
pub(super) const RECORD_OVERHEAD_BYTES: u64 = 160;

impl History {
    /// Starts remembering changed revisions (from an empty journal).
    pub(super) fn keep_journal(&mut self) {
        self.journal.get_or_insert_with(BTreeSet::new);
    }

    /// The revisions changed since the last call, and their inserted key and value bytes.
    pub(super) fn take_journal(&mut self) -> (BTreeSet<Rev>, u64) {
        let taken = match &mut self.journal {
            Some(j) => std::mem::take(j),
            None => BTreeSet::new(),
        };
        (taken, std::mem::take(&mut self.journal_bytes))
    }

    /// How many revisions and inserted bytes the journal holds.
    pub(super) fn journal_size(&self) -> (usize, u64) {
        (
            self.journal.as_ref().map_or(0, BTreeSet::len),
            self.journal_bytes,
        )
    }

    /// Journals a revision as changed (the whole history is to be written).
    pub(super) fn note_changed(&mut self, rev: Rev) {
        self.note(rev);
    }

    fn note(&mut self, rev: Rev) {
        if let Some(j) = &mut self.journal {
            j.insert(rev);
        }
    }

    pub(super) fn insert(&mut self, rev: Rev, record: Record) {
        let len = (record.kv.key.len() + record.kv.value.len()) as u64;
        self.payload_bytes += len;
        if self.journal.is_some() {
            self.journal_bytes += len;
        }
        self.note(rev);
        let old = self.records.insert(rev, record);
        assert!(old.is_none(), "revision {rev:?} written twice");
    }

    /// Puts back a record read from the image: not a change, so not journaled.
    pub(super) fn insert_clean(&mut self, rev: Rev, record: Record) {
        let len = (record.kv.key.len() + record.kv.value.len()) as u64;
        if self.records.insert(rev, record).is_none() {
            self.payload_bytes += len;
        }
    }

    /// Removes a record that compaction dropped, whether it is in memory or only in the image.
    pub(super) fn remove(&mut self, rev: Rev) {
        if let Some(record) = self.records.remove(&rev) {
            self.payload_bytes -= (record.kv.key.len() + record.kv.value.len()) as u64;
        }
        self.note(rev);
    }

    /// Drops a clean record from memory (it stays in the image).
    pub(super) fn evict(&mut self, rev: Rev) -> Option<Record> {
        let record = self.records.remove(&rev)?;
        self.payload_bytes -= (record.kv.key.len() + record.kv.value.len()) as u64;
        Some(record)
    }

    /// The revision changed since the journal was last taken.
    pub(super) fn is_journaled(&self, rev: Rev) -> bool {
        self.journal.as_ref().is_some_and(|j| j.contains(&rev))
    }

    pub(super) fn len(&self) -> usize {
        self.records.len()
    }

    pub(super) fn get(&self, rev: Rev) -> Option<&Record> {
        self.records.get(&rev)
    }

    pub(super) fn range(
        &self,
        revs: impl RangeBounds<Rev>,
    ) -> impl Iterator<Item = (&Rev, &Record)> {
        self.records.range(revs)
    }

    /// Removes every record with `main == main` (a rolled-back write txn).
    pub(super) fn remove_main(&mut self, main: i64) {
        let tail = self.records.split_off(&Rev { main, sub: 0 });
        for (rev, record) in tail {
            if rev.main == main {
                self.payload_bytes -= (record.kv.key.len() + record.kv.value.len()) as u64;
                self.note(rev);
            } else {
                self.records.insert(rev, record);
            }
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&Rev, &Record)> {
        self.records.iter()
    }

    pub(super) fn approximate_size_bytes(&self) -> u64 {
        self.payload_bytes + RECORD_OVERHEAD_BYTES * self.records.len() as u64
    }
}
