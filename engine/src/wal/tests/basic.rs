//! WAL behaviour on the simulator: append/read/reopen, group commit, truncate, purge and
//! reset, the vote, validation, fail-stop, and a cancelled flusher.

use std::cell::RefCell;
use std::rc::Rc;

use futures::executor::{block_on, LocalPool};
use futures::task::LocalSpawnExt;
use futures::FutureExt;

use super::{entry, open, read_all, small_config};
use crate::io::sim::{CrashPolicy, FaultOp, SimDisk};
use crate::io::Disk;
use crate::wal::segment::segment_name;
use crate::wal::{LogError, LogId, LogIndex, Term, Vote, Wal, WalConfig, WalError};

#[test]
fn appends_read_back_and_survive_reopen_and_crash() {
    let disk = SimDisk::new(1);
    let (wal, rec) = open(&disk).unwrap();
    assert_eq!(
        (rec.first_index, rec.last, rec.vote),
        (LogIndex(1), LogId::ZERO, None)
    );
    let want: Vec<_> = (1..=40)
        .map(|i| entry(i, 1 + i / 10, (i * 37 % 500) as usize))
        .collect();
    for chunk in want.chunks(3) {
        block_on(wal.append(chunk.to_vec())).unwrap();
    }
    assert_eq!(read_all(&wal), want);
    assert_eq!(wal.last(), LogId::new(5, 40));
    // Partial ranges, including an empty one.
    let mid = block_on(wal.read(LogIndex(7)..LogIndex(12))).unwrap();
    assert_eq!(mid, want[6..11].to_vec());
    assert!(block_on(wal.read(LogIndex(41)..LogIndex(41)))
        .unwrap()
        .is_empty());
    assert!(matches!(
        block_on(wal.read(LogIndex(0)..LogIndex(3))),
        Err(WalError::OutOfRange { .. })
    ));
    assert!(matches!(
        block_on(wal.read(LogIndex(40)..LogIndex(42))),
        Err(WalError::OutOfRange { .. })
    ));

    // Everything acknowledged is durable: a crash that drops all unsynced state keeps it.
    let after = disk.crash_with(CrashPolicy::DropAll);
    let (wal2, rec2) = open(&after).unwrap();
    assert_eq!(rec2.last, LogId::new(5, 40));
    assert_eq!(rec2.torn_tail, None);
    assert_eq!(read_all(&wal2), want);
    // And the reopened WAL appends after it.
    block_on(wal2.append(vec![entry(41, 5, 10)])).unwrap();
    let (wal3, _) = open(&after.crash_with(CrashPolicy::DropAll)).unwrap();
    assert_eq!(read_all(&wal3).len(), 41);
}

#[test]
fn appends_arriving_during_a_sync_share_the_next_write() {
    let disk = SimDisk::new(3);
    let (wal, _) = open(&disk).unwrap();
    let syncs_before = disk.stats().syncs;
    let mut pool = LocalPool::new();
    let done = Rc::new(RefCell::new(0));
    // 64 tasks; each appends when it first runs, i.e. while task 0's write and sync are in
    // flight.
    for i in 1..=64u64 {
        let (wal, done) = (wal.clone(), done.clone());
        pool.spawner()
            .spawn_local(async move {
                wal.append(vec![entry(i, 1, 20)]).await.unwrap();
                *done.borrow_mut() += 1;
            })
            .unwrap();
    }
    pool.run_until_stalled();
    assert_eq!(*done.borrow(), 64);
    let s = wal.stats();
    assert_eq!(s.records_flushed, 64);
    // One write for the first record, then the other 63 in batches of at most 6.
    assert_eq!(s.flushes, 1 + 63u64.div_ceil(6), "stats {s:?}");
    assert_eq!(
        disk.stats().syncs - syncs_before,
        s.flushes,
        "one sync per write"
    );
    assert_eq!(read_all(&wal).len(), 64);
}

#[test]
fn batches_respect_the_byte_bound_and_a_big_record_goes_alone() {
    let disk = SimDisk::new(4);
    let (wal, _) = open(&disk).unwrap();
    // 2.5 KiB records, 6 KiB batch bound: two per write.
    let futs: Vec<_> = (1..=8)
        .map(|i| wal.append(vec![entry(i, 1, 2500)]))
        .collect();
    block_on(futures::future::try_join_all(futs)).unwrap();
    assert_eq!(wal.stats().flushes, 4);

    let config = WalConfig {
        batch_bytes_max: 1024,
        ..small_config()
    };
    let disk = SimDisk::new(5);
    let (wal, _) = block_on(Wal::open(disk.clone(), config)).unwrap();
    block_on(wal.append(vec![entry(1, 1, 2900)])).unwrap();
    assert_eq!(wal.stats().flushes, 1);
    assert_eq!(read_all(&wal), vec![entry(1, 1, 2900)]);
}

