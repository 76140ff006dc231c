//! The glommio side of a shard core: openraft's [`AsyncRuntime`] over a glommio
//! `LocalExecutor`, and the one function that starts such an executor on its own thread.
//! Together with `engine::io`'s glommio crate this is the only code that names glommio.
//!
//! Invariants:
//! - Everything here runs on the executor's thread: tasks are spawned with `spawn_local` and
//!   never leave it (openraft is built `single-threaded`, so nothing asks for `Send`).
//! - A spawned task is detached at once, so dropping openraft's join handle lets the task run
//!   on, as tokio's handles do; cancellation goes through the handle's owner, not drop.
//! - Channels, the watch and the mutex come from `openraft-rt-tokio`'s types, which are plain
//!   `tokio::sync` primitives: they need no tokio runtime, and their wakers are glommio's.
//! - Time is `std::time::Instant`; glommio's timers fire on that clock.
//! - Every executor started here runs with a [`PREEMPT_SLICE`] preemption timer and a
//!   keep-awake task ([`KEEP_AWAKE`]), which together bound how long finished I/O waits to be
//!   reaped and how long glommio 0.9 can sleep with work queued (see [`PREEMPT_SLICE`]).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use glommio::timer::Timer;
use glommio::{LocalExecutor, LocalExecutorBuilder, Placement};
use openraft::{AsyncRuntime, OptionalSend};
use openraft_rt_tokio::{TokioMpsc, TokioMutex, TokioOneshot, TokioWatch};

/// Memory glommio reserves per executor for its I/O buffers. The locked-memory limit on the
/// development machines is 8 MiB and glommio needs at least 512 KiB; 2 MiB was measured to work
/// (design.md §11).
pub const IO_MEMORY_BYTES: usize = 2 << 20;
const _: () = assert!(IO_MEMORY_BYTES >= 512 << 10);

/// How long glommio lets task queues run before it ends a scheduler round, reaps io_uring
/// completions and runs the tasks they wake. Completions are reaped only between rounds, and a
/// round lasts while any task is runnable, so with glommio's default (100 ms) a long yielding
/// task (a checkpoint) hid finished WAL fdatasyncs for up to 100 ms: 256-client p99.9 of
/// 170-220 ms against 66-84 ms with this slice (docs/benchmarks.md, session 8).
///
/// A short slice makes a flaw of glommio 0.9 likely: when the slice's timer fires between the
/// arming of the timer and the scheduler's first check, the round ends before running
/// anything, the executor takes that for "no runnable task" and parks in io_uring_enter with
/// its queues full. Nothing it owns wakes it (the work is its own), so it sleeps until some
/// timer, I/O completion or cross-thread wake arrives; at shard start-up there was none, and
/// the executor slept forever (3 of 12 runs of bench's TLS tests). glommio's master fixes
/// that (github.com/glommio/glommio pull 53, not in a crates.io release); until then
/// [`KEEP_AWAKE`] bounds the sleep. A slice shortened only while a checkpoint ran (its own task
/// queue with `Latency::Matters(1 ms)`) was tried and left the 256-client p99.9 at 152-157 ms
/// against 88-99 ms with this slice always on: heavy load alone keeps rounds long.
pub const PREEMPT_SLICE: Duration = Duration::from_millis(1);

/// How long [`spawn_executor`] waits for a new executor to run its first task. Before that
/// task has run, nothing can wake an executor that glommio's flaw (see [`PREEMPT_SLICE`]) parked
/// in its very first round: no task has a timer, an I/O or a waker yet, so the keep-awake
/// thread has nothing to wake. Such an executor is given up on and another started; a net
/// test's node hung that way once, under load, before this.
pub const START_DEADLINE: Duration = Duration::from_secs(2);

/// Executors [`spawn_executor`] starts before it reports failure.
const START_ATTEMPTS: u32 = 3;

/// Period of the keep-awake thread every executor started here has: it wakes a task of the
/// executor from outside this often. A wake from another thread always reaches a sleeping
/// glommio executor (it writes the executor's eventfd), so a wrongly parked executor (see
/// [`PREEMPT_SLICE`]) runs again within this time. A timer task inside the executor was tried
/// first and is not enough: a second wrong park right after its timer fired, before it ran to
/// re-arm, left nothing armed (consensus/tests/executor_wakeup.rs caught it in CI). An idle
/// executor pays 20 wake-ups a second.
pub const KEEP_AWAKE: Duration = Duration::from_millis(50);

