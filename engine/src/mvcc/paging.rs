//! A durable store's memory as a cache of its page-log image (design.md §7).
//!
//! The store's request logic (`mvcc.rs`) is synchronous and reads its in-memory structures:
//! the key index map and the history map. On a durable shard those maps hold only part of the
//! data: everything changed since the last checkpoint (pinned until a checkpoint has written
//! it), plus whatever was read from the image and not yet evicted. Before a request runs, its
//! caller asks [`Store::missing`] what the request would read that is not in memory, fetches
//! that from the image (`image::ImageReader::fetch`, asynchronous), hands it to
//! [`Store::insert_loaded`], and asks again; once nothing is missing the request runs, in the
//! same synchronous step as the last check, so nothing can be evicted in between.
//!
//! What "in memory" means, precisely:
//! - a key present in the key index map is authoritative;
//! - an absent key is known to be absent when it lies in a *resident span* (a key range every
//!   existing key of which is in the map) or when it changed since the image (compaction
//!   dropped it): only then may a read or a write treat it as absent;
//! - a history record present in the map is authoritative (records never change); every record
//!   with a revision `>= history_from` is in the map, and so is every record of the catch-up
//!   `window` if one is set.
//!
//! Epochs: the image is read as of its last durable checkpoint (its epoch). Memory holds every
//! change since that checkpoint, including the changes a running checkpoint is writing
//! (`*_inflight`), so loaded data is correct for every key and revision memory does not pin.
//! Data loaded from an older epoch than the store's is discarded (a checkpoint completed while
//! it was read, and eviction may since have dropped entries that the older image lacks).
//!
//! Compaction on a paged store is lazy: `compact` sets the compact revision and compacts the
//! key indexes in memory; every key index loaded later is compacted as it enters memory, and a
//! background pass (`compaction_step`) loads the whole key index chunk by chunk so the image
//! loses its superseded versions too. Reads never see the difference: a read below the compact
//! revision is refused either way, and hashes cover exactly the versions compaction keeps.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;

use bytes::Bytes;

use super::history::Record;
use super::key_index::KeyIndex;
use super::{Rev, Store};
use crate::keys::KeyRange;
use crate::types::*;

/// Key indexes one compaction-pass step loads.
pub const COMPACTION_STEP_KEYS: usize = 4096;
/// History records one watch catch-up load reads (a revision is never split).
pub const WINDOW_RECORDS: usize = 4096;

/// A key range `[start, end)`; `end == None` is unbounded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Span {
    pub start: Bytes,
    pub end: Option<Bytes>,
}

impl Span {
    pub fn point(key: &[u8]) -> Span {
        let mut end = Vec::with_capacity(key.len() + 1);
        end.extend_from_slice(key);
        end.push(0);
        Span {
            start: Bytes::copy_from_slice(key),
            end: Some(Bytes::from(end)),
        }
    }

    pub fn all() -> Span {
        Span {
            start: Bytes::new(),
            end: None,
        }
    }

    /// The keys etcd's `(key, range_end)` names, or `None` when that set is empty.
    fn of(key: &[u8], range_end: &[u8]) -> Option<Span> {
        match KeyRange::new(key, range_end) {
            KeyRange::Single(k) => Some(Span::point(k)),
            KeyRange::Interval { start, end } => {
                if end.is_some_and(|e| e <= start) {
                    return None;
                }
                Some(Span {
                    start: Bytes::copy_from_slice(start),
                    end: end.map(Bytes::copy_from_slice),
                })
            }
        }
    }

    pub fn contains(&self, k: &[u8]) -> bool {
        k >= &self.start[..] && self.end.as_ref().is_none_or(|e| k < &e[..])
    }

    pub fn bounds(&self) -> (Bound<&[u8]>, Bound<&[u8]>) {
        (
            Bound::Included(&self.start[..]),
            match &self.end {
                Some(e) => Bound::Excluded(&e[..]),
                None => Bound::Unbounded,
            },
        )
    }
}

/// Disjoint, non-adjacent key ranges (merged on insert).
#[derive(Clone, Debug, Default)]
pub(super) struct Spans {
    map: BTreeMap<Bytes, Option<Bytes>>,
}

