//! The store's durable image: the MVCC history, the key index, the lease table and a few
//! counters kept in the page log (`btree`), written by checkpoints and read by a shard while it
//! runs (design.md §7, `paging.rs`).
//!
//! Trees of the page log (layouts byte by byte in `docs/storage-format.md`):
//!
//! ```text
//! tree 0  history   key: main:i64 BE | sub:i64 BE            (revision order)
//!                   value: format:u8 = 1 | flags:u8 (bit 0 tombstone)
//!                          | create_revision:i64 LE | version:i64 LE | lease:i64 LE
//!                          | key_len:u32 LE | key | value
//! tree 1  leases    key: lease_id:i64 BE    value: format:u8 = 1 | ttl_secs:i64 LE
//!                   key: lease_id:i64 BE | stored key (below)   value: attachment (below)
//! tree 2  meta      "compact"   -> compact_main:i64 LE (etcd's compactMainRev, -1 = never)
//!                   "compacted" -> i64 LE: every key index of the image is compacted to it
//!                   "lease_seq" -> u64 LE (the generator of lease ids)
//!                   "format"    -> u8 = 2 (absent: format 1, which had no key index tree)
//!                   "app"       -> bytes the caller keeps with the image (the shard's Raft
//!                                  applied log id and membership)
//! tree 3  keys      key: stored key      value: format:u8 = 1 | flags:u8 (bit 0 long key)
//!                          | [key_len:u32 LE | key, when long] | key index (key_index.rs)
//! superblock        applied_index, revision (the store's current revision)
//! ```
//!
//! A *stored key* is the etcd key itself when it has at most [`SHORT_KEY_MAX`] bytes (the
//! page log bounds keys); a longer key is stored as its first `SHORT_KEY_MAX` bytes, `0xff`,
//! and the first 16 bytes of the whole key's SHA-256, with the whole key in the value. Stored keys keep
//! etcd's order except among long keys and their neighbours, so a range read scans a slightly
//! wider stored range, filters by the whole key and sorts (proof in `stored_bounds`).
//!
//! A checkpoint writes what changed since the previous one — the store's journal (see
//! `history.rs`, `paging.rs` and `lease.rs`): each changed revision and key index is written
//! when still present and removed when gone, each changed lease and attachment likewise — then
//! the counters, then [`BTree::checkpoint`], whose superblock write is the commit point. The
//! journal is taken as of one applied index, so the image is the store exactly as of that
//! index: one synchronous step swaps the journal's sets out (they stay pinned in memory) and
//! takes the counters and leases; then steps between which new applies run read the changed
//! records (never changed once written) and encode the changed key indexes as of the take's
//! revision ([`KeyIndex::encode_at`]). A compaction, the one change that alters what was,
//! first finishes the steps. The writes after that (possibly many, interleaved with new
//! applies) touch only the page log. A failed checkpoint leaves the previous superblock in
//! force: the shard must stop (the page log latches itself stopped) and restart from the last
//! good image plus the log.
//!
//! Opening reads the superblock, the counters and the lease table (with attachments): no
//! history or key index is read, so restart time does not grow with the data. A format-1
//! image (written before the key index tree existed) is read whole once and rewritten by the
//! next checkpoint.
//!
//! Invariants: the image at superblock S is exactly the store after applying log index
//! `S.applied_index`; every value decodes (one that does not is reported as
//! [`ImageError::Corrupt`], never skipped).

use std::collections::BTreeMap;
use std::future::Future;
use std::ops::Bound;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::history::{History, Record};
use super::key_index::KeyIndex;
use super::paging::{Loaded, Missing, Paging, Span, WINDOW_RECORDS};
use super::{Rev, Store};
use crate::btree::{self, BTree, CheckpointReport, TreeId};
use crate::io::Disk;
use crate::lease::Lessor;
use crate::types::{KeyValue, LeaseId, Revision};

const HISTORY: TreeId = TreeId(0);
const LEASES: TreeId = TreeId(1);
const META: TreeId = TreeId(2);
const KEYS: TreeId = TreeId(3);

/// Longest etcd key stored as itself (see the module comment).
pub const SHORT_KEY_MAX: usize = 1024;
/// Format of the image as a whole (meta "format"). 2: key index tree and lease attachments.
pub const IMAGE_FORMAT_VERSION: u8 = 2;
/// Format of a key index value. 1: first layout.
pub const KEY_FORMAT_VERSION: u8 = 1;
const FLAG_LONG_KEY: u8 = 1;

/// Format of a history record's value. 1: first layout.
pub const RECORD_FORMAT_VERSION: u8 = 1;
/// Format of a lease value. 1: first layout.
pub const LEASE_FORMAT_VERSION: u8 = 1;
const FLAG_TOMBSTONE: u8 = 1;
const RECORD_HEADER_BYTES: usize = 1 + 1 + 8 * 3 + 4;

