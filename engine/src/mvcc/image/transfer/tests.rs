//! Round trips of the snapshot stream: a store with history, deletes, compaction, leases and
//! long keys, exported from memory and from its page log, imported into memory and into a new
//! page log, answers exactly as the original (every range at every kept revision, hash_kv,
//! hash, lease table); damaged, reordered and cut streams are refused.

use futures::executor::block_on;
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::super::tests::{assert_same, config, everything, loaded, random_write};
use super::*;
use crate::io::sim::SimDisk;
use crate::mvcc::image::StoreImage;

/// A store after `writes` random writes (puts with and without leases, deletes, txns,
/// compactions, grants, revokes, advances), with some long keys.
fn history(seed: u64, writes: usize) -> Store {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut store = Store::new();
    for _ in 0..writes {
        random_write(&mut store, &mut rng, 0);
    }
    // A lease with a short and a long key attached, whatever the random writes left.
    let (lease, _) = store.lease_grant(0, 30, 0).expect("grant");
    for key in [
        Bytes::from_static(b"/leased"),
        Bytes::from("/l".repeat(700)),
    ] {
        store
            .put(&crate::types::PutRequest {
                key,
                value: Bytes::from_static(b"v"),
                lease,
                ..Default::default()
            })
            .expect("put");
    }
    assert!(
        store.compact_revision() > 0,
        "the history holds a compaction"
    );
    store
}

/// Every answer a reader can get: every range at every kept revision, hash_kv at each, the
/// whole-store hash (history, counters, lease table) and the shared checks of `assert_same`.
fn assert_identical(got: &Store, want: &Store) {
    assert_same(got, want);
    for at in want.compact_revision()..=want.revision() {
        let mut r = everything();
        r.revision = at;
        assert_eq!(got.range(&r), want.range(&r), "range at {at}");
        assert_eq!(got.hash_kv(at), want.hash_kv(at), "hash_kv at {at}");
    }
    assert_eq!(got.hash(), want.hash());
}

fn chunks_of_store(store: &Store, chunk_bytes: usize) -> Vec<Bytes> {
    let mut export = StoreExport::new(Box::new(store.clone())).with_chunk_bytes(chunk_bytes);
    let mut out = Vec::new();
    while let Some(c) = export.next_chunk() {
        assert!(out.len() < 100_000, "the export ends");
        out.push(c);
    }
    out
}

fn import_store(chunks: &[Bytes]) -> Result<Store> {
    let mut import = StoreImport::new();
    for c in chunks {
        import.push(c)?;
    }
    import.finish(0)
}

#[test]
fn an_in_memory_store_round_trips_through_memory() {
    for seed in 1..=4 {
        let store = history(seed, 1500);
        for chunk_bytes in [CHUNK_BYTES_TARGET, 700] {
            let chunks = chunks_of_store(&store, chunk_bytes);
            if chunk_bytes < 1000 {
                assert!(chunks.len() > 5, "small chunks: {}", chunks.len());
            } else {
                assert_eq!(chunks.len(), 1);
            }
            let imported = import_store(&chunks).expect("import");
            assert_identical(&imported, &store);
        }
    }
}

