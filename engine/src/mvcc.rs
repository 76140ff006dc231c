//! The MVCC store: etcd's revision model over an in-memory key index and history, plus the
//! lease table, applying every KV request (range, put, delete, txn, compact) with etcd 3.4's
//! exact rules.
//!
//! # Model
//!
//! The store revision starts at 1 for an empty store. Every write request that changes at
//! least one key takes the next revision (its *main* revision); the changes inside it are
//! numbered by a *sub* revision 0, 1, 2, ... in the order they are applied. A request that
//! changes nothing (a delete that matches no key, a txn whose branch only reads) leaves the
//! revision as it is. An *advance* (`Store::advance`, the log's `Advance` entry that keeps the
//! shards of one node aligned, design.md §5) moves the revision forward without changing any
//! key: the revisions it skips hold no change, like the revision of etcd's initial empty store,
//! and a read at one of them sees the state as of the last change before it.
//!
//! Two structures hold the data (both private, so a durable B-tree can replace them):
//!
//! - the **key index** (`key → KeyIndex`): for each key the revisions of its versions,
//!   grouped in *generations* (one per life of the key: create … delete), see
//!   `mvcc/key_index.rs`;
//! - the **history** (`(main, sub) → record`): the full key-value (or tombstone) written at
//!   each revision. It doubles as the revision index that watch catch-up walks.
//!
//! A read "at revision R" asks each key's index for its newest revision with `main <= R` in the
//! generation alive at R, then fetches that record from the history.
//!
//! # Worked example
//!
//! ```text
//! rev 1  (empty store)
//! put foo=a               rev 2: foo {create 2, mod 2, version 1}
//! txn put foo=b, bar=x    rev 3: foo@3.0 {create 2, mod 3, version 2}, bar@3.1 {create 3, ...}
//! delete foo              rev 4: tombstone foo@4.0 — foo's generation {2.0, 3.0, 4.0(t)} ends
//! put foo=c               rev 5: foo {create 5, mod 5, version 1} — a new generation
//! delete nothing          rev 5 (no change, no new revision)
//! range foo @3            -> foo=b (version 2);  range foo @4 -> nothing
//! compact 4               keeps, per key, the newest version <= 4 unless it is a tombstone:
//!                           bar@3.1 stays (still readable at 4), foo@2.0 foo@3.0 foo@4.0 go
//! range @3                -> Compacted (3 < 4);  range @4 -> bar only;  compact 4 -> Compacted
//! advance 8               rev 8: no key changes, no event; 6, 7, 8 hold no change
//! range foo @7            -> foo=c (as of rev 5, the last change at or below 7)
//! put bar=y               rev 9 (advance + 1)
//! ```
//!
//! # Rules taken from etcd 3.4 (and checked against the reference server)
//!
//! - Header revisions: every response carries the store's current revision after the request.
//! - Range: `limit` is ignored while fetching when a sort order or a min/max revision filter is
//!   set, and the filters run after the read; `count` is the number of keys in the range at the
//!   revision, before filters and limit. A non-KEY sort target with order NONE sorts ascending,
//!   yet (as in etcd) the fetch is still cut at `limit + 1` keys in key order first.
//! - Txn: every compare, nested ones included, is evaluated against the state before the txn;
//!   then every put on the chosen path is checked (ignore_value/ignore_lease need the key, the
//!   lease must exist), then every range's revision; only then is anything written. Reads inside
//!   a txn see its earlier writes. A failure while applying rolls the whole txn back.
//! - Events carry `prev_kv` = the key as of `mod_revision - 1`, as etcd's watch server fills it.
//! - Compact: `compact(rev)` fails with Compacted when `rev <= compact_revision` (a fresh store
//!   accepts `compact(0)` once, like etcd whose initial compact revision is -1) and with
//!   FutureRevision when `rev > revision()`. Reads at exactly the compact revision work.
//!   Inside a txn a range's explicit revision is checked against that raw value, so a
//!   negative revision fails as Compacted on a never-compacted store (etcd 3.4.23 does so).
//! - HashKV: refused at or below the compact revision; reports compact revision -1 when never
//!   compacted. The hash itself is ours (CRC-32 IEEE over our record encoding), so it agrees
//!   between Ballast replicas, never with etcd's number.
//!
//! Invariant: every revision held by a key index has exactly one history record and vice versa.

pub mod export;
mod history;
pub mod image;
pub mod import;
mod key_index;
pub mod paging;
#[cfg(test)]
mod tests;

