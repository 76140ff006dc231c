//! A server process's memory as the kernel counts it (`/proc/<pid>/status`), and the machine's
//! load average (`/proc/loadavg`).
//!
//! Invariants: every figure is in bytes (the kernel writes kB = 1024 bytes); a field the
//! kernel does not report is 0, never a guess.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Memory figures of one process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcMemory {
    /// Resident set size (`VmRSS`) = anonymous + file-backed + shared memory.
    pub vm_rss_bytes: u64,
    /// Peak resident set size (`VmHWM`).
    pub vm_hwm_bytes: u64,
    /// Resident anonymous memory (`RssAnon`): the heap, what cannot be dropped under pressure.
    pub rss_anon_bytes: u64,
    /// Resident file-backed memory (`RssFile`): mapped files such as etcd's bbolt database,
    /// pages the kernel may reclaim and read back.
    pub rss_file_bytes: u64,
}

/// Parses the text of `/proc/<pid>/status`.
pub fn parse_status(text: &str) -> ProcMemory {
    let mut m = ProcMemory::default();
    for line in text.lines() {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let field = match name.trim() {
            "VmRSS" => &mut m.vm_rss_bytes,
            "VmHWM" => &mut m.vm_hwm_bytes,
            "RssAnon" => &mut m.rss_anon_bytes,
            "RssFile" => &mut m.rss_file_bytes,
            _ => continue,
        };
        let kb: u64 = rest
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        *field = kb * 1024;
    }
    m
}

/// The memory of process `pid`.
pub fn read_memory(pid: u32) -> Result<ProcMemory> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    Ok(parse_status(&text))
}

/// The 1-minute load average, `None` where `/proc/loadavg` is unreadable.
pub fn load_average_1m() -> Option<f64> {
    let text = std::fs::read_to_string(Path::new("/proc/loadavg")).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_memory_lines() {
        let text = "Name:\tetcd\nVmPeak:\t 900 kB\nVmHWM:\t  2048 kB\nVmRSS:\t  1536 kB\n\
                    RssAnon:\t 1024 kB\nRssFile:\t 512 kB\nRssShmem:\t 0 kB\nThreads:\t9\n";
        let m = parse_status(text);
        assert_eq!(m.vm_hwm_bytes, 2048 * 1024);
        assert_eq!(m.vm_rss_bytes, 1536 * 1024);
        assert_eq!(m.rss_anon_bytes, 1024 * 1024);
        assert_eq!(m.rss_file_bytes, 512 * 1024);
    }

    #[test]
    fn reads_this_process() {
        let m = read_memory(std::process::id()).unwrap();
        assert!(m.vm_rss_bytes > 0 && m.vm_hwm_bytes >= m.vm_rss_bytes);
    }
}
