//! WAL tests on the simulator: behaviour (`basic`), damaged files (`corruption`), the
//! crash-at-every-step model check (`crash`), and preparing the next segment ahead of need
//! (`prepare`). Shared helpers live here.

mod basic;
mod corruption;
mod crash;
mod prepare;

use bytes::Bytes;
use futures::executor::block_on;

use super::{Entry, LogIndex, Recovered, Term, Wal, WalConfig, WalError};
use crate::io::sim::SimDisk;

/// Small segments and batches so that a few hundred records roll segments and split batches.
pub(super) fn small_config() -> WalConfig {
    WalConfig {
        segment_bytes: 16 * 1024,
        batch_records_max: 6,
        batch_bytes_max: 6 * 1024,
        record_payload_bytes_max: 3000,
        queue_bytes_max: 1 << 20,
        prepare_next_at_fill_percent: Some(50),
    }
}

/// A deterministic entry whose payload says who it is.
pub(super) fn entry(index: u64, term: u64, len: usize) -> Entry {
    let mut payload = format!("{index}@{term}:").into_bytes();
    payload.resize(
        len.max(payload.len()),
        (index as u8).wrapping_mul(7) ^ term as u8,
    );
    Entry {
        index: LogIndex(index),
        term: Term(term),
        kind: 1 + (index % 3) as u8,
        payload: Bytes::from(payload),
    }
}

pub(super) fn open(disk: &SimDisk) -> Result<(Wal<SimDisk>, Recovered), WalError> {
    block_on(Wal::open(disk.clone(), small_config()))
}

pub(super) fn read_all(wal: &Wal<SimDisk>) -> Vec<Entry> {
    let (first, last) = (wal.first_index(), wal.last().index);
    block_on(wal.read(first..LogIndex(last.0 + 1))).expect("read the whole log")
}
