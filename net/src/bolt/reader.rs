//! A read-only reader of bbolt database files (etcd 3.4 and 3.5's backend, `go.etcd.io/bbolt`
//! format version 2), for `ballast snapshot restore`: it opens a file, picks its valid meta and
//! walks buckets in key order. It never writes. The format is drawn in `bolt.rs`, whose codecs
//! this reader decodes with; what matters for reading:
//!
//! - **Metas.** Pages 0 and 1 each hold a meta (magic `0xED0CDAED`, version 2, page size,
//!   root bucket, high-water page id, txid, FNV-1a 64 checksum of the 56 bytes before it).
//!   bbolt writes the two alternately, so a crash mid-write damages at most one: the valid
//!   meta with the higher txid is the file's state. The page size is read from meta 0; when
//!   meta 0 is damaged, meta 1 is looked for at each page size bbolt may use.
//! - **Trees.** A bucket is a B+tree: branch pages (`pos ksize pgid` elements) over leaf pages
//!   (`flags pos ksize vsize`); a leaf element with flag 1 is a nested bucket, whose value is
//!   its header `root:u64 sequence:u64`, and root 0 means an *inline* bucket: its one leaf page
//!   follows the header inside the value. A node larger than a page takes `1 + overflow`
//!   contiguous pages.
//!
//! Every number read from the file is checked before it is used (page ids below the
//! high-water mark and inside the file, a page's id field naming its place, element offsets
//! inside the node, tree depth at most [`DEPTH_MAX`]), so a damaged or truncated file gives a
//! [`BoltError`] naming the page, never a panic or an endless walk. Pages are read with
//! positional reads as the walk reaches them: memory is one node per tree level.

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::{
    element_at, u32_at, BranchElement, BucketHeader, LeafElement, Meta, PageHeader, BUCKET_HEADER,
    BUCKET_LEAF_FLAG, FLAG_BRANCH, FLAG_LEAF, MAGIC, META_BYTES, PAGE_HEADER,
};

/// Page sizes bbolt may have used (its page size is the OS page size unless set).
const PAGE_SIZES: [u32; 6] = [4096, 8192, 16384, 65536, 2048, 1024];
/// Deepest tree walked (nested buckets count their own levels): bbolt's trees are shallow
/// (a page holds many keys), so anything deeper is a damaged file (a loop of pages).
pub const DEPTH_MAX: usize = 64;
/// Largest node read (a leaf holding one huge value): bbolt's value limit.
const NODE_BYTES_MAX: u64 = 1 << 31;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BoltError {
    #[error("reading the file: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a bbolt database file ({reason})")]
    NotBolt { reason: String },
    #[error("no valid meta page (both fail their checksum or version check: {reason}); the file is damaged")]
    BadMeta { reason: String },
    #[error("page {page}: {reason}")]
    Corrupt { page: u64, reason: String },
}

pub type Result<T, E = BoltError> = std::result::Result<T, E>;

fn corrupt(page: u64, reason: impl Into<String>) -> BoltError {
    BoltError::Corrupt {
        page,
        reason: reason.into(),
    }
}

/// A bucket to walk: a tree rooted at a page, or an inline bucket's leaf (the bytes of its
/// page, copied out of the parent's value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bucket {
    Page(u64),
    Inline(Vec<u8>),
}

/// One leaf element.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// A nested bucket: `value` is its header (use [`BoltFile::bucket_of`]).
    pub is_bucket: bool,
}

/// An open bbolt file (module comment).
pub struct BoltFile {
    file: File,
    len: u64,
    meta: Meta,
}

