//! Inline SVG plots: a latency percentile curve per result, and throughput per run.
//!
//! Invariants: output is well-formed XML (every text escaped); the percentile axis is in
//! "nines" (x = -log10(1 - p/100): 90 % → 1, 99 % → 2, ...), capped at five nines, so the tail
//! gets the room it deserves; every plot scales to its own data and never divides by zero.

use std::fmt::Write;

use crate::result::BenchResult;

const W: f64 = 560.0;
const H: f64 = 300.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 45.0;
const NINES_MAX: f64 = 5.0;

/// Escapes text for XML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

/// Percentile (0..=100) → position on the nines axis.
pub fn nines(percentile: f64) -> f64 {
    let rest = (1.0 - percentile / 100.0).max(10f64.powf(-NINES_MAX));
    (-rest.log10()).clamp(0.0, NINES_MAX)
}

/// A round axis maximum at or above `v` (1, 2, 5 × 10^k).
pub fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if v <= m * mag {
            return m * mag;
        }
    }
    10.0 * mag
}

fn plot_w() -> f64 {
    W - LEFT - RIGHT
}

fn plot_h() -> f64 {
    H - TOP - BOTTOM
}

fn open(s: &mut String, class: &str, title: &str) {
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="{class}" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img"><title>{t}</title><text x="{x}" y="18" text-anchor="middle" font-size="13">{t}</text>"#,
        x = W / 2.0,
        t = escape(title)
    );
    let _ = write!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{w}" height="{h}" fill="none" stroke="#999"/>"##,
        w = plot_w(),
        h = plot_h()
    );
}

fn y_ticks(s: &mut String, y_max: f64, unit: &str) {
    for i in 0..=4 {
        let v = y_max * f64::from(i) / 4.0;
        let y = TOP + plot_h() - plot_h() * f64::from(i) / 4.0;
        let _ = write!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{x2}" y2="{y:.1}" stroke="#eee"/><text x="{tx}" y="{ty:.1}" text-anchor="end" font-size="10">{v}</text>"##,
            x2 = LEFT + plot_w(),
            tx = LEFT - 4.0,
            ty = y + 3.0,
            v = escape(&format!("{}{unit}", short(v)))
        );
    }
}

fn short(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// The latency percentile curve of one result.
pub fn latency_plot(r: &BenchResult) -> String {
    let mut s = String::new();
    let title = format!(
        "{} {} latency by percentile (p99 {:.3} ms, max {:.3} ms)",
        r.workload, r.label, r.p99_ms, r.max_ms
    );
    open(&mut s, "latency-plot", &title);
    let y_max = nice_max(
        r.curve
            .iter()
            .filter(|p| p.percentile < 100.0)
            .map(|p| p.ms)
            .fold(0.0, f64::max),
    );
    y_ticks(&mut s, y_max, " ms");
    for (i, label) in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]
        .iter()
        .enumerate()
    {
        let x = LEFT + plot_w() * i as f64 / NINES_MAX;
        let _ = write!(
            s,
            r#"<text x="{x:.1}" y="{y}" text-anchor="middle" font-size="10">{label}</text>"#,
            y = TOP + plot_h() + 14.0
        );
    }
    let _ = write!(
        s,
        r#"<text x="{x}" y="{y}" text-anchor="middle" font-size="11">percentile</text>"#,
        x = LEFT + plot_w() / 2.0,
        y = H - 8.0
    );
    let points: Vec<String> = r
        .curve
        .iter()
        .filter(|p| p.percentile < 100.0)
        .map(|p| {
            let x = LEFT + plot_w() * nines(p.percentile) / NINES_MAX;
            let y = TOP + plot_h() - plot_h() * (p.ms / y_max).min(1.0);
            format!("{x:.1},{y:.1}")
        })
        .collect();
    let _ = write!(
        s,
        r##"<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{}"/>"##,
        points.join(" ")
    );
    s.push_str("</svg>");
    s
}

/// Throughput (successful operations per second) of every result, one bar each.
pub fn throughput_plot(results: &[BenchResult]) -> String {
    let mut s = String::new();
    open(&mut s, "throughput-plot", "throughput per run (ops/s)");
    let y_max = nice_max(results.iter().map(|r| r.qps).fold(0.0, f64::max));
    y_ticks(&mut s, y_max, "");
    let n = results.len().max(1) as f64;
    let slot = plot_w() / n;
    for (i, r) in results.iter().enumerate() {
        let h = plot_h() * (r.qps / y_max).clamp(0.0, 1.0);
        let x = LEFT + slot * i as f64 + slot * 0.15;
        let name = if r.label.is_empty() {
            format!("{} #{}", r.workload, i + 1)
        } else {
            r.label.clone()
        };
        let _ = write!(
            s,
            r##"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="#2ca02c"><title>{t}</title></rect><text x="{cx:.1}" y="{ly}" text-anchor="middle" font-size="10">{l}</text>"##,
            y = TOP + plot_h() - h,
            w = slot * 0.7,
            t = escape(&format!("{name}: {:.1} ops/s", r.qps)),
            cx = x + slot * 0.35,
            ly = TOP + plot_h() + 14.0,
            l = escape(&name)
        );
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_axis() {
        assert_eq!(nines(0.0), 0.0);
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
        assert_eq!(nines(100.0), NINES_MAX);
    }

    #[test]
    fn nice_maxima() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(0.7), 1.0);
        assert_eq!(nice_max(1.3), 2.0);
        assert_eq!(nice_max(3.0), 5.0);
        assert_eq!(nice_max(730.0), 1000.0);
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(escape("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
    }
}
