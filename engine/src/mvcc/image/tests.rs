//! Tests of the store image on the simulated disk: seeded random histories checkpointed at
//! random points and reopened (after a crash that drops every unsynced write) must give back
//! exactly the store as of the checkpoint; a crash at every disk operation of a checkpoint
//! gives the previous or the new image, never a mix; a damaged record refuses to open.

use futures::executor::block_on;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::btree::PAGE_SIZE;
use crate::io::sim::SimDisk;
use crate::types::*;

fn config() -> btree::Config {
    btree::Config {
        segment_bytes: 64 * PAGE_SIZE as u64,
        cache_bytes: 128 * PAGE_SIZE as u64,
        ..btree::Config::default()
    }
}

fn key(i: u32) -> Bytes {
    Bytes::from(format!("/registry/pods/ns/{i:03}"))
}

/// One random write: put (some with a lease), delete, a two-key txn, compaction, lease grant or
/// revoke. Refused writes are fine: they change nothing.
fn random_write(s: &mut Store, rng: &mut StdRng, now_ms: u64) {
    let k = key(rng.gen_range(0..40));
    match rng.gen_range(0..100) {
        0..=54 => {
            let leases = s.leases();
            let lease = if !leases.is_empty() && rng.gen_bool(0.2) {
                leases[rng.gen_range(0..leases.len())]
            } else {
                0
            };
            let len = rng.gen_range(0..300);
            let _ = s.put(&PutRequest {
                key: k,
                value: Bytes::from(vec![rng.gen::<u8>(); len]),
                lease,
                ..PutRequest::default()
            });
        }
        55..=69 => {
            let end = key(rng.gen_range(0..40));
            let _ = s.delete_range(&DeleteRangeRequest {
                key: k,
                range_end: if rng.gen_bool(0.5) { end } else { Bytes::new() },
                ..DeleteRangeRequest::default()
            });
        }
        70..=84 => {
            let other = key(rng.gen_range(0..40));
            let put = |k: Bytes| {
                RequestOp::Put(PutRequest {
                    key: k,
                    value: Bytes::from_static(b"txn"),
                    ..PutRequest::default()
                })
            };
            let _ = s.txn(&TxnRequest {
                compare: Vec::new(),
                success: vec![put(k), put(other)],
                failure: Vec::new(),
            });
        }
        85..=89 => {
            let lo = s.compact_revision().max(1);
            let hi = s.revision();
            let _ = s.compact(rng.gen_range(lo..=hi));
        }
        90..=95 => {
            let _ = s.lease_grant(0, rng.gen_range(5..100), now_ms);
        }
        _ => {
            let leases = s.leases();
            if !leases.is_empty() {
                let _ = s.lease_revoke(leases[rng.gen_range(0..leases.len())]);
            }
        }
    }
}

fn everything() -> RangeRequest {
    RangeRequest {
        key: Bytes::from_static(b"\0"),
        range_end: Bytes::from_static(b"\0"),
        ..RangeRequest::default()
    }
}

/// The two stores answer alike: same hash (history, revisions, lease table), same keys now and
/// at older revisions, same attached keys, same generated lease ids next.
fn assert_same(restored: &Store, expected: &Store) {
    restored.check_invariants();
    assert_eq!(restored.hash(), expected.hash());
    assert_eq!(restored.revision(), expected.revision());
    assert_eq!(restored.compact_revision(), expected.compact_revision());
    for at in [0, expected.compact_revision(), expected.revision() - 1] {
        let mut r = everything();
        r.revision = at;
        assert_eq!(restored.range(&r), expected.range(&r), "range at {at}");
    }
    for id in expected.leases() {
        assert_eq!(
            restored.lease_time_to_live(id, true, 0).map(|t| t.keys),
            expected.lease_time_to_live(id, true, 0).map(|t| t.keys),
        );
    }
    assert_eq!(restored.leases(), expected.leases());
    assert_eq!(
        restored.clone().lease_grant(0, 10, 0).map(|g| g.0),
        expected.clone().lease_grant(0, 10, 0).map(|g| g.0),
        "the next generated lease id"
    );
}

