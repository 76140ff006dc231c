//! Checkpoints and the cleaner: how the in-memory dirty state becomes durable, and how dead
//! space in the page log is reclaimed.
//!
//! A checkpoint runs in three phases:
//! 1. relocate (reads only): the cleaner's victim segments are scanned; every page still
//!    referenced by a current tree is copied into the dirty arena (its path with it), so that
//!    afterwards no live tree references a victim. A failure here leaves a consistent
//!    in-memory state and the call may be retried.
//! 2. plan (memory only): dirty nodes are given page ids children-first (a parent needs its
//!    children's ids), encoded, and the new superblock is built. Victims leave the segment
//!    table, which is asserted to count no live page in them. Encoding is most of a
//!    checkpoint's CPU (~150 ms for 100,000 changed records), so the caller's `pause` is
//!    awaited every [`PAGES_PER_PAUSE`] pages: other tasks of the thread run meanwhile. None
//!    of them can reach the tree: the caller holds it for the whole checkpoint.
//! 3. write: new segment files are created and preallocated, pages appended, every touched
//!    segment `sync_data`ed (and the directory synced if files were created), then the
//!    superblock slot `sequence % 2` is written and synced: that is the commit point, where
//!    the tree's durable epoch (what [`BTree::reader`] hands out) is replaced. Only then are
//!    the victims' files removed; readers of older epochs hold their own handles on them. Any
//!    failure in this phase stops the tree.
//!
//! Pages written by a checkpoint enter the shared cache while it plans, before its commit:
//! harmless to readers of the previous epoch, which never name those fresh page ids.
//!
//! Example: segments 3 (capacity 64 pages, 10 live) and 7 (active). With a threshold of 0.5,
//! segment 3 is a victim; its 10 live pages (and the branches above them) are rewritten into
//! segment 7 by this checkpoint; the superblock of sequence n+1 lists only segment 7; segment
//! 3's file is removed after that superblock is durable. A crash before the superblock is
//! durable reopens sequence n, which still lists segment 3, intact.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::rc::Rc;

use super::page::{
    encode_page_into, node_fits, overflow_head_chunk, overflow_pages, Child, EncodeError, Node,
    OverflowRef, Page, PageBody, PageId, Value, BODY_MAX, PAGE_SIZE,
};
use super::reader::Epoch;
use super::superblock::{SegmentInfo, Superblock, TreeRoot, MAX_SEGMENTS, SLOT_SIZE};
use super::tree::PageSource;
use super::{decode_page, segment_name, BTree, Error, Result, MAX_TREES};
use crate::io::{Disk, DiskFile};

/// What one checkpoint (or a whole `defragment`) did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckpointReport {
    /// Sequence number of the superblock written last.
    pub sequence: u64,
    pub pages_written: u64,
    pub segments_cleaned: u64,
    pub pages_relocated: u64,
}

/// Pages to write, in runs of consecutive pages of one segment.
#[derive(Default)]
struct Plan {
    runs: Vec<(PageId, Vec<u8>)>,
    new_segments: Vec<u32>,
    pages: u64,
}

/// Write-run buffers a tree keeps from one checkpoint to the next (each `write_chunk_bytes`,
/// 1 MiB by default): a checkpoint of up to this many runs allocates none.
pub const RUN_BUFFERS_KEPT: usize = 4;

/// Pages the cleaner reads per request.
const CLEAN_READ_PAGES: u32 = 256;

/// Pages planned (encoded) between two calls of the caller's `pause`: ~1-2 ms of work.
pub const PAGES_PER_PAUSE: usize = 256;

/// The `pause` of callers that share their thread with nothing (tests, offline tools).
pub async fn no_pause() {}

impl<D: Disk> BTree<D> {
    /// Makes every change so far durable, recording `applied_index` and `revision` with it, and
    /// runs the cleaner on the segments the config's threshold selects.
    pub async fn checkpoint(
        &mut self,
        applied_index: u64,
        revision: i64,
    ) -> Result<CheckpointReport> {
        self.checkpoint_pausing(applied_index, revision, no_pause)
            .await
    }

    /// [`checkpoint`](Self::checkpoint), awaiting `pause` every [`PAGES_PER_PAUSE`] pages it
    /// plans so that other tasks of the thread can run.
    pub async fn checkpoint_pausing<F, P>(
        &mut self,
        applied_index: u64,
        revision: i64,
        mut pause: P,
    ) -> Result<CheckpointReport>
    where
        P: FnMut() -> F,
        F: Future<Output = ()>,
    {
        self.check_running()?;
        let victims = self.pick_victims(
            self.config.cleaner_live_ratio_max,
            self.config.cleaner_segments_per_checkpoint,
        );
        self.checkpoint_with(&victims, applied_index, revision, &mut pause)
            .await
    }

