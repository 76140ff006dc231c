//! The Raft log of one shard: preallocated segment files written with 4 KiB-aligned appends,
//! group commit, crash recovery, purge, and the vote file. Layouts are drawn in
//! `docs/storage-format.md`.
//!
//! Parts, sans-I/O first:
//! - [`record`]: framing of one record `[len | crc32c | kind | term | index | payload]`;
//! - [`segment`]: the segment header page and the scan that finds where records stop;
//! - [`log`]: the logical log a record stream describes (append, truncate, reset, purge);
//! - [`vote`]: the double-slot vote file;
//! - `store`: [`Wal`], which drives a [`crate::io::Disk`] with all of the above;
//! - [`check`]: the decoders against a reference model (the fuzz target and a property test).
//!
//! Guarantees (tested on the simulator by `tests::crash`):
//! - an append resolves `Ok` only after its records are covered by a `sync_data`;
//! - after a crash, the log is the state after some prefix of the issued record stream that
//!   contains every acknowledged record; a record is whole or absent;
//! - a damaged record with valid records after it refuses `open` with
//!   [`WalError::Corrupt`] naming the file and offset; a torn tail is cut and zeroed;
//! - a failed write or sync latches the WAL: every later call returns
//!   [`WalError::FailStopped`];
//! - the next segment is prepared (allocated, zero-filled, synced) while the active one fills,
//!   so a roll does not wait for allocation; a prepared file left by a crash is reused or
//!   removed at `open`, and purge never removes it.

pub mod check;
pub mod log;
pub mod record;
pub mod segment;
mod store;
pub mod vote;

#[cfg(test)]
mod tests;

use bytes::Bytes;

use crate::io::{IoError, ALIGN};
pub use log::{LogError, LogState};
pub use segment::{HeaderError, PreparedHeader, WAL_FORMAT_VERSION};
pub use store::{Recovered, TornTail, Wal, WalStats};
pub use vote::{SlotError, Vote, VOTE_FORMAT_VERSION};

/// Position of an entry in the Raft log (the first entry is 1; 0 means "none").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LogIndex(pub u64);

/// A Raft term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Term(pub u64);

impl std::fmt::Display for LogIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::fmt::Display for Term {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An entry's identity: index and the term it was created in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct LogId {
    pub term: Term,
    pub index: LogIndex,
}

impl LogId {
    pub const ZERO: LogId = LogId {
        term: Term(0),
        index: LogIndex(0),
    };
    pub fn new(term: u64, index: u64) -> LogId {
        LogId {
            term: Term(term),
            index: LogIndex(index),
        }
    }
}

impl std::fmt::Display for LogId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.index, self.term)
    }
}

/// One log entry as callers see it. `kind` is the caller's (1..=[`record::ENTRY_KIND_MAX`]),
/// e.g. normal / membership / blank for the consensus layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub index: LogIndex,
    pub term: Term,
    pub kind: u8,
    pub payload: Bytes,
}

impl Entry {
    pub fn log_id(&self) -> LogId {
        LogId {
            term: self.term,
            index: self.index,
        }
    }
}

/// Sizes and bounds of one WAL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalConfig {
    /// Size every new segment file is preallocated to (`wal_segment_bytes`). A multiple of
    /// 4 KiB; existing segments keep the size in their header.
    pub segment_bytes: u64,
    /// Most records one group-commit write carries.
    pub batch_records_max: usize,
    /// Most record bytes one group-commit write carries (a single larger record still goes
    /// alone in its own write).
    pub batch_bytes_max: usize,
    /// Largest entry payload `append` accepts.
    pub record_payload_bytes_max: usize,
    /// Most encoded bytes waiting for a write; `append` past it returns
    /// [`WalError::QueueFull`] (wait for an earlier append, then retry).
    pub queue_bytes_max: usize,
    /// When the active segment is filled to this percentage (0..=100) of its size, the next
    /// segment file starts being prepared (created, allocated, zero-filled, synced) alongside
    /// the appends, so that the roll only switches to it. `None`: no preparation; the append
    /// that crosses the segment end creates the next segment itself.
    pub prepare_next_at_fill_percent: Option<u8>,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            segment_bytes: 64 << 20,
            batch_records_max: 4096,
            batch_bytes_max: 1 << 20,
            record_payload_bytes_max: 8 << 20,
            queue_bytes_max: 64 << 20,
            prepare_next_at_fill_percent: Some(50),
        }
    }
}

