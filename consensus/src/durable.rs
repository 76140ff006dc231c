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
//! version:u8 = 4 | flags:u8 (bit 0: installed from a leader's snapshot)
//!                | applied: present:u8 term:u64 LE index:u64 LE
//!                | membership log id: present:u8 term:u64 LE index:u64 LE
//!                | alarms (`alarms::AlarmTable::encode`: n:u32, then member_id:u64 alarm:i32
//!                  each, LE; shard 0's alarm table, empty in other shards)
//!                | auth (`auth::AuthState::encode`: shard 0's users, roles, enabled flag and
//!                  revision; a new store's state in other shards)
//!                | membership (the log store's membership encoding)
//! ```
//! (indexes in openraft's 0-based numbering; absent ids are written as zeros; versions 1 (no
//! flags byte), 2 (no alarms) and 3 (no auth) are still read, with no alarms and a new auth
//! state.)
//!
//! Installing a snapshot from the leader (`snapshot.rs`): the chunks go into a second page log
//! in `pages/`, under the other of two file prefixes (`<prefix>` and `<prefix>.b`), committed
//! by its last chunk with the snapshot's facts and the "installed" flag; the state machine
//! then switches to it and removes the old one. At open, when both exist, the one with a
//! committed checkpoint at the higher log index wins (a transfer cut short has none) and the
//! other is removed. An installed image may be ahead of the WAL until openraft purges the log
//! up to the snapshot; a crash in between is finished at open (the WAL is reset to end at the
//! snapshot's log id). The flag is cleared by the next checkpoint, which implies the log has
//! passed the snapshot.
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
use ballast_engine::mvcc::image::transfer::{
    committed_app, page_log_exists, remove_page_log, ImageExport, ImageImport, TransferError,
};
use ballast_engine::mvcc::image::{Changes, ImageError, ImageReader, StoreImage};
use ballast_engine::mvcc::paging::{Loaded, Missing};
use ballast_engine::wal::{Wal, WalConfig};
use ballast_engine::Store;
use bytes::{BufMut, Bytes};

use crate::alarms::AlarmTable;
use crate::auth::AuthState;
use crate::log_store::{decode_membership, encode_membership, log_id, LocalFuture, WalLog};
use crate::snapshot::{ChunkSink, ChunkSource};
use crate::types::{LogId, StoredMembership};

/// Version of the app bytes saved with each checkpoint. 1: first layout. 2: a flags byte
/// after the version (bit 0: installed from a leader's snapshot). 3: the alarm table before
/// the membership. 4: the auth state after the alarm table.
pub const CHECKPOINT_META_VERSION: u8 = 4;
const FLAG_INSTALLED: u8 = 1;

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
    /// The chunks of the last durable checkpoint, which must hold backend log index
    /// `applied_index` (a newer one is refused: the caller's snapshot is stale).
    fn export(&self, applied_index: u64) -> Result<Box<dyn ChunkSource>, String>;
    /// Starts receiving a snapshot into a new page log beside the live one (removing what an
    /// earlier transfer left there).
    fn receive(&self) -> LocalFuture<Result<Box<dyn ChunkSink>, TransferError>>;
    /// Switches to the page log a finished receive committed at `applied_index` (no checkpoint
    /// may run meanwhile), removes the old one, and returns the store opened on it.
    fn install(&self, applied_index: u64) -> LocalFuture<Result<Store, ImageError>>;
    /// Removes a received page log that was not installed.
    fn discard_received(&self) -> LocalFuture<()>;
    /// The alarm table and auth state saved with the last durable checkpoint (its facts'
    /// tables; empty before the first checkpoint).
    fn committed_alarms(&self) -> LocalFuture<Result<(AlarmTable, AuthState), String>>;
}

/// The other of the two page-log prefixes (module comment).
fn other_prefix(base: &str, live: &str) -> String {
    if live == base {
        format!("{base}.b")
    } else {
        base.to_owned()
    }
}

struct ImageChunks<D: Disk>(Rc<RefCell<Option<ImageExport<D>>>>);

impl<D: Disk + 'static> ChunkSource for ImageChunks<D> {
    fn next_chunk(&mut self) -> LocalFuture<Result<Option<Bytes>, TransferError>> {
        let slot = self.0.clone();
        Box::pin(async move {
            let mut export = slot.borrow_mut().take().expect("one chunk read at a time");
            let chunk = export.next_chunk().await;
            *slot.borrow_mut() = Some(export);
            chunk
        })
    }
}

