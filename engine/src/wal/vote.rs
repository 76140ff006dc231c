//! The vote file (`wal-vote`), sans-I/O part: Raft's term and vote in two 4 KiB slots. Each
//! save writes the slot its sequence number picks (`seq % 2`), one aligned write and one
//! `sync_data`, so a torn save damages only the slot being written and the other one still
//! holds the previous vote. At open the valid slot with the higher sequence number wins.
//!
//! Slot layout (drawn in `docs/storage-format.md`, "Vote file"):
//!
//! ```text
//! 0   8  magic "BLSTVOTE"
//! 8   4  format version (VOTE_FORMAT_VERSION) u32 LE
//! 12  4  crc32c over [0,12) then [16,48)
//! 16  8  seq u64 LE (≥ 1)
//! 24  8  term u64 LE
//! 32  8  voted_for u64 LE (0 when flags bit 0 is clear)
//! 40  1  flags: bit 0 voted_for present, bit 1 committed
//! 41  7  reserved, zero
//! 48     zero to the end of the slot
//! ```
//!
//! Invariant: the only legitimate state with no valid slot besides "never saved" (both slots
//! zero) is a torn first save: slot 1 damaged and slot 0 still zero. Anything else without a
//! valid slot is corruption.

use super::Term;
use crate::io::ALIGN;

pub const VOTE_FILE: &str = "wal-vote";
pub const VOTE_SLOT_BYTES: usize = ALIGN;
pub const VOTE_FILE_BYTES: usize = 2 * VOTE_SLOT_BYTES;
pub const VOTE_MAGIC: [u8; 8] = *b"BLSTVOTE";
/// Version of the slot layout. 1: first layout.
pub const VOTE_FORMAT_VERSION: u32 = 1;
const FIELDS_BYTES: usize = 48;

/// Raft's persistent vote: the current term, whom this node voted for in it, and whether that
/// vote is for a leader known to be committed (openraft's `Vote::committed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vote {
    pub term: Term,
    pub voted_for: Option<u64>,
    pub committed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SlotError {
    Zeroed,
    BadMagic,
    UnsupportedVersion { version: u32 },
    ChecksumMismatch { stored: u32, computed: u32 },
    BadField,
}

impl std::fmt::Display for SlotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SlotError::Zeroed => write!(f, "vote slot is all zeros"),
            SlotError::BadMagic => write!(f, "bad vote slot magic"),
            SlotError::UnsupportedVersion { version } => {
                write!(f, "unsupported vote format version {version}")
            }
            SlotError::ChecksumMismatch { stored, computed } => write!(
                f,
                "vote slot checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ),
            SlotError::BadField => write!(f, "vote slot has an invalid field"),
        }
    }
}

fn slot_crc(s: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&s[0..12]), &s[16..FIELDS_BYTES])
}

/// Which slot save number `seq` goes to.
pub fn slot_of(seq: u64) -> usize {
    (seq % 2) as usize
}

pub fn encode_slot(seq: u64, vote: &Vote) -> Vec<u8> {
    assert!(seq >= 1, "vote sequence numbers start at 1");
    let mut s = vec![0u8; VOTE_SLOT_BYTES];
    s[0..8].copy_from_slice(&VOTE_MAGIC);
    s[8..12].copy_from_slice(&VOTE_FORMAT_VERSION.to_le_bytes());
    s[16..24].copy_from_slice(&seq.to_le_bytes());
    s[24..32].copy_from_slice(&vote.term.0.to_le_bytes());
    s[32..40].copy_from_slice(&vote.voted_for.unwrap_or(0).to_le_bytes());
    s[40] = u8::from(vote.voted_for.is_some()) | (u8::from(vote.committed) << 1);
    let crc = slot_crc(&s);
    s[12..16].copy_from_slice(&crc.to_le_bytes());
    s
}

pub fn decode_slot(s: &[u8]) -> Result<(u64, Vote), SlotError> {
    assert!(s.len() >= VOTE_SLOT_BYTES, "a whole slot");
    let s = &s[..VOTE_SLOT_BYTES];
    if s.iter().all(|&b| b == 0) {
        return Err(SlotError::Zeroed);
    }
    if s[0..8] != VOTE_MAGIC {
        return Err(SlotError::BadMagic);
    }
    let u64_at = |at: usize| u64::from_le_bytes(s[at..at + 8].try_into().expect("8"));
    let u32_at = |at: usize| u32::from_le_bytes(s[at..at + 4].try_into().expect("4"));
    let (stored, computed) = (u32_at(12), slot_crc(s));
    if stored != computed {
        return Err(SlotError::ChecksumMismatch { stored, computed });
    }
    let version = u32_at(8);
    if version != VOTE_FORMAT_VERSION {
        return Err(SlotError::UnsupportedVersion { version });
    }
    let flags = s[40];
    let seq = u64_at(16);
    let voted = u64_at(32);
    if flags & !0b11 != 0
        || s[41..].iter().any(|&b| b != 0)
        || seq == 0
        || (flags & 1 == 0 && voted != 0)
    {
        return Err(SlotError::BadField);
    }
    Ok((
        seq,
        Vote {
            term: Term(u64_at(24)),
            voted_for: (flags & 1 == 1).then_some(voted),
            committed: flags & 2 == 2,
        },
    ))
}

