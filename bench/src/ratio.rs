//! Ratio math for `compare`: B relative to A, per metric.
//!
//! Invariant: a ratio is `b / a`; it is `None` when `a` is zero or either side is not finite,
//! never infinity or NaN, so JSON output stays valid. For latency a ratio below 1 means B is
//! faster; for throughput a ratio above 1 means B is faster.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::result::BenchResult;

/// `b / a`, or `None` when undefined.
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    if a == 0.0 || !a.is_finite() || !b.is_finite() {
        None
    } else {
        Some(b / a)
    }
}

/// The metrics compared, in display order: (name, higher is better).
pub const METRICS: &[(&str, bool)] = &[
    ("qps", true),
    ("p50_ms", false),
    ("p90_ms", false),
    ("p99_ms", false),
    ("p999_ms", false),
    ("max_ms", false),
    ("server_cpu_ms_per_op", false),
    ("server_cpu_s", false),
];

/// The value of a named metric of a result; NaN for a server CPU figure that was not measured
/// (so its ratio is `None`).
pub fn metric(r: &BenchResult, name: &str) -> f64 {
    match name {
        "qps" => r.qps,
        "p50_ms" => r.p50_ms,
        "p90_ms" => r.p90_ms,
        "p99_ms" => r.p99_ms,
        "p999_ms" => r.p999_ms,
        "max_ms" => r.max_ms,
        "server_cpu_ms_per_op" => r.server_cpu_ms_per_op.unwrap_or(f64::NAN),
        "server_cpu_s" => r.server_cpu_s.unwrap_or(f64::NAN),
        other => panic!("unknown metric {other}"),
    }
}

/// B/A for every metric of [`METRICS`], plus `event_*` metrics where both carry an `event`
/// latency (watch).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Ratios(pub BTreeMap<String, Option<f64>>);

/// Computes the per-metric ratios of `b` over `a`.
pub fn ratios(a: &BenchResult, b: &BenchResult) -> Ratios {
    let mut out = BTreeMap::new();
    for (name, _) in METRICS {
        out.insert((*name).to_string(), ratio(metric(a, name), metric(b, name)));
    }
    for (kind, la) in &a.latencies {
        if let Some(lb) = b.latencies.get(kind) {
            out.insert(format!("{kind}_p50_ms"), ratio(la.p50_ms, lb.p50_ms));
            out.insert(format!("{kind}_p99_ms"), ratio(la.p99_ms, lb.p99_ms));
        }
    }
    Ratios(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::LatencySummary;

    #[test]
    fn ratio_basics() {
        assert_eq!(ratio(2.0, 1.0), Some(0.5));
        assert_eq!(ratio(4.0, 12.0), Some(3.0));
        assert_eq!(ratio(0.0, 1.0), None);
        assert_eq!(ratio(f64::NAN, 1.0), None);
        assert_eq!(ratio(1.0, f64::INFINITY), None);
        assert_eq!(ratio(3.0, 0.0), Some(0.0));
    }

    #[test]
    fn ratios_per_metric() {
        let a = BenchResult {
            qps: 1000.0,
            p50_ms: 1.0,
            p99_ms: 4.0,
            p999_ms: 8.0,
            max_ms: 0.0,
            ..Default::default()
        };
        let mut b = BenchResult {
            qps: 3000.0,
            p50_ms: 0.5,
            p99_ms: 1.0,
            p999_ms: 2.0,
            max_ms: 5.0,
            ..Default::default()
        };
        b.latencies.insert(
            "event".into(),
            LatencySummary {
                p99_ms: 2.0,
                ..Default::default()
            },
        );
        let r = ratios(&a, &b).0;
        assert_eq!(r["qps"], Some(3.0));
        assert_eq!(r["p50_ms"], Some(0.5));
        assert_eq!(r["p99_ms"], Some(0.25));
        assert_eq!(r["p999_ms"], Some(0.25));
        assert_eq!(r["max_ms"], None, "a zero baseline has no ratio");
        assert!(!r.contains_key("event_p99_ms"), "A has no event latency");
        assert_eq!(r["server_cpu_ms_per_op"], None, "no server CPU measured");
    }

    #[test]
    fn server_cpu_ratio() {
        let mut a = BenchResult {
            ops: 1000,
            ..Default::default()
        };
        a.set_server_cpu(2.0);
        let mut b = BenchResult {
            ops: 4000,
            ..Default::default()
        };
        b.set_server_cpu(2.0);
        let r = ratios(&a, &b).0;
        assert_eq!(a.server_cpu_ms_per_op, Some(2.0));
        assert_eq!(r["server_cpu_ms_per_op"], Some(0.25));
        assert_eq!(r["server_cpu_s"], Some(1.0));
    }
}
