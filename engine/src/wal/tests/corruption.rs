//! Damaged WAL files: corruption before the tail refuses `open` with the file and offset; a
//! torn tail is cut, zeroed, and `open` proceeds; a segment creation that never became
//! durable is removed.

use futures::executor::block_on;

use super::{entry, open, read_all, small_config};
use crate::io::sim::{CrashPolicy, SimDisk};
use crate::io::{Disk, DiskFile, ALIGN};
use crate::wal::record::encode;
use crate::wal::segment::{scan, segment_name, SegmentHeader};
use crate::wal::vote::VOTE_FILE;
use crate::wal::{CorruptReason, LogId, LogIndex, Term, Vote, WalError};

/// A WAL holding entries `1..=n` (acknowledged), on a disk crashed with nothing unsynced.
fn wal_with(n: u64, seed: u64) -> SimDisk {
    let disk = SimDisk::new(seed);
    let (wal, _) = open(&disk).unwrap();
    for i in 1..=n {
        block_on(wal.append(vec![entry(i, 1, 120)])).unwrap();
    }
    disk.crash_with(CrashPolicy::DropAll)
}

/// Offsets of the records in a segment image.
fn record_offsets(disk: &SimDisk, seq: u64) -> Vec<u64> {
    let img = disk.live_image(&segment_name(seq)).unwrap();
    scan(&img, img.len() as u64)
        .records
        .iter()
        .map(|(o, _)| *o)
        .collect()
}

