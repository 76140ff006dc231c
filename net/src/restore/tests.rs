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

/// `authUsers` values as etcd 3.4.23 wrote them (copied from a file `etcdctl snapshot save`
/// fetched after `user add alice:apw` and `user add carol --no-password`): they pin the field
/// numbers apart from Ballast's own `.proto`.
const ALICE_FROM_ETCD: &[u8] =
    b"\n\x05alice\x12<$2a$10$1Nfm/hzebUb1fPyILv8CAeiiPRIVKdXtQq7V7K2oR43pg1fmNt5IC\"\x00";
const CAROL_FROM_ETCD: &[u8] = b"\n\x05carol\"\x02\x08\x01";

fn user(name: &str, password: &str, roles: &[&str]) -> Vec<u8> {
    authpb::User {
        name: bytes::Bytes::copy_from_slice(name.as_bytes()),
        password: bytes::Bytes::copy_from_slice(password.as_bytes()),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        options: None,
    }
    .encode_to_vec()
}

fn perm(perm_type: i32, key: &str, range_end: &str) -> authpb::Permission {
    authpb::Permission {
        perm_type,
        key: bytes::Bytes::copy_from_slice(key.as_bytes()),
        range_end: bytes::Bytes::copy_from_slice(range_end.as_bytes()),
    }
}

/// An etcd-shaped file whose auth store and alarm table are in use: auth enabled at auth
/// revision 9, users alice (roles listed out of order, one twice), bob, carol (no password)
/// and root, roles reader (permissions out of key order) and root, a NOSPACE alarm; each
/// bucket's entries overridable by `edit` (bucket, key, value) to make a damaged one.
/// An entry of a bucket set in place of the usual one: (bucket, key, value).
type Edit<'a> = (&'a [u8], &'a [u8], Vec<u8>);
/// A bucket's entries: (key, value), in key order.
type BucketEntries = Vec<(Vec<u8>, Vec<u8>)>;

fn etcd_auth_file(edit: Option<Edit<'_>>) -> tempfile::NamedTempFile {
    let alarm = etcdserverpb::AlarmMember {
        member_id: 0xbdae_9bbc_11dd_390d,
        alarm: 1,
    }
    .encode_to_vec();
    let reader = authpb::Role {
        name: "reader".into(),
        key_permission: vec![
            perm(2, "k1", ""),
            perm(0, "/a/", "/a0"),
            perm(1, "w1", "w5"),
            perm(0, "a", "\0"),
        ],
    }
    .encode_to_vec();
    let root_role = authpb::Role {
        name: "root".into(),
        key_permission: vec![],
    }
    .encode_to_vec();
    let mut buckets: Vec<(&[u8], BucketEntries)> = vec![
        (layout::ALARM_BUCKET, vec![(alarm, Vec::new())]),
        (
            layout::AUTH_BUCKET,
            vec![
                (layout::AUTH_ENABLED.to_vec(), vec![1]),
                (layout::AUTH_REVISION.to_vec(), 9u64.to_be_bytes().to_vec()),
            ],
        ),
        (
            layout::AUTH_ROLES_BUCKET,
            vec![(b"reader".to_vec(), reader), (b"root".to_vec(), root_role)],
        ),
        (
            layout::AUTH_USERS_BUCKET,
            vec![
                (
                    b"alice".to_vec(),
                    // etcd's own bytes with two roles appended (field 3).
                    [
                        ALICE_FROM_ETCD,
                        b"\x1a\x06writer\x1a\x06reader\x1a\x06reader",
                    ]
                    .concat(),
                ),
                (b"bob".to_vec(), user("bob", "$2a$10$bobshash", &[])),
                (b"carol".to_vec(), CAROL_FROM_ETCD.to_vec()),
                (b"root".to_vec(), user("root", "$2a$10$roothash", &["root"])),
            ],
        ),
        (
            layout::KEY_BUCKET,
            vec![(
                layout::rev_key(2, 0, false),
                layout::kv_value(&entry(2, 0, "/a/x", "1", 2, 1)),
            )],
        ),
    ];
    if let Some((bucket, key, value)) = edit {
        let (_, entries) = buckets.iter_mut().find(|(b, _)| *b == bucket).unwrap();
        match entries.iter_mut().find(|(k, _)| k == key) {
            Some(e) => e.1 = value,
            None => {
                entries.push((key.to_vec(), value));
                entries.sort();
            }
        }
    }
    let mut file = tempfile::NamedTempFile::new().unwrap();
    let mut w = BoltWriter::new(file.as_file_mut()).unwrap();
    for (name, entries) in &buckets {
        w.begin_bucket(name).unwrap();
        for (k, v) in entries {
            w.put(k, v).unwrap();
        }
        w.end_bucket().unwrap();
    }
    let (_, len) = w.finish().unwrap();
    file.as_file_mut().set_len(len).unwrap();
    file
}

fn read_file(file: &tempfile::NamedTempFile) -> anyhow::Result<EtcdData> {
    let len = file.as_file().metadata().unwrap().len();
    read_etcd(&(file.reopen().unwrap(), len))
}