impl BoltFile {
    /// Opens the first `len` bytes of `file` as a bbolt database (a snapshot file may carry
    /// more after them: `etcdctl snapshot save` appends a SHA-256).
    pub fn open(file: File, len: u64) -> Result<BoltFile> {
        let mut first = vec![0u8; PAGE_HEADER + META_BYTES];
        if len < first.len() as u64 {
            return Err(BoltError::NotBolt {
                reason: format!("{len} bytes, shorter than a meta page"),
            });
        }
        file.read_exact_at(&mut first, 0)?;
        let meta0 = Meta::from_page(&first);
        let page_size = match &meta0 {
            Ok(m) => m.page_size,
            Err(_) => {
                // Meta 0 damaged: find meta 1 at a page size it names itself.
                let found = PAGE_SIZES.iter().copied().find(|&ps| {
                    let mut page = vec![0u8; PAGE_HEADER + META_BYTES];
                    u64::from(ps) + page.len() as u64 <= len
                        && file.read_exact_at(&mut page, u64::from(ps)).is_ok()
                        && Meta::from_page(&page).is_ok_and(|m| m.page_size == ps)
                });
                match found {
                    Some(ps) => ps,
                    None if u32_at(&first, PAGE_HEADER) != MAGIC => {
                        return Err(BoltError::NotBolt {
                            reason: "no bbolt magic in either meta page".into(),
                        })
                    }
                    None => {
                        return Err(BoltError::BadMeta {
                            reason: format!(
                                "meta 0: {}; meta 1: not found",
                                meta0.expect_err("damaged")
                            ),
                        })
                    }
                }
            }
        };
        if !PAGE_SIZES.contains(&page_size) {
            return Err(BoltError::BadMeta {
                reason: format!("page size {page_size}"),
            });
        }
        let ps = u64::from(page_size);
        if len < 2 * ps {
            return Err(BoltError::NotBolt {
                reason: format!("{len} bytes, shorter than its two meta pages"),
            });
        }
        let mut page = vec![0u8; PAGE_HEADER + META_BYTES];
        file.read_exact_at(&mut page, ps)?;
        let meta1 = Meta::from_page(&page);
        let valid = |m: &Result<Meta, String>| {
            m.as_ref()
                .ok()
                .filter(|m| m.page_size == page_size)
                .copied()
        };
        let meta = match (valid(&meta0), valid(&meta1)) {
            (Some(a), Some(b)) => {
                if b.txid > a.txid {
                    b
                } else {
                    a
                }
            }
            (Some(a), None) => a,
            (None, Some(b)) => b,
            (None, None) => {
                let why = |m: &Result<Meta, String>| match m {
                    Ok(m) => format!("page size {}", m.page_size),
                    Err(e) => e.clone(),
                };
                return Err(BoltError::BadMeta {
                    reason: format!("meta 0: {}; meta 1: {}", why(&meta0), why(&meta1)),
                });
            }
        };
        if meta.high_water < 3 || meta.root < 2 || meta.root >= meta.high_water {
            return Err(BoltError::BadMeta {
                reason: format!(
                    "root page {} with {} pages in use",
                    meta.root, meta.high_water
                ),
            });
        }
        if meta.high_water.saturating_mul(ps) > len {
            return Err(corrupt(
                meta.high_water - 1,
                format!(
                    "the file holds {len} bytes but its meta names {} pages of {page_size}: \
                     truncated",
                    meta.high_water
                ),
            ));
        }
        Ok(BoltFile { file, len, meta })
    }

    pub fn meta(&self) -> Meta {
        self.meta
    }

    /// The root bucket (whose entries are the top-level buckets).
    pub fn root(&self) -> Bucket {
        Bucket::Page(self.meta.root)
    }

    /// Reads page `pgid` with its overflow pages.
    fn page(&self, pgid: u64) -> Result<Vec<u8>> {
        let ps = u64::from(self.meta.page_size);
        if pgid < 2 || pgid >= self.meta.high_water {
            return Err(corrupt(
                pgid,
                format!("page id outside 2..{}", self.meta.high_water),
            ));
        }
        let mut head = [0u8; PAGE_HEADER];
        self.file.read_exact_at(&mut head, pgid * ps)?;
        let head = PageHeader::read(&head);
        if head.id != pgid {
            return Err(corrupt(pgid, format!("its header names page {}", head.id)));
        }
        let overflow = u64::from(head.overflow);
        let bytes = (overflow + 1) * ps;
        if pgid + overflow >= self.meta.high_water
            || pgid * ps + bytes > self.len
            || bytes > NODE_BYTES_MAX
        {
            return Err(corrupt(
                pgid,
                format!("{overflow} overflow pages run past the end of the data"),
            ));
        }
        let mut page = vec![0u8; bytes as usize];
        self.file.read_exact_at(&mut page, pgid * ps)?;
        Ok(page)
    }

    /// The bucket an entry with `is_bucket` names.
    pub fn bucket_of(&self, entry: &Entry) -> Result<Bucket> {
        if !entry.is_bucket || entry.value.len() < BUCKET_HEADER {
            return Err(corrupt(
                0,
                format!(
                    "bucket {:?} has a {}-byte header",
                    String::from_utf8_lossy(&entry.key),
                    entry.value.len()
                ),
            ));
        }
        match BucketHeader::read(&entry.value).root {
            0 => Ok(Bucket::Inline(entry.value[BUCKET_HEADER..].to_vec())),
            root => Ok(Bucket::Page(root)),
        }
    }

