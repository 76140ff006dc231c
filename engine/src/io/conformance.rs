//! The conformance suite of the disk interface: one set of async checks that every `Disk`
//! implementation must pass (`SimDisk` in this crate's tests, `GlommioDisk` in
//! `ballast-engine-glommio`'s). Each check panics with a message naming the broken rule.
//!
//! Invariant: every check uses its own file names (prefix `conf-`), so the suite can run on one
//! directory in any order; the directory must not hold `conf-*` files before [`run_all`].
//!
//! Crash behaviour (what survives without `sync_data`) cannot be observed through the trait; it
//! is tested on the simulator alone.

use super::{Disk, DiskFile, IoError, ALIGN};

fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt))
        .collect()
}

/// Runs every check below in sequence.
pub async fn run_all<D: Disk>(disk: &D) {
    open_missing_is_not_found(disk).await;
    create_write_read_roundtrip(disk).await;
    unaligned_writes_are_refused(disk).await;
    reads_may_be_unaligned(disk).await;
    read_past_end_is_out_of_bounds(disk).await;
    write_past_end_extends_with_zeros(disk).await;
    allocate_extends_with_zeros_and_keeps_data(disk).await;
    truncate_shrinks_and_extends(disk).await;
    reopen_sees_written_data(disk).await;
    list_is_sorted_and_remove_removes(disk).await;
}

pub async fn open_missing_is_not_found<D: Disk>(disk: &D) {
    match disk.open("conf-missing", false).await {
        Err(IoError::NotFound { file }) => {
            assert!(
                file.contains("conf-missing"),
                "NotFound names the file: {file}"
            )
        }
        Err(other) => panic!("opening a missing file without create: want NotFound, got {other}"),
        Ok(_) => panic!("opening a missing file without create succeeded"),
    }
}

pub async fn create_write_read_roundtrip<D: Disk>(disk: &D) {
    let f = disk.open("conf-roundtrip", true).await.expect("create");
    assert_eq!(f.len(), 0, "a new file is empty");
    assert!(f.is_empty());
    assert!(f.name().contains("conf-roundtrip"), "name(): {}", f.name());
    let data = pattern(2 * ALIGN, 7);
    f.write_at(0, &data).await.expect("aligned write");
    assert_eq!(f.len(), 2 * ALIGN as u64, "len after write");
    f.sync_data().await.expect("sync");
    assert_eq!(f.read_at(0, data.len()).await.expect("read"), data);
    // Overwrite the second page only.
    let page = pattern(ALIGN, 99);
    f.write_at(ALIGN as u64, &page).await.expect("overwrite");
    f.sync_data().await.expect("sync");
    let back = f.read_at(0, 2 * ALIGN).await.expect("read");
    assert_eq!(&back[..ALIGN], &data[..ALIGN], "first page untouched");
    assert_eq!(&back[ALIGN..], &page[..], "second page overwritten");
    assert_eq!(
        f.len(),
        2 * ALIGN as u64,
        "overwrite does not grow the file"
    );
}

pub async fn unaligned_writes_are_refused<D: Disk>(disk: &D) {
    let f = disk.open("conf-unaligned", true).await.expect("create");
    for (offset, len) in [
        (1u64, ALIGN),
        (512, ALIGN),
        (0, ALIGN - 1),
        (0, 100),
        (ALIGN as u64, 512),
    ] {
        match f.write_at(offset, &vec![1u8; len]).await {
            Err(IoError::Unaligned {
                offset: o, len: l, ..
            }) => {
                assert_eq!((o, l), (offset, len), "Unaligned reports the request")
            }
            other => panic!("write at {offset} of {len} bytes: want Unaligned, got {other:?}"),
        }
    }
    assert_eq!(f.len(), 0, "a refused write changes nothing");
    f.write_at(0, &[])
        .await
        .expect("an empty write at an aligned offset is aligned");
}

pub async fn reads_may_be_unaligned<D: Disk>(disk: &D) {
    let f = disk
        .open("conf-unaligned-read", true)
        .await
        .expect("create");
    let data = pattern(3 * ALIGN, 3);
    f.write_at(0, &data).await.expect("write");
    for (offset, len) in [
        (1u64, 10usize),
        (511, 1027),
        (4095, 2),
        (100, 3 * ALIGN - 100),
        (0, 0),
    ] {
        let got = f.read_at(offset, len).await.expect("unaligned read");
        assert_eq!(
            got,
            &data[offset as usize..offset as usize + len],
            "read at {offset} of {len} bytes"
        );
    }
}

pub async fn read_past_end_is_out_of_bounds<D: Disk>(disk: &D) {
    let f = disk.open("conf-oob", true).await.expect("create");
    f.write_at(0, &pattern(ALIGN, 1)).await.expect("write");
    for (offset, len) in [
        (0u64, ALIGN + 1),
        (ALIGN as u64, 1),
        (ALIGN as u64 - 1, 2),
        (1 << 40, 1),
    ] {
        match f.read_at(offset, len).await {
            Err(IoError::OutOfBounds { size, .. }) => assert_eq!(size, ALIGN as u64),
            other => panic!("read at {offset} of {len} past a {ALIGN}-byte file: got {other:?}"),
        }
    }
    assert!(f
        .read_at(ALIGN as u64, 0)
        .await
        .expect("empty read at end")
        .is_empty());
}

