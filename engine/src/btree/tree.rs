//! Tree operations on top of the page store in `mod.rs`: point reads, ordered range cursors,
//! insert with splits, remove with merges/redistribution, all copy-on-write through the dirty
//! arena.
//!
//! The read-only walks (descent to a key, the [`Range`] cursor, overflow values, page
//! verification) are written once, over [`PageSource`]: the tree implements it with its current
//! state (dirty nodes included), a [`Reader`](super::Reader) with one durable epoch. They
//! borrow the shared page cache only between awaits, so readers and the tree interleave freely
//! on one thread.
//!
//! Shape rules kept here: a node that no longer fits its page is split into pieces that do,
//! evenly (`split_to_fit`), except on an append at the right edge (a new key after every key
//! of the tree), which splits "left-full" (`split_left_full`): the left piece keeps as much as
//! fits and the right piece takes the rest, so ascending loads (the image's revision-keyed
//! history) leave full leaves behind instead of half-full ones. A non-root node that falls
//! below a quarter page (or a branch below two children) is merged with a sibling, or the pair
//! is re-split evenly when the merge would not fit; a root branch with one child is replaced
//! by that child, and an empty root leaf by an empty tree. Separators are the shortest prefix
//! of the right piece's first key that is greater than the left piece's last key (suffix
//! truncation), so a separator always lies in the range of the child to its right.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::ops::Bound;
use std::rc::Rc;

use super::cache::PageCache;
use super::page::{
    node_fits, overflow_pages, Branch, Child, Entry, Leaf, Node, OverflowRef, PageBody, PageId,
    Value, BODY_MAX, INLINE_LEN_SIZE, LEAF_ENTRY_FIXED, MAX_ENTRY, MAX_KEY_LEN, PAGE_SIZE,
};
use super::{decode_page, tree_index, BTree, Error, Result, TreeId, MAX_VALUE_LEN};
use crate::io::Disk;

/// Index of the child of a branch with separators `keys` whose range holds `key`.
pub(super) fn child_index(keys: &[Vec<u8>], key: &[u8]) -> usize {
    keys.partition_point(|s| s.as_slice() <= key)
}

/// The shortest key `s` with `left < s <= right` that is a prefix of `right` (`left < right`).
fn separator(left: &[u8], right: &[u8]) -> Vec<u8> {
    debug_assert!(left < right);
    let common = left.iter().zip(right).take_while(|(a, b)| a == b).count();
    right[..=common.min(right.len() - 1)].to_vec()
}

fn underfull(node: &Node) -> bool {
    match node {
        Node::Leaf(l) => l.entries.is_empty() || node.body_len() < BODY_MAX / 4,
        Node::Branch(b) => b.children.len() < 2 || node.body_len() < BODY_MAX / 4,
    }
}

/// Splits `node` into pieces that each fit a page, with the separator in front of every piece
/// but the first. A node that fits comes back whole.
fn split_to_fit(node: Node, lz4: bool) -> Vec<(Option<Vec<u8>>, Node)> {
    if node_fits(&node, lz4) {
        return vec![(None, node)];
    }
    let (left, sep, right) = split_half(node);
    let mut out = split_to_fit(left, lz4);
    let mut rest = split_to_fit(right, lz4);
    rest[0].0 = Some(sep);
    out.extend(rest);
    out
}

/// Splits `node` into pieces that each fit a page, every piece but the last holding as much
/// as fits (a leaf piece at least one entry, a branch piece at least two children), with the
/// separator in front of every piece but the first. A node that fits comes back whole.
///
/// Example: a rightmost leaf holding three entries of 1,040 bytes (a page body holds 4,064)
/// gets a fourth appended. An even split leaves 2 + 2, and the left leaf never grows again
/// (later keys are larger): every leaf ends half full. Here it is 3 + 1, and the next two
/// appends fill the right leaf.
fn split_left_full(node: Node, lz4: bool) -> Vec<(Option<Vec<u8>>, Node)> {
    if node_fits(&node, lz4) {
        return vec![(None, node)];
    }
    let (left, sep, right) = split_at(node, Cut::LeftFull { lz4 });
    debug_assert!(node_fits(&left, lz4));
    let mut out = vec![(None, left)];
    let mut rest = split_left_full(right, lz4);
    rest[0].0 = Some(sep);
    out.extend(rest);
    out
}

