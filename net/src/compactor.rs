//! Auto compaction: etcd's `--auto-compaction-mode` / `--auto-compaction-retention`, with
//! etcd 3.4's schedule, compacting through the [`Router`] as a client `Compact` does, so every
//! shard compacts at one revision.
//!
//! The schedules are sans-I/O ([`Periodic`], [`RevisionWindow`]): the driver ([`run`])
//! hands them the time and what it sampled, and they say when to compact and at which revision.
//!
//! **Periodic** (retention `P`, e.g. `1h`, `30m`, `5s`; a bare integer is hours). With
//! `I = min(P, 1h)` and the tick `T = I / 10`, the driver samples the current revision every
//! `T` and keeps the last `P / T + 1` samples. The first compaction comes `P` after start; later
//! ones every `I` after the last success; each compacts at the oldest sample kept. A failed
//! compaction is retried at the next tick. Worked example, `P = 2s`: `T = 200ms`, 11 samples;
//! at 2.0s it compacts at the revision sampled at start; at 4.0s, at the one sampled at 1.8s
//! (the window is full: 11 samples, the newest taken one tick ago, so the oldest is 2.2s old);
//! then every 2s at the revision of 2.2s before. With `P = 24h`: the first compaction after a
//! day, then hourly, each keeping a little over a day.
//!
//! **Revision** (retention `N`): every [`REVISION_CHECK_INTERVAL`] (5 minutes, as etcd), it
//! compacts at `current - N` unless that is not above 0 or is the revision it compacted at last.
//!
//! Invariants: only the member whose shard 0 replica leads compacts (etcd pauses the compactor
//! on followers, which keep sampling, so a new leader compacts on schedule); a compaction refused
//! because the revision is already compacted counts as done, as etcd's does; the driver holds
//! no lock and stops when its stop future resolves, without waiting for a compaction in flight.

use std::collections::VecDeque;
use std::future::Future;
use std::time::{Duration, Instant};

use ballast_consensus::{Request, ShardError};
use ballast_engine::{Error as EngineError, Revision};
use ballast_tuning::settings::AutoCompaction;

use crate::router::{RouteError, Router};

/// How often revision mode checks (etcd's `revInterval`).
pub const REVISION_CHECK_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// The longest interval between periodic compactions, whatever the retention.
pub const PERIODIC_INTERVAL_MAX: Duration = Duration::from_secs(60 * 60);
/// Periodic mode samples the revision this many times per compaction interval.
const SAMPLES_PER_INTERVAL: u32 = 10;

/// The periodic schedule (see the module comment).
#[derive(Debug)]
pub struct Periodic {
    retention: Duration,
    /// Between compactions once the first is done: `min(retention, 1h)`.
    interval: Duration,
    /// Between samples, and between a failed compaction and its retry.
    tick: Duration,
    /// The revisions sampled, oldest first; at most `samples_max`.
    samples: VecDeque<Revision>,
    samples_max: usize,
    last_success: Instant,
    /// `retention` until the first compaction is attempted, `interval` after.
    wait: Duration,
}

impl Periodic {
    pub fn new(retention: Duration, now: Instant) -> Periodic {
        assert!(!retention.is_zero(), "a zero retention disables compaction");
        let interval = retention.min(PERIODIC_INTERVAL_MAX);
        let tick = (interval / SAMPLES_PER_INTERVAL).max(Duration::from_nanos(1));
        let samples_max = usize::try_from(retention.as_nanos() / tick.as_nanos())
            .unwrap_or(usize::MAX)
            .saturating_add(1);
        Periodic {
            retention,
            interval,
            tick,
            // Bounded by samples_max; 24h keeps 241.
            samples: VecDeque::with_capacity(samples_max.min(4096)),
            samples_max,
            last_success: now,
            wait: retention,
        }
    }

    pub fn tick(&self) -> Duration {
        self.tick
    }

    /// Keeps `revision`, the current one, dropping the oldest sample past the window.
    pub fn sample(&mut self, revision: Revision) {
        self.samples.push_back(revision);
        if self.samples.len() > self.samples_max {
            self.samples.pop_front();
        }
    }

    /// After a tick: the revision to compact at now, if this member leads and it is time.
    pub fn due(&mut self, now: Instant, leading: bool) -> Option<Revision> {
        if !leading || now.saturating_duration_since(self.last_success) < self.wait {
            return None;
        }
        let revision = *self.samples.front()?;
        // The first wait is the whole retention; every later one the interval, even when this
        // attempt fails (it is then retried at each tick).
        self.wait = self.interval;
        Some(revision)
    }

    /// The compaction `due` asked for ended; `succeeded` also when it was already compacted.
    pub fn finished(&mut self, now: Instant, succeeded: bool) {
        if succeeded {
            self.last_success = now;
        }
    }
}

/// The revision-count schedule (see the module comment).
#[derive(Debug)]
pub struct RevisionWindow {
    keep: Revision,
    /// The revision last compacted at (0: none yet).
    last: Revision,
}

impl RevisionWindow {
    pub fn new(keep_revisions: u64) -> RevisionWindow {
        assert!(keep_revisions > 0, "a zero retention disables compaction");
        RevisionWindow {
            keep: Revision::try_from(keep_revisions).unwrap_or(Revision::MAX),
            last: 0,
        }
    }

    pub fn tick(&self) -> Duration {
        REVISION_CHECK_INTERVAL
    }

    /// After a tick: the revision to compact at, given the current one, if this member leads.
    pub fn due(&self, current: Revision, leading: bool) -> Option<Revision> {
        let at = current.saturating_sub(self.keep);
        (leading && at > 0 && at != self.last).then_some(at)
    }

