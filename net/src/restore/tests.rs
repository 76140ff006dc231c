//! Reading an etcd-shaped file (written with the snapshot writer and etcd's bucket layout) and
//! the refusals: a data dir holding Ballast data, a damaged file, a missing hash. Restoring a
//! file from the real etcd 3.4.23 and serving it is `conformance/tests/restore.rs`.

use std::io::{Seek, Write};

use super::*;
use crate::bolt::writer::BoltWriter;
use ballast_engine::mvcc::export::HistoryEntry;

fn entry(main: i64, sub: i64, key: &str, value: &str, create: i64, version: i64) -> HistoryEntry {
    HistoryEntry {
        main,
        sub,
        tombstone: false,
        kv: KeyValue {
            key: bytes::Bytes::copy_from_slice(key.as_bytes()),
            create_revision: create,
            mod_revision: main,
            version,
            value: bytes::Bytes::copy_from_slice(value.as_bytes()),
            lease: 0,
        },
    }
}

/// An etcd-shaped backend file with a SHA-256 trailer, as `etcdctl snapshot save` writes it.
fn etcd_file(with_hash: bool) -> tempfile::NamedTempFile {
    let mut changes = vec![
        entry(2, 0, "/a", "1", 2, 1),
        entry(3, 0, "/a", "2", 2, 2),
        entry(3, 1, "/registry/pods/x", "p", 3, 1),
        entry(5, 0, "/b", "x", 5, 1),
    ];
    changes[3].kv.lease = 0x42;
    let mut tomb = entry(4, 0, "/a", "", 0, 0);
    tomb.tombstone = true;
    changes.insert(3, tomb);
    let mut file = tempfile::NamedTempFile::new().unwrap();
    let mut w = BoltWriter::new(file.as_file_mut()).unwrap();
    w.begin_bucket(layout::KEY_BUCKET).unwrap();
    for c in &changes {
        w.put(
            &layout::rev_key(c.main, c.sub, c.tombstone),
            &layout::kv_value(c),
        )
        .unwrap();
    }
    w.end_bucket().unwrap();
    w.begin_bucket(layout::LEASE_BUCKET).unwrap();
    let (k, v) = layout::lease_entry(0x42, 30);
    w.put(&k, &v).unwrap();
    w.end_bucket().unwrap();
    w.begin_bucket(b"members").unwrap();
    w.put(
        b"8e9e05c52164694d",
        br#"{"id":10276657743932975437,"peerURLs":["http://localhost:2380"],"name":"default"}"#,
    )
    .unwrap();
    w.end_bucket().unwrap();
    w.begin_bucket(layout::META_BUCKET).unwrap();
    w.put(b"consistent_index", &9u64.to_be_bytes()).unwrap();
    w.put(layout::FINISHED_COMPACT_REV, &layout::rev_key(2, 0, false))
        .unwrap();
    w.put(layout::SCHEDULED_COMPACT_REV, &layout::rev_key(3, 0, false))
        .unwrap();
    w.end_bucket().unwrap();
    let (_, len) = w.finish().unwrap();
    file.as_file_mut().set_len(len).unwrap();
    if with_hash {
        let db = std::fs::read(file.path()).unwrap();
        let sum = Sha256::digest(&db);
        file.as_file_mut().seek(std::io::SeekFrom::End(0)).unwrap();
        file.write_all(&sum).unwrap();
    }
    file
}