const META_COMPACT: &[u8] = b"compact";
const META_COMPACTED: &[u8] = b"compacted";
const META_FORMAT: &[u8] = b"format";
const META_LEASE_SEQ: &[u8] = b"lease_seq";
const META_APP: &[u8] = b"app";

/// Records written between two calls of the caller's `pause` (which lets other tasks of the
/// shard's thread run: a checkpoint must not hold the thread for long).
pub const RECORDS_PER_PAUSE: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    #[error(transparent)]
    Pages(#[from] btree::Error),
    #[error("store image: {what} does not decode ({reason})")]
    Corrupt { what: String, reason: &'static str },
}

pub type Result<T, E = ImageError> = std::result::Result<T, E>;

/// What changed in a store since the previous checkpoint, as of one moment.
#[derive(Clone, Debug, Default)]
pub struct Changes {
    records: Vec<(Rev, Option<Record>)>,
    keys: Vec<(Bytes, Option<Vec<u8>>)>,
    leases: Vec<(LeaseId, Option<i64>)>,
    attachments: Vec<(LeaseId, Bytes, bool)>,
    revision: Revision,
    compact_main: Revision,
    image_compacted: Revision,
    lease_seq: u64,
    payload_bytes: u64,
    /// The revision moved by an advance alone (no record behind it).
    advanced: bool,
}

impl Changes {
    /// Changed revisions, key indexes, leases and attachments, plus one for a store revision
    /// moved by [`Store::advance`].
    pub fn len(&self) -> usize {
        self.records.len()
            + self.keys.len()
            + self.leases.len()
            + self.attachments.len()
            + usize::from(self.advanced)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Key and value bytes of the records written.
    pub fn payload_bytes(&self) -> u64 {
        self.payload_bytes
    }

    /// The store revision these changes bring the image to.
    pub fn revision(&self) -> Revision {
        self.revision
    }
}

/// Changes waiting for the next checkpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pending {
    pub changes: usize,
    pub payload_bytes: u64,
}

/// A take of the journal in progress ([`Store::begin_take`]).
#[derive(Clone, Debug)]
pub(super) struct Taking {
    changes: Changes,
    step: Step,
}

/// What the next [`Store::take_step`] takes: the pinned revisions, then the pinned keys, each
/// in order after the last one taken.
#[derive(Clone, Debug)]
enum Step {
    Records { after: Option<Rev> },
    Keys { after: Option<Bytes> },
    Done,
}

/// A key index in the image's form.
fn encode_index(ki: &KeyIndex) -> Vec<u8> {
    let mut v = Vec::new();
    ki.encode(&mut v);
    v
}

impl Store {
    /// Starts journaling changes for [`Store::take_changes`], with everything of the store in
    /// memory (a new durable store; an opened one journals from the start).
    pub fn keep_journal(&mut self) {
        self.history.keep_journal();
        self.lessor.keep_journal();
        if self.paging.is_none() {
            self.paging = Some(Paging::complete(0, self.compact_main));
        }
    }

    /// What the journal holds now. A revision moved by [`Store::advance`] counts as one
    /// change: the image's revision must be rewritten even when nothing else changed.
    pub fn pending_changes(&self) -> Pending {
        let (records, payload_bytes) = self.history.journal_size();
        let keys = self.paging.as_ref().map_or(0, |p| p.keys_changed.len());
        Pending {
            changes: records + keys + self.lessor.journal_len() + usize::from(self.advanced),
            payload_bytes,
        }
    }

    /// Takes the journal: every change since the previous call, with the records and key
    /// indexes as they are now. Until [`Store::checkpoint_done`], memory keeps (pins) what it
    /// took. Runs between two applies; its cost is that of the changes. A shard takes in
    /// steps instead ([`Store::begin_take`]).
    pub fn take_changes(&mut self) -> Changes {
        self.begin_take();
        self.finish_take()
    }

    /// Starts taking the journal as of now, as [`Store::take_changes`] does, in steps: this
    /// call takes the counters, leases and attachments and pins the changed records and keys
    /// (set swaps, whatever their number); [`Store::take_step`] then reads the records and
    /// encodes the key indexes a few at a time, and writes may be applied between two steps.
    /// Each is taken as it was now: a record never changes once written, and a key index is
    /// encoded as of this revision ([`KeyIndex::encode_at`]). Only a compaction would change
    /// what was, so [`Store::compact`] first finishes a take in progress. When a previous take
    /// is still pinned (its checkpoint not done), this one is taken whole at once.
    pub fn begin_take(&mut self) {
        assert!(self.taking.is_none(), "one take at a time");
        let (mut revs, payload_bytes) = self.history.take_journal();
        let (leases, attached) = self.lessor.take_journal();
        let leases = leases
            .into_iter()
            .map(|id| (id, self.lessor.get(id).map(|l| l.ttl_secs)))
            .collect();
        let attachments = attached
            .into_iter()
            .map(|(id, key)| {
                let on = self.lessor.get(id).is_some_and(|l| l.keys.contains(&key));
                (id, key, on)
            })
            .collect();
        let mut changes = Changes {
            records: Vec::with_capacity(revs.len()),
            keys: Vec::new(),
            leases,
            attachments,
            revision: self.current_revision,
            compact_main: self.compact_main,
            image_compacted: self.compact_main,
            lease_seq: self.lessor.id_seq(),
            payload_bytes,
            advanced: std::mem::take(&mut self.advanced),
        };
        let Some(p) = self.paging.as_mut() else {
            debug_assert!(revs.is_empty(), "a journaling store pages");
            self.taking = Some(Taking {
                changes,
                step: Step::Done,
            });
            return;
        };
        changes.image_compacted = p.image_compacted;
        let mut changed = std::mem::take(&mut p.keys_changed);
        changes.keys.reserve(changed.len());
        let step = if p.keys_inflight.is_empty() && p.revs_inflight.is_empty() {
            // Swaps: the pinned sets are what the steps walk.
            p.keys_inflight = changed;
            p.revs_inflight = revs;
            Step::Records { after: None }
        } else {
            for rev in &revs {
                changes
                    .records
                    .push((*rev, self.history.get(*rev).cloned()));
            }
            for key in &changed {
                let index = self.index.get(key);
                changes.keys.push((key.clone(), index.map(encode_index)));
            }
            p.keys_inflight.append(&mut changed);
            p.revs_inflight.append(&mut revs);
            Step::Done
        };
        self.taking = Some(Taking { changes, step });
    }

    /// Takes up to `budget` more records and key indexes of the take begun by
    /// [`Store::begin_take`]; `true` when nothing is left (or no take is in progress).
    pub fn take_step(&mut self, budget: usize) -> bool {
        let Store {
            taking: Some(taking),
            paging,
            history,
            index,
            ..
        } = self
        else {
            return true;
        };
        let mut left = budget;
        loop {
            match &taking.step {
                Step::Done => return true,
                _ if left == 0 => return false,
                Step::Records { after } => {
                    let p = paging.as_ref().expect("a take in steps pages");
                    let from = after.map_or(Bound::Unbounded, Bound::Excluded);
                    let mut last = None;
                    for rev in p.revs_inflight.range((from, Bound::Unbounded)).take(left) {
                        taking
                            .changes
                            .records
                            .push((*rev, history.get(*rev).cloned()));
                        last = Some(*rev);
                        left -= 1;
                    }
                    taking.step = match last {
                        Some(rev) if left == 0 => Step::Records { after: Some(rev) },
                        _ => Step::Keys { after: None },
                    };
                }
                Step::Keys { after } => {
                    let p = paging.as_ref().expect("a take in steps pages");
                    let from = after.as_ref().map_or(Bound::Unbounded, Bound::Excluded);
                    let at = taking.changes.revision;
                    let mut last = None;
                    for key in p
                        .keys_inflight
                        .range::<Bytes, _>((from, Bound::Unbounded))
                        .take(left)
                    {
                        let encoded = index.get(key).and_then(|ki| {
                            let mut v = Vec::new();
                            ki.encode_at(at, &mut v).then_some(v)
                        });
                        taking.changes.keys.push((key.clone(), encoded));
                        last = Some(key.clone());
                        left -= 1;
                    }
                    taking.step = match last {
                        Some(key) if left == 0 => Step::Keys { after: Some(key) },
                        _ => Step::Done,
                    };
                }
            }
        }
    }

    /// The changes of the take in progress, its steps finished here if any are left.
    pub fn finish_take(&mut self) -> Changes {
        self.finish_steps();
        self.taking.take().map(|t| t.changes).unwrap_or_default()
    }

    /// Finishes the steps of a take in progress now: before a change that a later step could
    /// not see past (a compaction).
    pub(super) fn finish_steps(&mut self) {
        while !self.take_step(usize::MAX) {}
    }

    /// Rebuilds a whole store from a format-1 image: records in revision order, the lease
    /// table and the counters. Lease deadlines start at `now_ms + ttl`.
    fn restore(
        records: Vec<(Rev, Record)>,
        leases: Vec<(LeaseId, i64)>,
        revision: Revision,
        compact_main: Revision,
        lease_seq: u64,
        now_ms: u64,
    ) -> Result<Store> {
        let corrupt = |rev: Rev, reason| ImageError::Corrupt {
            what: format!("history record {}.{}", rev.main, rev.sub),
            reason,
        };
        let mut index: BTreeMap<Bytes, KeyIndex> = BTreeMap::new();
        let mut history = History::default();
        let mut last: Option<Rev> = None;
        for (rev, record) in records {
            if last.is_some_and(|l| rev <= l) || rev.main > revision || rev.main < 1 {
                return Err(corrupt(
                    rev,
                    "revision out of order or past the store revision",
                ));
            }
            last = Some(rev);
            let ki = index
                .entry(record.kv.key.clone())
                .or_insert_with(KeyIndex::new);
            if record.tombstone {
                if !ki.is_live() {
                    return Err(corrupt(rev, "tombstone of a key that does not exist"));
                }
                ki.tombstone(rev);
            } else {
                ki.put(rev);
            }
            history.insert(rev, record);
        }
        let mut lessor = Lessor::default();
        for (id, ttl) in leases {
            lessor.restore(id, ttl, now_ms);
        }
        lessor.set_id_seq(lease_seq);
        let mut store = Store {
            index,
            history,
            current_revision: revision,
            compact_main,
            lessor,
            paging: None,
            advanced: false,
            taking: None,
        };
        // A key is attached to the lease its current version names (lease.rs invariant).
        let attached: Vec<(LeaseId, Bytes)> = store
            .index
            .iter()
            .filter_map(|(key, ki)| ki.get(revision).map(|rev| (key, rev)))
            .filter_map(|(key, rev)| {
                let lease = store.history.get(rev)?.kv.lease;
                (lease != 0).then(|| (lease, key.clone()))
            })
            .collect();
        for (lease, key) in attached {
            if !store.lessor.attach(lease, &key) {
                return Err(ImageError::Corrupt {
                    what: format!("key {key:?}"),
                    reason: "names a lease the image does not hold",
                });
            }
        }
        Ok(store)
    }

    /// Journals the whole store, so the next checkpoint writes all of it (format upgrade).
    fn journal_everything(&mut self) {
        self.keep_journal();
        let revs: Vec<Rev> = self.history.iter().map(|(r, _)| *r).collect();
        for rev in revs {
            self.history.note_changed(rev);
        }
        self.lessor.journal_everything();
        let keys: Vec<Bytes> = self.index.keys().cloned().collect();
        let p = self.paging.as_mut().expect("journal kept");
        p.keys_changed.extend(keys);
        p.image_compacted = self.compact_main;
    }
}

/// What opening an image found besides the store.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageMeta {
    /// The log index the image is the state after (0: empty image).
    pub applied_index: u64,
    /// The caller's bytes saved with the image (empty for a new image).
    pub app: Bytes,
}

