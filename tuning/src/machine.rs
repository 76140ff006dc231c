//! What the advisor learns about the machine without timing anything: cores and memory (from
//! `/proc`), and the bytes already in the data directory.
//!
//! Invariant: the parsers are pure functions of the file text, so they are tested on fixed
//! text; only `Machine::detect` reads the real files.

use std::path::Path;

/// Cores and memory of this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Machine {
    pub cores: u32,
    pub memory_bytes: u64,
}

impl Machine {
    /// Read `/proc/cpuinfo` and `/proc/meminfo`. The core count is the smaller of the
    /// processors listed and the ones this process may run on (a cgroup or affinity mask can
    /// allow fewer). Falls back to the standard library's count when `/proc` is unreadable.
    pub fn detect() -> std::io::Result<Machine> {
        let allowed = std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1);
        let cores = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|t| cpuinfo_processors(&t))
            .map(|n| n.min(allowed))
            .unwrap_or(allowed);
        let meminfo = std::fs::read_to_string("/proc/meminfo")?;
        let memory_bytes = meminfo_total_bytes(&meminfo).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "no MemTotal in /proc/meminfo",
            )
        })?;
        Ok(Machine {
            cores: cores.max(1),
            memory_bytes,
        })
    }
}

/// Number of `processor : N` lines in `/proc/cpuinfo` text.
pub fn cpuinfo_processors(text: &str) -> Option<u32> {
    let n = text
        .lines()
        .filter(|l| {
            l.split_once(':')
                .is_some_and(|(k, _)| k.trim() == "processor")
        })
        .count() as u32;
    (n > 0).then_some(n)
}

/// `MemTotal` of `/proc/meminfo` text, in bytes.
pub fn meminfo_total_bytes(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut parts = line["MemTotal:".len()..].split_whitespace();
    let n: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => n.checked_mul(1024),
        _ => None,
    }
}

/// Bytes in regular files under `dir`, following no symlinks, at most `max_entries` entries
/// visited (a bound against huge trees; the sum is then a lower bound). A missing directory
/// holds 0 bytes.
pub fn data_dir_bytes(dir: &Path, max_entries: usize) -> std::io::Result<u64> {
    let mut total = 0u64;
    let mut visited = 0usize;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            visited += 1;
            if visited > max_entries {
                return Ok(total);
            }
            let entry = entry?;
            let meta = entry.path().symlink_metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                total = total.saturating_add(meta.len());
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_text() {
        let cpuinfo = "processor\t: 0\nmodel name\t: X\n\nprocessor\t: 1\nmodel name\t: X\n";
        assert_eq!(cpuinfo_processors(cpuinfo), Some(2));
        assert_eq!(cpuinfo_processors("model name: X\n"), None);
        let meminfo = "MemTotal:       24576000 kB\nMemFree:         1000 kB\n";
        assert_eq!(meminfo_total_bytes(meminfo), Some(24_576_000 * 1024));
        assert_eq!(meminfo_total_bytes("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn detects_this_machine() {
        let m = Machine::detect().unwrap();
        assert!(m.cores >= 1);
        assert!(m.memory_bytes > 64 * 1024 * 1024);
    }

    #[test]
    fn sums_a_directory_tree() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("a"), vec![0u8; 1000]).unwrap();
        std::fs::write(dir.path().join("sub/b"), vec![0u8; 234]).unwrap();
        assert_eq!(data_dir_bytes(dir.path(), 1000).unwrap(), 1234);
        assert_eq!(data_dir_bytes(&dir.path().join("none"), 1000).unwrap(), 0);
    }
}
