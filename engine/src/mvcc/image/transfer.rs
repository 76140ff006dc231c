//! Moving a whole store between nodes: a Raft snapshot sent to a follower whose log is behind
//! the leader's purged log (design.md §7 "Snapshot"). The sender *exports* the store as a
//! stream of bounded, checksummed chunks; the receiver *imports* them into a new store (in
//! memory, [`StoreImport`]) or into a new page log ([`ImageImport`]), never into the state it
//! serves from, so an interrupted transfer changes nothing.
//!
//! The stream carries the store's image entries (the trees of `image.rs`, with their own
//! encodings: history records, key indexes, leases and attachments) plus a summary of the
//! counters, so one format serves both kinds of sender: an in-memory store ([`StoreExport`],
//! which encodes its maps as a checkpoint would) and a durable one ([`ImageExport`], which
//! scans its page log as of one checkpoint, a few thousand entries at a time, and never holds
//! the store in memory).
//!
//! Chunk (all integers little-endian; format [`TRANSFER_FORMAT_VERSION`]):
//!
//! ```text
//! offset size field
//! 0      4    magic "BLSX"
//! 4      1    format version (1)
//! 5      1    flags: bit 0 = last chunk of the stream; others 0
//! 6      2    reserved, 0
//! 8      8    seq: chunk number, 0 for the first
//! 16     4    entry count n
//! 20     4    crc32c of bytes [0, 20) then [24, end)
//! 24     ...  n entries: tree:u8 | key_len:u32 | key | value_len:u32 | value
//! ```
//!
//! Entry trees: 0 history, 1 leases and attachments, 3 key indexes (keys and values exactly as
//! in the page log, `docs/storage-format.md`); 0xfe the summary, the first entry of the
//! stream (empty key; value `revision:i64 compact:i64 compacted:i64 lease_seq:u64`, as the
//! image's superblock revision and meta entries); 0xff the end, the last entry of the last
//! chunk (empty key; value `entries:u64`, the number of tree entries sent). A stream is
//! complete only when the end entry arrives in a chunk flagged last, after every chunk from 0
//! in order; importers refuse anything else, and every entry is decoded before it is kept.
//! Trees are sent leases first (a lease before its attachments), then key indexes, then
//! history, each in key order. A chunk holds about [`CHUNK_BYTES_TARGET`] bytes (one entry
//! more at most), so memory on both sides stays a few chunks.

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;

use super::{
    decode_key_entry, decode_lease_entry, decode_record, decode_rev, encode_record, encode_rev,
    fixed, stored_key, ImageError, ImageReader, LeaseEntry, FLAG_LONG_KEY, HISTORY,
    IMAGE_FORMAT_VERSION, KEYS, KEY_FORMAT_VERSION, LEASES, LEASE_FORMAT_VERSION, META, META_APP,
    META_COMPACT, META_COMPACTED, META_FORMAT, META_LEASE_SEQ, SCAN_BATCH, SHORT_KEY_MAX,
};
use crate::btree::{self, BTree, CheckpointReport, TreeId};
use crate::io::{Disk, IoError};
use crate::lease::Lessor;
use crate::mvcc::history::History;
use crate::mvcc::key_index::KeyIndex;
use crate::mvcc::{Rev, Store};
use crate::types::{LeaseId, Revision};

