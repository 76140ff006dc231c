//! Fuzz target: the page-log decoders (`decode_page`, the superblock slot decoder) and
//! `encode_page` against the reference model in `ballast_engine::btree::page::check` (which also
//! runs on seeded inputs in plain `cargo test`). Run:
//! `cd engine/fuzz && cargo +nightly fuzz run page -- -max_len=8192`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ballast_engine::btree::page::check::check(data);
});
