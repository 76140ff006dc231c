//! The process-level crash test (see `ballast_conformance::crash`): writers record every
//! acknowledged write, the server is killed with SIGKILL at random moments and restarted on the
//! same data dir, and every acknowledged write must be there, with revisions never going back.
//!
//! `BALLAST_CRASH_CYCLES` sets the number of kills (default 5 against etcd, the oracle that
//! validates the harness, and 20 against Ballast), `BALLAST_CRASH_SEED` the seed (else drawn
//! and printed), `BALLAST_CRASH_WRITERS` the concurrent writers (default 8). For the long run:
//! `BALLAST_CRASH_CYCLES=1000 cargo test -p ballast-conformance --test crash -- ballast --nocapture`.

use ballast_conformance::crash::{self, CrashConfig};
use ballast_conformance::Kind;

async fn crash_cycles(kind: Kind, default_cycles: u64) {
    let cfg = CrashConfig::from_env(default_cycles).expect("crash test configuration");
    eprintln!(
        "crash test against {}: {} cycles, {} writers, BALLAST_CRASH_SEED={}",
        kind.label(),
        cfg.cycles,
        cfg.writers,
        cfg.seed
    );
    match crash::run(kind, &cfg).await {
        Ok(summary) => eprintln!("crash test against {}: {summary}", kind.label()),
        Err(e) => panic!("{e:#}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_keeps_acknowledged_writes_across_kill_9() {
    crash_cycles(Kind::Etcd, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ballast_keeps_acknowledged_writes_across_kill_9() {
    crash_cycles(Kind::Ballast, 20).await;
}
