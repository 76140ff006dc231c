//! Merged watches over two real in-memory shards: `Created` first with the highest revision,
//! events in revision order across shards with none missed or repeated, history from a start
//! revision, cancel, compaction cancel, the held-events bound, and progress (stream-wide
//! requests and periodic notifications).

use std::collections::HashSet;
use std::time::Duration;

use ballast_consensus::{LeaseExpiry, Request, ShardConfig, ShardHandle, ShardId};
use ballast_engine::{DeleteRangeRequest, PutRequest};
use bytes::Bytes;
use futures::StreamExt;
use tokio::time::timeout;

use super::*;
use crate::partition::{PartitionMap, Pin};

/// Bound on waiting for any one expected message.
const WAIT: Duration = Duration::from_secs(10);

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// Keys `/a/...` in shard 0, `/b/...` in shard 1 (pinned), in-memory shards.
fn two_shards(progress_notify_interval: Duration) -> Router {
    let map = PartitionMap::new(2, vec![Pin::new("/a/", 0), Pin::new("/b/", 1)]).unwrap();
    let handles = (0..2)
        .map(|id| {
            let config = ShardConfig {
                shard_id: ShardId(id),
                tick: Duration::from_millis(20),
                lease_expiry: LeaseExpiry::Revoke,
                progress_notify_interval,
                ..ShardConfig::default()
            };
            // The thread ends when the router (the last handle) is dropped.
            ShardHandle::spawn(&format!("watch-merge-{id}"), config)
                .unwrap()
                .0
        })
        .collect();
    Router::new(handles, map)
}

fn router() -> Router {
    two_shards(Duration::from_secs(600))
}

async fn put(router: &Router, key: &str, value: &str) -> Revision {
    router
        .call(Request::Put(PutRequest {
            key: b(key),
            value: b(value),
            ..PutRequest::default()
        }))
        .await
        .expect("put")
        .revision
}

/// Every key under `/`: both shards.
fn everything(start_revision: Revision, progress_notify: bool) -> MergedSpec {
    MergedSpec {
        watch_id: 7,
        filter: WatchFilter {
            key: b("/"),
            range_end: b("0"),
            ..WatchFilter::default()
        },
        start_revision,
        progress_notify,
    }
}

async fn watch(router: &Router, spec: MergedSpec) -> (MergedWatch, mpsc::Receiver<WatchMessage>) {
    let shards = router.shards_of_range(&spec.filter.key, &spec.filter.range_end);
    assert_eq!(shards.len(), 2, "the watch spans both shards");
    let (tx, rx) = mpsc::channel(64);
    let merged = MergedWatch::start(router, shards, spec, tx)
        .await
        .expect("start");
    (merged, rx)
}

async fn next(rx: &mut mpsc::Receiver<WatchMessage>) -> WatchMessage {
    timeout(WAIT, rx.recv())
        .await
        .expect("a message in time")
        .expect("the merger is running")
}

/// Receives until `n` events came; checks each batch's header is at least its newest event.
async fn events(rx: &mut mpsc::Receiver<WatchMessage>, n: usize) -> Vec<Event> {
    let mut out = Vec::new();
    while out.len() < n {
        match next(rx).await {
            WatchMessage::Events {
                watch_id,
                revision,
                events,
            } => {
                assert_eq!(watch_id, 7);
                let newest = events.iter().map(|e| e.kv.mod_revision).max().unwrap();
                assert!(revision >= newest, "header {revision} below event {newest}");
                out.extend(events);
            }
            WatchMessage::Progress { .. } => {}
            other => panic!("expected events, got {other:?}"),
        }
    }
    assert_eq!(out.len(), n, "no more events than written");
    out
}

/// Nothing more arrives within a short while.
async fn quiet(rx: &mut mpsc::Receiver<WatchMessage>) {
    if let Ok(Some(msg)) = timeout(Duration::from_millis(200), rx.recv()).await {
        panic!("unexpected message {msg:?}");
    }
}

/// `(revision, shard)` of each event, the shard read from the key.
fn order(events: &[Event]) -> Vec<(Revision, usize)> {
    events
        .iter()
        .map(|e| {
            let shard = usize::from(e.kv.key.starts_with(b"/b/"));
            (e.kv.mod_revision, shard)
        })
        .collect()
}

fn assert_merged_order(events: &[Event]) {
    let order = order(events);
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "events not in (revision, shard) order: {order:?}"
    );
}

async fn watchers(router: &Router) -> usize {
    router
        .statuses()
        .await
        .into_iter()
        .map(|s| s.expect("status").watchers)
        .sum()
}

#[tokio::test]
async fn created_comes_first_with_the_highest_revision() {
    let router = router();
    router.load_revisions().await.unwrap();
    for i in 0..4 {
        put(&router, &format!("/a/{i}"), "x").await;
    }
    put(&router, "/b/0", "x").await;
    // Shard 0 is at 5, shard 1 at 2.
    let (_merged, mut rx) = watch(&router, everything(0, false)).await;
    assert_eq!(
        next(&mut rx).await,
        WatchMessage::Created {
            watch_id: 7,
            revision: 5
        }
    );
    quiet(&mut rx).await;
}