/// A store's image in one page log.
pub struct StoreImage<D: Disk> {
    pages: BTree<D>,
}

/// Reads a store image as of its last durable checkpoint, while checkpoints run.
pub struct ImageReader<D: Disk> {
    pages: btree::Reader<D>,
}

impl<D: Disk> Clone for ImageReader<D> {
    fn clone(&self) -> Self {
        ImageReader {
            pages: self.pages.clone(),
        }
    }
}

impl<D: Disk> StoreImage<D> {
    /// Opens (or creates) the page log in `disk` and the store it holds, with only its
    /// counters and lease table in memory (see the module comment). The store journals.
    pub async fn open(
        disk: D,
        config: btree::Config,
        now_ms: u64,
    ) -> Result<(StoreImage<D>, Store, ImageMeta)> {
        let mut pages = BTree::open(disk, config).await?;
        let compact_main = match pages.get(META, META_COMPACT).await? {
            Some(v) => i64::from_le_bytes(fixed(&v, "meta compact")?),
            None => -1,
        };
        let lease_seq = match pages.get(META, META_LEASE_SEQ).await? {
            Some(v) => u64::from_le_bytes(fixed(&v, "meta lease_seq")?),
            None => 0,
        };
        let format = match pages.get(META, META_FORMAT).await? {
            Some(v) => u8::from_le_bytes(fixed(&v, "meta format")?),
            None if pages.is_empty(HISTORY)? && pages.is_empty(LEASES)? => IMAGE_FORMAT_VERSION,
            None => 1,
        };
        let app = pages.get(META, META_APP).await?.unwrap_or_default();
        // A new page log records revision 0; an empty store's revision is 1.
        let revision = pages.revision().max(1);
        let meta = ImageMeta {
            applied_index: pages.applied_index(),
            app: Bytes::from(app),
        };
        let store = match format {
            1 => {
                let mut store =
                    Self::open_format_1(&mut pages, revision, compact_main, lease_seq, now_ms)
                        .await?;
                store.journal_everything();
                store
            }
            IMAGE_FORMAT_VERSION => {
                let image_compacted = match pages.get(META, META_COMPACTED).await? {
                    Some(v) => i64::from_le_bytes(fixed(&v, "meta compacted")?),
                    None => -1,
                };
                let mut lessor = Lessor::default();
                let mut attachments = Vec::new();
                let mut cursor = pages.range(LEASES, Bound::Unbounded, Bound::Unbounded);
                while let Some((k, v)) = cursor.next(&mut pages).await? {
                    match decode_lease_entry(&k, &v)? {
                        LeaseEntry::Lease(id, ttl) => lessor.restore(id, ttl, now_ms),
                        LeaseEntry::Attached(id, key) => attachments.push((id, key)),
                    }
                }
                for (id, key) in attachments {
                    if !lessor.attach(id, &key) {
                        return Err(ImageError::Corrupt {
                            what: format!("lease {id} attachment"),
                            reason: "names a lease the image does not hold",
                        });
                    }
                }
                lessor.set_id_seq(lease_seq);
                lessor.keep_journal();
                let mut history = History::default();
                history.keep_journal();
                let epoch = pages.stats().checkpoint_sequence;
                let paging = if pages.is_empty(KEYS)? && pages.is_empty(HISTORY)? {
                    // Nothing to read: everything (nothing) is in memory.
                    Paging::complete(epoch, compact_main)
                } else {
                    Paging::opened(revision, epoch, image_compacted)
                };
                Store {
                    index: BTreeMap::new(),
                    history,
                    current_revision: revision,
                    compact_main,
                    lessor,
                    paging: Some(paging),
                    advanced: false,
                    taking: None,
                }
            }
            _ => {
                return Err(ImageError::Corrupt {
                    what: "meta format".to_string(),
                    reason: "unknown image format (written by a newer Ballast?)",
                })
            }
        };
        Ok((StoreImage { pages }, store, meta))
    }