/// The largest index in `lo..=hi` whose prefix `fits` (never below `lo`: a prefix of `lo`
/// items always fits). `sizes` are plain encoded sizes: a prefix within `BODY_MAX` fits
/// without asking `fits`, so `fits` (an lz4 compression) is only asked about longer prefixes,
/// from the longest down.
fn full_cut(sizes: &[usize], lo: usize, hi: usize, fits: impl Fn(usize) -> bool) -> usize {
    let mut acc = 0;
    let mut plain = lo;
    for (i, size) in sizes.iter().enumerate().take(hi + 1) {
        // `acc` is the size of the prefix `..i`.
        if i >= lo && acc <= BODY_MAX {
            plain = i;
        }
        acc += size;
    }
    (plain + 1..=hi).rev().find(|&c| fits(c)).unwrap_or(plain)
}

/// Index in `1..n` (leaves) or `lo..=hi` that splits `sizes` closest to half its total.
fn balanced_cut(sizes: &[usize], lo: usize, hi: usize) -> usize {
    let total: usize = sizes.iter().sum();
    let mut best = (usize::MAX, lo);
    let mut acc: usize = sizes[..lo].iter().sum();
    for (i, size) in sizes.iter().enumerate().take(hi + 1).skip(lo) {
        let diff = acc.abs_diff(total - acc);
        if diff < best.0 {
            best = (diff, i);
        }
        acc += size;
    }
    best.1
}

fn split_half(node: Node) -> (Node, Vec<u8>, Node) {
    split_at(node, Cut::Balanced)
}

/// Where `split_at` cuts.
#[derive(Clone, Copy)]
enum Cut {
    /// Closest to half the body.
    Balanced,
    /// As far right as the left piece still fits a page (compressed, with `lz4`).
    LeftFull { lz4: bool },
}

impl Cut {
    /// The cut in `lo..=hi`, where `sizes[i]` is what item `i` adds to the body and `fits(c)`
    /// says whether the left piece of a cut at `c` fits a page.
    fn choose(self, sizes: &[usize], lo: usize, hi: usize, fits: impl Fn(usize) -> bool) -> usize {
        match self {
            Cut::Balanced => balanced_cut(sizes, lo, hi),
            Cut::LeftFull { .. } => full_cut(sizes, lo, hi, fits),
        }
    }

    /// Whether a piece whose plain body exceeds `BODY_MAX` can still fit (compressed).
    fn may_compress(self) -> bool {
        matches!(self, Cut::LeftFull { lz4: true })
    }
}

/// Splits `node` in two where `cut` says. Leaves cut in `1..n` (both pieces non-empty),
/// branches in `2..=n-2` (both pieces keep two children).
fn split_at(node: Node, cut: Cut) -> (Node, Vec<u8>, Node) {
    match node {
        Node::Leaf(mut l) => {
            let n = l.entries.len();
            assert!(n >= 2, "a one-entry leaf always fits");
            let sizes: Vec<usize> = l.entries.iter().map(Entry::encoded_len).collect();
            let fits = |c: usize| {
                cut.may_compress()
                    && node_fits(
                        &Node::Leaf(Leaf {
                            entries: l.entries[..c].to_vec(),
                        }),
                        true,
                    )
            };
            let cut = cut.choose(&sizes, 1, n - 1, fits);
            assert!((1..n).contains(&cut));
            let right = l.entries.split_off(cut);
            let sep = separator(&l.entries[cut - 1].key, &right[0].key);
            (Node::Leaf(l), sep, Node::Leaf(Leaf { entries: right }))
        }
        Node::Branch(mut b) => {
            let n = b.children.len();
            assert!(n >= 4, "a branch of at most three children always fits");
            // sizes[i] = bytes child i brings (its pointer plus the separator before it).
            let sizes: Vec<usize> = (0..n)
                .map(|i| 8 + if i == 0 { 0 } else { 2 + b.keys[i - 1].len() })
                .collect();
            let fits = |c: usize| {
                cut.may_compress()
                    && node_fits(
                        &Node::Branch(Branch {
                            level: b.level,
                            keys: b.keys[..c - 1].to_vec(),
                            children: b.children[..c].to_vec(),
                        }),
                        true,
                    )
            };
            let cut = cut.choose(&sizes, 2, n - 2, fits);
            assert!((2..=n - 2).contains(&cut));
            let right_children = b.children.split_off(cut);
            let right_keys = b.keys.split_off(cut);
            let sep = b.keys.pop().expect("cut >= 2 leaves a separator");
            let right = Branch {
                level: b.level,
                keys: right_keys,
                children: right_children,
            };
            (Node::Branch(b), sep, Node::Branch(right))
        }
    }
}

