//! WAL record framing, sans-I/O: [`encode`] one record into bytes and [`decode`] one record from
//! the front of a byte slice (the rest of a segment). Layout, drawn in
//! `docs/storage-format.md` ("WAL record"):
//!
//! ```text
//! 0      4  payload_len  u32 LE
//! 4      4  crc32c       u32 LE, over bytes [0,4) then [8, record_size)
//! 8      1  kind         1..=0x7F an entry (caller's kind), 0x80 a tail marker
//! 9      7  reserved     zero
//! 16     8  term         u64 LE
//! 24     8  index        u64 LE
//! 32     n  payload
//! 32+n   p  zero padding to a multiple of 8 (covered by the crc)
//! ```
//!
//! Invariants: a record's size is a multiple of [`RECORD_ALIGN`], so records laid end to end
//! from an aligned offset all start aligned (recovery's forward scan only probes aligned
//! offsets); a header of all zeros never decodes (kind 0 is invalid), which is how the zeroed,
//! preallocated end of a segment reads as "end of log"; the checksum covers every byte of the
//! record except itself, padding included.

use super::{LogId, LogIndex, Term};

/// Bytes before the payload.
pub const RECORD_HEADER_BYTES: usize = 32;
/// Every record starts and ends on a multiple of this.
pub const RECORD_ALIGN: usize = 8;
/// Largest entry kind a caller may use; larger kinds are the WAL's own.
pub const ENTRY_KIND_MAX: u8 = 0x7F;
/// "The log now ends at (index, term)": written by `truncate_after` and by `purge_upto` past
/// the end; payload empty.
pub const KIND_TAIL_MARKER: u8 = 0x80;

const _: () = assert!(RECORD_HEADER_BYTES.is_multiple_of(RECORD_ALIGN));

/// Size on disk of a record carrying `payload_len` bytes.
pub const fn record_size(payload_len: usize) -> usize {
    RECORD_HEADER_BYTES + payload_len.div_ceil(RECORD_ALIGN) * RECORD_ALIGN
}

/// What a record says, borrowed from the buffer it was decoded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub kind: u8,
    pub term: Term,
    pub index: LogIndex,
    pub payload: &'a [u8],
}

impl RecordRef<'_> {
    pub fn size(&self) -> usize {
        record_size(self.payload.len())
    }
    pub fn log_id(&self) -> LogId {
        LogId {
            term: self.term,
            index: self.index,
        }
    }
    pub fn is_marker(&self) -> bool {
        self.kind == KIND_TAIL_MARKER
    }
}

/// Why bytes are not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Invalid {
    /// Fewer than a header's bytes remain and they are not all zero.
    ShortHeader {
        remaining: usize,
    },
    /// The kind byte is 0 (with other header bytes set) or an unknown WAL kind.
    BadKind {
        kind: u8,
    },
    ReservedNotZero,
    /// The record would run past the end of the segment.
    TooLong {
        payload_len: u32,
        remaining: usize,
    },
    ChecksumMismatch {
        stored: u32,
        computed: u32,
    },
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Invalid::ShortHeader { remaining } => {
                write!(f, "{remaining} non-zero bytes, fewer than a record header")
            }
            Invalid::BadKind { kind } => write!(f, "invalid record kind {kind:#04x}"),
            Invalid::ReservedNotZero => write!(f, "reserved header bytes are not zero"),
            Invalid::TooLong {
                payload_len,
                remaining,
            } => write!(
                f,
                "payload length {payload_len} runs past the segment end ({remaining} bytes left)"
            ),
            Invalid::ChecksumMismatch { stored, computed } => write!(
                f,
                "checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ),
        }
    }
}

/// The outcome of decoding at one offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    Record(RecordRef<'a>),
    /// A zero header (or fewer than a header's bytes, all zero): the end of the log.
    End,
    Invalid(Invalid),
}

fn checksum(record: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&record[0..4]), &record[8..])
}

fn valid_kind(kind: u8) -> bool {
    (1..=ENTRY_KIND_MAX).contains(&kind) || kind == KIND_TAIL_MARKER
}