    async fn open_format_1(
        pages: &mut BTree<D>,
        revision: Revision,
        compact_main: Revision,
        lease_seq: u64,
        now_ms: u64,
    ) -> Result<Store> {
        let mut records = Vec::new();
        let mut cursor = pages.range(HISTORY, Bound::Unbounded, Bound::Unbounded);
        while let Some((k, v)) = cursor.next(pages).await? {
            let rev = decode_rev(&k)?;
            records.push((rev, decode_record(rev, &v)?));
        }
        let mut leases = Vec::new();
        let mut cursor = pages.range(LEASES, Bound::Unbounded, Bound::Unbounded);
        while let Some((k, v)) = cursor.next(pages).await? {
            match decode_lease_entry(&k, &v)? {
                LeaseEntry::Lease(id, ttl) => leases.push((id, ttl)),
                LeaseEntry::Attached(..) => {
                    return Err(ImageError::Corrupt {
                        what: "lease tree".to_string(),
                        reason: "attachment in a format-1 image",
                    })
                }
            }
        }
        Store::restore(records, leases, revision, compact_main, lease_seq, now_ms)
    }

    /// A reader of the image as of its last durable checkpoint.
    pub fn reader(&self) -> ImageReader<D> {
        ImageReader {
            pages: self.pages.reader(),
        }
    }

