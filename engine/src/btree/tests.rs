//! Tests of the page-log B+tree against a `BTreeMap` model, on the simulated disk: seeded
//! random operations (splits and merges at every level), checkpoint and reopen, crashes at
//! every mutating disk operation of a checkpoint, a bounded cache, the cleaner, corruption and
//! fail-stop, and ascending loads (left-full splits at the right edge: page fill). Page
//! encode/decode tests, including the decode-of-random-bytes property, are in `page_tests`;
//! tests of [`Reader`] (durable epochs read beside a changing tree) in `reader_tests`.

use std::collections::BTreeMap;
use std::ops::Bound;

use futures::executor::block_on;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::page::Child;
use super::*;
use crate::io::sim::{CrashPolicy, FaultOp, SimDisk};

mod page_tests;
mod reader_tests;

type Model = BTreeMap<Vec<u8>, Vec<u8>>;
const T0: TreeId = TreeId(0);
const T1: TreeId = TreeId(1);

fn small_config() -> Config {
    Config {
        segment_bytes: 64 * PAGE_SIZE as u64,
        cache_bytes: 256 * PAGE_SIZE as u64,
        ..Config::default()
    }
}

/// Key `i` of a keyspace whose keys vary in length: a third have no prefix, a third a prefix
/// of `pad_max / 3` bytes and a third of `pad_max` bytes, then a fixed-width number. Neighbours
/// share their prefix, so separators (truncated after the first differing byte) stay long and
/// fan-out stays small: a few thousand keys make a deep tree.
fn key(i: u32, pad_max: usize) -> Vec<u8> {
    let pad = [0, pad_max / 3, pad_max][(i % 3) as usize];
    let mut k = vec![b'p'; pad];
    k.extend(format!("/{i:07}").into_bytes());
    k
}

/// Mostly small values, some near the inline/overflow boundary, a few spanning many pages.
fn value(rng: &mut StdRng) -> Vec<u8> {
    let len = match rng.gen_range(0..100) {
        0..=79 => rng.gen_range(0..120),
        80..=95 => rng.gen_range(1500..2600),
        _ => rng.gen_range(4000..30_000),
    };
    let b: u8 = rng.gen();
    (0..len).map(|i| b.wrapping_add(i as u8)).collect()
}

/// Height of a tree (0 = empty, 1 = one leaf).
async fn height<D: Disk>(bt: &mut BTree<D>, t: TreeId) -> u16 {
    match bt.roots[usize::from(t.0)] {
        None => 0,
        Some(c) => bt.node(t.0, c).await.expect("root readable").level() + 1,
    }
}

async fn scan_all<D: Disk>(bt: &mut BTree<D>, t: TreeId) -> Vec<(Vec<u8>, Vec<u8>)> {
    bt.scan(t, Bound::Unbounded, Bound::Unbounded, 0)
        .await
        .expect("scan")
}

fn bound_of(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    b.as_ref().map(Vec::as_slice)
}

