//! The superblock file: two fixed slots, each a complete description of one checkpoint (roots,
//! applied log index, revision, page-log segment table with live-page accounting). A checkpoint
//! writes the slot its sequence number selects (`sequence % 2`), so the previous checkpoint's
//! slot is untouched while the new one is written; open takes the valid slot with the highest
//! sequence. Layout is drawn in `docs/storage-format.md` ("Page log").
//!
//! Invariants: a slot is valid only if its magic, format version, length and crc32c check;
//! bytes past `len` in a slot are ignored (a shorter slot may overwrite a longer one).

use super::page::{PageId, PAGE_SIZE};
use super::MAX_TREES;

/// Format of the superblock and the pages it points to.
/// Version 1: first format (pages with a 32-byte header, 64 KiB superblock slots).
pub const FORMAT_VERSION: u16 = 1;
/// Size of one slot; the file holds two.
pub const SLOT_SIZE: usize = 64 * 1024;
const _: () = assert!(SLOT_SIZE.is_multiple_of(PAGE_SIZE));
const MAGIC: u32 = u32::from_le_bytes(*b"BLSB");
const FIXED_LEN: usize = 56;
const TREE_LEN: usize = 16;
const SEGMENT_LEN: usize = 16;
const SEGMENTS_AT: usize = FIXED_LEN + MAX_TREES * TREE_LEN;
/// Most segments a superblock can describe.
pub const MAX_SEGMENTS: usize = (SLOT_SIZE - SEGMENTS_AT) / SEGMENT_LEN;

/// One page-log segment as a checkpoint knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentInfo {
    pub id: u32,
    /// Pages the file has room for.
    pub capacity_pages: u32,
    /// Pages appended so far (the next page goes at this index).
    pub written_pages: u32,
    /// Pages the checkpoint's trees still reference.
    pub live_pages: u32,
}

/// Root and key count of one logical tree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeRoot {
    /// `None` for an empty tree.
    pub root: Option<PageId>,
    pub keys: u64,
}

/// The content of one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub sequence: u64,
    pub applied_index: u64,
    pub revision: i64,
    /// Next segment id to create (ids are never reused).
    pub next_segment: u32,
    /// The segment appends continue in (0 = none yet).
    pub active_segment: u32,
    pub trees: [TreeRoot; MAX_TREES],
    /// Sorted by id.
    pub segments: Vec<SegmentInfo>,
}

/// Why a slot is not usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotError {
    /// Never written (all zero).
    Empty,
    /// Torn or corrupt: bad magic, length or checksum.
    Invalid,
    /// Valid checksum, but written by a format this build does not read.
    Version(u16),
}

impl Superblock {
    pub fn empty() -> Self {
        Superblock {
            sequence: 0,
            applied_index: 0,
            revision: 0,
            next_segment: 1,
            active_segment: 0,
            trees: [TreeRoot::default(); MAX_TREES],
            segments: Vec::new(),
        }
    }

    /// Slot number this superblock is written to.
    pub fn slot(&self) -> usize {
        (self.sequence % 2) as usize
    }

