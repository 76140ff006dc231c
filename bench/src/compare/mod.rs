//! `compare`: one workload against two endpoint sets in one run, alternating A B A B so drift
//! in the machine (page cache, thermal, other load) falls on both sides alike; prints B/A per
//! metric.
//!
//! Invariants: both sides run the same number of rounds with a fresh workload each time; sides
//! that `compare` started are stopped when it returns (also on error); the merged side results
//! still satisfy `ops = successes + errors`; a side whose servers `compare` started carries
//! their CPU time over the measured phases, summed over a cluster's members (`server_cpu_s`,
//! `server_cpu_ms_per_op`). With `--tls` one throwaway certificate set serves both started
//! sides (kubeadm's flags, the same for etcd and Ballast) and lives until `compare` returns.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::cli::CompareArgs;
use crate::driver::RunOutput;
use crate::ratio::{ratios, Ratios};
use crate::result::BenchResult;
use crate::runner::own_endpoints;
use crate::tls::Pki;

pub mod merge;
pub mod target;

use target::{prepare, SideOptions, TargetSpec};

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
    let opts = SideOptions {
        etcd_bin: args.etcd_bin.clone(),
        ballast_bin: args.ballast_bin.clone(),
        members: usize::from(args.members),
        target: args.target,
        etcd_args: args.etcd_arg.clone(),
        ballast_args: args.ballast_arg.clone(),
        tls: if args.tls {
            Some(Arc::new(Pki::generate()?))
        } else {
            None
        },
        user_tls: own_endpoints(args.workload.common())?.tls,
    };
    let side_a = prepare(&spec_a, &opts, "bench-a").await?;
    let side_b = prepare(&spec_b, &opts, "bench-b").await?;
    for side in [&side_a, &side_b] {
        eprintln!(
            "{}: endpoints {}",
            side.label,
            side.endpoints.urls.join(",")
        );
    }
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
                &side.server_pids(),
            )
            .await?;
            out.result.label = format!("{label} #{}", round + 1);
            runs.push(out.result.clone());
            into.push(out);
        }
    }
    for side in [&side_a, &side_b] {
        if let Some(warning) = side.leader_change().await {
            eprintln!("warning: {warning}");
        }
    }
    let mut a = merge::merge_runs(&runs_a).result;
    let mut b = merge::merge_runs(&runs_b).result;
    a.label = label_a;
    b.label = label_b;
    let ratios = ratios(&a, &b);
    Ok(CompareOutput { a, b, ratios, runs })
}
