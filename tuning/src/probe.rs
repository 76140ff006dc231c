//! Timed measurements the advisor takes: disk fdatasync latency on the data directory's
//! filesystem (behind the `DiskProbe` trait: `BenchDiskProbe` runs the bench crate's disk
//! check, `SyncWriteProbe` is a plain-`std` probe with a time bound, and tests feed synthetic
//! numbers), and peer round-trip time from TCP connects.
//!
//! Invariants: every probe is bounded in bytes, count and time; the disk probe writes only its
//! own temporary file inside the given directory and removes it; the RTT probe only connects
//! (sends no data) and closes each connection at once.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Distribution of one write + fdatasync, as the advisor needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskMeasurement {
    /// How many write + fdatasync pairs were timed.
    pub samples: u64,
    /// Bytes per write.
    pub block_bytes: u64,
    pub fdatasync_us_p50: u64,
    pub fdatasync_us_p99: u64,
    pub fdatasync_us_max: u64,
    /// Which probe produced these numbers.
    pub probe: String,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    #[error("disk probe in {dir}: {source}")]
    Io {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("disk probe in {dir} timed no write")]
    NoSamples { dir: String },
}

/// Measures sequential small writes, each followed by fdatasync, on the filesystem of `dir`.
///
/// Contract for implementers: write only inside `dir`, to a file the probe creates and removes
/// before returning (also on error, as far as possible); stay within the byte and time bounds
/// the implementation was built with; report latency of one write + its fdatasync.
pub trait DiskProbe {
    fn probe(&self, dir: &Path) -> Result<DiskMeasurement, ProbeError>;
}

/// The bench crate's disk check (`ballast_bench::disk::run_disk_probe`): etcd's fio recipe,
/// on io_uring where the kernel allows it. It reports the fdatasync latency alone. Bounded in
/// bytes only; `ballast-tune advise` uses it by default.
#[derive(Debug, Clone)]
pub struct BenchDiskProbe {
    pub block_bytes: usize,
    pub total_bytes: u64,
}

impl Default for BenchDiskProbe {
    fn default() -> Self {
        BenchDiskProbe {
            block_bytes: ballast_bench::disk::ETCD_BLOCK_SIZE,
            total_bytes: ballast_bench::disk::ETCD_TOTAL_BYTES,
        }
    }
}

fn ms_to_us(ms: f64) -> u64 {
    (ms * 1000.0).round().max(0.0) as u64
}

impl DiskProbe for BenchDiskProbe {
    fn probe(&self, dir: &Path) -> Result<DiskMeasurement, ProbeError> {
        use ballast_bench::disk::{run_disk_probe, DiskConfig};
        let cfg = DiskConfig {
            block_size: self.block_bytes.max(1),
            total_bytes: self.total_bytes.max(1),
            ..DiskConfig::etcd_default(dir)
        };
        let report = run_disk_probe(&cfg).map_err(|e| ProbeError::Io {
            dir: dir.display().to_string(),
            source: std::io::Error::other(e.to_string()),
        })?;
        if report.writes == 0 {
            return Err(ProbeError::NoSamples {
                dir: dir.display().to_string(),
            });
        }
        Ok(DiskMeasurement {
            samples: report.writes,
            block_bytes: report.block_size as u64,
            fdatasync_us_p50: ms_to_us(report.p50_ms),
            fdatasync_us_p99: ms_to_us(report.p99_ms),
            fdatasync_us_max: ms_to_us(report.max_ms),
            probe: format!("ballast-bench disk check, {}", report.engine),
        })
    }
}

/// A plain-`std` probe after etcd's fio recipe (sequential writes of 2300 bytes, fdatasync
/// after each), timing write + fdatasync together. Unlike `BenchDiskProbe` it also stops after
/// `max_duration`, which bounds it on a very slow disk.
#[derive(Debug, Clone)]
pub struct SyncWriteProbe {
    pub block_bytes: usize,
    /// Stop after this many bytes...
    pub total_bytes: u64,
    /// ...or after this long, whichever comes first.
    pub max_duration: Duration,
}

impl Default for SyncWriteProbe {
    fn default() -> Self {
        SyncWriteProbe {
            block_bytes: 2300,
            total_bytes: 22 * 1024 * 1024,
            max_duration: Duration::from_secs(30),
        }
    }
}

