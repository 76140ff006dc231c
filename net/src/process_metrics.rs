//! The `process_*` metrics etcd exposes (the Prometheus Go client's process collector), read
//! from `/proc/self` on each scrape: memory, CPU time, file descriptors, start time.
//!
//! Invariants: CPU and start times are in clock ticks at `USER_HZ` = 100 (the unit of these
//! `/proc/<pid>/stat` fields on every architecture Ballast builds for); memory comes from
//! `/proc/self/status` in kB. A figure that cannot be read is left out of the page, never
//! shown as 0. The command name in `stat` may hold spaces and parentheses, so fields are
//! counted from its last `)`.

use std::fs;

const USER_HZ: f64 = 100.0;

/// One sample per figure that could be read, in Prometheus text with etcd's help texts.
pub fn exposition() -> String {
    let mut out = String::new();
    let stat = fs::read_to_string("/proc/self/stat").ok();
    let fields: Vec<&str> = stat
        .as_deref()
        .and_then(|s| s.rsplit_once(')'))
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // After the name, field 3 (state) is index 0: utime is field 14, stime 15, starttime 22.
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    if let (Some(user), Some(system)) = (field(14), field(15)) {
        sample(
            &mut out,
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            (user + system) as f64 / USER_HZ,
        );
    }
    if let Ok(fds) = fs::read_dir("/proc/self/fd") {
        sample(
            &mut out,
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            fds.count() as f64,
        );
    }
    let limits = fs::read_to_string("/proc/self/limits").unwrap_or_default();
    if let Some(max) = soft_limit(&limits, "Max open files") {
        sample(
            &mut out,
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            max,
        );
    }
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    if let Some(rss) = status_kb(&status, "VmRSS:") {
        sample(
            &mut out,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            rss,
        );
    }
    let btime = fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<u64>().ok())
    });
    if let (Some(boot), Some(start)) = (btime, field(22)) {
        sample(
            &mut out,
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            boot as f64 + start as f64 / USER_HZ,
        );
    }
    if let Some(size) = status_kb(&status, "VmSize:") {
        sample(
            &mut out,
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            size,
        );
    }
    if let Some(max) = soft_limit(&limits, "Max address space") {
        sample(
            &mut out,
            "process_virtual_memory_max_bytes",
            "gauge",
            "Maximum amount of virtual memory available in bytes.",
            max,
        );
    }
    out
}

fn sample(out: &mut String, name: &str, kind: &str, help: &str, value: f64) {
    out.push_str(&format!(
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
    ));
}

/// A `/proc/self/status` figure in kB, as bytes.
fn status_kb(status: &str, key: &str) -> Option<f64> {
    let line = status.lines().find_map(|l| l.strip_prefix(key))?;
    let kb: u64 = line.split_whitespace().next()?.parse().ok()?;
    Some((kb * 1024) as f64)
}

/// The soft limit of a `/proc/self/limits` row; "unlimited" is the largest u64, as the Go
/// collector reports it.
fn soft_limit(limits: &str, row: &str) -> Option<f64> {
    let rest = limits.lines().find_map(|l| l.strip_prefix(row))?;
    match rest.split_whitespace().next()? {
        "unlimited" => Some(u64::MAX as f64),
        v => v.parse::<u64>().ok().map(|v| v as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_shows_etcds_process_metrics_with_plausible_values() {
        let text = exposition();
        let value = |name: &str| -> f64 {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}\n{text}");
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name}\n{text}"))
        };
        assert!(value("process_resident_memory_bytes") > 1e6);
        assert!(value("process_virtual_memory_bytes") >= value("process_resident_memory_bytes"));
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_max_fds") >= value("process_open_fds"));
        assert!(value("process_cpu_seconds_total") >= 0.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        let started = value("process_start_time_seconds");
        assert!(
            started <= now + 1.0 && started > now - 86_400.0,
            "{started} vs {now}"
        );
        assert!(text.contains("# TYPE process_cpu_seconds_total counter\n"));
        assert!(value("process_virtual_memory_max_bytes") > 0.0);
    }

    #[test]
    fn limits_rows_parse_with_unlimited_as_the_largest_value() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 1048576              files\n\
                      Max address space         unlimited            unlimited            bytes\n";
        assert_eq!(soft_limit(limits, "Max open files"), Some(1024.0));
        assert_eq!(
            soft_limit(limits, "Max address space"),
            Some(u64::MAX as f64)
        );
        assert_eq!(
            status_kb("VmRSS:\t   2048 kB\n", "VmRSS:"),
            Some(2048.0 * 1024.0)
        );
    }
}