/// Format of the snapshot stream. 1: first layout.
pub const TRANSFER_FORMAT_VERSION: u8 = 1;
/// Bytes a chunk holds before it is sealed (it may pass this by one entry).
pub const CHUNK_BYTES_TARGET: usize = 4 << 20;
const CHUNK_MAGIC: [u8; 4] = *b"BLSX";
const CHUNK_HEADER_BYTES: usize = 24;
const FLAG_LAST: u8 = 1;
const TREE_SUMMARY: u8 = 0xfe;
const TREE_END: u8 = 0xff;
const SUMMARY_BYTES: usize = 32;
/// An image import checkpoints (writes its dirty pages) once this many nodes are dirty, so a
/// large snapshot never sits in memory (2,048 nodes: 8 MiB of pages).
const IMPORT_DIRTY_NODES_MAX: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("snapshot chunk {seq}: crc32c {actual:#010x}, expected {expected:#010x}")]
    ChecksumMismatch {
        seq: u64,
        expected: u32,
        actual: u32,
    },
    #[error("snapshot chunk {seq}: {reason}")]
    Malformed { seq: u64, reason: &'static str },
    #[error("snapshot chunk {found} arrived where chunk {expected} was expected")]
    OutOfOrder { expected: u64, found: u64 },
    #[error("snapshot stream: {reason}")]
    Incomplete { reason: &'static str },
}

impl From<btree::Error> for TransferError {
    fn from(e: btree::Error) -> TransferError {
        TransferError::Image(ImageError::Pages(e))
    }
}

pub type Result<T, E = TransferError> = std::result::Result<T, E>;

/// The counters a stream starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Summary {
    revision: Revision,
    compact_main: Revision,
    compacted: Revision,
    lease_seq: u64,
}

impl Summary {
    fn encode(&self) -> [u8; SUMMARY_BYTES] {
        let mut out = [0u8; SUMMARY_BYTES];
        out[..8].copy_from_slice(&self.revision.to_le_bytes());
        out[8..16].copy_from_slice(&self.compact_main.to_le_bytes());
        out[16..24].copy_from_slice(&self.compacted.to_le_bytes());
        out[24..].copy_from_slice(&self.lease_seq.to_le_bytes());
        out
    }

    fn decode(seq: u64, v: &[u8]) -> Result<Summary> {
        let v: [u8; SUMMARY_BYTES] = v.try_into().map_err(|_| TransferError::Malformed {
            seq,
            reason: "summary of the wrong length",
        })?;
        let i = |at: usize| i64::from_le_bytes(v[at..at + 8].try_into().expect("8 bytes"));
        let s = Summary {
            revision: i(0),
            compact_main: i(8),
            compacted: i(16),
            lease_seq: i(24) as u64,
        };
        if s.revision < 1 || s.compact_main > s.revision || s.compacted > s.compact_main.max(-1) {
            return Err(TransferError::Malformed {
                seq,
                reason: "summary revisions out of order",
            });
        }
        Ok(s)
    }
}

/// Builds one chunk.
struct ChunkWriter {
    buf: Vec<u8>,
    count: u32,
    target: usize,
}

impl ChunkWriter {
    fn new(target: usize) -> ChunkWriter {
        let mut buf = Vec::with_capacity(target.min(CHUNK_BYTES_TARGET) + (64 << 10));
        buf.resize(CHUNK_HEADER_BYTES, 0);
        ChunkWriter {
            buf,
            count: 0,
            target,
        }
    }

    fn full(&self) -> bool {
        self.buf.len() >= self.target
    }