#[test]
fn truncate_after_replaces_the_tail_durably() {
    let disk = SimDisk::new(6);
    let (wal, _) = open(&disk).unwrap();
    let first: Vec<_> = (1..=10).map(|i| entry(i, 1, 100)).collect();
    block_on(wal.append(first.clone())).unwrap();
    block_on(wal.truncate_after(LogIndex(5))).unwrap();
    assert_eq!(wal.last(), LogId::new(1, 5));
    let second: Vec<_> = (6..=8).map(|i| entry(i, 2, 150)).collect();
    block_on(wal.append(second.clone())).unwrap();
    let want = [&first[..5], &second[..]].concat();
    assert_eq!(read_all(&wal), want);

    let (wal2, rec) = open(&disk.crash_with(CrashPolicy::DropAll)).unwrap();
    assert_eq!(rec.last, LogId::new(2, 8));
    assert_eq!(read_all(&wal2), want);

    // Truncating to nothing, and out of range.
    block_on(wal2.truncate_after(LogIndex(0))).unwrap();
    assert_eq!(wal2.last(), LogId::ZERO);
    assert!(matches!(
        block_on(wal2.truncate_after(LogIndex(1))),
        Err(WalError::OutOfRange { .. })
    ));
}

#[test]
fn append_validation_changes_nothing() {
    let disk = SimDisk::new(7);
    let (wal, _) = open(&disk).unwrap();
    block_on(wal.append(vec![entry(1, 2, 10)])).unwrap();
    let bad = [
        (vec![entry(3, 2, 10)], "gap"),
        (vec![entry(2, 1, 10)], "term regress"),
        (
            vec![entry(2, 2, 10), entry(4, 2, 10)],
            "gap inside the batch",
        ),
    ];
    for (entries, what) in bad {
        assert!(
            matches!(block_on(wal.append(entries)), Err(WalError::Append(_))),
            "{what}"
        );
    }
    let mut k = entry(2, 2, 10);
    k.kind = 0;
    assert_eq!(
        block_on(wal.append(vec![k.clone()])),
        Err(WalError::BadKind { kind: 0 })
    );
    k.kind = 0x80;
    assert_eq!(
        block_on(wal.append(vec![k])),
        Err(WalError::BadKind { kind: 0x80 })
    );
    assert!(matches!(
        block_on(wal.append(vec![entry(2, 2, 3001)])),
        Err(WalError::RecordTooLarge {
            payload_bytes: 3001,
            max: 3000
        })
    ));
    assert_eq!(
        block_on(wal.append(vec![entry(3, 2, 1)])),
        Err(WalError::Append(LogError::NonContiguous {
            expected: LogIndex(2),
            found: LogIndex(3)
        }))
    );
    assert_eq!(wal.last(), LogId::new(2, 1));
    assert_eq!(read_all(&wal), vec![entry(1, 2, 10)]);
    // Bad configs are refused.
    for bad in [
        WalConfig {
            segment_bytes: 10_000,
            ..small_config()
        },
        WalConfig {
            record_payload_bytes_max: 16 * 1024,
            ..small_config()
        },
        WalConfig {
            batch_records_max: 0,
            ..small_config()
        },
    ] {
        assert!(matches!(
            block_on(Wal::open(SimDisk::new(1), bad)),
            Err(WalError::Config { .. })
        ));
    }
}

#[test]
fn a_full_queue_refuses_appends_until_it_drains() {
    let disk = SimDisk::new(8);
    let config = WalConfig {
        queue_bytes_max: 8 * 1024,
        ..small_config()
    };
    let (wal, _) = block_on(Wal::open(disk, config)).unwrap();
    let a = wal.append(vec![entry(1, 1, 3000), entry(2, 1, 3000)]);
    let b = wal.append(vec![entry(3, 1, 3000)]);
    assert!(matches!(block_on(b), Err(WalError::QueueFull { .. })));
    block_on(a).unwrap();
    block_on(wal.append(vec![entry(3, 1, 3000)])).unwrap();
    assert_eq!(wal.last().index, LogIndex(3));
}

