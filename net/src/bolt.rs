//! The bbolt file format (etcd's backend, `go.etcd.io/bbolt` format version 2): its layout,
//! drawn below, and the codecs of its fixed-size parts (page header, branch and leaf elements,
//! bucket header, meta). [`reader`] reads etcd's files for `ballast snapshot restore`;
//! [`writer`] builds the files `Maintenance.Snapshot` sends. Both take every offset and
//! constant from here, so they cannot disagree on one. What etcd keeps in the buckets is
//! `snapshot/layout.rs`.
//!
//! # Format (little-endian; every page `page_size` bytes, page `n` at offset `n * page_size`)
//!
//! ```text
//! page header (16 bytes)  id:u64 flags:u16 count:u16 overflow:u32
//!                         flags: 0x01 branch, 0x02 leaf, 0x04 meta, 0x10 freelist;
//!                         a node larger than a page takes 1 + overflow contiguous pages
//! meta (pages 0 and 1)    header, then magic:u32=0xED0CDAED version:u32=2 page_size:u32
//!                         flags:u32=0 root:{root_pgid:u64 sequence:u64} freelist:u64
//!                         pgid:u64 (pages in use: the high-water mark) txid:u64
//!                         checksum:u64 = FNV-1a 64 of the 56 meta bytes before it
//! freelist (page 2)       header with count = free page ids (always 0 in Ballast's files;
//!                         etcd's own files name no freelist page, `freelist` = 2^64-1, as
//!                         bbolt's `NoFreelistSync` leaves them: bbolt reads either)
//! leaf                    header, count x {flags:u32 pos:u32 ksize:u32 vsize:u32}, then each
//!                         element's key and value; pos counts from the element's own start;
//!                         flags 0x01 marks a bucket (its value: root_pgid:u64 sequence:u64,
//!                         and root_pgid 0 means an inline bucket: its one leaf page follows
//!                         in the value)
//! branch                  header, count x {pos:u32 ksize:u32 pgid:u64}, then the keys: each
//!                         child's first key
//! ```
//!
//! The root bucket (named by the meta) is a tree whose leaves hold one element per top-level
//! bucket.
//!
//! The codecs check nothing but a meta's validity ([`Meta::from_page`]): the reader checks
//! every length and offset before it decodes, and the writer what it is given before it
//! encodes. A codec given too few bytes panics (a slice out of range): a bug of its caller.

pub mod reader;
pub mod writer;

/// The magic number every meta carries.
pub const MAGIC: u32 = 0xED0C_DAED;
/// bbolt's data format version, the only one it has written.
pub const FORMAT_VERSION: u32 = 2;
/// Bytes of a page header.
pub const PAGE_HEADER: usize = 16;
/// Bytes of one element: branch and leaf elements are the same size.
pub const ELEMENT: usize = 16;
/// Bytes of a meta, its checksum included.
pub const META_BYTES: usize = 64;
/// The meta bytes its checksum covers: all before it.
const META_CHECKSUMMED: usize = META_BYTES - 8;
pub const FLAG_BRANCH: u16 = 0x01;
pub const FLAG_LEAF: u16 = 0x02;
pub const FLAG_META: u16 = 0x04;
pub const FLAG_FREELIST: u16 = 0x10;
/// A leaf element's flag: its value is a nested bucket's header.
pub const BUCKET_LEAF_FLAG: u32 = 0x01;
/// Bytes of a bucket header, the start of a bucket's value.
pub const BUCKET_HEADER: usize = 16;

pub fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}
pub fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
pub fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// FNV-1a 64, bbolt's meta checksum.
pub fn fnv1a64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Where element `i` of a node starts.
pub const fn element_at(i: usize) -> usize {
    PAGE_HEADER + i * ELEMENT
}

/// A page header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageHeader {
    pub id: u64,
    pub flags: u16,
    /// Elements (free page ids on the freelist page).
    pub count: u16,
    /// Pages after this one that the node also takes.
    pub overflow: u32,
}

impl PageHeader {
    /// The header at the start of `page`.
    pub fn read(page: &[u8]) -> PageHeader {
        PageHeader {
            id: u64_at(page, 0),
            flags: u16_at(page, 8),
            count: u16_at(page, 10),
            overflow: u32_at(page, 12),
        }
    }

    pub fn write(&self, page: &mut [u8]) {
        page[0..8].copy_from_slice(&self.id.to_le_bytes());
        page[8..10].copy_from_slice(&self.flags.to_le_bytes());
        page[10..12].copy_from_slice(&self.count.to_le_bytes());
        page[12..16].copy_from_slice(&self.overflow.to_le_bytes());
    }
}