pub async fn write_past_end_extends_with_zeros<D: Disk>(disk: &D) {
    let f = disk.open("conf-gap", true).await.expect("create");
    let data = pattern(ALIGN, 5);
    f.write_at(2 * ALIGN as u64, &data)
        .await
        .expect("write past end");
    assert_eq!(f.len(), 3 * ALIGN as u64);
    let back = f.read_at(0, 3 * ALIGN).await.expect("read");
    assert!(
        back[..2 * ALIGN].iter().all(|&b| b == 0),
        "the gap reads as zeros"
    );
    assert_eq!(&back[2 * ALIGN..], &data[..]);
}

pub async fn allocate_extends_with_zeros_and_keeps_data<D: Disk>(disk: &D) {
    let f = disk.open("conf-allocate", true).await.expect("create");
    let data = pattern(ALIGN, 11);
    f.write_at(0, &data).await.expect("write");
    f.allocate(16 * ALIGN as u64).await.expect("allocate");
    assert_eq!(f.len(), 16 * ALIGN as u64, "allocate sets the length");
    let back = f.read_at(0, 16 * ALIGN).await.expect("read");
    assert_eq!(&back[..ALIGN], &data[..], "allocate keeps existing data");
    assert!(
        back[ALIGN..].iter().all(|&b| b == 0),
        "allocated space reads as zeros"
    );
    // Allocating less than the length never shrinks.
    f.allocate(ALIGN as u64).await.expect("allocate smaller");
    assert_eq!(f.len(), 16 * ALIGN as u64, "allocate never shrinks");
    // Writes inside the allocation do not change the length.
    f.write_at(8 * ALIGN as u64, &data)
        .await
        .expect("write inside");
    assert_eq!(f.len(), 16 * ALIGN as u64);
    f.sync_data().await.expect("sync");
    assert_eq!(
        f.read_at(8 * ALIGN as u64, ALIGN).await.expect("read"),
        data
    );
}

pub async fn truncate_shrinks_and_extends<D: Disk>(disk: &D) {
    let f = disk.open("conf-truncate", true).await.expect("create");
    f.write_at(0, &pattern(4 * ALIGN, 2)).await.expect("write");
    f.truncate(ALIGN as u64).await.expect("truncate down");
    assert_eq!(f.len(), ALIGN as u64);
    assert!(matches!(
        f.read_at(0, ALIGN + 1).await,
        Err(IoError::OutOfBounds { .. })
    ));
    f.truncate(3 * ALIGN as u64).await.expect("truncate up");
    assert_eq!(f.len(), 3 * ALIGN as u64);
    let back = f.read_at(0, 3 * ALIGN).await.expect("read");
    assert_eq!(
        &back[..ALIGN],
        &pattern(4 * ALIGN, 2)[..ALIGN],
        "kept prefix"
    );
    assert!(
        back[ALIGN..].iter().all(|&b| b == 0),
        "extension reads as zeros, old data gone"
    );
    f.truncate(0).await.expect("truncate to zero");
    assert!(f.is_empty());
}

pub async fn reopen_sees_written_data<D: Disk>(disk: &D) {
    let data = pattern(ALIGN, 77);
    {
        let f = disk.open("conf-reopen", true).await.expect("create");
        f.write_at(0, &data).await.expect("write");
        f.sync_data().await.expect("sync");
    }
    disk.sync_dir().await.expect("sync_dir");
    let f = disk
        .open("conf-reopen", false)
        .await
        .expect("reopen without create");
    assert_eq!(f.len(), ALIGN as u64);
    assert_eq!(f.read_at(0, ALIGN).await.expect("read"), data);
    // Opening with create does not truncate an existing file.
    let g = disk
        .open("conf-reopen", true)
        .await
        .expect("reopen with create");
    assert_eq!(g.read_at(0, ALIGN).await.expect("read"), data);
}

pub async fn list_is_sorted_and_remove_removes<D: Disk>(disk: &D) {
    for name in ["conf-list-c", "conf-list-a", "conf-list-b"] {
        disk.open(name, true).await.expect("create");
    }
    disk.sync_dir().await.expect("sync_dir");
    let names = disk.list().await.expect("list");
    let ours: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| n.starts_with("conf-list-"))
        .collect();
    assert_eq!(ours, ["conf-list-a", "conf-list-b", "conf-list-c"]);
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "list() is sorted");
    disk.remove("conf-list-b").await.expect("remove");
    disk.sync_dir().await.expect("sync_dir");
    let names = disk.list().await.expect("list");
    assert!(
        !names.iter().any(|n| n == "conf-list-b"),
        "removed file still listed"
    );
    assert!(matches!(
        disk.open("conf-list-b", false).await,
        Err(IoError::NotFound { .. })
    ));
    assert!(matches!(
        disk.remove("conf-list-b").await,
        Err(IoError::NotFound { .. })
    ));
}
