//! `report` output is well-formed (X)HTML with one latency plot per result and a throughput
//! plot, both through the library and through the binary.

use std::time::Duration;

use ballast_bench::latency::Latency;
use ballast_bench::report::render_page;
use ballast_bench::result::BenchResult;

fn result(label: &str, base_ms: u64, qps: f64) -> BenchResult {
    let mut l = Latency::new();
    for i in 0..1000 {
        l.record(Duration::from_micros(base_ms * 1000 + i * 7));
    }
    let mut r = BenchResult {
        workload: "put".into(),
        label: label.into(),
        ops: 1000,
        successes: 1000,
        qps,
        ..Default::default()
    };
    r.set_latency(&l.summary());
    r
}

fn parse(html: &str) -> roxmltree::Document<'_> {
    // The page starts with `<!DOCTYPE html>`, which roxmltree reads only when DTDs are allowed.
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    roxmltree::Document::parse_with_options(html, opts).expect("well-formed XHTML")
}

fn svg_classes(html: &str) -> Vec<String> {
    let doc = parse(html);
    assert_eq!(doc.root_element().tag_name().name(), "html");
    doc.descendants()
        .filter(|n| n.tag_name().name() == "svg")
        .map(|n| n.attribute("class").unwrap_or("").to_string())
        .collect()
}

#[test]
fn one_latency_plot_per_result() {
    let results = vec![
        result("A <etcd> & co", 1, 900.0),
        result("B", 2, 1800.0),
        result("C", 3, 50.0),
    ];
    let html = render_page("t & \"q\"", &results);
    let classes = svg_classes(&html);
    assert_eq!(classes.iter().filter(|c| *c == "latency-plot").count(), 3);
    assert_eq!(
        classes.iter().filter(|c| *c == "throughput-plot").count(),
        1
    );
    let doc = parse(&html);
    let polylines = doc
        .descendants()
        .filter(|n| n.tag_name().name() == "polyline")
        .count();
    assert_eq!(polylines, 3, "each latency plot draws its curve");
    let bars = doc
        .descendants()
        .filter(|n| n.tag_name().name() == "rect" && n.attribute("fill") == Some("#2ca02c"))
        .count();
    assert_eq!(bars, 3, "one throughput bar per result");
}

#[test]
fn binary_renders_json_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let one = dir.path().join("one.json");
    let many = dir.path().join("many.json");
    std::fs::write(
        &one,
        serde_json::to_string(&result("solo", 1, 10.0)).unwrap(),
    )
    .unwrap();
    let list = vec![result("x", 1, 1.0), result("y", 2, 2.0)];
    std::fs::write(&many, serde_json::to_string(&list).unwrap()).unwrap();
    let out = dir.path().join("r.html");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_ballast-bench"))
        .arg("report")
        .arg(&one)
        .arg(&many)
        .arg("-o")
        .arg(&out)
        .status()
        .expect("runs");
    assert!(status.success());
    let html = std::fs::read_to_string(&out).expect("written");
    let classes = svg_classes(&html);
    assert_eq!(classes.iter().filter(|c| *c == "latency-plot").count(), 3);
}