fn segment_files(disk: &SimDisk) -> Vec<String> {
    block_on(disk.list())
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".seg"))
        .collect()
}

#[test]
fn segments_roll_and_purge_drops_whole_segments_only() {
    let disk = SimDisk::new(9);
    let (wal, _) = open(&disk).unwrap();
    let want: Vec<_> = (1..=200).map(|i| entry(i, 1, 200)).collect();
    for c in want.chunks(5) {
        block_on(wal.append(c.to_vec())).unwrap();
    }
    let files = segment_files(&disk);
    assert!(files.len() >= 3, "files {files:?}");
    // Every segment but the last is full up to less than one record.
    block_on(wal.purge_upto(LogId::new(1, 100))).unwrap();
    let first = wal.first_index();
    assert!(first.0 > 1 && first.0 <= 101, "first {first}");
    assert_eq!(wal.prev(), LogId::new(1, first.0 - 1));
    let left = segment_files(&disk);
    assert!(left.len() < files.len());
    assert_eq!(left.last(), files.last(), "the active segment stays");
    assert_eq!(read_all(&wal), want[first.0 as usize - 1..].to_vec());
    assert!(matches!(
        block_on(wal.read(LogIndex(1)..LogIndex(2))),
        Err(WalError::OutOfRange { .. })
    ));

    let disk2 = disk.crash_with(CrashPolicy::DropAll);
    let (wal2, rec) = open(&disk2).unwrap();
    assert_eq!(rec.first_index, first);
    assert_eq!(rec.prev, LogId::new(1, first.0 - 1));
    assert_eq!(read_all(&wal2), want[first.0 as usize - 1..].to_vec());
    // Purging everything keeps the active segment and its entries, and the prepared next
    // segment when there is one.
    assert!(rec.prepared_segment.is_some(), "{rec:?}");
    block_on(wal2.purge_upto(LogId::new(1, 200))).unwrap();
    let after = disk2.crash_with(CrashPolicy::DropAll);
    assert_eq!(segment_files(&after).len(), 2);
    let (_, rec3) = open(&after).unwrap();
    assert_eq!(
        (rec3.segments, rec3.prepared_segment),
        (1, rec.prepared_segment)
    );
    assert_eq!(wal2.last(), LogId::new(1, 200));
}

#[test]
fn purge_past_the_end_resets_the_log() {
    let disk = SimDisk::new(10);
    let (wal, _) = open(&disk).unwrap();
    block_on(wal.append((1..=5).map(|i| entry(i, 1, 50)).collect())).unwrap();
    block_on(wal.purge_upto(LogId::new(3, 50))).unwrap();
    assert_eq!(
        (wal.prev(), wal.last(), wal.first_index()),
        (LogId::new(3, 50), LogId::new(3, 50), LogIndex(51))
    );
    assert!(matches!(
        block_on(wal.append(vec![entry(6, 3, 1)])),
        Err(WalError::Append(_))
    ));
    block_on(wal.append(vec![entry(51, 3, 1)])).unwrap();
    let (wal2, rec) = open(&disk.crash_with(CrashPolicy::DropAll)).unwrap();
    assert_eq!((rec.prev, rec.last), (LogId::new(3, 50), LogId::new(3, 51)));
    assert_eq!(read_all(&wal2), vec![entry(51, 3, 1)]);
}

#[test]
fn the_vote_survives_and_a_torn_save_keeps_the_previous_one() {
    let disk = SimDisk::new(11);
    let (wal, _) = open(&disk).unwrap();
    let v = |t| Vote {
        term: Term(t),
        voted_for: Some(t * 10),
        committed: t % 2 == 0,
    };
    for t in 1..=3 {
        block_on(wal.save_vote(v(t))).unwrap();
    }
    assert_eq!(wal.vote(), Some(v(3)));
    let (_, rec) = open(&disk.crash_with(CrashPolicy::DropAll)).unwrap();
    assert_eq!(rec.vote, Some(v(3)));
    // Save 4 goes to slot 0; tear it (crash while it is unsynced, keeping half its sectors).
    disk.crash_at_op(Some(disk.stats().mutations + 1));
    assert!(block_on(wal.save_vote(v(4))).is_err());
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..30 {
        let (_, rec) = open(&disk.crash()).unwrap();
        let term = rec.vote.expect("a vote was saved").term.0;
        assert!(term == 3 || term == 4, "vote {:?}", rec.vote);
        seen.insert(term);
    }
    assert_eq!(seen.len(), 2, "both outcomes happen across crashes");
}