    /// Writes `changes` and commits them as the state after `applied_index`, with `app` saved
    /// beside. `pause` is awaited every [`RECORDS_PER_PAUSE`] records, and then every
    /// [`btree::PAGES_PER_PAUSE`] pages encoded, so other tasks can run.
    pub async fn checkpoint<F, P>(
        &mut self,
        changes: Changes,
        applied_index: u64,
        app: &[u8],
        mut pause: P,
    ) -> Result<CheckpointReport>
    where
        P: FnMut() -> F,
        F: Future<Output = ()>,
    {
        let mut value = Vec::new();
        let mut n = 0usize;
        let mut tick = || {
            n += 1;
            n.is_multiple_of(RECORDS_PER_PAUSE)
        };
        for (rev, record) in &changes.records {
            if tick() {
                pause().await;
            }
            let key = encode_rev(*rev);
            match record {
                Some(record) => {
                    value.clear();
                    encode_record(record, &mut value);
                    self.pages.insert(HISTORY, &key, &value).await?;
                }
                None => {
                    self.pages.remove(HISTORY, &key).await?;
                }
            }
        }
        for (key, index) in &changes.keys {
            if tick() {
                pause().await;
            }
            let stored = stored_key(key);
            match index {
                Some(index) => {
                    value.clear();
                    value.push(KEY_FORMAT_VERSION);
                    if key.len() > SHORT_KEY_MAX {
                        value.push(FLAG_LONG_KEY);
                        value.extend_from_slice(&(key.len() as u32).to_le_bytes());
                        value.extend_from_slice(key);
                    } else {
                        value.push(0);
                    }
                    value.extend_from_slice(index);
                    self.pages.insert(KEYS, &stored, &value).await?;
                }
                None => {
                    self.pages.remove(KEYS, &stored).await?;
                }
            }
        }
        for (id, ttl) in &changes.leases {
            let key = id.to_be_bytes();
            match ttl {
                Some(ttl) => {
                    let mut v = vec![LEASE_FORMAT_VERSION];
                    v.extend_from_slice(&ttl.to_le_bytes());
                    self.pages.insert(LEASES, &key, &v).await?;
                }
                None => {
                    self.pages.remove(LEASES, &key).await?;
                }
            }
        }
        for (id, key, on) in &changes.attachments {
            if tick() {
                pause().await;
            }
            let mut k = id.to_be_bytes().to_vec();
            k.extend_from_slice(&stored_key(key));
            if *on {
                let v = if key.len() > SHORT_KEY_MAX {
                    &key[..]
                } else {
                    &[][..]
                };
                self.pages.insert(LEASES, &k, v).await?;
            } else {
                self.pages.remove(LEASES, &k).await?;
            }
        }
        let metas: [(&[u8], Vec<u8>); 5] = [
            (META_COMPACT, changes.compact_main.to_le_bytes().to_vec()),
            (
                META_COMPACTED,
                changes.image_compacted.to_le_bytes().to_vec(),
            ),
            (META_LEASE_SEQ, changes.lease_seq.to_le_bytes().to_vec()),
            (META_FORMAT, vec![IMAGE_FORMAT_VERSION]),
            (META_APP, app.to_vec()),
        ];
        for (k, v) in metas {
            self.pages.insert(META, k, &v).await?;
        }
        Ok(self
            .pages
            .checkpoint_pausing(applied_index, changes.revision, &mut pause)
            .await?)
    }

