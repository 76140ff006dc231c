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
//! Invariants: `bytes == entries * PAGE_SIZE` (every node is charged one page, its size on
//! disk and roughly its decoded size); after `insert`, `bytes <= capacity` unless the capacity
//! is below one page, in which case nothing stays cached.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use super::page::{Node, PageId, PAGE_SIZE};

#[derive(Debug)]
pub struct PageCache {
    capacity_bytes: u64,
    tick: u64,
    entries: HashMap<PageId, (Rc<Node>, u64)>,
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
            order: BTreeMap::new(),
            hits: 0,
            misses: 0,
            evictions: 0,
        }
    }

    pub fn bytes(&self) -> u64 {
        (self.entries.len() * PAGE_SIZE) as u64
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Looks a page up, counting a hit or a miss, and marks it recently used.
    pub fn get(&mut self, id: PageId) -> Option<Rc<Node>> {
        self.tick += 1;
        let tick = self.tick;
        match self.entries.get_mut(&id) {
            Some((node, used)) => {
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
        if let Some((_, used)) = self.entries.insert(id, (node, self.tick)) {
            self.order.remove(&used);
        }
        self.order.insert(self.tick, id);
        while self.bytes() > self.capacity_bytes {
            let (_, victim) = self.order.pop_first().expect("order tracks every entry");
            self.entries.remove(&victim);
            self.evictions += 1;
        }
        debug_assert_eq!(self.order.len(), self.entries.len());
    }

    /// Forgets a page that is no longer part of any live tree.
    pub fn remove(&mut self, id: PageId) {
        if let Some((_, used)) = self.entries.remove(&id) {
            self.order.remove(&used);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::btree::page::Leaf;

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
}
