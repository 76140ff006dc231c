//! `compare`: one workload against two endpoint sets in one run, alternating A B A B so drift
//! in the machine (page cache, thermal, other load) falls on both sides alike; prints B/A per
//! metric.
//!
//! Invariants: both sides run the same number of rounds with a fresh workload each time; sides
//! that `compare` started are stopped when it returns (also on error); the merged side results
//! still satisfy `ops = successes + errors`; a side whose server `compare` started carries that
//! server's CPU time over the measured phases (`server_cpu_s`, `server_cpu_ms_per_op`).

use serde::{Deserialize, Serialize};

use crate::cli::CompareArgs;
use crate::driver::RunOutput;
use crate::ratio::{ratios, Ratios};
use crate::result::BenchResult;

pub mod merge;
pub mod target;

use target::{prepare, TargetSpec};

/// What `compare --json` prints.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CompareOutput {
    pub a: BenchResult,
    pub b: BenchResult,
    /// B/A per metric (`None` where A is zero).
    pub ratios: Ratios,
    /// Every round of both sides, in the order run.
    pub runs: Vec<BenchResult>,
}

/// Runs the comparison.
pub async fn run_compare(args: &CompareArgs, progress: bool) -> anyhow::Result<CompareOutput> {
    let spec_a = TargetSpec::parse(&args.a)?;
    let spec_b = TargetSpec::parse(&args.b)?;
    let side_a = prepare(
        &spec_a,
        &args.etcd_bin,
        args.ballast_bin.as_deref(),
        "bench-a",
    )
    .await?;
    let side_b = prepare(
        &spec_b,
        &args.etcd_bin,
        args.ballast_bin.as_deref(),
        "bench-b",
    )
    .await?;
    let label_a = format!("A {}", side_a.label);
    let label_b = format!("B {}", side_b.label);
    let mut runs_a: Vec<RunOutput> = Vec::new();
    let mut runs_b: Vec<RunOutput> = Vec::new();
    let mut runs = Vec::new();
    for round in 0..args.rounds.max(1) {
        for (side, label, into) in [
            (&side_a, &label_a, &mut runs_a),
            (&side_b, &label_b, &mut runs_b),
        ] {
            let mut out = crate::runner::run(
                &args.workload,
                Some(&side.endpoints),
                label,
                progress,
                side.server_pid(),
            )
            .await?;
            out.result.label = format!("{label} #{}", round + 1);
            runs.push(out.result.clone());
            into.push(out);
        }
    }
    let mut a = merge::merge_runs(&runs_a).result;
    let mut b = merge::merge_runs(&runs_b).result;
    a.label = label_a;
    b.label = label_b;
    let ratios = ratios(&a, &b);
    Ok(CompareOutput { a, b, ratios, runs })
}