/// Runs on `executor` the future `start` makes at the executor's first poll, with a
/// keep-awake thread (see [`KEEP_AWAKE`]) that wakes the task running it; the thread stops when
/// the future is done or `stop` is raised. `start` returning `None` ends the run at once (an
/// executor given up on, see [`START_DEADLINE`]).
fn run_kept_awake<T, F: Future<Output = T>>(
    executor: &LocalExecutor,
    stop: Arc<AtomicBool>,
    start: impl FnOnce() -> Option<F>,
) -> Option<T> {
    let waker: Arc<Mutex<Option<Waker>>> = Arc::default();
    let nudger = {
        let (waker, stop) = (Arc::clone(&waker), Arc::clone(&stop));
        std::thread::Builder::new()
            .name("keep-awake".into())
            .spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    std::thread::park_timeout(KEEP_AWAKE);
                    let slot = waker.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(w) = slot.as_ref() {
                        w.wake_by_ref();
                    }
                }
            })
    };
    let slot = Arc::clone(&waker);
    let out = executor.run(async move {
        let future = start()?;
        // In the same poll: the waker of this task, the executor's first, is where the thread
        // finds it (a spurious poll of it now and then is harmless).
        std::future::poll_fn(|cx| {
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(cx.waker().clone());
            Poll::Ready(())
        })
        .await;
        Some(future.await)
    });
    stop.store(true, Ordering::Release);
    if let Ok(nudger) = nudger {
        nudger.thread().unpark();
        let _ = nudger.join();
    }
    waker.lock().unwrap_or_else(|p| p.into_inner()).take();
    out
}

/// openraft's runtime on a glommio executor. The value itself is only used by openraft's test
/// helpers (`new`/`block_on`); a shard builds its executor with [`spawn_executor`].
pub struct GlommioRuntime {
    executor: LocalExecutor,
}

impl fmt::Debug for GlommioRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GlommioRuntime").finish_non_exhaustive()
    }
}

/// A glommio task ended without an output: it panicked or was cancelled (glommio does not say
/// which).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("glommio task ended without an output (panicked or cancelled)")]
pub struct TaskLost;

/// A deadline passed before the future completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("deadline elapsed")]
pub struct Elapsed;

/// A detached glommio task's handle: resolves to its output, or [`TaskLost`].
pub struct JoinHandle<T> {
    inner: glommio::task::JoinHandle<T>,
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, TaskLost>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.inner)
            .poll(cx)
            .map(|out| out.ok_or(TaskLost))
    }
}

/// glommio's timer with the unit output openraft expects.
pub struct Sleep {
    timer: Timer,
}

impl Future for Sleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.timer).poll(cx).map(|_| ())
    }
}

pin_project_lite::pin_project! {
    /// `future` raced against a timer; the future is polled first, so an output that is ready
    /// at the deadline still wins.
    pub struct Timeout<F> {
        #[pin]
        future: F,
        timer: Timer,
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.future.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        Pin::new(this.timer).poll(cx).map(|_| Err(Elapsed))
    }
}

