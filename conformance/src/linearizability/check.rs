//! The search: is there a total order of the history's operations that respects real time
//! (an op that returned before another was invoked comes first) and in which every operation
//! with a known outcome gets exactly that outcome from the etcd model?
//!
//! It is the Wing–Gong search as porcupine runs it (lift an op that may be linearized next,
//! recurse, undo on a dead end) with Lowe's memo: a (set of lifted ops, model state) pair
//! already explored is not explored again. The set is kept as a 128-bit Zobrist hash of the
//! lifted ops and the state as its revision plus the key map's 128-bit fingerprint; a collision
//! (odds about 2^-100 for a run) could only prune a branch, never accept a history.
//!
//! What makes it fast is etcd's global revision. Every known outcome names the revision it
//! saw or made, so known ops can only be linearized in order of (revision, a write before the
//! reads at its revision). Placing one out of that order makes a revision the model can never
//! reach again, so those branches are cut without being explored; a read at the current
//! revision whose answer matches is lifted without trying alternatives (it changes nothing, so
//! lifting it first loses no order), and the write that takes the next revision is forced. The
//! only real choices left are unknown-outcome writes: which of them took a revision no
//! known write took. A history without those is checked in one pass. An unknown write is
//! offered a revision only if it writes what known outcomes later saw at that revision (a
//! read's kv with that `mod_revision`), which settles most gaps at once.
//!
//! Some dead ends end the whole search, because no choice of unknown writes could change
//! them: an op that real time puts after an op of a later revision (a stale read, revisions
//! out of order), an op whose revision was already taken or passed, an op whose keys were
//! written only by known writes since they were last deleted (every revision between taken by
//! one), and a Get the known outcomes alone rule out (a value the write at its
//! `mod_revision` did not write, a version a known write replaced or more or fewer puts than
//! its generation can hold, absence right after a known put). What remains exponential:
//! other mismatches late in a history with many unknown writes that may have touched the
//! keys involved; the search then tries their combinations before it, up to its budget.
//!
//! Modes: `Strict` is etcd's model. `GapTolerant` (for the shrinker) lets the revision jump
//! forward to a known op's revision, as if writes left out of the history happened there; any
//! order `Strict` accepts it accepts too, so a history it rejects is not linearizable.
//!
//! Bounds: the search stops after [`Budget::max_states`] lifts or [`Budget::max_time`] and
//! says [`Verdict::Unknown`]; it never calls a history it did not finish linearizable.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::history::{Call, Change, History, Kv, Nanos, OpResult, Outcome, TxnOp};
use super::model::{State, Undo};

/// How far the search may go before it answers [`Verdict::Unknown`].
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Ops lifted (search steps), counting those undone.
    pub max_states: u64,
    pub max_time: Duration,
}

impl Default for Budget {
    fn default() -> Budget {
        Budget {
            max_states: 2_000_000,
            max_time: Duration::from_secs(20),
        }
    }
}

/// Which model the search checks against (see the module comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Strict,
    GapTolerant,
}

/// Why the op the search got stuck on could not be placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Placed at its revision, the op gets another answer from the model: `expected`.
    Mismatch { expected: Outcome },
    /// The op is next in revision order, but `returned_first` (later in revision order, not
    /// placed yet) returned before this op was invoked.
    RealTime { returned_first: usize },
    /// The op's revision cannot follow the store's `current` one: it was taken or passed
    /// already, or revisions in between were taken by no write (and no unknown-outcome write
    /// could take them).
    Revision { current: i64 },
}

/// Where the search got furthest before every branch died.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The op (index into the history) that could not be placed next.
    pub op: usize,
    pub problem: Problem,
    /// The model's revision there.
    pub revision: i64,
    /// How many ops with known outcomes had been placed before it, of `known`.
    pub placed: usize,
    pub known: usize,
    /// The ops placed by then (indices, ascending), and the live keys they left.
    pub lifted: Vec<usize>,
    pub state: Vec<(Bytes, Kv)>,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    NotLinearizable(Violation),
    /// The budget ran out first: nothing is known.
    Unknown,
}

/// The answer with what it cost.
#[derive(Debug, Clone)]
pub struct Check {
    pub verdict: Verdict,
    /// Ops lifted during the search.
    pub states: u64,
    pub elapsed: Duration,
}

