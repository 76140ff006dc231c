//! The page: the unit of the page log. Owns the byte layout of one 4 KiB page (header + body)
//! and the pure function pair [`encode_page`] / [`decode_page`]. Layout is drawn in
//! `docs/storage-format.md` ("Page log"). [`check`] holds the reference model both are checked
//! against (the `page` fuzz target and a seeded test).
//!
//! Invariants:
//! - Every page is exactly [`PAGE_SIZE`] bytes; bytes `[4, PAGE_SIZE)` are covered by the
//!   crc32c in bytes `[0, 4)`, so padding is checked too.
//! - A page names its own location ([`PageId`]); a page read from somewhere else is refused,
//!   which catches misdirected writes and reads.
//! - Encoding is canonical: a page body is lz4-compressed exactly when its plain form does not
//!   fit in [`BODY_MAX`]. For an uncompressed page, `decode` returns `Ok` only for bytes that
//!   `encode` reproduces exactly. For a compressed page the round trip is on content
//!   (`decode(encode(decode(b))) == decode(b)`): requiring byte equality would tie old pages to
//!   one lz4 encoder's choices and make a dependency upgrade refuse valid data. The one
//!   exception: a block from another lz4 writer can be smaller than ours for the same body, so
//!   `encode` may answer `TooLarge` for a page that decoded; whoever rewrites a node unchanged
//!   (the cleaner, or a tree reopened with lz4 off) must be ready to split it.
//! - `decode` never panics, whatever the input.

use std::rc::Rc;

/// The reference model (file `btree/check.rs`; it also checks the superblock slot decoder).
#[path = "check.rs"]
pub mod check;

/// Size of every page, on disk and in the cache's accounting.
pub const PAGE_SIZE: usize = 4096;
const _: () = assert!(PAGE_SIZE == crate::io::ALIGN);
const _: () = assert!(PAGE_SIZE.is_multiple_of(4096));
/// Bytes of the page header.
pub const HEADER_SIZE: usize = 32;
/// Room for the body of one page (plain or compressed).
pub const BODY_MAX: usize = PAGE_SIZE - HEADER_SIZE;
/// Largest plain body of a compressed node page (bounds the memory one node takes).
pub const LOGICAL_BODY_MAX: usize = 4 * PAGE_SIZE;
/// Largest key (bytes). Chosen so that any two entries fit in one page, which is what makes a
/// split always produce pages that fit.
pub const MAX_KEY_LEN: usize = 2000;
/// Largest encoded leaf entry; larger values go to overflow pages.
pub const MAX_ENTRY: usize = BODY_MAX / 2;
const _: () = assert!(LEAF_ENTRY_FIXED + MAX_KEY_LEN + OVERFLOW_REF_SIZE <= MAX_ENTRY);
const _: () = assert!(BRANCH_ENTRY_FIXED + MAX_KEY_LEN <= MAX_ENTRY);
/// Bytes of a leaf entry besides its key and value: key length (u16) and value tag (u8).
pub const LEAF_ENTRY_FIXED: usize = 3;
/// Bytes of an inline value's length prefix.
pub const INLINE_LEN_SIZE: usize = 4;
/// Bytes of an overflow reference: first page (u64), page count (u32), value length (u32).
pub const OVERFLOW_REF_SIZE: usize = 16;
/// Bytes of a branch entry besides its separator key: key length (u16) and child id (u64).
pub const BRANCH_ENTRY_FIXED: usize = 10;
/// Bytes an overflow head page spends before its data: key length (u16), value length (u32).
const OVERFLOW_HEAD_FIXED: usize = 6;

const KIND_LEAF: u8 = 1;
const KIND_BRANCH: u8 = 2;
const KIND_OVERFLOW_HEAD: u8 = 3;
const KIND_OVERFLOW_TAIL: u8 = 4;
const FLAG_LZ4: u8 = 1;
const TAG_INLINE: u8 = 0;
const TAG_OVERFLOW: u8 = 1;

/// Location of a page in the page log: segment id in the high 32 bits, page index inside the
/// segment in the low 32. Segment ids start at 1 and are never reused, so a `PageId` names one
/// page version forever and 0 is never a valid page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PageId(pub u64);

