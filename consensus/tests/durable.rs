//! A durable shard on real files (glommio DMA, O_DIRECT) end to end: what was acknowledged is
//! there after a restart, with the same revisions; checkpoints run on their thresholds, the
//! log is purged behind them and a restart replays only the log after the last one; a damaged
//! log refuses to start with a message naming the file. On simulated disks with an injected
//! fault: a failed log write or checkpoint stops the shard (fail-stop).

use std::path::Path;
use std::time::{Duration, Instant};

use std::sync::Arc;

use ballast_consensus::durable::{Disks, ShardStorage};
use ballast_consensus::{Request, Response, ShardConfig, ShardError, ShardHandle, ShardStatus};
use ballast_engine::btree;
use ballast_engine::io::sim::{FaultOp, SimDisk};
use ballast_engine::wal::WalConfig;
use ballast_engine::{DeleteRangeRequest, PutRequest, RangeRequest};
use bytes::Bytes;

mod common;
use common::*;

/// Small files, so a test crosses several WAL segments and page-log segments.
fn storage(dir: &Path) -> ShardStorage {
    ShardStorage {
        wal: WalConfig {
            segment_bytes: 1 << 20,
            record_payload_bytes_max: 256 << 10,
            ..WalConfig::default()
        },
        pages: btree::Config {
            segment_bytes: 1 << 20,
            cache_bytes: 4 << 20,
            ..btree::Config::default()
        },
        ..ShardStorage::new(dir)
    }
}

fn config(storage: ShardStorage) -> ShardConfig {
    ShardConfig {
        storage: Some(storage),
        ..ShardConfig::default()
    }
}

fn everything() -> Request {
    Request::Range(RangeRequest {
        key: Bytes::from_static(b"\0"),
        range_end: Bytes::from_static(b"\0"),
        ..RangeRequest::default()
    })
}

/// Every key-value with its revisions, and the store revision.
async fn dump(shard: &Shard) -> (i64, Vec<(Bytes, Bytes, i64, i64, i64)>) {
    let reply = shard.call(everything()).await.expect("range");
    let Response::Range(r) = reply.response else {
        panic!("range answered otherwise")
    };
    let kvs = r
        .kvs
        .into_iter()
        .map(|kv| {
            (
                kv.key,
                kv.value,
                kv.create_revision,
                kv.mod_revision,
                kv.version,
            )
        })
        .collect();
    (reply.revision, kvs)
}

fn files(dir: &Path, suffix: &str) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(suffix))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn acknowledged_writes_survive_a_restart_with_their_revisions() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut shard = Shard::start(config(storage(dir.path())));
    for i in 0..200 {
        shard
            .call(put(&format!("key/{i:03}"), &format!("value {i}")))
            .await
            .expect("put");
    }
    shard
        .call(Request::DeleteRange(DeleteRangeRequest {
            key: b("key/010"),
            range_end: b("key/020"),
            ..DeleteRangeRequest::default()
        }))
        .await
        .expect("delete");
    let granted = shard
        .call(Request::LeaseGrant { id: 77, ttl: 600 })
        .await
        .expect("lease grant");
    assert!(matches!(
        granted.response,
        Response::LeaseGrant { id: 77, .. }
    ));
    shard
        .call(Request::Put(PutRequest {
            key: b("leased"),
            value: b("v"),
            lease: 77,
            ..PutRequest::default()
        }))
        .await
        .expect("put with lease");
    shard
        .call(Request::Compact { revision: 50 })
        .await
        .expect("compact");
    let before = dump(&shard).await;
    let status = shard.status().await;
    assert!(status.durable);
    assert_eq!(
        status.checkpoints, 0,
        "no threshold reached: all in the log"
    );
    shard.stop();

    let shard = Shard::start(config(storage(dir.path())));
    assert_eq!(
        dump(&shard).await,
        before,
        "the log replays to the same store"
    );
    let status = shard.status().await;
    assert_eq!(status.compact_revision, 50);
    let ttl = shard
        .call(Request::LeaseTimeToLive { id: 77, keys: true })
        .await
        .expect("the lease survives");
    let Response::LeaseTimeToLive(t) = ttl.response else {
        panic!("ttl answered otherwise")
    };
    assert_eq!(t.granted_ttl, 600);
    assert_eq!(t.keys, vec![b("leased")]);
    // Revisions go on from where they were.
    let reply = shard.call(put("after", "restart")).await.expect("put");
    assert_eq!(reply.revision, before.0 + 1);
}

