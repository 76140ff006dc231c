//! Shrinking a history the checker rejects to a small core that still fails the same way, so a
//! report shows a handful of operations instead of thousands.
//!
//! "The same way" means: the checker gets stuck on the same original operation with the same
//! problem (for a mismatch, the same answer expected from the model). Dropping a write moves
//! every later revision, so strict checking would reject almost any subset for a trivial
//! reason (a skipped revision); the shrinker therefore checks subsets in the gap-tolerant mode,
//! where left-out writes may have taken the missing revisions. That mode accepts everything
//! the strict one does, so a core it rejects is itself not linearizable. When the full history
//! is accepted there (the fault is a revision skipped or reused by the server itself), the
//! strict mode is used and the core keeps the writes before the fault.
//!
//! Method: first a seed. Ops depend on each other through the keys they read (a txn's
//! compare on another key, a read's version counting every put of its generation), so dropping
//! chunks at random mostly breaks an earlier op and ddmin alone would crawl. The seed starts
//! from the failing op and the writes its answer depends on (by the recorded revisions), and
//! while the subset fails at another op instead, adds that op's dependencies. (Without a seed:
//! the ops sharing a key with the failing one.) Then each client whole; then delta debugging
//! (ddmin, complements only): chunks of halving size down to single operations; then, for a
//! small core, pairs. Bounded by [`ShrinkLimits`]: a subset whose check runs out of budget
//! counts as not failing, so the result is always a checked failure; when a limit stops the
//! shrinking early the core is merely not minimal.
//!
//! [`shrink_from_state`] is the other view: the failing op with the store's state where the
//! search stopped, rather than the writes that built it.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::check::{check_mode, Budget, Mode, Problem, Verdict, Violation};
use super::history::{Change, History};

/// Bounds on one shrink.
#[derive(Debug, Clone, Copy)]
pub struct ShrinkLimits {
    /// Subsets checked at most.
    pub max_checks: usize,
    /// The budget of each subset's check.
    pub per_check: Budget,
    /// Wall time for the whole shrink.
    pub max_time: Duration,
}

impl Default for ShrinkLimits {
    fn default() -> ShrinkLimits {
        ShrinkLimits {
            max_checks: 5_000,
            per_check: Budget {
                max_states: 200_000,
                max_time: Duration::from_secs(2),
            },
            max_time: Duration::from_secs(10),
        }
    }
}

/// Cores up to this size are also tried without each pair of their ops.
const PAIRS_UP_TO: usize = 40;

/// A shrunk failing history.
#[derive(Debug, Clone)]
pub struct Shrunk {
    /// The core: the kept operations, in their original order.
    pub history: History,
    /// Index in the original history of each kept operation.
    pub original: Vec<usize>,
    /// The core's violation (indices into the core).
    pub violation: Violation,
    pub mode: Mode,
    pub checks: usize,
    /// False when a limit stopped the shrinking before no single op (and, for a core of up to
    /// 40 ops, no pair) could be dropped.
    pub minimal: bool,
}

/// Rounds of [`seed`] before it gives up.
const SEED_ROUNDS: usize = 64;

/// The ops whose effects op `i`'s answer depends on, by the recorded revisions: for each key
/// it touches, the writes of the generation live just before it (back to the put that
/// created it). The delete that ended the previous generation (or left the key absent) is
/// needed only when `core` already holds an earlier write of the key.
fn dependencies(
    h: &History,
    changes: &HashMap<Bytes, Vec<Change>>,
    core: &BTreeSet<usize>,
    i: usize,
) -> Vec<usize> {
    let op = &h.ops[i];
    let Some(rev) = op.outcome.revision() else {
        return Vec::new();
    };
    let before = if op.outcome.changed() { rev - 1 } else { rev };
    let mut deps = Vec::new();
    for key in op.call.keys() {
        let Some(list) = changes.get(key) else {
            continue;
        };
        let mut k = list.partition_point(|c| c.revision <= before);
        while k > 0 && list[k - 1].value.is_some() {
            k -= 1;
            deps.push(list[k].op);
        }
        // list[k - 1], if any, is the delete before the generation (or the last change).
        if k > 0 && list[..k - 1].iter().any(|c| core.contains(&c.op)) {
            deps.push(list[k - 1].op);
        }
    }
    deps
}

