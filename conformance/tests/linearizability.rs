//! Linearizability end to end: eight clients run puts, gets, deletes and txns (compare-and-swap
//! on values, revisions and versions, over one or two keys) on a handful of shared keys, each
//! client on its own connection, against the reference etcd and against Ballast. Each recorded
//! history must be linearizable under etcd's model, revisions included; and the same history
//! with one read's value swapped for an older value of its key must be rejected, so the test
//! can fail.
//!
//! Keys live under `/linearizability/`, outside `/registry/`, so they are all in shard 0 with
//! any shard count and share one revision counter (which the model assumes).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use ballast_conformance::linearizability::{
    check, report, shrink, Budget, Call, Compare, CompareResult, CompareTarget, History, Kv,
    OpResult, Outcome, Recorder, ShrinkLimits, TxnOp, Verdict,
};
use ballast_conformance::{Kind, Server};
use ballast_proto::etcdserverpb::{kv_client::KvClient, RangeRequest};
use bytes::Bytes;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

const CLIENTS: u32 = 8;
/// Ops per client unless `BALLAST_LIN_OPS` says otherwise.
const OPS_PER_CLIENT: usize = 250;
const KEYS: usize = 5;
const PREFIX: &str = "/linearizability/";

/// `BALLAST_LIN_OPS` (ops per client) and `BALLAST_LIN_SEED`, for longer or other runs.
fn env_or(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

fn key(i: usize) -> Bytes {
    Bytes::from(format!("{PREFIX}k{i}"))
}

/// What one client last saw of each key, to aim its compares at states that may still hold.
type Seen = HashMap<Bytes, Option<Kv>>;

fn compare(rng: &mut StdRng, seen: &Seen) -> Compare {
    let k = key(rng.gen_range(0..KEYS));
    let last = seen.get(&k).cloned().flatten();
    let (target, result) = match (rng.gen_range(0..4), last) {
        (0, Some(kv)) => (CompareTarget::Value(kv.value), CompareResult::Equal),
        (1, Some(kv)) => (
            CompareTarget::ModRevision(kv.mod_revision),
            CompareResult::Equal,
        ),
        (2, Some(kv)) => (CompareTarget::Version(kv.version), CompareResult::Greater),
        (3, Some(kv)) => (
            CompareTarget::CreateRevision(kv.create_revision),
            CompareResult::NotEqual,
        ),
        (_, None) => (CompareTarget::Version(0), CompareResult::Equal),
        (_, Some(kv)) => (CompareTarget::Value(kv.value), CompareResult::Less),
    };
    Compare {
        key: k,
        target,
        result,
    }
}

/// A txn branch of up to `n` ops on distinct keys (etcd refuses a txn that writes a key twice).
fn branch(rng: &mut StdRng, n: usize, value: &Bytes) -> Vec<TxnOp> {
    let keys: Vec<usize> = (0..KEYS).collect();
    keys.choose_multiple(rng, n)
        .map(|&i| match rng.gen_range(0..3) {
            0 => TxnOp::Put {
                key: key(i),
                value: value.clone(),
            },
            1 => TxnOp::Get { key: key(i) },
            _ => TxnOp::Delete { key: key(i) },
        })
        .collect()
}

fn random_call(rng: &mut StdRng, client: u32, seq: usize, seen: &Seen) -> Call {
    let value = Bytes::from(format!("c{client}-{seq}"));
    let k = key(rng.gen_range(0..KEYS));
    match rng.gen_range(0..10) {
        0..=2 => Call::Put {
            key: k,
            value,
            prev_kv: rng.gen_bool(0.3),
        },
        3..=5 => Call::Get { key: k },
        6 => Call::Delete { key: k },
        _ => {
            let compares = (0..rng.gen_range(1..=2))
                .map(|_| compare(rng, seen))
                .collect();
            let (n_success, n_failure) = (rng.gen_range(1..=2), rng.gen_range(0..=1));
            let success = branch(rng, n_success, &value);
            let failure = branch(rng, n_failure, &value);
            Call::Txn {
                compares,
                success,
                failure,
            }
        }
    }
}

/// Remembers what an answer showed of each key.
fn learn(seen: &mut Seen, call: &Call, outcome: &Outcome) {
    match (call, outcome) {
        (Call::Get { key }, Outcome::Get { kv, .. }) => {
            seen.insert(key.clone(), kv.clone());
        }
        (
            Call::Txn {
                success, failure, ..
            },
            Outcome::Txn {
                succeeded, results, ..
            },
        ) => {
            let ops = if *succeeded { success } else { failure };
            for (op, r) in ops.iter().zip(results) {
                if let (TxnOp::Get { key }, OpResult::Get(kv)) = (op, r) {
                    seen.insert(key.clone(), kv.clone());
                }
            }
        }
        _ => {}
    }
}

/// Runs the workload against `server` and returns the recorded history.
async fn record(server: &Server, seed: u64) -> Result<History> {
    let mut kv = KvClient::new(server.channel().await?);
    let start = kv
        .range(RangeRequest {
            key: Bytes::from_static(PREFIX.as_bytes()),
            range_end: Bytes::from_static(b"/linearizability0"),
            ..Default::default()
        })
        .await?
        .into_inner();
    ensure!(start.kvs.is_empty(), "the keys must start absent");
    let recorder = Recorder::new(start.header.context("a header")?.revision);
    let ops_per_client = env_or("BALLAST_LIN_OPS", OPS_PER_CLIENT as u64) as usize;
    let mut tasks = Vec::new();
    for id in 0..CLIENTS {
        let mut client = recorder.client(id, KvClient::new(server.channel().await?));
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed * 1_000 + u64::from(id));
            let mut seen = Seen::new();
            let mut errors = 0usize;
            for seq in 0..ops_per_client {
                let call = random_call(&mut rng, id, seq, &seen);
                match client.run(call.clone()).await {
                    Ok(outcome) => learn(&mut seen, &call, &outcome),
                    Err(status) => {
                        errors += 1;
                        eprintln!("client {id}: {call} -> {status}");
                    }
                }
            }
            errors
        }));
    }
    for t in tasks {
        let errors = t.await?;
        ensure!(errors <= 5, "{errors} requests of one client failed");
    }
    Ok(recorder.history())
}