/// An advance is kept across restarts both ways: replayed from the log, and written by a
/// checkpoint that it alone made due (the log replays nothing after it then).
#[tokio::test]
async fn an_advanced_revision_survives_restarts_and_the_next_put_follows_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let st = ShardStorage {
        checkpoint_interval: Duration::from_secs(3600),
        ..storage(dir.path())
    };
    let mut shard = Shard::start(config(st.clone()));
    shard.call(put("a", "1")).await.expect("put");
    let advanced = shard
        .call(Request::Advance { to: 1000 })
        .await
        .expect("advance");
    assert_eq!(advanced.revision, 1000);
    assert_eq!(shard.status().await.checkpoints, 0);
    shard.stop();

    // From the log: the advance is replayed.
    let mut shard = Shard::start(config(st));
    assert_eq!(shard.status().await.revision, 1000);
    let reply = shard.call(put("b", "2")).await.expect("put");
    assert_eq!(reply.revision, 1001, "the next put takes advance + 1");
    let advanced = shard
        .call(Request::Advance { to: 5000 })
        .await
        .expect("advance");
    assert_eq!(advanced.revision, 5000);
    shard.stop();

    // From a checkpoint: with a short interval, checkpoints follow the replayed writes; then
    // an advance alone makes the next one due.
    let st = ShardStorage {
        checkpoint_interval: Duration::from_millis(20),
        ..storage(dir.path())
    };
    let mut shard = Shard::start(config(st.clone()));
    // Settled: a checkpoint holds every entry up to `index` and nothing waits for another.
    let settled = |s: &ShardStatus, index: u64| {
        s.checkpoints > 0 && s.checkpoint_index >= index && s.checkpoint_pending_changes == 0
    };
    let replayed = wait_status(&shard, |s| s.revision == 5000).await;
    assert_eq!(replayed.revision, 5000, "{replayed:?}");
    let status = wait_status(&shard, |s| settled(s, replayed.applied_index)).await;
    assert!(settled(&status, replayed.applied_index), "{status:?}");
    let advanced = shard
        .call(Request::Advance { to: 9000 })
        .await
        .expect("advance");
    assert_eq!(advanced.revision, 9000);
    let advance_index = shard.status().await.applied_index;
    assert!(advance_index > status.checkpoint_index);
    let status = wait_status(&shard, |s| settled(s, advance_index)).await;
    assert!(
        settled(&status, advance_index),
        "the advance (entry {advance_index}) alone made a checkpoint due: {status:?}"
    );
    let before = dump(&shard).await;
    let checkpoint_index = status.checkpoint_index;
    shard.stop();

    let shard = Shard::start(config(st));
    let status = shard.status().await;
    assert_eq!(status.checkpoint_index, checkpoint_index, "{status:?}");
    assert_eq!(status.revision, 9000, "the checkpoint kept the advance");
    assert_eq!(dump(&shard).await, before);
    let reply = shard.call(put("c", "3")).await.expect("put");
    assert_eq!(reply.revision, 9001);
}

