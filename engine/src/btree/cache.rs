//! The bounded cache of clean (durable, unmodified) decoded nodes, keyed by page id, evicting
//! the least recently used. Dirty nodes never live here (they sit in the tree's dirty arena
//! until a checkpoint writes them), so eviction can never lose data: an evicted node is read
//! back from the page log and verified by checksum on its next use.
//!
//! One cache serves a tree and all its [`Reader`](super::Reader)s (`Rc<RefCell<_>>`, borrowed
//! only between awaits): a page id names one content for as long as the page log is open, so
//! an entry is valid for every epoch that names it. It may hold pages no current tree
//! references (read by a reader of an older epoch); they age out like any other.
//!
//! Invariants: `bytes` is the sum of the entries' charges, a node being charged its page plus
//! [`ENTRY_OVERHEAD_BYTES`] per entry or child (a decoded node allocates every key and value
//! apart: a page of 50 small entries takes about twice its page size in memory); after
//! `insert`, `bytes <= capacity` unless one node alone exceeds it, in which case nothing stays
//! cached.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use super::page::{Node, PageId, PAGE_SIZE};

#[derive(Debug)]
pub struct PageCache {
    capacity_bytes: u64,
    tick: u64,
    /// page -> (node, tick of last use, charge).
    entries: HashMap<PageId, (Rc<Node>, u64, u64)>,
    bytes: u64,
    /// tick of last use -> page, oldest first.
    order: BTreeMap<u64, PageId>,
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
}

impl PageCache {
    pub fn new(capacity_bytes: u64) -> Self {
        PageCache {
            capacity_bytes,
            tick: 0,
            entries: HashMap::new(),
            bytes: 0,
            order: BTreeMap::new(),
            hits: 0,
            misses: 0,
            evictions: 0,
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Looks a page up, counting a hit or a miss, and marks it recently used.
    pub fn get(&mut self, id: PageId) -> Option<Rc<Node>> {
        self.tick += 1;
        let tick = self.tick;
        match self.entries.get_mut(&id) {
            Some((node, used, _)) => {
                self.order.remove(used);
                *used = tick;
                self.order.insert(tick, id);
                self.hits += 1;
                Some(node.clone())
            }
            None => {
                self.misses += 1;
                None
            }
        }
    }

    pub fn insert(&mut self, id: PageId, node: Rc<Node>) {
        self.tick += 1;
        let charge = charge(&node);
        self.bytes += charge;
        if let Some((_, used, old)) = self.entries.insert(id, (node, self.tick, charge)) {
            self.order.remove(&used);
            self.bytes -= old;
        }
        self.order.insert(self.tick, id);
        while self.bytes > self.capacity_bytes {
            let (_, victim) = self.order.pop_first().expect("order tracks every entry");
            let (_, _, c) = self.entries.remove(&victim).expect("ordered entries exist");
            self.bytes -= c;
            self.evictions += 1;
        }
        debug_assert_eq!(self.order.len(), self.entries.len());
    }

    /// Forgets a page that is no longer part of any live tree.
    pub fn remove(&mut self, id: PageId) {
        if let Some((_, used, c)) = self.entries.remove(&id) {
            self.order.remove(&used);
            self.bytes -= c;
        }
    }
}

/// Heap bytes one decoded entry or child costs besides its key and value bytes (which the
/// page's size covers): its slot in the node's vector and its allocations.
pub const ENTRY_OVERHEAD_BYTES: u64 = 80;

fn charge(node: &Node) -> u64 {
    let n = match node {
        Node::Leaf(l) => l.entries.len(),
        Node::Branch(b) => b.children.len(),
    };
    PAGE_SIZE as u64 + ENTRY_OVERHEAD_BYTES * n as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::btree::page::{Entry, Leaf, Value};

    #[test]
    fn cache_evicts_least_recently_used_within_bound() {
        let mut c = PageCache::new(2 * PAGE_SIZE as u64);
        let n = || Rc::new(Node::Leaf(Leaf::default()));
        c.insert(PageId::new(1, 0), n());
        c.insert(PageId::new(1, 1), n());
        assert!(c.get(PageId::new(1, 0)).is_some()); // 1:1 is now the oldest
        c.insert(PageId::new(1, 2), n());
        assert!(c.bytes() <= 2 * PAGE_SIZE as u64);
        assert!(c.get(PageId::new(1, 1)).is_none());
        assert!(c.get(PageId::new(1, 0)).is_some());
        assert!(c.get(PageId::new(1, 2)).is_some());
        assert_eq!((c.hits, c.misses, c.evictions), (3, 1, 1));
    }

    #[test]
    fn a_node_is_charged_its_page_and_its_entries() {
        let leaf = |n: usize| {
            let entries = (0..n)
                .map(|i| Entry {
                    key: vec![i as u8; 8],
                    value: Value::Inline(vec![0; 8]),
                })
                .collect();
            Rc::new(Node::Leaf(Leaf { entries }))
        };
        let mut c = PageCache::new(u64::MAX);
        c.insert(PageId::new(1, 0), leaf(50));
        assert_eq!(c.bytes(), PAGE_SIZE as u64 + 50 * ENTRY_OVERHEAD_BYTES);
        c.insert(PageId::new(1, 0), leaf(10)); // replaced: charged anew
        assert_eq!(c.bytes(), PAGE_SIZE as u64 + 10 * ENTRY_OVERHEAD_BYTES);
        c.remove(PageId::new(1, 0));
        assert_eq!(c.bytes(), 0);
        // A bound of two small pages holds one page of 50 entries, not two.
        let mut c = PageCache::new(2 * PAGE_SIZE as u64 + 50 * ENTRY_OVERHEAD_BYTES);
        c.insert(PageId::new(1, 1), leaf(50));
        c.insert(PageId::new(1, 2), leaf(50));
        assert_eq!(c.len(), 1);
    }
}