impl PageId {
    pub fn new(segment: u32, index: u32) -> Self {
        PageId((u64::from(segment) << 32) | u64::from(index))
    }
    pub fn segment(self) -> u32 {
        (self.0 >> 32) as u32
    }
    pub fn index(self) -> u32 {
        self.0 as u32
    }
    /// Byte offset of the page inside its segment file.
    pub fn offset(self) -> u64 {
        u64::from(self.index()) * PAGE_SIZE as u64
    }
    /// The page `n` places after this one in the same segment.
    pub fn plus(self, n: u32) -> Self {
        PageId::new(self.segment(), self.index() + n)
    }
}

impl std::fmt::Display for PageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.segment(), self.index())
    }
}

/// Where a large value lives: `pages` consecutive overflow pages starting at `first`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverflowRef {
    pub first: PageId,
    pub pages: u32,
    pub len: u32,
}

/// A leaf entry's value. `Pending` exists only in memory: a large value inserted since the last
/// checkpoint, written to overflow pages by the next one; encoding refuses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Inline(Vec<u8>),
    Overflow(OverflowRef),
    Pending(Rc<[u8]>),
}

impl Value {
    /// Bytes this value takes in an encoded leaf entry.
    pub fn encoded_len(&self) -> usize {
        match self {
            Value::Inline(v) => INLINE_LEN_SIZE + v.len(),
            Value::Overflow(_) | Value::Pending(_) => OVERFLOW_REF_SIZE,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: Vec<u8>,
    pub value: Value,
}

impl Entry {
    pub fn encoded_len(&self) -> usize {
        LEAF_ENTRY_FIXED + self.key.len() + self.value.encoded_len()
    }
}

/// A child pointer of a branch. `Dirty` exists only in memory: a node changed since the last
/// checkpoint, held in the tree's dirty arena under that id; encoding refuses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Child {
    Page(PageId),
    Dirty(u64),
}

/// Leaf node: entries in strictly ascending key order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leaf {
    pub entries: Vec<Entry>,
}

/// Branch node: `children.len() == keys.len() + 1`; child `i` holds keys in
/// `[keys[i-1], keys[i])` (unbounded at the ends). `level` is 1 above leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Branch {
    pub level: u16,
    pub keys: Vec<Vec<u8>>,
    pub children: Vec<Child>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Leaf(Leaf),
    Branch(Branch),
}

impl Node {
    pub fn level(&self) -> u16 {
        match self {
            Node::Leaf(_) => 0,
            Node::Branch(b) => b.level,
        }
    }

    /// Length of the plain (uncompressed) body.
    pub fn body_len(&self) -> usize {
        match self {
            Node::Leaf(l) => l.entries.iter().map(Entry::encoded_len).sum(),
            Node::Branch(b) => {
                8 + b
                    .keys
                    .iter()
                    .map(|k| BRANCH_ENTRY_FIXED + k.len())
                    .sum::<usize>()
            }
        }
    }

    /// The key the cleaner uses to find this node from the root: any key inside the node's
    /// range. A leaf's first key, a branch's first separator; `None` for an empty leaf or a
    /// single-child branch (only ever a root).
    pub fn probe_key(&self) -> Option<&[u8]> {
        match self {
            Node::Leaf(l) => l.entries.first().map(|e| e.key.as_slice()),
            Node::Branch(b) => b.keys.first().map(Vec::as_slice),
        }
    }
}

/// One decoded page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageBody {
    Node(Node),
    /// First page of a large value's run: the owning key (for the cleaner), the value's total
    /// length, the run's page count, and the first chunk of the value.
    OverflowHead {
        key: Vec<u8>,
        value_len: u32,
        pages: u32,
        data: Vec<u8>,
    },
    /// Page `index` (>= 1) of a run.
    OverflowTail {
        index: u32,
        data: Vec<u8>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub id: PageId,
    /// Which logical tree of the page log the page belongs to.
    pub tree: u8,
    pub body: PageBody,
}

/// Why bytes are not a valid page.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PageError {
    #[error("page {page}: checksum mismatch (stored {expected:#010x}, computed {actual:#010x})")]
    ChecksumMismatch {
        page: PageId,
        expected: u32,
        actual: u32,
    },
    #[error("page {page}: malformed ({reason})")]
    Malformed { page: PageId, reason: &'static str },
    #[error("page {page}: found page {found} there (misdirected write or read)")]
    Misplaced { page: PageId, found: PageId },
}

/// Why a page cannot be encoded (a caller bug, or a node that does not fit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    #[error("node body of {len} bytes does not fit in a page")]
    TooLarge { len: usize },
    #[error("node holds in-memory state (dirty child or pending value)")]
    NotDurable,
    #[error("overflow data of {len} bytes does not fit in a page")]
    ChunkTooLarge { len: usize },
}

