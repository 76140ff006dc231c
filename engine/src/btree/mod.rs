//! The log-structured copy-on-write B+tree that holds one shard's state between checkpoints
//! (design.md §7). It owns the page log (segment files of 4 KiB pages, append-only), the
//! superblock file (two slots), the bounded cache of clean pages, and the cleaner.
//!
//! How it works, in one paragraph: a tree's nodes live either on disk (a [`PageId`] that names a
//! page version forever) or, once changed since the last checkpoint, in the in-memory dirty
//! arena. Changing a key copies the path from the root to its leaf into the arena ("copy on
//! write"); the old pages become dead and their segments' live counts drop. A
//! [`checkpoint`](BTree::checkpoint) appends every dirty node (children first, so a parent can
//! name its children's new locations) to the page log, `sync_data`s it, then writes the
//! alternate superblock slot and syncs that: the superblock is the commit point. Open reads
//! both slots and takes the newest valid one; it never scans the page log. The cleaner, run as
//! part of a checkpoint, copies live pages out of mostly-dead segments (it finds a page's
//! parent by searching the tree for a key the page holds) and removes a segment only after a
//! superblock that no longer references it is durable.
//!
//! Several logical trees (up to [`MAX_TREES`], e.g. the MVCC key index and revision index)
//! share one page log and one superblock: each [`TreeId`] has its own root slot in it.
//!
//! Readers: [`BTree::reader`] hands out a [`Reader`] of the last durable superblock (the
//! "epoch"): it reads that superblock's trees and nothing newer, borrows nothing from the tree,
//! and keeps its epoch's segment files open, so it may run interleaved with inserts, removes
//! and checkpoints on the same thread, and outlive the cleaner's removal of its segments (see
//! `reader.rs`). The clean-page cache is shared by the tree and all its readers.
//!
//! Invariants:
//! - A page is written once and never overwritten while any durable superblock slot that
//!   could be chosen at open references it; segments are append-only and ids never reused.
//! - Every page read is verified (checksum, own location, structure) before use.
//! - `segments[s].live_pages` equals the number of pages of segment `s` reachable from the
//!   current roots (dirty nodes included); `check_invariants` recomputes it.
//! - Every node fits in one page; non-root leaves are non-empty and non-root branches have at
//!   least two children.
//! - After a failed write or sync the tree is stopped: every later call returns
//!   [`Error::Stopped`] (readers of the durable epoch go on reading).
//! - The durable epoch is replaced only at a checkpoint's commit point (its superblock
//!   synced); a page id names one content for as long as the page log is open.
//! - No `RefCell` borrow (the shared cache's) is held across an `.await`.
//!
//! Single-threaded: futures are `!Send`; mutations and checkpoints take `&mut self`, reads
//! (`get`, `scan`, the readers' methods) take `&self`.

mod cache;
mod checkpoint;
pub mod page;
mod reader;
mod superblock;
mod tree;

#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use crate::io::{Disk, DiskFile, IoError};

pub use checkpoint::{no_pause, CheckpointReport, PAGES_PER_PAUSE};
pub use page::{decode_page, encode_page, PageError, PageId, MAX_KEY_LEN, PAGE_SIZE};
pub use reader::Reader;
pub use superblock::{FORMAT_VERSION, MAX_SEGMENTS, SLOT_SIZE};
pub use tree::Range;

use cache::PageCache;
use page::{Child, Node};
use reader::Epoch;
use superblock::{SegmentInfo, SlotError, Superblock};
use tree::PageSource;

/// Number of logical trees one page log can hold.
pub const MAX_TREES: usize = 4;
/// Largest value accepted (it must also fit in one segment: see [`Config::segment_bytes`]).
pub const MAX_VALUE_LEN: usize = 2 * 1024 * 1024;

/// One logical tree of the page log. Which number means what is the caller's convention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TreeId(pub u8);