/// How the search treats one op.
#[derive(Debug, Clone, Copy)]
enum Class {
    /// Known outcome at header revision `target`; `write` when the outcome reports a change.
    Known { target: i64, write: bool },
    /// Unknown outcome, and the call may write: it may take a revision, or never happen.
    UnknownWrite,
    /// Unknown outcome of a call that never writes: it constrains nothing.
    Ignored,
}

/// The order known ops must be placed in: (revision, writes before reads, index).
type OrderKey = (i64, u8, usize);

fn order_key(target: i64, write: bool, idx: usize) -> OrderKey {
    (target, u8::from(!write), idx)
}

/// A fixed pseudo-random 128-bit key per op (splitmix64), for the Zobrist set hash.
fn zobrist(idx: usize) -> u128 {
    let mix = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let seed = (idx as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (u128::from(mix(seed ^ 0x1234_5678)) << 64) | u128::from(mix(seed ^ 0x8765_4321_0fed))
}

struct Search<'h> {
    h: &'h History,
    mode: Mode,
    class: Vec<Class>,
    /// Known ops not lifted, in the order they must be placed.
    unplaced: BTreeSet<OrderKey>,
    /// Known ops not lifted, by return time: the first one bounds which ops may go next.
    pending_ret: BTreeSet<(Nanos, usize)>,
    /// Unknown-outcome writes, by invoke time.
    unknown_writes: Vec<usize>,
    /// What known outcomes show of each revision's writes: (key, value) of every version
    /// they saw with that `mod_revision`. An unknown write may take a revision only if it
    /// wrote exactly those.
    observed: HashMap<i64, Vec<(Bytes, Bytes)>>,
    /// Each key's changes by known outcomes, and the revisions known outcomes took.
    changes: HashMap<Bytes, Vec<Change>>,
    known_revisions: Vec<i64>,
    /// The most puts of one key in one op (a txn branch may repeat a key; etcd refuses
    /// that, the model does not): how many puts one revision can add to a version.
    max_key_puts: i64,
    /// Set when the search met an op no choice of unknown-outcome writes can place.
    fatal: bool,
    lifted: Vec<bool>,
    lifted_hash: u128,
    state: State,
    placed: usize,
    known: usize,
    best: Option<Violation>,
}

/// One node of the depth-first search.
struct Frame {
    choices: Vec<usize>,
    next: usize,
    applied: Option<(usize, Vec<Undo>)>,
}

/// Checks `history` against etcd's model.
///
/// # Panics
/// When the history is malformed ([`History::validate`]): that is a recorder bug.
pub fn check(history: &History, budget: &Budget) -> Check {
    check_mode(history, budget, Mode::Strict)
}

/// [`check`] with a chosen model.
pub fn check_mode(history: &History, budget: &Budget, mode: Mode) -> Check {
    if let Err(e) = history.validate() {
        panic!("cannot check the history: {e}");
    }
    let started = Instant::now();
    let mut search = Search::new(history, mode);
    let (verdict, states) = search.run(budget, started);
    Check {
        verdict,
        states,
        elapsed: started.elapsed(),
    }
}

