//! Every stored version, keyed by revision: the in-memory stand-in for etcd's `key` bucket
//! (revision → key-value). It is also the revision index that watch catch-up and compaction
//! walk, so neither scans every key.
//!
//! Invariant: a record exists for exactly the revisions the key indexes hold; a tombstone
//! record's `kv` carries only the key and the deletion's `mod_revision` (as etcd's delete
//! events do). A durable B-tree replaces this map later behind the same methods.

use std::collections::BTreeMap;
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
}

/// Per-record overhead assumed by `approximate_size_bytes`: the revision, the numeric fields
/// and the map node, roughly.
const RECORD_OVERHEAD_BYTES: u64 = 96;

impl History {
    pub(super) fn insert(&mut self, rev: Rev, record: Record) {
        self.payload_bytes += (record.kv.key.len() + record.kv.value.len()) as u64;
        let old = self.records.insert(rev, record);
        assert!(old.is_none(), "revision {rev:?} written twice");
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
            } else {
                self.records.insert(rev, record);
            }
        }
    }

    /// Drops every record with `main <= at` that `keep` rejects.
    pub(super) fn compact(&mut self, at: i64, keep: impl Fn(&Rev) -> bool) {
        let tail = self.records.split_off(&Rev {
            main: at + 1,
            sub: 0,
        });
        let head = std::mem::replace(&mut self.records, tail);
        for (rev, record) in head {
            if keep(&rev) {
                self.records.insert(rev, record);
            } else {
                self.payload_bytes -= (record.kv.key.len() + record.kv.value.len()) as u64;
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
