//! The CPU time a process has used, as the kernel counts it in `/proc/<pid>/stat` (`utime` +
//! `stime`, every thread of the process, living or exited), so `compare` can report a started
//! server's CPU per operation over the measured phase; for a started cluster, the sum over its
//! member processes.
//!
//! Invariants: the figures are in seconds, converted from clock ticks at `USER_HZ` = 100 (the
//! unit the kernel uses for these fields on every architecture Ballast builds for, whatever its
//! own HZ); the resolution is therefore 10 ms, fine for windows of a second and more. A field
//! that cannot be parsed is an error, never 0. The command name (field 2) may hold spaces and
//! parentheses, so the numeric fields are counted from its *last* closing parenthesis.
//!
//! Worked example: `1234 (ballast (x)) S 1 ... 370 45 ...` with `utime` = 370 and `stime` =
//! 45 ticks is 4.15 s of CPU; sampled again after 25,000 puts at 1,185 / 120 ticks, the window
//! used (1305 - 415) ticks = 8.9 s, i.e. 0.356 ms of server CPU per put.

use anyhow::{anyhow, Context, Result};

/// Clock ticks per second of the `/proc/<pid>/stat` time fields (`USER_HZ`).
pub const USER_HZ: u64 = 100;

/// A process's CPU time so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTicks {
    /// Time spent in user mode (`utime`, field 14), in clock ticks.
    pub user: u64,
    /// Time spent in the kernel on the process's behalf (`stime`, field 15), in clock ticks.
    pub system: u64,
}

impl CpuTicks {
    /// User plus system time in seconds.
    pub fn total_s(&self) -> f64 {
        (self.user + self.system) as f64 / USER_HZ as f64
    }

    /// The sum of two processes' (or two samples') times.
    pub fn plus(&self, other: &CpuTicks) -> CpuTicks {
        CpuTicks {
            user: self.user + other.user,
            system: self.system + other.system,
        }
    }

    /// The CPU seconds used between `earlier` and `self` (0 if the counters went backwards,
    /// which they do only when the pid was reused).
    pub fn since_s(&self, earlier: &CpuTicks) -> f64 {
        let now = self.user + self.system;
        let then = earlier.user + earlier.system;
        now.saturating_sub(then) as f64 / USER_HZ as f64
    }
}

/// Parses the text of `/proc/<pid>/stat` (or `/proc/<pid>/task/<tid>/stat`).
pub fn parse_stat(text: &str) -> Result<CpuTicks> {
    let close = text
        .rfind(')')
        .ok_or_else(|| anyhow!("no `(comm)` in stat line {text:?}"))?;
    // Fields after the command name start at field 3 (`state`); utime is field 14, stime 15.
    let mut rest = text[close + 1..].split_whitespace().skip(14 - 3);
    let mut field = |name: &str| -> Result<u64> {
        rest.next()
            .ok_or_else(|| anyhow!("stat line too short for {name}: {text:?}"))?
            .parse()
            .with_context(|| format!("parsing {name} in {text:?}"))
    };
    let user = field("utime")?;
    let system = field("stime")?;
    Ok(CpuTicks { user, system })
}

/// The CPU time of process `pid` so far.
pub fn read_cpu(pid: u32) -> Result<CpuTicks> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_stat(&text)
}

/// The CPU time of processes `pids` so far, summed (e.g. the members of a started cluster).
/// Every pid must be readable: a member that exited is an error, not a smaller sum.
pub fn read_cpu_total(pids: &[u32]) -> Result<CpuTicks> {
    pids.iter().try_fold(CpuTicks::default(), |sum, &pid| {
        Ok(sum.plus(&read_cpu(pid)?))
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    /// A real line (etcd 3.4 under load), with its command name made awkward on purpose.
    const LINE: &str = "4242 (etc d) (x)) S 4200 4242 4200 0 -1 4194560 8317 0 0 0 \
                        1185 120 0 0 20 0 12 0 1064399 11601920000 9912 \
                        18446744073709551615 1 1 0 0 0 0 0 0 2143420159 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn parses_utime_and_stime_after_the_last_parenthesis() {
        let t = parse_stat(LINE).unwrap();
        assert_eq!(
            t,
            CpuTicks {
                user: 1185,
                system: 120
            }
        );
        assert!((t.total_s() - 13.05).abs() < 1e-9);
        let before = CpuTicks {
            user: 370,
            system: 45,
        };
        assert!((t.since_s(&before) - 8.9).abs() < 1e-9);
        assert_eq!(before.since_s(&t), 0.0, "a reused pid counts nothing");
    }

    #[test]
    fn sums_processes() {
        let a = CpuTicks {
            user: 370,
            system: 45,
        };
        let b = CpuTicks {
            user: 30,
            system: 5,
        };
        assert_eq!(
            a.plus(&b),
            CpuTicks {
                user: 400,
                system: 50
            }
        );
        assert_eq!(read_cpu_total(&[]).unwrap(), CpuTicks::default());
        let me = std::process::id();
        assert!(read_cpu_total(&[me, me]).is_ok());
        assert!(
            read_cpu_total(&[me, u32::MAX]).is_err(),
            "a pid that does not exist is an error"
        );
    }

    #[test]
    fn refuses_a_truncated_or_garbled_line() {
        assert!(parse_stat("4242 (etcd) S 1 2 3").is_err());
        assert!(parse_stat("4242 etcd S").is_err());
        let garbled = LINE.replace(" 1185 ", " 11x5 ");
        assert!(parse_stat(&garbled).is_err());
    }

    /// The unit check: a thread that burns ~300 ms of CPU sees its own `utime + stime` grow by
    /// about that much, so `USER_HZ` is right on this machine. Measured on the thread (the test
    /// harness runs other tests in parallel threads of the same process), against its own
    /// nanosecond runtime from `schedstat` where the kernel has it, else the wall time.
    #[test]
    fn counts_this_threads_cpu_in_seconds() {
        let stat = "/proc/thread-self/stat";
        let sched = "/proc/thread-self/schedstat";
        let read_ns = || -> Option<u64> {
            let text = std::fs::read_to_string(sched).ok()?;
            text.split_whitespace().next()?.parse().ok()
        };
        let before = parse_stat(&std::fs::read_to_string(stat).unwrap()).unwrap();
        let ns_before = read_ns();
        let t0 = Instant::now();
        let mut x = 1u64;
        while t0.elapsed() < Duration::from_millis(300) {
            for i in 0..10_000u64 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
            }
        }
        let wall_s = t0.elapsed().as_secs_f64();
        let after = parse_stat(&std::fs::read_to_string(stat).unwrap()).unwrap();
        let used_s = after.since_s(&before);
        let reference_s = match (ns_before, read_ns()) {
            (Some(a), Some(b)) => (b - a) as f64 / 1e9,
            _ => wall_s,
        };
        // Ticks are sampled, so allow two ticks and a quarter either way.
        assert!(
            (used_s - reference_s).abs() <= 0.02 + reference_s * 0.25,
            "stat says {used_s} s, the scheduler {reference_s} s (wall {wall_s} s)"
        );
    }
}
