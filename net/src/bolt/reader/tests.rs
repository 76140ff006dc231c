//! The reader against files of our own writer (`bolt/writer.rs`: many leaves, branch levels,
//! overflow pages), hand-built files for what that writer never writes (inline and nested
//! buckets, a damaged meta 0, another page size), and damaged files, which must give errors,
//! never panics. Files written by the real etcd 3.4.23 are read in
//! `conformance/tests/restore.rs`.

use std::io::{Seek, SeekFrom, Write};

use super::*;
use crate::bolt::writer::BoltWriter;
use crate::bolt::{fnv1a64, ELEMENT, FLAG_META, FORMAT_VERSION};

type Buckets = Vec<(Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>)>;

fn write_file(buckets: &Buckets) -> (tempfile::NamedTempFile, u64) {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    let mut w = BoltWriter::new(file.as_file_mut()).expect("writer");
    for (name, entries) in buckets {
        w.begin_bucket(name).expect("bucket");
        for (k, v) in entries {
            w.put(k, v).expect("put");
        }
        w.end_bucket().expect("end");
    }
    let (_, len) = w.finish().expect("finish");
    (file, len)
}

fn open(file: &tempfile::NamedTempFile, len: u64) -> Result<BoltFile> {
    BoltFile::open(file.reopen().expect("reopen"), len)
}

fn read_all(bolt: &BoltFile, bucket: &Bucket) -> Result<Vec<Entry>> {
    let mut c = bolt.cursor(bucket);
    let mut out = Vec::new();
    while let Some(e) = c.next_entry()? {
        out.push(e);
    }
    Ok(out)
}

fn sample() -> Buckets {
    let many: Vec<(Vec<u8>, Vec<u8>)> = (0..5_000u32)
        .map(|i| {
            (
                format!("key-{i:06}").into_bytes(),
                format!("value {i} {}", "x".repeat((i % 50) as usize)).into_bytes(),
            )
        })
        .collect();
    vec![
        (b"empty".to_vec(), Vec::new()),
        (
            b"big".to_vec(),
            vec![
                (b"a".to_vec(), vec![7u8; 3 * 4096 + 100]),
                (b"b".to_vec(), b"small".to_vec()),
            ],
        ),
        (b"many".to_vec(), many),
    ]
}

#[test]
fn reads_back_what_the_writer_wrote() {
    let buckets = sample();
    let (file, len) = write_file(&buckets);
    let bolt = open(&file, len).expect("opens");
    assert_eq!(bolt.meta().page_size, 4096);
    let root = read_all(&bolt, &bolt.root()).expect("root");
    let mut names: Vec<&[u8]> = buckets.iter().map(|(n, _)| n.as_slice()).collect();
    names.sort();
    assert_eq!(
        root.iter().map(|e| e.key.as_slice()).collect::<Vec<_>>(),
        names
    );
    assert!(root.iter().all(|e| e.is_bucket));
    for (name, entries) in &buckets {
        let b = bolt
            .bucket(&bolt.root(), name)
            .expect("lookup")
            .expect("bucket");
        let got: Vec<(Vec<u8>, Vec<u8>)> = read_all(&bolt, &b)
            .expect("entries")
            .into_iter()
            .map(|e| {
                assert!(!e.is_bucket);
                (e.key, e.value)
            })
            .collect();
        assert_eq!(&got, entries, "bucket {}", String::from_utf8_lossy(name));
    }
    assert_eq!(bolt.bucket(&bolt.root(), b"absent").expect("lookup"), None);
    // "many" needs a branch level: more than one page of keys.
    let many = bolt.bucket(&bolt.root(), b"many").unwrap().unwrap();
    let Bucket::Page(root) = many else {
        panic!("a page bucket")
    };
    assert!(!Frame::new(bolt.page(root).unwrap(), root).unwrap().leaf);
}