/// Appends the encoding of one record to `out`. Panics on a kind no record may have (0, or a
/// WAL kind other than the marker): callers validate kinds before.
pub fn encode_into(out: &mut Vec<u8>, kind: u8, term: Term, index: LogIndex, payload: &[u8]) {
    assert!(valid_kind(kind), "record kind {kind:#x} is not encodable");
    let len = u32::try_from(payload.len()).expect("payload length fits in u32");
    let start = out.len();
    let size = record_size(payload.len());
    out.reserve(size);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(kind);
    out.extend_from_slice(&[0; 7]);
    out.extend_from_slice(&term.0.to_le_bytes());
    out.extend_from_slice(&index.0.to_le_bytes());
    out.extend_from_slice(payload);
    out.resize(start + size, 0);
    let crc = checksum(&out[start..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

pub fn encode(kind: u8, term: Term, index: LogIndex, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(record_size(payload.len()));
    encode_into(&mut out, kind, term, index, payload);
    out
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Decodes the record at the front of `rest` (the remaining bytes of a segment). Never
/// panics, whatever the bytes.
pub fn decode(rest: &[u8]) -> Decoded<'_> {
    if rest.len() < RECORD_HEADER_BYTES {
        return if rest.iter().all(|&b| b == 0) {
            Decoded::End
        } else {
            Decoded::Invalid(Invalid::ShortHeader {
                remaining: rest.len(),
            })
        };
    }
    let header = &rest[..RECORD_HEADER_BYTES];
    if header.iter().all(|&b| b == 0) {
        return Decoded::End;
    }
    let kind = header[8];
    if !valid_kind(kind) {
        return Decoded::Invalid(Invalid::BadKind { kind });
    }
    if header[9..16].iter().any(|&b| b != 0) {
        return Decoded::Invalid(Invalid::ReservedNotZero);
    }
    let payload_len = u32_at(header, 0);
    let size = record_size(payload_len as usize);
    if size > rest.len() {
        return Decoded::Invalid(Invalid::TooLong {
            payload_len,
            remaining: rest.len(),
        });
    }
    let stored = u32_at(header, 4);
    let computed = checksum(&rest[..size]);
    if stored != computed {
        return Decoded::Invalid(Invalid::ChecksumMismatch { stored, computed });
    }
    Decoded::Record(RecordRef {
        kind,
        term: Term(u64_at(header, 16)),
        index: LogIndex(u64_at(header, 24)),
        payload: &rest[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + payload_len as usize],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_sizes() {
        for len in [0usize, 1, 7, 8, 9, 100, 4096] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let bytes = encode(3, Term(7), LogIndex(42), &payload);
            assert_eq!(bytes.len(), record_size(len));
            assert_eq!(bytes.len() % RECORD_ALIGN, 0);
            let mut seg = bytes.clone();
            seg.extend_from_slice(&[0; 64]);
            match decode(&seg) {
                Decoded::Record(r) => {
                    assert_eq!((r.kind, r.term, r.index), (3, Term(7), LogIndex(42)));
                    assert_eq!(r.payload, &payload[..]);
                    assert_eq!(r.size(), bytes.len());
                }
                other => panic!("len {len}: {other:?}"),
            }
            assert_eq!(decode(&seg[bytes.len()..]), Decoded::End);
        }
    }

    #[test]
    fn layout_matches_the_documented_offsets() {
        let b = encode(0x05, Term(0x0102), LogIndex(0x0304), b"xyz");
        assert_eq!(&b[0..4], &3u32.to_le_bytes());
        assert_eq!(b[8], 0x05);
        assert_eq!(&b[9..16], &[0; 7]);
        assert_eq!(&b[16..24], &0x0102u64.to_le_bytes());
        assert_eq!(&b[24..32], &0x0304u64.to_le_bytes());
        assert_eq!(&b[32..35], b"xyz");
        assert_eq!(&b[35..40], &[0; 5], "padding is zero");
        let crc = crc32c::crc32c_append(crc32c::crc32c(&b[0..4]), &b[8..40]);
        assert_eq!(&b[4..8], &crc.to_le_bytes());
    }

    #[test]
    fn every_single_byte_flip_is_detected() {
        let b = encode(1, Term(3), LogIndex(9), b"hello, wal");
        for at in 0..b.len() {
            for mask in [0x01u8, 0x80, 0xFF] {
                let mut c = b.clone();
                c[at] ^= mask;
                assert!(
                    !matches!(decode(&c), Decoded::Record(_)),
                    "flip {mask:#x} at {at} decoded as a record"
                );
            }
        }
    }

    #[test]
    fn zeros_are_the_end_and_short_garbage_is_invalid() {
        assert_eq!(decode(&[]), Decoded::End);
        assert_eq!(decode(&[0; 31]), Decoded::End);
        assert_eq!(decode(&[0; 4096]), Decoded::End);
        assert!(matches!(
            decode(&[0, 0, 1]),
            Decoded::Invalid(Invalid::ShortHeader { remaining: 3 })
        ));
    }

    #[test]
    fn truncated_records_are_too_long() {
        let b = encode(1, Term(1), LogIndex(1), &[9; 100]);
        for cut in RECORD_HEADER_BYTES..b.len() {
            assert!(
                matches!(decode(&b[..cut]), Decoded::Invalid(Invalid::TooLong { .. })),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn kinds_are_checked() {
        let mut b = encode(1, Term(1), LogIndex(1), b"");
        for kind in [0u8, 0x81, 0xFF] {
            b[8] = kind;
            assert_eq!(decode(&b), Decoded::Invalid(Invalid::BadKind { kind }));
        }
        let m = encode(KIND_TAIL_MARKER, Term(2), LogIndex(5), b"");
        assert!(matches!(decode(&m), Decoded::Record(r) if r.is_marker()));
    }
}