#[test]
fn a_page_log_round_trips_into_memory_and_into_a_new_page_log() {
    for seed in 5..=7 {
        let store = history(seed, 1500);
        // The store's image as a durable shard has it after a checkpoint.
        let disk = SimDisk::new(seed);
        let (mut image, mut durable, _) =
            block_on(StoreImage::open(disk.clone(), config(), 0)).expect("open");
        durable.keep_journal();
        let mut journaled = store.clone();
        journaled.journal_everything();
        block_on(image.checkpoint(journaled.take_changes(), 42, b"leader", || async {}))
            .expect("checkpoint");
        let mut export = ImageExport::new(image.reader()).with_chunk_bytes(1500);
        assert_eq!(export.applied_index(), 42);
        assert_eq!(
            block_on(export.app()).expect("app"),
            Bytes::from_static(b"leader")
        );
        let mut chunks = Vec::new();
        while let Some(c) = block_on(export.next_chunk()).expect("export") {
            chunks.push(c);
        }
        assert!(chunks.len() > 10, "{} chunks", chunks.len());
        assert_identical(&import_store(&chunks).expect("import"), &store);

        // Into a new page log beside the old one (another prefix), as a follower does.
        let target = btree::Config {
            file_prefix: "incoming".to_string(),
            ..config()
        };
        assert!(!block_on(page_log_exists(&disk, "incoming")).unwrap());
        let mut import =
            block_on(ImageImport::create(disk.clone(), target.clone())).expect("create");
        for c in &chunks {
            block_on(import.push(c)).expect("push");
        }
        assert!(import.is_complete());
        block_on(import.finish(43, b"follower")).expect("finish");
        let crashed = disk.crash();
        assert_eq!(
            block_on(committed_app(crashed.clone(), target.clone())).expect("app"),
            (43, Bytes::from_static(b"follower"))
        );
        let (reimage, reopened, meta) =
            block_on(StoreImage::open(crashed.clone(), target.clone(), 0)).expect("open");
        assert_eq!(meta.applied_index, 43);
        assert_identical(&loaded(reopened, &reimage), &store);
        // The old page log is untouched, and removing the new one leaves it so.
        assert_eq!(
            block_on(committed_app(crashed.clone(), config())).expect("app"),
            (42, Bytes::from_static(b"leader"))
        );
        assert!(block_on(remove_page_log(&crashed, "incoming")).expect("remove") >= 2);
        assert!(!block_on(page_log_exists(&crashed, "incoming")).unwrap());
        assert!(block_on(page_log_exists(&crashed, "pages")).unwrap());
    }
}

#[test]
fn an_import_cut_short_commits_nothing() {
    let store = history(9, 1500);
    let chunks = chunks_of_store(&store, 600);
    let disk = SimDisk::new(9);
    let target = btree::Config {
        file_prefix: "incoming".to_string(),
        // Tiny pages budget is irrelevant: force intermediate checkpoints by volume.
        ..config()
    };
    let mut import = block_on(ImageImport::create(disk.clone(), target.clone())).expect("create");
    for c in &chunks[..chunks.len() / 2] {
        block_on(import.push(c)).expect("push");
    }
    assert!(!import.is_complete());
    assert!(matches!(
        block_on(import.finish(5, b"x")),
        Err(TransferError::Incomplete { .. })
    ));
    // What a crash leaves of it reads as no committed image.
    let crashed = disk.crash();
    if block_on(page_log_exists(&crashed, "incoming")).unwrap() {
        let (applied, app) = block_on(committed_app(crashed, target)).expect("read");
        assert_eq!((applied, app.is_empty()), (0, true));
    }
}

#[test]
fn damaged_reordered_and_cut_streams_are_refused() {
    let store = history(11, 800);
    let chunks = chunks_of_store(&store, 900);
    assert!(chunks.len() > 5);

    let mut flipped = chunks[1].to_vec();
    let at = flipped.len() / 2;
    flipped[at] ^= 0x20;
    let mut import = StoreImport::new();
    import.push(&chunks[0]).expect("first");
    assert!(matches!(
        import.push(&Bytes::from(flipped)),
        Err(TransferError::ChecksumMismatch { seq: 1, .. })
    ));

    let mut import = StoreImport::new();
    import.push(&chunks[0]).expect("first");
    assert_eq!(
        import.push(&chunks[2]).unwrap_err(),
        TransferError::OutOfOrder {
            expected: 1,
            found: 2
        }
    );

    let mut import = StoreImport::new();
    assert!(matches!(
        import.push(&chunks[1]),
        Err(TransferError::OutOfOrder { .. })
    ));

    let cut = &chunks[..chunks.len() - 1];
    assert!(matches!(
        import_store(cut),
        Err(TransferError::Incomplete { .. })
    ));

    // Every prefix of a chunk is refused without a panic.
    let whole = &chunks[0];
    for n in 0..whole.len().min(400) {
        assert!(decode_chunk(&whole.slice(..n)).is_err(), "prefix {n}");
    }
    // A chunk after the last one.
    let mut import = StoreImport::new();
    for c in &chunks {
        import.push(c).expect("push");
    }
    assert!(import.push(&chunks[0]).is_err());
}

#[test]
fn an_empty_store_round_trips() {
    let store = Store::new();
    let chunks = chunks_of_store(&store, CHUNK_BYTES_TARGET);
    assert_eq!(chunks.len(), 1);
    let imported = import_store(&chunks).expect("import");
    assert_eq!(imported.revision(), 1);
    assert_eq!(imported.hash(), store.hash());
}
