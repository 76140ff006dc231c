//! The store's durable image: the MVCC history, the lease table and a few counters kept in the
//! page log (`btree`), written by checkpoints and read back when a shard opens (design.md §7).
//!
//! Trees of the page log (layouts byte by byte in `docs/storage-format.md`):
//!
//! ```text
//! tree 0  history   key: main:i64 BE | sub:i64 BE            (revision order)
//!                   value: format:u8 = 1 | flags:u8 (bit 0 tombstone)
//!                          | create_revision:i64 LE | version:i64 LE | lease:i64 LE
//!                          | key_len:u32 LE | key | value
//! tree 1  leases    key: lease_id:i64 BE    value: format:u8 = 1 | ttl_secs:i64 LE
//! tree 2  meta      "compact"   -> compact_main:i64 LE (etcd's compactMainRev, -1 = never)
//!                   "lease_seq" -> u64 LE (the generator of lease ids)
//!                   "app"       -> bytes the caller keeps with the image (the shard's Raft
//!                                  applied log id and membership)
//! superblock        applied_index, revision (the store's current revision)
//! ```
//!
//! A checkpoint writes what changed since the previous one — the store's journal (see
//! `history.rs` and `lease.rs`): each changed revision is written when still present and
//! removed when gone, each changed lease likewise — then the counters, then
//! [`BTree::checkpoint`], whose superblock write is the commit point. The journal is taken in
//! one synchronous step on the shard's thread, so the image is the store exactly as of one
//! applied index; the writes after it (possibly many, interleaved with new applies) touch only
//! the page log. A failed checkpoint leaves the previous superblock in force: the shard must
//! stop (the page log latches itself stopped) and restart from the last good image plus the
//! log.
//!
//! Opening reads the whole history tree in revision order and rebuilds the in-memory key index
//! from it: restart time grows with the data size until reads go to the page log directly.
//!
//! Invariants: the image at superblock S is exactly the store after applying log index
//! `S.applied_index`; every history record decodes (a record that does not is reported as
//! [`ImageError::Corrupt`], never skipped).

use std::collections::BTreeMap;
use std::future::Future;
use std::ops::Bound;

use bytes::Bytes;

use super::history::{History, Record};
use super::key_index::KeyIndex;
use super::{Rev, Store};
use crate::btree::{self, BTree, CheckpointReport, TreeId};
use crate::io::Disk;
use crate::lease::Lessor;
use crate::types::{KeyValue, LeaseId, Revision};

const HISTORY: TreeId = TreeId(0);
const LEASES: TreeId = TreeId(1);
const META: TreeId = TreeId(2);

/// Format of a history record's value. 1: first layout.
pub const RECORD_FORMAT_VERSION: u8 = 1;
/// Format of a lease value. 1: first layout.
pub const LEASE_FORMAT_VERSION: u8 = 1;
const FLAG_TOMBSTONE: u8 = 1;
const RECORD_HEADER_BYTES: usize = 1 + 1 + 8 * 3 + 4;

const META_COMPACT: &[u8] = b"compact";
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
#[derive(Debug, Default)]
pub struct Changes {
    records: Vec<(Rev, Option<Record>)>,
    leases: Vec<(LeaseId, Option<i64>)>,
    revision: Revision,
    compact_main: Revision,
    lease_seq: u64,
    payload_bytes: u64,
}

impl Changes {
    /// Changed revisions and leases.
    pub fn len(&self) -> usize {
        self.records.len() + self.leases.len()
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

impl Store {
    /// Starts journaling changes for [`Store::take_changes`] (a durable shard calls this once,
    /// right after opening or creating its store).
    pub fn keep_journal(&mut self) {
        self.history.keep_journal();
        self.lessor.keep_journal();
    }

    /// What the journal holds now.
    pub fn pending_changes(&self) -> Pending {
        let (records, payload_bytes) = self.history.journal_size();
        Pending {
            changes: records + self.lessor.journal_len(),
            payload_bytes,
        }
    }

    /// Takes the journal: every change since the previous call, with the records as they are
    /// now. Cheap (records share their bytes), so it can run between two applies.
    pub fn take_changes(&mut self) -> Changes {
        let (revs, payload_bytes) = self.history.take_journal();
        let records = revs
            .into_iter()
            .map(|rev| (rev, self.history.get(rev).cloned()))
            .collect();
        let leases = self
            .lessor
            .take_journal()
            .into_iter()
            .map(|id| (id, self.lessor.get(id).map(|l| l.ttl_secs)))
            .collect();
        Changes {
            records,
            leases,
            revision: self.current_revision,
            compact_main: self.compact_main,
            lease_seq: self.lessor.id_seq(),
            payload_bytes,
        }
    }

    /// Rebuilds a store from its image: records in revision order, the lease table and the
    /// counters. Lease deadlines start at `now_ms + ttl`.
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

impl<D: Disk> StoreImage<D> {
    /// Opens (or creates) the page log in `disk` and rebuilds the store it holds.
    pub async fn open(
        disk: D,
        config: btree::Config,
        now_ms: u64,
    ) -> Result<(StoreImage<D>, Store, ImageMeta)> {
        let mut pages = BTree::open(disk, config).await?;
        let mut records = Vec::new();
        let mut cursor = pages.range(HISTORY, Bound::Unbounded, Bound::Unbounded);
        while let Some((k, v)) = cursor.next(&mut pages).await? {
            let rev = decode_rev(&k)?;
            records.push((rev, decode_record(rev, &v)?));
        }
        let mut leases = Vec::new();
        let mut cursor = pages.range(LEASES, Bound::Unbounded, Bound::Unbounded);
        while let Some((k, v)) = cursor.next(&mut pages).await? {
            leases.push(decode_lease(&k, &v)?);
        }
        let compact_main = match pages.get(META, META_COMPACT).await? {
            Some(v) => i64::from_le_bytes(fixed(&v, "meta compact")?),
            None => -1,
        };
        let lease_seq = match pages.get(META, META_LEASE_SEQ).await? {
            Some(v) => u64::from_le_bytes(fixed(&v, "meta lease_seq")?),
            None => 0,
        };
        let app = pages.get(META, META_APP).await?.unwrap_or_default();
        // A new page log records revision 0; an empty store's revision is 1.
        let revision = pages.revision().max(1);
        let store = Store::restore(records, leases, revision, compact_main, lease_seq, now_ms)?;
        let meta = ImageMeta {
            applied_index: pages.applied_index(),
            app: Bytes::from(app),
        };
        Ok((StoreImage { pages }, store, meta))
    }

    /// Writes `changes` and commits them as the state after `applied_index`, with `app` saved
    /// beside. `pause` is awaited every [`RECORDS_PER_PAUSE`] records so other tasks can run.
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
        for (i, (rev, record)) in changes.records.iter().enumerate() {
            if i % RECORDS_PER_PAUSE == RECORDS_PER_PAUSE - 1 {
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
        self.pages
            .insert(META, META_COMPACT, &changes.compact_main.to_le_bytes())
            .await?;
        self.pages
            .insert(META, META_LEASE_SEQ, &changes.lease_seq.to_le_bytes())
            .await?;
        self.pages.insert(META, META_APP, app).await?;
        Ok(self
            .pages
            .checkpoint(applied_index, changes.revision)
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

#[cfg(test)]
mod tests;
