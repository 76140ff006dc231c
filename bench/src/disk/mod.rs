//! The disk check etcd recommends: sequential writes of 2300 bytes, each followed by an
//! fdatasync, over 22 MiB of a fresh file, reporting the fdatasync latency distribution and
//! the verdict against etcd's 10 ms p99 threshold.
//!
//! This is a library function with a plain-data result so `ballast-tuning` can call it.
//! Invariants: exactly `writes = ceil(total_bytes / block_size)` writes and as many fdatasyncs
//! are timed; with `direct`, the block size is rounded up to a multiple of 4096 and the buffer
//! is 4096-aligned, since O_DIRECT needs both; the probe file is removed whatever happens.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::latency::{Latency, LatencySummary};

pub mod aligned;
pub mod fio;
pub mod sync_file;
pub mod uring;

/// etcd's threshold: the WAL fdatasync p99 should stay below 10 ms.
pub const ETCD_P99_THRESHOLD_MS: f64 = 10.0;
/// etcd's recommended write size (about one WAL entry of a small cluster).
pub const ETCD_BLOCK_SIZE: usize = 2300;
/// etcd's recommended amount written: 22 MiB.
pub const ETCD_TOTAL_BYTES: u64 = 22 * 1024 * 1024;
/// O_DIRECT alignment assumed (logical block size of every disk in use here).
pub const DIRECT_ALIGN: usize = 4096;
const _: () = assert!(DIRECT_ALIGN.is_power_of_two());

/// Which I/O path issues the writes and syncs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Engine {
    /// io_uring, falling back to plain syscalls when the kernel refuses io_uring.
    Auto,
    IoUring,
    Sync,
}

/// What to measure.
#[derive(Clone, Debug)]
pub struct DiskConfig {
    pub dir: PathBuf,
    pub block_size: usize,
    pub total_bytes: u64,
    pub direct: bool,
    pub engine: Engine,
}

impl DiskConfig {
    /// etcd's recommended check in `dir`.
    pub fn etcd_default(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            block_size: ETCD_BLOCK_SIZE,
            total_bytes: ETCD_TOTAL_BYTES,
            direct: false,
            engine: Engine::Auto,
        }
    }
}

/// The result of one probe: plain data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiskReport {
    pub dir: String,
    /// `io_uring` or `sync`.
    pub engine: String,
    pub direct: bool,
    /// Bytes per write actually used (rounded up for O_DIRECT).
    pub block_size: usize,
    pub total_bytes: u64,
    pub writes: u64,
    pub elapsed_s: f64,
    /// fdatasync latency, the figure etcd's guidance is about.
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub fdatasync: LatencySummary,
    pub write: LatencySummary,
    pub threshold_ms: f64,
    /// `p99_ms < threshold_ms`.
    pub pass: bool,
}

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiskError {
    #[error("bad configuration: {0}")]
    Config(&'static str),
    #[error("creating the probe file {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("io_uring unavailable in this kernel or sandbox")]
    UringUnavailable,
    #[error("writing or syncing the probe file: {0}")]
    Io(std::io::Error),
}

/// The block size used: `block_size`, rounded up to [`DIRECT_ALIGN`] for O_DIRECT.
pub fn effective_block_size(block_size: usize, direct: bool) -> usize {
    if direct {
        block_size.div_ceil(DIRECT_ALIGN) * DIRECT_ALIGN
    } else {
        block_size
    }
}

/// Removes the probe file when dropped.
struct ProbeFile(PathBuf);

impl Drop for ProbeFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn create(path: &Path, direct: bool) -> Result<File, DiskError> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    if direct {
        opts.custom_flags(libc::O_DIRECT);
    }
    opts.open(path).map_err(|source| DiskError::Create {
        path: path.to_path_buf(),
        source,
    })
}

/// Latencies of one probe run.
#[derive(Debug, Default)]
pub struct Timings {
    pub write: Latency,
    pub sync: Latency,
}

/// Runs the probe (blocking; seconds on a good disk, minutes on a slow one).
pub fn run_disk_probe(cfg: &DiskConfig) -> Result<DiskReport, DiskError> {
    if cfg.block_size == 0 || cfg.total_bytes == 0 {
        return Err(DiskError::Config(
            "block size and total bytes must be positive",
        ));
    }
    let block_size = effective_block_size(cfg.block_size, cfg.direct);
    let writes = cfg.total_bytes.div_ceil(block_size as u64);
    let path = cfg
        .dir
        .join(format!("ballast-disk-probe.{}", std::process::id()));
    let file = create(&path, cfg.direct)?;
    let _guard = ProbeFile(path);
    let use_uring = match cfg.engine {
        Engine::Sync => false,
        Engine::IoUring if !uring::available() => return Err(DiskError::UringUnavailable),
        Engine::IoUring => true,
        Engine::Auto => uring::available(),
    };
    let started = std::time::Instant::now();
    let timings = if use_uring {
        uring::probe(file, block_size, writes, DIRECT_ALIGN)
    } else {
        sync_file::probe(file, block_size, writes, DIRECT_ALIGN)
    }
    .map_err(DiskError::Io)?;
    let elapsed_s = started.elapsed().as_secs_f64();
    let fdatasync = timings.sync.summary();
    let p99_ms = fdatasync.p99_ms;
    Ok(DiskReport {
        dir: cfg.dir.display().to_string(),
        engine: if use_uring { "io_uring" } else { "sync" }.to_string(),
        direct: cfg.direct,
        block_size,
        total_bytes: writes * block_size as u64,
        writes,
        elapsed_s,
        p50_ms: fdatasync.p50_ms,
        p90_ms: fdatasync.p90_ms,
        p99_ms,
        p999_ms: fdatasync.p999_ms,
        max_ms: fdatasync.max_ms,
        fdatasync,
        write: timings.write.summary(),
        threshold_ms: ETCD_P99_THRESHOLD_MS,
        pass: p99_ms < ETCD_P99_THRESHOLD_MS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_size_rounding() {
        assert_eq!(effective_block_size(2300, false), 2300);
        assert_eq!(effective_block_size(2300, true), 4096);
        assert_eq!(effective_block_size(4096, true), 4096);
        assert_eq!(effective_block_size(4097, true), 8192);
    }

    #[test]
    fn small_probe_counts_writes_and_removes_its_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        for engine in [Engine::Sync, Engine::IoUring] {
            let cfg = DiskConfig {
                dir: dir.path().to_path_buf(),
                block_size: 2300,
                total_bytes: 23_000,
                direct: false,
                engine,
            };
            let r = run_disk_probe(&cfg).expect("probe runs");
            assert_eq!(r.writes, 10);
            assert_eq!(r.fdatasync.count, 10);
            assert_eq!(r.write.count, 10);
            assert!(r.p99_ms > 0.0 && r.p99_ms <= r.max_ms);
            let expected = if engine == Engine::Sync {
                "sync"
            } else {
                "io_uring"
            };
            assert_eq!(r.engine, expected);
            assert_eq!(r.pass, r.p99_ms < ETCD_P99_THRESHOLD_MS);
        }
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("readdir").count(),
            0,
            "probe file removed"
        );
    }
}