/// A leaf element: the key starts `pos` bytes after the element's own start, the value right
/// after the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeafElement {
    /// [`BUCKET_LEAF_FLAG`] or 0.
    pub flags: u32,
    pub pos: u32,
    pub ksize: u32,
    pub vsize: u32,
}

impl LeafElement {
    /// The element at `at` of `node`.
    pub fn read(node: &[u8], at: usize) -> LeafElement {
        LeafElement {
            flags: u32_at(node, at),
            pos: u32_at(node, at + 4),
            ksize: u32_at(node, at + 8),
            vsize: u32_at(node, at + 12),
        }
    }

    pub fn write(&self, node: &mut [u8], at: usize) {
        node[at..at + 4].copy_from_slice(&self.flags.to_le_bytes());
        node[at + 4..at + 8].copy_from_slice(&self.pos.to_le_bytes());
        node[at + 8..at + 12].copy_from_slice(&self.ksize.to_le_bytes());
        node[at + 12..at + 16].copy_from_slice(&self.vsize.to_le_bytes());
    }
}

/// A branch element: a child page and its first key, `pos` bytes after the element's start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BranchElement {
    pub pos: u32,
    pub ksize: u32,
    pub pgid: u64,
}

impl BranchElement {
    /// The element at `at` of `node`.
    pub fn read(node: &[u8], at: usize) -> BranchElement {
        BranchElement {
            pos: u32_at(node, at),
            ksize: u32_at(node, at + 4),
            pgid: u64_at(node, at + 8),
        }
    }

    pub fn write(&self, node: &mut [u8], at: usize) {
        node[at..at + 4].copy_from_slice(&self.pos.to_le_bytes());
        node[at + 4..at + 8].copy_from_slice(&self.ksize.to_le_bytes());
        node[at + 8..at + 16].copy_from_slice(&self.pgid.to_le_bytes());
    }
}

/// The header a bucket's value starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BucketHeader {
    /// The bucket's root page; 0 for an inline bucket, whose leaf page follows the header.
    pub root: u64,
    /// The bucket's `NextSequence` counter (etcd does not use it).
    pub sequence: u64,
}

impl BucketHeader {
    /// The header at the start of `value`.
    pub fn read(value: &[u8]) -> BucketHeader {
        BucketHeader {
            root: u64_at(value, 0),
            sequence: u64_at(value, 8),
        }
    }

    pub fn to_bytes(self) -> [u8; BUCKET_HEADER] {
        let mut b = [0u8; BUCKET_HEADER];
        b[0..8].copy_from_slice(&self.root.to_le_bytes());
        b[8..16].copy_from_slice(&self.sequence.to_le_bytes());
        b
    }
}

/// What a meta says (the meta's `flags` and the root bucket's `sequence` are 0 when written
/// and not read).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub page_size: u32,
    /// The root bucket's root page.
    pub root: u64,
    /// The freelist's page (2^64-1 for none).
    pub freelist: u64,
    /// Pages in use: every page id in the file's trees is below it.
    pub high_water: u64,
    pub txid: u64,
}

impl Meta {
    /// Meta page `pgid` (0 or 1): `page_size` bytes, the header, this meta and its checksum.
    pub fn page(&self, pgid: u64) -> Vec<u8> {
        let mut page = vec![0u8; self.page_size as usize];
        PageHeader {
            id: pgid,
            flags: FLAG_META,
            count: 0,
            overflow: 0,
        }
        .write(&mut page);
        let mut m = Vec::with_capacity(META_BYTES);
        m.extend_from_slice(&MAGIC.to_le_bytes());
        m.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        m.extend_from_slice(&self.page_size.to_le_bytes());
        m.extend_from_slice(&0u32.to_le_bytes());
        m.extend_from_slice(&self.root.to_le_bytes());
        m.extend_from_slice(&0u64.to_le_bytes());
        m.extend_from_slice(&self.freelist.to_le_bytes());
        m.extend_from_slice(&self.high_water.to_le_bytes());
        m.extend_from_slice(&self.txid.to_le_bytes());
        let sum = fnv1a64(&m);
        m.extend_from_slice(&sum.to_le_bytes());
        page[PAGE_HEADER..PAGE_HEADER + META_BYTES].copy_from_slice(&m);
        page
    }