#[test]
fn reads_etcds_users_roles_and_alarms() {
    let etcd = read_file(&etcd_auth_file(None)).expect("reads");
    let auth = &etcd.auth;
    assert!(auth.enabled);
    assert_eq!(auth.revision, 9);
    // The log starts anew: no entry index is claimed.
    assert_eq!(auth.last_index, 0);
    let names: Vec<&str> = auth.users.keys().map(String::as_str).collect();
    assert_eq!(names, ["alice", "bob", "carol", "root"]);
    let alice = &auth.users["alice"];
    assert_eq!(alice.roles, ["reader", "writer"], "sorted, once each");
    assert!(!alice.no_password);
    // etcd's hash is kept byte for byte, and the original password checks against it.
    assert_eq!(
        &alice.password_hash[..],
        b"$2a$10$1Nfm/hzebUb1fPyILv8CAeiiPRIVKdXtQq7V7K2oR43pg1fmNt5IC"
    );
    let hash = std::str::from_utf8(&alice.password_hash).unwrap();
    assert!(bcrypt::verify("apw", hash).unwrap());
    assert!(!bcrypt::verify("apx", hash).unwrap());
    let carol = &auth.users["carol"];
    assert!(carol.no_password && carol.password_hash.is_empty() && carol.roles.is_empty());
    assert!(auth.users["root"].has_root_role());
    assert_eq!(&auth.users["bob"].password_hash[..], b"$2a$10$bobshash");

    let names: Vec<&str> = auth.roles.keys().map(String::as_str).collect();
    assert_eq!(names, ["reader", "root"]);
    assert!(auth.roles["root"].permissions.is_empty());
    let perms: Vec<(i32, String, String)> = auth.roles["reader"]
        .permissions
        .iter()
        .map(|p| {
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            (p.perm_type.0, text(&p.key), text(&p.range_end))
        })
        .collect();
    let want = [
        (0, "/a/", "/a0"),
        (0, "a", "\0"),
        (2, "k1", ""),
        (1, "w1", "w5"),
    ];
    let want: Vec<(i32, String, String)> = want
        .iter()
        .map(|(t, k, e)| (*t, k.to_string(), e.to_string()))
        .collect();
    assert_eq!(perms, want, "sorted by key");
    // Enforced as etcd enforces them: alice reads under /a/ and writes w1..w5, not foo.
    assert_eq!(
        auth.check(Some("alice"), b"/a/x", b"", PermType::READ),
        Ok(())
    );
    assert_eq!(
        auth.check(Some("alice"), b"w3", b"", PermType::WRITE),
        Ok(())
    );
    assert!(auth
        .check(Some("alice"), b"/a/x", b"", PermType::WRITE)
        .is_err());
    assert!(auth
        .check(Some("bob"), b"foo", b"", PermType::READ)
        .is_err());
    assert_eq!(
        auth.check(Some("root"), b"foo", b"", PermType::WRITE),
        Ok(())
    );

    let alarms = etcd.alarms.get(AlarmType::NONE);
    assert_eq!(
        alarms,
        vec![AlarmMember {
            alarm: AlarmType::NOSPACE,
            member_id: 0xbdae_9bbc_11dd_390d
        }]
    );

    // A file without these buckets (the one above) gives a new store's state and no alarms.
    let plain = read_etcd(&open_checked(etcd_file(true).path(), false).unwrap()).unwrap();
    assert_eq!(plain.auth, AuthState::default());
    assert!(plain.alarms.is_empty());
}

#[test]
fn refuses_a_damaged_auth_store() {
    let cases: Vec<(Edit<'_>, &str)> = vec![
        (
            (layout::AUTH_BUCKET, layout::AUTH_ENABLED, vec![2]),
            "authEnabled is 02",
        ),
        (
            (layout::AUTH_BUCKET, layout::AUTH_REVISION, vec![0, 1]),
            "authRevision 0001 is not 8 bytes",
        ),
        (
            (
                layout::AUTH_USERS_BUCKET,
                b"bob",
                user("robert", "$2a$10$x", &[]),
            ),
            "holds user",
        ),
        (
            (layout::AUTH_USERS_BUCKET, b"dan", vec![0x0a, 0x09, b'd']),
            "authUsers bucket: 64616e does not decode",
        ),
        (
            (layout::AUTH_ROLES_BUCKET, b"reader", vec![0xff]),
            "authRoles bucket: 726561646572 does not decode",
        ),
        (
            (layout::ALARM_BUCKET, b"\x08", Vec::new()),
            "alarm bucket: 08 does not decode",
        ),
    ];
    for (edit, want) in cases {
        let what = format!("{edit:?}");
        let err = read_file(&etcd_auth_file(Some(edit))).expect_err(&what);
        assert!(format!("{err:#}").contains(want), "{what}: {err:#}");
    }
    // A name that is not UTF-8 (etcd's API takes names as strings) is refused too.
    let raw = authpb::User {
        name: bytes::Bytes::from_static(b"\xff"),
        ..Default::default()
    }
    .encode_to_vec();
    let err = read_file(&etcd_auth_file(Some((
        layout::AUTH_USERS_BUCKET,
        b"\xff",
        raw,
    ))))
    .expect_err("not UTF-8");
    assert!(format!("{err:#}").contains("not UTF-8"), "{err:#}");
}

#[test]
fn a_restore_reports_the_auth_store_and_alarms_it_keeps() {
    let file = etcd_auth_file(None);
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let report = restore(&args(
        file.path(),
        &data_dir,
        &["--skip-hash-check", "--shards", "2"],
    ))
    .expect("restores");
    assert!(report.auth_enabled);
    assert_eq!((report.users, report.roles, report.alarms), (4, 2, 1));
    assert!(report
        .to_string()
        .contains("4 users, 2 roles, auth enabled, 1 alarms"));
}