use std::cmp::Ordering;
use std::collections::BTreeMap;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::keys::KeyRange;
use crate::lease::{LeaseTimeToLive, Lessor};
use crate::types::*;
use history::{History, Record};
use key_index::KeyIndex;
use paging::Paging;

/// A revision with its sub revision: the position of one change inside a write request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Rev {
    pub(crate) main: Revision,
    pub(crate) sub: i64,
}

/// Events read from history, and where the next read resumes.
#[derive(Clone, Debug, PartialEq)]
pub struct EventsChunk {
    pub events: Vec<Event>,
    pub next_revision: Revision,
}

/// One shard's MVCC state and lease table.
#[derive(Clone, Debug)]
pub struct Store {
    index: BTreeMap<Bytes, KeyIndex>,
    history: History,
    current_revision: Revision,
    /// etcd's `compactMainRev`: -1 until the first compaction.
    compact_main: Revision,
    lessor: Lessor,
    /// `Some` on a durable store: memory is a cache of the image (`mvcc/paging.rs`).
    paging: Option<Paging>,
    /// An [`Store::advance`] moved the revision since the journal was last taken: the image's
    /// revision is stale although no record, key or lease changed (journaling stores only).
    advanced: bool,
    /// A take of the journal in progress (`mvcc/image.rs`): a checkpoint's, between its steps.
    taking: Option<image::Taking>,
}

/// What one write request has done so far, so it can be committed or undone.
struct WriteCtx {
    /// The revision the writes take: current revision + 1.
    main: Revision,
    events: Vec<Event>,
    undo: Vec<Undo>,
}

enum Undo {
    Index { key: Bytes, rev: Rev },
    Attached { lease: LeaseId, key: Bytes },
    Detached { lease: LeaseId, key: Bytes },
}

/// Which branch each txn took: the top one, then the nested txns of the chosen branch in order.
struct TxnPath {
    succeeded: bool,
    nested: Vec<TxnPath>,
}

impl Default for Store {
    fn default() -> Store {
        Store::new()
    }
}

impl Store {
    pub fn new() -> Store {
        Store {
            index: BTreeMap::new(),
            history: History::default(),
            current_revision: 1,
            compact_main: -1,
            lessor: Lessor::default(),
            paging: None,
            advanced: false,
            taking: None,
        }
    }

    /// Notes that a key's index changed (journal of a durable store).
    fn key_changed(&mut self, key: &Bytes) {
        if let Some(p) = &mut self.paging {
            if !p.keys_changed.contains(key) {
                p.keys_changed.insert(key.clone());
            }
        }
    }

    pub fn revision(&self) -> Revision {
        self.current_revision
    }

    /// The last compaction's revision, 0 if never compacted.
    pub fn compact_revision(&self) -> Revision {
        self.compact_main.max(0)
    }

    // ---------------------------------------------------------------- reads

    /// The key's version as of revision `at` (None if it did not exist then).
    fn kv_at(&self, key: &[u8], at: Revision) -> Option<&KeyValue> {
        let rev = self.index.get(key)?.get(at)?;
        let record = self
            .history
            .get(rev)
            .expect("indexed revision has a record");
        assert!(!record.tombstone, "a read resolved to a tombstone");
        Some(&record.kv)
    }

    /// The revision holding each key of `kr` alive at `at`, in key order (key index only).
    fn revs_at<'a>(&'a self, kr: KeyRange<'a>, at: Revision) -> impl Iterator<Item = Rev> + 'a {
        kr.bounds()
            .into_iter()
            .flat_map(move |b| self.index.range::<[u8], _>(b))
            .filter_map(move |(_, ki)| ki.get(at))
    }

    fn record_kv(&self, rev: Rev) -> &KeyValue {
        &self
            .history
            .get(rev)
            .expect("indexed revision has a record")
            .kv
    }

