//! Preparing the next segment ahead of need: the roll to a prepared file does no creation,
//! allocation or directory sync on the append path; a roll waits for a preparation still
//! running; a prepared file survives a restart and is reused; a failed preparation latches
//! fail-stop; purge keeps the prepared file.

use futures::executor::block_on;

use super::{entry, open, read_all, small_config};
use crate::io::sim::{CrashPolicy, FaultOp, SimDisk, SimStats};
use crate::wal::segment::{segment_name, PreparedHeader, SegmentHeader};
use crate::wal::{Entry, LogId, Wal, WalConfig, WalError};

/// Disk operations between two snapshots.
fn delta(a: SimStats, b: SimStats) -> SimStats {
    SimStats {
        reads: b.reads - a.reads,
        writes: b.writes - a.writes,
        bytes_written: b.bytes_written - a.bytes_written,
        syncs: b.syncs - a.syncs,
        dir_syncs: b.dir_syncs - a.dir_syncs,
        mutations: b.mutations - a.mutations,
    }
}

/// Appends 1 KiB entries one at a time from `next` until an append rolls the segment;
/// returns the disk operations of that append and the index after it.
fn append_until_roll(wal: &Wal<SimDisk>, disk: &SimDisk, mut next: u64) -> (SimStats, u64) {
    let rolls = wal.stats().rolls;
    for _ in 0..100 {
        let before = disk.stats();
        block_on(wal.append(vec![entry(next, 1, 1000)])).unwrap();
        next += 1;
        if wal.stats().rolls > rolls {
            return (delta(before, disk.stats()), next);
        }
    }
    panic!("no roll within 100 appends");
}

fn is_prepared_file(disk: &SimDisk, name: &str) -> bool {
    disk.live_image(name)
        .is_some_and(|img| PreparedHeader::decode(&img).is_ok())
}

#[test]
fn a_roll_to_a_prepared_segment_only_writes_the_header_and_the_batch() {
    let disk = SimDisk::new(21);
    let (wal, rec) = open(&disk).unwrap();
    assert_eq!(rec.prepared_segment, None);
    let (ops, next) = append_until_roll(&wal, &disk, 1);
    let s = wal.stats();
    assert_eq!(
        (s.rolls, s.rolls_to_prepared, s.rolls_waited),
        (1, 1, 0),
        "{s:?}"
    );
    // Sealing the prepared file (header page + sync), then the batch (write + sync): no
    // create, no allocate, no directory sync on the append path.
    assert_eq!((ops.writes, ops.syncs, ops.dir_syncs), (2, 2, 0), "{ops:?}");
    assert_eq!(ops.mutations, ops.writes + ops.syncs, "{ops:?}");
    assert!(
        ops.bytes_written <= 4096 + 2 * 4096,
        "header + one batch: {ops:?}"
    );
    // The sealed segment now holds records; the log reads back across the roll.
    let img = disk.live_image(&segment_name(2)).unwrap();
    assert_eq!(SegmentHeader::decode(&img).unwrap().seq, 2);
    let want: Vec<Entry> = (1..next).map(|i| entry(i, 1, 1000)).collect();
    assert_eq!(read_all(&wal), want);
    let (wal2, _) = open(&disk.crash_with(CrashPolicy::DropAll)).unwrap();
    assert_eq!(read_all(&wal2), want);

    // Without preparation the same roll creates, allocates and syncs the directory inline.
    let disk = SimDisk::new(22);
    let config = WalConfig {
        prepare_next_at_fill_percent: None,
        ..small_config()
    };
    let (wal, _) = block_on(Wal::open(disk.clone(), config)).unwrap();
    let (ops, _) = append_until_roll(&wal, &disk, 1);
    let s = wal.stats();
    assert_eq!(
        (s.rolls, s.rolls_to_prepared, s.segments_prepared),
        (1, 0, 0)
    );
    assert_eq!(ops.dir_syncs, 1, "{ops:?}");
    assert!(
        ops.mutations > ops.writes + ops.syncs + ops.dir_syncs,
        "create and allocate on the append path: {ops:?}"
    );
}

