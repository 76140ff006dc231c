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

/// What a server answers to a watch create and a cancel of it sent together on one stream
/// (no wait between them), and to a cancel of a watch on a key spanning every shard: per
/// response, (watch id, created, canceled).
async fn create_then_cancel_at_once(
    server: &ballast_conformance::Server,
) -> Vec<(i64, bool, bool)> {
    use ballast_proto::etcdserverpb::{
        watch_request::RequestUnion, WatchCancelRequest, WatchCreateRequest, WatchRequest,
    };
    use tokio_stream::StreamExt as _;
    let mut clients = server.clients().await.expect("clients");
    let create = |watch_id: i64, key: &'static [u8], range_end: &'static [u8]| WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: bytes::Bytes::from_static(key),
            range_end: bytes::Bytes::from_static(range_end),
            watch_id,
            ..Default::default()
        })),
    };
    let cancel = |watch_id: i64| WatchRequest {
        request_union: Some(RequestUnion::CancelRequest(WatchCancelRequest { watch_id })),
    };
    // Id 7 on one key; id 8 on every key (in Ballast with several shards, a merged watch).
    let requests = vec![
        create(7, b"/at-once", b""),
        cancel(7),
        create(8, b"\0", b"\0"),
        cancel(8),
    ];
    let mut stream = clients
        .watch
        .watch(tokio_stream::iter(requests).chain(tokio_stream::pending()))
        .await
        .expect("watch")
        .into_inner();
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let resp = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .expect("a watch response within 5 s")
            .expect("watch stream")
            .expect("watch stream open");
        seen.push((resp.watch_id, resp.created, resp.canceled));
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_canceled_at_once_is_created_first() {
    let pair = Pair::start().await.expect("starting the servers");
    let [etcd, ballast] = pair.both();
    let want = vec![
        (7, true, false),
        (7, false, true),
        (8, true, false),
        (8, false, true),
    ];
    assert_eq!(create_then_cancel_at_once(etcd).await, want, "etcd");
    for round in 0..20 {
        assert_eq!(
            create_then_cancel_at_once(ballast).await,
            want,
            "ballast, round {round}"
        );
    }
}
