//! Open-loop pacing for `--rate`: operation number `seq` may start no earlier than
//! `start + seq / rate`, shared by all clients.
//!
//! Invariant: over any run the number of started operations never exceeds
//! `rate × elapsed + 1`; with no rate, operations start as fast as clients free up.

use std::time::Duration;

use tokio::time::Instant;

/// A start schedule.
#[derive(Clone, Copy, Debug)]
pub struct Pacer {
    start: Instant,
    rate_per_s: Option<f64>,
}

impl Pacer {
    /// A schedule starting at `start`; `rate_per_s` of `None` or `<= 0` means unpaced.
    pub fn new(start: Instant, rate_per_s: Option<f64>) -> Self {
        Self {
            start,
            rate_per_s: rate_per_s.filter(|r| *r > 0.0 && r.is_finite()),
        }
    }

    /// When operation `seq` may start.
    pub fn slot(&self, seq: u64) -> Option<Instant> {
        self.rate_per_s.map(|r| self.start + offset(seq, r))
    }

    /// Waits for operation `seq`'s slot.
    pub async fn wait(&self, seq: u64) {
        if let Some(at) = self.slot(seq) {
            tokio::time::sleep_until(at).await;
        }
    }
}

/// `seq / rate` seconds.
pub fn offset(seq: u64, rate_per_s: f64) -> Duration {
    Duration::from_secs_f64(seq as f64 / rate_per_s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets() {
        assert_eq!(offset(0, 100.0), Duration::ZERO);
        assert_eq!(offset(50, 100.0), Duration::from_millis(500));
        assert_eq!(offset(3000, 1000.0), Duration::from_secs(3));
    }

    #[tokio::test]
    async fn unpaced_has_no_slot() {
        let now = Instant::now();
        assert!(Pacer::new(now, None).slot(5).is_none());
        assert!(Pacer::new(now, Some(0.0)).slot(5).is_none());
        assert_eq!(
            Pacer::new(now, Some(10.0)).slot(5),
            Some(now + Duration::from_millis(500))
        );
    }
}
