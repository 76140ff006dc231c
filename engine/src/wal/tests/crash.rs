//! Crash at every step: a seeded workload of concurrent appends, truncations, purges, resets
//! and vote saves runs on the simulator, which is killed at its n-th mutating disk operation
//! for every n the workload reaches; the disk a reboot would find (unsynced writes kept,
//! dropped or torn by seed) is reopened and checked against a model.
//!
//! The model is independent of the WAL code: the workload records the stream of record-level
//! operations it issued (entry or "log ends at") in call order, and which prefix of that
//! stream was acknowledged. The recovered log must equal the model log after some prefix `p`
//! of the stream with `p` at least the acknowledged prefix (so every acknowledged record is
//! there and every record is whole or absent), except that entries up to the largest purge
//! point issued may be missing from the front. The recovered vote is the last acknowledged
//! one or a later one.
//!
//! After the check, the reopened WAL takes more appends and is crashed once more, to cover
//! appending over a cut tail.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures::executor::LocalPool;
use futures::task::LocalSpawnExt;

use super::{entry, open, read_all};
use crate::io::sim::{SimDisk, SimRng};
use crate::wal::{Entry, LogId, LogIndex, Term, Vote, Wal};

/// One record-level operation of the issued stream.
#[derive(Debug, Clone)]
enum Op {
    Entry(Entry),
    /// The log ends at this id (truncate, or reset past the end).
    EndAt(LogId),
}

/// The log a prefix of the stream describes: deliberately a plain vector.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ModelLog {
    prev: LogId,
    entries: Vec<Entry>,
}

impl ModelLog {
    fn new() -> Self {
        ModelLog {
            prev: LogId::ZERO,
            entries: Vec::new(),
        }
    }
    fn last(&self) -> LogId {
        self.entries.last().map_or(self.prev, Entry::log_id)
    }
    fn get(&self, index: u64) -> Option<&Entry> {
        let first = self.prev.index.0 + 1;
        index
            .checked_sub(first)
            .and_then(|i| self.entries.get(i as usize))
    }
    fn term_of(&self, index: u64) -> Term {
        if index == self.prev.index.0 {
            return self.prev.term;
        }
        self.get(index).expect("index in the model").term
    }
    fn apply(&mut self, op: &Op) {
        match op {
            Op::Entry(e) => {
                assert_eq!(e.index.0, self.last().index.0 + 1, "workload bug");
                self.entries.push(e.clone());
            }
            Op::EndAt(id) => {
                if id.index.0 < self.prev.index.0 || id.index.0 > self.last().index.0 {
                    self.entries.clear();
                    self.prev = *id;
                } else {
                    self.entries
                        .truncate((id.index.0 - self.prev.index.0) as usize);
                }
            }
        }
    }
}

#[derive(Debug, Default)]
struct Issued {
    ops: Vec<Op>,
    /// Every op below this index is acknowledged durable.
    acked: usize,
    /// Largest index any issued purge allowed to drop.
    purge_bound: u64,
    votes: Vec<Vote>,
    acked_vote: Option<usize>,
    /// Tasks spawned and tasks finished, to detect a hang.
    spawned: usize,
    finished: usize,
}

struct Run {
    issued: Rc<RefCell<Issued>>,
    mutations: u64,
}

/// Yields to the pool once.
async fn yield_now() {
    let mut yielded = false;
    futures::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await
}

