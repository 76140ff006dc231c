//! A shard executor with runnable tasks keeps running them, however its thread is preempted.
//!
//! glommio 0.9 ends a scheduler round when its preemption timer fires; if the timer fires
//! before the round has run anything (the thread was descheduled right after arming it), the
//! executor parks with its queues full, and only a timer, an I/O completion or a cross-thread
//! wake gets it going again (`runtime::PREEMPT_SLICE` tells the whole story). The tasks
//! here use none of those: they only compute and yield, as a checkpoint's loop does between its
//! writes. Busy threads, more than there are cores, make the kernel preempt the executor
//! thread often, at syscall returns among other places, which is where glommio's window is,
//! and a 50 us slice makes the rounds many. With no keep-awake, this failed 9 runs of 9 on the
//! 2-core development machine, most within half a second; with a 50 ms timer task as the
//! keep-awake it failed once in CI; with the keep-awake thread of `runtime`, 0 of 4 locally.
//! Its own binary: the busy threads would slow the tests running beside it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ballast_consensus::runtime::{spawn_executor, spawn_executor_with_slice, yield_now};

/// How long the tasks keep yielding, by the wall clock (no timer of theirs ever fires).
const BUSY_FOR: Duration = Duration::from_secs(2);
/// The preemption slice while the tasks run (a shard's is `runtime::PREEMPT_SLICE`).
const SLICE: Duration = Duration::from_micros(50);
/// The test fails if the tasks have not finished by then.
const DEADLINE: Duration = Duration::from_secs(20);

/// Twice as many spinning threads as cores, until dropped: the kernel preempts every other
/// thread often.
struct BusyThreads {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl BusyThreads {
    fn start() -> BusyThreads {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..2 * cores)
            .map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = std::hint::black_box(
                            x.wrapping_mul(6364136223846793005).wrapping_add(1),
                        );
                    }
                })
            })
            .collect();
        BusyThreads { stop, threads }
    }
}

impl Drop for BusyThreads {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

#[test]
fn an_executor_with_runnable_tasks_never_sleeps_for_good() {
    let hogs = BusyThreads::start();

    let yields = Arc::new(AtomicU64::new(0));
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let counted = Arc::clone(&yields);
    let executor = spawn_executor("rt-wakeup", None, move || async move {
        // A queue whose latency need shortens the slice to SLICE while it has work: more
        // rounds, so more chances to hit glommio's window in the time given.
        let queue = glommio::executor().create_task_queue(
            glommio::Shares::default(),
            glommio::Latency::Matters(SLICE),
            "busy",
        );
        let started = Instant::now();
        let tasks: Vec<_> = (0..2)
            .map(|_| {
                let counted = Arc::clone(&counted);
                glommio::spawn_local_into(
                    async move {
                        while started.elapsed() < BUSY_FOR {
                            counted.fetch_add(1, Ordering::Relaxed);
                            yield_now().await;
                        }
                    },
                    queue,
                )
                .expect("the queue exists")
            })
            .collect();
        for task in tasks {
            task.await;
        }
        let _ = done_tx.send(started.elapsed());
    })
    .expect("executor starts");

    let finished = done_rx.recv_timeout(DEADLINE);
    drop(hogs);
    let took = finished.unwrap_or_else(|_| {
        panic!(
            "the executor stopped running its tasks after {} yields: parked with work queued",
            yields.load(Ordering::Relaxed)
        )
    });
    executor.join().expect("executor thread");
    assert!(took >= BUSY_FOR, "the tasks ran for {took:?}");
    assert!(yields.load(Ordering::Relaxed) > 0);
}

/// Executors started one after another: how many to start.
const STARTS: usize = 1000;
/// How long each may take to run its main future (it has nothing else to do).
const START_DEADLINE: Duration = Duration::from_secs(5);

/// A new executor runs its main future, however its thread is preempted while it starts. Its
/// first scheduler round is the window of the flaw above with nothing yet to wake it: no task
/// has run, so none has a timer, an I/O or a waker anyone else could use (a start-up that hung
/// this way was seen under load in net's peer tests).
#[test]
fn every_executor_started_runs_its_main_future() {
    let hogs = BusyThreads::start();
    let mut outcome = Ok(());
    for i in 0..STARTS {
        let (ran_tx, ran_rx) = std::sync::mpsc::channel();
        let executor = spawn_executor_with_slice("rt-start", None, SLICE, move || async move {
            let _ = ran_tx.send(());
        })
        .expect("executor starts");
        if ran_rx.recv_timeout(START_DEADLINE).is_err() {
            outcome = Err(format!(
                "executor {i} of {STARTS} never ran its main future"
            ));
            break;
        }
        executor.join().expect("executor thread");
    }
    drop(hogs);
    outcome.unwrap();
}