    /// The page log's figures (cache, segments, last checkpoint).
    pub fn stats(&self) -> btree::Stats {
        self.pages.stats()
    }

    /// The log index of the last durable checkpoint.
    pub fn applied_index(&self) -> u64 {
        self.pages.applied_index()
    }
}

/// Stored-key entries one scan of the keys tree reads.
const SCAN_BATCH: usize = 1024;

impl<D: Disk> ImageReader<D> {
    /// The checkpoint sequence this reader reads.
    pub fn epoch(&self) -> u64 {
        self.pages.epoch()
    }

    /// Reads what `missing` names (see `paging.rs`).
    pub async fn fetch(&self, missing: &Missing) -> Result<Loaded> {
        let mut loaded = Loaded {
            epoch: self.epoch(),
            ..Loaded::default()
        };
        if loaded.epoch != missing.epoch {
            // The store will ask again with the new epoch.
            return Ok(loaded);
        }
        for (span, limit) in &missing.spans {
            loaded.spans.push(self.key_span(span, *limit).await?);
        }
        for rev in &missing.revs {
            match self.pages.get(HISTORY, &encode_rev(*rev)).await? {
                Some(v) => loaded.records.push((*rev, decode_record(*rev, &v)?)),
                None => {
                    return Err(ImageError::Corrupt {
                        what: format!("history record {}.{}", rev.main, rev.sub),
                        reason: "named by a key index but absent",
                    })
                }
            }
        }
        if let Some((from, to)) = missing.history {
            let (records, hi) = self.history_window(from, to).await?;
            loaded.records.extend(records);
            loaded.window = Some((from, hi));
        }
        if missing.all_history {
            let (records, _) = self
                .history_window(
                    Rev { main: 0, sub: 0 },
                    Rev {
                        main: i64::MAX,
                        sub: 0,
                    },
                )
                .await?;
            loaded.records.extend(records);
            loaded.all_history = true;
        }
        Ok(loaded)
    }

    /// The records of `[from, to)`, at most about [`WINDOW_RECORDS`] (never splitting a
    /// revision, `to == i64::MAX` meaning all), and the revision they are complete below.
    async fn history_window(&self, from: Rev, to: Rev) -> Result<(Vec<(Rev, Record)>, Rev)> {
        let bounded = to.main != i64::MAX;
        let mut out = Vec::new();
        let mut lower = encode_rev(from).to_vec();
        let mut lower_incl = true;
        let upper = encode_rev(to);
        loop {
            let lo = if lower_incl {
                Bound::Included(&lower[..])
            } else {
                Bound::Excluded(&lower[..])
            };
            let batch = self
                .pages
                .scan(HISTORY, lo, Bound::Excluded(&upper[..]), false, SCAN_BATCH)
                .await?;
            let done = batch.len() < SCAN_BATCH;
            for (k, v) in &batch {
                let rev = decode_rev(k)?;
                if bounded && out.len() >= WINDOW_RECORDS {
                    let last: Rev = out.last().map_or(from, |(r, _): &(Rev, Record)| *r);
                    if rev.main != last.main {
                        return Ok((
                            out,
                            Rev {
                                main: rev.main,
                                sub: 0,
                            },
                        ));
                    }
                }
                out.push((rev, decode_record(rev, v)?));
            }
            match batch.last() {
                Some((k, _)) if !done => {
                    lower = k.clone();
                    lower_incl = false;
                }
                _ => return Ok((out, to)),
            }
        }
    }