/// `a >= b` for range ends, `None` being +infinity.
fn end_ge(a: &Option<Bytes>, b: &Option<Bytes>) -> bool {
    match (a, b) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => a >= b,
    }
}

impl Spans {
    pub(super) fn all() -> Spans {
        let mut s = Spans::default();
        s.add(Span::all());
        s
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    pub(super) fn clear(&mut self) {
        self.map.clear();
    }

    /// The span is inside one resident range.
    pub(super) fn covers(&self, span: &Span) -> bool {
        match self
            .map
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(&span.start[..])))
            .next_back()
        {
            Some((_, end)) => {
                end_ge(end, &span.end) && end.as_ref().is_none_or(|e| *e > span.start)
            }
            None => false,
        }
    }

    pub(super) fn contains_key(&self, k: &[u8]) -> bool {
        match self
            .map
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(k)))
            .next_back()
        {
            Some((_, end)) => end.as_ref().is_none_or(|e| &e[..] > k),
            None => false,
        }
    }

    pub(super) fn add(&mut self, span: Span) {
        if span.end.as_ref().is_some_and(|e| *e <= span.start) {
            return;
        }
        let (mut start, mut end) = (span.start, span.end);
        let before = self
            .map
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(&start[..])))
            .next_back()
            .map(|(s, e)| (s.clone(), e.clone()));
        if let Some((s, e)) = before {
            if e.as_ref().is_none_or(|e| *e >= start) {
                self.map.remove(&s);
                start = s;
                if end_ge(&e, &end) {
                    end = e;
                }
            }
        }
        loop {
            let next = self
                .map
                .range::<[u8], _>((Bound::Excluded(&start[..]), Bound::Unbounded))
                .next()
                .map(|(s, e)| (s.clone(), e.clone()));
            match next {
                Some((s, e)) if end.as_ref().is_none_or(|end| s <= *end) => {
                    self.map.remove(&s);
                    if end_ge(&e, &end) {
                        end = e;
                    }
                }
                _ => break,
            }
        }
        self.map.insert(start, end);
    }

    /// Takes one key out of the resident ranges (it is evicted: absence no longer known).
    pub(super) fn remove_key(&mut self, k: &[u8]) {
        let hit = self
            .map
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(k)))
            .next_back()
            .map(|(s, e)| (s.clone(), e.clone()));
        let Some((s, e)) = hit else { return };
        if e.as_ref().is_some_and(|e| &e[..] <= k) {
            return;
        }
        self.map.remove(&s);
        if &s[..] < k {
            self.map.insert(s, Some(Bytes::copy_from_slice(k)));
        }
        let after = Span::point(k).end.expect("a point span is bounded");
        if e.as_ref().is_none_or(|e| *e > after) {
            self.map.insert(after, e);
        }
    }
}