/// What the read-only walks of this file (point lookup, range cursor, overflow values) read
/// from: the tree itself (its current state, dirty nodes included) or a
/// [`Reader`](super::Reader) (one durable epoch, clean pages only). One copy of the descent,
/// the cursor and the page verification serves both.
///
/// Contract for implementers:
/// - `root` and `dirty` answer from memory; `dirty` is only asked about ids the source's own
///   nodes name (a page read from disk never names a dirty node);
/// - `read_pages` returns the raw bytes of a run of pages within the written part of a
///   segment the source knows, or an error; the provided methods verify what they decode;
/// - nothing holds a `RefCell` borrow (the shared cache's included) across an `.await`, so
///   walks of several sources may interleave on one thread.
#[allow(async_fn_in_trait)]
pub(super) trait PageSource {
    /// `Err` when reads must not proceed (a stopped tree).
    fn check_running(&self) -> Result<()>;
    /// The root of tree `t` as this source sees it.
    fn root(&self, t: u8) -> Option<Child>;
    /// A node changed since the last checkpoint.
    fn dirty(&self, d: u64) -> Rc<Node>;
    /// The clean-page cache (shared by the tree and its readers).
    fn cache(&self) -> &RefCell<PageCache>;
    /// `count` consecutive raw pages starting at `first`.
    async fn read_pages(&self, first: PageId, count: u32) -> Result<Vec<u8>>;

    /// A node of tree `t`, from the dirty arena or the cache, reading and verifying it on a
    /// miss (and caching it: a page id names one content forever).
    async fn node(&self, t: u8, child: Child) -> Result<Rc<Node>> {
        let id = match child {
            Child::Dirty(d) => return Ok(self.dirty(d)),
            Child::Page(id) => id,
        };
        let cached = self.cache().borrow_mut().get(id);
        if let Some(n) = cached {
            return Ok(n);
        }
        let bytes = self.read_pages(id, 1).await?;
        let page = decode_page(id, &bytes)?;
        if page.tree != t {
            return Err(Error::UnexpectedPage {
                page: id,
                reason: "page belongs to another tree",
            });
        }
        let PageBody::Node(node) = page.body else {
            return Err(Error::UnexpectedPage {
                page: id,
                reason: "overflow page where a node was expected",
            });
        };
        let node = Rc::new(node);
        self.cache().borrow_mut().insert(id, node.clone());
        Ok(node)
    }

    /// The leaf entry of `key` in `t`, without copying any path.
    async fn find(&self, t: u8, key: &[u8]) -> Result<Option<Entry>> {
        let Some(mut cur) = self.root(t) else {
            return Ok(None);
        };
        loop {
            let node = self.node(t, cur).await?;
            match &*node {
                Node::Branch(b) => cur = b.children[child_index(&b.keys, key)],
                Node::Leaf(l) => {
                    return Ok(l
                        .entries
                        .binary_search_by(|e| e.key.as_slice().cmp(key))
                        .ok()
                        .map(|i| l.entries[i].clone()))
                }
            }
        }
    }

    /// The value of `key` in `tree`.
    async fn lookup(&self, tree: TreeId, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.check_running()?;
        let t = tree_index(tree)? as u8;
        match self.find(t, key).await? {
            Some(e) => Ok(Some(self.value_bytes(t, &e).await?)),
            None => Ok(None),
        }
    }

    async fn value_bytes(&self, t: u8, e: &Entry) -> Result<Vec<u8>> {
        match &e.value {
            Value::Inline(v) => Ok(v.clone()),
            Value::Pending(v) => Ok(v.to_vec()),
            Value::Overflow(r) => self.read_overflow(t, &e.key, *r).await,
        }
    }