/// Runs the seeded workload on `disk` until it ends or the disk dies.
fn run_workload(disk: &SimDisk, seed: u64, steps: usize) -> Run {
    let issued = Rc::new(RefCell::new(Issued::default()));
    let wal = match open(disk) {
        Ok((wal, _)) => wal,
        Err(e) => {
            assert!(disk.is_dead(), "seed {seed}: fresh open failed: {e}");
            return Run {
                issued,
                mutations: disk.stats().mutations,
            };
        }
    };
    let mut pool = LocalPool::new();
    let spawner = pool.spawner();
    let driver = {
        let (wal, issued, disk, spawner) =
            (wal.clone(), issued.clone(), disk.clone(), spawner.clone());
        async move {
            let mut rng = SimRng::new(seed);
            let mut model = ModelLog::new();
            let mut term = 1u64;
            let mut vote_term = 0u64;
            for _ in 0..steps {
                if disk.is_dead() || wal.failed().is_some() {
                    break;
                }
                let r = rng.below(100);
                if r < 65 {
                    // Append 1-3 entries, sometimes in a new term.
                    if rng.below(10) == 0 {
                        term += 1;
                    }
                    let n = 1 + rng.below(3);
                    let mut es = Vec::new();
                    for k in 0..n {
                        let len = if rng.below(8) == 0 {
                            1500
                        } else {
                            rng.below(300)
                        } as usize;
                        es.push(entry(model.last().index.0 + 1 + k, term, len));
                    }
                    for e in &es {
                        model.apply(&Op::Entry(e.clone()));
                    }
                    let fut = wal.append(es.clone());
                    let end = {
                        let mut is = issued.borrow_mut();
                        is.ops.extend(es.into_iter().map(Op::Entry));
                        is.spawned += 1;
                        is.ops.len()
                    };
                    spawn_acked(&spawner, &issued, fut, end);
                } else if r < 75 {
                    // Raft conflict: drop a short suffix (never below what the WAL retains).
                    let last = model.last().index.0;
                    let lo = wal.prev().index.0.max(last.saturating_sub(4));
                    let at = lo + rng.below(last - lo + 1);
                    let id = LogId {
                        index: LogIndex(at),
                        term: Term(model.term_of(at).0),
                    };
                    model.apply(&Op::EndAt(id));
                    let fut = wal.truncate_after(LogIndex(at));
                    let end = {
                        let mut is = issued.borrow_mut();
                        is.ops.push(Op::EndAt(id));
                        is.spawned += 1;
                        is.ops.len()
                    };
                    spawn_acked(&spawner, &issued, fut, end);
                } else if r < 82 {
                    // Purge a prefix, or (rarely) reset past the end as a snapshot would.
                    let last = model.last().index.0;
                    let id = if rng.below(6) == 0 {
                        term += 1;
                        LogId::new(term, last + 1 + rng.below(5))
                    } else {
                        let at = wal.prev().index.0 + rng.below(last - wal.prev().index.0 + 1);
                        LogId::new(model.term_of(at).0, at)
                    };
                    let reset = id.index.0 > last;
                    let fut = wal.purge_upto(id);
                    {
                        let mut is = issued.borrow_mut();
                        is.purge_bound = is.purge_bound.max(id.index.0);
                        if reset {
                            model.apply(&Op::EndAt(id));
                            is.ops.push(Op::EndAt(id));
                        }
                    }
                    // Awaited here, so that its marker (if any) takes its place in the stream
                    // exactly where it was recorded.
                    let ok = fut.await.is_ok();
                    if ok && reset {
                        let mut is = issued.borrow_mut();
                        is.acked = is.acked.max(is.ops.len());
                    }
                    if !ok {
                        break;
                    }
                } else if r < 90 {
                    // Votes are saved one after the other, as Raft does; appends go on.
                    vote_term += 1;
                    let v = Vote {
                        term: Term(vote_term),
                        voted_for: Some(rng.below(5)),
                        committed: rng.below(2) == 0,
                    };
                    let i = {
                        let mut is = issued.borrow_mut();
                        is.votes.push(v);
                        is.votes.len() - 1
                    };
                    if wal.save_vote(v).await.is_err() {
                        break;
                    }
                    issued.borrow_mut().acked_vote = Some(i);
                }
                for _ in 0..rng.below(4) {
                    yield_now().await;
                }
            }
            let _ = wal.sync().await;
            issued.borrow_mut().finished += 1;
        }
    };
    issued.borrow_mut().spawned += 1;
    spawner.spawn_local(driver).expect("spawn driver");
    pool.run_until_stalled();
    let is = issued.borrow();
    assert_eq!(
        is.spawned, is.finished,
        "seed {seed}: a WAL future never resolved"
    );
    drop(is);
    Run {
        issued,
        mutations: disk.stats().mutations,
    }
}

