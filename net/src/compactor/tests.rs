//! The schedules driven tick by tick with made-up times and revisions (deterministic), the
//! driver over a scripted target, and the driver over a router of real in-memory shards.

use std::sync::{Arc, Mutex};

use ballast_consensus::{Response, ShardConfig, ShardHandle, ShardId};

use super::*;
use crate::partition::{PartitionMap, Pin};

/// The revision sampled at tick `k`: one write per tick, so a compaction's revision names the
/// tick it was sampled at.
fn rev(k: u32) -> Revision {
    100 + Revision::from(k)
}

/// Drives `p` as [`run`] does for `ticks` ticks: a sample at start, then at each tick a due
/// check (compacting, succeeding unless `fails(k)`) and a sample. Returns (tick, revision) of
/// each compaction attempted.
fn drive(
    p: &mut Periodic,
    start: Instant,
    ticks: u32,
    leading: impl Fn(u32) -> bool,
    fails: impl Fn(u32) -> bool,
) -> Vec<(u32, Revision)> {
    let mut out = Vec::new();
    p.sample(rev(0));
    for k in 1..=ticks {
        let now = start + p.tick() * k;
        if let Some(at) = p.due(now, leading(k)) {
            out.push((k, at));
            p.finished(now, !fails(k));
        }
        p.sample(rev(k));
    }
    out
}

#[test]
fn periodic_short_retention_compacts_every_retention_at_the_oldest_sample() {
    let start = Instant::now();
    let mut p = Periodic::new(Duration::from_secs(2), start);
    assert_eq!(p.tick(), Duration::from_millis(200));
    let got = drive(&mut p, start, 40, |_| true, |_| false);
    // At 2s: the revision at start; then every 2s the one sampled 2.2s before (11 samples).
    assert_eq!(
        got,
        vec![(10, rev(0)), (20, rev(9)), (30, rev(19)), (40, rev(29))]
    );
}

#[test]
fn periodic_long_retention_waits_it_once_then_compacts_hourly() {
    let start = Instant::now();
    let mut p = Periodic::new(Duration::from_secs(2 * 3600), start);
    assert_eq!(p.tick(), Duration::from_secs(6 * 60));
    let got = drive(&mut p, start, 40, |_| true, |_| false);
    // 21 samples 6 minutes apart: each compaction keeps 2h06m of history.
    assert_eq!(got, vec![(20, rev(0)), (30, rev(9)), (40, rev(19))]);
}

#[test]
fn periodic_retention_under_an_hour_ticks_a_tenth_of_it() {
    let p = Periodic::new(Duration::from_secs(30 * 60), Instant::now());
    assert_eq!(p.tick(), Duration::from_secs(3 * 60));
    let p = Periodic::new(Duration::from_secs(24 * 3600), Instant::now());
    assert_eq!(p.tick(), Duration::from_secs(6 * 60));
    assert_eq!(p.samples_max, 241);
}

#[test]
fn periodic_failure_is_retried_at_the_next_tick() {
    let start = Instant::now();
    let mut p = Periodic::new(Duration::from_secs(2), start);
    let got = drive(&mut p, start, 21, |_| true, |k| k == 10);
    // The retry at tick 11 still finds the start sample oldest (11 kept); the next comes a
    // full interval after that success.
    assert_eq!(got, vec![(10, rev(0)), (11, rev(0)), (21, rev(10))]);
}

#[test]
fn periodic_follower_samples_but_does_not_compact_until_it_leads() {
    let start = Instant::now();
    let mut p = Periodic::new(Duration::from_secs(2), start);
    let got = drive(&mut p, start, 35, |k| k >= 25, |_| false);
    // Leading from tick 25: overdue, so at once, at the revision of 2.2s before.
    assert_eq!(got, vec![(25, rev(14)), (35, rev(24))]);
}

#[test]
fn revision_mode_keeps_the_last_n_and_skips_a_repeat() {
    let mut r = RevisionWindow::new(5);
    assert_eq!(r.tick(), Duration::from_secs(300));
    assert_eq!(r.due(3, true), None, "nothing below revision 1");
    assert_eq!(r.due(5, true), None);
    assert_eq!(r.due(10, false), None, "a follower does not compact");
    assert_eq!(r.due(10, true), Some(5));
    r.finished(5, false);
    assert_eq!(r.due(10, true), Some(5), "a failure is retried");
    r.finished(5, true);
    assert_eq!(r.due(10, true), None, "no writes since: nothing to do");
    assert_eq!(r.due(12, true), Some(7));
    let r = RevisionWindow::new(u64::MAX);
    assert_eq!(r.due(Revision::MAX, true), None);
}

#[test]
fn an_already_compacted_revision_counts_as_done() {
    let compacted = RouteError::Shard {
        shard: 1,
        source: ShardError::Engine(EngineError::Compacted {
            compact_revision: 9,
        }),
    };
    assert!(already_compacted(&compacted));
    let future = RouteError::Shard {
        shard: 0,
        source: ShardError::Engine(EngineError::FutureRevision {
            revision: 9,
            current: 3,
        }),
    };
    assert!(!already_compacted(&future));
    assert!(!already_compacted(&RouteError::Shard {
        shard: 0,
        source: ShardError::Timeout,
    }));
}

/// A target whose revision grows by one per sample; it leads as `leading` says and records
/// the compactions asked of it, refusing the first as already compacted.
#[derive(Clone, Default)]
struct Scripted {
    state: Arc<Mutex<Script>>,
}

