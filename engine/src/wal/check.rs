//! The WAL decoders checked against a reference model, for any input bytes: shared by the
//! `cargo fuzz` target `wal_record` (engine/fuzz) and by a seeded property test that runs in
//! plain `cargo test`. [`check`] panics when the decoders disagree with the model.
//!
//! The input is read two ways:
//! 1. as raw bytes: `record::decode`, `SegmentHeader::decode` and `vote::decode_slot` must not
//!    panic, and whatever they accept must re-encode to exactly the bytes they read (the
//!    encodings are canonical);
//! 2. as a recipe: a list of records (kind, term, index, payload) laid out in a segment, then
//!    one damage (none, a flipped byte, a cut-off file). The model says, from the byte ranges
//!    alone, which records `segment::scan` must return and where it must stop:
//!    - no damage: every record, stop at their end, nothing valid after;
//!    - a byte flipped inside record k: records before k, stop at k's start, and the first
//!      valid record after it no later than record k+1's start;
//!    - a byte flipped in the zeros after the records: every record, stop at their end;
//!    - the image cut at x: the records that end by x, stop at the first one that does not.

use super::record::{self, decode, Decoded, ENTRY_KIND_MAX, KIND_TAIL_MARKER};
use super::segment::{scan, SegmentHeader, StopReason, SEGMENT_HEADER_BYTES};
use super::vote;
use super::{LogId, LogIndex, Term};

/// Reads the input front to back; past the end it yields zeros.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u64(&mut self) -> u64 {
        (0..8).fold(0u64, |acc, i| acc | (u64::from(self.u8()) << (8 * i)))
    }
}

fn raw_roundtrips(data: &[u8]) {
    if let Decoded::Record(r) = decode(data) {
        let again = record::encode(r.kind, r.term, r.index, r.payload);
        assert_eq!(
            &data[..r.size()],
            &again[..],
            "a decoded record re-encodes to its bytes"
        );
    }
    if data.len() >= SEGMENT_HEADER_BYTES {
        if let Ok(h) = SegmentHeader::decode(data) {
            assert_eq!(
                &h.encode()[..],
                &data[..SEGMENT_HEADER_BYTES],
                "header roundtrip"
            );
        }
    }
    if data.len() >= vote::VOTE_SLOT_BYTES {
        if let Ok((seq, v)) = vote::decode_slot(data) {
            assert_eq!(
                &vote::encode_slot(seq, &v)[..],
                &data[..vote::VOTE_SLOT_BYTES],
                "vote slot roundtrip"
            );
        }
    }
}

/// Checks the decoders on `data` (see the module comment); panics on a disagreement.
pub fn check(data: &[u8]) {
    raw_roundtrips(data);

    let mut input = Input(data);
    let n = usize::from(input.u8() % 12);
    let mut image = SegmentHeader {
        seq: 1,
        prev: LogId::ZERO,
        segment_bytes: 0,
    }
    .encode();
    let mut ranges = Vec::with_capacity(n);
    for _ in 0..n {
        let k = input.u8();
        let kind = if k & 0x80 != 0 {
            KIND_TAIL_MARKER
        } else {
            1 + k % ENTRY_KIND_MAX
        };
        let (term, index) = (input.u64(), input.u64());
        let len = usize::from(input.u16() % 700);
        let payload: Vec<u8> = (0..len).map(|_| input.u8()).collect();
        let start = image.len();
        record::encode_into(&mut image, kind, Term(term), LogIndex(index), &payload);
        ranges.push((start, image.len(), kind, term, index, payload));
    }
    let records_end = image.len();
    let segment_bytes = (records_end + 64).div_ceil(4096) * 4096;
    image.resize(segment_bytes, 0);

    let damage = input.u8() % 3;
    let pos = usize::from(input.u16());
    let mask = input.u8() | 1;
    let (expect_records, expect_stop, valid_after_bound): (usize, usize, Option<Option<usize>>) =
        match damage {
            // A flipped byte somewhere in the record area or the zeros after it.
            1 => {
                let at = SEGMENT_HEADER_BYTES + pos % (segment_bytes - SEGMENT_HEADER_BYTES);
                image[at] ^= mask;
                match ranges.iter().position(|r| r.0 <= at && at < r.1) {
                    Some(k) => {
                        let next = ranges.get(k + 1).map(|r| r.0);
                        (k, ranges[k].0, Some(next))
                    }
                    None => (n, records_end, None),
                }
            }
            // The file cut short at a sector boundary (a short read of the segment).
            2 => {
                let cut = SEGMENT_HEADER_BYTES + pos % (segment_bytes - SEGMENT_HEADER_BYTES);
                image.truncate(cut);
                let whole = ranges.iter().take_while(|r| r.1 <= cut).count();
                let stop = ranges.get(whole).map_or(records_end.min(cut), |r| r.0);
                (whole, stop, None)
            }
            _ => (n, records_end, Some(None)),
        };

    let s = scan(&image, segment_bytes as u64);
    assert_eq!(s.records.len(), expect_records, "records before the damage");
    for ((off, r), want) in s.records.iter().zip(&ranges) {
        assert_eq!(*off as usize, want.0);
        assert_eq!((r.kind, r.term.0, r.index.0), (want.2, want.3, want.4));
        assert_eq!(r.payload, &want.5[..]);
    }
    assert_eq!(s.stop as usize, expect_stop, "where the scan stops");
    if expect_records < n && damage == 1 {
        assert!(
            matches!(s.reason, StopReason::Invalid(_)),
            "a damaged record is invalid, not an end: {:?}",
            s.reason
        );
    }
    match valid_after_bound {
        // Undamaged: nothing valid after the end.
        Some(None) if damage == 0 => assert_eq!(s.valid_after, None, "valid data after the end"),
        // Damaged record k: the next record (if any) is found, maybe an embedded one earlier.
        Some(Some(next)) => {
            let found = s.valid_after.expect("the record after the damage is found") as usize;
            assert!(
                found > expect_stop && found <= next,
                "valid_after {found}, next {next}"
            );
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::sim::SimRng;

    /// The fuzz target's check on seeded random inputs, so it runs without cargo-fuzz.
    #[test]
    fn decoders_agree_with_the_model_on_seeded_inputs() {
        let mut rng = SimRng::new(0xDEC0DE);
        for round in 0..3000 {
            let len = rng.below(3000) as usize;
            let mut data: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            // Steer a third of the inputs to each damage kind.
            if let Some(b) = data.get_mut(0) {
                *b %= 8;
            }
            if round % 7 == 0 {
                // Raw inputs that start like a real record.
                let r = record::encode(1, Term(round), LogIndex(round), &data);
                check(&r);
            }
            check(&data);
        }
    }
}
