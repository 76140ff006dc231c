//! Tests of the store image on the simulated disk: seeded random histories checkpointed at
//! random points and reopened (after a crash that drops every unsynced write) must give back
//! exactly the store as of the checkpoint; a crash at every disk operation of a checkpoint
//! gives the previous or the new image, never a mix; a damaged record is refused when read.

use futures::executor::block_on;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::btree::PAGE_SIZE;
use crate::io::sim::SimDisk;
use crate::mvcc::paging::Access;
use crate::types::*;

pub(super) fn config() -> btree::Config {
    btree::Config {
        segment_bytes: 64 * PAGE_SIZE as u64,
        cache_bytes: 128 * PAGE_SIZE as u64,
        ..btree::Config::default()
    }
}

/// Key `i`: one in ten is longer than the image stores as itself (`SHORT_KEY_MAX`), all of
/// those sharing their first 1,024 bytes, so they are told apart by hash only.
fn key(i: u32) -> Bytes {
    if i % 10 == 7 {
        return Bytes::from(format!("/registry/long/{}{i:03}", "x".repeat(1100)));
    }
    Bytes::from(format!("/registry/pods/ns/{i:03}"))
}

/// One write request of `random_write`.
#[derive(Debug)]
enum Write {
    Put(PutRequest),
    Delete(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(Revision),
    Grant(i64),
    Revoke(LeaseId),
    Advance(Revision),
}

/// One random write: put (some with a lease), delete, a two-key txn, compaction, lease grant or
/// revoke, an advance of the revision. Refused writes are fine: they change nothing.
fn random_request(s: &Store, rng: &mut StdRng) -> Option<Write> {
    let k = key(rng.gen_range(0..40));
    Some(match rng.gen_range(0..100) {
        0..=54 => {
            let leases = s.leases();
            let lease = if !leases.is_empty() && rng.gen_bool(0.2) {
                leases[rng.gen_range(0..leases.len())]
            } else {
                0
            };
            let len = rng.gen_range(0..300);
            Write::Put(PutRequest {
                key: k,
                value: Bytes::from(vec![rng.gen::<u8>(); len]),
                lease,
                ..PutRequest::default()
            })
        }
        55..=69 => {
            let end = key(rng.gen_range(0..40));
            Write::Delete(DeleteRangeRequest {
                key: k,
                range_end: if rng.gen_bool(0.5) { end } else { Bytes::new() },
                ..DeleteRangeRequest::default()
            })
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
            if rng.gen_bool(0.5) {
                return Some(Write::Txn(TxnRequest {
                    compare: Vec::new(),
                    success: vec![put(k), put(other)],
                    failure: Vec::new(),
                }));
            }
            // Kubernetes' GuaranteedUpdate shape: compare the mod revision, then read (at an
            // older revision too), delete or put.
            let read = RequestOp::Range(RangeRequest {
                key: other.clone(),
                range_end: key(rng.gen_range(0..40)),
                revision: rng.gen_range(0..=s.revision()),
                ..RangeRequest::default()
            });
            Write::Txn(TxnRequest {
                compare: vec![Compare {
                    key: k.clone(),
                    range_end: Bytes::new(),
                    target: CompareTarget::Mod,
                    result: CompareResult::Less,
                    target_union: Some(CompareValue::ModRevision(rng.gen_range(0..=s.revision()))),
                }],
                success: vec![
                    read,
                    RequestOp::DeleteRange(DeleteRangeRequest {
                        key: k.clone(),
                        prev_kv: true,
                        ..DeleteRangeRequest::default()
                    }),
                ],
                failure: vec![put(k), put(other)],
            })
        }
        85..=89 => {
            let lo = s.compact_revision().max(1);
            Write::Compact(rng.gen_range(lo..=s.revision()))
        }
        90..=94 => Write::Grant(rng.gen_range(5..100)),
        // Now and then a jump (or a no-op at or below the revision): later reads, compactions
        // and watch catch-ups land on revisions that hold no change.
        95 => Write::Advance(s.revision() + rng.gen_range(-2..20)),
        _ => {
            let leases = s.leases();
            if leases.is_empty() {
                return None;
            }
            Write::Revoke(leases[rng.gen_range(0..leases.len())])
        }
    })
}

/// What `w` reads, for a paged store.
fn access_of(w: &Write) -> Option<Access<'_>> {
    match w {
        Write::Put(r) => Some(Access::Put(r)),
        Write::Delete(r) => Some(Access::DeleteRange(r)),
        Write::Txn(r) => Some(Access::Txn(r)),
        Write::Revoke(id) => Some(Access::LeaseRevoke(*id)),
        Write::Compact(_) | Write::Grant(_) | Write::Advance(_) => None,
    }
}