fn until(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

impl AsyncRuntime for GlommioRuntime {
    type JoinError = TaskLost;
    type JoinHandle<T: OptionalSend + 'static> = JoinHandle<T>;
    type Sleep = Sleep;
    type Instant = Instant;
    type TimeoutError = Elapsed;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = Timeout<T>;
    type ThreadLocalRng = rand_010::rngs::ThreadRng;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        JoinHandle {
            inner: glommio::spawn_local(future).detach(),
        }
    }

    fn sleep(duration: Duration) -> Sleep {
        Sleep {
            timer: Timer::new(duration),
        }
    }

    fn sleep_until(deadline: Instant) -> Sleep {
        Self::sleep(until(deadline))
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Timeout<F> {
        Timeout {
            future,
            timer: Timer::new(duration),
        }
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Instant,
        future: F,
    ) -> Timeout<F> {
        Self::timeout(until(deadline), future)
    }

    fn is_panic(_join_error: &TaskLost) -> bool {
        // glommio reports a panicked and a cancelled task alike. Nothing here cancels a task
        // openraft spawned, so a lost task is a panicked one.
        true
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        rand_010::rng()
    }

    type Mpsc = TokioMpsc;
    type Watch = TokioWatch;
    type Oneshot = TokioOneshot;
    type Mutex<T: OptionalSend + 'static> = TokioMutex<T>;

    fn new(_threads: usize) -> Self {
        let executor = build_executor("openraft-rt", None, PREEMPT_SLICE)
            .unwrap_or_else(|err| panic!("creating a glommio executor: {err}"));
        GlommioRuntime { executor }
    }

    fn block_on<F, T>(&mut self, future: F) -> T
    where
        F: Future<Output = T>,
    {
        run_kept_awake(&self.executor, Arc::default(), || Some(future))
            .expect("the future is made at the first poll")
    }
}

/// Builds an executor on the calling thread: pinned to `core` when given and possible,
/// otherwise unbound (pinning fails where the core does not exist or the affinity mask
/// excludes it; a shard still runs, only without the cache locality).
fn build_executor(
    name: &str,
    core: Option<usize>,
    slice: Duration,
) -> std::io::Result<LocalExecutor> {
    // glommio's error is not `Sync`; keep its text.
    let make = |placement| {
        LocalExecutorBuilder::new(placement)
            .name(name)
            .io_memory(IO_MEMORY_BYTES)
            .preempt_timer(slice)
            .make()
            .map_err(|e| std::io::Error::other(e.to_string()))
    };
    let pinned = core.map(|core| (core, make(Placement::Fixed(core))));
    match pinned {
        Some((_, Ok(executor))) => Ok(executor),
        Some((core, Err(err))) => {
            tracing::warn!(core, %err, "cannot pin a shard executor; running it unbound");
            make(Placement::Unbound)
        }
        None => make(Placement::Unbound),
    }
}

/// Lets the executor run its other tasks now (long loops on the shard's thread, like a
/// checkpoint writing its records, call it every few hundred steps). Unconditional: glommio's
/// `yield_if_needed` yields only once the preemption slice has passed. It does not poll I/O by
/// itself: io_uring completions are reaped when the slice ([`PREEMPT_SLICE`]) ends or the
/// executor runs out of runnable tasks.
pub async fn yield_now() {
    glommio::executor().yield_task_queue_now().await;
}

/// Starts a thread named `name` running a glommio executor (pinned to `core` when possible)
/// and `main` on it; the thread ends when `main`'s future does. Returns once the executor
/// exists, so a failure to create it (e.g. not enough locked memory) is the caller's error.
pub fn spawn_executor<G, F>(
    name: &str,
    core: Option<usize>,
    main: G,
) -> std::io::Result<std::thread::JoinHandle<()>>
where
    G: FnOnce() -> F + Send + 'static,
    F: Future<Output = ()> + 'static,
{
    spawn_executor_with_slice(name, core, PREEMPT_SLICE, main)
}

/// [`spawn_executor`] with a preemption slice other than [`PREEMPT_SLICE`] (tests provoke
/// glommio's flaw with a shorter one).
pub fn spawn_executor_with_slice<G, F>(
    name: &str,
    core: Option<usize>,
    slice: Duration,
    main: G,
) -> std::io::Result<std::thread::JoinHandle<()>>
where
    G: FnOnce() -> F + Send + 'static,
    F: Future<Output = ()> + 'static,
{
    start_executor(name, core, slice, START_DEADLINE, |_| Duration::ZERO, main)
}

/// [`spawn_executor_with_slice`], waiting `deadline` for each attempt's first task; `stall(n)`
/// delays attempt `n`'s first task by that long (tests of the retry; zero otherwise).
fn start_executor<G, F>(
    name: &str,
    core: Option<usize>,
    slice: Duration,
    deadline: Duration,
    stall: fn(u32) -> Duration,
    main: G,
) -> std::io::Result<std::thread::JoinHandle<()>>
where
    G: FnOnce() -> F + Send + 'static,
    F: Future<Output = ()> + 'static,
{
    let mut main = main;
    for attempt in 1..=START_ATTEMPTS {
        // `main` goes to whichever takes it first: the executor at its first poll, or this
        // thread giving up on an executor that never ran (then the next attempt gets it).
        let slot = Arc::new(Mutex::new(Some(main)));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let (ran_tx, ran_rx) = std::sync::mpsc::sync_channel(1);
        let exec_name = name.to_owned();
        let (theirs, their_stop) = (Arc::clone(&slot), Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || match build_executor(&exec_name, core, slice) {
                Ok(executor) => {
                    let _ = ready_tx.send(Ok(()));
                    run_kept_awake(&executor, their_stop, move || {
                        std::thread::sleep(stall(attempt));
                        let main = theirs.lock().unwrap_or_else(|p| p.into_inner()).take()?;
                        let _ = ran_tx.send(());
                        Some(main())
                    });
                }
                Err(err) => {
                    let _ = ready_tx.send(Err(err));
                }
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                let _ = thread.join();
                return Err(err);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(std::io::Error::other(
                    "shard executor thread died while starting",
                ));
            }
        }
        if ran_rx.recv_timeout(deadline).is_ok() {
            return Ok(thread);
        }
        let Some(back) = slot.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            // It ran after all, just now.
            return Ok(thread);
        };
        // Parked before its first task ran: left asleep (it ends at once if it ever wakes),
        // its keep-awake thread stopped, the thread detached.
        stop.store(true, Ordering::Release);
        tracing::warn!(
            executor = name,
            attempt,
            "the executor did not run its first task within {deadline:?} \
             (glommio's lost wake-up at start); starting another"
        );
        main = back;
    }
    Err(std::io::Error::other(format!(
        "executor {name} did not run its first task in {START_ATTEMPTS} attempts"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::async_runtime::{Mpsc, MpscReceiver, MpscSender};

    /// An executor that has not run its first task by the deadline is given up on: `main`
    /// runs once, on the next one, and the one given up on ends by itself when it wakes.
    #[test]
    fn an_executor_that_never_ran_is_replaced() {
        let (ran_tx, ran_rx) = std::sync::mpsc::channel();
        let thread = start_executor(
            "rt-retry",
            None,
            PREEMPT_SLICE,
            Duration::from_millis(100),
            |attempt| {
                if attempt == 1 {
                    Duration::from_millis(600)
                } else {
                    Duration::ZERO
                }
            },
            move || async move {
                let _ = ran_tx.send(std::thread::current().name().map(str::to_owned));
            },
        )
        .expect("the second executor starts");
        thread.join().expect("no panic");
        assert_eq!(
            ran_rx.recv_timeout(Duration::from_secs(5)),
            Ok(Some("rt-retry".to_owned()))
        );
        // The first executor wakes after its stall, finds `main` taken and ends; `main` ran
        // exactly once.
        std::thread::sleep(Duration::from_millis(800));
        assert!(ran_rx.try_recv().is_err(), "main ran twice");
    }

    /// Every attempt too late: an error naming the executor, and `main` never runs.
    #[test]
    fn an_executor_that_never_runs_is_an_error() {
        let err = start_executor(
            "rt-never",
            None,
            PREEMPT_SLICE,
            Duration::from_millis(50),
            |_| Duration::from_millis(300),
            || async { panic!("main must not run") },
        )
        .expect_err("no attempt ran its first task in time");
        assert!(err.to_string().contains("rt-never"), "{err}");
        // Let the stalled executors wake, find nothing to run and end.
        std::thread::sleep(Duration::from_millis(400));
    }

    fn run<F: Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
        spawn_executor("rt-test", None, f)
            .expect("executor starts")
            .join()
            .expect("no panic");
    }

    #[test]
    fn spawn_sleep_and_join() {
        run(|| async {
            let started = Instant::now();
            let handle = GlommioRuntime::spawn(async {
                GlommioRuntime::sleep(Duration::from_millis(20)).await;
                7
            });
            assert_eq!(handle.await, Ok(7));
            assert!(started.elapsed() >= Duration::from_millis(20));
        });
    }

    #[test]
    fn timeout_expires_and_completes() {
        run(|| async {
            let slow = GlommioRuntime::timeout(
                Duration::from_millis(10),
                GlommioRuntime::sleep(Duration::from_secs(5)),
            );
            assert_eq!(slow.await, Err(Elapsed));
            let fast = GlommioRuntime::timeout(Duration::from_secs(5), async { 3 });
            assert_eq!(fast.await, Ok(3));
        });
    }

    #[test]
    fn detached_task_outlives_its_dropped_handle() {
        run(|| async {
            let (tx, mut rx) = <TokioMpsc as Mpsc>::channel::<u32>(4);
            drop(GlommioRuntime::spawn(async move {
                GlommioRuntime::sleep(Duration::from_millis(5)).await;
                let _ = tx.send(9).await;
            }));
            assert_eq!(rx.recv().await, Some(9));
        });
    }

    #[test]
    fn cross_thread_wakeup_reaches_the_executor() {
        let (tx, rx) = flume::bounded::<u32>(1);
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(10));
            tx.send(5).expect("receiver alive");
        });
        run(move || async move {
            assert_eq!(rx.recv_async().await, Ok(5));
        });
        sender.join().expect("sender thread");
    }
}
