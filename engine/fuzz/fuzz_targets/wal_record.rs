//! Fuzz target: the WAL record decoder, segment scan, segment header and vote slot decoders
//! against the reference model in `ballast_engine::wal::check` (which also runs on seeded
//! inputs in plain `cargo test`). Run: `cd engine/fuzz && cargo +nightly fuzz run wal_record`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ballast_engine::wal::check::check(data);
});
