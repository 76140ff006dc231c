//! GlommioDisk against the disk conformance suite, and the WAL end to end on a real file
//! system: group commit with concurrent appenders, reopen, read back, vote.

use ballast_engine::io::{conformance, Disk, DiskFile};
use ballast_engine::wal::{Entry, LogId, LogIndex, Term, Vote, Wal, WalConfig};
use ballast_engine_glommio::{executor_builder, GlommioDisk};
use glommio::Placement;

fn run<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    executor_builder(Placement::Unbound)
        .name("disk-test")
        .spawn(move || async move { f() })
        .expect("spawn executor")
        .join()
        .expect("executor finished")
}

fn run_async<T, F, Fut>(f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
{
    executor_builder(Placement::Unbound)
        .name("disk-test")
        .spawn(f)
        .expect("spawn executor")
        .join()
        .expect("executor finished")
}

#[test]
fn glommio_disk_passes_the_conformance_suite() {
    let dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let path = dir.path().to_path_buf();
    run_async(move || async move {
        let disk = GlommioDisk::new(&path).unwrap();
        conformance::run_all(&disk).await;
    });
}

/// `ballast --data-dir b` (and the default `./default.ballast`) name a relative directory.
#[test]
fn glommio_disk_works_in_a_relative_directory() {
    let dir = tempfile::tempdir_in(".").unwrap();
    let name = dir.path().file_name().unwrap().to_owned();
    let relative = std::path::PathBuf::from(&name).join("shard-0");
    assert!(relative.is_relative());
    run_async(move || async move {
        let disk = GlommioDisk::new(&relative).unwrap();
        assert!(disk.dir().is_absolute());
        conformance::run_all(&disk).await;
    });
}

#[test]
fn glommio_disk_constructor_creates_the_directory() {
    let dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let nested = dir.path().join("a/b");
    let n2 = nested.clone();
    run(move || GlommioDisk::new(&n2).unwrap());
    assert!(nested.is_dir());
}

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index: LogIndex(index),
        term: Term(term),
        kind: 1,
        payload: bytes::Bytes::from(format!(
            "payload-{index}-{}",
            "x".repeat(index as usize % 300)
        )),
    }
}

#[test]
fn wal_on_glommio_group_commits_and_reopens() {
    let dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let path = dir.path().to_path_buf();
    let config = WalConfig {
        segment_bytes: 128 * 1024,
        record_payload_bytes_max: 64 * 1024,
        ..WalConfig::default()
    };
    let c2 = config.clone();
    let p2 = path.clone();
    let stats = run_async(move || async move {
        let disk = GlommioDisk::new(&p2).unwrap();
        let (wal, rec) = Wal::open(disk, c2).await.unwrap();
        assert_eq!(rec.last, LogId::ZERO);
        // 64 tasks, 20 appends each, in log order.
        let mut tasks = Vec::new();
        let mut next = 1u64;
        for _round in 0..20 {
            for _t in 0..64 {
                let fut = wal.append(vec![entry(next, 1)]);
                next += 1;
                tasks.push(glommio::spawn_local(fut).detach());
            }
            glommio::yield_if_needed().await;
        }
        for t in tasks {
            t.await.expect("task ran").expect("append durable");
        }
        wal.save_vote(Vote {
            term: Term(4),
            voted_for: Some(2),
            committed: false,
        })
        .await
        .unwrap();
        wal.stats()
    });
    assert_eq!(stats.records_flushed, 1280);
    assert!(
        stats.flushes < 1280,
        "concurrent appends share writes: {} flushes",
        stats.flushes
    );
    assert!(stats.segments_created >= 2, "128 KiB segments roll");

    run_async(move || async move {
        let disk = GlommioDisk::new(&path).unwrap();
        let names = disk.list().await.unwrap();
        assert!(names.iter().any(|n| n == "wal-vote"));
        let (wal, rec) = Wal::open(disk, config).await.unwrap();
        assert_eq!(rec.last, LogId::new(1, 1280));
        assert_eq!(rec.torn_tail, None);
        assert_eq!(rec.vote.map(|v| v.term), Some(Term(4)));
        let got = wal.read(LogIndex(1)..LogIndex(1281)).await.unwrap();
        assert_eq!(got.len(), 1280);
        for (i, e) in got.iter().enumerate() {
            assert_eq!(e, &entry(i as u64 + 1, 1));
        }
        // A file handle sees the preallocated size.
        let d2 = GlommioDisk::new(dir.path()).unwrap();
        let f = d2.open("wal-0000000000000001.seg", false).await.unwrap();
        assert_eq!(f.len(), 128 * 1024);
    });
}