#[test]
fn a_failed_write_latches_fail_stop() {
    let disk = SimDisk::new(12);
    let (wal, _) = open(&disk).unwrap();
    block_on(wal.append(vec![entry(1, 1, 10)])).unwrap();
    disk.fail_next(&segment_name(1), FaultOp::Write);
    let err = block_on(wal.append(vec![entry(2, 1, 10)])).unwrap_err();
    assert!(
        matches!(err, WalError::FailStopped { op: "write", .. }),
        "{err}"
    );
    // Every later call returns the latched error, even though the disk works again.
    assert_eq!(
        block_on(wal.append(vec![entry(3, 1, 10)])),
        Err(err.clone())
    );
    assert_eq!(block_on(wal.sync()), Err(err.clone()));
    assert_eq!(
        block_on(wal.read(LogIndex(1)..LogIndex(2))),
        Err(err.clone())
    );
    assert_eq!(block_on(wal.truncate_after(LogIndex(1))), Err(err.clone()));
    assert_eq!(block_on(wal.purge_upto(LogId::new(1, 1))), Err(err.clone()));
    assert_eq!(block_on(wal.save_vote(Vote::default())), Err(err.clone()));
    assert_eq!(wal.failed(), Some(err));
    let writes = disk.stats().writes;
    let _ = block_on(wal.append(vec![entry(3, 1, 10)]));
    assert_eq!(
        disk.stats().writes,
        writes,
        "nothing is written after fail-stop"
    );
    // The acknowledged entry is on disk.
    let (wal2, _) = open(&disk.crash()).unwrap();
    assert_eq!(read_all(&wal2)[0], entry(1, 1, 10));
}

#[test]
fn a_failed_sync_latches_fail_stop_for_every_waiter() {
    let disk = SimDisk::new(13);
    let (wal, _) = open(&disk).unwrap();
    disk.fail_next(&segment_name(1), FaultOp::Sync);
    let mut pool = LocalPool::new();
    let results = Rc::new(RefCell::new(Vec::new()));
    for i in 1..=10u64 {
        let (wal, results) = (wal.clone(), results.clone());
        pool.spawner()
            .spawn_local(async move {
                let r = wal.append(vec![entry(i, 1, 10)]).await;
                results.borrow_mut().push(r);
            })
            .unwrap();
    }
    pool.run_until_stalled();
    let r = results.borrow();
    assert_eq!(r.len(), 10, "no waiter hangs");
    assert!(r
        .iter()
        .all(|x| matches!(x, Err(WalError::FailStopped { op: "sync", .. }))));
}

#[test]
fn a_dropped_flusher_hands_its_batch_to_the_next_one() {
    let disk = SimDisk::new(14);
    disk.set_yields_per_op(3);
    let (wal, _) = open(&disk).unwrap();
    // Polled once: it becomes the flusher and is inside its write when dropped.
    let first = wal.append(vec![entry(1, 1, 10), entry(2, 1, 10)]);
    assert!(first.now_or_never().is_none());
    block_on(wal.append(vec![entry(3, 1, 10)])).unwrap();
    assert_eq!(read_all(&wal).len(), 3);
    let (wal2, _) = open(&disk.crash_with(CrashPolicy::DropAll)).unwrap();
    assert_eq!(
        read_all(&wal2),
        (1..=3).map(|i| entry(i, 1, 10)).collect::<Vec<_>>()
    );
}

#[test]
fn reads_verify_what_they_read_back() {
    let disk = SimDisk::new(15);
    let (wal, _) = open(&disk).unwrap();
    block_on(wal.append((1..=4).map(|i| entry(i, 1, 300)).collect())).unwrap();
    disk.fail_next(&segment_name(1), FaultOp::CorruptRead);
    let err = block_on(wal.read(LogIndex(1)..LogIndex(5))).unwrap_err();
    assert!(
        matches!(&err, WalError::Corrupt { file, .. } if *file == segment_name(1)),
        "{err}"
    );
    // The stored data is fine; the error did not latch.
    assert_eq!(read_all(&wal).len(), 4);
}
