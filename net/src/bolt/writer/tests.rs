//! The builder's files read back by a reader written from the format (module comment of
//! `bolt.rs`) that checks what bbolt's `tx.Check()` checks: valid metas, every page below the
//! high-water mark reachable exactly once, page ids matching their place, page types; plus key
//! order. `conformance/tests/snapshot.rs` has the real `etcdctl` read them.

use std::collections::BTreeMap;
use std::io::Cursor;

use super::*;
use crate::bolt::{fnv1a64, u16_at, u32_at, u64_at, FLAG_META, FORMAT_VERSION, MAGIC};

pub(crate) type Buckets = BTreeMap<Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>>;

struct Reader<'a> {
    file: &'a [u8],
    high_water: u64,
    seen: Vec<u32>,
}

impl Reader<'_> {
    /// The page (with its overflow pages), marking each as reached.
    fn page(&mut self, pgid: u64) -> (u16, usize, &[u8]) {
        assert!(
            pgid < self.high_water,
            "page {pgid} past the high-water mark"
        );
        let at = pgid as usize * PAGE_SIZE;
        let head = &self.file[at..at + PAGE_HEADER];
        assert_eq!(u64_at(head, 0), pgid, "page id in its header");
        let flags = u16_at(head, 8);
        let count = u16_at(head, 10) as usize;
        let overflow = u32_at(head, 12) as u64;
        for p in pgid..=pgid + overflow {
            self.seen[p as usize] += 1;
        }
        let end = at + (overflow as usize + 1) * PAGE_SIZE;
        (flags, count, &self.file[at..end])
    }

    /// Every element under `pgid`, in order: (leaf flags, key, value).
    fn walk(&mut self, pgid: u64, out: &mut Vec<(u32, Vec<u8>, Vec<u8>)>) {
        let (flags, count, page) = self.page(pgid);
        let page = page.to_vec();
        match flags {
            FLAG_LEAF => {
                for i in 0..count {
                    let at = PAGE_HEADER + i * ELEMENT;
                    let pos = at + u32_at(&page, at + 4) as usize;
                    let ksize = u32_at(&page, at + 8) as usize;
                    let vsize = u32_at(&page, at + 12) as usize;
                    out.push((
                        u32_at(&page, at),
                        page[pos..pos + ksize].to_vec(),
                        page[pos + ksize..pos + ksize + vsize].to_vec(),
                    ));
                }
            }
            FLAG_BRANCH => {
                assert!(count >= 1, "an empty branch page");
                for i in 0..count {
                    let at = PAGE_HEADER + i * ELEMENT;
                    let pos = at + u32_at(&page, at) as usize;
                    let ksize = u32_at(&page, at + 4) as usize;
                    let child = u64_at(&page, at + 8);
                    let key = page[pos..pos + ksize].to_vec();
                    let before = out.len();
                    self.walk(child, out);
                    assert_eq!(
                        out.get(before).map(|e| &e.1),
                        Some(&key),
                        "a branch key is its child's first key"
                    );
                }
            }
            other => panic!("page {pgid}: type {other:#x} in a tree"),
        }
    }
}

fn check_meta(file: &[u8], pgid: u64) -> (u64, u64, u64, u64) {
    let at = pgid as usize * PAGE_SIZE;
    assert_eq!(u16_at(file, at + 8), FLAG_META);
    let m = &file[at + PAGE_HEADER..at + PAGE_HEADER + 64];
    assert_eq!(u32_at(m, 0), MAGIC);
    assert_eq!(u32_at(m, 4), FORMAT_VERSION);
    assert_eq!(u32_at(m, 8) as usize, PAGE_SIZE);
    assert_eq!(u64_at(m, 56), fnv1a64(&m[..56]), "meta checksum");
    (u64_at(m, 16), u64_at(m, 32), u64_at(m, 40), u64_at(m, 48))
}