#[test]
fn random_histories_reopen_as_of_their_last_checkpoint() {
    for seed in 1..=6u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let disk = SimDisk::new(seed);
        let (mut image, mut store, meta) =
            block_on(StoreImage::open(disk.clone(), config(), 0)).expect("open new");
        assert_eq!(meta, ImageMeta::default());
        assert_eq!(store.revision(), 1);
        store.keep_journal();
        let mut applied = 0u64;
        let mut disk = disk;
        for round in 0..8 {
            for _ in 0..rng.gen_range(1..250) {
                random_write(&mut store, &mut rng, 0);
                applied += 1;
            }
            let changes = store.take_changes();
            let app = format!("seed {seed} round {round}");
            block_on(image.checkpoint(changes, applied, app.as_bytes(), || async {}))
                .expect("checkpoint");
            let at_checkpoint = store.clone();
            // More writes that no checkpoint covers: a crash loses them from the image (the
            // log replays them in a shard).
            for _ in 0..rng.gen_range(1..50) {
                random_write(&mut store, &mut rng, 0);
            }
            let (_, reopened, meta) =
                block_on(StoreImage::open(disk.crash(), config(), 0)).expect("reopen");
            assert_eq!(meta.applied_index, applied);
            assert_eq!(meta.app, Bytes::from(app));
            assert_same(&reopened, &at_checkpoint);
            // Checkpoint the extra writes too, then reopen: the image is the live store.
            let changes = store.take_changes();
            applied += 1;
            block_on(image.checkpoint(changes, applied, b"x", || async {})).expect("checkpoint");
            let crashed = disk.crash();
            let (reimage, reopened, _) =
                block_on(StoreImage::open(crashed.clone(), config(), 0)).expect("reopen");
            assert_same(&reopened, &store);
            // Go on from the reopened image, as a restarted shard does.
            image = reimage;
            store = reopened;
            store.keep_journal();
            disk = crashed;
        }
    }
}

#[test]
fn a_crash_inside_a_checkpoint_gives_the_old_or_the_new_image() {
    let mut rng = StdRng::seed_from_u64(7);
    let disk = SimDisk::new(7);
    let (mut image, mut store, _) = block_on(StoreImage::open(disk.clone(), config(), 0)).unwrap();
    store.keep_journal();
    for _ in 0..300 {
        random_write(&mut store, &mut rng, 0);
    }
    block_on(image.checkpoint(store.take_changes(), 1, b"old", || async {})).unwrap();
    let old = store.clone();
    for _ in 0..300 {
        random_write(&mut store, &mut rng, 0);
    }
    let new = store;
    // Count the mutating disk operations of the second checkpoint on a copy of the disk...
    let probe = disk.crash();
    let (mut img, _, _) = block_on(StoreImage::open(probe.clone(), config(), 0)).unwrap();
    let before = probe.stats().mutations;
    block_on(img.checkpoint(changes_between(&old, &new), 2, b"new", || async {})).unwrap();
    let checkpoint_ops = probe.stats().mutations - before;
    assert!(checkpoint_ops > 3, "a checkpoint writes, syncs and commits");
    // ...then crash at each of them.
    let mut saw_old = false;
    for k in 1..=checkpoint_ops {
        let base = disk.crash();
        let (mut img, _, _) = block_on(StoreImage::open(base.clone(), config(), 0)).unwrap();
        base.crash_at_op(Some(base.stats().mutations + k));
        let result = block_on(img.checkpoint(changes_between(&old, &new), 2, b"new", || async {}));
        assert!(
            result.is_err(),
            "the disk died during the checkpoint (op {k})"
        );
        let (_, reopened, meta) =
            block_on(StoreImage::open(base.crash(), config(), 0)).expect("reopen after crash");
        match meta.applied_index {
            1 => {
                assert_same(&reopened, &old);
                saw_old = true;
            }
            2 => assert_same(&reopened, &new),
            other => panic!("applied index {other} after a crash at op {k}"),
        }
    }
    assert!(saw_old, "crashes before the superblock keep the old image");
}

