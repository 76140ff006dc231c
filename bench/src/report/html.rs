//! The report page: a summary table, the throughput plot, then one latency plot per result.
//! Self-contained (inline CSS and SVG, no scripts, no external resources).
//!
//! Invariant: the page is well-formed XHTML, so any HTML or XML parser reads it, with exactly
//! one `latency-plot` SVG per result and one `throughput-plot`.

use std::fmt::Write;

use crate::report::svg::{escape, latency_plot, throughput_plot};
use crate::result::BenchResult;

const STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}\
th{background:#f4f4f4}td.l{text-align:left}svg{margin:8px;border:1px solid #eee}";

/// Renders `results` into one HTML page titled `title`.
pub fn render_page(title: &str, results: &[BenchResult]) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\"><head><meta charset=\"utf-8\"/><title>{t}</title><style>{STYLE}</style></head><body><h1>{t}</h1>",
        t = escape(title)
    );
    s.push_str("<table><tr><th>#</th><th>label</th><th>workload</th><th>clients</th><th>ops</th><th>errors</th><th>qps</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>max ms</th></tr>");
    for (i, r) in results.iter().enumerate() {
        let _ = write!(
            s,
            "<tr><td>{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td></tr>",
            i + 1,
            escape(&r.label),
            escape(&r.workload),
            r.clients,
            r.ops,
            r.error_total,
            r.qps,
            r.p50_ms,
            r.p90_ms,
            r.p99_ms,
            r.p999_ms,
            r.max_ms
        );
    }
    s.push_str("</table><h2>Throughput</h2><div>");
    s.push_str(&throughput_plot(results));
    s.push_str("</div><h2>Latency</h2><div>");
    for r in results {
        s.push_str(&latency_plot(r));
    }
    s.push_str("</div></body></html>\n");
    s
}
