//! Tests of [`Reader`]: it reads exactly the last durable epoch (never dirty changes), keeps
//! reading its own epoch after later checkpoints, after the cleaner removed the segments it
//! reads, after its tree was dropped, and while a checkpoint runs on the same thread; get and
//! scan (both directions, bounds, limits, paging) agree with a `BTreeMap` model per epoch over
//! a seeded workload with overflow values; corruption surfaces as an error without stopping the
//! tree.

use super::*;
use crate::io::sim::SimLatency;

/// A reader together with the model of the epoch it reads.
type Epochs = Vec<(Reader<SimDisk>, Model)>;

fn model_range(model: &Model, lo: &Bound<Vec<u8>>, hi: &Bound<Vec<u8>>) -> Vec<(Vec<u8>, Vec<u8>)> {
    if let (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) =
        (lo, hi)
    {
        if a > b || (a == b && !matches!((lo, hi), (Bound::Included(_), Bound::Included(_)))) {
            return Vec::new();
        }
    }
    model
        .range::<Vec<u8>, _>((lo.clone(), hi.clone()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Pages through `lo..hi` with `limit` entries per call, as a caller would: the next call
/// excludes the last key returned.
async fn page_through(
    r: &Reader<SimDisk>,
    t: TreeId,
    lo: &Bound<Vec<u8>>,
    hi: &Bound<Vec<u8>>,
    reverse: bool,
    limit: usize,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let (mut lo, mut hi) = (lo.clone(), hi.clone());
    let mut out = Vec::new();
    for _ in 0..100_000 {
        let got = r
            .scan(t, bound_of(&lo), bound_of(&hi), reverse, limit)
            .await
            .expect("scan");
        assert!(
            got.len() <= limit,
            "{} entries for limit {limit}",
            got.len()
        );
        let done = got.len() < limit;
        if let Some((k, _)) = got.last() {
            if reverse {
                hi = Bound::Excluded(k.clone());
            } else {
                lo = Bound::Excluded(k.clone());
            }
        }
        out.extend(got);
        if done {
            return out;
        }
    }
    panic!("paging did not finish");
}

/// Checks a reader against the model of its epoch: key count, full scans both ways, point
/// reads, random bounded scans both ways with limits, and paging.
async fn assert_reader(r: &Reader<SimDisk>, t: TreeId, model: &Model, rng: &mut StdRng) {
    let probe = |rng: &mut StdRng| -> Vec<u8> {
        if !model.is_empty() && rng.gen_bool(0.5) {
            let mut k = model
                .keys()
                .nth(rng.gen_range(0..model.len()))
                .expect("in range")
                .clone();
            if rng.gen_bool(0.3) {
                k.push(0);
            }
            k
        } else {
            key(rng.gen_range(0..10_000), [0, 100, 300][rng.gen_range(0..3)])
        }
    };
    let all: Vec<_> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    assert_eq!(
        r.len(t).expect("len"),
        model.len() as u64,
        "epoch {}",
        r.epoch()
    );
    let fwd = r
        .scan(t, Bound::Unbounded, Bound::Unbounded, false, 0)
        .await
        .expect("scan");
    assert!(fwd == all, "epoch {}: full scan differs", r.epoch());
    let mut rev = r
        .scan(t, Bound::Unbounded, Bound::Unbounded, true, 0)
        .await
        .expect("scan");
    rev.reverse();
    assert!(rev == all, "epoch {}: reverse scan differs", r.epoch());
    for _ in 0..20 {
        let k = probe(rng);
        assert_eq!(r.get(t, &k).await.expect("get"), model.get(&k).cloned());
    }
    for _ in 0..8 {
        let b = |rng: &mut StdRng| match rng.gen_range(0..3) {
            0 => Bound::Unbounded,
            1 => Bound::Included(probe(rng)),
            _ => Bound::Excluded(probe(rng)),
        };
        let (lo, hi) = (b(rng), b(rng));
        let want = model_range(model, &lo, &hi);
        let limit = rng.gen_range(0..40);
        let reverse = rng.gen_bool(0.5);
        let got = r
            .scan(t, bound_of(&lo), bound_of(&hi), reverse, limit)
            .await
            .expect("scan");
        let n = if limit == 0 {
            want.len()
        } else {
            limit.min(want.len())
        };
        let expect: Vec<_> = if reverse {
            want.iter().rev().take(n).cloned().collect()
        } else {
            want[..n].to_vec()
        };
        assert!(
            got == expect,
            "epoch {}: scan {lo:?}..{hi:?} reverse {reverse} limit {limit}",
            r.epoch()
        );
        let step = rng.gen_range(1..25);
        let mut paged = page_through(r, t, &lo, &hi, reverse, step).await;
        if reverse {
            paged.reverse();
        }
        assert!(paged == want, "epoch {}: paging by {step}", r.epoch());
        // The cursor under `scan`, refilled a few entries at a time (a refill that takes
        // part of a leaf resumes right after its last entry).
        let mut cursor = Range::new(t, bound_of(&lo), bound_of(&hi), reverse);
        let mut walked = Vec::new();
        while let Some(kv) = cursor.next_in(r, rng.gen_range(1..4)).await.expect("next") {
            walked.push(kv);
        }
        if reverse {
            walked.reverse();
        }
        assert!(
            walked == want,
            "epoch {}: cursor in small refills",
            r.epoch()
        );
    }
}

async fn check_epochs(epochs: &Epochs, t: TreeId, rng: &mut StdRng) {
    for (r, m) in epochs {
        assert_reader(r, t, m, rng).await;
    }
}

async fn segment_files(disk: &SimDisk, prefix: &str) -> Vec<String> {
    disk.list()
        .await
        .expect("list")
        .into_iter()
        .filter(|n| n.starts_with(prefix) && n.ends_with(".seg"))
        .collect()
}

#[test]
fn reader_sees_the_durable_epoch_not_dirty_changes() {
    block_on(async {
        let disk = SimDisk::new(101);
        let mut bt = BTree::open(disk.clone(), small_config())
            .await
            .expect("open");
        let r0 = bt.reader();
        assert_eq!(r0.epoch(), 0);
        let mut m1 = Model::new();
        for i in 0..300u32 {
            let v = format!("v1-{i}").into_bytes();
            bt.insert(T0, &key(i, 30), &v).await.expect("insert");
            m1.insert(key(i, 30), v);
        }
        // Nothing is durable yet: a reader sees the empty epoch 0.
        let mut rng = StdRng::seed_from_u64(101);
        assert_reader(&bt.reader(), T0, &Model::new(), &mut rng).await;
        bt.checkpoint(10, 1).await.expect("ckpt");
        let r1 = bt.reader();
        assert_eq!((r1.epoch(), r1.applied_index(), r1.revision()), (1, 10, 1));
        assert_reader(&r1, T0, &m1, &mut rng).await;
        // Dirty changes: overwrites, removals, new keys; then a large overflow value.
        let mut m2 = m1.clone();
        for i in (0..300u32).step_by(3) {
            assert!(bt.remove(T0, &key(i, 30)).await.expect("remove"));
            m2.remove(&key(i, 30));
        }
        for i in 250..400u32 {
            let v = format!("v2-{i}").into_bytes();
            bt.insert(T0, &key(i, 30), &v).await.expect("insert");
            m2.insert(key(i, 30), v);
        }
        let big = vec![7u8; 20_000];
        bt.insert(T0, b"big", &big).await.expect("insert");
        m2.insert(b"big".to_vec(), big.clone());
        assert!(bt.stats().dirty_nodes > 0);
        // Neither the old reader nor one taken now sees them.
        let r1b = bt.reader();
        assert_eq!(r1b.epoch(), 1);
        assert_reader(&r1, T0, &m1, &mut rng).await;
        assert_reader(&r1b, T0, &m1, &mut rng).await;
        assert_eq!(r1.get(T0, b"big").await.expect("get"), None);
        assert_eq!(bt.get(T0, b"big").await.expect("get"), Some(big.clone()));
        bt.checkpoint(20, 2).await.expect("ckpt");
        let r2 = bt.reader();
        assert_eq!((r2.epoch(), r2.applied_index(), r2.revision()), (2, 20, 2));
        assert_reader(&r2, T0, &m2, &mut rng).await;
        assert_eq!(r2.get(T0, b"big").await.expect("get"), Some(big));
        // Older readers (and their clones) keep their epochs.
        assert_reader(&r1.clone(), T0, &m1, &mut rng).await;
        assert_reader(&r0, T0, &Model::new(), &mut rng).await;
        assert_eq!(r2.len(T1).expect("len"), 0);
        assert!(matches!(
            r2.get(TreeId(9), b"k").await,
            Err(Error::UnknownTree { tree: 9 })
        ));
        // Reads through readers share the tree's cache and its counters.
        let s = bt.stats();
        assert!(s.cache_hits > 0 && s.cached_pages > 0, "{s:?}");
    });
}

#[test]
fn old_reader_reads_after_the_cleaner_removed_its_segments() {
    block_on(async {
        let mut rng = StdRng::seed_from_u64(111);
        let cfg = Config {
            cleaner_live_ratio_max: 0.95,
            cleaner_segments_per_checkpoint: 8,
            // A small cache: the old reader must read its pages from the segment files.
            cache_bytes: 8 * PAGE_SIZE as u64,
            ..small_config()
        };
        let disk = SimDisk::new(111);
        let mut bt = BTree::open(disk.clone(), cfg.clone()).await.expect("open");
        let mut model = Model::new();
        for i in 0..1500 {
            random_op(&mut bt, T0, &mut model, &mut rng, 100, 1200, 100).await;
            if i % 300 == 299 {
                bt.checkpoint(i, 0).await.expect("ckpt");
            }
        }
        bt.checkpoint(2000, 0).await.expect("ckpt");
        let old = bt.reader();
        let old_model = model.clone();
        let old_files = segment_files(&disk, "pages").await;
        assert!(old_files.len() >= 3, "{old_files:?}");
        // Remove most keys and overwrite the rest over several checkpoints: the cleaner
        // relocates the survivors and removes every old segment.
        let mut cleaned = 0;
        for round in 0..10u64 {
            for _ in 0..300 {
                random_op(&mut bt, T0, &mut model, &mut rng, 20, 1200, 100).await;
            }
            let rep = bt.checkpoint(3000 + round, 0).await.expect("ckpt");
            cleaned += rep.segments_cleaned;
        }
        let s = bt.stats();
        assert!(cleaned > 0 && s.pages_relocated > 0, "{s:?}");
        let now = segment_files(&disk, "pages").await;
        let gone: Vec<_> = old_files.iter().filter(|f| !now.contains(f)).collect();
        assert!(
            gone.len() >= 2,
            "old segments must be removed: {old_files:?} -> {now:?}"
        );
        let reads0 = disk.stats().reads;
        assert_reader(&old, T0, &old_model, &mut rng).await;
        assert!(
            disk.stats().reads > reads0,
            "the old epoch is read from disk"
        );
        assert_reader(&bt.reader(), T0, &model, &mut rng).await;
        // The tree itself is still consistent, and so is a reopen.
        bt.check_invariants().await.expect("invariants");
        drop(bt);
        let bt = BTree::open(disk.crash_with(CrashPolicy::DropAll), cfg)
            .await
            .expect("reopen");
        assert_reader(&bt.reader(), T0, &model, &mut rng).await;
        // The old reader outlives its tree.
        assert_reader(&old, T0, &old_model, &mut rng).await;
    });
}

#[test]
fn readers_agree_with_the_model_across_checkpoints_and_reopen() {
    for (seed, lz4) in [(121u64, false), (122, true)] {
        block_on(async {
            let mut rng = StdRng::seed_from_u64(seed);
            let cfg = Config {
                lz4,
                cleaner_live_ratio_max: 0.7,
                cache_bytes: 32 * PAGE_SIZE as u64,
                ..small_config()
            };
            let mut disk = SimDisk::new(seed);
            let mut bt = BTree::open(disk.clone(), cfg.clone()).await.expect("open");
            let (mut m0, mut m1) = (Model::new(), Model::new());
            let mut epochs0: Epochs = vec![(bt.reader(), Model::new())];
            let mut epochs1: Epochs = vec![(bt.reader(), Model::new())];
            for round in 1..=6u64 {
                for _ in 0..300 {
                    random_op(&mut bt, T0, &mut m0, &mut rng, 70, 900, 120).await;
                    random_op(&mut bt, T1, &mut m1, &mut rng, 60, 400, 20).await;
                }
                // With changes pending, every reader still reads its own epoch.
                check_epochs(&epochs0, T0, &mut rng).await;
                bt.checkpoint(round, round as i64).await.expect("ckpt");
                epochs0.push((bt.reader(), m0.clone()));
                epochs1.push((bt.reader(), m1.clone()));
                assert_eq!(bt.reader().epoch(), round);
                check_epochs(&epochs0, T0, &mut rng).await;
                check_epochs(&epochs1, T1, &mut rng).await;
                if round == 3 {
                    // Reboot: a reader of the reopened tree reads the same state; the readers
                    // of the dropped tree keep theirs.
                    drop(bt);
                    disk = disk.crash_with(CrashPolicy::DropAll);
                    bt = BTree::open(disk.clone(), cfg.clone())
                        .await
                        .expect("reopen");
                    let r = bt.reader();
                    assert_eq!(r.epoch(), 3);
                    assert_reader(&r, T0, &m0, &mut rng).await;
                    assert_reader(&r, T1, &m1, &mut rng).await;
                }
            }
            let s = bt.stats();
            assert!(s.cache_evictions > 0, "{s:?}");
            assert!(
                m0.values().any(|v| v.len() > 4000),
                "overflow values are part of the workload"
            );
            check_epochs(&epochs0, T0, &mut rng).await;
            bt.check_invariants().await.expect("invariants");
        });
    }
}

#[test]
fn reader_scan_interleaved_with_a_running_checkpoint_reads_its_epoch() {
    block_on(async {
        let mut rng = StdRng::seed_from_u64(131);
        let cfg = Config {
            cleaner_live_ratio_max: 0.95,
            cleaner_segments_per_checkpoint: 8,
            cache_bytes: 4 * PAGE_SIZE as u64,
            write_chunk_bytes: 4 * PAGE_SIZE,
            ..small_config()
        };
        let disk = SimDisk::new(131);
        disk.set_latency(SimLatency {
            read_us: 100,
            write_us: 50,
            sync_us: 1000,
        });
        let mut bt = BTree::open(disk.clone(), cfg.clone()).await.expect("open");
        let mut model = Model::new();
        for i in 0..1200 {
            random_op(&mut bt, T0, &mut model, &mut rng, 100, 1000, 60).await;
            if i % 400 == 399 {
                bt.checkpoint(i, 0).await.expect("ckpt");
            }
        }
        bt.checkpoint(1, 1).await.expect("ckpt");
        let old_model = model.clone();
        let reader = bt.reader();
        let epoch = reader.epoch();
        let old_files = segment_files(&disk, "pages").await;
        for _ in 0..800 {
            random_op(&mut bt, T0, &mut model, &mut rng, 30, 1000, 60).await;
        }
        // Each disk operation yields to the executor, so the two futures below alternate.
        disk.set_yields_per_op(3);
        let (ckpt, (pages, seen)) = futures::join!(bt.checkpoint(2, 2), async {
            // Page through the old epoch 7 entries at a time, noting the disk's mutations and
            // whether an old segment was already gone after each page.
            let mut out = Vec::new();
            let mut seen = Vec::new();
            let mut lo: Bound<Vec<u8>> = Bound::Unbounded;
            loop {
                let got = reader
                    .scan(T0, bound_of(&lo), Bound::Unbounded, false, 7)
                    .await
                    .expect("scan during checkpoint");
                let removed = old_files.iter().any(|f| disk.live_image(f).is_none());
                seen.push((disk.stats().mutations, removed));
                let Some((k, _)) = got.last() else { break };
                lo = Bound::Excluded(k.clone());
                out.extend(got);
            }
            (out, seen)
        });
        let rep = ckpt.expect("checkpoint");
        assert!(rep.segments_cleaned > 0, "{rep:?}");
        let want: Vec<_> = old_model
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert!(
            pages == want,
            "the reader saw its epoch during the checkpoint"
        );
        // The checkpoint really ran between the reader's pages: the disk was mutated between
        // two of them, and some of them came after victim segments were removed.
        let (first, last) = (seen[0].0, seen[seen.len() - 1].0);
        assert!(first < last, "no mutation while scanning: {first}..{last}");
        assert!(
            seen.iter().any(|&(_, removed)| removed),
            "no page read after the cleaner removed a segment ({} pages)",
            seen.len()
        );
        assert!(disk.clock_us() > 0);
        assert_eq!((reader.epoch(), bt.reader().epoch()), (epoch, epoch + 1));
        assert_reader(&reader, T0, &old_model, &mut rng).await;
        assert_reader(&bt.reader(), T0, &model, &mut rng).await;
    });
}

#[test]
fn corrupt_page_is_a_reader_error_and_does_not_stop_the_tree() {
    block_on(async {
        let disk = SimDisk::new(141);
        let mut bt = BTree::open(disk.clone(), small_config())
            .await
            .expect("open");
        for i in 0..400u32 {
            bt.insert(T0, &key(i, 20), b"value").await.expect("insert");
        }
        bt.checkpoint(1, 1).await.expect("ckpt");
        // Corrupt the first leaf on disk.
        let root = bt.roots[0].expect("root");
        let Node::Branch(b) = &*bt.node(0, root).await.expect("root") else {
            panic!("400 keys make more than one leaf")
        };
        let Child::Page(leaf) = b.children[0] else {
            panic!("clean after a checkpoint")
        };
        // The largest key (keys sort by their padding first), in the last leaf.
        let last_key = key(398, 20);
        assert!(b.keys.last().is_some_and(|s| last_key >= *s));
        drop(bt);
        disk.flip_byte(
            &segment_name("pages", leaf.segment()),
            leaf.offset() + 200,
            0x10,
        );
        let mut bt = BTree::open(disk.clone(), small_config())
            .await
            .expect("reopen");
        let r = bt.reader();
        for _ in 0..2 {
            match r.get(T0, &key(0, 20)).await {
                Err(Error::ChecksumMismatch {
                    page,
                    expected,
                    actual,
                }) => {
                    assert_eq!(page, leaf);
                    assert_ne!(expected, actual);
                }
                other => panic!("expected a checksum mismatch, got {other:?}"),
            }
        }
        assert!(matches!(
            r.scan(T0, Bound::Unbounded, Bound::Unbounded, false, 0)
                .await,
            Err(Error::ChecksumMismatch { .. })
        ));
        // Other leaves still read; the tree is not stopped by a reader's failure.
        assert_eq!(
            r.get(T0, &last_key).await.expect("get"),
            Some(b"value".to_vec())
        );
        bt.insert(T0, &last_key, b"new").await.expect("insert");
        bt.checkpoint(2, 2).await.expect("ckpt");
        assert_eq!(
            bt.reader().get(T0, &last_key).await.expect("get"),
            Some(b"new".to_vec())
        );
        // A transient corruption of one read (cold cache): an error, then the right answer.
        drop(bt);
        let bt = BTree::open(disk.clone(), small_config())
            .await
            .expect("reopen");
        let r = bt.reader();
        disk.fail_next(&segment_name("pages", leaf.segment()), FaultOp::CorruptRead);
        let first = r.get(T0, &last_key).await;
        assert!(
            matches!(first, Err(Error::ChecksumMismatch { .. })),
            "{first:?}"
        );
        assert_eq!(
            r.get(T0, &last_key).await.expect("get"),
            Some(b"new".to_vec())
        );
    });
}

#[test]
fn a_stopped_tree_still_hands_out_its_durable_epoch() {
    block_on(async {
        let disk = SimDisk::new(151);
        let mut bt = BTree::open(disk.clone(), small_config())
            .await
            .expect("open");
        bt.insert(T0, b"a", b"1").await.expect("insert");
        bt.checkpoint(1, 1).await.expect("ckpt");
        bt.insert(T0, b"b", b"2").await.expect("insert");
        disk.fail_next("pages.super", FaultOp::Sync);
        assert!(bt.checkpoint(2, 2).await.is_err());
        assert!(matches!(bt.get(T0, b"a").await, Err(Error::Stopped { .. })));
        let r = bt.reader();
        assert_eq!(r.epoch(), 1);
        assert_eq!(r.get(T0, b"a").await.expect("get"), Some(b"1".to_vec()));
        assert_eq!(r.get(T0, b"b").await.expect("get"), None);
    });
}

#[test]
fn scan_with_a_limit_reads_only_the_values_it_returns() {
    block_on(async {
        let disk = SimDisk::new(161);
        let mut bt = BTree::open(disk.clone(), small_config())
            .await
            .expect("open");
        // One leaf of overflow references, each value three pages long.
        for i in 0..40u32 {
            let v = vec![i as u8; 9000];
            bt.insert(T0, format!("k{i:02}").as_bytes(), &v)
                .await
                .expect("insert");
        }
        bt.checkpoint(1, 1).await.expect("ckpt");
        drop(bt);
        let bt = BTree::open(disk.clone(), small_config())
            .await
            .expect("reopen");
        let r = bt.reader();
        let reads = |f: u64| disk.stats().reads - f;
        let r0 = disk.stats().reads;
        let two = r
            .scan(T0, Bound::Excluded(b"k10"), Bound::Unbounded, true, 2)
            .await
            .expect("scan");
        let keys: Vec<_> = two.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(keys, [b"k39".to_vec(), b"k38".to_vec()]);
        assert_eq!(two[0].1, vec![39u8; 9000]);
        let few = reads(r0);
        let r1 = disk.stats().reads;
        let all = r
            .scan(T0, Bound::Unbounded, Bound::Unbounded, false, 0)
            .await
            .expect("scan");
        assert_eq!(all.len(), 40);
        let many = reads(r1);
        assert!(
            few <= 4 && many >= 40,
            "reads: {few} for 2 values, {many} for 40"
        );
    });
}