impl<'h> Search<'h> {
    fn new(h: &'h History, mode: Mode) -> Search<'h> {
        let mut class = Vec::with_capacity(h.ops.len());
        let mut unplaced = BTreeSet::new();
        let mut pending_ret = BTreeSet::new();
        let mut unknown_writes = Vec::new();
        for (i, op) in h.ops.iter().enumerate() {
            let c = match (op.outcome.revision(), op.ret) {
                (Some(target), Some(ret)) => {
                    let write = op.outcome.changed();
                    unplaced.insert(order_key(target, write, i));
                    pending_ret.insert((ret, i));
                    Class::Known { target, write }
                }
                _ if op.call.may_write() => {
                    unknown_writes.push(i);
                    Class::UnknownWrite
                }
                _ => Class::Ignored,
            };
            class.push(c);
        }
        unknown_writes.sort_by_key(|&i| (h.ops[i].invoke, i));
        let known = unplaced.len();
        let all: Vec<usize> = (0..h.ops.len()).collect();
        let changes = h.known_changes(&all);
        let mut known_revisions: Vec<i64> =
            changes.values().flatten().map(|c| c.revision).collect();
        known_revisions.sort_unstable();
        known_revisions.dedup();
        let max_key_puts = h
            .ops
            .iter()
            .map(|op| match &op.call {
                Call::Txn {
                    success, failure, ..
                } => [success, failure]
                    .iter()
                    .flat_map(|branch| {
                        branch.iter().map(|o| match o {
                            TxnOp::Put { key, .. } => branch
                                .iter()
                                .filter(|p| matches!(p, TxnOp::Put { key: k, .. } if k == key))
                                .count(),
                            _ => 0,
                        })
                    })
                    .max()
                    .unwrap_or(0),
                _ => 1,
            })
            .max()
            .unwrap_or(1)
            .max(1);
        let max_key_puts = i64::try_from(max_key_puts).unwrap_or(i64::MAX);
        let mut observed: HashMap<i64, Vec<(Bytes, Bytes)>> = HashMap::new();
        for op in &h.ops {
            for (key, kv) in seen_versions(&op.call, &op.outcome) {
                let at = observed.entry(kv.mod_revision).or_default();
                if !at.iter().any(|(k, v)| k == key && *v == kv.value) {
                    at.push((key.clone(), kv.value.clone()));
                }
            }
        }
        Search {
            h,
            mode,
            class,
            unplaced,
            pending_ret,
            unknown_writes,
            observed,
            changes,
            known_revisions,
            max_key_puts,
            fatal: false,
            lifted: vec![false; h.ops.len()],
            lifted_hash: 0,
            state: State::with_keys(h.initial_revision, &h.initial_keys),
            placed: 0,
            known,
            best: None,
        }
    }

    fn memo_key(&self) -> (u128, i64, (u64, u64)) {
        (
            self.lifted_hash,
            self.state.revision(),
            self.state.fingerprint(),
        )
    }

    fn run(&mut self, budget: &Budget, started: Instant) -> (Verdict, u64) {
        let mut states = 0u64;
        if self.unplaced.is_empty() {
            return (Verdict::Linearizable, states);
        }
        let mut memo = HashSet::new();
        memo.insert(self.memo_key());
        let root = self.choices();
        if self.fatal {
            return (self.violation(), states);
        }
        let mut stack = vec![Frame {
            choices: root,
            next: 0,
            applied: None,
        }];
        while let Some(frame) = stack.last_mut() {
            if let Some((op, undos)) = frame.applied.take() {
                self.unlift(op, undos);
            }
            if frame.next == frame.choices.len() {
                stack.pop();
                continue;
            }
            let op = frame.choices[frame.next];
            frame.next += 1;
            let undos = self.lift(op);
            frame.applied = Some((op, undos));
            states += 1;
            if states > budget.max_states
                || (states.is_multiple_of(1024) && started.elapsed() > budget.max_time)
            {
                return (Verdict::Unknown, states);
            }
            if self.unplaced.is_empty() {
                return (Verdict::Linearizable, states);
            }
            if !memo.insert(self.memo_key()) {
                continue;
            }
            let choices = self.choices();
            if self.fatal {
                return (self.violation(), states);
            }
            if !choices.is_empty() {
                stack.push(Frame {
                    choices,
                    next: 0,
                    applied: None,
                });
            }
        }
        (self.violation(), states)
    }

    fn violation(&mut self) -> Verdict {
        let violation = self
            .best
            .take()
            .expect("a dead search records where it got stuck");
        Verdict::NotLinearizable(violation)
    }

    /// Whether every key op `idx` touches has, where it runs, the same state under any
    /// choice of unknown-outcome writes: since the last known delete of the key (or since
    /// the start) every revision was taken by a known write. Then the model's answer there
    /// is the only one, and a mismatch cannot be fixed.
    fn keys_determined(&self, idx: usize) -> bool {
        let op = &self.h.ops[idx];
        let Some(rev) = op.outcome.revision() else {
            return false;
        };
        let at = if op.outcome.changed() { rev - 1 } else { rev };
        op.call.keys().into_iter().all(|key| {
            let list = self.changes.get(key).map_or(&[][..], Vec::as_slice);
            let anchor = list
                .iter()
                .rev()
                .find(|c| c.revision <= at && c.value.is_none())
                .map_or(self.h.initial_revision, |c| c.revision);
            let from = self.known_revisions.partition_point(|&r| r <= anchor);
            let to = self.known_revisions.partition_point(|&r| r <= at);
            i64::try_from(to - from).is_ok_and(|known| known == at - anchor)
        })
    }

    /// Whether a Get whose answer the model contradicts could be right under some other
    /// choice of unknown-outcome writes. Not when the known outcomes alone rule its answer
    /// out: it saw a version whose revision a known write took without writing that value, a
    /// version some known write of the key replaced by its revision, a generation a known
    /// delete ended or a known write other than a put of the key began, more or fewer puts
    /// than the known ones and the free revisions allow, or the key absent right after a
    /// known put with every revision between taken by known writes.
    fn could_be_fixed(&self, idx: usize) -> bool {
        let op = &self.h.ops[idx];
        let (Call::Get { key }, Outcome::Get { revision, kv }) = (&op.call, &op.outcome) else {
            return true;
        };
        let at = *revision;
        let list = self.changes.get(key).map_or(&[][..], Vec::as_slice);
        match kv {
            Some(kv) => {
                let m = kv.mod_revision;
                if m > at {
                    return false;
                }
                let known_at_m = self.known_revisions.binary_search(&m).is_ok();
                if known_at_m
                    && !list
                        .iter()
                        .any(|c| c.revision == m && c.value.as_ref() == Some(&kv.value))
                {
                    return false;
                }
                if list.iter().any(|c| c.revision > m && c.revision <= at) {
                    return false;
                }
                // Its generation: created by a put at `create_revision`, no delete since, and
                // `version` puts in all, of which the known ones are a lower bound and the
                // known ones plus what the revisions no known write took could add an upper
                // one.
                let c = kv.create_revision;
                if c > m || c <= 0 || kv.version < 1 {
                    return false;
                }
                if self.known_revisions.binary_search(&c).is_ok()
                    && !list.iter().any(|x| x.revision == c && x.value.is_some())
                {
                    return false;
                }
                let generation = list.iter().filter(|x| x.revision >= c && x.revision <= m);
                let mut known_puts = 0i64;
                for x in generation {
                    if x.value.is_none() && x.revision > c {
                        return false;
                    }
                    known_puts += i64::from(x.value.is_some());
                }
                let from = self.known_revisions.partition_point(|&r| r < c);
                let to = self.known_revisions.partition_point(|&r| r <= m);
                let free = (m - c + 1) - i64::try_from(to - from).unwrap_or(i64::MAX);
                known_puts <= kv.version
                    && kv.version
                        <= known_puts.saturating_add(free.saturating_mul(self.max_key_puts))
            }
            None => match list.iter().rev().find(|c| c.revision <= at) {
                Some(c) if c.value.is_some() => {
                    let from = self.known_revisions.partition_point(|&r| r <= c.revision);
                    let to = self.known_revisions.partition_point(|&r| r <= at);
                    // Some revision after the put was not taken by a known write.
                    i64::try_from(to - from).unwrap_or(i64::MAX) < at - c.revision
                }
                _ => true,
            },
        }
    }

    /// Runs op `idx` on the state as it would be lifted, returning the model's answer and
    /// what to undo.
    fn step(&mut self, idx: usize) -> (Outcome, Vec<Undo>) {
        let mut undos = Vec::with_capacity(2);
        if let Class::Known { target, write } = self.class[idx] {
            // The revision the op runs at: a write stamps `target`, a read sees it. Strict
            // mode lifts only ops already there; gap-tolerant mode moves up to them.
            let base = if write { target - 1 } else { target };
            if self.state.revision() < base {
                debug_assert_eq!(self.mode, Mode::GapTolerant);
                undos.push(self.state.skip_to(base));
            }
        }
        let (outcome, undo) = self.state.apply(&self.h.ops[idx].call);
        undos.push(undo);
        (outcome, undos)
    }

    fn undo(&mut self, undos: Vec<Undo>) {
        for u in undos.into_iter().rev() {
            self.state.undo(u);
        }
    }

    fn lift(&mut self, idx: usize) -> Vec<Undo> {
        let (_, undos) = self.step(idx);
        self.lifted[idx] = true;
        self.lifted_hash ^= zobrist(idx);
        if let Class::Known { target, write } = self.class[idx] {
            self.unplaced.remove(&order_key(target, write, idx));
            let ret = self.h.ops[idx].ret.expect("known ops returned");
            self.pending_ret.remove(&(ret, idx));
            self.placed += 1;
        }
        undos
    }

    fn unlift(&mut self, idx: usize, undos: Vec<Undo>) {
        self.undo(undos);
        self.lifted[idx] = false;
        self.lifted_hash ^= zobrist(idx);
        if let Class::Known { target, write } = self.class[idx] {
            self.unplaced.insert(order_key(target, write, idx));
            let ret = self.h.ops[idx].ret.expect("known ops returned");
            self.pending_ret.insert((ret, idx));
            self.placed -= 1;
        }
    }

    /// The ops that may be lifted next, best first. Empty at a dead end, which is then
    /// recorded if it is the furthest one yet.
    fn choices(&mut self) -> Vec<usize> {
        let r = self.state.revision();
        let Some(&(target, kind, _)) = self.unplaced.first() else {
            return Vec::new();
        };
        let write = kind == 0;
        // No op may go before one that returned before it was invoked: only ops invoked by
        // the earliest return among the unplaced ones are candidates.
        let first_ret = self.pending_ret.first().copied();
        let candidate = |invoke: Nanos| first_ret.is_none_or(|(ret, _)| invoke <= ret);
        let group: Vec<usize> = self
            .unplaced
            .range((target, kind, 0)..)
            .take_while(|k| (k.0, k.1) == (target, kind))
            .map(|k| k.2)
            .collect();
        let reachable = match (self.mode, write) {
            (Mode::Strict, true) => target == r + 1,
            (Mode::Strict, false) => target == r,
            (Mode::GapTolerant, true) => target > r,
            (Mode::GapTolerant, false) => target >= r,
        };
        // Lifting this group's op now is forced (writes) or loses nothing (reads).
        let forced = if write { target == r + 1 } else { target == r };
        let mut choices = Vec::new();
        let mut stuck: Option<(usize, Problem)> = None;
        let mut note = |idx: usize, problem: Problem| {
            let rank = |p: &Problem| match p {
                Problem::Mismatch { .. } => 0,
                Problem::RealTime { .. } => 1,
                Problem::Revision { .. } => 2,
            };
            if stuck.as_ref().is_none_or(|(_, s)| rank(&problem) < rank(s)) {
                stuck = Some((idx, problem));
            }
        };
        // An op no choice of unknown-outcome writes can place ends the search: real time
        // and known revisions do not depend on them.
        let mut fatal: Option<(usize, Problem)> = None;
        let passed = if write { target <= r } else { target < r };
        for idx in group {
            if !candidate(self.h.ops[idx].invoke) {
                let (_, returned_first) = first_ret.expect("a bound exists");
                let problem = Problem::RealTime { returned_first };
                // Fatal unless the op that returned first is of this same group, and so
                // may be placed first.
                let same_group = matches!(
                    self.class[returned_first],
                    Class::Known { target: t, write: w } if (t, w) == (target, write)
                );
                if same_group {
                    note(idx, problem);
                } else {
                    fatal.get_or_insert((idx, problem));
                }
                continue;
            }
            if !reachable {
                let problem = Problem::Revision { current: r };
                if passed {
                    fatal.get_or_insert((idx, problem));
                } else {
                    note(idx, problem);
                }
                continue;
            }
            let (outcome, undos) = self.step(idx);
            self.undo(undos);
            if outcome == self.h.ops[idx].outcome {
                if forced {
                    return vec![idx];
                }
                choices.push(idx);
            } else if self.could_be_fixed(idx) && !self.keys_determined(idx) {
                note(idx, Problem::Mismatch { expected: outcome });
            } else {
                fatal.get_or_insert((idx, Problem::Mismatch { expected: outcome }));
            }
        }
        if let Some((op, problem)) = fatal {
            self.fatal = true;
            self.best = Some(Violation {
                op,
                problem,
                revision: r,
                placed: self.placed,
                known: self.known,
                lifted: (0..self.lifted.len()).filter(|&i| self.lifted[i]).collect(),
                state: self.state.keys_sorted(),
            });
            return Vec::new();
        }
        // An unknown-outcome write takes revision r + 1: only when no known op needs it.
        let unknown_fits = if write { target > r + 1 } else { target > r };
        if unknown_fits {
            // Strict: the revisions up to `target` need as many unknown-outcome writes, and
            // only those invoked by now can take them (no known op moves until then).
            let needed = match self.mode {
                Mode::Strict => {
                    usize::try_from(if write { target - 1 - r } else { target - r }).unwrap_or(0)
                }
                Mode::GapTolerant => 0,
            };
            let available = self
                .unknown_writes
                .iter()
                .take_while(|&&u| candidate(self.h.ops[u].invoke))
                .filter(|&&u| !self.lifted[u])
                .count();
            for i in 0..self.unknown_writes.len() {
                let u = self.unknown_writes[i];
                if available < needed || !candidate(self.h.ops[u].invoke) {
                    break;
                }
                if self.lifted[u] {
                    continue;
                }
                let (outcome, undos) = self.step(u);
                // One that would change nothing here is the same as one that never happened;
                // one that wrote other than what was later seen at this revision is no use.
                let fits = outcome.revision() > Some(r)
                    && self.observed.get(&(r + 1)).is_none_or(|seen| {
                        seen.iter().all(|(k, v)| {
                            self.state
                                .get(k)
                                .is_some_and(|kv| kv.mod_revision == r + 1 && kv.value == *v)
                        })
                    });
                self.undo(undos);
                if fits {
                    choices.push(u);
                }
            }
        }
        if choices.is_empty() {
            if let Some((op, problem)) = stuck {
                if self.best.as_ref().is_none_or(|b| self.placed > b.placed) {
                    self.best = Some(Violation {
                        op,
                        problem,
                        revision: r,
                        placed: self.placed,
                        known: self.known,
                        lifted: (0..self.lifted.len()).filter(|&i| self.lifted[i]).collect(),
                        state: self.state.keys_sorted(),
                    });
                }
            }
        }
        choices
    }
}

/// The key versions a known outcome shows: a Get's kv, a put's prev_kv, a txn's reads.
fn seen_versions<'a>(call: &'a Call, outcome: &'a Outcome) -> Vec<(&'a Bytes, &'a Kv)> {
    match (call, outcome) {
        (Call::Get { key }, Outcome::Get { kv: Some(kv), .. })
        | (
            Call::Put { key, .. },
            Outcome::Put {
                prev_kv: Some(kv), ..
            },
        ) => vec![(key, kv)],
        (
            Call::Txn {
                success, failure, ..
            },
            Outcome::Txn {
                succeeded, results, ..
            },
        ) => {
            let branch = if *succeeded { success } else { failure };
            branch
                .iter()
                .zip(results)
                .filter_map(|(op, r)| match (op, r) {
                    (TxnOp::Get { key }, OpResult::Get(Some(kv))) => Some((key, kv)),
                    _ => None,
                })
                .collect()
        }
        _ => Vec::new(),
    }
}