    /// Every key of `kr` alive at `at`, in key order, with its version then.
    fn kvs_at<'a>(
        &'a self,
        kr: KeyRange<'a>,
        at: Revision,
    ) -> impl Iterator<Item = &'a KeyValue> + 'a {
        self.revs_at(kr, at).map(move |rev| self.record_kv(rev))
    }

    /// Serves a range as of `cur_rev` (the revision a request with `revision == 0` reads).
    fn range_at(&self, r: &RangeRequest, cur_rev: Revision) -> Result<RangeResponse> {
        let fetch_limit = range_fetch_limit(r);
        if r.revision > cur_rev {
            return Err(Error::FutureRevision {
                revision: r.revision,
                current: cur_rev,
            });
        }
        let at = if r.revision <= 0 { cur_rev } else { r.revision };
        if at < self.compact_main {
            return Err(Error::Compacted {
                compact_revision: self.compact_revision(),
            });
        }
        let kr = KeyRange::new(&r.key, &r.range_end);
        let mut count = 0i64;
        let mut kvs = Vec::new();
        // Counting needs the key index only; versions are read for the keys returned.
        for rev in self.revs_at(kr, at) {
            count += 1;
            if kvs.len() < fetch_limit {
                kvs.push(self.record_kv(rev).clone());
            }
        }
        if r.max_mod_revision != 0 {
            kvs.retain(|kv| kv.mod_revision <= r.max_mod_revision);
        }
        if r.min_mod_revision != 0 {
            kvs.retain(|kv| kv.mod_revision >= r.min_mod_revision);
        }
        if r.max_create_revision != 0 {
            kvs.retain(|kv| kv.create_revision <= r.max_create_revision);
        }
        if r.min_create_revision != 0 {
            kvs.retain(|kv| kv.create_revision >= r.min_create_revision);
        }
        sort_range_kvs(&mut kvs, r);
        let mut more = false;
        if r.limit > 0 && kvs.len() > r.limit as usize {
            kvs.truncate(r.limit as usize);
            more = true;
        }
        if r.keys_only {
            for kv in &mut kvs {
                kv.value = Bytes::new();
            }
        }
        Ok(RangeResponse { kvs, more, count })
    }

    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse> {
        self.range_at(req, self.current_revision)
    }

    // ---------------------------------------------------------------- writes

    fn begin(&self) -> WriteCtx {
        WriteCtx {
            main: self.current_revision + 1,
            events: Vec::new(),
            undo: Vec::new(),
        }
    }

    /// Runs `f` as one write request: commits its changes under one new revision, or undoes
    /// every change if it fails.
    fn write<T>(
        &mut self,
        f: impl FnOnce(&mut Store, &mut WriteCtx) -> Result<T>,
    ) -> Result<Applied<T>> {
        let mut ctx = self.begin();
        match f(self, &mut ctx) {
            Ok(response) => {
                if !ctx.events.is_empty() {
                    self.current_revision = ctx.main;
                }
                Ok(Applied {
                    response,
                    revision: self.current_revision,
                    events: ctx.events,
                })
            }
            Err(e) => {
                self.rollback(ctx);
                Err(e)
            }
        }
    }

    fn rollback(&mut self, ctx: WriteCtx) {
        for undo in ctx.undo.into_iter().rev() {
            match undo {
                Undo::Index { key, rev } => {
                    let ki = self.index.get_mut(&key).expect("undo of an indexed key");
                    ki.undo(rev);
                    if ki.is_empty() {
                        self.index.remove(&key);
                    }
                    self.key_changed(&key);
                }
                Undo::Attached { lease, key } => {
                    self.lessor.detach(lease, &key);
                }
                Undo::Detached { lease, key } => {
                    self.lessor.attach(lease, &key);
                }
            }
        }
        self.history.remove_main(ctx.main);
    }

    /// The revision a read inside the write request resolves `revision == 0` to.
    fn read_rev(&self, ctx: &WriteCtx) -> Revision {
        if ctx.events.is_empty() {
            self.current_revision
        } else {
            ctx.main
        }
    }

    fn next_rev(ctx: &WriteCtx) -> Rev {
        Rev {
            main: ctx.main,
            sub: ctx.events.len() as i64,
        }
    }

    fn write_put(&mut self, ctx: &mut WriteCtx, key: &Bytes, value: Bytes, lease: LeaseId) {
        // Own copies: a request's bytes are usually slices of a whole network buffer, which a
        // stored slice would keep alive for as long as the key or version stays in memory.
        let key = &match self.index.get_key_value(&key[..]) {
            Some((stored, _)) => stored.clone(),
            None => Bytes::copy_from_slice(key),
        };
        let value = Bytes::copy_from_slice(&value);
        let rev = Self::next_rev(ctx);
        let prev_kv = self.kv_at(key, ctx.main - 1).cloned();
        let current = self.kv_at(key, ctx.main);
        let (create_revision, version, old_lease) = match current {
            Some(kv) => (kv.create_revision, kv.version + 1, kv.lease),
            None => (ctx.main, 1, 0),
        };
        let kv = KeyValue {
            key: key.clone(),
            create_revision,
            mod_revision: ctx.main,
            version,
            value,
            lease,
        };
        self.index
            .entry(key.clone())
            .or_insert_with(KeyIndex::new)
            .put(rev);
        self.key_changed(key);
        self.record_change(ctx, rev, kv, prev_kv, EventKind::Put, old_lease);
        if lease != 0 && self.lessor.attach(lease, key) {
            ctx.undo.push(Undo::Attached {
                lease,
                key: key.clone(),
            });
        }
    }

    fn write_delete(&mut self, ctx: &mut WriteCtx, key: &Bytes) {
        let rev = Self::next_rev(ctx);
        let prev_kv = self.kv_at(key, ctx.main - 1).cloned();
        let old_lease = self
            .kv_at(key, ctx.main)
            .expect("deleting a live key")
            .lease;
        let kv = KeyValue {
            key: key.clone(),
            mod_revision: ctx.main,
            ..KeyValue::default()
        };
        self.index
            .get_mut(key)
            .expect("live key is indexed")
            .tombstone(rev);
        self.key_changed(key);
        self.record_change(ctx, rev, kv, prev_kv, EventKind::Delete, old_lease);
    }

    /// What a put and a delete share once the key index has the new revision: the undo entry,
    /// the history record, the key leaving its old lease, and the event.
    fn record_change(
        &mut self,
        ctx: &mut WriteCtx,
        rev: Rev,
        kv: KeyValue,
        prev_kv: Option<KeyValue>,
        kind: EventKind,
        old_lease: LeaseId,
    ) {
        let key = kv.key.clone();
        ctx.undo.push(Undo::Index {
            key: key.clone(),
            rev,
        });
        self.history.insert(
            rev,
            Record {
                kv: kv.clone(),
                tombstone: kind == EventKind::Delete,
            },
        );
        if old_lease != 0 && self.lessor.detach(old_lease, &key) {
            ctx.undo.push(Undo::Detached {
                lease: old_lease,
                key,
            });
        }
        ctx.events.push(Event { kind, kv, prev_kv });
    }

    fn apply_put(&mut self, ctx: &mut WriteCtx, req: &PutRequest) -> Result<PutResponse> {
        if req.lease != 0 && !self.lessor.exists(req.lease) {
            return Err(Error::LeaseNotFound {
                lease_id: req.lease,
            });
        }
        let prev = self.kv_at(&req.key, ctx.main).cloned();
        let (mut value, mut lease) = (req.value.clone(), req.lease);
        if req.ignore_value || req.ignore_lease {
            let Some(prev) = &prev else {
                return Err(Error::KeyNotFound);
            };
            if req.ignore_value {
                value = prev.value.clone();
            }
            if req.ignore_lease {
                lease = prev.lease;
            }
        }
        self.write_put(ctx, &req.key, value, lease);
        Ok(PutResponse {
            prev_kv: if req.prev_kv { prev } else { None },
        })
    }

    fn apply_delete(
        &mut self,
        ctx: &mut WriteCtx,
        req: &DeleteRangeRequest,
    ) -> DeleteRangeResponse {
        let at = self.read_rev(ctx);
        let kr = KeyRange::new(&req.key, &req.range_end);
        let prev_kvs: Vec<KeyValue> = self.kvs_at(kr, at).cloned().collect();
        for kv in &prev_kvs {
            self.write_delete(ctx, &kv.key);
        }
        let deleted = prev_kvs.len() as i64;
        DeleteRangeResponse {
            deleted,
            prev_kvs: if req.prev_kv { prev_kvs } else { Vec::new() },
        }
    }

    pub fn put(&mut self, req: &PutRequest) -> Result<Applied<PutResponse>> {
        self.write(|s, ctx| s.apply_put(ctx, req))
    }

    pub fn delete_range(
        &mut self,
        req: &DeleteRangeRequest,
    ) -> Result<Applied<DeleteRangeResponse>> {
        self.write(|s, ctx| Ok(s.apply_delete(ctx, req)))
    }

    // ---------------------------------------------------------------- txn

    fn compare_holds(&self, c: &Compare) -> bool {
        let kr = KeyRange::new(&c.key, &c.range_end);
        let mut any = false;
        for kv in self.kvs_at(kr, self.current_revision) {
            any = true;
            if !compare_kv(c, kv) {
                return false;
            }
        }
        // A missing key compares as all-zero, except that a value compare always fails
        // (etcd: an empty value and a missing one cannot be told apart on the wire).
        any || (c.target != CompareTarget::Value && compare_kv(c, &KeyValue::default()))
    }

    fn compare_path(&self, t: &TxnRequest) -> TxnPath {
        let succeeded = t.compare.iter().all(|c| self.compare_holds(c));
        let ops = if succeeded { &t.success } else { &t.failure };
        let nested = ops
            .iter()
            .filter_map(|op| match op {
                RequestOp::Txn(nt) => Some(self.compare_path(nt)),
                _ => None,
            })
            .collect();
        TxnPath { succeeded, nested }
    }

    /// Visits every op on the chosen path (nested txns descended, not visited themselves).
    fn visit_path(
        t: &TxnRequest,
        path: &TxnPath,
        f: &mut impl FnMut(&RequestOp) -> Result<()>,
    ) -> Result<()> {
        let ops = if path.succeeded {
            &t.success
        } else {
            &t.failure
        };
        let mut nested = path.nested.iter();
        for op in ops {
            match op {
                RequestOp::Txn(nt) => {
                    Self::visit_path(nt, nested.next().expect("path per nested txn"), f)?
                }
                op => f(op)?,
            }
        }
        Ok(())
    }

    fn apply_ops(
        &mut self,
        ctx: &mut WriteCtx,
        t: &TxnRequest,
        path: &TxnPath,
    ) -> Result<TxnResponse> {
        let ops = if path.succeeded {
            &t.success
        } else {
            &t.failure
        };
        let mut nested = path.nested.iter();
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            responses.push(match op {
                RequestOp::Range(r) => ResponseOp::Range(self.range_at(r, self.read_rev(ctx))?),
                RequestOp::Put(p) => ResponseOp::Put(self.apply_put(ctx, p)?),
                RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(self.apply_delete(ctx, d)),
                RequestOp::Txn(nt) => ResponseOp::Txn(self.apply_ops(
                    ctx,
                    nt,
                    nested.next().expect("path per nested txn"),
                )?),
            });
        }
        Ok(TxnResponse {
            succeeded: path.succeeded,
            responses,
        })
    }

    pub fn txn(&mut self, req: &TxnRequest) -> Result<Applied<TxnResponse>> {
        let path = self.compare_path(req);
        if !is_read_only(req) {
            Self::visit_path(req, &path, &mut |op| match op {
                RequestOp::Put(p) => {
                    if (p.ignore_value || p.ignore_lease)
                        && self.kv_at(&p.key, self.current_revision).is_none()
                    {
                        return Err(Error::KeyNotFound);
                    }
                    if p.lease != 0 && !self.lessor.exists(p.lease) {
                        return Err(Error::LeaseNotFound { lease_id: p.lease });
                    }
                    Ok(())
                }
                _ => Ok(()),
            })?;
        }
        Self::visit_path(req, &path, &mut |op| match op {
            RequestOp::Range(r) if r.revision != 0 => {
                if r.revision > self.current_revision {
                    Err(Error::FutureRevision {
                        revision: r.revision,
                        current: self.current_revision,
                    })
                } else if r.revision < self.compact_main {
                    // etcd compares against its raw compact revision here, so on a store never
                    // compacted (-1) a negative revision fails too.
                    Err(Error::Compacted {
                        compact_revision: self.compact_revision(),
                    })
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        })?;
        self.write(|s, ctx| s.apply_ops(ctx, req, &path))
    }

    // ---------------------------------------------------------------- compaction

    pub fn compact(&mut self, revision: Revision) -> Result<Applied<()>> {
        if revision <= self.compact_main {
            return Err(Error::Compacted {
                compact_revision: self.compact_revision(),
            });
        }
        if revision > self.current_revision {
            return Err(Error::FutureRevision {
                revision,
                current: self.current_revision,
            });
        }
        // A take in steps reads key indexes and records as they were when it began: finish
        // it before they change.
        self.finish_steps();
        self.compact_main = revision;
        // Every key in memory now; on a paged store the others follow as they are loaded.
        let mut changed = Vec::new();
        let mut dropped = Vec::new();
        for (key, ki) in self.index.iter_mut() {
            let gone = ki.compact_dropping(revision);
            if !gone.is_empty() {
                dropped.extend(gone);
                changed.push((key.clone(), ki.is_empty()));
            }
        }
        for (key, emptied) in changed {
            if emptied {
                self.index.remove(&key);
            }
            self.key_changed(&key);
        }
        for rev in dropped {
            self.history.remove(rev);
        }
        Ok(Applied {
            response: (),
            revision: self.current_revision,
            events: Vec::new(),
        })
    }

    // ---------------------------------------------------------------- advance

    /// Moves the store revision to `max(revision(), to)` without changing any key (design.md
    /// §5: a shard that falls behind the others catches up). Nothing else changes: no record,
    /// no event, no lease; the next write takes the new revision + 1. A read at a revision it
    /// skipped sees the state as of the last change before it, as etcd answers a read at any
    /// revision that holds no change. `to` at or below the current revision (negative too)
    /// changes nothing. On a journaling store a move is a change the next checkpoint writes
    /// (the image's revision), so [`Store::pending_changes`] counts it.
    pub fn advance(&mut self, to: Revision) -> Applied<()> {
        if to > self.current_revision {
            self.current_revision = to;
            if self.paging.is_some() {
                self.advanced = true;
            }
        }
        Applied {
            response: (),
            revision: self.current_revision,
            events: Vec::new(),
        }
    }

    // ---------------------------------------------------------------- watch catch-up

    /// Every event with `mod_revision >= from_revision` on keys of `[key, range_end)` (etcd's
    /// range rules), in revision order, each with the key's version as of `mod_revision - 1`
    /// as `prev_kv` when that is still readable.
    ///
    /// Fails with Compacted when `from_revision < compact_revision()`, as etcd's watch does; a
    /// watch from exactly the compact revision gets the puts of that revision (its deletes
    /// were compacted away, as in etcd). Whole revisions only: it stops before the first
    /// revision that starts once `max_events` events are collected, so a caller resumes from
    /// the last returned `mod_revision + 1`; one revision larger than `max_events` comes whole.
    pub fn events_since(
        &self,
        key: &[u8],
        range_end: &[u8],
        from_revision: Revision,
        max_events: usize,
    ) -> Result<Vec<Event>> {
        Ok(self
            .events_chunk(key, range_end, from_revision, max_events)?
            .events)
    }

    /// [`Store::events_since`], with the revision to resume from. On a paged store the chunk
    /// also stops where the history in memory stops (after [`Store::missing`] with
    /// `Access::Events` returned `None`, it starts at `from_revision`).
    pub fn events_chunk(
        &self,
        key: &[u8],
        range_end: &[u8],
        from_revision: Revision,
        max_events: usize,
    ) -> Result<EventsChunk> {
        if from_revision < self.compact_main {
            return Err(Error::Compacted {
                compact_revision: self.compact_revision(),
            });
        }
        let kr = KeyRange::new(key, range_end);
        let mut events: Vec<Event> = Vec::new();
        let from = Rev {
            main: from_revision.max(0),
            sub: 0,
        };
        let end = self.events_end(from);
        let mut full = false;
        for (rev, record) in self.history.range((std::ops::Bound::Included(from), end)) {
            if !kr.contains(&record.kv.key) {
                continue;
            }
            if events.len() >= max_events
                && events.last().is_some_and(|e| e.kv.mod_revision != rev.main)
            {
                full = true;
                break;
            }
            // Readable when mod_revision - 1 >= the compact revision.
            let prev_kv = if rev.main > self.compact_main {
                self.kv_at(&record.kv.key, rev.main - 1).cloned()
            } else {
                None
            };
            let kind = if record.tombstone {
                EventKind::Delete
            } else {
                EventKind::Put
            };
            events.push(Event {
                kind,
                kv: record.kv.clone(),
                prev_kv,
            });
        }
        let next = match (full, end) {
            (true, _) => events.last().map_or(from.main, |e| e.kv.mod_revision + 1),
            (false, std::ops::Bound::Excluded(hi)) => hi.main,
            (false, _) => self.current_revision + 1,
        };
        Ok(EventsChunk {
            events,
            next_revision: next,
        })
    }

    // ---------------------------------------------------------------- leases

    pub fn lease_grant(
        &mut self,
        id: LeaseId,
        ttl_secs: i64,
        now_ms: u64,
    ) -> Result<(LeaseId, i64)> {
        self.lessor.grant(id, ttl_secs, now_ms)
    }

    /// Revokes the lease and deletes its keys, in key order, under one new revision (none if
    /// it had no keys).
    pub fn lease_revoke(&mut self, id: LeaseId) -> Result<Applied<()>> {
        let keys: Vec<Bytes> = self
            .lessor
            .get(id)
            .ok_or(Error::LeaseNotFound { lease_id: id })?
            .keys
            .iter()
            .cloned()
            .collect();
        let applied = self.write(|s, ctx| {
            for key in &keys {
                s.write_delete(ctx, key);
            }
            Ok(())
        })?;
        self.lessor.remove(id)?;
        Ok(applied)
    }

    pub fn lease_keep_alive(&mut self, id: LeaseId, now_ms: u64) -> Result<i64> {
        self.lessor.keep_alive(id, now_ms)
    }

    pub fn lease_time_to_live(
        &self,
        id: LeaseId,
        with_keys: bool,
        now_ms: u64,
    ) -> Result<LeaseTimeToLive> {
        self.lessor.time_to_live(id, with_keys, now_ms)
    }

    /// Lease ids in ascending order.
    pub fn leases(&self) -> Vec<LeaseId> {
        self.lessor.ids()
    }

    /// Leases whose deadline is at or before `now_ms`, soonest first.
    pub fn expired_leases(&self, now_ms: u64) -> Vec<LeaseId> {
        self.lessor.expired(now_ms)
    }

    pub fn next_lease_deadline_ms(&self) -> Option<u64> {
        self.lessor.next_deadline_ms()
    }

    pub fn set_min_lease_ttl(&mut self, secs: i64) {
        self.lessor.set_min_ttl(secs);
    }

    pub fn min_lease_ttl(&self) -> i64 {
        self.lessor.min_ttl()
    }

    /// Restarts every lease's clock: deadline = `now_ms` + TTL + `extend_ms` (etcd's lessor
    /// promotion when a node becomes leader; deadlines are leader-local, not replicated).
    pub fn lease_refresh_all(&mut self, now_ms: u64, extend_ms: u64) {
        self.lessor.refresh_all(now_ms, extend_ms);
    }

    // ---------------------------------------------------------------- hashing and size

    /// CRC-32 (IEEE polynomial, crc32fast) over every stored version with revision <=
    /// `revision` (0 = current), in revision order. etcd 3.4's rules for the revision:
    /// `revision <= compact_revision` → Compacted, `> revision()` → FutureRevision.
    pub fn hash_kv(&self, revision: Revision) -> Result<HashKv> {
        if revision > 0 && revision <= self.compact_main {
            return Err(Error::Compacted {
                compact_revision: self.compact_revision(),
            });
        }
        if revision > self.current_revision {
            return Err(Error::FutureRevision {
                revision,
                current: self.current_revision,
            });
        }
        let upto = if revision <= 0 {
            self.current_revision
        } else {
            revision
        };
        let mut h = crc32fast::Hasher::new();
        h.update(b"ballast-hashkv-v1");
        for (rev, record) in self.history.range(
            ..Rev {
                main: upto + 1,
                sub: 0,
            },
        ) {
            hash_record(&mut h, rev, record);
        }
        Ok(HashKv {
            hash: h.finalize(),
            compact_revision: self.compact_main,
            hash_revision: upto,
        })
    }

    /// CRC-32 (IEEE) of the whole state: every stored version, the revisions and the lease
    /// table (id, granted TTL). Deadlines are not hashed: they are local to each node.
    pub fn hash(&self) -> u32 {
        let mut h = crc32fast::Hasher::new();
        h.update(b"ballast-hash-v1");
        h.update(&self.current_revision.to_be_bytes());
        h.update(&self.compact_main.to_be_bytes());
        for (rev, record) in self.history.iter() {
            hash_record(&mut h, rev, record);
        }
        for (id, ttl) in self.lessor.table() {
            h.update(&id.to_be_bytes());
            h.update(&ttl.to_be_bytes());
        }
        h.finalize()
    }

    /// Rough memory held by keys, values and index entries.
    pub fn approximate_size_bytes(&self) -> u64 {
        let index: u64 = self
            .index
            .iter()
            .map(|(k, ki)| paging::key_bytes(k, ki))
            .sum();
        self.history.approximate_size_bytes() + index
    }
}

#[cfg(test)]
impl Store {
    /// Checks the cross-structure invariants: index ⇔ history, and lease attachments ⇔ the
    /// `lease` field of each key's current version.
    pub(crate) fn check_invariants(&self) {
        let mut indexed = 0;
        for (key, ki) in &self.index {
            assert!(!ki.is_empty(), "empty key index kept for {key:?}");
            for (rev, tombstone) in ki.revisions() {
                let record = self
                    .history
                    .get(rev)
                    .expect("indexed revision has a record");
                assert_eq!(&record.kv.key, key);
                assert_eq!(record.tombstone, tombstone);
                assert!(rev.main <= self.current_revision);
                indexed += 1;
            }
            if let Some(kv) = self.kv_at(key, self.current_revision) {
                if kv.lease != 0 {
                    let lease = self.lessor.get(kv.lease).expect("a key's lease exists");
                    assert!(
                        lease.keys.contains(key),
                        "{key:?} not attached to its lease"
                    );
                }
            }
        }
        assert_eq!(
            indexed,
            self.history.iter().count(),
            "history holds unindexed records"
        );
        for id in self.lessor.ids() {
            for key in &self.lessor.get(id).expect("listed").keys {
                let lease = self.kv_at(key, self.current_revision).map(|kv| kv.lease);
                assert_eq!(
                    lease,
                    Some(id),
                    "{key:?} attached to {id} but its version says otherwise"
                );
            }
        }
    }
}

fn hash_record(h: &mut crc32fast::Hasher, rev: &Rev, record: &Record) {
    h.update(&rev.main.to_be_bytes());
    h.update(&rev.sub.to_be_bytes());
    h.update(&[u8::from(record.tombstone)]);
    let kv = &record.kv;
    h.update(&(kv.key.len() as u64).to_be_bytes());
    h.update(&kv.key);
    for n in [kv.create_revision, kv.mod_revision, kv.version, kv.lease] {
        h.update(&n.to_be_bytes());
    }
    h.update(&(kv.value.len() as u64).to_be_bytes());
    h.update(&kv.value);
}

fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    let ord = match c.target {
        CompareTarget::Value => {
            let want: &[u8] = match &c.target_union {
                Some(CompareValue::Value(v)) => v,
                _ => &[],
            };
            kv.value[..].cmp(want)
        }
        CompareTarget::Version => kv.version.cmp(&match c.target_union {
            Some(CompareValue::Version(v)) => v,
            _ => 0,
        }),
        CompareTarget::Create => kv.create_revision.cmp(&match c.target_union {
            Some(CompareValue::CreateRevision(v)) => v,
            _ => 0,
        }),
        CompareTarget::Mod => kv.mod_revision.cmp(&match c.target_union {
            Some(CompareValue::ModRevision(v)) => v,
            _ => 0,
        }),
        CompareTarget::Lease => kv.lease.cmp(&match c.target_union {
            Some(CompareValue::Lease(v)) => v,
            _ => 0,
        }),
    };
    match c.result {
        CompareResult::Equal => ord == Ordering::Equal,
        CompareResult::NotEqual => ord != Ordering::Equal,
        CompareResult::Greater => ord == Ordering::Greater,
        CompareResult::Less => ord == Ordering::Less,
    }
}