/// A leaf page's bytes (header then elements), `page_size` long, or exactly as long as its
/// content when `page_size` is 0 (an inline bucket).
fn leaf(pgid: u64, elements: &[(u32, &[u8], &[u8])], page_size: usize) -> Vec<u8> {
    let mut p = vec![0u8; PAGE_HEADER + elements.len() * ELEMENT];
    p[0..8].copy_from_slice(&pgid.to_le_bytes());
    p[8..10].copy_from_slice(&FLAG_LEAF.to_le_bytes());
    p[10..12].copy_from_slice(&(elements.len() as u16).to_le_bytes());
    for (i, (flags, k, v)) in elements.iter().enumerate() {
        let at = PAGE_HEADER + i * ELEMENT;
        let pos = (p.len() - at) as u32;
        p[at..at + 4].copy_from_slice(&flags.to_le_bytes());
        p[at + 4..at + 8].copy_from_slice(&pos.to_le_bytes());
        p[at + 8..at + 12].copy_from_slice(&(k.len() as u32).to_le_bytes());
        p[at + 12..at + 16].copy_from_slice(&(v.len() as u32).to_le_bytes());
        p.extend_from_slice(k);
        p.extend_from_slice(v);
    }
    if page_size > 0 {
        assert!(p.len() <= page_size);
        p.resize(page_size, 0);
    }
    p
}

fn meta_page(pgid: u64, page_size: u32, root: u64, high_water: u64, txid: u64) -> Vec<u8> {
    let mut m = Vec::new();
    for v in [MAGIC, FORMAT_VERSION, page_size, 0] {
        m.extend_from_slice(&v.to_le_bytes());
    }
    for v in [root, 0, u64::MAX, high_water, txid] {
        m.extend_from_slice(&v.to_le_bytes());
    }
    let sum = fnv1a64(&m);
    m.extend_from_slice(&sum.to_le_bytes());
    let mut p = vec![0u8; page_size as usize];
    p[0..8].copy_from_slice(&pgid.to_le_bytes());
    p[8..10].copy_from_slice(&FLAG_META.to_le_bytes());
    p[PAGE_HEADER..PAGE_HEADER + m.len()].copy_from_slice(&m);
    p
}

fn bucket_value(root: u64, inline: &[u8]) -> Vec<u8> {
    let mut v = root.to_le_bytes().to_vec();
    v.extend_from_slice(&1u64.to_le_bytes());
    v.extend_from_slice(inline);
    v
}

/// bbolt's shape for small buckets: the root holds `outer` (a page bucket) and `small` (an
/// inline bucket); `outer` holds a key and the inline bucket `inner`. Page size 8192, meta 1
/// newer than meta 0 and naming another root.
fn nested_file() -> Vec<u8> {
    const PS: usize = 8192;
    let inner = leaf(0, &[(0, b"x", b"1"), (0, b"y", b"2")], 0);
    let small = leaf(0, &[(0, b"only", b"one")], 0);
    let outer = leaf(
        3,
        &[
            (0, b"plain", b"v"),
            (BUCKET_LEAF_FLAG, b"zinner", &bucket_value(0, &inner)),
        ],
        PS,
    );
    let root_new = leaf(
        4,
        &[
            (BUCKET_LEAF_FLAG, b"outer", &bucket_value(3, &[])),
            (BUCKET_LEAF_FLAG, b"small", &bucket_value(0, &small)),
        ],
        PS,
    );
    let root_old = leaf(5, &[], PS);
    let mut f = Vec::new();
    f.extend(meta_page(0, PS as u32, 5, 6, 7));
    f.extend(meta_page(1, PS as u32, 4, 6, 8));
    f.extend(vec![0u8; PS]); // page 2: a freelist nobody reads
    f.extend(outer);
    f.extend(root_new);
    f.extend(root_old);
    f
}

fn temp_with(bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(bytes).expect("write");
    file
}

