//! Merges the rounds one side ran in a `compare` into one result: histograms merged, counts and
//! measured time added.
//!
//! Invariants: the merged `ops`, `successes` and `errors` are sums over the rounds, so they
//! still add up; `qps` is total successes over total measured time; latency percentiles come
//! from the merged histograms, never from averaging percentiles.

use crate::driver::RunOutput;
use crate::errors;
use crate::latency::Latency;
use crate::workload::Latencies;

/// Merges `runs` (at least one) into one output labelled like the first.
pub fn merge_runs(runs: &[RunOutput]) -> RunOutput {
    let first = runs.first().expect("at least one run to merge");
    let mut out = RunOutput {
        result: first.result.clone(),
        latency: Latency::new(),
        latencies: Latencies::new(),
    };
    let r = &mut out.result;
    r.duration_s = 0.0;
    r.successes = 0;
    r.errors.clear();
    r.counters.clear();
    for run in runs {
        out.latency.merge(&run.latency);
        for (name, l) in &run.latencies {
            out.latencies.entry(name.clone()).or_default().merge(l);
        }
        r.duration_s += run.result.duration_s;
        r.successes += run.result.successes;
        errors::merge(&mut r.errors, &run.result.errors);
        for (k, v) in &run.result.counters {
            *r.counters.entry(k.clone()).or_default() += v;
        }
    }
    r.error_total = errors::total(&r.errors);
    r.ops = r.successes + r.error_total;
    r.qps = if r.duration_s > 0.0 {
        r.successes as f64 / r.duration_s
    } else {
        0.0
    };
    r.set_latency(&out.latency.summary());
    r.latencies = out
        .latencies
        .iter()
        .map(|(k, l)| (k.clone(), l.summary()))
        .collect();
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::result::BenchResult;

    fn run(ms: u64, n: u64, secs: f64, unavailable: u64) -> RunOutput {
        let mut latency = Latency::new();
        for _ in 0..n {
            latency.record(Duration::from_millis(ms));
        }
        let mut result = BenchResult {
            successes: n,
            duration_s: secs,
            ..Default::default()
        };
        if unavailable > 0 {
            result.errors.insert("Unavailable".into(), unavailable);
        }
        RunOutput {
            result,
            latency,
            latencies: Latencies::new(),
        }
    }

    #[test]
    fn merges_counts_and_histograms() {
        let m = merge_runs(&[run(1, 300, 1.0, 2), run(10, 100, 3.0, 0)]);
        assert_eq!(m.result.successes, 400);
        assert_eq!(m.result.error_total, 2);
        assert_eq!(m.result.ops, 402);
        assert!(m.result.counts_add_up());
        assert!(
            (m.result.qps - 100.0).abs() < 1e-9,
            "400 successes over 4 s"
        );
        assert!((m.result.p50_ms - 1.0).abs() < 0.01);
        assert!(
            (m.result.p90_ms - 10.0).abs() < 0.02,
            "the slow round is the top quarter"
        );
    }
}