/// The shard's status once `done` holds of it, or when [`WAIT`] has passed.
async fn wait_status(shard: &Shard, done: impl Fn(&ShardStatus) -> bool) -> ShardStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = shard.status().await;
        if done(&s) || Instant::now() > deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn checkpoints_purge_the_log_and_restart_replays_only_the_tail() {
    let dir = tempfile::tempdir().expect("temp dir");
    let st = ShardStorage {
        checkpoint_bytes: 256 << 10,
        ..storage(dir.path())
    };
    let mut shard = Shard::start(ShardConfig {
        snapshot_count: 1_000_000,
        ..config(st.clone())
    });
    let value = "x".repeat(2000);
    // ~8 MB of values through 1 MiB WAL segments: checkpoints must purge the log as it goes.
    for i in 0..4000 {
        shard
            .call(put(&format!("big/{:04}", i % 1500), &value))
            .await
            .expect("put");
    }
    let deadline = Instant::now() + WAIT;
    let status = loop {
        let s = shard.status().await;
        if s.checkpoints >= 2 || Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        status.checkpoints >= 2,
        "checkpoints ran on size: {status:?}"
    );
    assert!(status.checkpoint_index > 1000, "{status:?}");
    assert!(status.page_log_bytes > 0);
    let wal_segments = files(&dir.path().join("wal"), ".seg");
    assert!(
        wal_segments < 8,
        "the log is purged behind checkpoints: {wal_segments} segments of 1 MiB for ~8 MB written"
    );
    let before = dump(&shard).await;
    let checkpoint_index = status.checkpoint_index;
    shard.stop();

    let shard = Shard::start(config(st));
    let status = shard.status().await;
    // A checkpoint may still have completed between the status above and the stop.
    assert!(
        status.checkpoint_index >= checkpoint_index,
        "opened at the last checkpoint: {} < {checkpoint_index}",
        status.checkpoint_index
    );
    assert_eq!(dump(&shard).await, before);
}

#[tokio::test]
async fn a_damaged_log_refuses_to_start_and_names_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut shard = Shard::start(config(storage(dir.path())));
    for i in 0..100 {
        shard.call(put(&format!("k{i}"), "v")).await.expect("put");
    }
    shard.stop();
    // Flip a byte in the middle of the records of the first segment.
    let wal = dir.path().join("wal");
    let mut segments: Vec<_> = std::fs::read_dir(&wal)
        .expect("wal dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segments.sort();
    let first = segments.first().expect("a segment");
    let mut bytes = std::fs::read(first).expect("read segment");
    let at = 4096 + 3000;
    bytes[at] ^= 0x40;
    std::fs::write(first, &bytes).expect("write segment");
    let err = ShardHandle::spawn("damaged", config(storage(dir.path())))
        .err()
        .expect("a damaged log refuses to start");
    let msg = err.to_string();
    let name = first.file_name().unwrap().to_string_lossy().to_string();
    assert!(msg.contains(&name), "the error names the file: {msg}");
}

/// A shard on simulated disks whose `file` fails its next `op`: the fault is armed when the
/// disks are made, so it hits the first such operation on that file.
fn faulty(file: &'static str, op: FaultOp, pages_fault: bool) -> ShardStorage {
    let make = move || {
        let (wal, pages) = (SimDisk::new(1), SimDisk::new(2));
        if pages_fault {
            pages.fail_next(file, op);
        } else {
            wal.fail_next(file, op);
        }
        (wal, pages)
    };
    ShardStorage {
        disks: Disks::Sim(Arc::new(make)),
        wal: WalConfig {
            segment_bytes: 64 << 10,
            record_payload_bytes_max: 16 << 10,
            ..WalConfig::default()
        },
        pages: btree::Config {
            segment_bytes: 64 * btree::PAGE_SIZE as u64,
            ..btree::Config::default()
        },
        checkpoint_bytes: 16 << 10,
        checkpoint_interval: Duration::from_millis(20),
        ..ShardStorage::new("sim")
    }
}