fn args(file: &Path, data_dir: &Path, extra: &[&str]) -> RestoreArgs {
    let mut a: Vec<String> = ["ballast", "snapshot", "restore"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    a.push(file.display().to_string());
    a.push(format!("--data-dir={}", data_dir.display()));
    a.extend(extra.iter().map(|s| s.to_string()));
    parse_args(&a).expect("parses")
}

#[test]
fn reads_etcds_buckets() {
    let file = etcd_file(true);
    let checked = open_checked(file.path(), false).expect("hash matches");
    let etcd = read_etcd(&checked).expect("reads");
    let revs: Vec<(i64, i64, bool)> = etcd
        .changes
        .iter()
        .map(|c| (c.main, c.sub, c.tombstone))
        .collect();
    assert_eq!(
        revs,
        vec![
            (2, 0, false),
            (3, 0, false),
            (3, 1, false),
            (4, 0, true),
            (5, 0, false)
        ]
    );
    assert_eq!(etcd.changes[1].kv.version, 2);
    assert_eq!(etcd.changes[1].kv.create_revision, 2);
    assert_eq!(etcd.changes[4].kv.lease, 0x42);
    assert_eq!(etcd.leases, vec![(0x42, 30)]);
    assert_eq!(etcd.revision, 5);
    // The scheduled compaction is above the finished one: etcd finishes it at start-up.
    assert_eq!(etcd.compact, Some(3));
}

#[test]
fn parses_etcdctls_flags() {
    let a = args(
        Path::new("/tmp/s.db"),
        Path::new("/tmp/d"),
        &["--skip-hash-check", "--name", "n1", "--shards", "2"],
    );
    assert!(a.skip_hash_check);
    assert_eq!(a.file, Path::new("/tmp/s.db"));
    assert_eq!(a.cl.config.name, "n1");
    assert_eq!(a.cl.config.data_dir, "/tmp/d");
    assert_eq!(a.cl.config.settings.shards, 2);
    let a = args(Path::new("f"), Path::new("d"), &["--skip-hash-check=false"]);
    assert!(!a.skip_hash_check);
    let no_file: Vec<String> = ["ballast", "snapshot", "restore", "--data-dir", "x"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert!(parse_args(&no_file).is_err());
}

#[test]
fn refuses_a_data_dir_with_ballast_data_and_changes_nothing() {
    let file = etcd_file(true);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("ballast/shard-0")).unwrap();
    std::fs::write(dir.path().join("ballast/layout"), "shards = 1\n").unwrap();
    let err = restore(&args(file.path(), dir.path(), &[])).expect_err("refused");
    assert!(
        err.to_string().contains("already holds Ballast data"),
        "{err}"
    );
    let mut left: Vec<String> = walk(dir.path());
    left.sort();
    assert_eq!(left, vec!["ballast", "ballast/layout", "ballast/shard-0"]);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("ballast/layout")).unwrap(),
        "shards = 1\n"
    );
}

fn walk(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(root).unwrap().display().to_string());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

#[test]
fn refuses_damaged_files_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");

    // A flipped byte: the hash no longer matches.
    let file = etcd_file(true);
    let mut bytes = std::fs::read(file.path()).unwrap();
    bytes[5 * 4096 + 100] ^= 0xff;
    std::fs::write(file.path(), &bytes).unwrap();
    let err = restore(&args(file.path(), &data_dir, &[])).expect_err("refused");
    assert!(err.to_string().contains("integrity check failed"), "{err}");
    assert!(!data_dir.exists());

    // No hash: refused unless --skip-hash-check, as etcdctl does.
    let file = etcd_file(false);
    let err = restore(&args(file.path(), &data_dir, &[])).expect_err("refused");
    assert!(err.to_string().contains("snapshot missing hash"), "{err}");

    // Not a bbolt file, and a truncated one, with the check skipped.
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, b"not a database\n".repeat(1000)).unwrap();
    let err = restore(&args(&junk, &data_dir, &["--skip-hash-check"])).expect_err("refused");
    assert!(
        format!("{err:#}").contains("not a bbolt database file"),
        "{err:#}"
    );
    let whole = std::fs::read(etcd_file(false).path()).unwrap();
    let cut = dir.path().join("cut.db");
    std::fs::write(&cut, &whole[..whole.len() - 4096]).unwrap();
    let err = restore(&args(&cut, &data_dir, &["--skip-hash-check"])).expect_err("refused");
    assert!(format!("{err:#}").contains("truncated"), "{err:#}");
    assert!(!data_dir.exists(), "nothing written");
}

#[test]
fn restores_into_a_new_data_dir() {
    let file = etcd_file(true);
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let report = restore(&args(file.path(), &data_dir, &["--shards", "2"])).expect("restores");
    assert_eq!(report.revision, 5);
    assert_eq!(report.compact_revision, 3);
    assert_eq!(report.leases, 1);
    assert_eq!(report.shards.len(), 2);
    // /registry/pods/x in shard 1 with 2 shards (net/src/partition tests pin it), the rest
    // in shard 0; at compact 3, /a@3 stays (alive until 4) and its deletion too.
    let changes: Vec<u64> = report.shards.iter().map(|s| s.changes).collect();
    assert_eq!(changes, vec![3, 1], "{report:?}");
    assert_eq!(report.shards.iter().map(|s| s.live_keys).sum::<u64>(), 2);
    let mut files = walk(&data_dir);
    files.sort();
    assert!(files.contains(&"ballast/layout".to_owned()), "{files:?}");
    assert!(files
        .iter()
        .any(|f| f.starts_with("ballast/shard-1/pages/")));
    assert!(!files.iter().any(|f| f.contains(STAGING)), "{files:?}");
    assert!(std::fs::read_to_string(data_dir.join("ballast/layout"))
        .unwrap()
        .contains("shards = 2"));
    // A second restore into it is refused.
    let err = restore(&args(file.path(), &data_dir, &[])).expect_err("refused");
    assert!(
        err.to_string().contains("already holds Ballast data"),
        "{err}"
    );
}