#[derive(Default)]
struct Script {
    revision: Revision,
    following: bool,
    compactions: Vec<(Instant, Revision)>,
}

impl Target for Scripted {
    async fn sample(&self) -> Option<Sample> {
        let mut s = self.state.lock().unwrap();
        s.revision += 1;
        Some(Sample {
            revision: s.revision,
            leading: !s.following,
        })
    }

    async fn compact(&self, revision: Revision) -> Result<(), RouteError> {
        let mut s = self.state.lock().unwrap();
        s.compactions.push((Instant::now(), revision));
        if s.compactions.len() == 1 {
            return Err(RouteError::Shard {
                shard: 0,
                source: ShardError::Engine(EngineError::Compacted {
                    compact_revision: revision,
                }),
            });
        }
        Ok(())
    }
}

#[tokio::test]
async fn driver_compacts_on_schedule_and_stops() {
    let target = Scripted::default();
    let start = Instant::now();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(
        target.clone(),
        AutoCompaction::Periodic { retention_ms: 300 },
        || false,
        async move {
            let _ = stop_rx.await;
        },
    ));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("the compactor stops when told")
        .unwrap();
    let s = target.state.lock().unwrap();
    // At 300ms (the first refused as already compacted, which counts as done), 600ms, 900ms;
    // timers only run late, so two to three of them.
    assert!(
        (2..=3).contains(&s.compactions.len()),
        "{:?}",
        s.compactions
    );
    let (first_at, first_revision) = s.compactions[0];
    assert!(first_at - start >= Duration::from_millis(300));
    assert_eq!(first_revision, 1, "the revision sampled at start");
    let (second_at, second_revision) = s.compactions[1];
    assert!(second_at - first_at >= Duration::from_millis(300));
    assert!(second_revision > first_revision);
}

#[tokio::test]
async fn driver_on_a_follower_never_compacts() {
    let target = Scripted::default();
    target.state.lock().unwrap().following = true;
    run(
        target.clone(),
        AutoCompaction::Periodic { retention_ms: 100 },
        || false,
        tokio::time::sleep(Duration::from_millis(400)),
    )
    .await;
    assert!(target.state.lock().unwrap().compactions.is_empty());
}

/// While paused (a CORRUPT alarm), due ticks compact nothing; once the alarm is gone the
/// next tick compacts.
#[tokio::test]
async fn driver_paused_compacts_nothing_until_resumed() {
    let target = Scripted::default();
    let paused = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = paused.clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(
        target.clone(),
        AutoCompaction::Periodic { retention_ms: 100 },
        move || flag.load(std::sync::atomic::Ordering::Relaxed),
        async move {
            let _ = stop_rx.await;
        },
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        target.state.lock().unwrap().compactions.is_empty(),
        "no compaction while paused"
    );
    paused.store(false, std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("the compactor stops when told")
        .unwrap();
    assert!(
        !target.state.lock().unwrap().compactions.is_empty(),
        "compactions once resumed"
    );
}

#[tokio::test]
async fn driver_disabled_only_waits_for_stop() {
    let target = Scripted::default();
    run(
        target.clone(),
        AutoCompaction::Disabled,
        || false,
        tokio::time::sleep(Duration::from_millis(10)),
    )
    .await;
    let s = target.state.lock().unwrap();
    assert_eq!(s.revision, 0, "never sampled");
}

/// Two in-memory shards: `/a/` in shard 0, `/b/` in shard 1.
fn two_shards() -> Router {
    let map = PartitionMap::new(2, vec![Pin::new("/a/", 0), Pin::new("/b/", 1)]).unwrap();
    let handles = (0..2)
        .map(|id| {
            let config = ShardConfig {
                shard_id: ShardId(id),
                tick: Duration::from_millis(20),
                ..ShardConfig::default()
            };
            ShardHandle::spawn(&format!("compactor-test-{id}"), config)
                .unwrap()
                .0
        })
        .collect();
    Router::new(handles, map)
}

#[tokio::test]
async fn every_shard_compacts_at_one_revision_through_the_router() {
    let router = two_shards();
    router.load_revisions().await.unwrap();
    for (i, key) in ["/a/1", "/b/1", "/a/2", "/b/2"].iter().enumerate() {
        router
            .call(Request::Put(ballast_engine::PutRequest {
                key: bytes::Bytes::copy_from_slice(key.as_bytes()),
                value: bytes::Bytes::from(format!("v{i}")),
                ..Default::default()
            }))
            .await
            .expect("put");
    }
    let written = router.max_revision();
    let task = tokio::spawn(run(
        router.clone(),
        AutoCompaction::Periodic { retention_ms: 200 },
        || false,
        std::future::pending::<()>(),
    ));
    // Bounded: the first compaction is due 200ms after start.
    let deadline = Instant::now() + Duration::from_secs(5);
    let compacted = loop {
        let mut revisions = Vec::new();
        for shard in 0..2 {
            let reply = router.call_shard(shard, Request::Status).await.unwrap();
            let Response::Status(s) = reply.response else {
                panic!("status answered {:?}", reply.response)
            };
            revisions.push(s.compact_revision);
        }
        if revisions.iter().all(|r| *r > 0) {
            break revisions;
        }
        assert!(Instant::now() < deadline, "no compaction: {revisions:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    task.abort();
    assert_eq!(compacted[0], compacted[1], "one revision for every shard");
    assert_eq!(compacted[0], written, "the revision sampled at start");
}
