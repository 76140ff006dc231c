//! `LogState`: the logical Raft log a record stream describes, sans-I/O. Recovery replays the
//! records of every segment into it; the live WAL applies the same operations as callers
//! append, so both always agree on what the log is.
//!
//! The log is `prev` (the log id just before the first retained entry: the last purged one,
//! or `(0, 0)`) followed by contiguous entries. Two operations change it:
//! - `push`: an entry whose index is `last + 1` and whose term is not below the last term;
//! - `cut_to(id)`: "the log now ends at `id`" (a tail marker). Inside the retained range it
//!   truncates (Raft's conflict rule: entries after `id.index` go). Outside it (below `prev`,
//!   or past the end, as after installing a snapshot) nothing is retained and `prev = id`.
//!
//! Example: entries 1..=5 of term 1, `cut_to((3, 1))`, push `4@2` → log 1@1 2@1 3@1 4@2.
//! `cut_to((9, 3))` next → empty log, `prev = 9@3`, next index 10.
//!
//! Invariants: `entries[i]` has index `prev.index + 1 + i`; terms never decrease along the
//! log, starting from `prev.term`.

use std::collections::VecDeque;

use super::{LogId, LogIndex, Term};

/// One retained entry: its term, the caller's kind, and where its record is (`L`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot<L> {
    pub term: Term,
    pub kind: u8,
    pub loc: L,
}

/// Why a record cannot extend the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogError {
    NonContiguous {
        expected: LogIndex,
        found: LogIndex,
    },
    TermRegressed {
        last: Term,
        found: Term,
    },
    /// A marker ends the log at an entry that exists with another term.
    MarkerTermMismatch {
        index: LogIndex,
        log_term: Term,
        marker_term: Term,
    },
}

impl std::fmt::Display for LogError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogError::NonContiguous { expected, found } => {
                write!(f, "entry index {found} where {expected} was expected")
            }
            LogError::TermRegressed { last, found } => {
                write!(f, "entry term {found} below the previous term {last}")
            }
            LogError::MarkerTermMismatch {
                index,
                log_term,
                marker_term,
            } => write!(
                f,
                "tail marker at index {index} says term {marker_term}, the log has term {log_term}"
            ),
        }
    }
}

#[derive(Debug, Clone)]
pub struct LogState<L> {
    prev: LogId,
    entries: VecDeque<Slot<L>>,
}

impl<L> LogState<L> {
    pub fn new(prev: LogId) -> Self {
        LogState {
            prev,
            entries: VecDeque::new(),
        }
    }

    pub fn prev(&self) -> LogId {
        self.prev
    }

    pub fn first_index(&self) -> LogIndex {
        LogIndex(self.prev.index.0 + 1)
    }