    /// Reads and verifies a large value's run of overflow pages.
    async fn read_overflow(&self, t: u8, key: &[u8], r: OverflowRef) -> Result<Vec<u8>> {
        let bytes = self.read_pages(r.first, r.pages).await?;
        let mut out = Vec::with_capacity(r.len as usize);
        for i in 0..r.pages {
            let id = r.first.plus(i);
            let at = i as usize * PAGE_SIZE;
            let page = decode_page(id, &bytes[at..at + PAGE_SIZE])?;
            let unexpected = |reason| Error::UnexpectedPage { page: id, reason };
            if page.tree != t {
                return Err(unexpected("overflow page of another tree"));
            }
            match page.body {
                PageBody::OverflowHead {
                    key: k,
                    value_len,
                    pages,
                    data,
                } if i == 0 => {
                    if k != key || value_len != r.len || pages != r.pages {
                        return Err(unexpected("overflow head does not match its reference"));
                    }
                    out.extend_from_slice(&data);
                }
                PageBody::OverflowTail { index, data } if i > 0 && index == i => {
                    out.extend_from_slice(&data);
                }
                _ => return Err(unexpected("not the expected page of an overflow run")),
            }
        }
        if out.len() != r.len as usize {
            return Err(Error::UnexpectedPage {
                page: r.first,
                reason: "overflow run length differs from its reference",
            });
        }
        Ok(out)
    }
}

/// Forward: where a cursor at `lower` continues. Reverse: at `upper`.
fn after_lower(lower: &Bound<Vec<u8>>, key: &[u8]) -> bool {
    match lower {
        Bound::Included(s) => key >= s.as_slice(),
        Bound::Excluded(s) => key > s.as_slice(),
        Bound::Unbounded => true,
    }
}

fn before_upper(upper: &Bound<Vec<u8>>, key: &[u8]) -> bool {
    match upper {
        Bound::Included(e) => key <= e.as_slice(),
        Bound::Excluded(e) => key < e.as_slice(),
        Bound::Unbounded => true,
    }
}

/// A cursor over the keys of one tree within bounds, in key order (or reverse). It holds no
/// borrow of the tree: each step re-descends from the root to the next leaf, so the tree may be
/// changed between steps (a key inserted behind the cursor, or into the leaf it has already
/// buffered, is not seen). Values are read when their entries are buffered: a refill takes the
/// matching entries of one leaf, or only the first few of them when the caller needs no more
/// (then the next refill resumes right after the last one taken).
#[derive(Debug, Clone)]
pub struct Range {
    tree: TreeId,
    lower: Bound<Vec<u8>>,
    upper: Bound<Vec<u8>>,
    reverse: bool,
    buf: VecDeque<(Vec<u8>, Vec<u8>)>,
    exhausted: bool,
}

impl Range {
    pub fn new(tree: TreeId, lower: Bound<&[u8]>, upper: Bound<&[u8]>, reverse: bool) -> Self {
        let own = |b: Bound<&[u8]>| b.map(<[u8]>::to_vec);
        Range {
            tree,
            lower: own(lower),
            upper: own(upper),
            reverse,
            buf: VecDeque::new(),
            exhausted: false,
        }
    }

