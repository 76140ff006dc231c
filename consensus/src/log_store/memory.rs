//! [`MemLog`]: the in-memory [`LogBackend`]. Everything is "durable" at once, which makes it the
//! reference the WAL backend is compared with, and the log of a shard until the WAL is wired
//! in. Invariant: `entries[i].index == prev.index + 1 + i` (no holes).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::ops::Range;
use std::rc::Rc;

use super::{LocalFuture, LogBackend, LogPosition, LogRecord, StoredVote};

#[derive(Default)]
struct Inner {
    prev: LogPosition,
    entries: VecDeque<LogRecord>,
    vote: Option<StoredVote>,
}

#[derive(Clone, Default)]
pub struct MemLog {
    inner: Rc<RefCell<Inner>>,
}

impl MemLog {
    pub fn new() -> MemLog {
        MemLog::default()
    }
}

fn ready<T: 'static>(value: T) -> LocalFuture<T> {
    Box::pin(std::future::ready(value))
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

impl Inner {
    fn last(&self) -> LogPosition {
        self.entries.back().map_or(self.prev, |r| LogPosition {
            term: r.term,
            index: r.index,
        })
    }
}

impl LogBackend for MemLog {
    fn prev(&self) -> LogPosition {
        self.inner.borrow().prev
    }

    fn last(&self) -> LogPosition {
        self.inner.borrow().last()
    }

    fn vote(&self) -> Option<StoredVote> {
        self.inner.borrow().vote
    }

    fn append(&self, records: Vec<LogRecord>) -> LocalFuture<io::Result<()>> {
        let mut inner = self.inner.borrow_mut();
        let first = inner.last().index + 1;
        for (expected, r) in (first..).zip(&records) {
            if r.index != expected {
                return ready(Err(invalid(format!(
                    "append of index {} where {expected} was next",
                    r.index
                ))));
            }
        }
        inner.entries.extend(records);
        ready(Ok(()))
    }

    fn truncate_after(&self, index: u64) -> LocalFuture<io::Result<()>> {
        let mut inner = self.inner.borrow_mut();
        if index < inner.prev.index || index > inner.last().index {
            return ready(Err(invalid(format!(
                "truncate after {index} outside {}..={}",
                inner.prev.index,
                inner.last().index
            ))));
        }
        let keep = (index - inner.prev.index) as usize;
        inner.entries.truncate(keep);
        ready(Ok(()))
    }

    fn purge_upto(&self, upto: LogPosition) -> LocalFuture<io::Result<()>> {
        let mut inner = self.inner.borrow_mut();
        if upto.index <= inner.prev.index {
            return ready(Ok(()));
        }
        if upto.index >= inner.last().index {
            inner.entries.clear();
        } else {
            let drop = (upto.index - inner.prev.index) as usize;
            inner.entries.drain(..drop);
        }
        inner.prev = upto;
        ready(Ok(()))
    }

    fn read(&self, range: Range<u64>) -> LocalFuture<io::Result<Vec<LogRecord>>> {
        let inner = self.inner.borrow();
        let first = inner.prev.index + 1;
        let last = inner.last().index;
        if range.start < first || range.end > last + 1 {
            return ready(Err(invalid(format!(
                "read of {range:?} outside {first}..={last}"
            ))));
        }
        let from = (range.start - first) as usize;
        let to = (range.end.max(range.start) - first) as usize;
        ready(Ok(inner.entries.range(from..to).cloned().collect()))
    }

    fn save_vote(&self, vote: StoredVote) -> LocalFuture<io::Result<()>> {
        self.inner.borrow_mut().vote = Some(vote);
        ready(Ok(()))
    }
}

#[cfg(test)]
pub(crate) mod conformance {
    //! The contract of [`LogBackend`], checked against an implementation. Run it on every
    //! backend (the WAL's adapter joins when it is wired in).

    use bytes::Bytes;
    use futures::executor::block_on;

    use super::*;

    fn rec(term: u64, index: u64) -> LogRecord {
        LogRecord {
            term,
            index,
            kind: 2,
            payload: Bytes::from(format!("{term}/{index}")),
        }
    }

    fn indexes(b: &impl LogBackend, range: Range<u64>) -> Vec<(u64, u64)> {
        block_on(b.read(range))
            .expect("read")
            .into_iter()
            .map(|r| (r.term, r.index))
            .collect()
    }

    pub(crate) fn check(b: impl LogBackend) {
        assert_eq!(b.last(), LogPosition::default());
        assert_eq!(b.vote(), None);
        block_on(b.append((1..=5).map(|i| rec(1, i)).collect())).expect("append");
        assert_eq!(b.last(), LogPosition { term: 1, index: 5 });
        assert_eq!(indexes(&b, 2..4), vec![(1, 2), (1, 3)]);
        let got = block_on(b.read(1..2)).expect("read");
        assert_eq!(got, vec![rec(1, 1)], "payload comes back as written");

        // A hole is refused and changes nothing.
        assert!(block_on(b.append(vec![rec(1, 7)])).is_err());
        assert_eq!(b.last().index, 5);

        // Raft's conflict rule, then a new term's entries.
        block_on(b.truncate_after(3)).expect("truncate");
        assert_eq!(b.last(), LogPosition { term: 1, index: 3 });
        block_on(b.append(vec![rec(2, 4), rec(2, 5)])).expect("append");
        assert_eq!(indexes(&b, 3..6), vec![(1, 3), (2, 4), (2, 5)]);

        // Purge keeps the rest readable. A backend may keep purged entries a while (the WAL
        // drops whole segments only), so `prev` moves at most up to the purge point.
        block_on(b.purge_upto(LogPosition { term: 1, index: 2 })).expect("purge");
        assert!(b.prev().index <= 2);
        assert_eq!(indexes(&b, 3..6), vec![(1, 3), (2, 4), (2, 5)]);

        // Purge past the end (a snapshot was installed): the log restarts after it.
        block_on(b.purge_upto(LogPosition { term: 3, index: 9 })).expect("purge");
        assert_eq!(b.prev(), LogPosition { term: 3, index: 9 });
        assert_eq!(b.last(), LogPosition { term: 3, index: 9 });
        block_on(b.append(vec![rec(3, 10)])).expect("append after reset");
        assert_eq!(indexes(&b, 10..11), vec![(3, 10)]);

        let vote = StoredVote {
            term: 3,
            voted_for: Some(1),
            committed: true,
        };
        block_on(b.save_vote(vote)).expect("vote");
        assert_eq!(b.vote(), Some(vote));
    }

    #[test]
    fn mem_log_keeps_the_contract() {
        let log = MemLog::new();
        check(log.clone());
        // The in-memory log drops purged entries at once.
        block_on(log.purge_upto(LogPosition { term: 3, index: 10 })).expect("purge");
        assert_eq!(log.prev(), LogPosition { term: 3, index: 10 });
        assert!(
            block_on(log.read(10..11)).is_err(),
            "purged entries are gone"
        );
    }
}