/// Writes until the shard refuses one; then every request but Status is refused with the
/// failure, which Status reports too.
async fn assert_fail_stop(shard: &Shard, names: &str) {
    let mut acknowledged = 0;
    let failure = loop {
        assert!(acknowledged < 5000, "the fault never hit");
        match shard
            .call(put(&format!("k{acknowledged}"), &"v".repeat(500)))
            .await
        {
            Ok(_) => acknowledged += 1,
            Err(ShardError::Failed { cause }) => break cause,
            Err(other) => panic!("unexpected error {other:?}"),
        }
        // Let checkpoints run between writes.
        if acknowledged % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    };
    assert!(failure.contains(names), "{failure}");
    for request in [
        put("later", "v"),
        get("k0", true),
        get("k0", false),
        Request::LeaseGrant { id: 0, ttl: 60 },
        Request::Hash,
    ] {
        match shard.call(request).await {
            Err(ShardError::Failed { cause }) => assert!(cause.contains(names), "{cause}"),
            other => panic!("a stopped shard answered {other:?}"),
        }
    }
    let status = shard.status().await;
    assert!(
        status.failure.as_deref().is_some_and(|f| f.contains(names)),
        "{status:?}"
    );
    assert!(acknowledged > 0, "the shard served before the fault");
}

#[tokio::test]
async fn a_failed_log_write_stops_the_shard() {
    // The WAL's second segment: its preparation (or creation) writes it first.
    let shard = Shard::start(config(faulty(
        "wal-0000000000000002.seg",
        FaultOp::Write,
        false,
    )));
    assert_fail_stop(&shard, "wal-0000000000000002.seg").await;
}

#[tokio::test]
async fn a_failed_checkpoint_stops_the_shard() {
    let shard = Shard::start(config(faulty("pages-00000001.seg", FaultOp::Write, true)));
    assert_fail_stop(&shard, "checkpoint failed").await;
}

/// A restarted shard opens without reading its data: the store's memory starts nearly empty,
/// reads load what they need from the page log, and memory is brought back within the cache
/// bound afterwards, while every answer stays the same.
#[tokio::test]
async fn a_restarted_shard_reads_its_page_log_within_a_bounded_memory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cache = 256 << 10;
    let st = ShardStorage {
        checkpoint_bytes: 256 << 10,
        pages: btree::Config {
            segment_bytes: 1 << 20,
            cache_bytes: cache,
            ..btree::Config::default()
        },
        ..storage(dir.path())
    };
    let mut shard = Shard::start(ShardConfig {
        snapshot_count: 1_000_000,
        ..config(st.clone())
    });
    let value = "v".repeat(1000);
    // ~4 MB of values over 2,000 keys (1,000 of them written twice), far above the bound.
    for i in 0..3000 {
        shard
            .call(put(&format!("k/{:04}", i % 2000), &value))
            .await
            .expect("put");
    }
    let before = dump(&shard).await;
    let old = shard
        .call(Request::Range(RangeRequest {
            key: b("k/0500"),
            revision: 600,
            ..RangeRequest::default()
        }))
        .await
        .expect("old read");
    shard.stop();

    // Checkpoint soon after the restart, so the log tail's changes stop being pinned in
    // memory (the bound holds for clean data; changes not yet checkpointed come on top).
    let shard = Shard::start(config(ShardStorage {
        checkpoint_interval: Duration::from_millis(300),
        ..st
    }));
    let opened = shard.status().await;
    // Replaying the log after the checkpoint loads the keys those entries touch; nothing else.
    let tail = opened.applied_index - opened.checkpoint_index;
    assert!(
        opened.cached_keys <= tail && opened.cached_keys < 1000,
        "opening reads no key index beyond the log tail: {opened:?}"
    );
    assert_eq!(
        dump(&shard).await,
        before,
        "every key, loaded from the page log"
    );
    let again = shard
        .call(Request::Range(RangeRequest {
            key: b("k/0500"),
            revision: 600,
            ..RangeRequest::default()
        }))
        .await
        .expect("old read after restart");
    assert_eq!(range_values(again), range_values(old));
    // After a checkpoint and the loads, housekeeping evicts clean data down to the bound.
    let deadline = Instant::now() + WAIT;
    let status = loop {
        let s = shard.status().await;
        let settled = s.checkpoints >= 1 && s.checkpoint_pending_changes == 0;
        if (settled && s.size_bytes <= cache) || Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.cache_loads > 0, "{status:?}");
    assert!(
        status.size_bytes <= cache,
        "memory held by the store comes back within {cache} bytes: {status:?}"
    );
    assert_eq!(dump(&shard).await, before, "answers after eviction");
}