    /// The next key and value, or `None` at the end.
    pub async fn next<D: Disk>(
        &mut self,
        tree: &mut BTree<D>,
    ) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        self.next_in(&*tree, usize::MAX).await
    }

    /// The next key and value from `src`; a refill buffers at most `want` entries (and reads
    /// only their values), so a caller that needs few does not read a whole leaf's values.
    pub(super) async fn next_in<S: PageSource>(
        &mut self,
        src: &S,
        want: usize,
    ) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        loop {
            if let Some(kv) = self.buf.pop_front() {
                return Ok(Some(kv));
            }
            if self.exhausted {
                return Ok(None);
            }
            self.fill(src, want.max(1)).await?;
        }
    }

    /// Collects up to `limit` entries (0 = no limit) from `src`.
    pub(super) async fn collect<S: PageSource>(
        mut self,
        src: &S,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let limit = if limit == 0 { usize::MAX } else { limit };
        let mut out = Vec::new();
        while out.len() < limit {
            match self.next_in(src, limit - out.len()).await? {
                Some(kv) => out.push(kv),
                None => break,
            }
        }
        Ok(out)
    }

    /// Buffers the matching entries of the next leaf, at most `want` of them.
    async fn fill<S: PageSource>(&mut self, src: &S, want: usize) -> Result<()> {
        src.check_running()?;
        let t = tree_index(self.tree)? as u8;
        if let (Bound::Included(s) | Bound::Excluded(s), Bound::Included(e) | Bound::Excluded(e)) =
            (&self.lower, &self.upper)
        {
            if s > e {
                self.exhausted = true;
                return Ok(());
            }
        }
        let Some(mut cur) = src.root(t) else {
            self.exhausted = true;
            return Ok(());
        };
        // The leaf's range is [lo, hi) as its ancestors' separators bound it.
        let (mut lo, mut hi): (Option<Vec<u8>>, Option<Vec<u8>>) = (None, None);
        let leaf = loop {
            let node = src.node(t, cur).await?;
            match &*node {
                Node::Branch(b) => {
                    let idx = if self.reverse {
                        match &self.upper {
                            Bound::Included(k) => child_index(&b.keys, k),
                            Bound::Excluded(k) => {
                                b.keys.partition_point(|s| s.as_slice() < k.as_slice())
                            }
                            Bound::Unbounded => b.keys.len(),
                        }
                    } else {
                        match &self.lower {
                            Bound::Included(k) | Bound::Excluded(k) => child_index(&b.keys, k),
                            Bound::Unbounded => 0,
                        }
                    };
                    if idx > 0 {
                        lo = Some(b.keys[idx - 1].clone());
                    }
                    if idx < b.keys.len() {
                        hi = Some(b.keys[idx].clone());
                    }
                    cur = b.children[idx];
                }
                Node::Leaf(_) => break node,
            }
        };
        let Node::Leaf(leaf) = &*leaf else {
            unreachable!()
        };
        let mut matching: Vec<&Entry> = leaf
            .entries
            .iter()
            .filter(|e| after_lower(&self.lower, &e.key) && before_upper(&self.upper, &e.key))
            .collect();
        if self.reverse {
            matching.reverse();
        }
        // Taking fewer than the leaf matches: resume right after the last entry taken.
        let cut_short = matching.len() > want;
        matching.truncate(want);
        let mut out = Vec::with_capacity(matching.len());
        for e in &matching {
            out.push((e.key.clone(), src.value_bytes(t, e).await?));
        }
        if cut_short {
            let last = Bound::Excluded(matching[matching.len() - 1].key.clone());
            if self.reverse {
                self.upper = last;
            } else {
                self.lower = last;
            }
        } else if self.reverse {
            // Keys left to visit are below `l`; some may pass the lower bound only if it is
            // below `l`.
            let more = match (&lo, &self.lower) {
                (None, _) => false,
                (Some(_), Bound::Unbounded) => true,
                (Some(l), Bound::Included(s) | Bound::Excluded(s)) => s < l,
            };
            match lo {
                Some(l) if more => self.upper = Bound::Excluded(l),
                _ => self.exhausted = true,
            }
        } else {
            match hi {
                Some(h) if before_upper(&self.upper, &h) => self.lower = Bound::Included(h),
                _ => self.exhausted = true,
            }
        }
        self.buf.extend(out);
        Ok(())
    }
}

impl<D: Disk> BTree<D> {
    /// The value of `key` in `tree`.
    pub async fn get(&self, tree: TreeId, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.lookup(tree, key).await
    }

    /// A cursor over `tree`'s keys in `[lower, upper]` as the bounds say, ascending.
    pub fn range(&self, tree: TreeId, lower: Bound<&[u8]>, upper: Bound<&[u8]>) -> Range {
        Range::new(tree, lower, upper, false)
    }

    /// As [`range`](Self::range), descending.
    pub fn range_rev(&self, tree: TreeId, lower: Bound<&[u8]>, upper: Bound<&[u8]>) -> Range {
        Range::new(tree, lower, upper, true)
    }

    /// Collects up to `limit` entries of a range (0 = no limit).
    pub async fn scan(
        &self,
        tree: TreeId,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.range(tree, lower, upper).collect(self, limit).await
    }
    /// Largest value storable with a key of `key_len` bytes under this config.
    pub fn max_value_len(&self, key_len: usize) -> usize {
        let seg = self.config.segment_pages() as usize;
        // Pages of a run hold BODY_MAX bytes each, less the head's key and fixed fields.
        let by_segment = (seg * BODY_MAX).saturating_sub(6 + key_len);
        MAX_VALUE_LEN.min(by_segment)
    }