struct ImageSink<D: Disk>(Rc<RefCell<Option<ImageImport<D>>>>);

impl<D: Disk + 'static> ChunkSink for ImageSink<D> {
    fn push(&mut self, chunk: Bytes) -> LocalFuture<Result<(), TransferError>> {
        let slot = self.0.clone();
        Box::pin(async move {
            let mut import = slot
                .borrow_mut()
                .take()
                .expect("one chunk written at a time");
            let pushed = import.push(&chunk).await;
            *slot.borrow_mut() = Some(import);
            pushed
        })
    }

    fn finish(
        self: Box<Self>,
        applied_index: u64,
        app: Bytes,
    ) -> LocalFuture<Result<(), TransferError>> {
        let import = self.0.borrow_mut().take().expect("not finished twice");
        Box::pin(async move { import.finish(applied_index, &app).await.map(|_| ()) })
    }
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
    /// The page log's directory and configuration; `live` is the prefix in use.
    disk: D,
    pages_config: btree::Config,
    live: Rc<RefCell<String>>,
}

impl<D: Disk> Parts<D> {
    fn config_for(&self, prefix: &str) -> btree::Config {
        btree::Config {
            file_prefix: prefix.to_owned(),
            ..self.pages_config.clone()
        }
    }
}

impl<D: Disk + Clone + 'static> Durability for Parts<D> {
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

    fn export(&self, applied_index: u64) -> Result<Box<dyn ChunkSource>, String> {
        let export = ImageExport::new(self.reader.borrow().clone());
        if export.applied_index() != applied_index {
            return Err(format!(
                "the last checkpoint is at log index {}, the snapshot at {applied_index}",
                export.applied_index()
            ));
        }
        Ok(Box::new(ImageChunks(Rc::new(RefCell::new(Some(export))))))
    }

    fn receive(&self) -> LocalFuture<Result<Box<dyn ChunkSink>, TransferError>> {
        let prefix = other_prefix(&self.pages_config.file_prefix, &self.live.borrow());
        let config = self.config_for(&prefix);
        let disk = self.disk.clone();
        Box::pin(async move {
            remove_page_log(&disk, &prefix).await?;
            let import = ImageImport::create(disk, config).await?;
            Ok(Box::new(ImageSink(Rc::new(RefCell::new(Some(import))))) as Box<dyn ChunkSink>)
        })
    }

    fn install(&self, applied_index: u64) -> LocalFuture<Result<Store, ImageError>> {
        let old = self.live.borrow().clone();
        let prefix = other_prefix(&self.pages_config.file_prefix, &old);
        let config = self.config_for(&prefix);
        let disk = self.disk.clone();
        let (slot, reader, stats, live) = (
            self.image.clone(),
            self.reader.clone(),
            self.stats.clone(),
            self.live.clone(),
        );
        Box::pin(async move {
            assert!(
                slot.borrow().is_some(),
                "no checkpoint runs during an install"
            );
            let (image, mut store, meta) = StoreImage::open(disk.clone(), config, 0).await?;
            if meta.applied_index != applied_index {
                return Err(ImageError::Corrupt {
                    what: format!("received page log {prefix}"),
                    reason: "committed at another log index than the snapshot's",
                });
            }
            store.keep_journal();
            *reader.borrow_mut() = image.reader();
            *stats.borrow_mut() = image.stats();
            *slot.borrow_mut() = Some(image);
            *live.borrow_mut() = prefix;
            // The old image is superseded: the new one is committed at a higher index, which
            // is what open chooses. Failing to remove it wastes space, nothing else.
            if let Err(err) = remove_page_log(&disk, &old).await {
                tracing::warn!(%err, prefix = %old, "removing the page log a snapshot replaced");
            }
            Ok(store)
        })
    }

    fn committed_alarms(&self) -> LocalFuture<Result<(AlarmTable, AuthState), String>> {
        let export = ImageExport::new(self.reader.borrow().clone());
        Box::pin(async move {
            let app = export.app().await.map_err(|e| e.to_string())?;
            if app.is_empty() {
                return Ok(Default::default());
            }
            decode_app(&app)
                .map(|facts| (facts.alarms, facts.auth))
                .ok_or_else(|| "the last checkpoint's facts do not decode".to_owned())
        })
    }

    fn discard_received(&self) -> LocalFuture<()> {
        let prefix = other_prefix(&self.pages_config.file_prefix, &self.live.borrow());
        let disk = self.disk.clone();
        Box::pin(async move {
            match page_log_exists(&disk, &prefix).await {
                Ok(false) => {}
                _ => {
                    if let Err(err) = remove_page_log(&disk, &prefix).await {
                        tracing::warn!(%err, %prefix, "removing a received page log not installed");
                    }
                }
            }
        })
    }
}