/// What the two slots of a vote file say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoteFile {
    /// Never saved, or the first save was torn.
    Empty,
    Saved {
        seq: u64,
        vote: Vote,
    },
    /// No valid slot and not a torn first save: `slot` is the first damaged one.
    Corrupt {
        slot: usize,
        why: SlotError,
    },
}

/// Picks the vote from a whole file image ([`VOTE_FILE_BYTES`]).
pub fn read_vote_file(image: &[u8]) -> VoteFile {
    assert!(image.len() >= VOTE_FILE_BYTES, "a whole vote file");
    let s0 = decode_slot(&image[..VOTE_SLOT_BYTES]);
    let s1 = decode_slot(&image[VOTE_SLOT_BYTES..VOTE_FILE_BYTES]);
    match (s0, s1) {
        (Ok((q0, v0)), Ok((q1, v1))) => {
            if q0 >= q1 {
                VoteFile::Saved { seq: q0, vote: v0 }
            } else {
                VoteFile::Saved { seq: q1, vote: v1 }
            }
        }
        (Ok((seq, vote)), Err(_)) | (Err(_), Ok((seq, vote))) => VoteFile::Saved { seq, vote },
        (Err(SlotError::Zeroed), Err(_)) => VoteFile::Empty,
        (Err(why), Err(_)) => VoteFile::Corrupt { slot: 0, why },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vote(term: u64, who: Option<u64>, committed: bool) -> Vote {
        Vote {
            term: Term(term),
            voted_for: who,
            committed,
        }
    }

    fn file(slots: [Option<(u64, Vote)>; 2]) -> Vec<u8> {
        let mut img = vec![0u8; VOTE_FILE_BYTES];
        for (i, s) in slots.iter().enumerate() {
            if let Some((seq, v)) = s {
                img[i * VOTE_SLOT_BYTES..(i + 1) * VOTE_SLOT_BYTES]
                    .copy_from_slice(&encode_slot(*seq, v));
            }
        }
        img
    }

    #[test]
    fn slot_roundtrip() {
        for v in [
            vote(0, None, false),
            vote(5, Some(0), false),
            vote(u64::MAX, Some(u64::MAX), true),
        ] {
            assert_eq!(decode_slot(&encode_slot(9, &v)), Ok((9, v)));
        }
    }

    #[test]
    fn every_field_byte_flip_is_detected() {
        let s = encode_slot(3, &vote(7, Some(2), true));
        for at in 0..FIELDS_BYTES {
            let mut c = s.clone();
            c[at] ^= 0x01;
            assert!(decode_slot(&c).is_err(), "flip at {at}");
        }
    }

    #[test]
    fn the_newer_valid_slot_wins() {
        let (a, b) = (vote(1, Some(1), false), vote(2, Some(3), false));
        assert_eq!(
            read_vote_file(&file([Some((2, a)), Some((3, b))])),
            VoteFile::Saved { seq: 3, vote: b }
        );
        assert_eq!(
            read_vote_file(&file([Some((4, a)), Some((3, b))])),
            VoteFile::Saved { seq: 4, vote: a }
        );
        // The newer slot torn: the older one stands.
        let mut img = file([Some((4, a)), Some((5, b))]);
        img[VOTE_SLOT_BYTES + 30] ^= 0xff;
        assert_eq!(read_vote_file(&img), VoteFile::Saved { seq: 4, vote: a });
    }

    #[test]
    fn empty_torn_first_and_corrupt() {
        assert_eq!(read_vote_file(&file([None, None])), VoteFile::Empty);
        let mut torn = file([None, Some((1, vote(1, None, false)))]);
        torn[VOTE_SLOT_BYTES + 20] ^= 1;
        assert_eq!(read_vote_file(&torn), VoteFile::Empty);
        let mut both = file([
            Some((2, vote(1, None, false))),
            Some((1, vote(1, None, false))),
        ]);
        both[20] ^= 1;
        both[VOTE_SLOT_BYTES + 20] ^= 1;
        assert!(matches!(
            read_vote_file(&both),
            VoteFile::Corrupt { slot: 0, .. }
        ));
    }
}