    fn push(&mut self, tree: u8, key: &[u8], value: &[u8]) {
        self.buf.push(tree);
        self.buf
            .extend_from_slice(&(key.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(key);
        self.buf
            .extend_from_slice(&(value.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(value);
        self.count += 1;
    }

    fn seal(mut self, seq: u64, last: bool) -> Bytes {
        let b = &mut self.buf;
        b[..4].copy_from_slice(&CHUNK_MAGIC);
        b[4] = TRANSFER_FORMAT_VERSION;
        b[5] = if last { FLAG_LAST } else { 0 };
        b[6..8].fill(0);
        b[8..16].copy_from_slice(&seq.to_le_bytes());
        b[16..20].copy_from_slice(&self.count.to_le_bytes());
        let crc = chunk_crc(b);
        b[20..24].copy_from_slice(&crc.to_le_bytes());
        Bytes::from(self.buf)
    }
}

fn chunk_crc(b: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&b[..20]), &b[CHUNK_HEADER_BYTES..])
}

/// One decoded chunk: its number, whether it is the last, and its entries (slices of the
/// chunk's buffer).
#[derive(Debug)]
pub struct Chunk {
    pub seq: u64,
    pub last: bool,
    entries: Vec<(u8, Bytes, Bytes)>,
}

impl Chunk {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Checks a chunk's header and checksum and splits its entries.
pub fn decode_chunk(bytes: &Bytes) -> Result<Chunk> {
    let short = TransferError::Malformed {
        seq: 0,
        reason: "shorter than a chunk header",
    };
    if bytes.len() < CHUNK_HEADER_BYTES {
        return Err(short);
    }
    let seq = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    let bad = |reason| TransferError::Malformed { seq, reason };
    if bytes[..4] != CHUNK_MAGIC {
        return Err(bad("bad magic"));
    }
    if bytes[4] != TRANSFER_FORMAT_VERSION {
        return Err(bad("unknown format version"));
    }
    if bytes[5] & !FLAG_LAST != 0 || bytes[6..8] != [0, 0] {
        return Err(bad("unknown flags"));
    }
    let expected = u32::from_le_bytes(bytes[20..24].try_into().expect("4 bytes"));
    let actual = chunk_crc(bytes);
    if expected != actual {
        return Err(TransferError::ChecksumMismatch {
            seq,
            expected,
            actual,
        });
    }
    let count = u32::from_le_bytes(bytes[16..20].try_into().expect("4 bytes")) as usize;
    let mut at = CHUNK_HEADER_BYTES;
    let mut take = |n: usize| -> Result<std::ops::Range<usize>> {
        if bytes.len() - at < n {
            return Err(bad("entry past the end of the chunk"));
        }
        at += n;
        Ok(at - n..at)
    };
    // Every entry takes at least 9 bytes: a count past that is damage, not an allocation.
    if count > (bytes.len() - CHUNK_HEADER_BYTES) / 9 {
        return Err(bad("more entries than bytes"));
    }
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let tree = bytes[take(1)?][0];
        let n = u32::from_le_bytes(bytes[take(4)?].try_into().expect("4 bytes")) as usize;
        let key = bytes.slice(take(n)?);
        let n = u32::from_le_bytes(bytes[take(4)?].try_into().expect("4 bytes")) as usize;
        let value = bytes.slice(take(n)?);
        entries.push((tree, key, value));
    }
    if at != bytes.len() {
        return Err(bad("bytes after the last entry"));
    }
    Ok(Chunk {
        seq,
        last: bytes[5] & FLAG_LAST != 0,
        entries,
    })
}

/// What an importer has accepted so far: chunks in order, the summary first, the end last.
#[derive(Debug, Default)]
struct Tally {
    next_seq: u64,
    entries: u64,
    summary: Option<Summary>,
    done: bool,
}

impl Tally {
    fn begin(&mut self, chunk: &Chunk) -> Result<()> {
        if self.done {
            return Err(TransferError::Malformed {
                seq: chunk.seq,
                reason: "a chunk after the last one",
            });
        }
        if chunk.seq != self.next_seq {
            return Err(TransferError::OutOfOrder {
                expected: self.next_seq,
                found: chunk.seq,
            });
        }
        self.next_seq += 1;
        Ok(())
    }

    /// Accepts one entry; `Some(tree)` when it is data for that tree.
    fn entry(&mut self, chunk: &Chunk, i: usize) -> Result<Option<TreeId>> {
        let seq = chunk.seq;
        let bad = |reason| TransferError::Malformed { seq, reason };
        let (tree, key, value) = &chunk.entries[i];
        if self.done {
            return Err(bad("an entry after the end"));
        }
        match *tree {
            TREE_SUMMARY => {
                if self.summary.is_some() || !key.is_empty() {
                    return Err(bad("a second summary"));
                }
                self.summary = Some(Summary::decode(seq, value)?);
                Ok(None)
            }
            _ if self.summary.is_none() => Err(bad("an entry before the summary")),
            TREE_END => {
                let n: [u8; 8] = value[..]
                    .try_into()
                    .map_err(|_| bad("end of the wrong length"))?;
                if u64::from_le_bytes(n) != self.entries {
                    return Err(TransferError::Incomplete {
                        reason: "the end counts another number of entries than arrived",
                    });
                }
                if !chunk.last || i + 1 != chunk.entries.len() {
                    return Err(bad("the end is not the last entry of the last chunk"));
                }
                self.done = true;
                Ok(None)
            }
            t @ (0 | 1 | 3) => {
                self.entries += 1;
                let tree = TreeId(t);
                check_entry(tree, key, value)?;
                Ok(Some(tree))
            }
            _ => Err(bad("unknown tree")),
        }
    }

    fn end(&self, chunk: &Chunk) -> Result<()> {
        if chunk.last && !self.done {
            return Err(TransferError::Incomplete {
                reason: "the last chunk has no end entry",
            });
        }
        Ok(())
    }

    fn finished(&self) -> Result<Summary> {
        match (self.done, self.summary) {
            (true, Some(s)) => Ok(s),
            _ => Err(TransferError::Incomplete {
                reason: "finished before the last chunk",
            }),
        }
    }
}

/// Decodes an entry as the image would read it (a damaged one is refused now, not later).
fn check_entry(tree: TreeId, key: &[u8], value: &[u8]) -> Result<()> {
    match tree {
        HISTORY => {
            decode_record(decode_rev(key)?, value)?;
        }
        LEASES => {
            decode_lease_entry(key, value)?;
        }
        _ => {
            decode_key_entry(key, value)?;
        }
    }
    Ok(())
}

fn lease_entry(id: LeaseId, ttl: i64) -> ([u8; 8], [u8; 9]) {
    let mut v = [0u8; 9];
    v[0] = LEASE_FORMAT_VERSION;
    v[1..].copy_from_slice(&ttl.to_le_bytes());
    (id.to_be_bytes(), v)
}

fn attachment_entry(id: LeaseId, key: &[u8]) -> (Vec<u8>, &[u8]) {
    let mut k = id.to_be_bytes().to_vec();
    k.extend_from_slice(&stored_key(key));
    let v = if key.len() > SHORT_KEY_MAX { key } else { &[] };
    (k, v)
}

fn key_entry(key: &[u8], ki: &KeyIndex, value: &mut Vec<u8>) -> Vec<u8> {
    value.clear();
    value.push(KEY_FORMAT_VERSION);
    if key.len() > SHORT_KEY_MAX {
        value.push(FLAG_LONG_KEY);
        value.extend_from_slice(&(key.len() as u32).to_le_bytes());
        value.extend_from_slice(key);
    } else {
        value.push(0);
    }
    ki.encode(value);
    stored_key(key)
}

/// Where a [`StoreExport`] goes on.
#[derive(Debug, Clone)]
enum StoreCursor {
    Summary,
    /// Leases up to `done` are sent; `partial`: a lease whose entry is sent, with its
    /// attachments sent up to the key named.
    Leases {
        done: Option<LeaseId>,
        partial: Option<(LeaseId, Option<Bytes>)>,
    },
    /// Key indexes sent up to the key named.
    Keys(Option<Bytes>),
    /// History sent up to the revision named.
    History(Option<Rev>),
    End,
    Done,
}

/// Exports an in-memory store (a copy taken at the snapshot's log id).
pub struct StoreExport {
    store: Box<Store>,
    at: StoreCursor,
    seq: u64,
    entries: u64,
    chunk_bytes: usize,
}

impl StoreExport {
    /// `store` must hold all of its data (an in-memory store, not a durable store's cache).
    pub fn new(store: Box<Store>) -> StoreExport {
        assert!(
            store.paging.is_none(),
            "only an in-memory store exports from memory; a durable one exports its image"
        );
        StoreExport {
            store,
            at: StoreCursor::Summary,
            seq: 0,
            entries: 0,
            chunk_bytes: CHUNK_BYTES_TARGET,
        }
    }

    /// Seals chunks at `bytes` instead of [`CHUNK_BYTES_TARGET`] (tests: many small chunks).
    pub fn with_chunk_bytes(mut self, bytes: usize) -> StoreExport {
        self.chunk_bytes = bytes.max(1);
        self
    }

    /// The next chunk, `None` after the last.
    pub fn next_chunk(&mut self) -> Option<Bytes> {
        let s = &*self.store;
        let mut w = ChunkWriter::new(self.chunk_bytes);
        let mut value = Vec::new();
        let mut last = false;
        while !w.full() {
            match std::mem::replace(&mut self.at, StoreCursor::Done) {
                StoreCursor::Summary => {
                    let summary = Summary {
                        revision: s.current_revision,
                        compact_main: s.compact_main,
                        compacted: s.compact_main,
                        lease_seq: s.lessor.id_seq(),
                    };
                    w.push(TREE_SUMMARY, &[], &summary.encode());
                    self.at = StoreCursor::Leases {
                        done: None,
                        partial: None,
                    };
                }
                StoreCursor::Leases { done, partial } => {
                    let (id, mut after) = match partial {
                        Some(p) => p,
                        None => {
                            let ids = s.lessor.ids();
                            let pos = done.map_or(0, |d| ids.partition_point(|x| *x <= d));
                            let Some(&id) = ids.get(pos) else {
                                self.at = StoreCursor::Keys(None);
                                continue;
                            };
                            let ttl = s.lessor.get(id).expect("listed lease").ttl_secs;
                            let (k, v) = lease_entry(id, ttl);
                            w.push(1, &k, &v);
                            self.entries += 1;
                            (id, None)
                        }
                    };
                    let lease = s.lessor.get(id).expect("lease being sent");
                    let lower = after.clone().map_or(Bound::Unbounded, Bound::Excluded);
                    let mut cut = false;
                    for key in lease.keys.range((lower, Bound::Unbounded)) {
                        if w.full() {
                            cut = true;
                            break;
                        }
                        let (k, v) = attachment_entry(id, key);
                        w.push(1, &k, v);
                        self.entries += 1;
                        after = Some(key.clone());
                    }
                    self.at = if cut {
                        StoreCursor::Leases {
                            done,
                            partial: Some((id, after)),
                        }
                    } else {
                        StoreCursor::Leases {
                            done: Some(id),
                            partial: None,
                        }
                    };
                }
                StoreCursor::Keys(after) => {
                    let lower = after.clone().map_or(Bound::Unbounded, Bound::Excluded);
                    let mut sent = after;
                    let mut cut = false;
                    for (key, ki) in s.index.range::<Bytes, _>((lower, Bound::Unbounded)) {
                        if w.full() {
                            cut = true;
                            break;
                        }
                        let k = key_entry(key, ki, &mut value);
                        w.push(3, &k, &value);
                        self.entries += 1;
                        sent = Some(key.clone());
                    }
                    self.at = if cut {
                        StoreCursor::Keys(sent)
                    } else {
                        StoreCursor::History(None)
                    };
                }
                StoreCursor::History(after) => {
                    let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
                    let mut sent = after;
                    let mut cut = false;
                    for (rev, record) in s.history.range((lower, Bound::Unbounded)) {
                        if w.full() {
                            cut = true;
                            break;
                        }
                        value.clear();
                        encode_record(record, &mut value);
                        w.push(0, &encode_rev(*rev), &value);
                        self.entries += 1;
                        sent = Some(*rev);
                    }
                    self.at = if cut {
                        StoreCursor::History(sent)
                    } else {
                        StoreCursor::End
                    };
                }
                StoreCursor::End => {
                    w.push(TREE_END, &[], &self.entries.to_le_bytes());
                    last = true;
                    break;
                }
                StoreCursor::Done => return None,
            }
        }
        let seq = self.seq;
        self.seq += 1;
        Some(w.seal(seq, last))
    }
}

/// The trees an [`ImageExport`] sends, in order.
const EXPORT_TREES: [TreeId; 3] = [LEASES, KEYS, HISTORY];

/// Where an [`ImageExport`] goes on.
#[derive(Debug, Clone)]
enum ImageCursor {
    Summary,
    /// `EXPORT_TREES[i]` sent up to the key named.
    Tree(usize, Option<Vec<u8>>),
    End,
    Done,
}

/// Exports a durable store's image as of one checkpoint (its reader's epoch), reading the page
/// log a batch at a time; checkpoints may go on meanwhile (a reader keeps its epoch).
pub struct ImageExport<D: Disk> {
    reader: ImageReader<D>,
    at: ImageCursor,
    seq: u64,
    entries: u64,
    chunk_bytes: usize,
}

impl<D: Disk> ImageExport<D> {
    pub fn new(reader: ImageReader<D>) -> ImageExport<D> {
        ImageExport {
            reader,
            at: ImageCursor::Summary,
            seq: 0,
            entries: 0,
            chunk_bytes: CHUNK_BYTES_TARGET,
        }
    }

    /// Seals chunks at `bytes` instead of [`CHUNK_BYTES_TARGET`] (tests: many small chunks).
    pub fn with_chunk_bytes(mut self, bytes: usize) -> ImageExport<D> {
        self.chunk_bytes = bytes.max(1);
        self
    }

    /// The log index the exported checkpoint holds (its superblock's).
    pub fn applied_index(&self) -> u64 {
        self.reader.pages.applied_index()
    }

    /// The caller's bytes saved with the exported checkpoint (empty for a new image).
    pub async fn app(&self) -> Result<Bytes> {
        Ok(Bytes::from(
            self.reader
                .pages
                .get(META, META_APP)
                .await?
                .unwrap_or_default(),
        ))
    }

    async fn meta_i64(&self, key: &[u8], absent: i64) -> Result<i64> {
        Ok(match self.reader.pages.get(META, key).await? {
            Some(v) => i64::from_le_bytes(fixed(&v, "meta counter")?),
            None => absent,
        })
    }

    /// The next chunk, `None` after the last.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        let pages = &self.reader.pages;
        let mut w = ChunkWriter::new(self.chunk_bytes);
        let mut last = false;
        while !w.full() {
            match std::mem::replace(&mut self.at, ImageCursor::Done) {
                ImageCursor::Summary => {
                    let format = pages.get(META, META_FORMAT).await?;
                    let empty = pages.is_empty(HISTORY)? && pages.is_empty(LEASES)?;
                    if format.as_deref() != Some(&[IMAGE_FORMAT_VERSION][..]) && !empty {
                        // A format-1 image is rewritten by the next checkpoint; send that.
                        return Err(TransferError::Incomplete {
                            reason: "the image is not in the current format yet",
                        });
                    }
                    let summary = Summary {
                        revision: pages.revision().max(1),
                        compact_main: self.meta_i64(META_COMPACT, -1).await?,
                        compacted: self.meta_i64(META_COMPACTED, -1).await?,
                        lease_seq: self.meta_i64(META_LEASE_SEQ, 0).await? as u64,
                    };
                    w.push(TREE_SUMMARY, &[], &summary.encode());
                    self.at = ImageCursor::Tree(0, None);
                }
                ImageCursor::Tree(i, after) => {
                    let lower = match &after {
                        Some(k) => Bound::Excluded(&k[..]),
                        None => Bound::Unbounded,
                    };
                    let batch = pages
                        .scan(EXPORT_TREES[i], lower, Bound::Unbounded, false, SCAN_BATCH)
                        .await?;
                    let complete = batch.len() < SCAN_BATCH;
                    let mut sent = after;
                    let mut cut = false;
                    for (k, v) in batch {
                        if w.full() {
                            cut = true;
                            break;
                        }
                        w.push(EXPORT_TREES[i].0, &k, &v);
                        self.entries += 1;
                        sent = Some(k);
                    }
                    self.at = if cut || !complete {
                        ImageCursor::Tree(i, sent)
                    } else if i + 1 < EXPORT_TREES.len() {
                        ImageCursor::Tree(i + 1, None)
                    } else {
                        ImageCursor::End
                    };
                }
                ImageCursor::End => {
                    w.push(TREE_END, &[], &self.entries.to_le_bytes());
                    last = true;
                    break;
                }
                ImageCursor::Done => return Ok(None),
            }
        }
        let seq = self.seq;
        self.seq += 1;
        Ok(Some(w.seal(seq, last)))
    }
}

/// Builds an in-memory store from a stream.
#[derive(Default)]
pub struct StoreImport {
    tally: Tally,
    index: BTreeMap<Bytes, KeyIndex>,
    history: History,
    leases: Vec<(LeaseId, i64)>,
    attachments: Vec<(LeaseId, Bytes)>,
}

impl StoreImport {
    pub fn new() -> StoreImport {
        StoreImport::default()
    }