    /// Copies the path from the root of `t` to the node at `stop_level` whose range holds
    /// `key` into the dirty arena; returns the dirty ids from the root down and, for each
    /// branch on the way, the index of the child taken. Creates an empty root leaf for an
    /// empty tree.
    pub(super) async fn dirty_path(
        &mut self,
        t: u8,
        key: &[u8],
        stop_level: u16,
    ) -> Result<(Vec<u64>, Vec<usize>)> {
        let ti = usize::from(t);
        let root = match self.roots[ti] {
            None => self.alloc_dirty(Node::Leaf(Leaf::default())),
            Some(c) => self.cow(t, c).await?,
        };
        self.roots[ti] = Some(Child::Dirty(root));
        let mut ids = vec![root];
        let mut idxs = Vec::new();
        loop {
            let cur = *ids.last().expect("path is never empty");
            let (idx, child) = match &*self.dirty[&cur] {
                Node::Branch(b) if b.level > stop_level => {
                    let i = child_index(&b.keys, key);
                    (i, b.children[i])
                }
                _ => break,
            };
            let d = self.cow(t, child).await?;
            if let Node::Branch(b) = self.dirty_mut(cur) {
                b.children[idx] = Child::Dirty(d);
            }
            ids.push(d);
            idxs.push(idx);
        }
        Ok((ids, idxs))
    }

    /// Sets `key` to `value` in `tree`; returns whether the key existed.
    pub async fn insert(&mut self, tree: TreeId, key: &[u8], value: &[u8]) -> Result<bool> {
        self.check_running()?;
        let t = tree_index(tree)? as u8;
        if key.len() > MAX_KEY_LEN {
            return Err(Error::KeyTooLarge {
                len: key.len(),
                max: MAX_KEY_LEN,
            });
        }
        let max = self.max_value_len(key.len());
        if value.len() > max {
            return Err(Error::ValueTooLarge {
                len: value.len(),
                max,
            });
        }
        let value = if LEAF_ENTRY_FIXED + key.len() + INLINE_LEN_SIZE + value.len() <= MAX_ENTRY {
            Value::Inline(value.to_vec())
        } else {
            debug_assert!(overflow_pages(key.len(), value.len()) <= self.config.segment_pages());
            Value::Pending(Rc::from(value))
        };
        let (ids, idxs) = self.dirty_path(t, key, 0).await?;
        // The rightmost node at every level: the last child taken at every branch.
        let rightmost = ids
            .iter()
            .zip(&idxs)
            .all(|(d, &i)| matches!(&*self.dirty[d], Node::Branch(b) if i + 1 == b.children.len()));
        let leaf_id = *ids.last().expect("path is never empty");
        let Node::Leaf(leaf) = self.dirty_mut(leaf_id) else {
            unreachable!("dirty_path to level 0 ends at a leaf")
        };
        let mut append = false;
        let old = match leaf.entries.binary_search_by(|e| e.key.as_slice().cmp(key)) {
            Ok(i) => Some(std::mem::replace(&mut leaf.entries[i].value, value)),
            Err(i) => {
                append = i == leaf.entries.len();
                leaf.entries.insert(
                    i,
                    Entry {
                        key: key.to_vec(),
                        value,
                    },
                );
                None
            }
        };
        let existed = old.is_some();
        match old {
            Some(v) => self.free_value(&v),
            None => self.keys[usize::from(t)] += 1,
        }
        // A key after every key of the tree: splits along the path leave their left pieces
        // full, since later appends will only go further right.
        let cut = if rightmost && append {
            Cut::LeftFull {
                lz4: self.config.lz4,
            }
        } else {
            Cut::Balanced
        };
        self.fix_overfull(t, &ids, &idxs, cut);
        Ok(existed)
    }

    /// Removes `key` from `tree`; returns whether it existed.
    pub async fn remove(&mut self, tree: TreeId, key: &[u8]) -> Result<bool> {
        self.check_running()?;
        let t = tree_index(tree)? as u8;
        if self.find(t, key).await?.is_none() {
            return Ok(false);
        }
        let (ids, idxs) = self.dirty_path(t, key, 0).await?;
        let leaf_id = *ids.last().expect("path is never empty");
        let Node::Leaf(leaf) = self.dirty_mut(leaf_id) else {
            unreachable!("dirty_path to level 0 ends at a leaf")
        };
        let i = leaf
            .entries
            .binary_search_by(|e| e.key.as_slice().cmp(key))
            .expect("find saw the key");
        let e = leaf.entries.remove(i);
        self.free_value(&e.value);
        self.keys[usize::from(t)] -= 1;
        if let Err(e) = self.rebalance(t, ids, idxs).await {
            // A sibling could not be read: the entry is gone but a node may be left empty,
            // which the cleaner cannot locate. Stop rather than run on a misshapen tree.
            self.stopped = Some(Box::new(e.clone()));
            return Err(e);
        }
        Ok(true)
    }