/// Checks the tree against the model: full scan, random point reads, random ranges both ways.
async fn assert_model<D: Disk>(bt: &mut BTree<D>, t: TreeId, model: &Model, rng: &mut StdRng) {
    // Probe keys: present ones and, from a wide keyspace, mostly absent ones.
    let probe = |rng: &mut StdRng| -> Vec<u8> {
        if !model.is_empty() && rng.gen_bool(0.5) {
            let k = model
                .keys()
                .nth(rng.gen_range(0..model.len()))
                .expect("in range");
            let mut k = k.clone();
            if rng.gen_bool(0.3) {
                k.push(0);
            }
            k
        } else {
            key(
                rng.gen_range(0..10_000),
                [0, 100, 300, 600][rng.gen_range(0..4)],
            )
        }
    };
    let all = scan_all(bt, t).await;
    assert_eq!(all.len(), model.len(), "key count");
    assert!(
        all.iter()
            .zip(model)
            .all(|(a, (k, v))| a.0 == *k && a.1 == *v),
        "full scan differs from the model"
    );
    assert_eq!(bt.len(t).expect("tree"), model.len() as u64);
    for _ in 0..20 {
        let k = probe(rng);
        assert_eq!(bt.get(t, &k).await.expect("get"), model.get(&k).cloned());
    }
    for _ in 0..6 {
        let b = |rng: &mut StdRng| match rng.gen_range(0..3) {
            0 => Bound::Unbounded,
            1 => Bound::Included(probe(rng)),
            _ => Bound::Excluded(probe(rng)),
        };
        let lo = b(rng);
        let hi = b(rng);
        let want: Vec<_> = if matches!((&lo, &hi), (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) if a > b)
        {
            Vec::new()
        } else {
            model
                .range::<Vec<u8>, _>((lo.clone(), hi.clone()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        let limit = rng.gen_range(0..50);
        let got = bt
            .scan(t, bound_of(&lo), bound_of(&hi), limit)
            .await
            .expect("range");
        let n = if limit == 0 {
            want.len()
        } else {
            limit.min(want.len())
        };
        assert_eq!(got, want[..n], "range {lo:?}..{hi:?} limit {limit}");
        let mut r = bt.range_rev(t, bound_of(&lo), bound_of(&hi));
        let mut rev = Vec::new();
        while let Some(kv) = r.next(bt).await.expect("rev") {
            rev.push(kv);
        }
        rev.reverse();
        assert_eq!(rev, want, "reverse range {lo:?}..{hi:?}");
    }
}

/// Applies one random insert or remove to both.
async fn random_op<D: Disk>(
    bt: &mut BTree<D>,
    t: TreeId,
    model: &mut Model,
    rng: &mut StdRng,
    insert_pct: u32,
    keyspace: u32,
    pad_max: usize,
) {
    let k = key(rng.gen_range(0..keyspace), pad_max);
    if rng.gen_range(0..100) < insert_pct {
        let v = value(rng);
        let existed = bt.insert(t, &k, &v).await.expect("insert");
        assert_eq!(existed, model.insert(k, v).is_some());
    } else {
        let existed = bt.remove(t, &k).await.expect("remove");
        assert_eq!(existed, model.remove(&k).is_some());
    }
}

#[test]
fn model_random_ops_split_and_merge_at_every_level() {
    for (seed, lz4) in [(1u64, false), (2, false), (3, true)] {
        block_on(async {
            let mut rng = StdRng::seed_from_u64(seed);
            let cfg = Config {
                lz4,
                ..small_config()
            };
            let mut disk = SimDisk::new(seed);
            let mut bt = BTree::open(disk.clone(), cfg.clone()).await.expect("open");
            let mut model = Model::new();
            let mut max_height = 0;
            // Grow: long keys give a small fan-out, so a few thousand keys make a deep tree.
            for i in 0..6000u64 {
                random_op(&mut bt, T0, &mut model, &mut rng, 85, 6000, 600).await;
                max_height = max_height.max(height(&mut bt, T0).await);
                if i % 1500 == 1499 {
                    bt.check_invariants().await.expect("invariants");
                    assert_model(&mut bt, T0, &model, &mut rng).await;
                    // The same tree read back from disk after a reboot.
                    bt.checkpoint(i, 0).await.expect("ckpt");
                    drop(bt);
                    disk = disk.crash_with(CrashPolicy::DropAll);
                    bt = BTree::open(disk.clone(), cfg.clone())
                        .await
                        .expect("reopen");
                    bt.check_invariants()
                        .await
                        .expect("invariants after reopen");
                }
            }
            // lz4 packs up to four pages' worth of entries into a page: one level less.
            let want_height = if lz4 { 3 } else { 4 };
            assert!(
                max_height >= want_height,
                "seed {seed}: height only {max_height}"
            );
            // Shrink to nothing: merges at every level, the root collapsing each time.
            let mut heights = vec![height(&mut bt, T0).await];
            while !model.is_empty() {
                let k = model.keys().nth(rng.gen_range(0..model.len())).cloned();
                let k = k.expect("non-empty");
                assert!(bt.remove(T0, &k).await.expect("remove"));
                model.remove(&k);
                let h = height(&mut bt, T0).await;
                if heights.last() != Some(&h) {
                    heights.push(h);
                }
                if model.len().is_multiple_of(700) {
                    bt.check_invariants().await.expect("invariants");
                    assert_model(&mut bt, T0, &model, &mut rng).await;
                }
            }
            let want: Vec<u16> = (0..=heights[0]).rev().collect();
            assert_eq!(
                heights, want,
                "seed {seed}: height must fall one level at a time"
            );
            bt.check_invariants().await.expect("invariants");
            assert_eq!(bt.stats().dirty_nodes, 0);
        });
    }
}

#[test]
fn checkpoint_and_reopen_equal_the_model() {
    block_on(async {
        let mut rng = StdRng::seed_from_u64(11);
        let mut disk = SimDisk::new(11);
        let mut bt = BTree::open(disk.clone(), small_config())
            .await
            .expect("open");
        let mut model = Model::new();
        for round in 1..=8u64 {
            for _ in 0..400 {
                random_op(&mut bt, T0, &mut model, &mut rng, 65, 1500, 200).await;
            }
            let r = bt.checkpoint(round * 10, round as i64).await.expect("ckpt");
            assert_eq!(r.sequence, round);
            assert_eq!(bt.stats().dirty_nodes, 0);
            bt.check_invariants().await.expect("invariants");
            drop(bt);
            // Only what was synced survives the reboot.
            disk = disk.crash_with(CrashPolicy::DropAll);
            bt = BTree::open(disk.clone(), small_config())
                .await
                .expect("reopen");
            assert_eq!(bt.applied_index(), round * 10);
            assert_eq!(bt.revision(), round as i64);
            assert_eq!(bt.stats().checkpoint_sequence, round);
            assert_eq!(bt.stats().cache_misses, 0, "open reads no page");
            bt.check_invariants()
                .await
                .expect("invariants after reopen");
            assert_model(&mut bt, T0, &model, &mut rng).await;
        }
    });
}

/// A checkpoint awaits its caller's `pause` every `PAGES_PER_PAUSE` pages it encodes, and
/// pausing changes nothing it writes: the same tree checkpointed with and without pauses gets
/// the same page ids and reopens to the same contents.
#[test]
fn a_checkpoint_pauses_while_it_encodes_and_writes_the_same_pages() {
    block_on(async {
        let cfg = Config {
            segment_bytes: 4096 * PAGE_SIZE as u64,
            cache_bytes: 8192 * PAGE_SIZE as u64,
            ..Config::default()
        };
        // Two identical trees, one per disk, each with one dirty tree of many nodes.
        let mut trees = Vec::new();
        for _ in 0..2 {
            let disk = SimDisk::new(31);
            let mut bt = BTree::open(disk.clone(), cfg.clone()).await.expect("open");
            let mut rng = StdRng::seed_from_u64(31);
            let mut model = Model::new();
            for _ in 0..16_000 {
                random_op(&mut bt, T0, &mut model, &mut rng, 90, 40_000, 60).await;
            }
            trees.push((disk, bt, model));
        }
        let dirty = trees[0].1.stats().dirty_nodes;
        assert!(
            dirty > 2 * PAGES_PER_PAUSE,
            "the test needs several pauses' worth of dirty nodes, has {dirty}"
        );
        let (disk_a, mut a, model) = trees.remove(0);
        let (_, mut b, _) = trees.remove(0);
        let plain = a.checkpoint(7, 3).await.expect("checkpoint");
        let mut pauses = 0usize;
        let paused = b
            .checkpoint_pausing(7, 3, || {
                pauses += 1;
                async {}
            })
            .await
            .expect("checkpoint with pauses");
        // One dirty tree: a pause before node n for every n > 0 that is a multiple of the step.
        assert_eq!(pauses, (dirty - 1) / PAGES_PER_PAUSE);
        assert_eq!(plain, paused);
        assert_eq!(a.roots, b.roots, "the same nodes got the same page ids");
        drop(a);
        let mut reopened = BTree::open(disk_a.crash_with(CrashPolicy::DropAll), cfg)
            .await
            .expect("reopen");
        reopened.check_invariants().await.expect("invariants");
        let mut rng = StdRng::seed_from_u64(32);
        assert_model(&mut reopened, T0, &model, &mut rng).await;
    });
}

#[test]
fn crash_at_every_step_of_a_checkpoint_recovers_a_checkpoint_exactly() {
    block_on(async {
        let mut rng = StdRng::seed_from_u64(21);
        // Build a durable base with several segments so the cleaner has work.
        let base = SimDisk::new(21);
        let mut bt = BTree::open(base.clone(), small_config())
            .await
            .expect("open");
        let mut before = Model::new();
        for _ in 0..1500 {
            random_op(&mut bt, T0, &mut before, &mut rng, 80, 800, 150).await;
        }
        bt.checkpoint(1, 1).await.expect("ckpt");
        drop(bt);
        // The next checkpoint's changes: overwrites and removals (dead pages to clean).
        let mut after = before.clone();
        let ops: Vec<(Vec<u8>, Option<Vec<u8>>)> = (0..600)
            .map(|_| {
                let k = key(rng.gen_range(0..800), 150);
                let v = (rng.gen_range(0..3) > 0).then(|| value(&mut rng));
                (k, v)
            })
            .collect();
        for (k, v) in &ops {
            match v {
                Some(v) => after.insert(k.clone(), v.clone()),
                None => after.remove(k),
            };
        }
        let cfg = Config {
            cleaner_live_ratio_max: 0.9,
            ..small_config()
        };
        // Count the checkpoint's mutating operations once, without a crash.
        let probe = base.crash_with(CrashPolicy::KeepAll);
        let mut bt = BTree::open(probe.clone(), cfg.clone()).await.expect("open");
        for (k, v) in &ops {
            match v {
                Some(v) => bt.insert(T0, k, v).await.map(|_| ()),
                None => bt.remove(T0, k).await.map(|_| ()),
            }
            .expect("op");
        }
        let m0 = probe.stats().mutations;
        let report = bt.checkpoint(2, 2).await.expect("ckpt");
        assert!(
            report.segments_cleaned > 0,
            "the cleaner should run: {report:?}"
        );
        let steps = probe.stats().mutations - m0;
        assert!(steps >= 5, "{steps} mutating steps");
        let mut saw_old = 0;
        let mut saw_new = 0;
        for step in 1..=steps {
            let disk = base.crash_with(CrashPolicy::KeepAll);
            let mut bt = BTree::open(disk.clone(), cfg.clone()).await.expect("open");
            for (k, v) in &ops {
                match v {
                    Some(v) => bt.insert(T0, k, v).await.map(|_| ()),
                    None => bt.remove(T0, k).await.map(|_| ()),
                }
                .expect("op");
            }
            disk.crash_at_op(Some(disk.stats().mutations + step));
            let res = bt.checkpoint(2, 2).await;
            assert!(res.is_err(), "step {step}: the crash must surface");
            // Stopped: later calls fail rather than pretend.
            assert!(matches!(bt.get(T0, b"x").await, Err(Error::Stopped { .. })));
            drop(bt);
            for policy in [
                CrashPolicy::Random,
                CrashPolicy::DropAll,
                CrashPolicy::KeepAll,
            ] {
                let rebooted = disk.crash_with(policy);
                let mut bt = BTree::open(rebooted, cfg.clone())
                    .await
                    .unwrap_or_else(|e| panic!("step {step} {policy:?}: open: {e}"));
                let want = match bt.applied_index() {
                    1 => {
                        saw_old += 1;
                        &before
                    }
                    2 => {
                        saw_new += 1;
                        &after
                    }
                    other => panic!("step {step}: applied index {other}"),
                };
                bt.check_invariants().await.expect("invariants");
                assert_model(&mut bt, T0, want, &mut rng).await;
            }
        }
        assert!(saw_old > 0 && saw_new > 0, "old {saw_old}, new {saw_new}");
    });
}

#[test]
fn small_cache_evicts_and_rereads_correctly() {
    block_on(async {
        let mut rng = StdRng::seed_from_u64(31);
        let cfg = Config {
            cache_bytes: 8 * PAGE_SIZE as u64,
            ..small_config()
        };
        let disk = SimDisk::new(31);
        let mut bt = BTree::open(disk.clone(), cfg.clone()).await.expect("open");
        let mut model = Model::new();
        for i in 0..3000 {
            random_op(&mut bt, T0, &mut model, &mut rng, 80, 2000, 100).await;
            if i % 500 == 499 {
                bt.checkpoint(i, i as i64).await.expect("ckpt");
            }
        }
        bt.checkpoint(9999, 9999).await.expect("ckpt");
        let reads0 = disk.stats().reads;
        assert_model(&mut bt, T0, &model, &mut rng).await;
        let s = bt.stats();
        assert!(s.cache_bytes <= cfg.cache_bytes, "{s:?}");
        assert!(s.cache_evictions > 0 && s.cache_misses > 0, "{s:?}");
        assert!(disk.stats().reads > reads0, "cold pages are read back");
        // Mutations after evictions still work and persist.
        for _ in 0..500 {
            random_op(&mut bt, T0, &mut model, &mut rng, 50, 2000, 100).await;
        }
        bt.check_invariants().await.expect("invariants");
        assert_model(&mut bt, T0, &model, &mut rng).await;
    });
}

#[test]
fn cleaner_frees_segments_and_defragment_compacts() {
    block_on(async {
        let mut rng = StdRng::seed_from_u64(41);
        let cfg = Config {
            cleaner_live_ratio_max: 0.5,
            cleaner_segments_per_checkpoint: 2,
            ..small_config()
        };
        let disk = SimDisk::new(41);
        let mut bt = BTree::open(disk.clone(), cfg.clone()).await.expect("open");
        let mut model = Model::new();
        for i in 0..2000 {
            random_op(&mut bt, T0, &mut model, &mut rng, 100, 1000, 100).await;
            if i % 200 == 199 {
                bt.checkpoint(i, 0).await.expect("ckpt");
            }
        }
        let grown = bt.stats();
        // Overwrite and delete most keys with checkpoints in between: old segments die.
        for round in 0..20u64 {
            for _ in 0..200 {
                random_op(&mut bt, T0, &mut model, &mut rng, 40, 1000, 100).await;
            }
            bt.checkpoint(10_000 + round, 0).await.expect("ckpt");
            bt.check_invariants().await.expect("invariants");
        }
        let s = bt.stats();
        assert!(s.segments_cleaned > 0, "{s:?}");
        assert!(s.pages_relocated > 0, "{s:?}");
        async fn seg_files(d: &SimDisk) -> usize {
            let names = d.list().await.expect("list");
            names.iter().filter(|n| n.ends_with(".seg")).count()
        }
        assert_eq!(
            seg_files(&disk).await,
            s.segments,
            "removed segments leave the directory"
        );
        // Cleaning is bounded per checkpoint; checkpoints without changes finish the backlog.
        for i in 0..30 {
            if bt.pick_victims(0.5, usize::MAX).is_empty() {
                break;
            }
            bt.checkpoint(30_000 + i, 0).await.expect("ckpt");
        }
        // Every segment but the active one is above the threshold after cleaning.
        for seg in bt.segments.values() {
            if seg.id != bt.active {
                let frac = f64::from(seg.live_pages) / f64::from(seg.capacity_pages);
                assert!(frac > 0.5 || seg.live_pages == seg.written_pages, "{seg:?}");
            }
        }
        assert_model(&mut bt, T0, &model, &mut rng).await;
        let r = bt.defragment(20_000, 0).await.expect("defragment");
        assert!(r.segments_cleaned > 0);
        bt.check_invariants().await.expect("invariants");
        let d = bt.stats();
        // Only the active segment may hold dead pages, and there are none after the copy.
        assert_eq!(d.written_bytes, d.live_bytes, "{d:?} (grown {grown:?})");
        assert!(d.segments <= s.segments, "{d:?} vs {s:?}");
        assert_eq!(seg_files(&disk).await, d.segments);
        assert_model(&mut bt, T0, &model, &mut rng).await;
        drop(bt);
        let mut bt = BTree::open(disk.crash_with(CrashPolicy::DropAll), cfg)
            .await
            .expect("reopen");
        bt.check_invariants().await.expect("invariants");
        assert_model(&mut bt, T0, &model, &mut rng).await;
    });
}

#[test]
fn two_trees_share_one_page_log() {
    block_on(async {
        let mut rng = StdRng::seed_from_u64(51);
        let disk = SimDisk::new(51);
        let mut bt = BTree::open(disk.clone(), small_config())
            .await
            .expect("open");
        let (mut m0, mut m1) = (Model::new(), Model::new());
        for i in 0..2000 {
            random_op(&mut bt, T0, &mut m0, &mut rng, 70, 1000, 80).await;
            random_op(&mut bt, T1, &mut m1, &mut rng, 70, 1000, 80).await;
            if i % 400 == 399 {
                bt.checkpoint(i, 0).await.expect("ckpt");
            }
        }
        bt.checkpoint(1, 1).await.expect("ckpt");
        drop(bt);
        let mut bt = BTree::open(disk.crash(), small_config())
            .await
            .expect("reopen");
        bt.check_invariants().await.expect("invariants");
        assert_model(&mut bt, T0, &m0, &mut rng).await;
        assert_model(&mut bt, T1, &m1, &mut rng).await;
        assert!(matches!(
            bt.get(TreeId(4), b"k").await,
            Err(Error::UnknownTree { tree: 4 })
        ));
    });
}

#[test]
fn corrupt_page_is_reported_as_checksum_mismatch() {
    block_on(async {
        let disk = SimDisk::new(61);
        let mut bt = BTree::open(disk.clone(), small_config())
            .await
            .expect("open");
        for i in 0..200u32 {
            bt.insert(T0, &key(i, 10), b"v").await.expect("insert");
        }
        bt.checkpoint(1, 1).await.expect("ckpt");
        let Some(Child::Page(root)) = bt.roots[0] else {
            panic!("root is durable after a checkpoint")
        };
        drop(bt);
        let name = segment_name("pages", root.segment());
        disk.flip_byte(&name, root.offset() + 100, 0x01);
        let bt = BTree::open(disk.clone(), small_config())
            .await
            .expect("open");
        match bt.get(T0, &key(1, 10)).await {
            Err(Error::ChecksumMismatch {
                page,
                expected,
                actual,
            }) => {
                assert_eq!(page, root);
                assert_ne!(expected, actual);
            }
            other => panic!("expected a checksum mismatch, got {other:?}"),
        }
        // A read error is not a failed write: the tree is not stopped.
        assert!(matches!(
            bt.get(T0, &key(1, 10)).await,
            Err(Error::ChecksumMismatch { .. })
        ));
    });
}

#[test]
fn failed_sync_stops_the_tree_and_the_previous_checkpoint_survives() {
    block_on(async {
        let mut rng = StdRng::seed_from_u64(71);
        let disk = SimDisk::new(71);
        let mut bt = BTree::open(disk.clone(), small_config())
            .await
            .expect("open");
        let mut model = Model::new();
        for _ in 0..300 {
            random_op(&mut bt, T0, &mut model, &mut rng, 90, 500, 50).await;
        }
        bt.checkpoint(1, 1).await.expect("ckpt");
        bt.insert(T0, b"new", b"value").await.expect("insert");
        disk.fail_next("pages.super", FaultOp::Sync);
        let e = bt.checkpoint(2, 2).await.expect_err("sync fails");
        assert!(matches!(e, Error::Io(_)), "{e:?}");
        for r in [
            bt.get(T0, b"new").await.map(|_| ()),
            bt.insert(T0, b"a", b"b").await.map(|_| ()),
            bt.checkpoint(3, 3).await.map(|_| ()),
        ] {
            assert!(matches!(r, Err(Error::Stopped { .. })), "{r:?}");
        }
        drop(bt);
        let mut bt = BTree::open(disk.crash_with(CrashPolicy::DropAll), small_config())
            .await
            .expect("reopen");
        assert_eq!(bt.applied_index(), 1);
        assert_model(&mut bt, T0, &model, &mut rng).await;
    });
}

#[test]
fn torn_first_superblock_write_keeps_the_empty_state_and_bad_config_is_refused() {
    block_on(async {
        let disk = SimDisk::new(81);
        let mut bt = BTree::open(disk.clone(), small_config())
            .await
            .expect("open");
        bt.insert(T0, b"k", b"v").await.expect("insert");
        // Crash at the superblock write (the op after the segment's create, allocate, write,
        // sync and the directory sync).
        let m = disk.stats().mutations;
        disk.crash_at_op(Some(m + 6));
        assert!(bt.checkpoint(1, 1).await.is_err());
        drop(bt);
        let bt = BTree::open(disk.crash_with(CrashPolicy::DropAll), small_config())
            .await
            .expect("reopen");
        assert_eq!(bt.applied_index(), 0);
        assert_eq!(bt.get(T0, b"k").await.expect("get"), None);
        assert_eq!(bt.stats().segments, 0, "the orphan segment is removed");
        let bad = Config {
            segment_bytes: 1000,
            ..small_config()
        };
        assert!(matches!(
            BTree::open(SimDisk::new(1), bad).await,
            Err(Error::InvalidConfig { .. })
        ));
    });
}

#[test]
fn key_and_value_limits_are_enforced() {
    block_on(async {
        let mut bt = BTree::open(SimDisk::new(91), small_config())
            .await
            .expect("open");
        let long = vec![b'k'; MAX_KEY_LEN + 1];
        assert!(matches!(
            bt.insert(T0, &long, b"v").await,
            Err(Error::KeyTooLarge { .. })
        ));
        let max = bt.max_value_len(3);
        let big = vec![7u8; max + 1];
        assert!(matches!(
            bt.insert(T0, b"big", &big).await,
            Err(Error::ValueTooLarge { .. })
        ));
        // The largest value and key work and survive a checkpoint.
        let big = vec![9u8; max];
        bt.insert(T0, b"big", &big).await.expect("insert");
        bt.insert(T0, &long[1..], b"x").await.expect("insert");
        bt.checkpoint(1, 1).await.expect("ckpt");
        assert_eq!(bt.get(T0, b"big").await.expect("get"), Some(big));
        bt.check_invariants().await.expect("invariants");
        // With default 16 MiB segments, a 1.5 MiB value (etcd's request limit) fits.
        let mut bt = BTree::open(SimDisk::new(92), Config::default())
            .await
            .expect("open");
        let v = vec![3u8; 3 * 512 * 1024];
        bt.insert(T0, b"v", &v).await.expect("insert");
        bt.checkpoint(1, 1).await.expect("ckpt");
        assert_eq!(bt.get(T0, b"v").await.expect("get"), Some(v));
    });
}

/// Loads `n` keys in ascending order (16-byte big-endian, like the image's revision keys) with
/// values of `value_len` bytes, checkpoints, checks the tree, and returns its live pages.
async fn sequential_load(n: u64, value_len: usize, lz4: bool) -> u64 {
    let cfg = Config {
        segment_bytes: 1024 * PAGE_SIZE as u64,
        lz4,
        ..small_config()
    };
    let disk = SimDisk::new(n);
    let mut bt = BTree::open(disk.clone(), cfg.clone()).await.expect("open");
    let mut model = Model::new();
    for i in 0..n {
        let k = u128::from(i).to_be_bytes().to_vec();
        let v: Vec<u8> = (0..value_len).map(|j| (i as u8) ^ (j as u8)).collect();
        assert!(!bt.insert(T0, &k, &v).await.expect("insert"));
        model.insert(k, v);
    }
    bt.checkpoint(1, 1).await.expect("ckpt");
    bt.check_invariants().await.expect("invariants");
    let live = bt.stats().live_pages;
    drop(bt);
    let mut bt = BTree::open(disk.crash(), cfg).await.expect("reopen");
    bt.check_invariants()
        .await
        .expect("invariants after reopen");
    let mut rng = StdRng::seed_from_u64(n);
    assert_model(&mut bt, T0, &model, &mut rng).await;
    live
}

#[test]
fn sequential_appends_fill_leaves_left_full() {
    block_on(async {
        let n = 3000u64;
        // 980-byte values: four entries fit a page (a balanced split leaves two per leaf);
        // 1024: three fit; 2000: two fit (a balanced split leaves one).
        for value_len in [980usize, 1024, 2000] {
            let entry = page::LEAF_ENTRY_FIXED + 16 + page::INLINE_LEN_SIZE + value_len;
            let per_leaf = (page::BODY_MAX / entry) as u64;
            let full_leaves = n.div_ceil(per_leaf);
            let payload_pages = (n * (16 + value_len as u64)).div_ceil(PAGE_SIZE as u64);
            let live = sequential_load(n, value_len, false).await;
            println!(
                "sequential {n} x {value_len} B: {live} live pages, {full_leaves} full leaves, \
                 payload {payload_pages} pages ({:.2}x)",
                live as f64 / payload_pages as f64
            );
            // Every leaf but the last is full; branches add about 1%.
            assert!(
                live * 100 <= full_leaves * 103,
                "{value_len} B: {live} live pages for {full_leaves} full leaves"
            );
            if value_len == 980 {
                assert!(
                    live * 10 <= payload_pages * 13,
                    "{live} live pages for {payload_pages} payload pages"
                );
            }
        }
        // With lz4 a page holds more than BODY_MAX plain bytes; the split must still fit.
        let live = sequential_load(n, 1024, true).await;
        println!("sequential {n} x 1024 B, lz4: {live} live pages");
    });
}

/// Ascending keys with a long shared prefix (small fan-out) split branches at every level on
/// the right edge; then random removals merge the left-full nodes back down to nothing.
#[test]
fn right_edge_splits_at_every_level_then_merge_away() {
    block_on(async {
        let mut rng = StdRng::seed_from_u64(61);
        let disk = SimDisk::new(61);
        let mut bt = BTree::open(disk.clone(), small_config())
            .await
            .expect("open");
        let mut model = Model::new();
        for i in 0..4000u32 {
            let k = key(i * 3 + 2, 600);
            let v = value(&mut rng);
            bt.insert(T0, &k, &v).await.expect("insert");
            model.insert(k, v);
            if i % 1000 == 999 {
                bt.check_invariants().await.expect("invariants");
                bt.checkpoint(u64::from(i), 0).await.expect("ckpt");
            }
        }
        assert!(height(&mut bt, T0).await >= 4, "a deep tree");
        assert_model(&mut bt, T0, &model, &mut rng).await;
        while !model.is_empty() {
            let k = model.keys().nth(rng.gen_range(0..model.len())).cloned();
            let k = k.expect("non-empty");
            assert!(bt.remove(T0, &k).await.expect("remove"));
            model.remove(&k);
            if model.len().is_multiple_of(500) {
                bt.check_invariants().await.expect("invariants");
                assert_model(&mut bt, T0, &model, &mut rng).await;
            }
        }
        assert_eq!(height(&mut bt, T0).await, 0);
    });
}
