//! Plain-text tables for results, disk reports and comparisons.
//!
//! Invariant: pure formatting of plain data into a `String`; every figure shown is a field of
//! the JSON form, so table and JSON never disagree.

use std::fmt::Write;

use crate::compare::CompareOutput;
use crate::disk::fio::FioReport;
use crate::disk::DiskReport;
use crate::latency::LatencySummary;
use crate::ratio::{metric, METRICS};
use crate::result::BenchResult;

/// One workload result.
pub fn result_table(r: &BenchResult) -> String {
    let mut s = String::new();
    let label = if r.label.is_empty() {
        String::new()
    } else {
        format!(" [{}]", r.label)
    };
    let _ = writeln!(
        s,
        "workload {}{}  endpoints {}",
        r.workload,
        label,
        r.endpoints.join(",")
    );
    let _ = writeln!(
        s,
        "clients {}  conns {}  duration {:.2} s",
        r.clients, r.conns, r.duration_s
    );
    let _ = writeln!(
        s,
        "ops {}  successes {}  errors {}  qps {:.1}",
        r.ops, r.successes, r.error_total, r.qps
    );
    let _ = writeln!(
        s,
        "{:<16}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
        "latency (ms)", "p50", "p90", "p99", "p99.9", "max", "mean"
    );
    let _ = writeln!(
        s,
        "{:<16}{:>10.3}{:>10.3}{:>10.3}{:>10.3}{:>10.3}{:>10.3}",
        "operation", r.p50_ms, r.p90_ms, r.p99_ms, r.p999_ms, r.max_ms, r.mean_ms
    );
    for (name, l) in &r.latencies {
        let _ = writeln!(s, "{}", latency_row(name, l));
    }
    if !r.errors.is_empty() {
        let list: Vec<String> = r.errors.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(s, "errors: {}", list.join(" "));
    }
    if !r.counters.is_empty() {
        let list: Vec<String> = r.counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(s, "counters: {}", list.join(" "));
    }
    s
}

fn latency_row(name: &str, l: &LatencySummary) -> String {
    format!(
        "{:<16}{:>10.3}{:>10.3}{:>10.3}{:>10.3}{:>10.3}{:>10.3}",
        name, l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.mean_ms
    )
}

/// A disk report, with fio's figures beside it when given.
pub fn disk_table(d: &DiskReport, fio: Option<&FioReport>) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "disk check in {}: {} writes of {} B (engine {}, O_DIRECT {}), {:.2} s",
        d.dir, d.writes, d.block_size, d.engine, d.direct, d.elapsed_s
    );
    let _ = writeln!(
        s,
        "{:<22}{:>10}{:>10}{:>10}{:>10}{:>10}",
        "fdatasync (ms)", "p50", "p90", "p99", "p99.9", "max"
    );
    let _ = writeln!(
        s,
        "{:<22}{:>10.3}{:>10.3}{:>10.3}{:>10.3}{:>10.3}",
        "ballast-bench disk", d.p50_ms, d.p90_ms, d.p99_ms, d.p999_ms, d.max_ms
    );
    if let Some(f) = fio {
        let _ = writeln!(
            s,
            "{:<22}{:>10.3}{:>10.3}{:>10.3}{:>10.3}{:>10.3}",
            "fio (sync engine)", f.p50_ms, f.p90_ms, f.p99_ms, f.p999_ms, f.max_ms
        );
    }
    let verdict = if d.pass { "PASS" } else { "FAIL" };
    let _ = writeln!(
        s,
        "verdict: {verdict} (etcd wants fdatasync p99 below {} ms; measured {:.3} ms)",
        d.threshold_ms, d.p99_ms
    );
    s
}

/// A comparison: both sides and B/A per metric.
pub fn compare_table(c: &CompareOutput) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "workload {}  rounds {}", c.a.workload, c.runs.len() / 2);
    // Column width: 18, or wider for a long side label (`A ballast x3 leader`), always with a
    // space before it so the two labels never run together.
    let w = 18.max(c.a.label.len().max(c.b.label.len()) + 1);
    let _ = writeln!(
        s,
        "{:<22}{:>w$}{:>w$}{:>10}",
        "metric", c.a.label, c.b.label, "B/A"
    );
    let value = |v: f64| {
        if v.is_finite() {
            format!("{v:.3}")
        } else {
            "-".to_string()
        }
    };
    for (name, _) in METRICS {
        let ratio = c.ratios.0.get(*name).copied().flatten();
        let _ = writeln!(
            s,
            "{:<22}{:>w$}{:>w$}{:>10}",
            name,
            value(metric(&c.a, name)),
            value(metric(&c.b, name)),
            ratio.map_or("-".to_string(), |r| format!("{r:.3}"))
        );
    }
    for (name, r) in &c.ratios.0 {
        if !METRICS.iter().any(|(m, _)| m == name) {
            let _ = writeln!(
                s,
                "{:<22}{:>w$}{:>w$}{:>10}",
                name,
                "",
                "",
                r.map_or("-".to_string(), |r| format!("{r:.3}"))
            );
        }
    }
    let _ = writeln!(
        s,
        "ops A {} (errors {})  ops B {} (errors {})",
        c.a.ops, c.a.error_total, c.b.ops, c.b.error_total
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratio::ratios;
    use crate::result::BenchResult;

    #[test]
    fn long_side_labels_stay_apart_and_columns_line_up() {
        let side = |label: &str, qps: f64| BenchResult {
            label: label.into(),
            workload: "put".into(),
            qps,
            ..Default::default()
        };
        let a = side("A etcd x3 leader", 1000.0);
        let b = side("B ballast x3 leader", 1500.0);
        let c = CompareOutput {
            ratios: ratios(&a, &b),
            runs: vec![a.clone(), b.clone()],
            a,
            b,
        };
        let text = compare_table(&c);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[1].contains("A etcd x3 leader B ballast x3 leader"),
            "{text}"
        );
        let qps = lines.iter().find(|l| l.starts_with("qps")).unwrap();
        assert_eq!(
            qps.len(),
            lines[1].len(),
            "values under their labels:\n{text}"
        );
    }
}
