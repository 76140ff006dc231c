//! Where a write's time goes inside its shard: the instants a leader's write passes on its way
//! (command received, entries handed to the log, log durable, apply started, answered) and one
//! histogram per stage between two of them, in microseconds, since the shard started.
//!
//! ```text
//! received ──propose──> submitted ──log──> durable ──commit──> applying ──apply──> answered
//! (Core::propose)   (LogStore::append)  (WAL synced)   (apply step starts)   (responder ran)
//! ```
//! - `propose`: from the command leaving the shard's queue to openraft handing its entry to
//!   the log store (openraft's API channel and its core task);
//! - `log`: the WAL's group commit (waiting for the flush in flight, the write, the
//!   fdatasync), until the append's completion is reported;
//! - `commit`: openraft learning the entry is durable, committing it and passing it to the
//!   state-machine task;
//! - `apply`: making the data resident, applying, notifying watchers, sending the answer.
//!
//! Invariants: bounded (at most [`BATCHES_MAX`] appended batches wait for their apply; older
//! ones are dropped and their entries are simply not timed); every entry is timed at most
//! once; an entry whose batch is unknown (appended before the shard started, or dropped) is
//! not timed. Timing never changes what the shard does.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Instant;

use crate::stats::Histogram;

/// Appended batches remembered until their last entry is applied.
pub const BATCHES_MAX: usize = 1024;

/// One log append: backend indexes `first..=last`, when it was handed to the log and when the
/// log reported it durable.
#[derive(Clone, Copy, Debug)]
struct Batch {
    first: u64,
    last: u64,
    submitted: Instant,
    durable: Option<Instant>,
}

/// The instants of the entry being applied, left for its responder.
#[derive(Clone, Copy, Debug)]
pub struct EntryTimes {
    pub submitted: Instant,
    pub durable: Instant,
    pub applying: Instant,
}

/// Per-stage write latencies, microseconds (p50, p99, p99.9 of each stage).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StageFigures {
    /// Writes timed through every stage.
    pub writes: u64,
    pub propose_us: [u64; 3],
    pub log_us: [u64; 3],
    pub commit_us: [u64; 3],
    pub apply_us: [u64; 3],
}

#[derive(Default)]
pub struct WriteStages {
    batches: VecDeque<Batch>,
    current: Option<EntryTimes>,
    propose: Histogram,
    log: Histogram,
    commit: Histogram,
    apply: Histogram,
}

pub type Stages = Rc<RefCell<WriteStages>>;

fn micros(from: Instant, to: Instant) -> u64 {
    u64::try_from(to.saturating_duration_since(from).as_micros()).unwrap_or(u64::MAX)
}

fn quantiles(h: &Histogram) -> [u64; 3] {
    [h.quantile(0.5), h.quantile(0.99), h.quantile(0.999)]
}

impl WriteStages {
    pub fn new_shared() -> Stages {
        Rc::new(RefCell::new(WriteStages::default()))
    }

    /// Entries `first..=last` (backend indexes) were handed to the log now.
    pub fn submitted(&mut self, first: u64, last: u64, now: Instant) {
        if first > last {
            return;
        }
        if self.batches.len() == BATCHES_MAX {
            self.batches.pop_front();
        }
        self.batches.push_back(Batch {
            first,
            last,
            submitted: now,
            durable: None,
        });
    }

    /// Every entry up to `last` is durable now.
    pub fn durable(&mut self, last: u64, now: Instant) {
        for b in self.batches.iter_mut().filter(|b| b.last <= last) {
            b.durable.get_or_insert(now);
        }
    }

    /// The entry at backend index `index` starts its apply now; its times wait for
    /// [`WriteStages::answered`]. Batches applied to their end are forgotten.
    pub fn applying(&mut self, index: u64, now: Instant) {
        while self.batches.front().is_some_and(|b| b.last < index) {
            self.batches.pop_front();
        }
        self.current = self
            .batches
            .front()
            .filter(|b| b.first <= index)
            .and_then(|b| {
                Some(EntryTimes {
                    submitted: b.submitted,
                    durable: b.durable?,
                    applying: now,
                })
            });
    }

    /// The write received at `received` is answered now (called by its responder, right
    /// after the apply step set its entry's times).
    pub fn answered(&mut self, received: Instant, now: Instant) {
        let Some(t) = self.current.take() else {
            return;
        };
        self.propose.record(micros(received, t.submitted));
        self.log.record(micros(t.submitted, t.durable));
        self.commit.record(micros(t.durable, t.applying));
        self.apply.record(micros(t.applying, now));
    }

    pub fn figures(&self) -> StageFigures {
        StageFigures {
            writes: self.apply.count(),
            propose_us: quantiles(&self.propose),
            log_us: quantiles(&self.log),
            commit_us: quantiles(&self.commit),
            apply_us: quantiles(&self.apply),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn an_entry_is_timed_through_each_stage_once() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut s = WriteStages::default();
        s.submitted(5, 6, at(1));
        s.submitted(7, 7, at(2));
        s.durable(6, at(4));
        s.durable(7, at(5));
        s.applying(6, at(7));
        s.answered(t0, at(8));
        // Answering again without an apply in between times nothing.
        s.answered(t0, at(9));
        s.applying(7, at(10));
        s.answered(at(1), at(10));
        let f = s.figures();
        assert_eq!(f.writes, 2);
        // Entry 6: propose 1 ms, log 3 ms, commit 3 ms, apply 1 ms.
        // Entry 7: propose 1 ms, log 3 ms, commit 5 ms, apply 0 ms.
        assert_eq!(f.propose_us[2] / 1000, 1);
        assert_eq!(f.log_us[0] / 1000, 3);
        assert_eq!(f.commit_us[2] / 1000, 5);
        assert_eq!(f.apply_us[2] / 1000, 1);
    }

    #[test]
    fn unknown_or_not_durable_entries_are_not_timed_and_batches_stay_bounded() {
        let t0 = Instant::now();
        let mut s = WriteStages::default();
        s.applying(3, t0);
        s.answered(t0, t0);
        s.submitted(10, 10, t0);
        s.applying(10, t0);
        s.answered(t0, t0);
        assert_eq!(s.figures().writes, 0);
        for i in 0..(BATCHES_MAX as u64 + 10) {
            s.submitted(100 + i, 100 + i, t0);
        }
        assert_eq!(s.batches.len(), BATCHES_MAX);
    }
}