/// Orders a range's key-ordered results as the request asks: a stable sort by its target (so
/// ties stay in key order); no sort target and no order keeps key order. A router merging
/// several shards' answers sorts their concatenation by key, then calls this.
pub fn sort_range_kvs(kvs: &mut [KeyValue], r: &RangeRequest) {
    let mut order = r.sort_order;
    if r.sort_target != SortTarget::Key && order == SortOrder::None {
        order = SortOrder::Ascend;
    }
    let by_target = |a: &KeyValue, b: &KeyValue| -> Ordering {
        match r.sort_target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Version => a.version.cmp(&b.version),
            SortTarget::Create => a.create_revision.cmp(&b.create_revision),
            SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
            SortTarget::Value => a.value.cmp(&b.value),
        }
    };
    match order {
        SortOrder::None => {}
        SortOrder::Ascend => kvs.sort_by(by_target),
        SortOrder::Descend => kvs.sort_by(|a, b| by_target(b, a)),
    }
}

/// How many versions a range reads (in key order, before its filters and sort): all of them
/// when sorting or filtering, none for a count, otherwise one more than asked, for `more`.
fn range_fetch_limit(r: &RangeRequest) -> usize {
    let filtered = r.min_mod_revision != 0
        || r.max_mod_revision != 0
        || r.min_create_revision != 0
        || r.max_create_revision != 0;
    if r.count_only {
        0
    } else if r.sort_order != SortOrder::None || filtered || r.limit <= 0 {
        usize::MAX
    } else {
        (r.limit as usize).saturating_add(1)
    }
}

/// A txn is read-only when neither branch, at any depth, holds a put or a delete.
fn is_read_only(t: &TxnRequest) -> bool {
    t.success.iter().chain(&t.failure).all(|op| match op {
        RequestOp::Range(_) => true,
        RequestOp::Txn(nt) => is_read_only(nt),
        RequestOp::Put(_) | RequestOp::DeleteRange(_) => false,
    })
}