/// Number of pages a value of `value_len` bytes owned by a key of `key_len` bytes takes.
pub fn overflow_pages(key_len: usize, value_len: usize) -> u32 {
    let head = BODY_MAX - OVERFLOW_HEAD_FIXED - key_len;
    if value_len <= head {
        1
    } else {
        (1 + (value_len - head).div_ceil(BODY_MAX)) as u32
    }
}

/// Bytes of the value stored in the head page of a run.
pub fn overflow_head_chunk(key_len: usize, value_len: usize) -> usize {
    value_len.min(BODY_MAX - OVERFLOW_HEAD_FIXED - key_len)
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// The plain body of a node.
fn node_body(node: &Node) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(node.body_len());
    match node {
        Node::Leaf(l) => {
            for e in &l.entries {
                put_u16(&mut out, e.key.len() as u16);
                out.extend_from_slice(&e.key);
                match &e.value {
                    Value::Inline(v) => {
                        out.push(TAG_INLINE);
                        put_u32(&mut out, v.len() as u32);
                        out.extend_from_slice(v);
                    }
                    Value::Overflow(r) => {
                        out.push(TAG_OVERFLOW);
                        put_u64(&mut out, r.first.0);
                        put_u32(&mut out, r.pages);
                        put_u32(&mut out, r.len);
                    }
                    Value::Pending(_) => return Err(EncodeError::NotDurable),
                }
            }
        }
        Node::Branch(b) => {
            let child = |c: &Child| match c {
                Child::Page(p) => Ok(p.0),
                Child::Dirty(_) => Err(EncodeError::NotDurable),
            };
            put_u64(&mut out, child(&b.children[0])?);
            for (k, c) in b.keys.iter().zip(&b.children[1..]) {
                put_u16(&mut out, k.len() as u16);
                out.extend_from_slice(k);
                put_u64(&mut out, child(c)?);
            }
        }
    }
    debug_assert_eq!(out.len(), node.body_len());
    Ok(out)
}

/// Whether `node` fits in one page, compressing when `lz4` allows it.
pub fn node_fits(node: &Node, lz4: bool) -> bool {
    let len = node.body_len();
    if len <= BODY_MAX {
        return true;
    }
    if !lz4 || len > LOGICAL_BODY_MAX {
        return false;
    }
    // Pending values and dirty children encode to the same size as their durable forms, so
    // measuring a durable stand-in is exact.
    let plain = match node_body(node) {
        Ok(b) => b,
        Err(_) => node_body(&durable_stand_in(node)).expect("stand-in is durable"),
    };
    lz4_flex::block::compress(&plain).len() <= BODY_MAX
}

/// A copy of `node` with every in-memory pointer replaced by a same-sized durable one.
fn durable_stand_in(node: &Node) -> Node {
    match node {
        Node::Leaf(l) => Node::Leaf(Leaf {
            entries: l
                .entries
                .iter()
                .map(|e| Entry {
                    key: e.key.clone(),
                    value: match &e.value {
                        Value::Pending(v) => Value::Overflow(OverflowRef {
                            first: PageId(u64::MAX),
                            pages: 0,
                            len: v.len() as u32,
                        }),
                        v => v.clone(),
                    },
                })
                .collect(),
        }),
        Node::Branch(b) => Node::Branch(Branch {
            level: b.level,
            keys: b.keys.clone(),
            children: b
                .children
                .iter()
                .map(|c| match c {
                    Child::Dirty(d) => Child::Page(PageId(*d)),
                    c => *c,
                })
                .collect(),
        }),
    }
}

/// Encodes one page. Node bodies are compressed when (and only when) `lz4` is set and the plain
/// body does not fit.
pub fn encode_page(page: &Page, lz4: bool) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(PAGE_SIZE);
    encode_page_into(page, lz4, &mut out)?;
    Ok(out)
}