/// What a request reads (see the module comment).
#[derive(Clone, Copy, Debug)]
pub enum Access<'a> {
    Put(&'a PutRequest),
    DeleteRange(&'a DeleteRangeRequest),
    Txn(&'a TxnRequest),
    Range(&'a RangeRequest),
    LeaseRevoke(LeaseId),
    /// Watch catch-up (`Store::events_since`).
    Events {
        key: &'a [u8],
        range_end: &'a [u8],
        from: Revision,
    },
    /// Hashes: every key and every record.
    Everything,
    /// A snapshot's history read (`Store::history_chunk`).
    History {
        from: super::export::HistoryCursor,
        upto: Revision,
    },
}

/// What must be read from the image before a request can run.
#[derive(Clone, Debug, Default)]
pub struct Missing {
    pub(super) epoch: u64,
    /// Key index ranges; a `Some(n)` limit loads at most `n` keys of the range.
    pub(super) spans: Vec<(Span, Option<usize>)>,
    pub(super) revs: Vec<Rev>,
    /// History records from this revision up (bounded by [`WINDOW_RECORDS`]), below `to`.
    pub(super) history: Option<(Rev, Rev)>,
    /// Every history record.
    pub(super) all_history: bool,
}

impl Missing {
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty() && self.revs.is_empty() && self.history.is_none() && !self.all_history
    }
}

/// What was read from the image for a [`Missing`].
#[derive(Debug, Default)]
pub struct Loaded {
    pub(super) epoch: u64,
    /// Each span read (its end cut after the last key when a limit stopped it), with its keys.
    pub(super) spans: Vec<(Span, Vec<(Bytes, KeyIndex)>)>,
    pub(super) records: Vec<(Rev, Record)>,
    /// The history records read cover `[from, to)` completely.
    pub(super) window: Option<(Rev, Rev)>,
    pub(super) all_history: bool,
}

/// Sizes of the store's cache, for figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheFigures {
    pub keys: u64,
    pub records: u64,
    pub bytes: u64,
    pub evicted_keys: u64,
    pub evicted_records: u64,
    pub loads: u64,
}

/// The paging state of a durable store (see the module comment).
#[derive(Clone, Debug)]
pub(super) struct Paging {
    pub(super) resident: Spans,
    pub(super) history_from: Rev,
    pub(super) window: Option<(Rev, Rev)>,
    pub(super) epoch: u64,
    /// Keys whose index changed since the journal was last taken.
    pub(super) keys_changed: BTreeSet<Bytes>,
    /// Keys and revisions a running checkpoint is writing.
    pub(super) keys_inflight: BTreeSet<Bytes>,
    pub(super) revs_inflight: BTreeSet<Rev>,
    /// Last use of each key in memory (a tick), for eviction.
    used: HashMap<Bytes, u64>,
    tick: u64,
    /// The tick of the last eviction, and the key its sweep stopped at.
    swept_at: u64,
    evict_cursor: Bytes,
    /// Every key index of the image is compacted to this revision (-1: never compacted).
    pub(super) image_compacted: Revision,
    /// The running compaction pass: next key to load.
    pub(super) pass_cursor: Option<Bytes>,
    pub(super) figures: CacheFigures,
}

impl Paging {
    /// A store whose every key and record is in memory (new, or rebuilt whole).
    pub(super) fn complete(epoch: u64, compact_main: Revision) -> Paging {
        Paging::new(Spans::all(), Rev { main: 0, sub: 0 }, epoch, compact_main)
    }

    /// A store opened from an image: nothing but the counters and leases in memory.
    pub(super) fn opened(revision: Revision, epoch: u64, image_compacted: Revision) -> Paging {
        Paging::new(
            Spans::default(),
            Rev {
                main: revision + 1,
                sub: 0,
            },
            epoch,
            image_compacted,
        )
    }

    fn new(resident: Spans, history_from: Rev, epoch: u64, image_compacted: Revision) -> Paging {
        Paging {
            resident,
            history_from,
            window: None,
            epoch,
            keys_changed: BTreeSet::new(),
            keys_inflight: BTreeSet::new(),
            revs_inflight: BTreeSet::new(),
            used: HashMap::new(),
            tick: 0,
            swept_at: 0,
            evict_cursor: Bytes::new(),
            image_compacted,
            pass_cursor: None,
            figures: CacheFigures::default(),
        }
    }

    fn pinned_key(&self, k: &[u8]) -> bool {
        self.keys_changed.contains(k) || self.keys_inflight.contains(k)
    }

    fn touch(&mut self, k: &Bytes) {
        self.tick += 1;
        self.used.insert(k.clone(), self.tick);
    }

    /// A record with this revision is in memory if it exists.
    pub(super) fn record_resident(&self, rev: Rev) -> bool {
        rev >= self.history_from || self.window.is_some_and(|(lo, hi)| lo <= rev && rev < hi)
    }
}

/// Memory one key index takes, roughly: the map entry, the key's allocation, the generation
/// vectors and the eviction clock's entry: about 200 bytes besides the key and 16 per revision,
/// estimated from the layout (the memory benchmark checks the total).
pub(super) fn key_bytes(key: &Bytes, ki: &KeyIndex) -> u64 {
    key.len() as u64 + 200 + 16 * ki.len() as u64
}

fn record_bytes(r: &Record) -> u64 {
    (r.kv.key.len() + r.kv.value.len()) as u64 + super::history::RECORD_OVERHEAD_BYTES
}

fn push_span(out: &mut Vec<(Span, Vec<Revision>)>, key: &[u8], end: &[u8], revs: Vec<Revision>) {
    if let Some(span) = Span::of(key, end) {
        out.push((span, revs));
    }
}

/// Where a request reads: key ranges, each at some revisions.
fn spans_of(store: &Store, access: &Access, out: &mut Vec<(Span, Vec<Revision>)>) {
    let cur = store.current_revision;
    match access {
        Access::Put(p) => push_span(out, &p.key, b"", vec![cur]),
        Access::DeleteRange(d) => push_span(out, &d.key, &d.range_end, vec![cur]),
        Access::Range(r) => {
            let at = if r.revision <= 0 { cur } else { r.revision };
            push_span(out, &r.key, &r.range_end, vec![at]);
        }
        Access::Txn(t) => txn_spans(t, cur, out),
        Access::LeaseRevoke(id) => {
            if let Some(lease) = store.lessor.get(*id) {
                for k in &lease.keys {
                    push_span(out, k, b"", vec![cur]);
                }
            }
        }
        Access::Events { .. } | Access::History { .. } => {}
        Access::Everything => out.push((Span::all(), Vec::new())),
    }
}

fn txn_spans(t: &TxnRequest, cur: Revision, out: &mut Vec<(Span, Vec<Revision>)>) {
    for c in &t.compare {
        push_span(out, &c.key, &c.range_end, vec![cur]);
    }
    for op in t.success.iter().chain(&t.failure) {
        match op {
            RequestOp::Put(p) => push_span(out, &p.key, b"", vec![cur]),
            RequestOp::DeleteRange(d) => push_span(out, &d.key, &d.range_end, vec![cur]),
            RequestOp::Range(r) => {
                let mut revs = vec![cur];
                if r.revision > 0 {
                    revs.push(r.revision);
                }
                push_span(out, &r.key, &r.range_end, revs);
            }
            RequestOp::Txn(nt) => txn_spans(nt, cur, out),
        }
    }
}

impl Store {
    /// Whether this store pages (a durable store); `false`: everything is always in memory.
    pub fn is_paged(&self) -> bool {
        self.paging.is_some()
    }

    /// What `access` would read that is not in memory (`None`: it can run now). Call it again
    /// after [`Store::insert_loaded`]; a request runs in the same synchronous step as the call
    /// that returned `None`.
    pub fn missing(&mut self, access: &Access) -> Option<Missing> {
        let paging = self.paging.as_ref()?;
        let mut m = Missing {
            epoch: paging.epoch,
            ..Missing::default()
        };
        if let Access::Events {
            key,
            range_end,
            from,
        } = *access
        {
            self.events_missing(key, range_end, from, &mut m);
            return (!m.is_empty()).then_some(m);
        }
        if let Access::History { from, upto } = *access {
            self.history_missing(from, upto, &mut m);
            return (!m.is_empty()).then_some(m);
        }
        let mut spans = Vec::new();
        spans_of(self, access, &mut spans);
        for (span, _) in &spans {
            if !paging.resident.covers(span) {
                m.spans.push((span.clone(), None));
            }
        }
        if !m.spans.is_empty() {
            return Some(m);
        }
        if matches!(access, Access::Everything) {
            if paging.history_from > (Rev { main: 0, sub: 0 }) {
                m.all_history = true;
                return Some(m);
            }
            return None;
        }
        let mut touched = Vec::new();
        if let Access::Range(r) = access {
            // A range reads the versions of the keys it returns only (`range_fetch_limit`).
            let at = if r.revision <= 0 {
                self.current_revision
            } else {
                r.revision
            };
            let limit = super::range_fetch_limit(r);
            let kr = KeyRange::new(&r.key, &r.range_end);
            for rev in self.revs_at(kr, at).take(limit) {
                if self.history.get(rev).is_none() {
                    m.revs.push(rev);
                }
            }
            for (span, _) in &spans {
                touched.extend(
                    self.index
                        .range::<[u8], _>(span.bounds())
                        .map(|(k, _)| k.clone()),
                );
            }
        }
        for (span, revs) in spans.iter().filter(|_| !matches!(access, Access::Range(_))) {
            for (key, ki) in self.index.range::<[u8], _>(span.bounds()) {
                touched.push(key.clone());
                for &at in revs {
                    if let Some(rev) = ki.get(at) {
                        if self.history.get(rev).is_none() {
                            m.revs.push(rev);
                        }
                    }
                }
            }
        }
        let paging = self.paging.as_mut().expect("paged");
        for k in &touched {
            paging.touch(k);
        }
        (!m.is_empty()).then_some(m)
    }

    /// Whether [`Store::events_chunk`] from `from` reads only memory (always, unpaged).
    pub fn events_resident(&self, key: &[u8], range_end: &[u8], from: Revision) -> bool {
        if self.paging.is_none() {
            return true;
        }
        let mut m = Missing::default();
        self.events_missing(key, range_end, from, &mut m);
        m.is_empty()
    }

    fn events_missing(&self, key: &[u8], range_end: &[u8], from: Revision, m: &mut Missing) {
        let paging = self.paging.as_ref().expect("paged");
        if from < self.compact_main {
            return; // refused as compacted
        }
        let from_rev = Rev {
            main: from.max(0),
            sub: 0,
        };
        if !paging.record_resident(from_rev) {
            m.history = Some((from_rev, paging.history_from));
            return;
        }
        let kr = KeyRange::new(key, range_end);
        let end = self.events_end(from_rev);
        let mut keys: Vec<(Bytes, Option<Revision>)> = Vec::new();
        for (rev, record) in self.history.range((Bound::Included(from_rev), end)) {
            if kr.contains(&record.kv.key) {
                // The key's index is needed even without a prev_kv: loading it compacts it,
                // which drops a record compaction removed but the image still holds.
                let prev = (rev.main > self.compact_main).then_some(rev.main - 1);
                keys.push((record.kv.key.clone(), prev));
            }
        }
        for (k, at) in &keys {
            match self.index.get(k) {
                Some(ki) => {
                    if let Some(rev) = at.and_then(|at| ki.get(at)) {
                        if self.history.get(rev).is_none() {
                            m.revs.push(rev);
                        }
                    }
                }
                None if self.key_known_absent(k) => {}
                None => m.spans.push((Span::point(k), None)),
            }
        }
        m.spans.dedup();
    }

    /// Where the records resident from `from` stop being contiguous in memory.
    pub(super) fn events_end(&self, from: Rev) -> Bound<Rev> {
        match &self.paging {
            None => Bound::Unbounded,
            Some(p) => match p.window {
                Some((lo, hi)) if lo <= from && from < hi && hi < p.history_from => {
                    Bound::Excluded(hi)
                }
                _ => Bound::Unbounded,
            },
        }
    }

    pub(super) fn key_known_absent(&self, k: &[u8]) -> bool {
        self.paging
            .as_ref()
            .is_some_and(|p| p.resident.contains_key(k) || p.pinned_key(k))
    }

    /// Puts what was read from the image into memory, except anything memory already knows
    /// better (see the module comment). Data of an older epoch is dropped.
    pub fn insert_loaded(&mut self, loaded: Loaded) {
        let compact_main = self.compact_main;
        let Some(paging) = self.paging.as_mut() else {
            return;
        };
        if loaded.epoch != paging.epoch {
            return;
        }
        paging.figures.loads += 1;
        // Revisions the compaction of loaded key indexes dropped (records to remove).
        let mut dropped_revs: Vec<Rev> = Vec::new();
        for (span, keys) in loaded.spans {
            for (key, mut ki) in keys {
                if self.index.contains_key(&key) || paging.pinned_key(&key) {
                    continue;
                }
                if compact_main > paging.image_compacted {
                    let dropped = ki.compact_dropping(compact_main);
                    if !dropped.is_empty() {
                        dropped_revs.extend(dropped);
                        paging.keys_changed.insert(key.clone());
                    }
                }
                paging.tick += 1;
                paging.used.insert(key.clone(), paging.tick);
                if !ki.is_empty() {
                    self.index.insert(key, ki);
                }
            }
            paging.resident.add(span);
        }
        for (rev, record) in loaded.records {
            if !self.history.is_journaled(rev) && !paging.revs_inflight.contains(&rev) {
                self.history.insert_clean(rev, record);
            }
        }
        if let Some(window) = loaded.window {
            paging.window = Some(window);
            if window.1 >= paging.history_from {
                paging.history_from = paging.history_from.min(window.0);
                paging.window = None;
            }
        }
        if loaded.all_history {
            paging.history_from = Rev { main: 0, sub: 0 };
            paging.window = None;
        }
        for rev in dropped_revs {
            self.history.remove(rev);
        }
    }

    /// The next step of the background compaction pass: what to load, or `None` when the
    /// image is compacted to the compact revision.
    pub fn compaction_missing(&mut self) -> Option<Missing> {
        let compact_main = self.compact_main;
        let paging = self.paging.as_mut()?;
        if paging.image_compacted >= compact_main {
            paging.pass_cursor = None;
            return None;
        }
        let start = paging.pass_cursor.get_or_insert_with(Bytes::new).clone();
        Some(Missing {
            epoch: paging.epoch,
            spans: vec![(Span { start, end: None }, Some(COMPACTION_STEP_KEYS))],
            ..Missing::default()
        })
    }

    /// Records a compaction step's load: `loaded` came from [`Store::compaction_missing`].
    pub fn compaction_loaded(&mut self, loaded: Loaded) {
        let target = self.compact_main;
        let Some(paging) = self.paging.as_ref() else {
            return;
        };
        if loaded.epoch != paging.epoch {
            return;
        }
        let next = loaded.spans.first().map(|(span, _)| span.end.clone());
        self.insert_loaded(loaded);
        let paging = self.paging.as_mut().expect("paged");
        match next {
            Some(Some(end)) => paging.pass_cursor = Some(end),
            _ => {
                paging.image_compacted = target;
                paging.pass_cursor = None;
            }
        }
    }

    /// Drops clean key indexes (a clock sweep: those not used since the previous eviction
    /// first) and clean records (oldest first) until each stays within half of
    /// `budget_bytes`. Its cost is one pass over the key indexes in memory, which the budget
    /// bounds.
    pub fn evict(&mut self, budget_bytes: u64) {
        let Some(paging) = self.paging.as_mut() else {
            return;
        };
        let half = budget_bytes / 2;
        let mut index_bytes: u64 = self.index.iter().map(|(k, ki)| key_bytes(k, ki)).sum();
        // A clock sweep from where the last one stopped: a key used since the previous
        // eviction is passed over once; a second lap takes any clean key.
        for lap in 0..2 {
            if index_bytes <= half {
                break;
            }
            let recent = if lap == 0 { paging.swept_at } else { u64::MAX };
            let cursor = paging.evict_cursor.clone();
            let order = self
                .index
                .range::<[u8], _>((Bound::Included(&cursor[..]), Bound::Unbounded))
                .chain(
                    self.index
                        .range::<[u8], _>((Bound::Unbounded, Bound::Excluded(&cursor[..]))),
                );
            let mut victims = Vec::new();
            let mut freed = 0;
            for (k, ki) in order {
                if index_bytes - freed <= half {
                    paging.evict_cursor = k.clone();
                    break;
                }
                let used = paging.used.get(k).copied().unwrap_or(0);
                if paging.pinned_key(k) || (used > recent && recent != u64::MAX) {
                    continue;
                }
                freed += key_bytes(k, ki);
                victims.push(k.clone());
            }
            for k in victims {
                let ki = self.index.remove(&k).expect("listed");
                index_bytes -= key_bytes(&k, &ki);
                paging.used.remove(&k);
                paging.resident.remove_key(&k);
                paging.figures.evicted_keys += 1;
            }
        }
        paging.swept_at = paging.tick;
        // Many scattered point spans cost memory too: forget them (keys stay authoritative).
        if paging.resident.len() > 65_536 {
            paging.resident.clear();
        }
        let mut history_bytes = self.history.approximate_size_bytes();
        if history_bytes > half {
            // Oldest first, only as many as needed.
            let mut victims: Vec<Rev> = Vec::new();
            let mut freed = 0;
            for (rev, record) in self.history.iter() {
                if history_bytes - freed <= half {
                    break;
                }
                if !self.history.is_journaled(*rev) && !paging.revs_inflight.contains(rev) {
                    freed += record_bytes(record);
                    victims.push(*rev);
                }
            }
            for rev in victims {
                if history_bytes <= half {
                    break;
                }
                if let Some(record) = self.history.evict(rev) {
                    history_bytes = history_bytes.saturating_sub(record_bytes(&record));
                    paging.figures.evicted_records += 1;
                    if rev >= paging.history_from {
                        paging.history_from = Rev {
                            main: rev.main,
                            sub: rev.sub + 1,
                        };
                    }
                    if paging.window.is_some_and(|(lo, hi)| lo <= rev && rev < hi) {
                        paging.window = None;
                    }
                }
            }
        }
        paging.used.retain(|k, _| self.index.contains_key(k));
    }

    /// Loads from the image so far (cheap, unlike [`Store::cache_figures`]).
    pub fn cache_loads(&self) -> u64 {
        self.paging.as_ref().map_or(0, |p| p.figures.loads)
    }

    /// Sizes of the cache (a pass over the key indexes in memory).
    pub fn cache_figures(&self) -> CacheFigures {
        let mut f = self.paging.as_ref().map(|p| p.figures).unwrap_or_default();
        f.keys = self.index.len() as u64;
        f.records = self.history.len() as u64;
        f.bytes = self.approximate_size_bytes();
        f
    }

    /// A checkpoint that took its changes with [`Store::take_changes`] is durable as
    /// `epoch`: what it wrote is in the image now, so memory stops pinning it.
    pub fn checkpoint_done(&mut self, epoch: u64) {
        if let Some(p) = self.paging.as_mut() {
            p.keys_inflight.clear();
            p.revs_inflight.clear();
            p.epoch = epoch;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::btree::{self, PAGE_SIZE};
    use crate::io::sim::SimDisk;
    use crate::io::Disk;
    use crate::mvcc::image::{ImageReader, StoreImage};
    use futures::executor::block_on;

    /// Loads until nothing is missing (the shard's loop, without its concurrency).
    fn prepare<D: Disk>(store: &mut Store, reader: &ImageReader<D>, access: &Access) {
        while let Some(missing) = store.missing(access) {
            store.insert_loaded(block_on(reader.fetch(&missing)).expect("fetch"));
        }
    }

    fn config() -> btree::Config {
        btree::Config {
            segment_bytes: 64 * PAGE_SIZE as u64,
            cache_bytes: 128 * PAGE_SIZE as u64,
            ..btree::Config::default()
        }
    }

    fn sp(a: &str, b: Option<&str>) -> Span {
        Span {
            start: Bytes::copy_from_slice(a.as_bytes()),
            end: b.map(|b| Bytes::copy_from_slice(b.as_bytes())),
        }
    }

    #[test]
    fn spans_merge_cover_and_split() {
        let mut s = Spans::default();
        s.add(sp("b", Some("d")));
        s.add(sp("f", Some("h")));
        assert!(s.covers(&sp("b", Some("d"))) && s.covers(&sp("c", Some("cz"))));
        assert!(!s.covers(&sp("c", Some("g"))) && !s.covers(&sp("a", Some("c"))));
        s.add(sp("d", Some("f")));
        assert_eq!(s.len(), 1);
        assert!(s.covers(&sp("b", Some("h"))));
        assert!(!s.covers(&sp("b", None)));
        s.remove_key(b"e");
        assert!(!s.contains_key(b"e") && s.contains_key(b"e\0") && s.contains_key(b"d"));
        assert!(s.covers(&sp("b", Some("e"))) && s.covers(&sp("e\0", Some("h"))));
        assert!(!s.covers(&Span::point(b"e")));
        s.add(Span::point(b"e"));
        assert_eq!(s.len(), 1);
        s.add(sp("a", None));
        assert!(s.covers(&sp("a", None)) && s.covers(&sp("zzz", None)));
        s.remove_key(b"a");
        assert!(s.covers(&sp("a\0", None)) && !s.contains_key(b"a"));
        let all = Spans::all();
        assert!(all.covers(&Span::all()) && all.covers(&Span::point(b"")));
    }
    /// A store of 200 keys `k000`..`k199`, all checkpointed to its image (so all clean).
    fn checkpointed_store(seed: u64) -> (StoreImage<SimDisk>, Store) {
        let (mut image, mut store, _) =
            block_on(StoreImage::open(SimDisk::new(seed), config(), 0)).unwrap();
        for i in 0..200 {
            store
                .put(&PutRequest {
                    key: Bytes::from(format!("k{i:03}")),
                    value: Bytes::from_static(b"v"),
                    ..PutRequest::default()
                })
                .unwrap();
        }
        let report = block_on(image.checkpoint(store.take_changes(), 1, b"", || async {})).unwrap();
        store.checkpoint_done(report.sequence);
        (image, store)
    }

    /// Eviction keeps the key indexes used since the previous eviction when it can, and brings
    /// the cache within its bound.
    #[test]
    fn eviction_keeps_recently_used_keys_within_the_bound() {
        let (image, mut store) = checkpointed_store(21);
        let reader = image.reader();
        prepare(&mut store, &reader, &Access::Everything);
        store.evict(u64::MAX); // starts the clock: everything loaded so far counts as old
        let hot: Vec<Bytes> = (0..20)
            .map(|i| Bytes::from(format!("k{:03}", i * 10)))
            .collect();
        for k in &hot {
            let r = RangeRequest {
                key: k.clone(),
                ..RangeRequest::default()
            };
            prepare(&mut store, &reader, &Access::Range(&r));
        }
        let per_key = key_bytes_of(&store, &hot[0]);
        let budget = 2 * 50 * per_key; // half of it for key indexes: room for 50 keys
        store.evict(budget);
        assert!(store.index.len() <= 50, "{} keys stayed", store.index.len());
        assert!(store.index.len() >= 40, "{} keys stayed", store.index.len());
        for k in &hot {
            assert!(
                store.index.contains_key(k),
                "{k:?} was used since the last eviction"
            );
        }
        // What was evicted reads back from the image.
        let all = RangeRequest {
            key: Bytes::from_static(b"\0"),
            range_end: Bytes::from_static(b"\0"),
            ..RangeRequest::default()
        };
        prepare(&mut store, &reader, &Access::Range(&all));
        assert_eq!(store.range(&all).unwrap().count, 200);
    }

    fn key_bytes_of(store: &Store, k: &Bytes) -> u64 {
        let ki = store.index.get(k).expect("present");
        key_bytes(k, ki)
    }

    /// A paginated list reads the key index of its whole range (for `count`) but only the
    /// versions it returns; a count reads no version at all.
    #[test]
    fn a_limited_range_loads_only_the_versions_it_returns() {
        let (image, mut store) = checkpointed_store(22);
        store.evict(0);
        let reader = image.reader();
        let list = RangeRequest {
            key: Bytes::from_static(b"k"),
            range_end: Bytes::from_static(b"l"),
            limit: 5,
            ..RangeRequest::default()
        };
        let keys = store
            .missing(&Access::Range(&list))
            .expect("nothing in memory");
        assert_eq!((keys.spans.len(), keys.revs.len()), (1, 0));
        store.insert_loaded(block_on(reader.fetch(&keys)).unwrap());
        let versions = store
            .missing(&Access::Range(&list))
            .expect("versions missing");
        assert_eq!(versions.revs.len(), 6, "limit + 1, for `more`");
        store.insert_loaded(block_on(reader.fetch(&versions)).unwrap());
        assert!(store.missing(&Access::Range(&list)).is_none());
        let page = store.range(&list).unwrap();
        assert_eq!((page.kvs.len(), page.count, page.more), (5, 200, true));
        let count = RangeRequest {
            count_only: true,
            limit: 0,
            ..list
        };
        assert!(
            store.missing(&Access::Range(&count)).is_none(),
            "a count needs no version"
        );
        assert_eq!(store.range(&count).unwrap().count, 200);
    }
}