/// A small subset of `among` that fails like the target, grown from the target: check it;
/// while it fails at another op instead (an answer whose history is missing), add that op's
/// [`dependencies`]. `None` if that stops making progress or the rounds run out.
fn seed(s: &mut Shrinker<'_>, among: &[usize]) -> Option<(Vec<usize>, Violation)> {
    let changes = s.h.known_changes(among);
    let mut core: BTreeSet<usize> = BTreeSet::new();
    let grow = |core: &mut BTreeSet<usize>, i: usize| {
        let before = core.len();
        core.insert(i);
        let deps = dependencies(s.h, &changes, core, i);
        core.extend(deps);
        core.len() > before
    };
    grow(&mut core, s.target.0);
    if let Problem::RealTime { returned_first } = s.target.1 {
        grow(&mut core, returned_first);
    }
    for _ in 0..SEED_ROUNDS {
        if s.exhausted() {
            return None;
        }
        let ids: Vec<usize> = core.iter().copied().collect();
        s.checks += 1;
        let verdict = check_mode(&subset(s.h, &ids), &s.limits.per_check, s.mode).verdict;
        let Verdict::NotLinearizable(v) = verdict else {
            return None;
        };
        let (op, problem) = in_original(&v, &ids);
        if (op, &problem) == (s.target.0, &s.target.1) {
            return Some((ids, v));
        }
        if !grow(&mut core, op) {
            return None;
        }
    }
    None
}

/// A violation with its op indices mapped to the original history, to compare across subsets.
fn in_original(v: &Violation, ids: &[usize]) -> (usize, Problem) {
    let problem = match &v.problem {
        Problem::RealTime { returned_first } => Problem::RealTime {
            returned_first: ids[*returned_first],
        },
        p => p.clone(),
    };
    (ids[v.op], problem)
}

fn subset(h: &History, ids: &[usize]) -> History {
    History {
        initial_revision: h.initial_revision,
        initial_keys: h.initial_keys.clone(),
        ops: ids.iter().map(|&i| h.ops[i].clone()).collect(),
    }
}

struct Shrinker<'h> {
    h: &'h History,
    mode: Mode,
    target: (usize, Problem),
    limits: ShrinkLimits,
    started: Instant,
    checks: usize,
}

impl Shrinker<'_> {
    fn exhausted(&self) -> bool {
        self.checks >= self.limits.max_checks || self.started.elapsed() > self.limits.max_time
    }

    /// Whether the subset `ids` fails the same way (its violation if so).
    fn fails(&mut self, ids: &[usize]) -> Option<Violation> {
        if !ids.contains(&self.target.0) {
            return None;
        }
        self.checks += 1;
        match check_mode(&subset(self.h, ids), &self.limits.per_check, self.mode).verdict {
            Verdict::NotLinearizable(v) if in_original(&v, ids) == self.target => Some(v),
            _ => None,
        }
    }
}

/// Shrinks `history`, which the strict check rejected with `violation`, to a small core that
/// fails the same way (see the module comment): a sub-history, starting from the empty store.
pub fn shrink(history: &History, violation: &Violation, limits: &ShrinkLimits) -> Shrunk {
    // Prefer the gap-tolerant mode when it rejects the full history too.
    let gap = check_mode(history, &limits.per_check, Mode::GapTolerant).verdict;
    let (mode, start) = match gap {
        Verdict::NotLinearizable(v) => (Mode::GapTolerant, v),
        _ => (Mode::Strict, violation.clone()),
    };
    let all: Vec<usize> = (0..history.ops.len()).collect();
    ddmin(history, mode, start, all, limits)
}

/// The core of a rejected history given the store's state where the search got stuck: the
/// ops not placed by then, shrunk, starting from the live keys and revision the placed ones
/// left (`violation.state`). It is small and fast to find even when every earlier op is
/// needed to build that state from nothing, which [`shrink`] then cannot get below thousands
/// of ops in reasonable time. `Shrunk::original` maps its ops back to `history`.
pub fn shrink_from_state(
    history: &History,
    violation: &Violation,
    limits: &ShrinkLimits,
) -> Shrunk {
    let ids: Vec<usize> = (0..history.ops.len())
        .filter(|i| violation.lifted.binary_search(i).is_err())
        .collect();
    let base = History {
        initial_revision: violation.revision,
        initial_keys: violation.state.clone(),
        ops: ids.iter().map(|&i| history.ops[i].clone()).collect(),
    };
    let all: Vec<usize> = (0..base.ops.len()).collect();
    let mode = Mode::GapTolerant;
    let mut shrunk = match check_mode(&base, &limits.per_check, mode).verdict {
        Verdict::NotLinearizable(v) => ddmin(&base, mode, v, all, limits),
        // Cannot happen for a state the search reached (it stops there again); report the
        // window unshrunk rather than nothing.
        _ => Shrunk {
            history: base.clone(),
            original: all,
            violation: violation.clone(),
            mode,
            checks: 1,
            minimal: false,
        },
    };
    shrunk.original = shrunk.original.iter().map(|&i| ids[i]).collect();
    // Show only the live keys the core touches.
    let touched: Vec<bytes::Bytes> = shrunk
        .history
        .ops
        .iter()
        .flat_map(|o| o.call.keys().into_iter().cloned())
        .collect();
    shrunk
        .history
        .initial_keys
        .retain(|(k, _)| touched.contains(k));
    shrunk
}

