//! [`Reader`]: a read-only view of the page log's trees as one durable superblock describes
//! them (an epoch), that borrows nothing from the [`BTree`] that handed it out. The MVCC layer
//! reads what it does not hold in memory through one, while checkpoints run in another task
//! on the same thread.
//!
//! What a reader sees: exactly the roots, key counts, applied index and revision of the
//! superblock that was durable when [`BTree::reader`] was called (the one `open` chose, or the
//! one the last successful checkpoint or defragment committed). Never a dirty node, never a
//! page of a checkpoint that has not committed. It keeps seeing that epoch for as long as it
//! lives, whatever the tree does next; a reader taken after the next commit sees the new one.
//!
//! Why that holds:
//! - pages are never overwritten and page ids never reused within one open page log, so every
//!   page the epoch's roots reach keeps its content;
//! - the cleaner removes a victim segment's file only after a newer superblock commits, and the
//!   epoch holds its own `Rc` of every segment file it names: an open handle keeps reading a
//!   removed file (an open descriptor on Linux; `SimFile` keeps its inode). So a live reader
//!   pins the disk space of removed segments until it is dropped;
//! - the clean-page cache is shared with the tree: a cached page is valid for every epoch that
//!   names it. The tree drops pages it no longer references; a reader that still does reads
//!   them back from its file (and caches them again);
//! - every method takes `&self` and borrows the cache only between awaits (the walks are the
//!   tree's own, over [`PageSource`]), so readers, tree mutations and checkpoints interleave
//!   freely on one thread.
//!
//! A read error (I/O, checksum mismatch, malformed page) is returned to the caller; it does
//! not stop the tree. A stopped tree still hands out readers: its durable state is sound.
//!
//! Invariants: an [`Epoch`] is immutable; its roots reach only pages of its segments, within
//! the written pages its superblock recorded, and every one of those segments has an open file.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::ops::Bound;
use std::rc::Rc;

use super::cache::PageCache;
use super::page::{Child, Node, PageId};
use super::superblock::Superblock;
use super::tree::{PageSource, Range};
#[cfg(doc)]
use super::BTree;
use super::{read_segment_pages, tree_index, Result, TreeId, MAX_TREES};
use crate::io::Disk;

/// One durable superblock's view of the page log.
pub(super) struct Epoch<D: Disk> {
    pub(super) sequence: u64,
    pub(super) applied_index: u64,
    pub(super) revision: i64,
    roots: [Option<PageId>; MAX_TREES],
    keys: [u64; MAX_TREES],
    /// Every segment the superblock names: its open file and the pages written to it then.
    segments: HashMap<u32, (Rc<D::File>, u32)>,
}

impl<D: Disk> Epoch<D> {
    /// The epoch `sb` describes; `files` holds an open file for each of its segments.
    pub(super) fn new(sb: &Superblock, files: &HashMap<u32, Rc<D::File>>) -> Self {
        let segments = sb
            .segments
            .iter()
            .map(|s| {
                let file = files
                    .get(&s.id)
                    .expect("every segment a durable superblock names is open");
                (s.id, (file.clone(), s.written_pages))
            })
            .collect();
        Epoch {
            sequence: sb.sequence,
            applied_index: sb.applied_index,
            revision: sb.revision,
            roots: sb.trees.map(|t| t.root),
            keys: sb.trees.map(|t| t.keys),
            segments,
        }
    }
}

/// A read-only handle on one durable epoch of a page log's trees (see the module comment).
/// Cheap to clone; clones share the epoch and the page cache.
pub struct Reader<D: Disk> {
    epoch: Rc<Epoch<D>>,
    cache: Rc<RefCell<PageCache>>,
}

impl<D: Disk> Clone for Reader<D> {
    fn clone(&self) -> Self {
        Reader {
            epoch: self.epoch.clone(),
            cache: self.cache.clone(),
        }
    }
}

impl<D: Disk> fmt::Debug for Reader<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reader")
            .field("epoch", &self.epoch.sequence)
            .field("applied_index", &self.epoch.applied_index)
            .field("revision", &self.epoch.revision)
            .finish_non_exhaustive()
    }
}

impl<D: Disk> Reader<D> {
    pub(super) fn new(epoch: Rc<Epoch<D>>, cache: Rc<RefCell<PageCache>>) -> Self {
        Reader { epoch, cache }
    }

    /// Sequence number of the superblock this reader reads (0 before the first checkpoint).
    pub fn epoch(&self) -> u64 {
        self.epoch.sequence
    }

    /// Applied log index recorded with this epoch.
    pub fn applied_index(&self) -> u64 {
        self.epoch.applied_index
    }

    /// Revision recorded with this epoch.
    pub fn revision(&self) -> i64 {
        self.epoch.revision
    }

    /// Number of keys in `tree` at this epoch.
    pub fn len(&self, tree: TreeId) -> Result<u64> {
        Ok(self.epoch.keys[tree_index(tree)?])
    }

    pub fn is_empty(&self, tree: TreeId) -> Result<bool> {
        Ok(self.len(tree)? == 0)
    }

    /// The value of `key` in `tree` at this epoch.
    pub async fn get(&self, tree: TreeId, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.lookup(tree, key).await
    }

    /// Up to `limit` entries (0 = no limit) of `tree` within `lower..upper`, ascending, or
    /// descending with `reverse`. To page on, call again with the last key returned as an
    /// excluded bound (`lower` ascending, `upper` descending). Reads the values of the
    /// returned entries only.
    pub async fn scan(
        &self,
        tree: TreeId,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Range::new(tree, lower, upper, reverse)
            .collect(self, limit)
            .await
    }
}

/// A reader reads clean pages of its epoch only.
impl<D: Disk> PageSource for Reader<D> {
    fn check_running(&self) -> Result<()> {
        Ok(())
    }

    fn root(&self, t: u8) -> Option<Child> {
        self.epoch.roots[usize::from(t)].map(Child::Page)
    }

    fn dirty(&self, d: u64) -> Rc<Node> {
        unreachable!("dirty node {d}: an epoch's roots and pages name only pages")
    }

    fn cache(&self) -> &RefCell<PageCache> {
        &self.cache
    }

    async fn read_pages(&self, first: PageId, count: u32) -> Result<Vec<u8>> {
        let segment = self
            .epoch
            .segments
            .get(&first.segment())
            .map(|(file, written_pages)| (&**file, *written_pages));
        read_segment_pages(segment, first, count).await
    }
}
