//! The plain-data result of one workload run: what `--json` prints and `report`/`compare` read.
//!
//! Invariants: `ops == successes + error_total` and `error_total` is the sum of `errors`;
//! `qps` is successes divided by the measured (post-warm-up) wall time in seconds; the server
//! CPU figures are present only when the bench started the server (it knows its pid), and then
//! `server_cpu_ms_per_op = server_cpu_s * 1000 / ops` over the same measured window.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::errors::ErrorCounts;
use crate::latency::{CurvePoint, LatencySummary};

/// One workload run against one endpoint set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BenchResult {
    /// Workload name (`put`, `range`, `txn-cas`, `watch`, `list`, `k8s`).
    pub workload: String,
    /// Free-form label (`a`, `b`, `etcd`, ...); empty when not set.
    #[serde(default)]
    pub label: String,
    pub endpoints: Vec<String>,
    pub clients: usize,
    pub conns: usize,
    /// Measured wall time in seconds (warm-up excluded).
    pub duration_s: f64,
    /// Operations attempted in the measured phase.
    pub ops: u64,
    pub successes: u64,
    pub error_total: u64,
    /// Failed operations by gRPC code name.
    pub errors: ErrorCounts,
    pub qps: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    pub min_ms: f64,
    /// Latency percentile curve of the operations, for plotting.
    pub curve: Vec<CurvePoint>,
    /// Further latency distributions (e.g. `event` for watch put-to-event latency).
    #[serde(default)]
    pub latencies: BTreeMap<String, LatencySummary>,
    /// Workload-specific counters (watch events, CAS conflicts, list pages, ...).
    #[serde(default)]
    pub counters: BTreeMap<String, u64>,
    /// The workload's parameters, as given.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// CPU seconds (user + system, all threads) the server process used during the measured
    /// phase; `None` unless the bench started the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_cpu_s: Option<f64>,
    /// `server_cpu_s` in milliseconds per operation attempted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_cpu_ms_per_op: Option<f64>,
}

impl BenchResult {
    /// Fills the latency fields from `summary`.
    pub fn set_latency(&mut self, summary: &LatencySummary) {
        self.p50_ms = summary.p50_ms;
        self.p90_ms = summary.p90_ms;
        self.p99_ms = summary.p99_ms;
        self.p999_ms = summary.p999_ms;
        self.max_ms = summary.max_ms;
        self.mean_ms = summary.mean_ms;
        self.min_ms = summary.min_ms;
        self.curve = summary.curve.clone();
    }

    /// Sets the server CPU figures from `cpu_s` seconds over this result's `ops`.
    pub fn set_server_cpu(&mut self, cpu_s: f64) {
        self.server_cpu_s = Some(cpu_s);
        self.server_cpu_ms_per_op = (self.ops > 0).then(|| cpu_s * 1000.0 / self.ops as f64);
    }

    /// Whether the counts are consistent (`ops = successes + errors`).
    pub fn counts_add_up(&self) -> bool {
        self.ops == self.successes + self.error_total
            && self.error_total == crate::errors::total(&self.errors)
    }
}