    /// Takes the next chunk (in order; see the module comment).
    pub fn push(&mut self, bytes: &Bytes) -> Result<()> {
        let chunk = decode_chunk(bytes)?;
        self.tally.begin(&chunk)?;
        for i in 0..chunk.entries.len() {
            let Some(tree) = self.tally.entry(&chunk, i)? else {
                continue;
            };
            let (_, key, value) = &chunk.entries[i];
            match tree {
                HISTORY => {
                    let rev = decode_rev(key)?;
                    self.history.insert(rev, decode_record(rev, value)?);
                }
                LEASES => match decode_lease_entry(key, value)? {
                    LeaseEntry::Lease(id, ttl) => self.leases.push((id, ttl)),
                    LeaseEntry::Attached(id, key) => self.attachments.push((id, key)),
                },
                _ => {
                    let (key, ki) = decode_key_entry(key, value)?;
                    self.index.insert(key, ki);
                }
            }
        }
        self.tally.end(&chunk)
    }

    /// Whether the last chunk arrived.
    pub fn is_complete(&self) -> bool {
        self.tally.done
    }

    /// The store the stream describes; lease deadlines start at `now_ms` + TTL.
    pub fn finish(self, now_ms: u64) -> Result<Store> {
        let summary = self.tally.finished()?;
        let bad = |reason| TransferError::Incomplete { reason };
        let mut lessor = Lessor::default();
        for (id, ttl) in self.leases {
            if lessor.get(id).is_some() {
                return Err(bad("a lease sent twice"));
            }
            lessor.restore(id, ttl, now_ms);
        }
        lessor.set_id_seq(summary.lease_seq);
        for (id, key) in &self.attachments {
            if !lessor.attach(*id, key) {
                return Err(bad("an attachment to a lease not sent"));
            }
        }
        let mut store = Store {
            index: self.index,
            history: self.history,
            current_revision: summary.revision,
            compact_main: summary.compact_main,
            lessor,
            paging: None,
            advanced: false,
            taking: None,
        };
        // An image compacts its key indexes lazily; memory holds them compacted.
        if summary.compacted < summary.compact_main {
            let mut emptied = Vec::new();
            for (key, ki) in store.index.iter_mut() {
                for rev in ki.compact_dropping(summary.compact_main) {
                    store.history.remove(rev);
                }
                if ki.is_empty() {
                    emptied.push(key.clone());
                }
            }
            for key in emptied {
                store.index.remove(&key);
            }
        }
        // Every indexed revision has its record and every record its index entry.
        let mut indexed = 0usize;
        for (key, ki) in &store.index {
            for rev in ki.all_revs() {
                match store.history.get(rev) {
                    Some(r) if r.kv.key == *key => indexed += 1,
                    _ => return Err(bad("a key index names a record not sent")),
                }
                if rev.main > store.current_revision {
                    return Err(bad("a revision past the store revision"));
                }
            }
        }
        if indexed != store.history.len() {
            return Err(bad("history records no key index names"));
        }
        Ok(store)
    }
}

/// Builds a new page log from a stream (a durable follower's incoming snapshot). Dirty pages
/// are written by intermediate checkpoints that record log index 0 and no caller bytes, so an
/// interrupted import is recognisable as such (see [`committed_app`]); [`ImageImport::finish`]
/// commits the whole image in one superblock write.
pub struct ImageImport<D: Disk> {
    pages: BTree<D>,
    tally: Tally,
}

impl<D: Disk> ImageImport<D> {
    /// Starts an image in `disk` under `config.file_prefix`, which must hold no page log
    /// (remove a leftover one with [`remove_page_log`] first).
    pub async fn create(disk: D, config: btree::Config) -> Result<ImageImport<D>> {
        let pages = BTree::open(disk, config).await?;
        if pages.applied_index() != 0
            || [HISTORY, LEASES, META, KEYS]
                .iter()
                .any(|t| !pages.is_empty(*t).unwrap_or(false))
        {
            return Err(TransferError::Incomplete {
                reason: "the target page log is not empty",
            });
        }
        Ok(ImageImport {
            pages,
            tally: Tally::default(),
        })
    }

