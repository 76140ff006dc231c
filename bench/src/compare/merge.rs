//! Merges the rounds one side ran in a `compare` into one result: histograms merged, counts and
//! measured time added.
//!
//! Invariants: the merged `ops`, `successes` and `errors` are sums over the rounds, so they
//! still add up; `qps` is total successes over total measured time; latency percentiles come
//! from the merged histograms, never from averaging percentiles; server CPU is summed over the
//! rounds and divided by the total ops, and is present only if every round measured it.

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
    let mut server_cpu_s = Some(0.0);
    for run in runs {
        server_cpu_s = server_cpu_s
            .zip(run.result.server_cpu_s)
            .map(|(a, b)| a + b);
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
    r.server_cpu_s = None;
    r.server_cpu_ms_per_op = None;
    if let Some(cpu_s) = server_cpu_s {
        r.set_server_cpu(cpu_s);
    }
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
        assert_eq!(m.result.server_cpu_s, None, "no round measured CPU");
    }

    #[test]
    fn server_cpu_is_summed_and_divided_by_all_ops() {
        let mut a = run(1, 300, 1.0, 2);
        a.result.ops = 302;
        a.result.set_server_cpu(0.5);
        let mut b = run(1, 98, 1.0, 0);
        b.result.ops = 98;
        b.result.set_server_cpu(0.3);
        let m = merge_runs(&[a.clone(), b.clone()]);
        assert!((m.result.server_cpu_s.unwrap() - 0.8).abs() < 1e-9);
        let per_op = m.result.server_cpu_ms_per_op.unwrap();
        assert!((per_op - 2.0).abs() < 1e-9, "800 ms over 400 ops: {per_op}");
        b.result.server_cpu_s = None;
        b.result.server_cpu_ms_per_op = None;
        let m = merge_runs(&[a, b]);
        assert_eq!(m.result.server_cpu_s, None, "one round without a pid");
        assert_eq!(m.result.server_cpu_ms_per_op, None);
    }
}