    /// Encodes the slot, zero-padded to a multiple of the page size.
    pub fn encode(&self) -> Vec<u8> {
        assert!(
            self.segments.len() <= MAX_SEGMENTS,
            "segment table overflow"
        );
        let len = SEGMENTS_AT + self.segments.len() * SEGMENT_LEN;
        let mut out = Vec::with_capacity(len.next_multiple_of(PAGE_SIZE));
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(MAX_TREES as u16).to_le_bytes());
        out.extend_from_slice(&(len as u32).to_le_bytes());
        out.extend_from_slice(&self.sequence.to_le_bytes());
        out.extend_from_slice(&self.applied_index.to_le_bytes());
        out.extend_from_slice(&self.revision.to_le_bytes());
        out.extend_from_slice(&(PAGE_SIZE as u32).to_le_bytes());
        out.extend_from_slice(&self.next_segment.to_le_bytes());
        out.extend_from_slice(&self.active_segment.to_le_bytes());
        out.extend_from_slice(&(self.segments.len() as u32).to_le_bytes());
        debug_assert_eq!(out.len(), FIXED_LEN);
        for t in &self.trees {
            out.extend_from_slice(&t.root.map_or(0, |p| p.0).to_le_bytes());
            out.extend_from_slice(&t.keys.to_le_bytes());
        }
        for s in &self.segments {
            for v in [s.id, s.capacity_pages, s.written_pages, s.live_pages] {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        debug_assert_eq!(out.len(), len);
        let crc = crc32c::crc32c(&out[4..]);
        out[0..4].copy_from_slice(&crc.to_le_bytes());
        out.resize(len.next_multiple_of(PAGE_SIZE), 0);
        out
    }

    /// Decodes one slot's bytes (possibly shorter than a slot, when the file is short).
    pub fn decode(b: &[u8]) -> Result<Superblock, SlotError> {
        if b.iter().all(|&x| x == 0) {
            return Err(SlotError::Empty);
        }
        let u16_at = |at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
        let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"));
        let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        if b.len() < SEGMENTS_AT || u32_at(4) != MAGIC {
            return Err(SlotError::Invalid);
        }
        let len = u32_at(12) as usize;
        if !(SEGMENTS_AT..=SLOT_SIZE).contains(&len) || len > b.len() {
            return Err(SlotError::Invalid);
        }
        if crc32c::crc32c(&b[4..len]) != u32_at(0) {
            return Err(SlotError::Invalid);
        }
        let version = u16_at(8);
        if version != FORMAT_VERSION {
            return Err(SlotError::Version(version));
        }
        let count = u32_at(52) as usize;
        if usize::from(u16_at(10)) != MAX_TREES
            || u32_at(40) as usize != PAGE_SIZE
            || len != SEGMENTS_AT + count * SEGMENT_LEN
        {
            return Err(SlotError::Invalid);
        }
        let mut trees = [TreeRoot::default(); MAX_TREES];
        for (i, t) in trees.iter_mut().enumerate() {
            let at = FIXED_LEN + i * TREE_LEN;
            let root = u64_at(at);
            *t = TreeRoot {
                root: (root != 0).then_some(PageId(root)),
                keys: u64_at(at + 8),
            };
        }
        let segments = (0..count)
            .map(|i| {
                let at = SEGMENTS_AT + i * SEGMENT_LEN;
                SegmentInfo {
                    id: u32_at(at),
                    capacity_pages: u32_at(at + 4),
                    written_pages: u32_at(at + 8),
                    live_pages: u32_at(at + 12),
                }
            })
            .collect();
        Ok(Superblock {
            sequence: u64_at(16),
            applied_index: u64_at(24),
            revision: u64_at(32) as i64,
            next_segment: u32_at(44),
            active_segment: u32_at(48),
            trees,
            segments,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Superblock {
        let mut sb = Superblock::empty();
        sb.sequence = 7;
        sb.applied_index = 42;
        sb.revision = 17;
        sb.next_segment = 4;
        sb.active_segment = 3;
        sb.trees[1] = TreeRoot {
            root: Some(PageId::new(3, 9)),
            keys: 5,
        };
        sb.segments = vec![
            SegmentInfo {
                id: 2,
                capacity_pages: 64,
                written_pages: 64,
                live_pages: 10,
            },
            SegmentInfo {
                id: 3,
                capacity_pages: 64,
                written_pages: 12,
                live_pages: 12,
            },
        ];
        sb
    }

    #[test]
    fn superblock_round_trip() {
        let sb = sample();
        let bytes = sb.encode();
        assert_eq!(bytes.len() % PAGE_SIZE, 0);
        assert_eq!(Superblock::decode(&bytes), Ok(sb));
    }

    #[test]
    fn superblock_detects_every_flipped_byte_of_its_content() {
        let bytes = sample().encode();
        let len = SEGMENTS_AT + 2 * SEGMENT_LEN;
        for i in 0..len {
            let mut b = bytes.clone();
            b[i] ^= 0x20;
            assert!(Superblock::decode(&b).is_err(), "flip at {i} accepted");
        }
        assert_eq!(
            Superblock::decode(&vec![0; SLOT_SIZE]),
            Err(SlotError::Empty)
        );
    }

    #[test]
    fn superblock_torn_write_is_invalid() {
        let bytes = sample().encode();
        // A torn write keeps a prefix of sectors; the rest is stale (here: zeros).
        let mut torn = bytes.clone();
        for b in &mut torn[64..] {
            *b = 0;
        }
        assert_eq!(Superblock::decode(&torn), Err(SlotError::Invalid));
    }
}