/// Applies `w`; the answer (or refusal) as text, to compare two stores' answers.
fn apply(s: &mut Store, w: &Write, now_ms: u64) -> String {
    match w {
        Write::Put(r) => format!("{:?}", s.put(r)),
        Write::Delete(r) => format!("{:?}", s.delete_range(r)),
        Write::Txn(r) => format!("{:?}", s.txn(r)),
        Write::Compact(rev) => format!("{:?}", s.compact(*rev)),
        Write::Grant(ttl) => format!("{:?}", s.lease_grant(0, *ttl, now_ms)),
        Write::Revoke(id) => format!("{:?}", s.lease_revoke(*id)),
        Write::Advance(to) => format!("{:?}", s.advance(*to)),
    }
}

pub(super) fn random_write(s: &mut Store, rng: &mut StdRng, now_ms: u64) {
    if let Some(w) = random_request(s, rng) {
        apply(s, &w, now_ms);
    }
}

pub(super) fn everything() -> RangeRequest {
    RangeRequest {
        key: Bytes::from_static(b"\0"),
        range_end: Bytes::from_static(b"\0"),
        ..RangeRequest::default()
    }
}

/// Runs the load loop of `paging.rs` for `access` until nothing is missing.
pub(crate) fn prepare<D: Disk>(store: &mut Store, reader: &ImageReader<D>, access: &Access) {
    for _ in 0..100 {
        let Some(missing) = store.missing(access) else {
            return;
        };
        let loaded = block_on(reader.fetch(&missing)).expect("fetch");
        store.insert_loaded(loaded);
    }
    panic!("still missing data after 100 loads");
}

/// What a snapshot exports up to `upto` (`mvcc/export.rs`), read in chunks of 7, each made
/// resident first (nothing to load on an unpaged store).
fn exported<D: Disk>(
    store: &mut Store,
    reader: &ImageReader<D>,
    upto: Revision,
) -> Vec<crate::mvcc::export::HistoryEntry> {
    let mut out = Vec::new();
    let mut from = crate::mvcc::export::HistoryCursor::default();
    for _ in 0..100_000 {
        prepare(store, reader, &Access::History { from, upto });
        let chunk = store.history_chunk(from, upto, 7);
        out.extend(chunk.entries);
        match chunk.next {
            Some(next) => from = next,
            None => return out,
        }
    }
    panic!("the export did not end");
}

/// The store with its whole image in memory (so the synchronous reads below can run).
pub(super) fn loaded<D: Disk>(mut store: Store, image: &StoreImage<D>) -> Store {
    prepare(&mut store, &image.reader(), &Access::Everything);
    store
}

/// The two stores answer alike: same hash (history, revisions, lease table), same keys now and
/// at older revisions, same attached keys, same generated lease ids next.
pub(super) fn assert_same(restored: &Store, expected: &Store) {
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
            let report = block_on(image.checkpoint(changes, applied, app.as_bytes(), || async {}))
                .expect("checkpoint");
            store.checkpoint_done(report.sequence);
            let at_checkpoint = store.clone();
            // More writes that no checkpoint covers: a crash loses them from the image (the
            // log replays them in a shard).
            for _ in 0..rng.gen_range(1..50) {
                random_write(&mut store, &mut rng, 0);
            }
            let crashed = disk.crash();
            let (reimage, reopened, meta) =
                block_on(StoreImage::open(crashed, config(), 0)).expect("reopen");
            assert_eq!(meta.applied_index, applied);
            assert_eq!(meta.app, Bytes::from(app));
            assert_same(&loaded(reopened, &reimage), &at_checkpoint);
            // Checkpoint the extra writes too, then reopen: the image is the live store.
            let changes = store.take_changes();
            applied += 1;
            let report = block_on(image.checkpoint(changes, applied, b"x", || async {}))
                .expect("checkpoint");
            store.checkpoint_done(report.sequence);
            let crashed = disk.crash();
            let (reimage, reopened, _) =
                block_on(StoreImage::open(crashed.clone(), config(), 0)).expect("reopen");
            let reopened = loaded(reopened, &reimage);
            assert_same(&reopened, &store);
            // Go on from the reopened image, as a restarted shard does.
            image = reimage;
            store = reopened;
            disk = crashed;
        }
    }
}