impl Violation {
    /// What went wrong, in words, for a report on `history`.
    pub fn describe(&self, history: &History) -> String {
        let op = &history.ops[self.op];
        let at = op.outcome.revision().unwrap_or_default();
        let head = format!(
            "after placing {} of {} operations with known outcomes, at revision {}, \
             #{} could not be placed next:\n  #{} {}\n",
            self.placed, self.known, self.revision, self.op, self.op, op
        );
        let why = match &self.problem {
            Problem::Mismatch { expected } => format!(
                "  the model answers: {expected}\n  the client was told: {}",
                op.outcome
            ),
            Problem::RealTime { returned_first } => format!(
                "  #{returned_first} (revision {}) returned before #{} was invoked, yet #{} \
                 holds the earlier revision {at}:\n  #{returned_first} {}",
                history.ops[*returned_first]
                    .outcome
                    .revision()
                    .unwrap_or_default(),
                self.op,
                self.op,
                history.ops[*returned_first]
            ),
            Problem::Revision { current } => {
                if at <= *current {
                    format!(
                        "  its revision {at} was already reached or passed (the store is at \
                         {current})"
                    )
                } else {
                    format!(
                        "  its revision {at} does not follow {current}: no write took the \
                         revisions between (and no write with an unknown outcome could)"
                    )
                }
            }
        };
        head + &why
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Linearizable => write!(f, "linearizable"),
            Verdict::NotLinearizable(v) => write!(f, "not linearizable (stuck at #{})", v.op),
            Verdict::Unknown => write!(f, "unknown (the search budget ran out)"),
        }
    }
}
