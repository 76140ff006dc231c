//! A shard's durable storage (design.md §6, §7, §9): its Raft log on the engine's WAL and its
//! state machine's image in the page log, both in the shard's own directory:
//!
//! ```text
//! <dir>/wal/     WAL segments and the vote file   (ballast_engine::wal; or `wal_dir`)
//! <dir>/pages/   page-log segments and superblock (ballast_engine::btree, mvcc::image)
//! ```
//!
//! A write is acknowledged after its log entry is fdatasync'ed (openraft commits an entry only
//! once the log store reports it flushed). The state machine lives in memory and is made
//! durable by checkpoints, off the write path: a checkpoint is the shard's Raft snapshot — it
//! takes the store's change journal as of the last applied entry, writes it to the page log
//! in a task of its own (pausing every few hundred records so applies go on), commits a
//! superblock recording that entry, and then openraft purges the log up to it. A restart opens
//! the last superblock and replays the log after its applied entry.
//!
//! The image's opaque "app" bytes carry the Raft facts of the checkpoint:
//!
//! ```text
//! version:u8 = 1 | applied: present:u8 term:u64 LE index:u64 LE
//!                | membership log id: present:u8 term:u64 LE index:u64 LE
//!                | membership (the log store's membership encoding)
//! ```
//! (indexes in openraft's 0-based numbering; absent ids are written as zeros.)
//!
//! Fail-stop: the WAL and the page log each latch themselves stopped on a failed write or
//! sync; openraft turns a log-store or snapshot error into a fatal stop of the group. The
//! shard then answers every request with the failure (see `shard.rs`), and reports it in its
//! status, until the process restarts and recovers from what is on disk.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use ballast_engine::btree::{self, CheckpointReport};
use ballast_engine::io::sim::SimDisk;
use ballast_engine::io::Disk;
use ballast_engine::mvcc::image::{Changes, ImageError, ImageReader, StoreImage};
use ballast_engine::mvcc::paging::{Loaded, Missing};
use ballast_engine::wal::{Wal, WalConfig};
use ballast_engine::Store;
use bytes::{BufMut, Bytes};

use crate::log_store::{decode_membership, encode_membership, log_id, LocalFuture, WalLog};
use crate::types::{LogId, StoredMembership};

/// Version of the app bytes saved with each checkpoint. 1: first layout.
pub const CHECKPOINT_META_VERSION: u8 = 1;

/// Which disks a durable shard uses.
#[derive(Clone, Default)]
pub enum Disks {
    /// Files under the shard's directory, through glommio DMA (O_DIRECT) — the server's.
    #[default]
    Files,
    /// Simulated disks `(wal, pages)` made on the shard's thread by the function (they are
    /// `!Send`): tests use it to inject faults (`SimDisk::crash_at_op`, `fail_next`) into a
    /// running shard. `dir` then only names the shard in messages.
    Sim(Arc<dyn Fn() -> (SimDisk, SimDisk) + Send + Sync>),
}

impl std::fmt::Debug for Disks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Disks::Files => f.write_str("Files"),
            Disks::Sim(_) => f.write_str("Sim"),
        }
    }
}

/// Where and how a shard keeps its data.
#[derive(Clone, Debug)]
pub struct ShardStorage {
    pub disks: Disks,
    /// The shard's directory (created when missing).
    pub dir: PathBuf,
    /// Where the WAL goes instead of `<dir>/wal` (etcd's `--wal-dir`, for a separate disk).
    pub wal_dir: Option<PathBuf>,
    pub wal: WalConfig,
    pub pages: btree::Config,
    /// A checkpoint starts when this much key and value data changed since the last one
    /// (defaults as the server's `checkpoint-dirty-bytes` and `checkpoint-interval-ms`)...
    pub checkpoint_bytes: u64,
    /// ...or when this much time passed with any change. (openraft also snapshots every
    /// `snapshot_count` entries.)
    pub checkpoint_interval: Duration,
}

impl ShardStorage {
    pub fn new(dir: impl Into<PathBuf>) -> ShardStorage {
        ShardStorage {
            disks: Disks::Files,
            dir: dir.into(),
            wal_dir: None,
            wal: WalConfig::default(),
            pages: btree::Config::default(),
            checkpoint_bytes: 8 << 20,
            checkpoint_interval: Duration::from_secs(30),
        }
    }
}