    /// Takes the next chunk (in order) and writes its entries.
    pub async fn push(&mut self, bytes: &Bytes) -> Result<()> {
        let chunk = decode_chunk(bytes)?;
        self.tally.begin(&chunk)?;
        for i in 0..chunk.entries.len() {
            if let Some(tree) = self.tally.entry(&chunk, i)? {
                let (_, key, value) = &chunk.entries[i];
                self.pages.insert(tree, key, value).await?;
            }
        }
        self.tally.end(&chunk)?;
        if self.pages.stats().dirty_nodes >= IMPORT_DIRTY_NODES_MAX {
            self.pages.checkpoint(0, 0).await?;
        }
        Ok(())
    }

    pub fn is_complete(&self) -> bool {
        self.tally.done
    }

    /// Writes the counters and commits the image as the state after `applied_index` (>= 1),
    /// with `app` (non-empty) saved beside.
    pub async fn finish(mut self, applied_index: u64, app: &[u8]) -> Result<CheckpointReport> {
        assert!(
            applied_index >= 1 && !app.is_empty(),
            "a committed import names its entry"
        );
        let s = self.tally.finished()?;
        let metas: [(&[u8], Vec<u8>); 5] = [
            (META_COMPACT, s.compact_main.to_le_bytes().to_vec()),
            (META_COMPACTED, s.compacted.to_le_bytes().to_vec()),
            (META_LEASE_SEQ, s.lease_seq.to_le_bytes().to_vec()),
            (META_FORMAT, vec![IMAGE_FORMAT_VERSION]),
            (META_APP, app.to_vec()),
        ];
        for (k, v) in metas {
            self.pages.insert(META, k, &v).await?;
        }
        Ok(self.pages.checkpoint(applied_index, s.revision).await?)
    }
}

/// Whether `name` is a file of the page log with `prefix`.
fn is_page_log_file(prefix: &str, name: &str) -> bool {
    if name.strip_prefix(prefix) == Some(".super") {
        return true;
    }
    name.strip_prefix(prefix)
        .and_then(|n| n.strip_prefix('-'))
        .and_then(|n| n.strip_suffix(".seg"))
        .is_some_and(|hex| hex.len() == 8 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Whether `disk` holds a page log with `prefix` (its superblock file).
pub async fn page_log_exists<D: Disk>(disk: &D, prefix: &str) -> Result<bool> {
    let want = format!("{prefix}.super");
    Ok(disk.list().await?.contains(&want))
}

/// Removes every file of the page log with `prefix` (segments first, the superblock last) and
/// makes the removal durable. Returns how many files it removed.
pub async fn remove_page_log<D: Disk>(disk: &D, prefix: &str) -> Result<usize> {
    let mut names: Vec<String> = disk
        .list()
        .await?
        .into_iter()
        .filter(|n| is_page_log_file(prefix, n))
        .collect();
    // The superblock goes first: a crash part-way leaves segment files no superblock names,
    // which `page_log_exists` does not see and the next page log with this prefix removes
    // when it opens; never a superblock naming missing segments.
    names.sort_by_key(|n| !n.ends_with(".super"));
    for name in &names {
        disk.remove(name).await?;
    }
    disk.sync_dir().await?;
    Ok(names.len())
}

/// The applied index and caller bytes of the last committed checkpoint of the page log with
/// `config.file_prefix` in `disk` (which must exist: [`page_log_exists`]). An import never
/// finished reads as `(0, empty)` or as whatever its intermediate checkpoints left: index 0,
/// no bytes.
pub async fn committed_app<D: Disk>(disk: D, config: btree::Config) -> Result<(u64, Bytes)> {
    let pages = BTree::open(disk, config).await?;
    let app = pages.get(META, META_APP).await?.unwrap_or_default();
    Ok((pages.applied_index(), Bytes::from(app)))
}

#[cfg(test)]
mod tests;