/// Tuning of one page log.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// File names are `<prefix>.super` and `<prefix>-<segment id as 8 hex digits>.seg`, so a
    /// page log can share a directory with other files.
    pub file_prefix: String,
    /// Size of each segment file (preallocated). A multiple of [`PAGE_SIZE`], at least 16
    /// pages; a value must fit in one segment.
    pub segment_bytes: u64,
    /// Bound of the clean-page cache. Dirty pages are not counted: they stay in memory until
    /// the next checkpoint.
    pub cache_bytes: u64,
    /// Compress node pages with lz4 when their plain form does not fit a page (more entries
    /// per page; pages stay 4 KiB).
    pub lz4: bool,
    /// A checkpoint cleans segments whose live pages are at most this fraction of capacity.
    pub cleaner_live_ratio_max: f64,
    /// Bound on the segments one checkpoint relocates from (fully dead ones are always freed).
    pub cleaner_segments_per_checkpoint: usize,
    /// Largest single `write_at` a checkpoint issues.
    pub write_chunk_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            file_prefix: "pages".to_string(),
            segment_bytes: 16 * 1024 * 1024,
            cache_bytes: 64 * 1024 * 1024,
            lz4: false,
            cleaner_live_ratio_max: 0.5,
            cleaner_segments_per_checkpoint: 2,
            write_chunk_bytes: 1024 * 1024,
        }
    }
}

impl Config {
    fn validate(&self) -> Result<()> {
        let bad = |reason| Err(Error::InvalidConfig { reason });
        if !self.segment_bytes.is_multiple_of(PAGE_SIZE as u64) {
            return bad("segment_bytes must be a multiple of the page size");
        }
        let pages = self.segment_bytes / PAGE_SIZE as u64;
        if !(16..=u64::from(u32::MAX)).contains(&pages) {
            return bad("segment_bytes must hold between 16 and 2^32-1 pages");
        }
        if !(0.0..=1.0).contains(&self.cleaner_live_ratio_max) {
            return bad("cleaner_live_ratio_max must be within 0..=1");
        }
        if self.write_chunk_bytes < PAGE_SIZE || !self.write_chunk_bytes.is_multiple_of(PAGE_SIZE) {
            return bad("write_chunk_bytes must be a positive multiple of the page size");
        }
        if self.file_prefix.is_empty() || self.file_prefix.contains('/') {
            return bad("file_prefix must be a plain, non-empty file name");
        }
        Ok(())
    }

