//! A latency histogram with etcd's disk buckets, for the figures operators' dashboards read
//! (`etcd_disk_wal_fsync_duration_seconds`, `etcd_disk_backend_commit_duration_seconds`).
//!
//! etcd 3.4 counts both in 14 buckets whose upper bounds double from 1 ms: 0.001, 0.002, ...,
//! 8.192 seconds, and a last `+Inf` bucket. Counts are kept per bucket (not cumulative) so two
//! histograms merge by adding; the exposition makes them cumulative. The sum is kept in
//! nanoseconds so the type stays `Eq` and `Copy` (it rides in `WalStats`).

use std::time::Duration;

/// Upper bounds of the finite buckets, in seconds.
pub const DISK_BUCKET_BOUNDS_SECONDS: [f64; DISK_BUCKETS] = [
    0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096,
    8.192,
];

/// Finite buckets; one more counts what exceeds the last bound.
pub const DISK_BUCKETS: usize = 14;

/// The same bounds in nanoseconds, which is what observations compare against.
const BOUNDS_NS: [u64; DISK_BUCKETS] = {
    let mut out = [0u64; DISK_BUCKETS];
    let mut i = 0;
    while i < DISK_BUCKETS {
        out[i] = 1_000_000 << i;
        i += 1;
    }
    out
};
const _: () = assert!(BOUNDS_NS[DISK_BUCKETS - 1] == 8_192_000_000);

/// Observations of one duration, bucketed by [`DISK_BUCKET_BOUNDS_SECONDS`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskHistogram {
    /// Observations per bucket: index `i < DISK_BUCKETS` holds those in
    /// `(bound[i-1], bound[i]]`, the last those above 8.192 s.
    pub buckets: [u64; DISK_BUCKETS + 1],
    pub sum_ns: u64,
    pub count: u64,
}

impl DiskHistogram {
    pub fn observe(&mut self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        // Prometheus buckets are `le`: a value equal to a bound falls in that bound's bucket.
        let i = BOUNDS_NS.partition_point(|&bound| bound < ns);
        self.buckets[i] += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
        self.count += 1;
    }

    /// Adds `other`'s observations (one member's shards into one series).
    pub fn merge(&mut self, other: &DiskHistogram) {
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets) {
            *mine += theirs;
        }
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
        self.count += other.count;
    }

    /// Cumulative counts for each finite bound (`le`), as the exposition writes them; the
    /// `+Inf` bucket is [`Self::count`].
    pub fn cumulative(&self) -> [u64; DISK_BUCKETS] {
        let mut out = [0; DISK_BUCKETS];
        let mut running = 0;
        for (slot, n) in out.iter_mut().zip(self.buckets) {
            running += n;
            *slot = running;
        }
        out
    }

    pub fn sum_seconds(&self) -> f64 {
        self.sum_ns as f64 / 1e9
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_double_from_one_millisecond_as_etcd_defines_them() {
        for (i, (&s, &ns)) in DISK_BUCKET_BOUNDS_SECONDS
            .iter()
            .zip(&BOUNDS_NS)
            .enumerate()
        {
            assert_eq!(s, 0.001 * f64::from(1u32 << i));
            assert_eq!((s * 1e9).round() as u64, ns);
        }
    }

    #[test]
    fn observations_fall_in_their_le_bucket_and_merge_by_adding() {
        let mut h = DiskHistogram::default();
        h.observe(Duration::from_micros(300)); // <= 0.001
        h.observe(Duration::from_millis(1)); // == 0.001: still the first bucket
        h.observe(Duration::from_micros(1001)); // <= 0.002
        h.observe(Duration::from_millis(100)); // <= 0.128
        h.observe(Duration::from_secs(10)); // +Inf only
        let c = h.cumulative();
        assert_eq!(c[0], 2);
        assert_eq!(c[1], 3);
        assert_eq!(c[6], 3);
        assert_eq!(c[7], 4);
        assert_eq!(c[DISK_BUCKETS - 1], 4);
        assert_eq!(h.count, 5);
        assert_eq!(
            h.sum_ns,
            300_000 + 1_000_000 + 1_001_000 + 100_000_000 + 10_000_000_000
        );
        let mut two = h;
        two.merge(&h);
        assert_eq!(two.count, 10);
        assert_eq!(two.cumulative()[7], 8);
        assert_eq!(two.sum_ns, 2 * h.sum_ns);
    }
}
