//! WAL segment files, sans-I/O: the header page ([`SegmentHeader`]), file names, and
//! [`scan`], which walks the records of a segment image and classifies where they stop.
//!
//! A segment is a preallocated file of `segment_bytes` (a multiple of 4 KiB). Its first 4 KiB
//! page is the header; records follow from offset [`SEGMENT_HEADER_BYTES`], end to end. The
//! header is written and synced before any record, and a segment is created only after every
//! record of the previous one is durable, so:
//! - only the last segment can end in a torn write;
//! - the bytes after the last record of a segment are zero (preallocation gives zeros, and
//!   recovery zeroes a torn tail before appending over it).
//!
//! A segment file may also be *prepared* ahead of need: allocated, zero-filled and given a
//! [`PreparedHeader`] page (its own magic, no `prev`, since the log position it will follow is
//! not known yet). A prepared file holds no record; the roll to it overwrites that page with
//! the [`SegmentHeader`] and syncs before any record goes in. A reader of format 1 that
//! predates prepared files sees a bad magic over a zero body in the last file and removes it
//! as an unfinished creation, so the addition needs no new format version.
//!
//! `scan` stops at the first offset that is not a valid record and then probes every later
//! 8-byte-aligned offset for a valid record: if one exists, the stop is corruption in the
//! middle of the log (a damaged record with acknowledged records after it), never a torn tail.

use super::record::{decode, Decoded, Invalid, RecordRef, RECORD_ALIGN};
use super::{LogId, LogIndex, Term};
use crate::io::{ALIGN, SECTOR};

/// The header page; records start right after it.
pub const SEGMENT_HEADER_BYTES: usize = ALIGN;
pub const SEGMENT_MAGIC: [u8; 8] = *b"BLSTWAL\0";
/// Magic of a prepared segment's header page (see the module comment).
pub const PREPARED_MAGIC: [u8; 8] = *b"BLSTPREP";
/// Version of the segment and record layout. 1: first layout (this file and `record.rs`);
/// prepared headers ([`PREPARED_MAGIC`]) were added within 1, as older readers remove them.
pub const WAL_FORMAT_VERSION: u32 = 1;
/// Bytes of the header page that carry fields (the rest is zero).
const HEADER_FIELDS_BYTES: usize = 64;

const _: () = assert!(SEGMENT_HEADER_BYTES.is_multiple_of(ALIGN));
// Every header field sits in the first sector, so a torn write of a header page (sealing a
// prepared file) leaves either the old or the new header, never a mix.
const _: () = assert!(HEADER_FIELDS_BYTES <= SECTOR);
const _: () = assert!(SEGMENT_HEADER_BYTES.is_multiple_of(RECORD_ALIGN));

/// Name of segment `seq`: fixed-width hex, so names sort in sequence order.
pub fn segment_name(seq: u64) -> String {
    format!("wal-{seq:016x}.seg")
}

/// The sequence number of a segment file name, or `None` for other files.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("wal-")?.strip_suffix(".seg")?;
    if hex.len() != 16
        || !hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// The header page of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub seq: u64,
    /// The last log id of the log as written before this segment (what replay starts from
    /// when earlier segments were purged).
    pub prev: LogId,
    /// The file's preallocated size; records never go past it.
    pub segment_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeaderError {
    /// The page is all zeros: a creation that never became durable.
    Zeroed,
    BadMagic,
    UnsupportedVersion {
        version: u32,
    },
    ChecksumMismatch {
        stored: u32,
        computed: u32,
    },
    /// Reserved bytes set, or a segment size that is not a multiple of 4 KiB.
    BadField,
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::Zeroed => write!(f, "segment header is all zeros"),
            HeaderError::BadMagic => write!(f, "bad segment magic"),
            HeaderError::UnsupportedVersion { version } => write!(
                f,
                "unsupported WAL format version {version} (this build reads {WAL_FORMAT_VERSION})"
            ),
            HeaderError::ChecksumMismatch { stored, computed } => write!(
                f,
                "segment header checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ),
            HeaderError::BadField => write!(f, "segment header has an invalid field"),
        }
    }
}

fn header_crc(page: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&page[0..12]), &page[16..HEADER_FIELDS_BYTES])
}

impl SegmentHeader {
    /// The 4 KiB header page.
    pub fn encode(&self) -> Vec<u8> {
        self.encode_with(&SEGMENT_MAGIC)
    }