/// A checkpoint's take in steps, with random writes (compactions among them) applied between
/// its steps, as a shard applies entries while it checkpoints: the image is the store exactly
/// as it was when the take began.
#[test]
fn a_take_in_steps_checkpoints_the_store_as_it_began() {
    let mut interleaved = 0;
    for seed in 11..=16u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let disk = SimDisk::new(seed);
        let (mut image, mut store, _) =
            block_on(StoreImage::open(disk.clone(), config(), 0)).expect("open new");
        store.keep_journal();
        for round in 1..=6u64 {
            for _ in 0..rng.gen_range(50..250) {
                random_write(&mut store, &mut rng, 0);
            }
            let at_take = store.clone();
            store.begin_take();
            while !store.take_step(rng.gen_range(1..8)) {
                for _ in 0..rng.gen_range(0..4) {
                    random_write(&mut store, &mut rng, 0);
                    interleaved += 1;
                }
            }
            let changes = store.finish_take();
            let report =
                block_on(image.checkpoint(changes, round, b"", || async {})).expect("checkpoint");
            store.checkpoint_done(report.sequence);
            let (reimage, reopened, meta) =
                block_on(StoreImage::open(disk.crash(), config(), 0)).expect("reopen");
            assert_eq!(meta.applied_index, round);
            assert_same(&loaded(reopened, &reimage), &at_take);
        }
    }
    assert!(interleaved > 500, "{interleaved} writes between steps");
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
        let (reimage, reopened, meta) =
            block_on(StoreImage::open(base.crash(), config(), 0)).expect("reopen after crash");
        let reopened = loaded(reopened, &reimage);
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

/// The changes that turn `old` into `new` (both from the same history): every revision, key,
/// lease and attachment present in either.
fn changes_between(old: &Store, new: &Store) -> Changes {
    let mut keys: Vec<Bytes> = old.index.keys().cloned().collect();
    keys.extend(new.index.keys().cloned());
    keys.sort();
    keys.dedup();
    let mut attachments = Vec::new();
    for s in [old, new] {
        for id in s.leases() {
            for k in &s.lessor.get(id).expect("listed").keys {
                attachments.push((id, k.clone()));
            }
        }
    }
    attachments.sort();
    attachments.dedup();
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
        keys: keys
            .into_iter()
            .map(|k| {
                let v = new.index.get(&k).map(|ki| {
                    let mut v = Vec::new();
                    ki.encode(&mut v);
                    v
                });
                (k, v)
            })
            .collect(),
        attachments: attachments
            .into_iter()
            .map(|(id, k)| {
                let on = new.lessor.get(id).is_some_and(|l| l.keys.contains(&k));
                (id, k, on)
            })
            .collect(),
        revision: new.current_revision,
        compact_main: new.compact_main,
        image_compacted: new.compact_main,
        lease_seq: new.lessor.id_seq(),
        payload_bytes: 0,
        advanced: new.revision() != old.revision(),
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
            changes: 3,
            payload_bytes: 4
        }
    );
    let c = s.take_changes();
    assert_eq!(c.len(), 3, "a record, a key index, a lease");
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

