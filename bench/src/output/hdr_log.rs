//! Writes a run's latency histogram as an HdrHistogram interval log (V2, deflate-compressed),
//! readable by HdrHistogram's tools (HistogramLogProcessor, HdrHistogramVisualizer).
//!
//! Invariants: one interval covering the whole measured phase; values are microseconds, and
//! the log's max-value divisor of 1000 makes its max column read in milliseconds.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, Context, Result};
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;

use crate::latency::Latency;

/// Writes `latency` to `path`, tagged with `tag` (letters, digits, `-`, `_`).
pub fn write_hdr_log(path: &Path, latency: &Latency, duration: Duration, tag: &str) -> Result<()> {
    let mut buf = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    let start = SystemTime::now()
        .checked_sub(duration)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    {
        let mut writer = IntervalLogWriterBuilder::new()
            .add_comment("ballast-bench latency, values in microseconds")
            .with_start_time(start)
            .with_max_value_divisor(1000.0)
            .begin_log_with(&mut buf, &mut serializer)
            .context("starting the HDR log")?;
        let tag = Tag::new(tag);
        writer
            .write_histogram(latency.histogram(), Duration::ZERO, duration, tag)
            .map_err(|e| anyhow!("writing the HDR log: {e:?}"))?;
    }
    let mut f =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(&buf)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};

    #[test]
    fn log_round_trips_one_interval() {
        let mut l = Latency::new();
        for us in [100u64, 200, 300, 5000] {
            l.record(Duration::from_micros(us));
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("run.hlog");
        write_hdr_log(&path, &l, Duration::from_secs(2), "put").expect("written");
        let bytes = std::fs::read(&path).expect("read back");
        let intervals: Vec<_> = IntervalLogIterator::new(&bytes)
            .filter_map(|e| match e {
                Ok(LogEntry::Interval(h)) => Some((
                    h.tag().map(|t| t.as_str().to_string()),
                    h.duration(),
                    h.max(),
                )),
                _ => None,
            })
            .collect();
        assert_eq!(intervals.len(), 1);
        assert_eq!(intervals[0].0.as_deref(), Some("put"));
        assert_eq!(intervals[0].1, Duration::from_secs(2));
        assert!(
            (intervals[0].2 - 5.0).abs() < 0.01,
            "max in ms: {}",
            intervals[0].2
        );
    }
}