    /// The page with `magic` (sealed or prepared).
    fn encode_with(&self, magic: &[u8; 8]) -> Vec<u8> {
        let mut p = vec![0u8; SEGMENT_HEADER_BYTES];
        p[0..8].copy_from_slice(magic);
        p[8..12].copy_from_slice(&WAL_FORMAT_VERSION.to_le_bytes());
        p[16..24].copy_from_slice(&self.seq.to_le_bytes());
        p[24..32].copy_from_slice(&self.prev.index.0.to_le_bytes());
        p[32..40].copy_from_slice(&self.prev.term.0.to_le_bytes());
        p[40..48].copy_from_slice(&self.segment_bytes.to_le_bytes());
        let crc = header_crc(&p);
        p[12..16].copy_from_slice(&crc.to_le_bytes());
        p
    }

    /// Decodes the header page (at least [`SEGMENT_HEADER_BYTES`] bytes).
    pub fn decode(page: &[u8]) -> Result<SegmentHeader, HeaderError> {
        Self::decode_with(page, &SEGMENT_MAGIC)
    }

    fn decode_with(page: &[u8], magic: &[u8; 8]) -> Result<SegmentHeader, HeaderError> {
        assert!(page.len() >= SEGMENT_HEADER_BYTES, "a whole header page");
        let page = &page[..SEGMENT_HEADER_BYTES];
        if page.iter().all(|&b| b == 0) {
            return Err(HeaderError::Zeroed);
        }
        if page[0..8] != *magic {
            return Err(HeaderError::BadMagic);
        }
        let u64_at = |at: usize| u64::from_le_bytes(page[at..at + 8].try_into().expect("8"));
        let u32_at = |at: usize| u32::from_le_bytes(page[at..at + 4].try_into().expect("4"));
        let stored = u32_at(12);
        let computed = header_crc(page);
        if stored != computed {
            return Err(HeaderError::ChecksumMismatch { stored, computed });
        }
        let version = u32_at(8);
        if version != WAL_FORMAT_VERSION {
            return Err(HeaderError::UnsupportedVersion { version });
        }
        let segment_bytes = u64_at(40);
        if page[48..].iter().any(|&b| b != 0)
            || !segment_bytes.is_multiple_of(ALIGN as u64)
            || segment_bytes <= SEGMENT_HEADER_BYTES as u64
        {
            return Err(HeaderError::BadField);
        }
        Ok(SegmentHeader {
            seq: u64_at(16),
            prev: LogId {
                index: LogIndex(u64_at(24)),
                term: Term(u64_at(32)),
            },
            segment_bytes,
        })
    }
}

/// The header page of a prepared segment: a file allocated and zero-filled for sequence number
/// `seq`, holding no record yet. Laid out as [`SegmentHeader`] with [`PREPARED_MAGIC`] and a
/// zero `prev`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreparedHeader {
    pub seq: u64,
    pub segment_bytes: u64,
}

impl PreparedHeader {
    /// The 4 KiB header page.
    pub fn encode(&self) -> Vec<u8> {
        SegmentHeader {
            seq: self.seq,
            prev: LogId::ZERO,
            segment_bytes: self.segment_bytes,
        }
        .encode_with(&PREPARED_MAGIC)
    }

    /// Decodes a prepared header page (at least [`SEGMENT_HEADER_BYTES`] bytes); a sealed
    /// segment's header is [`HeaderError::BadMagic`] here.
    pub fn decode(page: &[u8]) -> Result<PreparedHeader, HeaderError> {
        let h = SegmentHeader::decode_with(page, &PREPARED_MAGIC)?;
        if h.prev != LogId::ZERO {
            return Err(HeaderError::BadField);
        }
        Ok(PreparedHeader {
            seq: h.seq,
            segment_bytes: h.segment_bytes,
        })
    }
}

/// Why a scan stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// A zero header, or the end of the segment.
    End,
    Invalid(Invalid),
}

/// The records of one segment image, in order, and where they stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan<'a> {
    /// `(offset, record)` for every valid record before the stop.
    pub records: Vec<(u64, RecordRef<'a>)>,
    /// Offset of the first byte after the last valid record.
    pub stop: u64,
    pub reason: StopReason,
    /// The first aligned offset after `stop` holding a valid record, if any.
    pub valid_after: Option<u64>,
}