    /// Checkpoints and cleans every segment: all live pages are copied into fresh segments and
    /// every old segment is removed, so afterwards the page log holds no dead page (its size is
    /// the live size plus the unused tail of the last segment). Records `applied_index` and
    /// `revision` as [`checkpoint`](Self::checkpoint) does.
    ///
    /// Cleaning only the segments that hold dead pages would not finish the job: copying a page
    /// also copies its ancestors, which leaves dead pages in segments that were fully live.
    pub async fn defragment(
        &mut self,
        applied_index: u64,
        revision: i64,
    ) -> Result<CheckpointReport> {
        self.check_running()?;
        // Start a fresh segment so that no copy lands among pages that may die in this pass.
        self.active = 0;
        let victims: Vec<u32> = self.segments.keys().copied().collect();
        let r = self
            .checkpoint_with(&victims, applied_index, revision, &mut no_pause)
            .await?;
        for s in self.segments.values() {
            assert_eq!(s.live_pages, s.written_pages, "defragment left dead pages");
        }
        Ok(r)
    }

    /// Segments to clean: every fully dead one, then up to `max` of those whose live fraction
    /// of capacity is at most `ratio`, emptiest first. Never the active segment.
    pub(super) fn pick_victims(&self, ratio: f64, max: usize) -> Vec<u32> {
        let mut dead = Vec::new();
        let mut cands = Vec::new();
        for s in self.segments.values() {
            if s.id == self.active {
                continue;
            }
            let frac = f64::from(s.live_pages) / f64::from(s.capacity_pages);
            if s.live_pages == 0 {
                dead.push(s.id);
            } else if frac <= ratio {
                cands.push((frac, s.id));
            }
        }
        cands.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        dead.extend(cands.into_iter().take(max).map(|(_, id)| id));
        dead
    }

    async fn checkpoint_with<F, P>(
        &mut self,
        victims: &[u32],
        applied_index: u64,
        revision: i64,
        pause: &mut P,
    ) -> Result<CheckpointReport>
    where
        P: FnMut() -> F,
        F: Future<Output = ()>,
    {
        let relocated = self.relocate(victims).await?;
        let mut plan = Plan::default();
        for t in 0..MAX_TREES {
            if let Some(Child::Dirty(d)) = self.roots[t] {
                let id = self.plan_tree(t as u8, d, &mut plan, pause).await;
                self.roots[t] = Some(Child::Page(id));
            }
        }
        assert!(self.dirty.is_empty(), "every dirty node hangs from a root");
        for v in victims {
            let s = self.segments.remove(v).expect("victims are segments");
            assert_eq!(s.live_pages, 0, "victim segment {v} still has live pages");
        }
        let mut trees = [TreeRoot::default(); MAX_TREES];
        for (i, t) in trees.iter_mut().enumerate() {
            *t = TreeRoot {
                root: match self.roots[i] {
                    Some(Child::Page(id)) => Some(id),
                    None => None,
                    Some(Child::Dirty(_)) => unreachable!("planned above"),
                },
                keys: self.keys[i],
            };
        }
        let sb = Superblock {
            sequence: self.durable.sequence + 1,
            applied_index,
            revision,
            next_segment: self.next_segment,
            active_segment: self.active,
            trees,
            segments: self.segments.values().copied().collect(),
        };
        let pages_written = plan.pages;
        let result = if sb.segments.len() > MAX_SEGMENTS {
            Err(Error::TooManySegments { max: MAX_SEGMENTS })
        } else {
            self.write_checkpoint(plan, &sb, victims).await
        };
        if let Err(e) = result {
            // The in-memory state now describes pages that may not be on disk.
            self.stopped = Some(Box::new(e.clone()));
            return Err(e);
        }
        self.segments_cleaned += victims.len() as u64;
        self.pages_relocated += relocated;
        Ok(CheckpointReport {
            sequence: sb.sequence,
            pages_written,
            segments_cleaned: victims.len() as u64,
            pages_relocated: relocated,
        })
    }