/// An advance changes no record, key or lease, yet the image's revision must follow it: the
/// journal counts it (so a shard's checkpoint is due), a checkpoint of it alone writes the
/// revision, and the reopened store goes on from it.
#[test]
fn an_advanced_revision_is_a_change_a_checkpoint_keeps() {
    let disk = SimDisk::new(21);
    let (mut image, mut store, _) = block_on(StoreImage::open(disk.clone(), config(), 0)).unwrap();
    store.keep_journal();
    let put = |s: &mut Store, v: &'static [u8]| {
        s.put(&PutRequest {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(v),
            ..PutRequest::default()
        })
        .unwrap()
        .revision
    };
    assert_eq!(put(&mut store, b"a"), 2);
    let report = block_on(image.checkpoint(store.take_changes(), 1, b"", || async {})).unwrap();
    store.checkpoint_done(report.sequence);
    assert_eq!(store.pending_changes(), Pending::default());

    // Not past the revision: nothing moves, nothing is pending.
    assert_eq!(store.advance(2).revision, 2);
    assert_eq!(store.advance(-5).revision, 2);
    assert_eq!(store.pending_changes(), Pending::default());

    let applied = store.advance(100);
    assert_eq!((applied.revision, applied.events.len()), (100, 0));
    assert_eq!(store.revision(), 100);
    assert_eq!(
        store.pending_changes(),
        Pending {
            changes: 1,
            payload_bytes: 0
        },
        "an advance alone makes a checkpoint due"
    );
    // A second advance before the checkpoint is still one change.
    store.advance(120);
    assert_eq!(store.pending_changes().changes, 1);
    let changes = store.take_changes();
    assert_eq!((changes.len(), changes.revision()), (1, 120));
    assert_eq!(store.pending_changes(), Pending::default());
    let report = block_on(image.checkpoint(changes, 2, b"", || async {})).unwrap();
    store.checkpoint_done(report.sequence);

    let (reimage, reopened, meta) = block_on(StoreImage::open(disk.crash(), config(), 0)).unwrap();
    assert_eq!(meta.applied_index, 2);
    assert_eq!(reopened.revision(), 120, "the superblock holds the advance");
    assert_eq!(reopened.pending_changes(), Pending::default());
    let mut reopened = loaded(reopened, &reimage);
    assert_same(&reopened, &store);
    // The skipped revisions hold no change: a read at one sees the state of revision 2.
    let at = |s: &Store, revision| {
        s.range(&RangeRequest {
            key: Bytes::from_static(b"k"),
            revision,
            ..RangeRequest::default()
        })
        .map(|r| (r.kvs[0].value.clone(), r.kvs[0].mod_revision))
    };
    assert_eq!(at(&reopened, 50), Ok((Bytes::from_static(b"a"), 2)));
    assert_eq!(
        reopened
            .events_since(b"k", b"", 3, 100)
            .map(|e| e.len())
            .unwrap(),
        0
    );
    assert_eq!(
        put(&mut reopened, b"b"),
        121,
        "the next write takes advance + 1"
    );
    assert_eq!(at(&reopened, 120), Ok((Bytes::from_static(b"a"), 2)));
    assert_eq!(at(&reopened, 121), Ok((Bytes::from_static(b"b"), 121)));
}