impl WalConfig {
    pub fn validate(&self) -> Result<(), WalError> {
        let bad = |reason| Err(WalError::Config { reason });
        if !self.segment_bytes.is_multiple_of(ALIGN as u64) {
            return bad("segment_bytes must be a multiple of 4096");
        }
        let room = self
            .segment_bytes
            .saturating_sub(segment::SEGMENT_HEADER_BYTES as u64);
        if (record::record_size(self.record_payload_bytes_max) as u64) > room {
            return bad("record_payload_bytes_max does not fit in one segment after its header");
        }
        if self.batch_records_max == 0 || self.batch_bytes_max == 0 {
            return bad("batch bounds must be at least 1");
        }
        if self.queue_bytes_max < record::record_size(self.record_payload_bytes_max) {
            return bad("queue_bytes_max must hold at least one largest record");
        }
        if self.prepare_next_at_fill_percent.is_some_and(|p| p > 100) {
            return bad("prepare_next_at_fill_percent must be at most 100");
        }
        Ok(())
    }
}

/// Why bytes on disk are not what the WAL wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CorruptReason {
    Header(HeaderError),
    /// A damaged record in a segment that is not the last one (its end was synced before the
    /// next segment was created, so it cannot be a torn write).
    Record(record::Invalid),
    /// A damaged record with a valid record after it.
    RecordBeforeValid {
        why: record::Invalid,
        valid_at: u64,
    },
    /// A zeroed record header with a valid record after it.
    ZeroedBeforeValid {
        valid_at: u64,
    },
    /// A valid record that does not extend the log (index gap, term going back).
    Log(LogError),
    /// The segment's header says another sequence number than its name.
    SegmentSeqMismatch {
        named: u64,
        header: u64,
    },
    /// The segment does not start where the previous one ended.
    Discontinuity {
        expected: LogId,
        found: LogId,
    },
    /// The file is shorter than its header or format requires.
    TooShort {
        len: u64,
        expected: u64,
    },
    /// A record read back for `read` is not the entry the index says is there.
    ReadBack {
        expected: LogId,
    },
    Vote(SlotError),
}

impl std::fmt::Display for CorruptReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CorruptReason::Header(h) => write!(f, "{h}"),
            CorruptReason::Record(r) => write!(f, "{r}"),
            CorruptReason::RecordBeforeValid { why, valid_at } => {
                write!(f, "{why}, and a valid record follows at offset {valid_at}")
            }
            CorruptReason::ZeroedBeforeValid { valid_at } => write!(
                f,
                "zeroed record header, and a valid record follows at offset {valid_at}"
            ),
            CorruptReason::Log(e) => write!(f, "{e}"),
            CorruptReason::SegmentSeqMismatch { named, header } => {
                write!(f, "file is segment {named} but its header says {header}")
            }
            CorruptReason::Discontinuity { expected, found } => write!(
                f,
                "segment starts after {found}, the previous segment ends at {expected}"
            ),
            CorruptReason::TooShort { len, expected } => {
                write!(f, "file is {len} bytes, expected at least {expected}")
            }
            CorruptReason::ReadBack { expected } => {
                write!(f, "record read back is not entry {expected}")
            }
            CorruptReason::Vote(e) => write!(f, "{e}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// An I/O error outside the write path (open, recovery reads, reads).
    #[error("WAL I/O: {0}")]
    Io(#[from] IoError),
    /// A write, sync, create or remove failed: the WAL is stopped and returns this from every
    /// call from now on.
    #[error("WAL fail-stopped after a failed {op}: {source}")]
    FailStopped {
        op: &'static str,
        #[source]
        source: IoError,
    },
    #[error("WAL corrupt: {file} at offset {offset}: {reason}")]
    Corrupt {
        file: String,
        offset: u64,
        reason: CorruptReason,
    },
    /// Segment files are not consecutive: `seq` is missing.
    #[error("WAL segment {seq} is missing")]
    MissingSegment { seq: u64 },
    /// The entries do not extend the log.
    #[error("append does not extend the log: {0}")]
    Append(LogError),
    #[error("log index {requested} is outside the log [{first}, {last}]")]
    OutOfRange {
        requested: LogIndex,
        first: LogIndex,
        last: LogIndex,
    },
    #[error("entry payload of {payload_bytes} bytes exceeds {max}")]
    RecordTooLarge { payload_bytes: usize, max: usize },
    #[error("entry kind {kind} is outside 1..={}", record::ENTRY_KIND_MAX)]
    BadKind { kind: u8 },
    #[error("WAL queue holds {queued_bytes} bytes, the bound is {max}")]
    QueueFull { queued_bytes: usize, max: usize },
    #[error("WAL config: {reason}")]
    Config { reason: &'static str },
}