    /// The nested bucket `name` of `parent`, if it has one.
    pub fn bucket(&self, parent: &Bucket, name: &[u8]) -> Result<Option<Bucket>> {
        let mut cursor = self.cursor(parent);
        while let Some(entry) = cursor.next_entry()? {
            if entry.key == name {
                if !entry.is_bucket {
                    return Err(corrupt(
                        0,
                        format!("{:?} is a key, not a bucket", String::from_utf8_lossy(name)),
                    ));
                }
                return self.bucket_of(&entry).map(Some);
            }
        }
        Ok(None)
    }

    /// Walks `bucket`'s entries in key order.
    pub fn cursor<'a>(&'a self, bucket: &Bucket) -> Cursor<'a> {
        Cursor {
            file: self,
            start: Some(bucket.clone()),
            stack: Vec::new(),
            last_key: None,
        }
    }
}

/// One node on the walk: its bytes, its page id (0 for an inline bucket), its flags and
/// element count, and the next element to visit.
struct Frame {
    page: Vec<u8>,
    pgid: u64,
    leaf: bool,
    count: usize,
    next: usize,
}

impl Frame {
    fn new(page: Vec<u8>, pgid: u64) -> Result<Frame> {
        if page.len() < PAGE_HEADER {
            return Err(corrupt(pgid, "shorter than a page header"));
        }
        let head = PageHeader::read(&page);
        let flags = head.flags;
        let leaf = match flags & (FLAG_BRANCH | FLAG_LEAF) {
            FLAG_LEAF => true,
            FLAG_BRANCH => false,
            _ => {
                return Err(corrupt(
                    pgid,
                    format!("flags {flags:#x}: neither a branch nor a leaf"),
                ))
            }
        };
        let count = usize::from(head.count);
        if element_at(count) > page.len() {
            return Err(corrupt(
                pgid,
                format!("{count} elements do not fit in the node"),
            ));
        }
        if !leaf && count == 0 {
            return Err(corrupt(pgid, "a branch without children"));
        }
        Ok(Frame {
            page,
            pgid,
            leaf,
            count,
            next: 0,
        })
    }

    /// Bytes `[at + pos, at + pos + len)` of the node, checked.
    fn slice(&self, at: usize, pos: u32, len: u32) -> Result<&[u8]> {
        let start = at.checked_add(pos as usize);
        let end = start.and_then(|s| s.checked_add(len as usize));
        match (start, end) {
            (Some(s), Some(e)) if e <= self.page.len() => Ok(&self.page[s..e]),
            _ => Err(corrupt(self.pgid, "an element points past the node")),
        }
    }
}

/// Walks one bucket's tree in key order (not into nested buckets: those are entries with
/// `is_bucket`).
pub struct Cursor<'a> {
    file: &'a BoltFile,
    start: Option<Bucket>,
    stack: Vec<Frame>,
    last_key: Option<Vec<u8>>,
}

impl Cursor<'_> {
    /// The next entry, `None` after the last.
    pub fn next_entry(&mut self) -> Result<Option<Entry>> {
        if let Some(start) = self.start.take() {
            let frame = match start {
                Bucket::Page(pgid) => Frame::new(self.file.page(pgid)?, pgid)?,
                Bucket::Inline(page) => {
                    let f = Frame::new(page, 0)?;
                    if !f.leaf {
                        return Err(corrupt(0, "an inline bucket that is not a leaf"));
                    }
                    f
                }
            };
            self.stack.push(frame);
        }
        loop {
            let Some(top) = self.stack.last_mut() else {
                return Ok(None);
            };
            if top.next >= top.count {
                self.stack.pop();
                continue;
            }
            let i = top.next;
            top.next += 1;
            let at = element_at(i);
            if top.leaf {
                let e = LeafElement::read(&top.page, at);
                let key = top.slice(at, e.pos, e.ksize)?.to_vec();
                let value = top
                    .slice(at, e.pos.saturating_add(e.ksize), e.vsize)?
                    .to_vec();
                if let Some(last) = &self.last_key {
                    if key <= *last {
                        return Err(corrupt(top.pgid, "keys out of order"));
                    }
                }
                self.last_key = Some(key.clone());
                return Ok(Some(Entry {
                    key,
                    value,
                    is_bucket: e.flags & BUCKET_LEAF_FLAG != 0,
                }));
            }
            let pgid = BranchElement::read(&top.page, at).pgid;
            if self.stack.len() >= DEPTH_MAX {
                return Err(corrupt(
                    pgid,
                    format!("tree deeper than {DEPTH_MAX} levels"),
                ));
            }
            let child = Frame::new(self.file.page(pgid)?, pgid)?;
            self.stack.push(child);
        }
    }
}

#[cfg(test)]
mod tests;