/// A shard's storage, opened.
pub struct Opened<D: Disk> {
    pub store: Store,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    /// The alarm table saved with the checkpoint (shard 0's; empty elsewhere).
    pub alarms: AlarmTable,
    /// The auth state saved with the checkpoint (shard 0's).
    pub auth: AuthState,
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
pub async fn open<D: Disk + Clone + 'static>(
    wal_disk: D,
    pages_disk: D,
    storage: &ShardStorage,
) -> Result<Opened<D>, OpenError> {
    let dir = storage.dir.display().to_string();
    let image_error = |source| OpenError::Image {
        dir: dir.clone(),
        source,
    };
    let live = choose_page_log(&pages_disk, &storage.pages)
        .await
        .map_err(|e| match e {
            TransferError::Image(source) => image_error(source),
            other => image_error(ImageError::Corrupt {
                what: format!("page logs in {dir}"),
                reason: if matches!(other, TransferError::Io(_)) {
                    "listing or removing files failed"
                } else {
                    "unreadable"
                },
            }),
        })?;
    let live_config = btree::Config {
        file_prefix: live.clone(),
        ..storage.pages.clone()
    };
    let (image, mut store, meta) = StoreImage::open(pages_disk.clone(), live_config, 0)
        .await
        .map_err(image_error)?;
    let CheckpointFacts {
        applied: last_applied,
        membership,
        installed,
        alarms,
        auth,
    } = if meta.app.is_empty() {
        CheckpointFacts::default()
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
    if let (true, Some(id)) = (installed, last_applied) {
        if wal.last().index.0 < meta.applied_index {
            // Installed from a snapshot, and the crash came before openraft purged the log
            // up to it: do that now (the log then ends at the snapshot's log id).
            wal.purge_upto(ballast_engine::wal::LogId::new(
                id.leader_id.term,
                meta.applied_index,
            ))
            .await
            .map_err(|source| OpenError::Wal {
                dir: dir.clone(),
                source,
            })?;
        }
    }
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
        disk: pages_disk,
        pages_config: storage.pages.clone(),
        live: Rc::new(RefCell::new(live)),
    });
    Ok(Opened {
        store,
        last_applied,
        membership,
        alarms,
        auth,
        log: WalLog::new(wal),
        durability,
    })
}

/// Which of the two page logs (module comment) holds the shard's state; removes the other.
async fn choose_page_log<D: Disk + Clone>(
    disk: &D,
    config: &btree::Config,
) -> Result<String, TransferError> {
    let base = config.file_prefix.clone();
    let alt = other_prefix(&base, &base);
    if !page_log_exists(disk, &alt).await? {
        return Ok(base);
    }
    let committed = |prefix: &str| {
        let config = btree::Config {
            file_prefix: prefix.to_owned(),
            ..config.clone()
        };
        committed_app(disk.clone(), config)
    };
    let (alt_index, alt_app) = committed(&alt).await?;
    let base_index = if page_log_exists(disk, &base).await? {
        committed(&base).await?.0
    } else {
        0
    };
    let (live, loser) = if !alt_app.is_empty() && alt_index > base_index {
        (alt, base)
    } else {
        (base, alt)
    };
    tracing::info!(%live, removed = %loser, "two page logs found after a snapshot transfer");
    remove_page_log(disk, &loser).await?;
    Ok(live)
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

/// The app bytes of a checkpoint at `applied` with `membership`, `alarms` and `auth`.
pub fn encode_app(
    applied: Option<&LogId>,
    membership: &StoredMembership,
    alarms: &AlarmTable,
    auth: &AuthState,
) -> Bytes {
    encode_app_flags(applied, membership, alarms, auth, 0)
}

/// The app bytes of a snapshot installed from the leader (module comment).
pub fn encode_installed_app(
    applied: Option<&LogId>,
    membership: &StoredMembership,
    alarms: &AlarmTable,
    auth: &AuthState,
) -> Bytes {
    encode_app_flags(applied, membership, alarms, auth, FLAG_INSTALLED)
}

fn encode_app_flags(
    applied: Option<&LogId>,
    membership: &StoredMembership,
    alarms: &AlarmTable,
    auth: &AuthState,
    flags: u8,
) -> Bytes {
    let mut out = vec![CHECKPOINT_META_VERSION, flags];
    put_log_id(&mut out, applied);
    put_log_id(&mut out, membership.log_id().as_ref());
    alarms.encode(&mut out);
    auth.encode(&mut out);
    out.extend_from_slice(&encode_membership(membership.membership()));
    Bytes::from(out)
}

/// What a checkpoint's app bytes say (module comment).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CheckpointFacts {
    pub applied: Option<LogId>,
    pub membership: StoredMembership,
    /// Installed from a leader's snapshot, and no checkpoint since.
    pub installed: bool,
    pub alarms: AlarmTable,
    pub auth: AuthState,
}