/// The changes that turn `old` into `new` (both from the same history): every revision present
/// in either, every lease of either.
fn changes_between(old: &Store, new: &Store) -> Changes {
    let mut revs: Vec<Rev> = old.history.iter().map(|(r, _)| *r).collect();
    revs.extend(new.history.iter().map(|(r, _)| *r));
    revs.sort();
    revs.dedup();
    let mut ids = old.leases();
    ids.extend(new.leases());
    ids.sort();
    ids.dedup();
    Changes {
        records: revs
            .into_iter()
            .map(|r| (r, new.history.get(r).cloned()))
            .collect(),
        leases: ids
            .into_iter()
            .map(|id| (id, new.lessor.get(id).map(|l| l.ttl_secs)))
            .collect(),
        revision: new.current_revision,
        compact_main: new.compact_main,
        lease_seq: new.lessor.id_seq(),
        payload_bytes: 0,
    }
}

#[test]
fn journal_counts_changes_and_is_emptied_by_take() {
    let mut s = Store::new();
    assert_eq!(s.pending_changes(), Pending::default());
    s.keep_journal();
    s.put(&PutRequest {
        key: Bytes::from_static(b"k"),
        value: Bytes::from_static(b"vvv"),
        ..PutRequest::default()
    })
    .unwrap();
    s.lease_grant(5, 10, 0).unwrap();
    assert_eq!(
        s.pending_changes(),
        Pending {
            changes: 2,
            payload_bytes: 4
        }
    );
    let c = s.take_changes();
    assert_eq!(c.len(), 2);
    assert_eq!(c.revision(), 2);
    assert_eq!(s.pending_changes(), Pending::default());
    // A compaction journals every revision it removes.
    s.put(&PutRequest {
        key: Bytes::from_static(b"k"),
        value: Bytes::from_static(b"w"),
        ..PutRequest::default()
    })
    .unwrap();
    s.take_changes();
    s.compact(3).unwrap();
    let c = s.take_changes();
    assert_eq!(c.records.len(), 1);
    assert_eq!(c.records[0].0, Rev { main: 2, sub: 0 });
    assert!(c.records[0].1.is_none(), "the compacted version is removed");
}

#[test]
fn a_damaged_record_refuses_to_open() {
    let disk = SimDisk::new(3);
    let (mut image, mut store, _) = block_on(StoreImage::open(disk.clone(), config(), 0)).unwrap();
    store.keep_journal();
    store
        .put(&PutRequest {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
            ..PutRequest::default()
        })
        .unwrap();
    let mut changes = store.take_changes();
    // A record whose format byte is unknown, as a future or damaged writer would leave it.
    let rev = changes.records[0].0;
    block_on(image.checkpoint(changes, 1, b"", || async {})).unwrap();
    let mut bad = Vec::new();
    encode_record(
        &Record {
            kv: KeyValue::default(),
            tombstone: false,
        },
        &mut bad,
    );
    bad[0] = 9;
    block_on(image.pages.insert(HISTORY, &encode_rev(rev), &bad)).unwrap();
    changes = store.take_changes();
    block_on(image.checkpoint(changes, 2, b"", || async {})).unwrap();
    let err = block_on(StoreImage::open(disk.crash(), config(), 0)).err();
    assert_eq!(
        err,
        Some(ImageError::Corrupt {
            what: "history record 2.0".to_string(),
            reason: "unknown format version"
        })
    );
}

#[test]
fn record_encoding_round_trips() {
    let record = Record {
        kv: KeyValue {
            key: Bytes::from_static(b"/registry/a"),
            create_revision: 7,
            mod_revision: 9,
            version: 3,
            value: Bytes::from_static(b"\x00\xffvalue"),
            lease: 0x1234_5678_9abc,
        },
        tombstone: false,
    };
    let mut v = Vec::new();
    encode_record(&record, &mut v);
    assert_eq!(
        decode_record(Rev { main: 9, sub: 2 }, &v),
        Ok(record.clone())
    );
    // Cut inside the header or the key: refused. (The value has no length of its own: the
    // record's end is the value's end, and the page log checksums the whole record.)
    for cut in 0..RECORD_HEADER_BYTES + record.kv.key.len() {
        assert!(
            decode_record(Rev { main: 9, sub: 2 }, &v[..cut]).is_err(),
            "cut {cut}"
        );
    }
}
