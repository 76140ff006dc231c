//! A write-once builder of bbolt database files (the format of etcd's backend, `go.etcd.io/bbolt`
//! version 2), for `Maintenance.Snapshot`: buckets of sorted keys in, a file Go's bbolt opens
//! (and `etcdctl snapshot status`'s `tx.Check()` passes) out. It never reads or updates a file.
//!
//! The format is drawn in `bolt.rs`, whose codecs this builder writes with. The builder
//! writes pages 0-2 last (it seeks back), then every bucket as a tree of its own: leaves in
//! key order as the keys arrive (each leaf filled until the next element would pass a page;
//! an element larger than a page gets a leaf of its own with overflow pages), then the branch
//! levels above them bottom-up, then the root bucket's tree.
//!
//! Invariants, checked as data arrives (a caller's mistake is an `InvalidInput` error, never a
//! bad file): keys non-empty, at most [`KEY_BYTES_MAX`], strictly ascending within a bucket;
//! bucket names unique; every page below the high-water mark is reachable exactly once from
//! the root (none is free), so bbolt's consistency check finds nothing. Memory: one leaf being
//! filled plus one `(first key, page)` pair per page of the levels above the leaves.

use std::io::{self, Seek, SeekFrom, Write};

use super::{
    element_at, BranchElement, BucketHeader, LeafElement, Meta, PageHeader, BUCKET_LEAF_FLAG,
    ELEMENT, FLAG_BRANCH, FLAG_FREELIST, FLAG_LEAF, PAGE_HEADER,
};

/// bbolt's page size on the systems etcd runs on (its `os.Getpagesize()`).
pub const PAGE_SIZE: usize = 4096;
const _: () = assert!(PAGE_SIZE.is_multiple_of(512) && PAGE_SIZE >= 1024);
/// bbolt's largest key.
pub const KEY_BYTES_MAX: usize = 32_768;
/// bbolt's largest value.
pub const VALUE_BYTES_MAX: usize = (1 << 31) - 2;

/// Pages 0 and 1 (metas) and 2 (freelist), written last.
const RESERVED_PAGES: u64 = 3;
const FREELIST_PGID: u64 = 2;

/// One node on its way to a page: its elements and their byte count.
#[derive(Default)]
struct Node {
    elements: Vec<(Vec<u8>, Vec<u8>, u32)>,
    bytes: usize,
}

impl Node {
    fn size(&self) -> usize {
        PAGE_HEADER + self.bytes
    }
}

/// The bucket being filled.
struct OpenBucket {
    name: Vec<u8>,
    leaf: Node,
    /// Each written leaf's first key and page.
    leaves: Vec<(Vec<u8>, u64)>,
}

/// Builds one bbolt file (see the module comment).
pub struct BoltWriter<W: Write + Seek> {
    out: W,
    next_pgid: u64,
    open: Option<OpenBucket>,
    /// Finished buckets: name and root page.
    buckets: Vec<(Vec<u8>, u64)>,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

impl<W: Write + Seek> BoltWriter<W> {
    /// Starts a file at the start of `out` (which should be empty).
    pub fn new(mut out: W) -> io::Result<BoltWriter<W>> {
        out.seek(SeekFrom::Start(RESERVED_PAGES * PAGE_SIZE as u64))?;
        Ok(BoltWriter {
            out,
            next_pgid: RESERVED_PAGES,
            open: None,
            buckets: Vec::new(),
        })
    }

    /// Opens a top-level bucket; its keys follow with [`BoltWriter::put`].
    pub fn begin_bucket(&mut self, name: &[u8]) -> io::Result<()> {
        if self.open.is_some() {
            return Err(invalid("a bucket is already open".into()));
        }
        check_key(name)?;
        if self.buckets.iter().any(|(n, _)| n == name) {
            return Err(invalid(format!(
                "bucket {:?} written twice",
                String::from_utf8_lossy(name)
            )));
        }
        self.open = Some(OpenBucket {
            name: name.to_vec(),
            leaf: Node::default(),
            leaves: Vec::new(),
        });
        Ok(())
    }