/// Decodes app bytes (any version this code wrote).
pub fn decode_app(b: &[u8]) -> Option<CheckpointFacts> {
    let version = *b.first()?;
    let (flags, b) = match version {
        1 => (0, b),
        2..=4 => (*b.get(1)?, &b[1..]),
        _ => return None,
    };
    if b.len() < 1 + 17 * 2 || flags & !FLAG_INSTALLED != 0 {
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
    let (alarms, alarms_len) = if version >= 3 {
        AlarmTable::decode(&b[35..])?
    } else {
        (AlarmTable::default(), 0)
    };
    let (auth, auth_len) = if version >= 4 {
        AuthState::decode(&b[35 + alarms_len..])?
    } else {
        (AuthState::default(), 0)
    };
    let membership = decode_membership(&b[35 + alarms_len + auth_len..])?;
    Some(CheckpointFacts {
        applied,
        membership: StoredMembership::new(membership_id, membership),
        installed: flags & FLAG_INSTALLED != 0,
        alarms,
        auth,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alarms::{AlarmMember, AlarmType};
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
        let mut alarms = AlarmTable::default();
        alarms.activate(AlarmMember {
            alarm: AlarmType::NOSPACE,
            member_id: 0xabcd,
        });
        let mut auth = AuthState::default();
        auth.apply(
            "",
            &crate::auth::AuthCommand::RoleAdd { name: "r".into() },
            9,
        )
        .expect("a new role");
        let facts = |applied, membership: &StoredMembership, installed, alarms: &AlarmTable| {
            Some(CheckpointFacts {
                applied,
                membership: membership.clone(),
                installed,
                alarms: alarms.clone(),
                auth: AuthState::default(),
            })
        };
        let with_auth = encode_app(Some(&applied), &stored, &alarms, &auth);
        assert_eq!(decode_app(&with_auth).map(|f| f.auth), Some(auth.clone()));
        let new = AuthState::default();
        let app = encode_app(Some(&applied), &stored, &alarms, &new);
        assert_eq!(
            decode_app(&app),
            facts(Some(applied), &stored, false, &alarms)
        );
        let installed = encode_installed_app(Some(&applied), &stored, &alarms, &new);
        assert_eq!(
            decode_app(&installed),
            facts(Some(applied), &stored, true, &alarms)
        );
        let none = AlarmTable::default();
        let empty = encode_app(None, &StoredMembership::default(), &none, &new);
        assert_eq!(
            decode_app(&empty),
            facts(None, &StoredMembership::default(), false, &none)
        );
        // Version 3 (no auth), 2 (no alarms) and 1 (no flags byte either) still read.
        let v4 = encode_app(Some(&applied), &stored, &none, &new).to_vec();
        let mut auth_bytes = Vec::new();
        new.encode(&mut auth_bytes);
        let mut v3_no_alarms = v4.clone();
        v3_no_alarms.drain(40..40 + auth_bytes.len());
        v3_no_alarms[0] = 3;
        assert_eq!(
            decode_app(&v3_no_alarms),
            facts(Some(applied), &stored, false, &none)
        );
        let mut v2 = v3_no_alarms.clone();
        v2.drain(36..40);
        v2[0] = 2;
        assert_eq!(decode_app(&v2), facts(Some(applied), &stored, false, &none));
        let mut v1 = v2.clone();
        v1.remove(1);
        v1[0] = 1;
        assert_eq!(decode_app(&v1), facts(Some(applied), &stored, false, &none));
        let mut bad = app.to_vec();
        bad[0] = 5;
        assert_eq!(decode_app(&bad), None);
        let mut bad = app.to_vec();
        bad[1] = 2;
        assert_eq!(decode_app(&bad), None);
        assert_eq!(decode_app(&app[..20]), None);
        // Cut inside the alarm table.
        assert_eq!(decode_app(&app[..45]), None);
    }
}