#[test]
fn inline_and_nested_buckets_and_the_newer_meta() {
    let bytes = nested_file();
    let file = temp_with(&bytes);
    let bolt = open(&file, bytes.len() as u64).expect("opens");
    assert_eq!(bolt.meta().page_size, 8192);
    assert_eq!(bolt.meta().txid, 8, "the newer meta wins");
    let outer = bolt.bucket(&bolt.root(), b"outer").unwrap().unwrap();
    let entries = read_all(&bolt, &outer).unwrap();
    assert_eq!(entries[0].key, b"plain");
    assert!(entries[1].is_bucket);
    let inner = bolt.bucket_of(&entries[1]).unwrap();
    assert!(matches!(inner, Bucket::Inline(_)));
    let got: Vec<_> = read_all(&bolt, &inner)
        .unwrap()
        .into_iter()
        .map(|e| (e.key, e.value))
        .collect();
    assert_eq!(
        got,
        vec![
            (b"x".to_vec(), b"1".to_vec()),
            (b"y".to_vec(), b"2".to_vec())
        ]
    );
    let small = bolt.bucket(&bolt.root(), b"small").unwrap().unwrap();
    assert_eq!(read_all(&bolt, &small).unwrap()[0].value, b"one");
    // A key is not a bucket.
    assert!(bolt.bucket(&outer, b"plain").is_err());

    // Meta 1 damaged: meta 0 (older, the empty root) is used.
    let mut damaged = bytes.clone();
    damaged[8192 + PAGE_HEADER + 20] ^= 0xff;
    let file = temp_with(&damaged);
    let bolt = open(&file, damaged.len() as u64).expect("opens on meta 0");
    assert_eq!(bolt.meta().txid, 7);
    assert!(read_all(&bolt, &bolt.root()).unwrap().is_empty());

    // Meta 0 damaged: meta 1 is found at its page size.
    let mut damaged = bytes.clone();
    damaged[PAGE_HEADER + 20] ^= 0xff;
    let file = temp_with(&damaged);
    let bolt = open(&file, damaged.len() as u64).expect("opens on meta 1");
    assert_eq!(bolt.meta().txid, 8);
    assert_eq!(read_all(&bolt, &bolt.root()).unwrap().len(), 2);
}

#[test]
fn damaged_files_are_errors_not_panics() {
    let (file, len) = write_file(&sample());
    let good = std::fs::read(file.path()).unwrap()[..len as usize].to_vec();

    // Not bbolt at all, empty, or shorter than a meta.
    for bytes in [
        b"this is not a database, just some text that goes on for a while".repeat(200),
        Vec::new(),
        good[..40].to_vec(),
    ] {
        let f = temp_with(&bytes);
        let err = open(&f, bytes.len() as u64).err().expect("refused");
        assert!(matches!(err, BoltError::NotBolt { .. }), "{err}");
    }

    // Both metas fail their checksum.
    let mut bad = good.clone();
    bad[PAGE_HEADER + 50] ^= 1;
    bad[4096 + PAGE_HEADER + 50] ^= 1;
    let f = temp_with(&bad);
    let err = open(&f, bad.len() as u64).err().expect("refused");
    assert!(matches!(err, BoltError::BadMeta { .. }), "{err}");
    assert!(err.to_string().contains("checksum mismatch"), "{err}");

    // Truncated: the meta names more pages than the file has.
    let cut = &good[..good.len() / 2];
    let f = temp_with(cut);
    let err = open(&f, cut.len() as u64).err().expect("refused");
    assert!(err.to_string().contains("truncated"), "{err}");

    // Every single page's header damaged in turn, and every byte of the first data pages
    // flipped: the walk ends in an error or in some entries, never a panic or a hang.
    let pages = good.len() / 4096;
    let walk = |bytes: &[u8]| -> Result<usize> {
        let f = temp_with(bytes);
        let bolt = open(&f, bytes.len() as u64)?;
        let mut n = 0;
        for b in read_all(&bolt, &bolt.root())? {
            n += read_all(&bolt, &bolt.bucket_of(&b)?)?.len();
        }
        Ok(n)
    };
    assert_eq!(walk(&good).unwrap(), 5_002);
    for page in 3..pages {
        for (at, v) in [(0usize, 0xffu8), (8, 0x10), (10, 0xff), (12, 0x7f)] {
            let mut bad = good.clone();
            bad[page * 4096 + at] ^= v;
            let _ = walk(&bad);
        }
    }
    for i in (3 * 4096..4 * 4096).step_by(7) {
        let mut bad = good.clone();
        bad[i] ^= 0xa5;
        let _ = walk(&bad);
    }

    // A branch naming itself: the depth bound ends the walk.
    let (file, len) = write_file(&sample());
    let bolt = open(&file, len).unwrap();
    let Bucket::Page(root) = bolt.bucket(&bolt.root(), b"many").unwrap().unwrap() else {
        panic!("a page bucket")
    };
    let mut f = file.reopen().unwrap();
    f.seek(SeekFrom::Start(root * 4096 + PAGE_HEADER as u64 + 8))
        .unwrap();
    f.write_all(&root.to_le_bytes()).unwrap();
    let bolt = open(&file, len).unwrap();
    let many = bolt.bucket(&bolt.root(), b"many").unwrap().unwrap();
    let err = read_all(&bolt, &many).expect_err("refused");
    assert!(err.to_string().contains("deeper than"), "{err}");
}