    /// Adds a key to the open bucket; keys must ascend strictly.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
        check_key(key)?;
        if value.len() > VALUE_BYTES_MAX {
            return Err(invalid(format!("value of {} bytes", value.len())));
        }
        let Some(open) = self.open.as_mut() else {
            return Err(invalid("put outside a bucket".into()));
        };
        // The leaf being filled always holds the last key put (a full one is written only
        // when the next key arrives).
        if let Some((prev, _, _)) = open.leaf.elements.last() {
            if key <= prev.as_slice() {
                return Err(invalid("keys out of order".into()));
            }
        }
        let add = ELEMENT + key.len() + value.len();
        if !open.leaf.elements.is_empty() && open.leaf.size() + add > PAGE_SIZE {
            let leaf = std::mem::take(&mut open.leaf);
            let first = leaf.elements[0].0.clone();
            let pgid = write_node(&mut self.out, &mut self.next_pgid, FLAG_LEAF, &leaf)?;
            open.leaves.push((first, pgid));
        }
        open.leaf.elements.push((key.to_vec(), value.to_vec(), 0));
        open.leaf.bytes += add;
        Ok(())
    }

    /// Closes the open bucket: writes its last leaf and the branch levels above.
    pub fn end_bucket(&mut self) -> io::Result<()> {
        let Some(mut open) = self.open.take() else {
            return Err(invalid("no bucket is open".into()));
        };
        if !open.leaf.elements.is_empty() || open.leaves.is_empty() {
            let first = open
                .leaf
                .elements
                .first()
                .map(|e| e.0.clone())
                .unwrap_or_default();
            let pgid = write_node(&mut self.out, &mut self.next_pgid, FLAG_LEAF, &open.leaf)?;
            open.leaves.push((first, pgid));
        }
        let root = self.write_branches(open.leaves)?;
        self.buckets.push((open.name, root));
        Ok(())
    }

    /// Writes branch levels over `children` until one page remains: the root.
    fn write_branches(&mut self, mut children: Vec<(Vec<u8>, u64)>) -> io::Result<u64> {
        while children.len() > 1 {
            let mut level = Vec::new();
            let mut node = Node::default();
            for (key, pgid) in children {
                let add = ELEMENT + key.len();
                // Two children at least per branch, so every level shrinks.
                if node.elements.len() >= 2 && node.size() + add > PAGE_SIZE {
                    let done = std::mem::take(&mut node);
                    let first = done.elements[0].0.clone();
                    level.push((
                        first,
                        write_node(&mut self.out, &mut self.next_pgid, FLAG_BRANCH, &done)?,
                    ));
                }
                node.bytes += add;
                node.elements.push((key, Vec::new(), 0));
                // The child's page id rides in the element's value until written.
                let last = node.elements.last_mut().expect("pushed");
                last.1 = pgid.to_le_bytes().to_vec();
            }
            let first = node.elements[0].0.clone();
            level.push((
                first,
                write_node(&mut self.out, &mut self.next_pgid, FLAG_BRANCH, &node)?,
            ));
            children = level;
        }
        Ok(children[0].1)
    }