/// [`encode_page`], appending the page's [`PAGE_SIZE`] bytes to `out` (a checkpoint's write
/// run); on an error `out` is left as it was.
pub fn encode_page_into(page: &Page, lz4: bool, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let (kind, level, count, plain) = match &page.body {
        PageBody::Node(node) => {
            let body = node_body(node)?;
            match node {
                Node::Leaf(l) => (KIND_LEAF, 0u16, l.entries.len() as u32, body),
                Node::Branch(b) => (KIND_BRANCH, b.level, b.children.len() as u32, body),
            }
        }
        PageBody::OverflowHead {
            key,
            value_len,
            pages,
            data,
        } => {
            let mut b = Vec::with_capacity(OVERFLOW_HEAD_FIXED + key.len() + data.len());
            put_u16(&mut b, key.len() as u16);
            b.extend_from_slice(key);
            put_u32(&mut b, *value_len);
            b.extend_from_slice(data);
            if b.len() > BODY_MAX {
                return Err(EncodeError::ChunkTooLarge { len: data.len() });
            }
            (KIND_OVERFLOW_HEAD, 0, *pages, b)
        }
        PageBody::OverflowTail { index, data } => {
            if data.len() > BODY_MAX {
                return Err(EncodeError::ChunkTooLarge { len: data.len() });
            }
            (KIND_OVERFLOW_TAIL, 0, *index, data.clone())
        }
    };
    let is_node = matches!(page.body, PageBody::Node(_));
    let plain_len = plain.len();
    let (flags, stored) = if plain_len <= BODY_MAX {
        (0u8, plain)
    } else if lz4 && is_node && plain_len <= LOGICAL_BODY_MAX {
        let c = lz4_flex::block::compress(&plain);
        if c.len() > BODY_MAX {
            return Err(EncodeError::TooLarge { len: plain_len });
        }
        (FLAG_LZ4, c)
    } else {
        return Err(EncodeError::TooLarge { len: plain_len });
    };
    let start = out.len();
    out.reserve(PAGE_SIZE);
    put_u32(out, 0);
    out.push(kind);
    out.push(flags);
    out.push(page.tree);
    out.push(0);
    put_u64(out, page.id.0);
    put_u16(out, level);
    put_u16(out, 0);
    put_u32(out, count);
    put_u32(out, stored.len() as u32);
    put_u32(out, plain_len as u32);
    debug_assert_eq!(out.len() - start, HEADER_SIZE);
    out.extend_from_slice(&stored);
    out.resize(start + PAGE_SIZE, 0);
    let page_bytes = &mut out[start..];
    let crc = crc32c::crc32c(&page_bytes[4..]);
    page_bytes[0..4].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// A bounds-checked little-endian reader over a body.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
    fn done(&self) -> bool {
        self.pos == self.buf.len()
    }
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// Decodes and verifies one page read from location `at`. Checks, in order: size, checksum,
/// location, then every structural rule (see the module doc).
pub fn decode_page(at: PageId, bytes: &[u8]) -> Result<Page, PageError> {
    let bad = |reason| PageError::Malformed { page: at, reason };
    if bytes.len() != PAGE_SIZE {
        return Err(bad("not one page long"));
    }
    let expected = le32(bytes, 0);
    let actual = crc32c::crc32c(&bytes[4..]);
    if expected != actual {
        return Err(PageError::ChecksumMismatch {
            page: at,
            expected,
            actual,
        });
    }
    let (kind, flags, tree, reserved) = (bytes[4], bytes[5], bytes[6], bytes[7]);
    let id = PageId(u64::from_le_bytes(
        bytes[8..16].try_into().expect("8 bytes"),
    ));
    if id != at {
        return Err(PageError::Misplaced {
            page: at,
            found: id,
        });
    }
    let level = u16::from_le_bytes([bytes[16], bytes[17]]);
    let reserved2 = u16::from_le_bytes([bytes[18], bytes[19]]);
    let count = le32(bytes, 20);
    let stored_len = le32(bytes, 24) as usize;
    let plain_len = le32(bytes, 28) as usize;
    if reserved != 0 || reserved2 != 0 {
        return Err(bad("reserved header bytes are not zero"));
    }
    if usize::from(tree) >= super::MAX_TREES {
        return Err(bad("tree number out of range"));
    }
    if stored_len > BODY_MAX {
        return Err(bad("body length exceeds the page"));
    }
    if bytes[HEADER_SIZE + stored_len..].iter().any(|&b| b != 0) {
        return Err(bad("padding is not zero"));
    }
    let stored = &bytes[HEADER_SIZE..HEADER_SIZE + stored_len];
    let decompressed;
    let plain: &[u8] = match flags {
        0 => {
            if plain_len != stored_len {
                return Err(bad("plain length differs from stored length"));
            }
            stored
        }
        FLAG_LZ4 => {
            if kind != KIND_LEAF && kind != KIND_BRANCH {
                return Err(bad("only node pages are compressed"));
            }
            if plain_len <= BODY_MAX || plain_len > LOGICAL_BODY_MAX {
                return Err(bad("compressed body length out of range"));
            }
            let mut buf = vec![0u8; plain_len];
            match lz4_flex::block::decompress_into(stored, &mut buf) {
                Ok(n) if n == plain_len => {}
                _ => return Err(bad("lz4 body does not decompress to its length")),
            }
            decompressed = buf;
            &decompressed
        }
        _ => return Err(bad("unknown flags")),
    };
    let mut r = Reader { buf: plain, pos: 0 };
    let body = match kind {
        KIND_LEAF => {
            if level != 0 {
                return Err(bad("leaf with a level"));
            }
            let mut entries: Vec<Entry> = Vec::new();
            for _ in 0..count {
                let klen = usize::from(r.u16().ok_or(bad("truncated leaf entry"))?);
                if klen > MAX_KEY_LEN {
                    return Err(bad("key too long"));
                }
                let key = r.take(klen).ok_or(bad("truncated key"))?.to_vec();
                if let Some(prev) = entries.last() {
                    if prev.key >= key {
                        return Err(bad("leaf keys not ascending"));
                    }
                }
                let value = match r.u8().ok_or(bad("truncated value tag"))? {
                    TAG_INLINE => {
                        let vlen = r.u32().ok_or(bad("truncated value"))? as usize;
                        Value::Inline(r.take(vlen).ok_or(bad("truncated value"))?.to_vec())
                    }
                    TAG_OVERFLOW => {
                        let first = PageId(r.u64().ok_or(bad("truncated overflow ref"))?);
                        let pages = r.u32().ok_or(bad("truncated overflow ref"))?;
                        let len = r.u32().ok_or(bad("truncated overflow ref"))?;
                        if first.segment() == 0
                            || pages != overflow_pages(key.len(), len as usize)
                            || first.index().checked_add(pages).is_none()
                        {
                            return Err(bad("inconsistent overflow ref"));
                        }
                        Value::Overflow(OverflowRef { first, pages, len })
                    }
                    _ => return Err(bad("unknown value tag")),
                };
                entries.push(Entry { key, value });
            }
            PageBody::Node(Node::Leaf(Leaf { entries }))
        }
        KIND_BRANCH => {
            if level == 0 {
                return Err(bad("branch at level 0"));
            }
            if count == 0 {
                return Err(bad("branch without children"));
            }
            let child = |r: &mut Reader| -> Result<Child, PageError> {
                let p = PageId(r.u64().ok_or(bad("truncated child"))?);
                if p.segment() == 0 {
                    return Err(bad("child page id in segment 0"));
                }
                Ok(Child::Page(p))
            };
            let mut children = vec![child(&mut r)?];
            let mut keys: Vec<Vec<u8>> = Vec::new();
            for _ in 1..count {
                let klen = usize::from(r.u16().ok_or(bad("truncated separator"))?);
                if klen > MAX_KEY_LEN {
                    return Err(bad("separator too long"));
                }
                let key = r.take(klen).ok_or(bad("truncated separator"))?.to_vec();
                if keys.last().is_some_and(|prev| *prev >= key) {
                    return Err(bad("separators not ascending"));
                }
                keys.push(key);
                children.push(child(&mut r)?);
            }
            PageBody::Node(Node::Branch(Branch {
                level,
                keys,
                children,
            }))
        }
        KIND_OVERFLOW_HEAD => {
            let klen = usize::from(r.u16().ok_or(bad("truncated overflow head"))?);
            if klen > MAX_KEY_LEN {
                return Err(bad("key too long"));
            }
            let key = r.take(klen).ok_or(bad("truncated overflow head"))?.to_vec();
            let value_len = r.u32().ok_or(bad("truncated overflow head"))?;
            if count != overflow_pages(klen, value_len as usize) || level != 0 {
                return Err(bad("overflow head page count inconsistent"));
            }
            let chunk = overflow_head_chunk(klen, value_len as usize);
            let data = r
                .take(chunk)
                .ok_or(bad("truncated overflow data"))?
                .to_vec();
            PageBody::OverflowHead {
                key,
                value_len,
                pages: count,
                data,
            }
        }
        KIND_OVERFLOW_TAIL => {
            if count == 0 || level != 0 || plain.is_empty() {
                return Err(bad("overflow tail index or length invalid"));
            }
            r.pos = plain.len();
            PageBody::OverflowTail {
                index: count,
                data: plain.to_vec(),
            }
        }
        _ => return Err(bad("unknown page kind")),
    };
    if !r.done() {
        return Err(bad("trailing bytes in body"));
    }
    Ok(Page { id, tree, body })
}