#[tokio::test]
async fn interleaved_writes_in_two_shards_arrive_in_revision_order_once_each() {
    let router = router();
    router.load_revisions().await.unwrap();
    let (_merged, mut rx) = watch(&router, everything(0, false)).await;
    assert!(matches!(next(&mut rx).await, WatchMessage::Created { .. }));
    const PER_SHARD: usize = 150;
    // Two writers at once, one per shard: their revisions interleave and collide.
    let writers = ["/a/", "/b/"].map(|prefix| {
        let router = router.clone();
        tokio::spawn(async move {
            for i in 0..PER_SHARD {
                put(&router, &format!("{prefix}{i:04}"), "v").await;
            }
        })
    });
    for w in writers {
        w.await.unwrap();
    }
    let got = events(&mut rx, 2 * PER_SHARD).await;
    assert_merged_order(&got);
    let keys: HashSet<Bytes> = got.iter().map(|e| e.kv.key.clone()).collect();
    assert_eq!(keys.len(), 2 * PER_SHARD, "every write exactly once");
    // Each shard's own writes keep their order.
    for prefix in [&b"/a/"[..], b"/b/"] {
        let mine: Vec<&Bytes> = got
            .iter()
            .map(|e| &e.kv.key)
            .filter(|k| k.starts_with(prefix))
            .collect();
        assert!(mine.windows(2).all(|w| w[0] < w[1]));
    }
    quiet(&mut rx).await;
}

#[tokio::test]
async fn history_from_a_start_revision_spans_both_shards_then_continues_live() {
    let router = router();
    router.load_revisions().await.unwrap();
    // Shard 0: revisions 2..=7; shard 1: 2..=4, then advanced to 7 and written at 8, 9.
    for i in 0..6 {
        put(&router, &format!("/a/{i}"), "x").await;
    }
    for i in 0..3 {
        put(&router, &format!("/b/{i}"), "x").await;
    }
    router.advance(ShardSet::one(1), 7).await.unwrap();
    put(&router, "/b/3", "x").await;
    put(&router, "/b/4", "x").await;
    let (_merged, mut rx) = watch(&router, everything(3, false)).await;
    assert_eq!(
        next(&mut rx).await,
        WatchMessage::Created {
            watch_id: 7,
            revision: 9
        }
    );
    // From revision 3: /a/1..=5 (3..=7), /b/1, /b/2 (3, 4), /b/3, /b/4 (8, 9).
    let got = events(&mut rx, 9).await;
    assert_merged_order(&got);
    assert_eq!(
        order(&got),
        vec![
            (3, 0),
            (3, 1),
            (4, 0),
            (4, 1),
            (5, 0),
            (6, 0),
            (7, 0),
            (8, 1),
            (9, 1)
        ]
    );
    // Then live: shard 1 has delivered up to 9, so shard 0's write at 8 goes out at once.
    let rev = put(&router, "/a/live", "x").await;
    let live = events(&mut rx, 1).await;
    assert_eq!(order(&live), vec![(rev, 0)]);
    quiet(&mut rx).await;
}

#[tokio::test]
async fn a_lagging_shards_later_write_is_delivered_even_below_the_created_revision() {
    let router = router();
    router.load_revisions().await.unwrap();
    for i in 0..5 {
        put(&router, &format!("/a/{i}"), "x").await;
    }
    let (_merged, mut rx) = watch(&router, everything(0, false)).await;
    assert_eq!(
        next(&mut rx).await,
        WatchMessage::Created {
            watch_id: 7,
            revision: 6
        }
    );
    // Shard 1 is still at revision 1: its next write takes revision 2.
    let rev = put(&router, "/b/late", "x").await;
    assert_eq!(rev, 2);
    let got = events(&mut rx, 1).await;
    assert_eq!(order(&got), vec![(2, 1)]);
}

#[tokio::test]
async fn cancel_cancels_every_part() {
    let router = router();
    router.load_revisions().await.unwrap();
    put(&router, "/a/0", "x").await;
    put(&router, "/a/1", "x").await;
    let (merged, mut rx) = watch(&router, everything(0, false)).await;
    assert!(matches!(next(&mut rx).await, WatchMessage::Created { .. }));
    assert_eq!(watchers(&router).await, 2);
    // The highest revision at which a part stopped: shard 0's.
    assert_eq!(merged.cancel(&router).await.unwrap(), 3);
    assert_eq!(watchers(&router).await, 0);
    put(&router, "/a/2", "x").await;
    put(&router, "/b/2", "x").await;
    // The merger ends: nothing is forwarded, and the channel closes.
    let end = timeout(WAIT, async {
        loop {
            match rx.recv().await {
                None => return,
                Some(WatchMessage::Events { .. }) => panic!("an event after the cancel"),
                Some(_) => {}
            }
        }
    });
    end.await.expect("the merger ends");
}