/// Reads a whole file, checking it as bbolt's `tx.Check()` would.
pub(crate) fn read(file: &[u8]) -> Buckets {
    assert_eq!(file.len() % PAGE_SIZE, 0);
    let (root, freelist, high_water, txid0) = check_meta(file, 0);
    let (root1, freelist1, high_water1, txid1) = check_meta(file, 1);
    assert_eq!(
        (root, freelist, high_water),
        (root1, freelist1, high_water1)
    );
    assert_ne!(txid0, txid1);
    assert_eq!(high_water as usize * PAGE_SIZE, file.len());
    let mut r = Reader {
        file,
        high_water,
        seen: vec![0; high_water as usize],
    };
    r.seen[0] += 1;
    r.seen[1] += 1;
    let (flags, count, _) = r.page(freelist);
    assert_eq!((flags, count), (FLAG_FREELIST, 0));
    let mut names = Vec::new();
    r.walk(root, &mut names);
    let mut buckets = Buckets::new();
    for w in names.windows(2) {
        assert!(w[0].1 < w[1].1, "bucket names ascend");
    }
    for (flags, name, value) in names {
        assert_eq!(flags, BUCKET_LEAF_FLAG);
        assert_eq!(value.len(), 16);
        let mut entries = Vec::new();
        r.walk(u64_at(&value, 0), &mut entries);
        for w in entries.windows(2) {
            assert!(w[0].1 < w[1].1, "keys ascend");
        }
        buckets.insert(
            name,
            entries
                .into_iter()
                .map(|(f, k, v)| {
                    assert_eq!(f, 0);
                    (k, v)
                })
                .collect(),
        );
    }
    for (pgid, n) in r.seen.iter().enumerate() {
        assert_eq!(*n, 1, "page {pgid} reached {n} times");
    }
    buckets
}

fn build(buckets: &Buckets) -> Vec<u8> {
    let mut w = BoltWriter::new(Cursor::new(Vec::new())).expect("new");
    for (name, entries) in buckets {
        w.begin_bucket(name).expect("begin");
        for (k, v) in entries {
            w.put(k, v).expect("put");
        }
        w.end_bucket().expect("end");
    }
    let (out, len) = w.finish().expect("finish");
    let file = out.into_inner();
    assert_eq!(file.len() as u64, len);
    file
}

fn key(i: u64) -> Vec<u8> {
    let mut k = i.to_be_bytes().to_vec();
    k.push(b'_');
    k.extend_from_slice(&0u64.to_be_bytes());
    k
}

#[test]
fn empty_file_and_empty_buckets() {
    assert!(read(&build(&Buckets::new())).is_empty());
    let mut b = Buckets::new();
    b.insert(b"key".to_vec(), Vec::new());
    b.insert(b"alarm".to_vec(), Vec::new());
    let file = build(&b);
    assert_eq!(read(&file), b);
    // Metas, freelist, two empty leaves and the root bucket's leaf.
    assert_eq!(file.len(), 6 * PAGE_SIZE);
}

#[test]
fn many_keys_make_branch_levels() {
    let mut b = Buckets::new();
    let entries: Vec<_> = (1..=60_000u64)
        .map(|i| (key(i), format!("value-{i}").into_bytes()))
        .collect();
    b.insert(b"key".to_vec(), entries);
    b.insert(
        b"meta".to_vec(),
        vec![(b"finishedCompactRev".to_vec(), key(7))],
    );
    let file = build(&b);
    assert_eq!(read(&file), b);
    // 60,000 elements of ~46 bytes: ~700 leaves, so two branch levels above them.
    assert!(file.len() > 600 * PAGE_SIZE, "{}", file.len());
}

#[test]
fn large_values_take_overflow_pages() {
    let mut b = Buckets::new();
    let entries = vec![
        (key(1), vec![1u8; 10]),
        (key(2), vec![2u8; 3 * PAGE_SIZE + 17]),
        (key(3), vec![3u8; PAGE_SIZE - PAGE_HEADER - ELEMENT - 17]),
        (key(4), vec![4u8; 1_500_000]),
        (key(5), Vec::new()),
    ];
    b.insert(b"key".to_vec(), entries);
    let file = build(&b);
    assert_eq!(read(&file), b);
}

#[test]
fn many_buckets_and_long_keys() {
    let mut b = Buckets::new();
    for i in 0..300 {
        let name = format!("bucket-{i:04}-{}", "n".repeat(40)).into_bytes();
        let entries = (0..3u8)
            .map(|j| (vec![b'k'; 2000 + j as usize], vec![j; 100]))
            .collect();
        b.insert(name, entries);
    }
    let file = build(&b);
    assert_eq!(read(&file), b);
}

#[test]
fn refuses_what_bbolt_cannot_hold() {
    let mut w = BoltWriter::new(Cursor::new(Vec::new())).expect("new");
    assert!(w.put(b"k", b"v").is_err(), "outside a bucket");
    w.begin_bucket(b"b").expect("begin");
    assert!(w.begin_bucket(b"c").is_err(), "nested");
    w.put(b"b", b"").expect("put");
    assert!(w.put(b"a", b"").is_err(), "descending");
    assert!(w.put(b"b", b"").is_err(), "repeated");
    assert!(w.put(b"", b"").is_err(), "empty key");
    assert!(
        w.put(&vec![b'z'; KEY_BYTES_MAX + 1], b"").is_err(),
        "long key"
    );
    w.end_bucket().expect("end");
    assert!(w.begin_bucket(b"b").is_err(), "same bucket twice");
    assert!(w.end_bucket().is_err(), "none open");
    w.finish().expect("finish");
}