/// What a shard's state machine needs of its durable image.
pub trait Durability {
    /// Writes `changes` and commits them as the state after backend log index
    /// `applied_index` (1-based), with `app` saved beside.
    fn checkpoint(
        &self,
        changes: Changes,
        applied_index: u64,
        app: Bytes,
    ) -> LocalFuture<Result<CheckpointReport, ImageError>>;
    /// Reads what the store is missing from the image as of its last checkpoint (runs while
    /// a checkpoint does).
    fn fetch(&self, missing: Missing) -> LocalFuture<Result<Loaded, ImageError>>;
    /// Bytes the store's in-memory cache of the image may keep (clean data; changes not yet
    /// checkpointed come on top).
    fn store_cache_bytes(&self) -> u64;
    /// The page log's figures.
    fn page_stats(&self) -> btree::Stats;
    /// Bytes the page log's files take on disk (preallocated segments and the superblock
    /// file).
    fn page_log_bytes(&self) -> u64;
    /// Why the WAL stopped, if it did.
    fn wal_failure(&self) -> Option<String>;
    fn wal_stats(&self) -> ballast_engine::wal::WalStats;
}

struct Parts<D: Disk> {
    /// Taken out while a checkpoint runs (one at a time: openraft builds one snapshot at once).
    image: Rc<RefCell<Option<StoreImage<D>>>>,
    /// Reads the last durable checkpoint; replaced when a checkpoint commits.
    reader: Rc<RefCell<ImageReader<D>>>,
    store_cache_bytes: u64,
    stats: Rc<RefCell<btree::Stats>>,
    segment_bytes: u64,
    wal: Wal<D>,
}

impl<D: Disk + 'static> Durability for Parts<D> {
    fn checkpoint(
        &self,
        changes: Changes,
        applied_index: u64,
        app: Bytes,
    ) -> LocalFuture<Result<CheckpointReport, ImageError>> {
        let slot = self.image.clone();
        let stats = self.stats.clone();
        let reader = self.reader.clone();
        Box::pin(async move {
            let mut image = slot.borrow_mut().take().expect("one checkpoint at a time");
            let result = image
                .checkpoint(changes, applied_index, &app, crate::runtime::yield_now)
                .await;
            *stats.borrow_mut() = image.stats();
            if result.is_ok() {
                *reader.borrow_mut() = image.reader();
            }
            *slot.borrow_mut() = Some(image);
            result
        })
    }

    fn fetch(&self, missing: Missing) -> LocalFuture<Result<Loaded, ImageError>> {
        let reader = self.reader.borrow().clone();
        Box::pin(async move { reader.fetch(&missing).await })
    }

    fn store_cache_bytes(&self) -> u64 {
        self.store_cache_bytes
    }

    fn page_stats(&self) -> btree::Stats {
        self.stats.borrow().clone()
    }

    fn page_log_bytes(&self) -> u64 {
        let segments = self.stats.borrow().segments as u64;
        segments * self.segment_bytes + 2 * btree::SLOT_SIZE as u64
    }

    fn wal_failure(&self) -> Option<String> {
        self.wal.failed().map(|e| e.to_string())
    }

    fn wal_stats(&self) -> ballast_engine::wal::WalStats {
        self.wal.stats()
    }
}

