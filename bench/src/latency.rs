//! Latency histograms: one HDR histogram per client, merged at the end of a run.
//!
//! Invariants: values are recorded in microseconds (1 µs resolution, 3 significant digits);
//! a latency of zero is recorded as 1 µs so every operation counts; the histogram resizes itself,
//! so no latency is ever dropped for being out of range.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Significant decimal digits kept by every histogram.
pub const SIGNIFICANT_DIGITS: u8 = 3;

/// Percentiles (in percent) sampled for the latency curve that `report` plots.
pub const CURVE_PERCENTILES: &[f64] = &[
    0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.999, 100.0,
];

/// A latency histogram in microseconds.
#[derive(Clone, Debug)]
pub struct Latency {
    hist: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    /// An empty histogram.
    pub fn new() -> Self {
        let hist = Histogram::new(SIGNIFICANT_DIGITS).expect("3 significant digits is valid");
        Self { hist }
    }

    /// Records one latency.
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX / 2)
            .max(1);
        if self.hist.record(micros).is_err() {
            self.hist.saturating_record(micros);
        }
    }

    /// Adds every sample of `other` to `self`.
    pub fn merge(&mut self, other: &Latency) {
        self.hist
            .add(&other.hist)
            .expect("auto-resizing histograms always merge");
    }

    /// Number of samples recorded.
    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// The underlying HDR histogram (for the HDR log writer).
    pub fn histogram(&self) -> &Histogram<u64> {
        &self.hist
    }

    /// Latency at `percentile` (0..=100) in milliseconds; 0 when empty.
    pub fn percentile_ms(&self, percentile: f64) -> f64 {
        if self.hist.is_empty() {
            return 0.0;
        }
        micros_to_ms(self.hist.value_at_percentile(percentile))
    }

    /// The summary that results carry: the fixed percentiles plus the plotted curve.
    pub fn summary(&self) -> LatencySummary {
        let empty = self.hist.is_empty();
        let pick = |v: u64| if empty { 0.0 } else { micros_to_ms(v) };
        LatencySummary {
            count: self.count(),
            min_ms: pick(self.hist.min()),
            mean_ms: if empty {
                0.0
            } else {
                self.hist.mean() / 1000.0
            },
            p50_ms: self.percentile_ms(50.0),
            p90_ms: self.percentile_ms(90.0),
            p99_ms: self.percentile_ms(99.0),
            p999_ms: self.percentile_ms(99.9),
            max_ms: pick(self.hist.max()),
            curve: CURVE_PERCENTILES
                .iter()
                .map(|&p| CurvePoint {
                    percentile: p,
                    ms: self.percentile_ms(p),
                })
                .collect(),
        }
    }
}

fn micros_to_ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

/// Fixed percentiles of one latency distribution, in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub min_ms: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// Latency at each of [`CURVE_PERCENTILES`], for plotting.
    pub curve: Vec<CurvePoint>,
}

/// One point of a latency percentile curve.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    pub percentile: f64,
    pub ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn within(actual: f64, expected: f64) -> bool {
        // 3 significant digits: relative error at most 0.1 %.
        (actual - expected).abs() <= expected * 0.001 + 0.001
    }

    #[test]
    fn percentiles_of_uniform_1_to_1000_ms() {
        let mut l = Latency::new();
        for ms in 1..=1000u64 {
            l.record(Duration::from_millis(ms));
        }
        let s = l.summary();
        assert_eq!(s.count, 1000);
        assert!(within(s.p50_ms, 500.0), "p50 {}", s.p50_ms);
        assert!(within(s.p90_ms, 900.0), "p90 {}", s.p90_ms);
        assert!(within(s.p99_ms, 990.0), "p99 {}", s.p99_ms);
        // 99.9 % of 1000 rounds up to the 1000th sample in floating point: 999 or 1000 ms.
        assert!(
            within(s.p999_ms, 999.0) || within(s.p999_ms, 1000.0),
            "p999 {}",
            s.p999_ms
        );
        assert!(within(s.max_ms, 1000.0), "max {}", s.max_ms);
        assert!(within(s.min_ms, 1.0), "min {}", s.min_ms);
        assert!(within(s.mean_ms, 500.5), "mean {}", s.mean_ms);
        assert_eq!(s.curve.len(), CURVE_PERCENTILES.len());
        assert!(
            s.curve.windows(2).all(|w| w[0].ms <= w[1].ms),
            "curve is monotone"
        );
    }

    #[test]
    fn merge_adds_samples_and_keeps_tail() {
        let mut a = Latency::new();
        let mut b = Latency::new();
        for _ in 0..99 {
            a.record(Duration::from_micros(200));
        }
        b.record(Duration::from_millis(50));
        a.merge(&b);
        assert_eq!(a.count(), 100);
        assert!(within(a.percentile_ms(50.0), 0.2));
        assert!(within(a.summary().max_ms, 50.0));
        assert!(
            within(a.percentile_ms(99.0), 0.2),
            "99 of 100 samples are 0.2 ms"
        );
    }

    #[test]
    fn zero_latency_still_counts_and_empty_is_zero() {
        let mut l = Latency::new();
        assert_eq!(l.summary().p99_ms, 0.0);
        l.record(Duration::ZERO);
        assert_eq!(l.count(), 1);
        assert!(within(l.percentile_ms(100.0), 0.001));
    }
}