    /// The key indexes of `span` (at most about `limit`, cut at a short stored key so the
    /// span stays exact), and the span they cover.
    async fn key_span(
        &self,
        span: &Span,
        limit: Option<usize>,
    ) -> Result<(Span, Vec<(Bytes, KeyIndex)>)> {
        let (lower, upper) = stored_bounds(span);
        let mut lower = lower;
        let mut keys = Vec::new();
        let mut covered = span.clone();
        'scan: loop {
            let lo = match &lower {
                Bound::Included(k) => Bound::Included(&k[..]),
                Bound::Excluded(k) => Bound::Excluded(&k[..]),
                Bound::Unbounded => Bound::Unbounded,
            };
            let hi = match &upper {
                Bound::Excluded(k) => Bound::Excluded(&k[..]),
                _ => Bound::Unbounded,
            };
            let batch = self.pages.scan(KEYS, lo, hi, false, SCAN_BATCH).await?;
            let done = batch.len() < SCAN_BATCH;
            for (stored, v) in &batch {
                if limit.is_some_and(|l| keys.len() >= l) && stored.len() <= SHORT_KEY_MAX {
                    // Cut here: every key below this short stored key has been read.
                    covered.end = Some(Bytes::copy_from_slice(stored));
                    break 'scan;
                }
                let (key, ki) = decode_key_entry(stored, v)?;
                if span.contains(&key) {
                    keys.push((key, ki));
                }
            }
            match batch.last() {
                Some((k, _)) if !done => lower = Bound::Excluded(k.clone()),
                _ => break,
            }
        }
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        if covered.end.as_ref().is_some_and(|e| *e <= covered.start) {
            covered.end = Some(covered.start.clone());
        }
        Ok((covered, keys))
    }
}

/// How an etcd key is stored in the keys tree (module comment).
fn stored_key(key: &[u8]) -> Vec<u8> {
    if key.len() <= SHORT_KEY_MAX {
        return key.to_vec();
    }
    // A fixed, collision-resistant hash: the stored form must never change between builds,
    // and two keys sharing it would share one entry.
    let digest = Sha256::digest(key);
    let mut out = Vec::with_capacity(SHORT_KEY_MAX + 17);
    out.extend_from_slice(&key[..SHORT_KEY_MAX]);
    out.push(0xff);
    out.extend_from_slice(&digest[..16]);
    out
}

/// Stored-key bounds holding every stored key of `span`'s keys.
///
/// Why they do, for a key `k` in `[a, b)`: a short `k` is stored as itself, and the bounds
/// are at most `a` and at least `b`. A long `k` is stored as `p = k[..SHORT_KEY_MAX] | ff |
/// hash`. Lower: if `a` is short, either `a` is a prefix of `k[..SHORT_KEY_MAX]` (so `a <= p`)
/// or they differ within `a`'s length, where `a < k` (so `a < p`); if `a` is long, the bound
/// is `a[..SHORT_KEY_MAX] <= k[..SHORT_KEY_MAX] <= p`. Upper: if `b` is short, `k < b` differ
/// within `b`'s length (a longer `k` is not a prefix of `b`), so `p < b`; if `b` is long, the
/// bound is the successor of the prefix `b[..SHORT_KEY_MAX]`, above every key starting with
/// a prefix `<= b[..SHORT_KEY_MAX]`.
fn stored_bounds(span: &Span) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let lower = Bound::Included(span.start[..span.start.len().min(SHORT_KEY_MAX)].to_vec());
    let upper = match &span.end {
        None => Bound::Unbounded,
        Some(e) if e.len() <= SHORT_KEY_MAX => Bound::Excluded(e.to_vec()),
        Some(e) => {
            let mut p = e[..SHORT_KEY_MAX].to_vec();
            while let Some(last) = p.pop() {
                if last < 0xff {
                    p.push(last + 1);
                    return (lower, Bound::Excluded(p));
                }
            }
            Bound::Unbounded
        }
    };
    (lower, upper)
}

fn decode_key_entry(stored: &[u8], v: &[u8]) -> Result<(Bytes, KeyIndex)> {
    let corrupt = |reason| ImageError::Corrupt {
        what: format!(
            "key index {:?}",
            String::from_utf8_lossy(&stored[..stored.len().min(64)])
        ),
        reason,
    };
    if v.len() < 2 {
        return Err(corrupt("shorter than its header"));
    }
    if v[0] != KEY_FORMAT_VERSION {
        return Err(corrupt("unknown format version"));
    }
    let (key, rest) = match v[1] {
        0 => (Bytes::copy_from_slice(stored), &v[2..]),
        FLAG_LONG_KEY => {
            if v.len() < 6 {
                return Err(corrupt("long key without its length"));
            }
            let n = u32::from_le_bytes(v[2..6].try_into().expect("4 bytes")) as usize;
            if v.len() < 6 + n || n <= SHORT_KEY_MAX || stored_key(&v[6..6 + n]) != stored {
                return Err(corrupt("long key does not match its stored form"));
            }
            (Bytes::copy_from_slice(&v[6..6 + n]), &v[6 + n..])
        }
        _ => return Err(corrupt("unknown flags")),
    };
    let ki = KeyIndex::decode(rest).map_err(corrupt)?;
    Ok((key, ki))
}