/// Delta debugging of `h` from the subset `cur`, which fails with `start`.
fn ddmin(
    history: &History,
    mode: Mode,
    start: Violation,
    mut cur: Vec<usize>,
    limits: &ShrinkLimits,
) -> Shrunk {
    let mut s = Shrinker {
        h: history,
        mode,
        target: in_original(&start, &cur),
        limits: *limits,
        started: Instant::now(),
        checks: 1,
    };
    let mut last = start;

    // First guess: the failing op and what its answer depends on, grown from the ops that
    // fail instead (see `seed`). Failing that, the ops sharing a key with the failing one.
    let mut seeded = false;
    if mode == Mode::GapTolerant {
        if let Some((ids, v)) = seed(&mut s, &cur) {
            cur = ids;
            last = v;
            seeded = true;
        }
    }
    if !seeded {
        let mut focus: Vec<&bytes::Bytes> = history.ops[s.target.0].call.keys();
        if let Problem::RealTime { returned_first } = &s.target.1 {
            focus.extend(history.ops[*returned_first].call.keys());
        }
        let related: Vec<usize> = cur
            .iter()
            .copied()
            .filter(|&i| history.ops[i].call.keys().iter().any(|k| focus.contains(k)))
            .collect();
        if related.len() < cur.len() {
            if let Some(v) = s.fails(&related) {
                cur = related;
                last = v;
            }
        }
    }

    // Whole clients: most are bystanders.
    let mut clients: Vec<u32> = cur.iter().map(|&i| history.ops[i].client.0).collect();
    clients.sort_unstable();
    clients.dedup();
    for c in clients {
        if s.exhausted() {
            break;
        }
        let without: Vec<usize> = cur
            .iter()
            .copied()
            .filter(|&i| history.ops[i].client.0 != c)
            .collect();
        if without.len() < cur.len() {
            if let Some(v) = s.fails(&without) {
                cur = without;
                last = v;
            }
        }
    }

    // ddmin over complements, down to single ops; then pairs, for the ops that can only go
    // together (a delete and the put it deleted: either alone changes what a later op sees).
    let mut minimal = false;
    'outer: while !s.exhausted() {
        let mut n = 2usize;
        loop {
            if s.exhausted() {
                break 'outer;
            }
            if cur.len() < 2 {
                minimal = true;
                break 'outer;
            }
            let chunk = cur.len().div_ceil(n);
            let mut reduced = false;
            for start in (0..cur.len()).step_by(chunk) {
                if s.exhausted() {
                    break 'outer;
                }
                let end = (start + chunk).min(cur.len());
                let without: Vec<usize> = cur[..start].iter().chain(&cur[end..]).copied().collect();
                if let Some(v) = s.fails(&without) {
                    cur = without;
                    last = v;
                    n = (n - 1).max(2);
                    reduced = true;
                    break;
                }
            }
            if !reduced {
                if n >= cur.len() {
                    break;
                }
                n = (n * 2).min(cur.len());
            }
        }
        if cur.len() > PAIRS_UP_TO {
            minimal = true;
            break;
        }
        let mut found = None;
        'pairs: for a in 0..cur.len() {
            for b in a + 1..cur.len() {
                if s.exhausted() {
                    break 'outer;
                }
                let without: Vec<usize> = cur
                    .iter()
                    .enumerate()
                    .filter(|&(k, _)| k != a && k != b)
                    .map(|(_, &i)| i)
                    .collect();
                if let Some(v) = s.fails(&without) {
                    found = Some((without, v));
                    break 'pairs;
                }
            }
        }
        match found {
            Some((without, v)) => {
                cur = without;
                last = v;
            }
            None => {
                minimal = true;
                break;
            }
        }
    }
    Shrunk {
        history: subset(history, &cur),
        original: cur,
        violation: last,
        mode,
        checks: s.checks,
        minimal,
    }
}