    pub fn finished(&mut self, at: Revision, succeeded: bool) {
        if succeeded {
            self.last = at;
        }
    }
}

/// What the driver learns from the store at each tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// The current revision (the highest of the shards').
    pub revision: Revision,
    /// Whether this member's replica of shard 0 leads its group.
    pub leading: bool,
}

/// The store the compactor samples and compacts. Contract: `sample` answers from this member
/// alone (no consensus round), `None` when it cannot tell; `compact` compacts every shard at
/// `revision` as a client `Compact` would.
pub trait Target {
    fn sample(&self) -> impl Future<Output = Option<Sample>> + Send;
    fn compact(&self, revision: Revision) -> impl Future<Output = Result<(), RouteError>> + Send;
}

impl Target for Router {
    async fn sample(&self) -> Option<Sample> {
        let statuses = self.statuses().await;
        let leading = matches!(statuses.first(), Some(Ok(s)) if s.is_leader);
        let revision = statuses
            .iter()
            .filter_map(|s| s.as_ref().ok().map(|s| s.revision))
            .max()?;
        Some(Sample { revision, leading })
    }

    async fn compact(&self, revision: Revision) -> Result<(), RouteError> {
        self.call(Request::Compact { revision }).await.map(|_| ())
    }
}

/// Whether a refused compaction is one etcd's compactor counts as done: the revision is
/// already compacted (another compaction got there first).
pub fn already_compacted(err: &RouteError) -> bool {
    matches!(
        err,
        RouteError::Shard {
            source: ShardError::Engine(EngineError::Compacted { .. }),
            ..
        }
    )
}

enum Schedule {
    Periodic(Periodic),
    Revision(RevisionWindow),
}

/// Runs auto compaction over `target` (the server's [`Router`]) until `stop` resolves; with
/// compaction disabled it only waits for `stop`. A tick while `paused()` (a CORRUPT alarm is
/// raised: etcd refuses every compaction then) compacts nothing; the next tick tries again.
pub async fn run<T: Target>(
    target: T,
    auto: AutoCompaction,
    paused: impl Fn() -> bool,
    stop: impl Future<Output = ()>,
) {
    let mut schedule = match auto {
        AutoCompaction::Disabled => return stop.await,
        AutoCompaction::Periodic { retention_ms } if retention_ms > 0 => {
            let retention = Duration::from_millis(retention_ms);
            let p = Periodic::new(retention, Instant::now());
            tracing::info!(
                mode = "periodic",
                retention = ?retention,
                interval = ?p.interval,
                "auto compaction enabled"
            );
            Schedule::Periodic(p)
        }
        AutoCompaction::Revision { keep_revisions } if keep_revisions > 0 => {
            tracing::info!(
                mode = "revision",
                retention = keep_revisions,
                interval = ?REVISION_CHECK_INTERVAL,
                "auto compaction enabled"
            );
            Schedule::Revision(RevisionWindow::new(keep_revisions))
        }
        _ => return stop.await,
    };
    tokio::pin!(stop);
    // Periodic mode samples before each wait (etcd's loop does too); the first sample is the
    // revision at start.
    let mut sample = target.sample().await;
    loop {
        let tick = match &mut schedule {
            Schedule::Periodic(p) => {
                if let Some(s) = sample {
                    p.sample(s.revision);
                }
                p.tick()
            }
            Schedule::Revision(r) => r.tick(),
        };
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(tick) => {}
        }
        sample = target.sample().await;
        let Some(Sample { revision, leading }) = sample else {
            tracing::debug!("auto compaction: the shards' revision is unknown; skipping a tick");
            continue;
        };
        if paused() {
            tracing::debug!("auto compaction: a CORRUPT alarm is raised; skipping a tick");
            continue;
        }
        let started = Instant::now();
        let due = match &mut schedule {
            Schedule::Periodic(p) => p.due(started, leading),
            Schedule::Revision(r) => r.due(revision, leading),
        };
        let Some(at) = due else { continue };
        match &schedule {
            Schedule::Periodic(p) => tracing::info!(
                revision = at,
                compact_period = ?p.retention,
                "starting auto periodic compaction"
            ),
            Schedule::Revision(r) => tracing::info!(
                revision = at,
                revision_compaction_retention = r.keep,
                "starting auto revision compaction"
            ),
        }
        // A stop does not wait for a compaction in flight: it is one Raft entry per shard,
        // applied or not as the shards stop.
        let result = tokio::select! {
            () = &mut stop => return,
            result = target.compact(at) => result,
        };
        let err = match result {
            Ok(()) => None,
            Err(err) if already_compacted(&err) => None,
            Err(err) => Some(err),
        };
        let took = started.elapsed();
        match (&mut schedule, err) {
            (Schedule::Periodic(p), None) => {
                p.finished(Instant::now(), true);
                tracing::info!(
                    revision = at,
                    compact_period = ?p.retention,
                    took = ?took,
                    "completed auto periodic compaction"
                );
            }
            (Schedule::Periodic(p), Some(err)) => {
                p.finished(Instant::now(), false);
                tracing::warn!(
                    revision = at,
                    compact_period = ?p.retention,
                    retry_interval = ?p.tick,
                    %err,
                    "failed auto periodic compaction"
                );
            }
            (Schedule::Revision(r), None) => {
                r.finished(at, true);
                tracing::info!(
                    revision = at,
                    revision_compaction_retention = r.keep,
                    took = ?took,
                    "completed auto revision compaction"
                );
            }
            (Schedule::Revision(r), Some(err)) => {
                r.finished(at, false);
                tracing::warn!(
                    revision = at,
                    revision_compaction_retention = r.keep,
                    retry_interval = ?REVISION_CHECK_INTERVAL,
                    %err,
                    "failed auto revision compaction"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests;