/// A copy of `h` in which one read that found a value answers instead an older value of the
/// same key (one a known put wrote at a lower revision), and the index of that read.
fn doctor(h: &History) -> Option<(History, usize)> {
    let mut older: HashMap<Bytes, Vec<(i64, Bytes)>> = HashMap::new();
    for op in &h.ops {
        if let (Call::Put { key, value, .. }, Outcome::Put { revision, .. }) =
            (&op.call, &op.outcome)
        {
            older
                .entry(key.clone())
                .or_default()
                .push((*revision, value.clone()));
        }
    }
    // The last such read, so the checker and the shrinker work through the whole history.
    for (i, op) in h.ops.iter().enumerate().rev() {
        let (Call::Get { key }, Outcome::Get { kv: Some(kv), .. }) = (&op.call, &op.outcome) else {
            continue;
        };
        let stale = older.get(key).and_then(|puts| {
            puts.iter()
                .find(|(rev, value)| *rev < kv.mod_revision && *value != kv.value)
        });
        if let Some((_, value)) = stale {
            let mut doctored = h.clone();
            if let Outcome::Get { kv: Some(kv), .. } = &mut doctored.ops[i].outcome {
                kv.value = value.clone();
            }
            return Some((doctored, i));
        }
    }
    None
}

async fn linearizable_and_doctored_rejected(kind: Kind, seed: u64) -> Result<()> {
    let server = Server::start(kind).await?;
    let started = Instant::now();
    let history = record(&server, seed).await?;
    let recorded_in = started.elapsed();
    let unknown = history.ops.iter().filter(|o| o.ret.is_none()).count();

    let c = check(&history, &Budget::default());
    println!(
        "{}: {} ops from {CLIENTS} clients recorded in {recorded_in:?} ({unknown} unknown \
         outcomes); checked in {:?} ({} search steps): {}",
        kind.label(),
        history.ops.len(),
        c.elapsed,
        c.states,
        c.verdict
    );
    ensure!(
        c.verdict == Verdict::Linearizable,
        "{}: {}",
        kind.label(),
        report(&history, &c, &ShrinkLimits::default())
    );

    let (doctored, victim) = doctor(&history).context("no read to doctor")?;
    let started = Instant::now();
    let c = check(&doctored, &Budget::default());
    // The sub-history shrink is bounded well below the default, to keep the test short.
    let limits = ShrinkLimits {
        max_time: Duration::from_secs(4),
        ..ShrinkLimits::default()
    };
    let text = report(&doctored, &c, &limits);
    println!(
        "doctored read #{victim}: checked, shrunk and reported in {:?}\n{text}",
        started.elapsed()
    );
    let Verdict::NotLinearizable(v) = &c.verdict else {
        anyhow::bail!("a doctored history was judged {}", c.verdict);
    };
    ensure!(
        v.op == victim,
        "the checker blamed #{} instead of the doctored #{victim}",
        v.op
    );
    // The core is the read and the few writes its answer depends on (its key's generation,
    // and what the txns among them compared).
    let core = shrink(&doctored, v, &limits);
    ensure!(
        core.minimal && core.original.contains(&victim) && core.history.ops.len() <= 25,
        "the doctored history shrank to {} ops (minimal: {})",
        core.history.ops.len(),
        core.minimal
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_history_is_linearizable_and_a_doctored_one_is_not() -> Result<()> {
    linearizable_and_doctored_rejected(Kind::Etcd, env_or("BALLAST_LIN_SEED", 1)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ballast_history_is_linearizable_and_a_doctored_one_is_not() -> Result<()> {
    linearizable_and_doctored_rejected(Kind::Ballast, env_or("BALLAST_LIN_SEED", 1)).await
}