/// Scans the records of `image` (a whole segment, header page included) from
/// [`SEGMENT_HEADER_BYTES`] up to `min(image.len(), segment_bytes)`.
pub fn scan(image: &[u8], segment_bytes: u64) -> Scan<'_> {
    let end = image
        .len()
        .min(usize::try_from(segment_bytes).unwrap_or(usize::MAX));
    let data = &image[..end];
    let mut at = SEGMENT_HEADER_BYTES.min(end);
    let mut records = Vec::new();
    let reason = loop {
        if at == end {
            break StopReason::End;
        }
        match decode(&data[at..]) {
            Decoded::Record(r) => {
                records.push((at as u64, r));
                at += r.size();
            }
            Decoded::End => break StopReason::End,
            Decoded::Invalid(why) => break StopReason::Invalid(why),
        }
    };
    Scan {
        records,
        stop: at as u64,
        reason,
        valid_after: find_valid_after(data, at),
    }
}

/// The first aligned offset in `(stop, data.len())` where a valid record decodes.
fn find_valid_after(data: &[u8], stop: usize) -> Option<u64> {
    let mut at = stop + RECORD_ALIGN;
    while at + RECORD_ALIGN <= data.len() {
        // A record header starts with a length and never has an all-zero first 16 bytes
        // (kind is non-zero), so an all-zero word pair is skipped without decoding.
        let word_pair_zero = data[at..(at + 16).min(data.len())].iter().all(|&b| b == 0);
        if !word_pair_zero {
            if let Decoded::Record(_) = decode(&data[at..]) {
                return Some(at as u64);
            }
        }
        at += RECORD_ALIGN;
    }
    None
}

/// Offset one past the last non-zero byte of `data`, or 0.
pub fn nonzero_end(data: &[u8]) -> usize {
    data.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1)
}

#[cfg(test)]
mod tests {
    use super::super::record::{encode, encode_into, KIND_TAIL_MARKER};
    use super::*;

    fn header(seq: u64) -> SegmentHeader {
        SegmentHeader {
            seq,
            prev: LogId {
                index: LogIndex(10),
                term: Term(2),
            },
            segment_bytes: 64 * 1024,
        }
    }

    fn image_with(records: &[Vec<u8>], segment_bytes: usize) -> Vec<u8> {
        let mut img = header(1).encode();
        for r in records {
            img.extend_from_slice(r);
        }
        img.resize(segment_bytes, 0);
        img
    }

    #[test]
    fn names_sort_and_parse() {
        assert_eq!(segment_name(1), "wal-0000000000000001.seg");
        assert_eq!(parse_segment_name(&segment_name(0xabc)), Some(0xabc));
        assert_eq!(parse_segment_name("wal-vote"), None);
        assert_eq!(parse_segment_name("wal-000000000000000G.seg"), None);
        assert_eq!(parse_segment_name("wal-0000000000000ABC.seg"), None);
        assert!(segment_name(9) < segment_name(10) && segment_name(0xff) < segment_name(0x100));
    }

    #[test]
    fn header_roundtrip_and_damage() {
        let h = header(7);
        let p = h.encode();
        assert_eq!(p.len(), SEGMENT_HEADER_BYTES);
        assert_eq!(SegmentHeader::decode(&p), Ok(h));
        assert_eq!(
            SegmentHeader::decode(&[0; SEGMENT_HEADER_BYTES]),
            Err(HeaderError::Zeroed)
        );
        for at in 0..HEADER_FIELDS_BYTES {
            let mut c = p.clone();
            c[at] ^= 0x10;
            assert!(SegmentHeader::decode(&c).is_err(), "flip at {at} accepted");
        }
        let mut c = p.clone();
        c[1000] = 1;
        assert_eq!(SegmentHeader::decode(&c), Err(HeaderError::BadField));
    }

    #[test]
    fn prepared_header_roundtrip_and_distinct_from_sealed() {
        let p = PreparedHeader {
            seq: 9,
            segment_bytes: 64 * 1024,
        };
        let page = p.encode();
        assert_eq!(page.len(), SEGMENT_HEADER_BYTES);
        assert_eq!(PreparedHeader::decode(&page), Ok(p));
        assert_eq!(SegmentHeader::decode(&page), Err(HeaderError::BadMagic));
        assert_eq!(
            PreparedHeader::decode(&header(9).encode()),
            Err(HeaderError::BadMagic)
        );
        assert_eq!(
            PreparedHeader::decode(&[0; SEGMENT_HEADER_BYTES]),
            Err(HeaderError::Zeroed)
        );
        for at in 0..HEADER_FIELDS_BYTES {
            let mut c = page.clone();
            c[at] ^= 0x10;
            assert!(PreparedHeader::decode(&c).is_err(), "flip at {at} accepted");
        }
    }