fn spawn_acked(
    spawner: &futures::executor::LocalSpawner,
    issued: &Rc<RefCell<Issued>>,
    fut: impl std::future::Future<Output = Result<(), crate::wal::WalError>> + 'static,
    end: usize,
) {
    let issued = issued.clone();
    spawner
        .spawn_local(async move {
            let ok = fut.await.is_ok();
            let mut is = issued.borrow_mut();
            if ok {
                is.acked = is.acked.max(end);
            }
            is.finished += 1;
        })
        .expect("spawn");
}

/// Checks a recovered WAL against the issued stream; returns the prefix length it matched.
fn check_recovered(wal: &Wal<SimDisk>, is: &Issued, base: &ModelLog, what: &str) -> usize {
    let got = read_all(wal);
    let (first, last) = (wal.first_index().0, wal.last());
    let mut model = base.clone();
    for op in &is.ops[..is.acked] {
        model.apply(op);
    }
    let mut p = is.acked;
    loop {
        let matches = model.last() == last
            && got.iter().all(|e| model.get(e.index.0) == Some(e))
            && model.entries.iter().filter(|e| e.index.0 >= first).count() == got.len()
            && (first - 1 <= is.purge_bound.max(model.prev.index.0));
        if matches {
            return p;
        }
        if p == is.ops.len() {
            panic!(
                "{what}: recovered log (first {first}, last {last}, {} entries) matches no \
                 prefix of the stream from the acknowledged {} to {}",
                got.len(),
                is.acked,
                is.ops.len()
            );
        }
        model.apply(&is.ops[p]);
        p += 1;
    }
}

fn check_vote(got: Option<Vote>, is: &Issued, what: &str) {
    match is.acked_vote {
        Some(a) => assert!(
            got.is_some_and(|v| is.votes[a..].contains(&v)),
            "{what}: vote {got:?}, acknowledged {:?}",
            is.votes[a]
        ),
        None => assert!(
            got.is_none_or(|v| is.votes.contains(&v)),
            "{what}: vote {got:?} was never issued"
        ),
    }
}

/// Crash at every mutation `1..=M` of the seeded workload (with a stride when `M` is large).
fn crash_every_step(seed: u64, steps: usize, stride: u64) -> u64 {
    let full = run_workload(&SimDisk::new(seed), seed, steps);
    assert!(
        full.issued.borrow().acked > 0,
        "the workload acknowledges appends"
    );
    let mut points = 0;
    let mut n = 1;
    while n <= full.mutations {
        let disk = SimDisk::new(seed.wrapping_mul(1_000_003) ^ n);
        disk.crash_at_op(Some(n));
        let run = run_workload(&disk, seed, steps);
        let what = format!("seed {seed}, crash at op {n}");
        let after = disk.crash();
        let (wal, rec) = open(&after).unwrap_or_else(|e| panic!("{what}: open failed: {e}"));
        let is = run.issued.borrow();
        check_recovered(&wal, &is, &ModelLog::new(), &what);
        check_vote(rec.vote, &is, &what);

        // Phase 2: append over whatever tail recovery left, crash again, check again.
        let base = ModelLog {
            prev: wal.prev(),
            entries: read_all(&wal),
        };
        let mut is2 = Issued {
            purge_bound: wal.prev().index.0,
            votes: is.votes.clone(),
            acked_vote: is.acked_vote,
            ..Issued::default()
        };
        let t = wal.last().term.0.max(1);
        for k in 1..=3 {
            let e = entry(wal.last().index.0 + 1, t, 40 * k);
            futures::executor::block_on(wal.append(vec![e.clone()]))
                .unwrap_or_else(|err| panic!("{what}: append after recovery: {err}"));
            is2.ops.push(Op::Entry(e));
            is2.acked = is2.ops.len();
        }
        let (wal2, rec2) =
            open(&after.crash()).unwrap_or_else(|e| panic!("{what}: second open: {e}"));
        check_recovered(&wal2, &is2, &base, &format!("{what}, second crash"));
        assert_eq!(
            rec2.vote, rec.vote,
            "{what}: the vote changed without a save"
        );
        points += 1;
        n += stride;
    }
    points
}

