//! The revisions of one key, grouped in generations, as etcd's `keyIndex` does.
//!
//! A generation is one life of the key: it starts with the put that creates the key and ends
//! with the tombstone that deletes it; a put after a delete starts a new generation. The last
//! generation is open (no tombstone) and empty while the key does not exist.
//!
//! Worked history (revisions written `main.sub`):
//!
//! ```text
//! put a @2.0, put a @3.0, delete a @4.0, put a @6.0, put a @7.0
//!   generations: {2.0, 3.0, 4.0(t)} {6.0, 7.0}
//!   get(3) = 3.0   get(4) = none (deleted at 4)   get(5) = none   get(6) = 6.0
//! compact(3): keep the newest revision <= 3 of the generation that is still alive at 3:
//!   generations: {3.0, 4.0(t)} {6.0, 7.0}          kept: 3.0
//! compact(5): the first generation ended (4.0(t) <= 5) so it goes, tombstone included:
//!   generations: {6.0, 7.0}                        kept: none
//! then delete a @8.0 and compact(8):
//!   generations: {}  -> the key index is empty and is dropped from the tree
//! ```
//!
//! Invariants: revisions strictly increase across the whole index; every generation but the
//! last is non-empty and ends with its tombstone; the last generation has no tombstone.

use super::Rev;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Generation {
    /// Revisions in increasing order; for a closed generation the last is the tombstone.
    revs: Vec<Rev>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct KeyIndex {
    generations: Vec<Generation>,
}

impl KeyIndex {
    pub(super) fn new() -> KeyIndex {
        KeyIndex {
            generations: vec![Generation::default()],
        }
    }

    fn last_rev(&self) -> Option<Rev> {
        self.generations
            .iter()
            .rev()
            .find_map(|g| g.revs.last().copied())
    }

    /// No revision at all: the index can be dropped.
    pub(super) fn is_empty(&self) -> bool {
        self.generations.iter().all(|g| g.revs.is_empty())
    }

    /// The key exists now (its open generation has a put).
    pub(super) fn is_live(&self) -> bool {
        self.generations.last().is_some_and(|g| !g.revs.is_empty())
    }

    pub(super) fn put(&mut self, rev: Rev) {
        assert!(
            self.last_rev().is_none_or(|last| rev > last),
            "revisions must increase"
        );
        self.generations
            .last_mut()
            .expect("always one generation")
            .revs
            .push(rev);
    }

    /// Appends the tombstone and opens a new, empty generation. The key must be live.
    pub(super) fn tombstone(&mut self, rev: Rev) {
        assert!(self.is_live(), "tombstone on a key that does not exist");
        self.put(rev);
        self.generations.push(Generation::default());
    }

    /// Undoes the last `put` or `tombstone`, which must have been at `rev` (txn rollback).
    pub(super) fn undo(&mut self, rev: Rev) {
        let last = self.generations.len() - 1;
        if self.generations[last].revs.is_empty() && last > 0 {
            // The last operation was a tombstone: reopen the generation it closed.
            self.generations.pop();
        }
        let popped = self.generations.last_mut().and_then(|g| g.revs.pop());
        assert_eq!(popped, Some(rev), "undo must reverse the newest revision");
    }

    /// The revision holding the key's value as of store revision `at`, or `None` when the key
    /// did not exist then (never created, deleted, or not yet re-created).
    pub(super) fn get(&self, at: i64) -> Option<Rev> {
        let last = self.generations.len() - 1;
        for (i, g) in self.generations.iter().enumerate().rev() {
            let (Some(first), Some(end)) = (g.revs.first(), g.revs.last()) else {
                continue;
            };
            if i != last && end.main <= at {
                // This generation had already ended (its tombstone) at `at`.
                return None;
            }
            if first.main <= at {
                return g.revs.iter().rev().find(|r| r.main <= at).copied();
            }
        }
        None
    }

    /// [`KeyIndex::compact`], returning the revisions it dropped.
    pub(super) fn compact_dropping(&mut self, at: i64) -> Vec<Rev> {
        let before: Vec<Rev> = self.all_revs().take_while(|r| r.main <= at).collect();
        self.compact(at);
        let first = self.all_revs().next();
        before.into_iter().filter(|r| Some(*r) != first).collect()
    }

    /// Number of revisions held.
    pub(super) fn len(&self) -> usize {
        self.generations.iter().map(|g| g.revs.len()).sum()
    }

    /// Every revision held, oldest first.
    pub(super) fn all_revs(&self) -> impl Iterator<Item = Rev> + '_ {
        self.generations.iter().flat_map(|g| g.revs.iter().copied())
    }

    /// The image form: the generation count, then per generation its revision count and its
    /// revisions (main, sub), all little-endian u32 / i64.
    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.generations.len() as u32).to_le_bytes());
        for g in &self.generations {
            out.extend_from_slice(&(g.revs.len() as u32).to_le_bytes());
            for r in &g.revs {
                out.extend_from_slice(&r.main.to_le_bytes());
                out.extend_from_slice(&r.sub.to_le_bytes());
            }
        }
    }

    /// [`KeyIndex::encode`] of this index as it was when the store was at revision `at`,
    /// given that nothing compacted it since: revisions after `at` are left out, so a
    /// generation whose tombstone came later is the open one again and any later generation
    /// is not there yet. `false` (nothing written) when the key had no revision then.
    pub(super) fn encode_at(&self, at: i64, out: &mut Vec<u8>) -> bool {
        let mut kept: Vec<&[Rev]> = Vec::with_capacity(self.generations.len());
        let last = self.generations.len() - 1;
        for (i, g) in self.generations.iter().enumerate() {
            let n = g.revs.partition_point(|r| r.main <= at);
            kept.push(&g.revs[..n]);
            // The open generation, or one whose tombstone came after `at`: open then.
            if i == last || n < g.revs.len() {
                break;
            }
        }
        if kept.iter().all(|g| g.is_empty()) {
            return false;
        }
        out.extend_from_slice(&(kept.len() as u32).to_le_bytes());
        for revs in kept {
            out.extend_from_slice(&(revs.len() as u32).to_le_bytes());
            for r in revs {
                out.extend_from_slice(&r.main.to_le_bytes());
                out.extend_from_slice(&r.sub.to_le_bytes());
            }
        }
        true
    }

    /// Reads [`KeyIndex::encode`]'s form, checking the invariants of the module comment.
    pub(super) fn decode(mut b: &[u8]) -> Result<KeyIndex, &'static str> {
        fn take<const N: usize>(b: &mut &[u8]) -> Result<[u8; N], &'static str> {
            if b.len() < N {
                return Err("truncated");
            }
            let (head, rest) = b.split_at(N);
            *b = rest;
            Ok(head.try_into().expect("N bytes"))
        }
        let n = u32::from_le_bytes(take(&mut b)?) as usize;
        if n == 0 || n > b.len() / 4 + 1 {
            return Err("bad generation count");
        }
        let mut generations = Vec::with_capacity(n);
        let mut last: Option<Rev> = None;
        for i in 0..n {
            let m = u32::from_le_bytes(take(&mut b)?) as usize;
            if m > b.len() / 16 {
                return Err("bad revision count");
            }
            if m == 0 && i + 1 != n {
                return Err("empty closed generation");
            }
            let mut revs = Vec::with_capacity(m);
            for _ in 0..m {
                let main = i64::from_le_bytes(take(&mut b)?);
                let sub = i64::from_le_bytes(take(&mut b)?);
                let r = Rev { main, sub };
                if last.is_some_and(|l| r <= l) {
                    return Err("revisions out of order");
                }
                last = Some(r);
                revs.push(r);
            }
            generations.push(Generation { revs });
        }
        if !b.is_empty() {
            return Err("trailing bytes");
        }
        let ki = KeyIndex { generations };
        if ki.is_empty() {
            return Err("no revision");
        }
        Ok(ki)
    }

    /// Every revision, oldest first, with whether it is a tombstone (invariant checks).
    #[cfg(test)]
    pub(super) fn revisions(&self) -> impl Iterator<Item = (Rev, bool)> + '_ {
        let last = self.generations.len() - 1;
        self.generations.iter().enumerate().flat_map(move |(i, g)| {
            let n = g.revs.len();
            g.revs
                .iter()
                .enumerate()
                .map(move |(j, r)| (*r, i != last && j + 1 == n))
        })
    }

    /// Drops every revision with `main <= at` except the newest such revision of a generation
    /// still alive at `at`, which is returned (it must stay readable at `at`).
    pub(super) fn compact(&mut self, at: i64) -> Option<Rev> {
        let last = self.generations.len() - 1;
        // First generation whose tombstone is after `at`, or the open one.
        let mut gi = 0;
        while gi < last {
            let tomb = self.generations[gi]
                .revs
                .last()
                .expect("closed generations are non-empty");
            if tomb.main > at {
                break;
            }
            gi += 1;
        }
        let g = &mut self.generations[gi];
        let kept = g.revs.iter().rposition(|r| r.main <= at);
        if let Some(i) = kept {
            g.revs.drain(..i);
        }
        let kept = kept.map(|_| g.revs[0]);
        self.generations.drain(..gi);
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(main: i64) -> Rev {
        Rev { main, sub: 0 }
    }

    /// The history of the module comment.
    fn history() -> KeyIndex {
        let mut ki = KeyIndex::new();
        ki.put(r(2));
        ki.put(r(3));
        ki.tombstone(r(4));
        ki.put(r(6));
        ki.put(r(7));
        ki
    }

    #[test]
    fn get_follows_generations() {
        let ki = history();
        assert_eq!(ki.get(1), None);
        assert_eq!(ki.get(2), Some(r(2)));
        assert_eq!(ki.get(3), Some(r(3)));
        assert_eq!(ki.get(4), None);
        assert_eq!(ki.get(5), None);
        assert_eq!(ki.get(6), Some(r(6)));
        assert_eq!(ki.get(100), Some(r(7)));
        assert!(ki.is_live());
        let tombs: Vec<_> = ki.revisions().filter(|(_, t)| *t).map(|(r, _)| r).collect();
        assert_eq!(tombs, vec![r(4)]);
    }

    #[test]
    fn compact_keeps_newest_live_revision_and_drops_ended_generations() {
        let mut ki = history();
        assert_eq!(ki.compact(1), None);
        assert_eq!(ki, history());
        assert_eq!(ki.compact(3), Some(r(3)));
        assert_eq!(
            ki.revisions().map(|(r, _)| r.main).collect::<Vec<_>>(),
            vec![3, 4, 6, 7]
        );
        assert_eq!(ki.get(3), Some(r(3)));
        // Compacting exactly at the tombstone drops the whole generation, tombstone included.
        assert_eq!(ki.compact(4), None);
        assert_eq!(
            ki.revisions().map(|(r, _)| r.main).collect::<Vec<_>>(),
            vec![6, 7]
        );
        assert_eq!(ki.compact(6), Some(r(6)));
        ki.tombstone(r(8));
        assert!(!ki.is_live());
        assert_eq!(ki.compact(8), None);
        assert!(ki.is_empty());
    }

    #[test]
    fn compact_before_recreation_keeps_nothing_but_later_generation() {
        let mut ki = history();
        assert_eq!(ki.compact(5), None);
        assert_eq!(ki.get(5), None);
        assert_eq!(ki.get(6), Some(r(6)));
        assert_eq!(
            ki.revisions().map(|(r, _)| r.main).collect::<Vec<_>>(),
            vec![6, 7]
        );
    }

    #[test]
    fn delete_and_recreate_in_one_revision_uses_sub_revisions() {
        let mut ki = KeyIndex::new();
        ki.put(r(2));
        ki.tombstone(Rev { main: 3, sub: 0 });
        ki.put(Rev { main: 3, sub: 1 });
        assert_eq!(ki.get(2), Some(r(2)));
        assert_eq!(ki.get(3), Some(Rev { main: 3, sub: 1 }));
    }

    #[test]
    fn undo_reverses_put_and_tombstone() {
        let mut ki = history();
        ki.tombstone(r(8));
        ki.undo(r(8));
        assert_eq!(ki, history());
        ki.put(r(9));
        ki.undo(r(9));
        assert_eq!(ki, history());
        let mut fresh = KeyIndex::new();
        fresh.put(r(2));
        fresh.undo(r(2));
        assert!(fresh.is_empty());
    }

    #[test]
    fn encoding_round_trips_and_refuses_damage() {
        let mut ki = history();
        ki.tombstone(r(8));
        let mut b = Vec::new();
        ki.encode(&mut b);
        assert_eq!(KeyIndex::decode(&b), Ok(ki.clone()));
        assert_eq!(KeyIndex::decode(&b[..b.len() - 1]), Err("truncated"));
        let mut extra = b.clone();
        extra.push(0);
        assert_eq!(KeyIndex::decode(&extra), Err("trailing bytes"));
        // Swap two revisions: out of order.
        let mut swapped = b.clone();
        swapped[8..16].copy_from_slice(&3i64.to_le_bytes());
        swapped[24..32].copy_from_slice(&2i64.to_le_bytes());
        assert_eq!(KeyIndex::decode(&swapped), Err("revisions out of order"));
        let mut empty = Vec::new();
        KeyIndex::new().encode(&mut empty);
        assert_eq!(KeyIndex::decode(&empty), Err("no revision"));
    }

    fn enc(ki: &KeyIndex) -> Option<Vec<u8>> {
        let mut v = Vec::new();
        (!ki.is_empty()).then(|| {
            ki.encode(&mut v);
            v
        })
    }

    /// Random histories of puts, tombstones (some in one revision with a put, as a txn does)
    /// and compactions: the index encoded as of any revision since the last compaction equals
    /// the index encoded back then.
    #[test]
    fn encode_at_is_the_index_as_it_was() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % n
        };
        for _ in 0..200 {
            let mut ki = KeyIndex::new();
            // (store revision, the index's encoding once that revision was written)
            let mut then: Vec<(i64, Option<Vec<u8>>)> = vec![(0, None)];
            let mut compacted_at = 0;
            for main in 1..60 {
                match next(10) {
                    0..=4 => ki.put(r(main)),
                    5 | 6 if ki.is_live() => ki.tombstone(r(main)),
                    7 if ki.is_live() => {
                        ki.tombstone(r(main));
                        ki.put(Rev { main, sub: 1 });
                    }
                    8 => {
                        // A compaction changes the index without a revision of its own:
                        // what it was before is gone, so check from here on.
                        ki.compact((main - 1 - next(8) as i64).max(0));
                        compacted_at = main;
                    }
                    _ => {}
                }
                then.push((main, enc(&ki)));
                for (at, want) in then.iter().filter(|(at, _)| *at >= compacted_at) {
                    let mut got = Vec::new();
                    let wrote = ki.encode_at(*at, &mut got);
                    assert_eq!(wrote.then_some(got), *want, "at {at}, now {main}: {ki:?}");
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "revisions must increase")]
    fn put_rejects_older_revision() {
        let mut ki = history();
        ki.put(r(5));
    }
}