    pub fn last(&self) -> LogId {
        match self.entries.back() {
            Some(s) => LogId {
                term: s.term,
                index: LogIndex(self.prev.index.0 + self.entries.len() as u64),
            },
            None => self.prev,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn pos(&self, index: LogIndex) -> Option<usize> {
        let off = index.0.checked_sub(self.first_index().0)?;
        (off < self.entries.len() as u64).then_some(off as usize)
    }

    pub fn get(&self, index: LogIndex) -> Option<&Slot<L>> {
        self.pos(index).map(|p| &self.entries[p])
    }

    pub fn get_mut(&mut self, index: LogIndex) -> Option<&mut Slot<L>> {
        self.pos(index).map(|p| &mut self.entries[p])
    }

    /// The term of `index` if it is `prev` or retained.
    pub fn term_of(&self, index: LogIndex) -> Option<Term> {
        if index == self.prev.index {
            return Some(self.prev.term);
        }
        self.get(index).map(|s| s.term)
    }

    /// Checks that `(index, term)` may be pushed next, without changing anything.
    pub fn check_push(&self, index: LogIndex, term: Term) -> Result<(), LogError> {
        let last = self.last();
        let expected = LogIndex(last.index.0 + 1);
        if index != expected {
            return Err(LogError::NonContiguous {
                expected,
                found: index,
            });
        }
        if term < last.term {
            return Err(LogError::TermRegressed {
                last: last.term,
                found: term,
            });
        }
        Ok(())
    }

    pub fn push(&mut self, index: LogIndex, term: Term, kind: u8, loc: L) -> Result<(), LogError> {
        self.check_push(index, term)?;
        self.entries.push_back(Slot { term, kind, loc });
        Ok(())
    }

    /// Checks a marker against the retained entries without changing anything.
    pub fn check_cut(&self, id: LogId) -> Result<(), LogError> {
        match self.term_of(id.index) {
            Some(t) if t != id.term => Err(LogError::MarkerTermMismatch {
                index: id.index,
                log_term: t,
                marker_term: id.term,
            }),
            _ => Ok(()),
        }
    }

    /// The log now ends at `id` (see the module comment).
    pub fn cut_to(&mut self, id: LogId) -> Result<(), LogError> {
        self.check_cut(id)?;
        if id.index < self.prev.index || id.index > self.last().index {
            self.entries.clear();
            self.prev = id;
        } else {
            let keep = (id.index.0 - self.prev.index.0) as usize;
            self.entries.truncate(keep);
        }
        Ok(())
    }

    /// Drops the first `n` retained entries (they were purged); `prev` becomes the last one.
    pub fn drop_front(&mut self, n: usize) {
        assert!(n <= self.entries.len(), "drop_front past the end");
        if n == 0 {
            return;
        }
        let last_dropped = self.entries[n - 1].term;
        self.entries.drain(..n);
        self.prev = LogId {
            term: last_dropped,
            index: LogIndex(self.prev.index.0 + n as u64),
        };
    }

    /// Retained entries from the front, with their indexes.
    pub fn iter(&self) -> impl Iterator<Item = (LogIndex, &Slot<L>)> {
        let first = self.first_index().0;
        self.entries
            .iter()
            .enumerate()
            .map(move |(i, s)| (LogIndex(first + i as u64), s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(index: u64, term: u64) -> LogId {
        LogId {
            index: LogIndex(index),
            term: Term(term),
        }
    }

    fn log_with(terms: &[u64]) -> LogState<()> {
        let mut l = LogState::new(id(0, 0));
        for (i, &t) in terms.iter().enumerate() {
            l.push(LogIndex(i as u64 + 1), Term(t), 1, ()).unwrap();
        }
        l
    }

    #[test]
    fn push_requires_contiguity_and_monotonic_terms() {
        let mut l = log_with(&[1, 1, 2]);
        assert_eq!(l.last(), id(3, 2));
        assert_eq!(
            l.push(LogIndex(5), Term(2), 1, ()),
            Err(LogError::NonContiguous {
                expected: LogIndex(4),
                found: LogIndex(5)
            })
        );
        assert_eq!(
            l.push(LogIndex(4), Term(1), 1, ()),
            Err(LogError::TermRegressed {
                last: Term(2),
                found: Term(1)
            })
        );
        assert_eq!(l.len(), 3);
    }

    #[test]
    fn cut_inside_truncates_the_conflicting_suffix() {
        let mut l = log_with(&[1, 1, 1, 1, 1]);
        l.cut_to(id(3, 1)).unwrap();
        assert_eq!(l.last(), id(3, 1));
        l.push(LogIndex(4), Term(2), 1, ()).unwrap();
        assert_eq!(l.last(), id(4, 2));
        assert_eq!(l.first_index(), LogIndex(1));
        // The worked example of the module comment, continued: a cut past the end resets.
        l.cut_to(id(9, 3)).unwrap();
        assert!(l.is_empty());
        assert_eq!(
            (l.prev(), l.first_index(), l.last()),
            (id(9, 3), LogIndex(10), id(9, 3))
        );
    }

    #[test]
    fn cut_checks_the_term_of_a_retained_entry() {
        let mut l = log_with(&[1, 2]);
        assert!(matches!(
            l.cut_to(id(1, 2)),
            Err(LogError::MarkerTermMismatch { .. })
        ));
        l.cut_to(id(0, 0)).unwrap();
        assert!(l.is_empty());
        assert_eq!(l.last(), id(0, 0));
    }

    #[test]
    fn cut_below_prev_forgets_everything() {
        let mut l = log_with(&[1, 1, 1, 1]);
        l.drop_front(2);
        assert_eq!((l.prev(), l.first_index()), (id(2, 1), LogIndex(3)));
        l.cut_to(id(1, 1)).unwrap();
        assert!(l.is_empty());
        assert_eq!(l.last(), id(1, 1));
        assert_eq!(l.first_index(), LogIndex(2));
    }

    #[test]
    fn drop_front_moves_prev() {
        let mut l = log_with(&[1, 2, 3]);
        l.drop_front(2);
        assert_eq!(l.prev(), id(2, 2));
        assert_eq!(l.get(LogIndex(3)).map(|s| s.term), Some(Term(3)));
        assert!(l.get(LogIndex(2)).is_none());
        assert_eq!(l.term_of(LogIndex(2)), Some(Term(2)));
        let idx: Vec<u64> = l.iter().map(|(i, _)| i.0).collect();
        assert_eq!(idx, [3]);
    }
}