    async fn write_checkpoint(
        &mut self,
        plan: Plan,
        sb: &Superblock,
        victims: &[u32],
    ) -> Result<()> {
        let prefix = self.config.file_prefix.clone();
        for &seg in &plan.new_segments {
            let f = self.disk.open(&segment_name(&prefix, seg), true).await?;
            f.allocate(self.config.segment_bytes).await?;
            self.files.insert(seg, Rc::new(f));
        }
        let mut touched = BTreeSet::new();
        for (first, buf) in &plan.runs {
            let f = &self.files[&first.segment()];
            f.write_at(first.offset(), buf).await?;
            touched.insert(first.segment());
        }
        for (_, mut buf) in plan.runs {
            if self.spare_runs.len() >= RUN_BUFFERS_KEPT {
                break;
            }
            buf.clear();
            self.spare_runs.push(buf);
        }
        for seg in touched {
            self.files[&seg].sync_data().await?;
        }
        if !plan.new_segments.is_empty() {
            self.disk.sync_dir().await?;
        }
        let bytes = sb.encode();
        self.super_file
            .write_at((sb.slot() * SLOT_SIZE) as u64, &bytes)
            .await?;
        self.super_file.sync_data().await?;
        // Committed: readers from now on see this superblock. Readers of older ones keep
        // their own handles on the victims' files, so removing them below loses them nothing.
        self.durable = Rc::new(Epoch::new(sb, &self.files));
        // Durable: the victims are referenced by no superblock open could choose.
        for v in victims {
            self.files.remove(v);
            self.disk.remove(&segment_name(&prefix, *v)).await?;
        }
        if !victims.is_empty() {
            self.disk.sync_dir().await?;
        }
        Ok(())
    }

    /// Gives `n` consecutive pages in the active segment, opening a new one when it is full.
    fn alloc_pages(&mut self, n: u32, plan: &mut Plan) -> PageId {
        let cap = self.config.segment_pages();
        assert!(n <= cap, "a run of {n} pages exceeds a segment");
        let fits = self
            .segments
            .get(&self.active)
            .is_some_and(|s| s.written_pages + n <= s.capacity_pages);
        if !fits {
            let id = self.next_segment;
            self.next_segment = id.checked_add(1).expect("segment ids exhausted");
            self.segments.insert(
                id,
                SegmentInfo {
                    id,
                    capacity_pages: cap,
                    written_pages: 0,
                    live_pages: 0,
                },
            );
            self.active = id;
            plan.new_segments.push(id);
        }
        let s = self.segments.get_mut(&self.active).expect("active exists");
        let first = PageId::new(s.id, s.written_pages);
        s.written_pages += n;
        s.live_pages += n;
        plan.pages += u64::from(n);
        first
    }