/// The alarm table (shard 0's) survives restarts both ways: replayed from the log, and read
/// from a checkpoint's facts; the node's view (`ShardConfig::alarms`) follows it, and the
/// published backend size grows with the data.
#[tokio::test]
async fn alarms_survive_restarts_from_the_log_and_from_a_checkpoint() {
    use ballast_consensus::{AlarmAction, AlarmMember, AlarmType, NodeAlarms};
    use std::sync::atomic::{AtomicU64, Ordering};

    let nospace = AlarmMember {
        alarm: AlarmType::NOSPACE,
        member_id: 0xfeed,
    };
    let corrupt = AlarmMember {
        alarm: AlarmType::CORRUPT,
        member_id: 9,
    };
    let alarm = |action, member| Request::Alarm { action, member };
    let listed = |reply: ballast_consensus::Reply| match reply.response {
        Response::Alarms(a) => a,
        other => panic!("alarm answered {other:?}"),
    };
    let node = |st: &ShardStorage| {
        let alarms = Arc::new(NodeAlarms::default());
        let backend = Arc::new(AtomicU64::new(0));
        let c = ShardConfig {
            alarms: alarms.clone(),
            backend_bytes: backend.clone(),
            ..config(st.clone())
        };
        (c, alarms, backend)
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let st = ShardStorage {
        checkpoint_interval: Duration::from_secs(3600),
        ..storage(dir.path())
    };
    let (c, alarms, backend) = node(&st);
    let mut shard = Shard::start(c);
    let before = backend.load(Ordering::Relaxed);
    shard
        .call(put("k", &"v".repeat(10_000)))
        .await
        .expect("put");
    assert!(
        backend.load(Ordering::Relaxed) >= before + 10_000,
        "the backend size counts the bytes applied since the last checkpoint"
    );
    let raised = shard
        .call(alarm(AlarmAction::Activate, nospace))
        .await
        .expect("activate");
    assert_eq!(listed(raised), vec![nospace]);
    shard
        .call(alarm(AlarmAction::Activate, corrupt))
        .await
        .expect("activate");
    assert!(alarms.nospace() && alarms.corrupt());
    let gone = shard
        .call(alarm(AlarmAction::Deactivate, corrupt))
        .await
        .expect("deactivate");
    assert_eq!(listed(gone), vec![corrupt]);
    let revision = shard.status().await.revision;
    assert_eq!(revision, 2, "alarms take no revision");
    shard.stop();

    // From the log.
    let (c, alarms, _) = node(&st);
    let mut shard = Shard::start(c);
    let all = shard
        .call(alarm(AlarmAction::Get, AlarmMember::default()))
        .await
        .expect("get");
    assert_eq!(listed(all), vec![nospace]);
    assert!(alarms.nospace() && !alarms.corrupt());
    shard.stop();

    // From a checkpoint: a short interval checkpoints the replayed entries, and the log after
    // it is empty.
    let st = ShardStorage {
        checkpoint_interval: Duration::from_millis(20),
        ..st
    };
    let (c, _, _) = node(&st);
    let mut shard = Shard::start(c);
    let status = wait_status(&shard, |s| {
        s.checkpoints > 0 && s.checkpoint_index >= s.applied_index
    })
    .await;
    assert!(status.checkpoints > 0, "{status:?}");
    shard.stop();
    let (c, alarms, backend) = node(&st);
    let shard = Shard::start(c);
    assert_eq!(
        shard.status().await.checkpoint_index,
        status.checkpoint_index
    );
    assert_eq!(alarms.list(), vec![nospace]);
    let got = shard
        .call(alarm(
            AlarmAction::Get,
            AlarmMember {
                alarm: AlarmType::CORRUPT,
                member_id: 0,
            },
        ))
        .await
        .expect("get");
    assert!(listed(got).is_empty());
    assert!(
        backend.load(Ordering::Relaxed) >= 10_000,
        "the checkpointed pages count"
    );
}
