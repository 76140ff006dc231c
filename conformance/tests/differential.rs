//! Differential test: seeded random sequences of KV, Txn, Lease and Watch ops, and one directed
//! sequence covering every error case, sent to the reference etcd and to Ballast; every answer
//! compared (see `ballast_conformance::diff` for what is normalized and why).
//!
//! CI runs fixed seeds with a bounded op count. A longer run is one command (docs/testing.md):
//! `BALLAST_DIFF_SEEDS=1-50 BALLAST_DIFF_OPS=2000 cargo test -p ballast-conformance --test differential`.
//! Each seed gets a fresh pair of servers, so a failing seed replays on its own.

use std::time::Duration;

use ballast_conformance::diff::{Op, Runner};
use ballast_conformance::gen::{self, Gen};
use ballast_conformance::Pair;

/// Seeds CI runs when `BALLAST_DIFF_SEEDS` is not set.
const DEFAULT_SEEDS: [u64; 3] = [1, 2, 3];
/// Ops per seed when `BALLAST_DIFF_OPS` is not set.
const DEFAULT_OPS: usize = 300;
/// Bound on one seed's run, whatever the op count (the long run sets a large count).
const SEED_TIMEOUT_PER_OP: Duration = Duration::from_millis(500);

/// Parses `BALLAST_DIFF_SEEDS`: comma-separated seeds or inclusive ranges, e.g. `1-20,99`.
fn seeds() -> Vec<u64> {
    let Ok(spec) = std::env::var("BALLAST_DIFF_SEEDS") else {
        return DEFAULT_SEEDS.to_vec();
    };
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let a: u64 = a
                    .trim()
                    .parse()
                    .expect("BALLAST_DIFF_SEEDS: bad range start");
                let b: u64 = b.trim().parse().expect("BALLAST_DIFF_SEEDS: bad range end");
                out.extend(a..=b);
            }
            None => out.push(part.parse().expect("BALLAST_DIFF_SEEDS: bad seed")),
        }
    }
    assert!(!out.is_empty(), "BALLAST_DIFF_SEEDS names no seed");
    out
}

fn ops_per_seed() -> usize {
    std::env::var("BALLAST_DIFF_OPS")
        .ok()
        .map(|s| s.parse().expect("BALLAST_DIFF_OPS: not a number"))
        .unwrap_or(DEFAULT_OPS)
}

async fn run_seed(seed: u64, count: usize) {
    let pair = Pair::start().await.expect("starting the servers");
    let mut runner = Runner::new(&pair, format!("seed {seed}, {count} ops"))
        .await
        .expect("connecting");
    let mut gen = Gen::new(seed);
    let bound = SEED_TIMEOUT_PER_OP * (count as u32 + 20);
    let run = async {
        for i in 0..count {
            let op = gen.op(&runner.ctx);
            runner.step(i, &op).await;
        }
        // The final settle waits for every replay to finish, so no event goes uncompared.
        runner.ctx.catching_up = true;
        runner.step(count, &Op::WatchSettle).await;
        runner.finish();
    };
    tokio::time::timeout(bound, run)
        .await
        .unwrap_or_else(|_| panic!("seed {seed}: not done within {bound:?}"));
    drop(pair);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directed_sequence_matches_etcd() {
    let pair = Pair::start().await.expect("starting the servers");
    let mut runner = Runner::new(&pair, "directed sequence")
        .await
        .expect("connecting");
    let ops = gen::directed();
    let bound = Duration::from_secs(60);
    tokio::time::timeout(bound, async {
        for (i, op) in ops.iter().enumerate() {
            runner.step(i, op).await;
        }
        runner.ctx.catching_up = true;
        runner.step(ops.len(), &Op::WatchSettle).await;
        runner.finish();
    })
    .await
    .unwrap_or_else(|_| panic!("directed sequence not done within {bound:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_sequences_match_etcd() {
    let count = ops_per_seed();
    for seed in seeds() {
        run_seed(seed, count).await;
    }
}