    pub(super) fn free_value(&mut self, v: &Value) {
        if let Value::Overflow(r) = v {
            for i in 0..r.pages {
                self.free_page(r.first.plus(i));
            }
        }
    }

    /// Splits, bottom-up along `ids`, every node that no longer fits its page, where `cut`
    /// says.
    fn fix_overfull(&mut self, t: u8, ids: &[u64], idxs: &[usize], cut: Cut) {
        let lz4 = self.config.lz4;
        for lvl in (0..ids.len()).rev() {
            let d = ids[lvl];
            if node_fits(&self.dirty[&d], lz4) {
                return;
            }
            let node = Rc::unwrap_or_clone(self.dirty.remove(&d).expect("dirty node exists"));
            let level = node.level();
            let pieces = match cut {
                Cut::Balanced => split_to_fit(node, lz4),
                Cut::LeftFull { .. } => split_left_full(node, lz4),
            };
            let mut pieces = pieces.into_iter();
            let (_, first) = pieces.next().expect("at least one piece");
            self.dirty.insert(d, Rc::new(first));
            let mut seps = Vec::new();
            let mut kids = Vec::new();
            for (sep, node) in pieces {
                seps.push(sep.expect("pieces after the first carry a separator"));
                kids.push(Child::Dirty(self.alloc_dirty(node)));
            }
            if lvl == 0 {
                let mut children = vec![Child::Dirty(d)];
                children.extend(kids);
                let root = self.alloc_dirty(Node::Branch(Branch {
                    level: level + 1,
                    keys: seps,
                    children,
                }));
                self.roots[usize::from(t)] = Some(Child::Dirty(root));
                // A new root of two or more fitting pieces: each separator is at most
                // MAX_KEY_LEN, but many pieces could still overflow it; loop on it.
                self.fix_overfull(t, &[root], &[], cut);
                return;
            }
            let idx = idxs[lvl - 1];
            let Node::Branch(parent) = self.dirty_mut(ids[lvl - 1]) else {
                unreachable!("a path's inner nodes are branches")
            };
            let at = idx + 1;
            parent.keys.splice(idx..idx, seps);
            parent.children.splice(at..at, kids);
        }
    }

    /// Restores the shape rules bottom-up along `ids` after a removal.
    async fn rebalance(&mut self, t: u8, ids: Vec<u64>, idxs: Vec<usize>) -> Result<()> {
        let lz4 = self.config.lz4;
        let mut lvl = ids.len() - 1;
        while lvl > 0 {
            if !underfull(&self.dirty[&ids[lvl]]) {
                break;
            }
            let parent_id = ids[lvl - 1];
            let idx = idxs[lvl - 1];
            let Node::Branch(parent) = &*self.dirty[&parent_id] else {
                unreachable!("a path's inner nodes are branches")
            };
            let (li, ri) = if idx + 1 < parent.children.len() {
                (idx, idx + 1)
            } else {
                (idx - 1, idx)
            };
            let sib_at = if li == idx { ri } else { li };
            let sib_child = parent.children[sib_at];
            let sib = self.cow(t, sib_child).await?;
            let (ld, rd) = if li == idx {
                (ids[lvl], sib)
            } else {
                (sib, ids[lvl])
            };
            let left = Rc::unwrap_or_clone(self.dirty.remove(&ld).expect("dirty"));
            let right = Rc::unwrap_or_clone(self.dirty.remove(&rd).expect("dirty"));
            let Node::Branch(parent) = self.dirty_mut(parent_id) else {
                unreachable!()
            };
            let sep = parent.keys.remove(li);
            parent.children.remove(ri);
            let merged = match (left, right) {
                (Node::Leaf(mut l), Node::Leaf(r)) => {
                    l.entries.extend(r.entries);
                    Node::Leaf(l)
                }
                (Node::Branch(mut l), Node::Branch(r)) => {
                    l.keys.push(sep);
                    l.keys.extend(r.keys);
                    l.children.extend(r.children);
                    Node::Branch(l)
                }
                _ => unreachable!("siblings share a level"),
            };
            let mut pieces = split_to_fit(merged, lz4).into_iter();
            let (_, first) = pieces.next().expect("at least one piece");
            self.dirty.insert(ld, Rc::new(first));
            let mut seps = Vec::new();
            let mut kids = Vec::new();
            for (i, (s, node)) in pieces.enumerate() {
                seps.push(s.expect("pieces after the first carry a separator"));
                let d = if i == 0 { rd } else { self.next_dirty_id() };
                self.dirty.insert(d, Rc::new(node));
                kids.push(Child::Dirty(d));
            }
            let Node::Branch(parent) = self.dirty_mut(parent_id) else {
                unreachable!()
            };
            parent.children[li] = Child::Dirty(ld);
            parent.keys.splice(li..li, seps);
            parent.children.splice(li + 1..li + 1, kids);
            if !node_fits(&self.dirty[&parent_id], lz4) {
                // Longer separators can overfill the parent; split it and stop here (a node
                // that was just split is not underfull).
                self.fix_overfull(t, &ids[..lvl], &idxs[..lvl - 1], Cut::Balanced);
                break;
            }
            lvl -= 1;
        }
        self.collapse_root(t);
        Ok(())
    }