#[test]
fn a_damaged_record_is_refused_when_read() {
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
    // Opening reads no record; the first read of it finds the damage.
    let (reimage, mut reopened, _) = block_on(StoreImage::open(disk.crash(), config(), 0)).unwrap();
    let missing = reopened
        .missing(&Access::Everything)
        .expect("nothing loaded yet");
    reopened.insert_loaded(block_on(reimage.reader().fetch(&missing)).unwrap());
    let missing = reopened
        .missing(&Access::Everything)
        .expect("history not loaded yet");
    let err = block_on(reimage.reader().fetch(&missing)).err();
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

/// A random request for the paged differential test: writes of `random_write`'s kinds plus
/// reads (now and at older revisions, sorted, counted, limited) and read-only txns.
fn random_read(rng: &mut StdRng, revision: Revision) -> RangeRequest {
    let a = key(rng.gen_range(0..40));
    let b = key(rng.gen_range(0..40));
    RangeRequest {
        key: a,
        range_end: match rng.gen_range(0..4) {
            0 => Bytes::new(),
            1 => Bytes::from_static(b"\0"),
            _ => b,
        },
        revision: if rng.gen_bool(0.3) {
            rng.gen_range(0..=revision)
        } else {
            0
        },
        limit: rng.gen_range(0..4),
        count_only: rng.gen_bool(0.1),
        sort_order: if rng.gen_bool(0.2) {
            SortOrder::Descend
        } else {
            SortOrder::None
        },
        ..RangeRequest::default()
    }
}

/// Every request runs on a plain in-memory store (the model) and on a paged store over an
/// image whose memory is emptied of everything clean after each request (and checkpointed,
/// reopened after a crash, and compacted in the background at random moments): the answers
/// must be the same, which also proves `missing` names everything a request reads.
#[test]
fn a_paged_store_answers_as_the_whole_store_does() {
    for seed in 11..=16u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut disk = SimDisk::new(seed);
        let (mut image, mut paged, _) =
            block_on(StoreImage::open(disk.clone(), config(), 0)).unwrap();
        let mut model = Store::new();
        let mut applied = 0u64;
        let mut loads = 0;
        for step in 0..3000 {
            let reader = image.reader();
            let ctx = format!("seed {seed} step {step}");
            match rng.gen_range(0..10) {
                0..=4 => {
                    if let Some(w) = random_request(&model, &mut rng) {
                        if let Some(access) = access_of(&w) {
                            prepare(&mut paged, &reader, &access);
                        }
                        assert_eq!(
                            apply(&mut paged, &w, 0),
                            apply(&mut model, &w, 0),
                            "{ctx} {w:?}"
                        );
                    }
                }
                5..=7 => {
                    let r = random_read(&mut rng, model.revision());
                    prepare(&mut paged, &reader, &Access::Range(&r));
                    assert_eq!(paged.range(&r), model.range(&r), "{ctx} {r:?}");
                }
                8 => {
                    let from = rng.gen_range(0..=model.revision() + 1);
                    let k = key(rng.gen_range(0..40));
                    let end = Bytes::from_static(b"\0");
                    let want = model.events_chunk(&k, &end, from, 50);
                    let mut got = Vec::new();
                    let mut at = from;
                    let outcome = loop {
                        let access = Access::Events {
                            key: &k,
                            range_end: &end,
                            from: at,
                        };
                        prepare(&mut paged, &reader, &access);
                        match paged.events_chunk(&k, &end, at, 50) {
                            Ok(chunk) => {
                                got.extend(chunk.events);
                                at = chunk.next_revision;
                                if got.len() >= 50 || at > paged.revision() {
                                    break Ok(());
                                }
                            }
                            Err(e) => break Err(e),
                        }
                    };
                    match want {
                        Ok(want) => {
                            assert_eq!(outcome, Ok(()), "{ctx}");
                            let n = want.events.len();
                            assert!(got.len() >= n, "{ctx}: fewer events from {from}");
                            assert_eq!(&got[..n], &want.events[..], "{ctx}: events from {from}");
                        }
                        Err(e) => assert_eq!(outcome, Err(e), "{ctx}"),
                    }
                }
                _ => {
                    let at = rng.gen_range(0..=model.revision());
                    let upto = model.revision();
                    assert_eq!(
                        exported(&mut paged, &reader, upto),
                        exported(&mut model, &reader, upto),
                        "{ctx}: the history a snapshot exports up to {upto}"
                    );
                    prepare(&mut paged, &reader, &Access::Everything);
                    assert_eq!(
                        paged.hash_kv(at),
                        model.hash_kv(at),
                        "{ctx}: hash_kv at {at}"
                    );
                }
            }
            // The background compaction pass, a step now and then.
            if rng.gen_bool(0.2) {
                if let Some(m) = paged.compaction_missing() {
                    let loaded = block_on(reader.fetch(&m)).unwrap();
                    paged.compaction_loaded(loaded);
                }
            }
            if rng.gen_bool(0.05) {
                applied += 1;
                let changes = paged.take_changes();
                let report =
                    block_on(image.checkpoint(changes, applied, b"", || async {})).unwrap();
                paged.checkpoint_done(report.sequence);
                if rng.gen_bool(0.3) {
                    disk = disk.crash();
                    let (i, p, _) = block_on(StoreImage::open(disk.clone(), config(), 0)).unwrap();
                    loads += paged.cache_figures().loads;
                    image = i;
                    paged = p;
                }
            }
            paged.evict(0);
        }
        loads += paged.cache_figures().loads;
        assert!(loads > 1000, "only {loads} loads: the test did not page");
    }
}

/// A long key's stored form is fixed forever (an image written by one build is read by the
/// next): its first 1,024 bytes, 0xff, and the first 16 bytes of its SHA-256 (this digest was
/// computed apart, with Python's hashlib). Short keys are stored as themselves.
#[test]
fn long_keys_have_a_stable_stored_form() {
    let long = [b"/registry/long/".as_slice(), &[b'x'; 1100]].concat();
    let stored = stored_key(&long);
    assert_eq!(stored.len(), SHORT_KEY_MAX + 17);
    assert_eq!(&stored[..SHORT_KEY_MAX], &long[..SHORT_KEY_MAX]);
    assert_eq!(stored[SHORT_KEY_MAX], 0xff);
    let hex: String = stored[SHORT_KEY_MAX + 1..]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(hex, "037f679eb9233741d404c12d69541922");
    let short = vec![b'y'; SHORT_KEY_MAX];
    assert_eq!(stored_key(&short), short);
}