#[test]
fn a_flipped_byte_mid_wal_refuses_open_naming_file_and_offset() {
    let disk = wal_with(50, 1);
    let offs = record_offsets(&disk, 1);
    assert!(offs.len() > 30);
    let victim = offs[20];
    disk.flip_byte(&segment_name(1), victim + 40, 0x08);
    let err = open(&disk).map(|_| ()).unwrap_err();
    match &err {
        WalError::Corrupt {
            file,
            offset,
            reason: CorruptReason::RecordBeforeValid { valid_at, .. },
        } => {
            assert_eq!(file, &segment_name(1));
            assert_eq!(*offset, victim);
            assert_eq!(*valid_at, offs[21]);
        }
        other => panic!("want Corrupt with a valid record after, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(&segment_name(1)) && msg.contains(&victim.to_string()),
        "message names file and offset: {msg}"
    );
    // Refusing is not repairing: the file is untouched and still refused.
    assert!(open(&disk).is_err());
}

#[test]
fn a_flip_in_every_header_field_of_a_middle_record_is_refused() {
    for at in 0..32 {
        let disk = wal_with(12, 2);
        let offs = record_offsets(&disk, 1);
        disk.flip_byte(&segment_name(1), offs[5] + at, 0x01);
        let err = open(&disk).map(|_| ()).unwrap_err();
        assert!(
            matches!(err, WalError::Corrupt { offset, .. } if offset == offs[5]),
            "flip at header byte {at}: {err:?}"
        );
    }
}

#[test]
fn a_zeroed_record_header_before_valid_records_is_refused() {
    let disk = wal_with(12, 3);
    let offs = record_offsets(&disk, 1);
    let f = block_on(disk.open(&segment_name(1), false)).unwrap();
    // Zero the header of record 4 by rewriting its page.
    let page_at = offs[3] - offs[3] % ALIGN as u64;
    let mut page = block_on(f.read_at(page_at, ALIGN)).unwrap();
    let o = (offs[3] - page_at) as usize;
    page[o..o + 32].fill(0);
    block_on(f.write_at(page_at, &page)).unwrap();
    block_on(f.sync_data()).unwrap();
    let err = open(&disk).map(|_| ()).unwrap_err();
    assert!(
        matches!(
            err,
            WalError::Corrupt { offset, reason: CorruptReason::ZeroedBeforeValid { .. }, .. }
                if offset == offs[3]
        ),
        "{err:?}"
    );
}

#[test]
fn damage_at_the_end_of_an_earlier_segment_is_refused() {
    let disk = wal_with(300, 4);
    let offs = record_offsets(&disk, 1);
    assert!(
        disk.live_image(&segment_name(3)).is_some(),
        "several segments"
    );
    let last = *offs.last().unwrap();
    disk.flip_byte(&segment_name(1), last + 50, 0x40);
    let err = open(&disk).map(|_| ()).unwrap_err();
    assert!(
        matches!(
            &err,
            WalError::Corrupt { file, offset, reason: CorruptReason::Record(_) }
                if *file == segment_name(1) && *offset == last
        ),
        "{err:?}"
    );
}

#[test]
fn a_torn_tail_is_cut_zeroed_and_appended_over() {
    let disk = wal_with(10, 5);
    let offs = record_offsets(&disk, 1);
    let img = disk.live_image(&segment_name(1)).unwrap();
    let end = scan(&img, img.len() as u64).stop;
    assert!(end > *offs.last().unwrap());
    // Write the first 700 bytes of a 1000-byte record 11 after the end, as a torn write
    // leaves it, and make that durable.
    let rec = encode(1, Term(1), LogIndex(11), &[0xAB; 1000]);
    let page_at = end - end % ALIGN as u64;
    let mut buf = img[page_at as usize..page_at as usize + 2 * ALIGN].to_vec();
    let o = (end - page_at) as usize;
    buf[o..o + 700].copy_from_slice(&rec[..700]);
    let f = block_on(disk.open(&segment_name(1), false)).unwrap();
    block_on(f.write_at(page_at, &buf)).unwrap();
    block_on(f.sync_data()).unwrap();

    let (wal, rec) = open(&disk).unwrap();
    let torn = rec.torn_tail.expect("torn tail reported");
    assert_eq!(
        (torn.file.as_str(), torn.offset, torn.bytes),
        (segment_name(1).as_str(), end, 700)
    );
    assert_eq!(rec.last, LogId::new(1, 10));
    assert_eq!(
        read_all(&wal),
        (1..=10).map(|i| entry(i, 1, 120)).collect::<Vec<_>>()
    );
    let zeroed = disk.durable_image(&segment_name(1)).unwrap();
    assert!(
        zeroed[end as usize..].iter().all(|&b| b == 0),
        "the torn bytes are zeroed"
    );
    // A short append over the cut, then a crash: open proceeds with nothing torn.
    block_on(wal.append(vec![entry(11, 1, 5)])).unwrap();
    let (wal2, rec2) = open(&disk.crash_with(CrashPolicy::DropAll)).unwrap();
    assert_eq!(rec2.torn_tail, None);
    assert_eq!(rec2.last, LogId::new(1, 11));
    assert_eq!(read_all(&wal2).len(), 11);
}

#[test]
fn torn_group_commit_writes_recover_to_a_whole_record_prefix() {
    let mut torn_seen = 0;
    for seed in 0..40 {
        let disk = wal_with(10, 100 + seed);
        let (wal, _) = open(&disk).unwrap();
        // Kill the disk at the write of a 5-record batch; the crash keeps a sector prefix.
        disk.crash_at_op(Some(disk.stats().mutations + 1));
        let batch: Vec<_> = (11..=15).map(|i| entry(i, 1, 700)).collect();
        assert!(block_on(wal.append(batch.clone())).is_err());
        let after = disk.crash();
        let (wal2, rec) = open(&after).unwrap();
        torn_seen += usize::from(rec.torn_tail.is_some());
        let got = read_all(&wal2);
        assert!(
            got.len() >= 10 && got.len() <= 15,
            "seed {seed}: {} entries",
            got.len()
        );
        let want: Vec<_> = (1..=10).map(|i| entry(i, 1, 120)).chain(batch).collect();
        assert_eq!(got, want[..got.len()].to_vec(), "seed {seed}");
        // Appending after recovery and crashing again still opens.
        let next = got.len() as u64 + 1;
        block_on(wal2.append(vec![entry(next, 1, 9)])).unwrap();
        let (_, rec3) = open(&after.crash()).unwrap();
        assert_eq!(rec3.last, LogId::new(1, next), "seed {seed}");
    }
    assert!(torn_seen > 0, "some seeds tear mid-record");
}

#[test]
fn a_missing_middle_segment_is_refused() {
    let disk = wal_with(300, 6);
    block_on(disk.remove(&segment_name(2))).unwrap();
    assert_eq!(
        open(&disk).map(|_| ()).unwrap_err(),
        WalError::MissingSegment { seq: 2 }
    );
}

#[test]
fn a_damaged_segment_header_is_refused_unless_it_is_an_empty_last_segment() {
    let disk = wal_with(300, 7);
    disk.flip_byte(&segment_name(2), 20, 0x01);
    let err = open(&disk).map(|_| ()).unwrap_err();
    assert!(
        matches!(&err, WalError::Corrupt { file, offset: 0, reason: CorruptReason::Header(_) } if *file == segment_name(2)),
        "{err:?}"
    );

    // A last segment whose creation never became durable (zero header, zero body) goes.
    let disk = wal_with(20, 8);
    let name = segment_name(2);
    let f = block_on(disk.open(&name, true)).unwrap();
    block_on(f.allocate(small_config().segment_bytes)).unwrap();
    block_on(f.sync_data()).unwrap();
    block_on(disk.sync_dir()).unwrap();
    let (wal, rec) = open(&disk).unwrap();
    assert_eq!(rec.last, LogId::new(1, 20));
    assert!(
        disk.live_image(&name).is_none(),
        "the empty segment was removed"
    );
    block_on(wal.append(vec![entry(21, 1, 1)])).unwrap();

    // But a last segment with a damaged header and records is refused. (The last file may be
    // a prepared segment, which holds no record: the one to damage is the last sealed one.)
    let disk = wal_with(300, 9);
    let last = block_on(disk.list())
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".seg"))
        .rfind(|n| SegmentHeader::decode(&disk.live_image(n).unwrap()).is_ok())
        .unwrap();
    disk.flip_byte(&last, 3, 0x01);
    assert!(matches!(
        open(&disk).map(|_| ()).unwrap_err(),
        WalError::Corrupt { offset: 0, .. }
    ));
}

#[test]
fn a_corrupt_vote_file_is_refused() {
    let disk = SimDisk::new(10);
    let (wal, _) = open(&disk).unwrap();
    for t in 1..=2 {
        block_on(wal.save_vote(Vote {
            term: Term(t),
            voted_for: None,
            committed: false,
        }))
        .unwrap();
    }
    let disk = disk.crash_with(CrashPolicy::DropAll);
    disk.flip_byte(VOTE_FILE, 30, 1);
    disk.flip_byte(VOTE_FILE, ALIGN as u64 + 30, 1);
    let err = open(&disk).map(|_| ()).unwrap_err();
    assert!(
        matches!(&err, WalError::Corrupt { file, reason: CorruptReason::Vote(_), .. } if file == VOTE_FILE),
        "{err:?}"
    );
}