/// A shard's storage, opened.
pub struct Opened<D: Disk> {
    pub store: Store,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub log: WalLog<D>,
    pub durability: Rc<dyn Durability>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    #[error("opening the state image in {dir}: {source}")]
    Image { dir: String, source: ImageError },
    #[error("opening the log in {dir}: {source}")]
    Wal {
        dir: String,
        source: ballast_engine::wal::WalError,
    },
    #[error("the state image in {dir} has unreadable checkpoint facts: {reason}")]
    Meta { dir: String, reason: &'static str },
    #[error("the state image in {dir} is at log index {image}, but the log ends at {log}: the log lost entries the image already holds")]
    LogBehindImage { dir: String, image: u64, log: u64 },
}

/// Opens the shard's image (`pages_disk`) and log (`wal_disk`). `dir` names them in errors.
pub async fn open<D: Disk + 'static>(
    wal_disk: D,
    pages_disk: D,
    storage: &ShardStorage,
) -> Result<Opened<D>, OpenError> {
    let dir = storage.dir.display().to_string();
    let (image, mut store, meta) = StoreImage::open(pages_disk, storage.pages.clone(), 0)
        .await
        .map_err(|source| OpenError::Image {
            dir: dir.clone(),
            source,
        })?;
    let (last_applied, membership) = if meta.app.is_empty() {
        (None, StoredMembership::default())
    } else {
        decode_app(&meta.app).ok_or(OpenError::Meta {
            dir: dir.clone(),
            reason: "bad encoding",
        })?
    };
    if last_applied.map_or(0, |id| id.index + 1) != meta.applied_index {
        return Err(OpenError::Meta {
            dir,
            reason: "applied index differs from the superblock's",
        });
    }
    let (wal, _recovered) = Wal::open(wal_disk, storage.wal.clone())
        .await
        .map_err(|source| OpenError::Wal {
            dir: dir.clone(),
            source,
        })?;
    if wal.last().index.0 < meta.applied_index && wal.last().index.0 > 0 {
        return Err(OpenError::LogBehindImage {
            dir,
            image: meta.applied_index,
            log: wal.last().index.0,
        });
    }
    store.keep_journal();
    let stats = Rc::new(RefCell::new(image.stats()));
    let durability = Rc::new(Parts {
        reader: Rc::new(RefCell::new(image.reader())),
        store_cache_bytes: storage.pages.cache_bytes,
        image: Rc::new(RefCell::new(Some(image))),
        stats,
        segment_bytes: storage.pages.segment_bytes,
        wal: wal.clone(),
    });
    Ok(Opened {
        store,
        last_applied,
        membership,
        log: WalLog::new(wal),
        durability,
    })
}

fn put_log_id(out: &mut Vec<u8>, id: Option<&LogId>) {
    match id {
        Some(id) => {
            out.put_u8(1);
            out.put_u64_le(id.leader_id.term);
            out.put_u64_le(id.index);
        }
        None => {
            out.put_u8(0);
            out.put_u64_le(0);
            out.put_u64_le(0);
        }
    }
}

/// The app bytes of a checkpoint at `applied` with `membership`.
pub fn encode_app(applied: Option<&LogId>, membership: &StoredMembership) -> Bytes {
    let mut out = vec![CHECKPOINT_META_VERSION];
    put_log_id(&mut out, applied);
    put_log_id(&mut out, membership.log_id().as_ref());
    out.extend_from_slice(&encode_membership(membership.membership()));
    Bytes::from(out)
}

fn decode_app(b: &[u8]) -> Option<(Option<LogId>, StoredMembership)> {
    if b.first() != Some(&CHECKPOINT_META_VERSION) || b.len() < 1 + 17 * 2 {
        return None;
    }
    let id_at = |at: usize| -> Option<Option<LogId>> {
        let u = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        match b[at] {
            0 => Some(None),
            1 => Some(Some(log_id(u(at + 1), u(at + 9)))),
            _ => None,
        }
    };
    let applied = id_at(1)?;
    let membership_id = id_at(18)?;
    let membership = decode_membership(&b[35..])?;
    Some((applied, StoredMembership::new(membership_id, membership)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Membership;
    use openraft::impls::BasicNode;
    use std::collections::{BTreeMap, BTreeSet};

    #[test]
    fn checkpoint_facts_round_trip() {
        let m = Membership::new(
            vec![BTreeSet::from([1, 2])],
            BTreeMap::from([
                (1, BasicNode::new("127.0.0.1:2380")),
                (2, BasicNode::new("127.0.0.1:2381")),
            ]),
        )
        .expect("valid membership");
        let stored = StoredMembership::new(Some(log_id(3, 0)), m);
        let applied = log_id(4, 17);
        let app = encode_app(Some(&applied), &stored);
        assert_eq!(decode_app(&app), Some((Some(applied), stored.clone())));
        let empty = encode_app(None, &StoredMembership::default());
        assert_eq!(
            decode_app(&empty),
            Some((None, StoredMembership::default()))
        );
        let mut bad = app.to_vec();
        bad[0] = 2;
        assert_eq!(decode_app(&bad), None);
        assert_eq!(decode_app(&app[..20]), None);
    }
}