    fn next_dirty_id(&mut self) -> u64 {
        let d = self.next_dirty;
        self.next_dirty += 1;
        d
    }

    /// Replaces a one-child root branch by its child, and an empty root leaf by nothing.
    fn collapse_root(&mut self, t: u8) {
        let ti = usize::from(t);
        while let Some(Child::Dirty(d)) = self.roots[ti] {
            match &*self.dirty[&d] {
                Node::Branch(b) if b.children.len() == 1 => {
                    self.roots[ti] = Some(b.children[0]);
                    self.dirty.remove(&d);
                }
                Node::Leaf(l) if l.entries.is_empty() => {
                    self.roots[ti] = None;
                    self.dirty.remove(&d);
                }
                _ => break,
            }
        }
    }

    /// Whether the page `id` holding `node` is the one the current tree `t` references.
    pub(super) async fn node_is_live(&mut self, t: u8, id: PageId, node: &Node) -> Result<bool> {
        let Some(root) = self.roots[usize::from(t)] else {
            return Ok(false);
        };
        if root == Child::Page(id) {
            return Ok(true);
        }
        let Some(key) = node.probe_key() else {
            // Only a root can be an empty leaf or a one-child branch.
            return Ok(false);
        };
        let level = node.level();
        let mut cur = root;
        loop {
            let n = self.node(t, cur).await?;
            match &*n {
                Node::Branch(b) if b.level > level => {
                    let c = b.children[child_index(&b.keys, key)];
                    if b.level == level + 1 {
                        return Ok(c == Child::Page(id));
                    }
                    cur = c;
                }
                _ => return Ok(false),
            }
        }
    }

    /// Whether the overflow run starting at `first` holds the current value of `key` in `t`.
    pub(super) async fn overflow_is_live(
        &mut self,
        t: u8,
        key: &[u8],
        first: PageId,
    ) -> Result<bool> {
        Ok(matches!(
            self.find(t, key).await?,
            Some(Entry { value: Value::Overflow(r), .. }) if r.first == first
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separator_is_shortest_prefix_between() {
        assert_eq!(separator(b"abc", b"abd"), b"abd".to_vec());
        assert_eq!(separator(b"abc", b"b"), b"b".to_vec());
        assert_eq!(separator(b"ab", b"abzz"), b"abz".to_vec());
        assert_eq!(separator(b"", b"a"), b"a".to_vec());
        assert_eq!(separator(b"apple", b"banana"), b"b".to_vec());
    }

    #[test]
    fn child_index_routes_equal_keys_right() {
        let keys = vec![b"b".to_vec(), b"d".to_vec()];
        assert_eq!(child_index(&keys, b"a"), 0);
        assert_eq!(child_index(&keys, b"b"), 1);
        assert_eq!(child_index(&keys, b"c"), 1);
        assert_eq!(child_index(&keys, b"d"), 2);
    }
}