    #[test]
    fn scan_reads_records_to_the_zero_end() {
        let recs: Vec<Vec<u8>> = (1..=5)
            .map(|i| {
                encode(
                    1,
                    Term(3),
                    LogIndex(10 + i),
                    &vec![i as u8; i as usize * 13],
                )
            })
            .collect();
        let img = image_with(&recs, 16 * 1024);
        let s = scan(&img, 16 * 1024);
        assert_eq!(s.records.len(), 5);
        assert_eq!(s.records[0].0, SEGMENT_HEADER_BYTES as u64);
        assert_eq!(s.reason, StopReason::End);
        let total: usize = recs.iter().map(Vec::len).sum();
        assert_eq!(s.stop, (SEGMENT_HEADER_BYTES + total) as u64);
        assert_eq!(s.valid_after, None);
    }

    #[test]
    fn scan_of_a_full_segment_ends_at_its_size() {
        // Exactly fill 4 KiB of record space.
        let r = encode(1, Term(1), LogIndex(1), &vec![7; 4096 - 32]);
        let img = image_with(&[r], 8192);
        let s = scan(&img, 8192);
        assert_eq!(s.records.len(), 1);
        assert_eq!((s.stop, s.reason), (8192, StopReason::End));
    }

    #[test]
    fn a_torn_last_record_has_nothing_valid_after_it() {
        let a = encode(1, Term(1), LogIndex(1), &[1; 100]);
        let b = encode(1, Term(1), LogIndex(2), &[2; 3000]);
        let mut img = image_with(&[a.clone(), b.clone()], 16 * 1024);
        // Zero the second half of b, as a write torn at a sector boundary leaves it.
        let b_at = SEGMENT_HEADER_BYTES + a.len();
        for x in &mut img[b_at + 1024..b_at + b.len()] {
            *x = 0;
        }
        let s = scan(&img, 16 * 1024);
        assert_eq!(s.records.len(), 1);
        assert_eq!(s.stop, b_at as u64);
        assert!(matches!(
            s.reason,
            StopReason::Invalid(Invalid::ChecksumMismatch { .. })
        ));
        assert_eq!(s.valid_after, None);
    }

    #[test]
    fn a_damaged_middle_record_is_followed_by_valid_ones() {
        let mut recs = Vec::new();
        for i in 1..=4 {
            recs.push(encode(1, Term(1), LogIndex(i), &[i as u8; 200]));
        }
        let mut img = image_with(&recs, 16 * 1024);
        let second = SEGMENT_HEADER_BYTES + recs[0].len();
        img[second + 100] ^= 0x04;
        let s = scan(&img, 16 * 1024);
        assert_eq!(s.records.len(), 1);
        assert_eq!(s.stop, second as u64);
        assert_eq!(s.valid_after, Some((second + recs[1].len()) as u64));
        // A length field zeroed together with the rest of the header reads as an end, and
        // the probe still finds what follows.
        let mut img2 = image_with(&recs, 16 * 1024);
        for x in &mut img2[second..second + 32] {
            *x = 0;
        }
        let s2 = scan(&img2, 16 * 1024);
        assert_eq!(s2.reason, StopReason::End);
        assert_eq!(s2.valid_after, Some((second + recs[1].len()) as u64));
    }

    #[test]
    fn markers_scan_like_records() {
        let mut buf = Vec::new();
        encode_into(&mut buf, 1, Term(1), LogIndex(1), b"a");
        encode_into(&mut buf, KIND_TAIL_MARKER, Term(1), LogIndex(0), b"");
        let img = image_with(&[buf], 8192);
        let s = scan(&img, 8192);
        assert_eq!(s.records.len(), 2);
        assert!(s.records[1].1.is_marker());
    }

    #[test]
    fn nonzero_end_finds_the_last_set_byte() {
        assert_eq!(nonzero_end(&[0; 10]), 0);
        assert_eq!(nonzero_end(&[0, 1, 0, 2, 0, 0]), 4);
    }
}