    /// Writes the root bucket, the freelist and both metas; returns the output and the file's
    /// length in bytes.
    pub fn finish(mut self) -> io::Result<(W, u64)> {
        if self.open.is_some() {
            return Err(invalid("a bucket is still open".into()));
        }
        let mut buckets = std::mem::take(&mut self.buckets);
        buckets.sort();
        let mut root = Node::default();
        let mut leaves = Vec::new();
        for (name, pgid) in buckets {
            let value = BucketHeader {
                root: pgid,
                sequence: 0,
            }
            .to_bytes()
            .to_vec();
            let add = ELEMENT + name.len() + value.len();
            if !root.elements.is_empty() && root.size() + add > PAGE_SIZE {
                let done = std::mem::take(&mut root);
                let first = done.elements[0].0.clone();
                leaves.push((
                    first,
                    write_node(&mut self.out, &mut self.next_pgid, FLAG_LEAF, &done)?,
                ));
            }
            root.bytes += add;
            root.elements.push((name, value, BUCKET_LEAF_FLAG));
        }
        if !root.elements.is_empty() || leaves.is_empty() {
            let first = root
                .elements
                .first()
                .map(|e| e.0.clone())
                .unwrap_or_default();
            leaves.push((
                first,
                write_node(&mut self.out, &mut self.next_pgid, FLAG_LEAF, &root)?,
            ));
        }
        let root_pgid = self.write_branches(leaves)?;
        let high_water = self.next_pgid;

        let mut freelist = vec![0u8; PAGE_SIZE];
        PageHeader {
            id: FREELIST_PGID,
            flags: FLAG_FREELIST,
            count: 0,
            overflow: 0,
        }
        .write(&mut freelist);
        self.out
            .seek(SeekFrom::Start(FREELIST_PGID * PAGE_SIZE as u64))?;
        self.out.write_all(&freelist)?;
        for (pgid, txid) in [(0u64, 0u64), (1, 1)] {
            let page = Meta {
                page_size: PAGE_SIZE as u32,
                root: root_pgid,
                freelist: FREELIST_PGID,
                high_water,
                txid,
            }
            .page(pgid);
            self.out.seek(SeekFrom::Start(pgid * PAGE_SIZE as u64))?;
            self.out.write_all(&page)?;
        }
        self.out.flush()?;
        Ok((self.out, high_water * PAGE_SIZE as u64))
    }
}

fn check_key(key: &[u8]) -> io::Result<()> {
    if key.is_empty() || key.len() > KEY_BYTES_MAX {
        return Err(invalid(format!("key of {} bytes", key.len())));
    }
    Ok(())
}

/// Writes `node` at the next free page (with overflow pages when it is larger than one) and
/// returns its page id. Branch elements carry their child's page id (LE) as the value.
fn write_node<W: Write>(
    out: &mut W,
    next_pgid: &mut u64,
    flags: u16,
    node: &Node,
) -> io::Result<u64> {
    let count = u16::try_from(node.elements.len())
        .map_err(|_| invalid(format!("{} elements in one page", node.elements.len())))?;
    let pgid = *next_pgid;
    let pages = node.size().div_ceil(PAGE_SIZE).max(1);
    let overflow = u32::try_from(pages - 1).map_err(|_| invalid("node too large".into()))?;
    let mut buf = vec![0u8; pages * PAGE_SIZE];
    PageHeader {
        id: pgid,
        flags,
        count,
        overflow,
    }
    .write(&mut buf);
    let mut data = element_at(node.elements.len());
    for (i, (key, value, elem_flags)) in node.elements.iter().enumerate() {
        let at = element_at(i);
        let pos = u32::try_from(data - at).map_err(|_| invalid("node too large".into()))?;
        let ksize = key.len() as u32;
        if flags == FLAG_BRANCH {
            let pgid = u64::from_le_bytes(value[..8].try_into().expect("a child's page id"));
            BranchElement { pos, ksize, pgid }.write(&mut buf, at);
            buf[data..data + key.len()].copy_from_slice(key);
            data += key.len();
        } else {
            LeafElement {
                flags: *elem_flags,
                pos,
                ksize,
                vsize: value.len() as u32,
            }
            .write(&mut buf, at);
            buf[data..data + key.len()].copy_from_slice(key);
            data += key.len();
            buf[data..data + value.len()].copy_from_slice(value);
            data += value.len();
        }
    }
    out.write_all(&buf)?;
    *next_pgid += pages as u64;
    Ok(pgid)
}

#[cfg(test)]
pub(crate) mod tests;