    /// Encodes `page` at the end of the plan's last write run when it follows that run in
    /// its segment and the run is not full, else into a new run: a buffer of
    /// `write_chunk_bytes` capacity, one left by an earlier checkpoint if any
    /// ([`RUN_BUFFERS_KEPT`]), so a run never grows by copying and its memory is not
    /// faulted in anew at every checkpoint.
    fn emit(
        &mut self,
        plan: &mut Plan,
        page: &Page,
        lz4: bool,
    ) -> std::result::Result<(), EncodeError> {
        let id = page.id;
        if let Some((first, buf)) = plan.runs.last_mut() {
            let next = first.index() as usize + buf.len() / PAGE_SIZE;
            if first.segment() == id.segment()
                && next == id.index() as usize
                && buf.len() < self.config.write_chunk_bytes
            {
                return encode_page_into(page, lz4, buf);
            }
        }
        let mut buf = self
            .spare_runs
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.config.write_chunk_bytes));
        let encoded = encode_page_into(page, lz4, &mut buf);
        if encoded.is_ok() {
            plan.runs.push((id, buf));
        } else {
            self.spare_runs.push(buf);
        }
        encoded
    }

    /// Assigns ids to the dirty subtree under `root` (children first, left to right), encodes
    /// it into `plan`, and moves its nodes to the cache as clean pages. Returns the root's id.
    async fn plan_tree<F, P>(&mut self, t: u8, root: u64, plan: &mut Plan, pause: &mut P) -> PageId
    where
        P: FnMut() -> F,
        F: Future<Output = ()>,
    {
        // The dirty nodes in post-order: each after all of its dirty children.
        let mut order = Vec::new();
        let mut stack = vec![(root, false)];
        while let Some((d, children_done)) = stack.pop() {
            if children_done {
                order.push(d);
                continue;
            }
            stack.push((d, true));
            if let Node::Branch(b) = &*self.dirty[&d] {
                for c in b.children.iter().rev() {
                    if let Child::Dirty(cd) = c {
                        stack.push((*cd, false));
                    }
                }
            }
        }
        let mut planned: HashMap<u64, PageId> = HashMap::new();
        let mut root_id = None;
        for (n, d) in order.into_iter().enumerate() {
            if n > 0 && n % PAGES_PER_PAUSE == 0 {
                pause().await;
            }
            let id = self.plan_node(t, d, plan, &mut planned);
            planned.insert(d, id);
            root_id = Some(id);
        }
        debug_assert_eq!(planned.len(), 1, "only the root is nobody's child");
        root_id.expect("the root is dirty")
    }

    /// Gives dirty node `d` (whose dirty children are in `planned`) its page id, encodes it
    /// into `plan` and moves it to the cache as a clean page.
    fn plan_node(
        &mut self,
        t: u8,
        d: u64,
        plan: &mut Plan,
        planned: &mut HashMap<u64, PageId>,
    ) -> PageId {
        let mut node = Rc::unwrap_or_clone(self.dirty.remove(&d).expect("dirty node exists"));
        match &mut node {
            Node::Branch(b) => {
                for child in b.children.iter_mut() {
                    if let Child::Dirty(cd) = *child {
                        let id = planned.remove(&cd).expect("children are planned first");
                        *child = Child::Page(id);
                    }
                }
            }
            Node::Leaf(l) => {
                for e in l.entries.iter_mut() {
                    if let Value::Pending(v) = &e.value {
                        let v = v.clone();
                        e.value = Value::Overflow(self.plan_overflow(t, &e.key, &v, plan));
                    }
                }
            }
        }
        let id = self.alloc_pages(1, plan);
        let page = Page {
            id,
            tree: t,
            body: PageBody::Node(node),
        };
        self.emit(plan, &page, self.config.lz4)
            .expect("dirty nodes always fit a page: splits keep them so");
        let PageBody::Node(node) = page.body else {
            unreachable!()
        };
        self.cache.borrow_mut().insert(id, Rc::new(node));
        id
    }

    fn plan_overflow(&mut self, t: u8, key: &[u8], v: &[u8], plan: &mut Plan) -> OverflowRef {
        let pages = overflow_pages(key.len(), v.len());
        let first = self.alloc_pages(pages, plan);
        let head = overflow_head_chunk(key.len(), v.len());
        let mut bodies = vec![PageBody::OverflowHead {
            key: key.to_vec(),
            value_len: v.len() as u32,
            pages,
            data: v[..head].to_vec(),
        }];
        for (i, chunk) in v[head..].chunks(BODY_MAX).enumerate() {
            bodies.push(PageBody::OverflowTail {
                index: i as u32 + 1,
                data: chunk.to_vec(),
            });
        }
        assert_eq!(bodies.len(), pages as usize);
        for (i, body) in bodies.into_iter().enumerate() {
            let id = first.plus(i as u32);
            self.emit(plan, &Page { id, tree: t, body }, false)
                .expect("overflow chunks are sized to fit");
        }
        OverflowRef {
            first,
            pages,
            len: v.len() as u32,
        }
    }

    /// Copies every live page of `victims` into the dirty arena. Returns the pages moved.
    async fn relocate(&mut self, victims: &[u32]) -> Result<u64> {
        let mut moved = 0;
        for &seg in victims {
            let written = self.segments[&seg].written_pages;
            let mut i = 0u32;
            while i < written && self.segments[&seg].live_pages > 0 {
                let n = (written - i).min(CLEAN_READ_PAGES);
                let bytes = self.read_pages(PageId::new(seg, i), n).await?;
                let mut j = 0u32;
                while j < n {
                    let id = PageId::new(seg, i + j);
                    let at = j as usize * PAGE_SIZE;
                    let page = decode_page(id, &bytes[at..at + PAGE_SIZE])?;
                    let t = page.tree;
                    match page.body {
                        PageBody::Node(node) => {
                            if self.node_is_live(t, id, &node).await? {
                                let key = node.probe_key().unwrap_or_default().to_vec();
                                self.dirty_path(t, &key, node.level()).await?;
                                moved += 1;
                            }
                        }
                        PageBody::OverflowHead { key, pages, .. } => {
                            if self.overflow_is_live(t, &key, id).await? {
                                self.relocate_value(t, &key).await?;
                                moved += u64::from(pages);
                            }
                            j += pages;
                            continue;
                        }
                        // Tails are handled with their head.
                        PageBody::OverflowTail { .. } => {}
                    }
                    j += 1;
                }
                i += j;
            }
            assert_eq!(
                self.segments[&seg].live_pages, 0,
                "segment {seg}: live pages the cleaner could not find"
            );
        }
        Ok(moved)
    }

    /// Re-inserts the current value of `key` as a pending value, freeing its overflow run.
    async fn relocate_value(&mut self, t: u8, key: &[u8]) -> Result<()> {
        let (ids, _) = self.dirty_path(t, key, 0).await?;
        let leaf_id = *ids.last().expect("path is never empty");
        let Node::Leaf(leaf) = &*self.dirty[&leaf_id] else {
            unreachable!("dirty_path to level 0 ends at a leaf")
        };
        let i = leaf
            .entries
            .binary_search_by(|e| e.key.as_slice().cmp(key))
            .expect("a live overflow run's key exists");
        let Value::Overflow(r) = leaf.entries[i].value else {
            unreachable!("checked live")
        };
        let value = self.read_overflow(t, key, r).await?;
        let Node::Leaf(leaf) = self.dirty_mut(leaf_id) else {
            unreachable!()
        };
        leaf.entries[i].value = Value::Pending(Rc::from(value));
        self.free_value(&Value::Overflow(r));
        Ok(())
    }

    /// Walks every tree and checks the shape rules and the live-page accounting against what
    /// is actually reachable. Panics on a broken invariant; returns I/O and corruption errors.
    /// Reads every page (and every overflow value): for tests and offline checks.
    pub async fn check_invariants(&mut self) -> Result<()> {
        self.check_running()?;
        let lz4 = self.config.lz4;
        let mut live: BTreeMap<u32, u32> = BTreeMap::new();
        for t in 0..MAX_TREES {
            let tb = t as u8;
            let Some(root) = self.roots[t] else {
                assert_eq!(self.keys[t], 0, "tree {t}: empty but counts keys");
                continue;
            };
            let mut count = 0u64;
            type Item = (Child, Option<u16>, Option<Vec<u8>>, Option<Vec<u8>>, bool);
            let mut stack: Vec<Item> = vec![(root, None, None, None, true)];
            while let Some((c, level, lo, hi, is_root)) = stack.pop() {
                if let Child::Page(id) = c {
                    *live.entry(id.segment()).or_default() += 1;
                }
                let n = self.node(tb, c).await?;
                if let Some(l) = level {
                    assert_eq!(n.level(), l, "tree {t}: level mismatch at {c:?}");
                }
                assert!(node_fits(&n, lz4), "tree {t}: node {c:?} does not fit");
                let in_range = |k: &[u8]| {
                    lo.as_deref().is_none_or(|lo| k >= lo) && hi.as_deref().is_none_or(|hi| k < hi)
                };
                match &*n {
                    Node::Leaf(l) => {
                        assert!(is_root || !l.entries.is_empty(), "tree {t}: empty leaf");
                        assert!(!is_root || !l.entries.is_empty(), "tree {t}: empty root");
                        for (i, e) in l.entries.iter().enumerate() {
                            assert!(in_range(&e.key), "tree {t}: key outside its leaf range");
                            if i > 0 {
                                assert!(l.entries[i - 1].key < e.key, "tree {t}: leaf order");
                            }
                            if let Value::Overflow(r) = &e.value {
                                *live.entry(r.first.segment()).or_default() += r.pages;
                                let v = self.read_overflow(tb, &e.key, *r).await?;
                                assert_eq!(v.len(), r.len as usize);
                            }
                            count += 1;
                        }
                    }
                    Node::Branch(b) => {
                        assert_eq!(b.children.len(), b.keys.len() + 1);
                        assert!(b.children.len() >= 2, "tree {t}: branch with one child");
                        for (i, k) in b.keys.iter().enumerate() {
                            assert!(in_range(k), "tree {t}: separator outside its range");
                            if i > 0 {
                                assert!(b.keys[i - 1] < *k, "tree {t}: separator order");
                            }
                        }
                        for (i, ch) in b.children.iter().enumerate() {
                            let clo = if i == 0 {
                                lo.clone()
                            } else {
                                Some(b.keys[i - 1].clone())
                            };
                            let chi = if i == b.keys.len() {
                                hi.clone()
                            } else {
                                Some(b.keys[i].clone())
                            };
                            stack.push((*ch, Some(b.level - 1), clo, chi, false));
                        }
                    }
                }
            }
            assert_eq!(count, self.keys[t], "tree {t}: key count");
        }
        for (id, s) in &self.segments {
            assert!(s.written_pages <= s.capacity_pages);
            assert!(s.live_pages <= s.written_pages);
            assert_eq!(
                live.remove(id).unwrap_or(0),
                s.live_pages,
                "segment {id}: live-page accounting"
            );
        }
        assert!(live.is_empty(), "pages in unknown segments: {live:?}");
        Ok(())
    }
}