#[tokio::test]
async fn dropping_the_handle_closes_every_sub_stream() {
    let router = router();
    router.load_revisions().await.unwrap();
    let (merged, mut rx) = watch(&router, everything(0, false)).await;
    assert!(matches!(next(&mut rx).await, WatchMessage::Created { .. }));
    assert_eq!(watchers(&router).await, 2);
    drop(merged);
    timeout(WAIT, async {
        while watchers(&router).await != 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("both parts closed");
}

#[tokio::test]
async fn a_compacted_start_revision_cancels_the_whole_watch_once() {
    let router = router();
    router.load_revisions().await.unwrap();
    for i in 0..4 {
        put(&router, &format!("/a/{i}"), "x").await;
        put(&router, &format!("/b/{i}"), "x").await;
    }
    router
        .call(Request::Compact { revision: 4 })
        .await
        .expect("compact");
    let (_merged, mut rx) = watch(&router, everything(2, false)).await;
    assert_eq!(
        next(&mut rx).await,
        WatchMessage::Created {
            watch_id: 7,
            revision: 5
        }
    );
    match next(&mut rx).await {
        WatchMessage::Canceled {
            watch_id: 7,
            compact_revision: 4,
            ..
        } => {}
        other => panic!("expected a compaction cancel, got {other:?}"),
    }
    assert!(timeout(WAIT, rx.recv()).await.expect("ends").is_none());
    assert_eq!(watchers(&router).await, 0);
}

#[tokio::test]
async fn stream_progress_comes_after_the_merged_events_and_covers_every_shard() {
    let router = router();
    router.load_revisions().await.unwrap();
    let (merged, mut rx) = watch(&router, everything(0, false)).await;
    assert!(matches!(next(&mut rx).await, WatchMessage::Created { .. }));
    let mut last = 0;
    for i in 0..5 {
        last = put(&router, &format!("/a/{i}"), "x").await;
    }
    let stream = next_stream_id();
    let revision = timeout(
        WAIT,
        stream_progress(&router, stream, vec![merged.progress_handle()]),
    )
    .await
    .expect("answered in time")
    .expect("progress");
    assert!(
        revision >= last,
        "progress {revision} below the last write {last}"
    );
    // Every event at or below the answer was forwarded before it.
    let mut got = Vec::new();
    while let Ok(msg) = rx.try_recv() {
        if let WatchMessage::Events { events, .. } = msg {
            got.extend(events);
        }
    }
    assert_eq!(got.len(), 5);
    assert_merged_order(&got);
}

#[tokio::test]
async fn periodic_progress_is_the_lowest_of_the_parts_and_never_overtakes_an_event() {
    let router = two_shards(Duration::from_millis(100));
    router.load_revisions().await.unwrap();
    let (_merged, mut rx) = watch(&router, everything(0, true)).await;
    assert!(matches!(next(&mut rx).await, WatchMessage::Created { .. }));
    let mut writes = Vec::new();
    for i in 0..3 {
        writes.push(put(&router, &format!("/a/{i}"), "x").await);
    }
    // Shard 1 stays behind (nothing advances it but the merger's pokes).
    let mut seen_events = 0;
    let mut progress = Vec::new();
    timeout(WAIT, async {
        while progress.len() < 3 {
            match rx.recv().await.expect("running") {
                WatchMessage::Events { events, .. } => {
                    for e in events {
                        if let Some(&p) = progress.last() {
                            assert!(e.kv.mod_revision > p, "event at or below progress {p}");
                        }
                        seen_events += 1;
                    }
                }
                WatchMessage::Progress { watch_id, revision } => {
                    assert_eq!(watch_id, 7);
                    progress.push(revision);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await
    .expect("three progress notifications");
    assert_eq!(seen_events, 3);
    assert!(progress.windows(2).all(|w| w[0] <= w[1]));
    assert!(*progress.last().unwrap() >= *writes.last().unwrap());
}

#[tokio::test]
async fn a_merger_holding_too_many_events_cancels_the_watch_with_a_reason() {
    let router = router();
    router.load_revisions().await.unwrap();
    // More keys than the bound in shard 0, then one delete of them all at one revision while
    // shard 1 is behind: the merger would have to hold them all.
    let writes = (0..=HELD_EVENTS_MAX).map(|i| {
        let router = router.clone();
        async move { put(&router, &format!("/a/{i:05}"), "x").await }
    });
    futures::stream::iter(writes)
        .buffer_unordered(64)
        .for_each(|_| async {})
        .await;
    let (merged, mut rx) = watch(&router, everything(0, false)).await;
    assert!(matches!(next(&mut rx).await, WatchMessage::Created { .. }));
    router
        .call(Request::DeleteRange(DeleteRangeRequest {
            key: b("/a/"),
            range_end: b("/a0"),
            ..DeleteRangeRequest::default()
        }))
        .await
        .expect("delete");
    match next(&mut rx).await {
        WatchMessage::Canceled {
            watch_id: 7,
            compact_revision: 0,
            ..
        } => {}
        other => panic!("expected a cancel, got {other:?}"),
    }
    assert_eq!(merged.cancel_reason(), Some(HELD_EVENTS_REASON));
    assert!(timeout(WAIT, rx.recv()).await.expect("ends").is_none());
    assert_eq!(watchers(&router).await, 0);
}