enum LeaseEntry {
    Lease(LeaseId, i64),
    Attached(LeaseId, Bytes),
}

fn decode_lease_entry(k: &[u8], v: &[u8]) -> Result<LeaseEntry> {
    if k.len() == 8 {
        let (id, ttl) = decode_lease(k, v)?;
        return Ok(LeaseEntry::Lease(id, ttl));
    }
    let corrupt = |reason| ImageError::Corrupt {
        what: "lease attachment".to_string(),
        reason,
    };
    if k.len() < 8 {
        return Err(corrupt("key shorter than a lease id"));
    }
    let id = i64::from_be_bytes(k[..8].try_into().expect("8 bytes"));
    let stored = &k[8..];
    let key = if stored.len() > SHORT_KEY_MAX {
        if stored_key(v) != stored {
            return Err(corrupt("long key does not match its stored form"));
        }
        Bytes::copy_from_slice(v)
    } else {
        if !v.is_empty() {
            return Err(corrupt("value on a short key"));
        }
        Bytes::copy_from_slice(stored)
    };
    Ok(LeaseEntry::Attached(id, key))
}

fn encode_rev(rev: Rev) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&rev.main.to_be_bytes());
    k[8..].copy_from_slice(&rev.sub.to_be_bytes());
    k
}

fn fixed<const N: usize>(b: &[u8], what: &str) -> Result<[u8; N]> {
    b.try_into().map_err(|_| ImageError::Corrupt {
        what: what.to_string(),
        reason: "wrong length",
    })
}

fn decode_rev(k: &[u8]) -> Result<Rev> {
    let k: [u8; 16] = fixed(k, "history key")?;
    let main = i64::from_be_bytes(k[..8].try_into().expect("8 bytes"));
    let sub = i64::from_be_bytes(k[8..].try_into().expect("8 bytes"));
    Ok(Rev { main, sub })
}

fn encode_record(record: &Record, out: &mut Vec<u8>) {
    let kv = &record.kv;
    out.reserve(RECORD_HEADER_BYTES + kv.key.len() + kv.value.len());
    out.push(RECORD_FORMAT_VERSION);
    out.push(if record.tombstone { FLAG_TOMBSTONE } else { 0 });
    for n in [kv.create_revision, kv.version, kv.lease] {
        out.extend_from_slice(&n.to_le_bytes());
    }
    out.extend_from_slice(&(kv.key.len() as u32).to_le_bytes());
    out.extend_from_slice(&kv.key);
    out.extend_from_slice(&kv.value);
}

fn decode_record(rev: Rev, v: &[u8]) -> Result<Record> {
    let corrupt = |reason| ImageError::Corrupt {
        what: format!("history record {}.{}", rev.main, rev.sub),
        reason,
    };
    if v.len() < RECORD_HEADER_BYTES {
        return Err(corrupt("shorter than its header"));
    }
    if v[0] != RECORD_FORMAT_VERSION {
        return Err(corrupt("unknown format version"));
    }
    if v[1] & !FLAG_TOMBSTONE != 0 {
        return Err(corrupt("unknown flags"));
    }
    let n = |at: usize| i64::from_le_bytes(v[at..at + 8].try_into().expect("8 bytes"));
    let key_len = u32::from_le_bytes(v[26..30].try_into().expect("4 bytes")) as usize;
    let rest = &v[RECORD_HEADER_BYTES..];
    if key_len > rest.len() {
        return Err(corrupt("key longer than the record"));
    }
    let tombstone = v[1] & FLAG_TOMBSTONE != 0;
    let kv = KeyValue {
        key: Bytes::copy_from_slice(&rest[..key_len]),
        create_revision: n(2),
        mod_revision: rev.main,
        version: n(10),
        value: Bytes::copy_from_slice(&rest[key_len..]),
        lease: n(18),
    };
    Ok(Record { kv, tombstone })
}

fn decode_lease(k: &[u8], v: &[u8]) -> Result<(LeaseId, i64)> {
    let id = i64::from_be_bytes(fixed(k, "lease key")?);
    let corrupt = |reason| ImageError::Corrupt {
        what: format!("lease {id}"),
        reason,
    };
    if v.len() != 9 {
        return Err(corrupt("wrong length"));
    }
    if v[0] != LEASE_FORMAT_VERSION {
        return Err(corrupt("unknown format version"));
    }
    Ok((id, i64::from_le_bytes(v[1..].try_into().expect("8 bytes"))))
}

pub mod transfer;

#[cfg(test)]
mod tests;
