//! What a data directory holds on disk: files, their lengths, and the space allocated to them,
//! in all and in the write-ahead log (etcd: `member/wal`; Ballast: `ballast/shard-<n>/wal`).
//!
//! Invariants: a walk never follows symbolic links; a directory that does not exist counts as
//! empty; `allocated_bytes` is what the file system reserved (st_blocks × 512), which for
//! preallocated log segments exceeds what was written into them.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Files under a directory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirUsage {
    pub files: u64,
    /// Sum of the files' lengths.
    pub bytes: u64,
    /// Sum of the space allocated to them.
    pub allocated_bytes: u64,
}

impl DirUsage {
    fn add(&mut self, other: DirUsage) {
        self.files += other.files;
        self.bytes += other.bytes;
        self.allocated_bytes += other.allocated_bytes;
    }
}

/// Usage of everything under `dir`.
pub fn dir_usage(dir: &Path) -> Result<DirUsage> {
    let mut total = DirUsage::default();
    if !dir.exists() {
        return Ok(total);
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let entry = entry?;
            let meta = std::fs::symlink_metadata(entry.path())?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                total.add(DirUsage {
                    files: 1,
                    bytes: meta.len(),
                    allocated_bytes: meta.blocks() * 512,
                });
            }
        }
    }
    Ok(total)
}

/// The WAL directories of a data dir, whichever server wrote it.
pub fn wal_dirs(data_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let etcd = data_dir.join("member").join("wal");
    if etcd.is_dir() {
        out.push(etcd);
    }
    let ballast = data_dir.join("ballast");
    if ballast.is_dir() {
        for entry in std::fs::read_dir(&ballast)? {
            let path = entry?.path().join("wal");
            if path.is_dir() {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Usage of every WAL directory of `data_dir` together.
pub fn wal_usage(data_dir: &Path) -> Result<DirUsage> {
    let mut total = DirUsage::default();
    for d in wal_dirs(data_dir)? {
        total.add(dir_usage(&d)?);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_files_in_both_layouts() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in [
            "member/wal",
            "member/snap",
            "ballast/shard-0/wal",
            "ballast/shard-0/pages",
        ] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        std::fs::write(d.join("member/wal/0.wal"), vec![1u8; 5000]).unwrap();
        std::fs::write(d.join("member/snap/db"), vec![1u8; 100]).unwrap();
        std::fs::write(d.join("ballast/shard-0/wal/seg"), vec![1u8; 3000]).unwrap();
        std::fs::write(d.join("ballast/shard-0/pages/p"), vec![1u8; 7]).unwrap();
        let all = dir_usage(d).unwrap();
        assert_eq!((all.files, all.bytes), (4, 8107));
        assert!(all.allocated_bytes >= 8107);
        let wal = wal_usage(d).unwrap();
        assert_eq!((wal.files, wal.bytes), (2, 8000));
        assert_eq!(dir_usage(&d.join("absent")).unwrap(), DirUsage::default());
    }
}