/// Removes the probe file when dropped, so an early return or panic leaves nothing behind.
struct TempFile(std::path::PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl DiskProbe for SyncWriteProbe {
    fn probe(&self, dir: &Path) -> Result<DiskMeasurement, ProbeError> {
        let io = |source| ProbeError::Io {
            dir: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let path = dir.join(format!(".ballast-tune-probe-{}", std::process::id()));
        let guard = TempFile(path);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&guard.0)
            .map_err(io)?;
        let block = vec![0x5au8; self.block_bytes.max(1)];
        let started = Instant::now();
        let mut written = 0u64;
        let mut latencies_us = Vec::new();
        while written < self.total_bytes && started.elapsed() < self.max_duration {
            let t = Instant::now();
            file.write_all(&block).map_err(io)?;
            file.sync_data().map_err(io)?;
            latencies_us.push(t.elapsed().as_micros() as u64);
            written += block.len() as u64;
        }
        drop(file);
        drop(guard);
        if latencies_us.is_empty() {
            return Err(ProbeError::NoSamples {
                dir: dir.display().to_string(),
            });
        }
        latencies_us.sort_unstable();
        Ok(DiskMeasurement {
            samples: latencies_us.len() as u64,
            block_bytes: block.len() as u64,
            fdatasync_us_p50: percentile(&latencies_us, 50.0),
            fdatasync_us_p99: percentile(&latencies_us, 99.0),
            fdatasync_us_max: *latencies_us.last().unwrap_or(&0),
            probe: "ballast-tune write+fdatasync".to_string(),
        })
    }
}

/// Nearest-rank percentile of sorted data (empty data: 0).
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Round-trip times to one peer, from timed TCP connects (a connect completes after one
/// SYN / SYN-ACK round trip).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerRtt {
    pub peer: String,
    /// Connects that completed.
    pub samples: u32,
    /// Connects that failed or timed out.
    pub failures: u32,
    pub rtt_us_p50: Option<u64>,
    pub rtt_us_max: Option<u64>,
    /// Why no connect completed, if none did.
    pub error: Option<String>,
}

/// Most connects per peer and longest timeout `measure_peer_rtt` allows.
pub const MAX_RTT_SAMPLES: u32 = 100;
pub const MAX_RTT_TIMEOUT: Duration = Duration::from_secs(10);

/// Time `count` TCP connects to `peer` (`HOST:PORT`), each bounded by `timeout`.
pub fn measure_peer_rtt(peer: &str, count: u32, timeout: Duration) -> PeerRtt {
    let count = count.clamp(1, MAX_RTT_SAMPLES);
    let timeout = timeout.min(MAX_RTT_TIMEOUT);
    let mut out = PeerRtt {
        peer: peer.to_string(),
        samples: 0,
        failures: 0,
        rtt_us_p50: None,
        rtt_us_max: None,
        error: None,
    };
    let addr = match peer.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(a)) => a,
        Ok(None) => {
            out.error = Some("the name resolves to no address".into());
            out.failures = count;
            return out;
        }
        Err(e) => {
            out.error = Some(format!("cannot resolve: {e}"));
            out.failures = count;
            return out;
        }
    };
    let mut rtts = Vec::new();
    let mut last_error = None;
    for _ in 0..count {
        let t = Instant::now();
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => {
                rtts.push(t.elapsed().as_micros() as u64);
                drop(stream);
            }
            Err(e) => {
                out.failures += 1;
                last_error = Some(e.to_string());
            }
        }
    }
    rtts.sort_unstable();
    out.samples = rtts.len() as u32;
    if rtts.is_empty() {
        out.error = last_error;
    } else {
        out.rtt_us_p50 = Some(percentile(&rtts, 50.0));
        out.rtt_us_max = rtts.last().copied();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 99.0), 0);
    }

    #[test]
    fn sync_write_probe_is_bounded_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let probe = SyncWriteProbe {
            block_bytes: 2300,
            total_bytes: 2300 * 20,
            max_duration: Duration::from_secs(10),
        };
        let m = probe.probe(dir.path()).unwrap();
        assert!(m.samples >= 1 && m.samples <= 20, "{m:?}");
        assert!(m.fdatasync_us_p50 <= m.fdatasync_us_p99);
        assert!(m.fdatasync_us_p99 <= m.fdatasync_us_max);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "probe file left"
        );
    }

    #[test]
    fn bench_probe_is_bounded_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let probe = BenchDiskProbe {
            block_bytes: 2300,
            total_bytes: 2300 * 20,
        };
        let m = probe.probe(dir.path()).unwrap();
        assert_eq!(m.samples, 20, "{m:?}");
        assert_eq!(m.block_bytes, 2300);
        assert!(m.fdatasync_us_p50 <= m.fdatasync_us_p99);
        assert!(m.fdatasync_us_p99 <= m.fdatasync_us_max);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "probe file left"
        );
        let e = probe.probe(&dir.path().join("missing/dir"));
        assert!(
            e.is_err(),
            "a missing directory is an error, not a silent pass"
        );
    }

    #[test]
    fn rtt_to_a_loopback_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let r = measure_peer_rtt(&addr, 5, Duration::from_secs(2));
        assert_eq!(r.samples, 5, "{r:?}");
        assert_eq!(r.failures, 0);
        assert!(r.rtt_us_p50.unwrap() <= r.rtt_us_max.unwrap());
        drop(listener);
    }

    #[test]
    fn rtt_to_a_closed_port_reports_failures() {
        // Bind then drop to get a port with nothing listening on it.
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let r = measure_peer_rtt(&addr, 3, Duration::from_millis(500));
        assert_eq!(r.samples, 0);
        assert_eq!(r.failures, 3);
        assert!(r.error.is_some());
        let r = measure_peer_rtt("no-port-here", 2, Duration::from_millis(100));
        assert_eq!(r.samples, 0);
        assert!(r.error.is_some());
    }
}