    /// Decodes the meta in `page` (its first [`PAGE_HEADER`] + [`META_BYTES`] bytes at least):
    /// `Err` says why it is not valid.
    pub fn from_page(page: &[u8]) -> Result<Meta, String> {
        if page.len() < PAGE_HEADER + META_BYTES {
            return Err("short page".into());
        }
        let m = &page[PAGE_HEADER..PAGE_HEADER + META_BYTES];
        if u32_at(m, 0) != MAGIC {
            return Err("bad magic".into());
        }
        if u32_at(m, 4) != FORMAT_VERSION {
            return Err(format!("format version {}, not 2", u32_at(m, 4)));
        }
        if PageHeader::read(page).flags & FLAG_META == 0 {
            return Err("page is not a meta page".into());
        }
        if fnv1a64(&m[..META_CHECKSUMMED]) != u64_at(m, META_CHECKSUMMED) {
            return Err("checksum mismatch".into());
        }
        Ok(Meta {
            page_size: u32_at(m, 8),
            root: u64_at(m, 16),
            freelist: u64_at(m, 32),
            high_water: u64_at(m, 40),
            txid: u64_at(m, 48),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The offsets of the drawing, byte by byte: a codec that moved a field fails here even
    /// when its encoder and decoder moved it alike.
    #[test]
    fn codecs_put_every_field_where_the_drawing_does() {
        let mut page = vec![0u8; 64];
        PageHeader {
            id: 0x0102_0304_0506_0708,
            flags: FLAG_LEAF,
            count: 3,
            overflow: 9,
        }
        .write(&mut page);
        assert_eq!(page[..16], [8, 7, 6, 5, 4, 3, 2, 1, 2, 0, 3, 0, 9, 0, 0, 0]);
        let leaf = LeafElement {
            flags: BUCKET_LEAF_FLAG,
            pos: 0x20,
            ksize: 5,
            vsize: 0x0100,
        };
        leaf.write(&mut page, element_at(1));
        assert_eq!(element_at(1), 32);
        assert_eq!(
            page[32..48],
            [1, 0, 0, 0, 0x20, 0, 0, 0, 5, 0, 0, 0, 0, 1, 0, 0]
        );
        assert_eq!(LeafElement::read(&page, 32), leaf);
        let branch = BranchElement {
            pos: 0x30,
            ksize: 7,
            pgid: 0x0a0b,
        };
        branch.write(&mut page, element_at(2));
        assert_eq!(
            page[48..64],
            [0x30, 0, 0, 0, 7, 0, 0, 0, 0x0b, 0x0a, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(BranchElement::read(&page, 48), branch);
        let bucket = BucketHeader {
            root: 5,
            sequence: 6,
        };
        assert_eq!(
            bucket.to_bytes(),
            [5, 0, 0, 0, 0, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(BucketHeader::read(&bucket.to_bytes()), bucket);
    }

    #[test]
    fn a_meta_page_reads_back_and_each_damage_has_its_reason() {
        let meta = Meta {
            page_size: 4096,
            root: 7,
            freelist: 2,
            high_water: 11,
            txid: 1,
        };
        let page = meta.page(1);
        assert_eq!(page.len(), 4096);
        assert_eq!(PageHeader::read(&page).id, 1);
        assert_eq!(PageHeader::read(&page).flags, FLAG_META);
        let m = &page[PAGE_HEADER..PAGE_HEADER + META_BYTES];
        let words: Vec<u64> = (16..64).step_by(8).map(|at| u64_at(m, at)).collect();
        assert_eq!(
            (u32_at(m, 0), u32_at(m, 4), u32_at(m, 8), u32_at(m, 12)),
            (0xED0C_DAED, 2, 4096, 0)
        );
        assert_eq!(words[..5], [7, 0, 2, 11, 1]);
        assert_eq!(words[5], fnv1a64(&m[..56]));
        assert_eq!(Meta::from_page(&page), Ok(meta));

        let damaged = |at: usize, xor: u8| {
            let mut p = page.clone();
            p[at] ^= xor;
            Meta::from_page(&p).expect_err("damaged")
        };
        assert_eq!(damaged(PAGE_HEADER, 1), "bad magic");
        assert_eq!(damaged(PAGE_HEADER + 4, 1), "format version 3, not 2");
        assert_eq!(damaged(8, FLAG_META as u8), "page is not a meta page");
        assert_eq!(damaged(PAGE_HEADER + 20, 1), "checksum mismatch");
        assert_eq!(
            Meta::from_page(&page[..79]).expect_err("short"),
            "short page"
        );
    }
}