#[test]
fn crash_at_every_step_recovers_every_acknowledged_record() {
    let started = Instant::now();
    let mut points = 0;
    for seed in 1..=16 {
        points += crash_every_step(seed, 150, 1);
    }
    eprintln!("{points} crash points in {:?}", started.elapsed());
    assert!(points >= 3000, "only {points} crash points");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "crash test took {:?}",
        started.elapsed()
    );
}

#[test]
fn crash_at_every_step_with_long_workloads() {
    let mut points = 0;
    for seed in 100..=102 {
        points += crash_every_step(seed, 400, 3);
    }
    eprintln!("{points} crash points (every third op)");
    assert!(points >= 500, "only {points} crash points");
}

/// Sequential appends of 700-byte entries on small segments, so that the next segment is
/// prepared (at half fill) and sealed several times. Returns the WAL (if it opened) and how
/// many appends were acknowledged before the disk died.
fn sequential_appends(disk: &SimDisk, count: u64) -> u64 {
    let Ok((wal, _)) = open(disk) else {
        assert!(disk.is_dead(), "fresh open failed on a live disk");
        return 0;
    };
    for i in 1..=count {
        if futures::executor::block_on(wal.append(vec![entry(i, 1, 700)])).is_err() {
            assert!(disk.is_dead(), "append {i} failed on a live disk");
            return i - 1;
        }
    }
    count
}

/// Crash at every mutation of a workload that prepares and rolls segments: a crash during a
/// preparation (create, allocate, prepared header, sync, directory sync) or during the seal
/// of a prepared file recovers every acknowledged entry; the file is either reused for the
/// next roll or removed; and the reopened WAL rolls on and recovers again.
#[test]
fn crash_during_segment_preparation_recovers_and_reuses_or_removes_the_file() {
    const COUNT: u64 = 60;
    let (mut points, mut reused, mut removed) = (0u64, 0u64, 0u64);
    for seed in 1..=4u64 {
        let full = SimDisk::new(seed);
        assert_eq!(sequential_appends(&full, COUNT), COUNT);
        let mutations = full.stats().mutations;
        for n in 1..=mutations {
            let disk = SimDisk::new(seed.wrapping_mul(7919) ^ n);
            disk.crash_at_op(Some(n));
            let acked = sequential_appends(&disk, COUNT);
            let what = format!("seed {seed}, crash at op {n}");
            let after = disk.crash();
            let files_before = futures::executor::block_on(crate::io::Disk::list(&after))
                .unwrap()
                .iter()
                .filter(|f| f.ends_with(".seg"))
                .count();
            let (wal, rec) = open(&after).unwrap_or_else(|e| panic!("{what}: open: {e}"));
            let got = read_all(&wal);
            assert!(
                got.len() as u64 >= acked,
                "{what}: lost an acknowledged entry"
            );
            for (k, e) in got.iter().enumerate() {
                assert_eq!(*e, entry(k as u64 + 1, 1, 700), "{what}");
            }
            let kept = rec.segments + usize::from(rec.prepared_segment.is_some());
            reused += u64::from(rec.prepared_segment.is_some());
            removed += u64::from(files_before > kept);

            // Roll on past the recovered state (sealing a reused file), crash, check again.
            let start = got.len() as u64 + 1;
            let rolls_before = wal.stats().rolls;
            let more: Vec<Entry> = (start..start + 30).map(|i| entry(i, 1, 700)).collect();
            for e in &more {
                futures::executor::block_on(wal.append(vec![e.clone()]))
                    .unwrap_or_else(|err| panic!("{what}: append after recovery: {err}"));
            }
            assert!(
                wal.stats().rolls > rolls_before,
                "{what}: no roll after recovery"
            );
            if rec.prepared_segment.is_some() {
                assert!(wal.stats().rolls_to_prepared >= 1, "{what}: not reused");
            }
            let (wal2, _) = open(&after.crash()).unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
            let want: Vec<Entry> = got.into_iter().chain(more).collect();
            assert_eq!(read_all(&wal2), want, "{what}: second crash");
            points += 1;
        }
    }
    eprintln!(
        "{points} crash points: prepared file reused {reused}, unfinished file removed {removed}"
    );
    assert!(points >= 400, "only {points} crash points");
    assert!(
        reused > 0 && removed > 0,
        "reused {reused}, removed {removed}"
    );
}