#[test]
fn a_roll_waits_for_a_preparation_still_running() {
    // At 90 % the preparation starts in the very flush round that needs the roll.
    let disk = SimDisk::new(23);
    disk.set_yields_per_op(2);
    let config = WalConfig {
        prepare_next_at_fill_percent: Some(90),
        ..small_config()
    };
    let (wal, _) = block_on(Wal::open(disk.clone(), config)).unwrap();
    let want: Vec<Entry> = (1..=12).map(|i| entry(i, 1, 2900)).collect();
    for e in &want {
        block_on(wal.append(vec![e.clone()])).unwrap();
    }
    let s = wal.stats();
    assert!(s.rolls >= 2, "{s:?}");
    assert_eq!(s.rolls_to_prepared, s.rolls, "{s:?}");
    assert!(s.rolls_waited >= 1, "{s:?}");
    assert_eq!(read_all(&wal), want);
    let (wal2, _) = open(&disk.crash_with(CrashPolicy::DropAll)).unwrap();
    assert_eq!(read_all(&wal2), want);
}

#[test]
fn a_prepared_segment_is_reused_after_a_restart() {
    let disk = SimDisk::new(24);
    let (wal, _) = open(&disk).unwrap();
    // Fill the first segment past half: the next one gets prepared.
    let mut next = 1;
    while wal.stats().segments_prepared == 0 {
        block_on(wal.append(vec![entry(next, 1, 1000)])).unwrap();
        next += 1;
        assert!(next < 20, "no preparation");
    }
    assert_eq!(wal.stats().rolls, 0);
    let prepared = segment_name(2);
    assert!(is_prepared_file(&disk, &prepared));

    let after = disk.crash_with(CrashPolicy::DropAll);
    let (wal2, rec) = open(&after).unwrap();
    assert_eq!(rec.prepared_segment.as_deref(), Some(prepared.as_str()));
    assert_eq!(rec.segments, 1);
    assert_eq!(rec.last, LogId::new(1, next - 1));
    // The roll seals the file found at open: nothing is created on the append path.
    let (ops, next) = append_until_roll(&wal2, &after, next);
    let s = wal2.stats();
    assert_eq!((s.rolls_to_prepared, s.rolls_waited), (1, 0), "{s:?}");
    assert_eq!((ops.writes, ops.syncs, ops.dir_syncs), (2, 2, 0), "{ops:?}");
    assert_eq!(ops.mutations, ops.writes + ops.syncs, "{ops:?}");
    let (wal3, rec3) = open(&after.crash_with(CrashPolicy::DropAll)).unwrap();
    assert_eq!(rec3.segments, 2);
    assert_eq!(
        read_all(&wal3),
        (1..next).map(|i| entry(i, 1, 1000)).collect::<Vec<_>>()
    );

    // A prepared file for another segment size is removed, not reused.
    let config = WalConfig {
        segment_bytes: 32 * 1024,
        ..small_config()
    };
    let (_, rec4) = block_on(Wal::open(after.crash_with(CrashPolicy::DropAll), config)).unwrap();
    assert_eq!(rec4.prepared_segment, None);
}

#[test]
fn purge_keeps_the_prepared_segment() {
    let disk = SimDisk::new(25);
    let (wal, _) = open(&disk).unwrap();
    let mut next = 1;
    while wal.stats().rolls < 3 || wal.stats().segments_prepared < 4 {
        block_on(wal.append(vec![entry(next, 1, 1000)])).unwrap();
        next += 1;
        assert!(next < 200, "{:?}", wal.stats());
    }
    let prepared = segment_name(5);
    assert!(is_prepared_file(&disk, &prepared));
    block_on(wal.purge_upto(LogId::new(1, next - 1))).unwrap();
    assert_eq!(wal.stats().segments_purged, 3);
    assert!(is_prepared_file(&disk, &prepared));
    let (_, rec) = open(&disk.crash_with(CrashPolicy::DropAll)).unwrap();
    assert_eq!(rec.prepared_segment, Some(prepared));
    assert_eq!(rec.segments, 1);
}

#[test]
fn a_failed_preparation_latches_fail_stop() {
    let disk = SimDisk::new(26);
    let (wal, _) = open(&disk).unwrap();
    disk.fail_next(&segment_name(2), FaultOp::Write);
    let mut next = 1;
    let err = loop {
        match block_on(wal.append(vec![entry(next, 1, 1000)])) {
            Ok(()) => next += 1,
            Err(e) => break e,
        }
        assert!(next < 40, "the preparation never failed");
    };
    // The append whose flush round drove the failing write may still have been durable;
    // every call after the latch fails with the preparation's error.
    let latched = wal.failed().expect("latched");
    assert!(
        matches!(
            latched,
            WalError::FailStopped {
                op: "write prepared header",
                ..
            }
        ),
        "{latched}"
    );
    assert_eq!(err, latched);
    assert_eq!(block_on(wal.sync()), Err(latched));
}
