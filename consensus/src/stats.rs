//! Per-shard latency figures: HDR histograms of fixed size (1 ns to 60 s at 3 significant
//! digits), cumulative since the shard started. A value out of range is clamped, never lost.

/// Largest value recorded, in the histogram's unit; larger values are clamped to it.
const VALUE_MAX: u64 = 60_000_000_000;

pub struct Histogram {
    inner: hdrhistogram::Histogram<u64>,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

impl Histogram {
    pub fn new() -> Histogram {
        Histogram {
            inner: hdrhistogram::Histogram::new_with_bounds(1, VALUE_MAX, 3)
                .expect("constant bounds are valid"),
        }
    }

    pub fn record(&mut self, value: u64) {
        self.inner.saturating_record(value.clamp(1, VALUE_MAX));
    }

    /// The value at `quantile` (0.0..=1.0); 0 when nothing was recorded.
    pub fn quantile(&self, quantile: f64) -> u64 {
        if self.inner.is_empty() {
            return 0;
        }
        self.inner.value_at_quantile(quantile)
    }

    pub fn count(&self) -> u64 {
        self.inner.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_clamping() {
        let mut h = Histogram::new();
        assert_eq!(h.quantile(0.99), 0);
        for v in 1..=100 {
            h.record(v * 1000);
        }
        h.record(u64::MAX);
        assert_eq!(h.count(), 101);
        let p50 = h.quantile(0.5);
        assert!((50_000..=51_100).contains(&p50), "p50 {p50}");
        assert!(h.quantile(1.0) <= VALUE_MAX + VALUE_MAX / 1000);
    }
}