    fn segment_pages(&self) -> u32 {
        (self.segment_bytes / PAGE_SIZE as u64) as u32
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("page log I/O: {0}")]
    Io(#[from] IoError),
    #[error("page {page}: checksum mismatch (stored {expected:#010x}, computed {actual:#010x})")]
    ChecksumMismatch {
        page: PageId,
        expected: u32,
        actual: u32,
    },
    #[error("page {page}: malformed ({reason})")]
    MalformedPage { page: PageId, reason: &'static str },
    #[error("page {page}: holds page {found} (misdirected write or read)")]
    MisplacedPage { page: PageId, found: PageId },
    /// A valid page that is not what the pointer to it promised.
    #[error("page {page}: unexpected content ({reason})")]
    UnexpectedPage { page: PageId, reason: &'static str },
    #[error("{file}: no valid superblock slot, yet page-log segments exist")]
    NoValidSuperblock { file: String },
    #[error("superblock format version {found}; this build reads {supported}")]
    UnsupportedFormat { found: u16, supported: u16 },
    #[error("page-log segment {segment} is named by the superblock but missing")]
    MissingSegment { segment: u32 },
    #[error("key of {len} bytes exceeds {max}")]
    KeyTooLarge { len: usize, max: usize },
    #[error("value of {len} bytes exceeds {max}")]
    ValueTooLarge { len: usize, max: usize },
    #[error("tree {tree} does not exist (at most {MAX_TREES})")]
    UnknownTree { tree: u8 },
    #[error("the page log needs more than {max} segments")]
    TooManySegments { max: usize },
    #[error("invalid page-log config: {reason}")]
    InvalidConfig { reason: &'static str },
    /// A write or sync failed earlier; the in-memory state may be ahead of the disk.
    #[error("page log stopped after an earlier failure: {cause}")]
    Stopped { cause: Box<Error> },
}

impl From<PageError> for Error {
    fn from(e: PageError) -> Self {
        match e {
            PageError::ChecksumMismatch {
                page,
                expected,
                actual,
            } => Error::ChecksumMismatch {
                page,
                expected,
                actual,
            },
            PageError::Malformed { page, reason } => Error::MalformedPage { page, reason },
            PageError::Misplaced { page, found } => Error::MisplacedPage { page, found },
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Counters and sizes, for tests, metrics and the cleaner's decisions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stats {
    /// Pages the current trees reference (dirty nodes count once written).
    pub live_pages: u64,
    pub live_bytes: u64,
    /// Pages appended to segments that still exist (live or dead).
    pub written_bytes: u64,
    pub segments: usize,
    /// Nodes changed since the last checkpoint (held in memory).
    pub dirty_nodes: usize,
    pub cached_pages: usize,
    pub cache_bytes: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub cache_evictions: u64,
    pub keys: [u64; MAX_TREES],
    pub checkpoint_sequence: u64,
    pub applied_index: u64,
    pub revision: i64,
    pub segments_cleaned: u64,
    pub pages_relocated: u64,
}

/// The page log and the trees in it.
pub struct BTree<D: Disk> {
    disk: D,
    config: Config,
    super_file: D::File,
    /// Open segment files. Shared with the [`Epoch`]s that name them, so a [`Reader`] keeps
    /// reading a segment the cleaner has since removed.
    files: HashMap<u32, Rc<D::File>>,
    segments: BTreeMap<u32, SegmentInfo>,
    next_segment: u32,
    /// Segment appends go to; 0 = open a new one at the next append.
    active: u32,
    /// The last durable superblock (sequence, applied index, revision, roots): what
    /// [`reader`](Self::reader) hands out. Replaced at each checkpoint's commit point.
    durable: Rc<Epoch<D>>,
    roots: [Option<Child>; MAX_TREES],
    keys: [u64; MAX_TREES],
    dirty: HashMap<u64, Rc<Node>>,
    next_dirty: u64,
    /// Clean decoded pages, shared with every [`Reader`]: a page id names one content forever.
    cache: Rc<RefCell<PageCache>>,
    stopped: Option<Box<Error>>,
    /// Write-run buffers kept for the next checkpoint (`checkpoint::RUN_BUFFERS_KEPT`).
    spare_runs: Vec<Vec<u8>>,
    segments_cleaned: u64,
    pages_relocated: u64,
}

fn super_name(prefix: &str) -> String {
    format!("{prefix}.super")
}

fn segment_name(prefix: &str, id: u32) -> String {
    format!("{prefix}-{id:08x}.seg")
}

fn parse_segment_name(prefix: &str, name: &str) -> Option<u32> {
    let hex = name
        .strip_prefix(prefix)?
        .strip_prefix('-')?
        .strip_suffix(".seg")?;
    if hex.len() != 8 {
        return None;
    }
    u32::from_str_radix(hex, 16).ok()
}

impl<D: Disk> BTree<D> {
    /// Opens the page log in `disk`, creating it when absent. Reads the two superblock slots
    /// and takes the newest valid one; removes segment files it does not name (left by a
    /// checkpoint that crashed before its superblock, or by a removal that was not yet durable).
    pub async fn open(disk: D, config: Config) -> Result<Self> {
        config.validate()?;
        let names = disk.list().await?;
        let sname = super_name(&config.file_prefix);
        let seg_files: Vec<u32> = names
            .iter()
            .filter_map(|n| parse_segment_name(&config.file_prefix, n))
            .collect();
        let super_file = disk.open(&sname, true).await?;
        let mut best: Option<Superblock> = None;
        let mut any_written = false;
        for slot in 0..2 {
            let at = (slot * SLOT_SIZE) as u64;
            if super_file.len() <= at {
                continue;
            }
            let len = (super_file.len() - at).min(SLOT_SIZE as u64) as usize;
            let bytes = super_file.read_at(at, len).await?;
            match Superblock::decode(&bytes) {
                Ok(sb) => {
                    if best.as_ref().is_none_or(|b| sb.sequence > b.sequence) {
                        best = Some(sb);
                    }
                }
                Err(SlotError::Version(found)) => {
                    return Err(Error::UnsupportedFormat {
                        found,
                        supported: FORMAT_VERSION,
                    })
                }
                Err(SlotError::Invalid) => any_written = true,
                Err(SlotError::Empty) => {}
            }
        }
        let sb = match best {
            Some(sb) => sb,
            None if seg_files.is_empty() => {
                // A new page log (or one whose very first superblock write was torn, before
                // any segment existed: nothing was ever durable). Make slot 0 hold the empty
                // state so that the first checkpoint's torn write leaves a valid fallback.
                let _ = any_written;
                let sb = Superblock::empty();
                super_file.allocate(2 * SLOT_SIZE as u64).await?;
                super_file.write_at(0, &sb.encode()).await?;
                super_file.sync_data().await?;
                disk.sync_dir().await?;
                sb
            }
            None => return Err(Error::NoValidSuperblock { file: sname }),
        };
        let mut files = HashMap::new();
        for s in &sb.segments {
            if !seg_files.contains(&s.id) {
                return Err(Error::MissingSegment { segment: s.id });
            }
            let f = disk
                .open(&segment_name(&config.file_prefix, s.id), false)
                .await?;
            files.insert(s.id, Rc::new(f));
        }
        let mut removed = false;
        for id in seg_files {
            if !files.contains_key(&id) {
                disk.remove(&segment_name(&config.file_prefix, id)).await?;
                removed = true;
            }
        }
        if removed {
            disk.sync_dir().await?;
        }
        let mut roots = [None; MAX_TREES];
        let mut keys = [0; MAX_TREES];
        for (i, t) in sb.trees.iter().enumerate() {
            roots[i] = t.root.map(Child::Page);
            keys[i] = t.keys;
        }
        Ok(BTree {
            cache: Rc::new(RefCell::new(PageCache::new(config.cache_bytes))),
            durable: Rc::new(Epoch::new(&sb, &files)),
            disk,
            super_file,
            files,
            segments: sb.segments.iter().map(|s| (s.id, *s)).collect(),
            next_segment: sb.next_segment,
            active: sb.active_segment,
            roots,
            keys,
            dirty: HashMap::new(),
            next_dirty: 1,
            stopped: None,
            spare_runs: Vec::new(),
            segments_cleaned: 0,
            pages_relocated: 0,
            config,
        })
    }

    /// Applied log index of the last durable checkpoint (or the one opened from).
    pub fn applied_index(&self) -> u64 {
        self.durable.applied_index
    }

    /// Revision of the last durable checkpoint (or the one opened from).
    pub fn revision(&self) -> i64 {
        self.durable.revision
    }

    /// A read-only view of the trees as the last durable superblock describes them (see
    /// [`Reader`]). Cheap: it shares that superblock's description, the open segment files
    /// and the page cache. Works on a stopped tree too: the durable state is still sound.
    pub fn reader(&self) -> Reader<D> {
        Reader::new(self.durable.clone(), self.cache.clone())
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Number of keys in `tree`.
    pub fn len(&self, tree: TreeId) -> Result<u64> {
        Ok(self.keys[tree_index(tree)?])
    }

    pub fn is_empty(&self, tree: TreeId) -> Result<bool> {
        Ok(self.len(tree)? == 0)
    }

    /// Counters of the tree; the cache's count the readers' lookups too (they share it).
    pub fn stats(&self) -> Stats {
        let cache = self.cache.borrow();
        let live_pages: u64 = self
            .segments
            .values()
            .map(|s| u64::from(s.live_pages))
            .sum();
        Stats {
            live_pages,
            live_bytes: live_pages * PAGE_SIZE as u64,
            written_bytes: self
                .segments
                .values()
                .map(|s| u64::from(s.written_pages) * PAGE_SIZE as u64)
                .sum(),
            segments: self.segments.len(),
            dirty_nodes: self.dirty.len(),
            cached_pages: cache.len(),
            cache_bytes: cache.bytes(),
            cache_hits: cache.hits,
            cache_misses: cache.misses,
            cache_evictions: cache.evictions,
            keys: self.keys,
            checkpoint_sequence: self.durable.sequence,
            applied_index: self.durable.applied_index,
            revision: self.durable.revision,
            segments_cleaned: self.segments_cleaned,
            pages_relocated: self.pages_relocated,
        }
    }

    /// Marks a page dead: the current trees no longer reference it.
    fn free_page(&mut self, id: PageId) {
        let seg = self
            .segments
            .get_mut(&id.segment())
            .expect("a live page's segment exists");
        assert!(
            seg.live_pages > 0,
            "freeing page {id} of a segment with no live pages"
        );
        seg.live_pages -= 1;
        // An older reader may still reach the page: it reads it back from its file.
        self.cache.borrow_mut().remove(id);
    }

    fn alloc_dirty(&mut self, node: Node) -> u64 {
        let d = self.next_dirty;
        self.next_dirty += 1;
        self.dirty.insert(d, Rc::new(node));
        d
    }

    /// The dirty id of `child`, copying it into the arena (and freeing its page) if clean.
    async fn cow(&mut self, tree: u8, child: Child) -> Result<u64> {
        match child {
            Child::Dirty(d) => Ok(d),
            Child::Page(id) => {
                let node = self.node(tree, child).await?;
                self.free_page(id);
                let node = Rc::try_unwrap(node).unwrap_or_else(|rc| (*rc).clone());
                Ok(self.alloc_dirty(node))
            }
        }
    }

    fn dirty_mut(&mut self, d: u64) -> &mut Node {
        Rc::make_mut(self.dirty.get_mut(&d).expect("dirty node exists"))
    }
}

/// The tree reads its current state: dirty nodes from the arena, clean pages through the shared
/// cache or from the current segments.
impl<D: Disk> PageSource for BTree<D> {
    fn check_running(&self) -> Result<()> {
        match &self.stopped {
            Some(cause) => Err(Error::Stopped {
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    fn root(&self, t: u8) -> Option<Child> {
        self.roots[usize::from(t)]
    }

    fn dirty(&self, d: u64) -> Rc<Node> {
        self.dirty[&d].clone()
    }

    fn cache(&self) -> &RefCell<PageCache> {
        &self.cache
    }

    async fn read_pages(&self, first: PageId, count: u32) -> Result<Vec<u8>> {
        let s = first.segment();
        let segment = self
            .segments
            .get(&s)
            .zip(self.files.get(&s))
            .map(|(info, file)| (&**file, info.written_pages));
        read_segment_pages(segment, first, count).await
    }
}

/// Reads `count` consecutive pages starting at `first` from `segment`, its open file and the
/// number of pages written to it as the reading side knows it (`None`: no such segment).
/// Verifies only that the run lies within the written pages; decoding verifies the rest.
async fn read_segment_pages<F: DiskFile>(
    segment: Option<(&F, u32)>,
    first: PageId,
    count: u32,
) -> Result<Vec<u8>> {
    let Some((file, written_pages)) = segment else {
        return Err(Error::MissingSegment {
            segment: first.segment(),
        });
    };
    if u64::from(first.index()) + u64::from(count) > u64::from(written_pages) {
        return Err(Error::UnexpectedPage {
            page: first,
            reason: "pointer past the written end of its segment",
        });
    }
    Ok(file
        .read_at(first.offset(), count as usize * PAGE_SIZE)
        .await?)
}

fn tree_index(tree: TreeId) -> Result<usize> {
    let t = usize::from(tree.0);
    if t >= MAX_TREES {
        return Err(Error::UnknownTree { tree: tree.0 });
    }
    Ok(t)
}
