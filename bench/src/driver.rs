//! Runs a workload: setup, an optional warm-up, then the measured phase with `clients`
//! concurrent tasks, each looping over operations until `--total` operations have started or
//! `--duration` has passed (whichever comes first), paced by `--rate` when given.
//!
//! Invariants: every started operation ends as exactly one success (its latency recorded) or
//! one error (counted by code, latency not recorded), so `ops = successes + errors`; warm-up
//! operations are never counted; every operation is bounded by the per-request timeout.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::time::Instant;

use crate::conn::Pool;
use crate::errors::{self, ErrorCounts};
use crate::latency::Latency;
use crate::proc_cpu;
use crate::progress::Progress;
use crate::rate::Pacer;
use crate::result::BenchResult;
use crate::tally::Tally;
use crate::workload::{Latencies, Workload};

/// How long and how hard to run.
#[derive(Clone, Debug)]
pub struct RunSpec {
    pub clients: usize,
    pub total: Option<u64>,
    pub duration: Option<Duration>,
    pub rate: Option<f64>,
    pub warmup: Duration,
    pub op_timeout: Duration,
    pub progress: bool,
    pub label: String,
    /// The server processes to charge CPU time to over the measured phase, summed (the server
    /// or cluster members the bench started); empty leaves the result's server CPU figures
    /// empty.
    pub server_pids: Vec<u32>,
}

/// A run's result and its full latency histogram (for HDR logs and merging across rounds).
#[derive(Clone, Debug)]
pub struct RunOutput {
    pub result: BenchResult,
    pub latency: Latency,
    /// Further distributions the workload measured (e.g. `event`).
    pub latencies: Latencies,
}

struct ClientStats {
    latency: Latency,
    successes: u64,
    errors: ErrorCounts,
    tally: Tally,
}

struct Phase {
    total: Option<u64>,
    deadline: Option<Instant>,
    pacer: Pacer,
    started: Arc<AtomicU64>,
    done: Arc<AtomicU64>,
    op_timeout: Duration,
}

/// Runs `workload` against `pool` as `spec` says.
pub async fn run<W: Workload>(workload: Arc<W>, pool: &Pool, spec: &RunSpec) -> Result<RunOutput> {
    let clients = spec.clients.max(1);
    workload
        .setup(pool)
        .await
        .with_context(|| format!("setting up {}", workload.name()))?;
    let mut states: Vec<W::Client> = (0..clients).map(|i| workload.client(i, pool)).collect();

    if !spec.warmup.is_zero() {
        let now = Instant::now();
        let phase = Phase {
            total: None,
            deadline: Some(now + spec.warmup),
            pacer: Pacer::new(now, spec.rate),
            started: Arc::default(),
            done: Arc::default(),
            op_timeout: spec.op_timeout,
        };
        let (back, _) = run_phase(&workload, states, Arc::new(phase)).await?;
        states = back;
    }

    let total = match (spec.total, spec.duration) {
        (None, None) => Some(10_000),
        (t, _) => t,
    };
    let cpu_before = if spec.server_pids.is_empty() {
        None
    } else {
        Some(proc_cpu::read_cpu_total(&spec.server_pids)?)
    };
    let start = Instant::now();
    let phase = Arc::new(Phase {
        total,
        deadline: spec.duration.map(|d| start + d),
        pacer: Pacer::new(start, spec.rate),
        started: Arc::default(),
        done: Arc::default(),
        op_timeout: spec.op_timeout,
    });
    let progress = Progress::start(
        workload.name(),
        spec.progress,
        total,
        spec.duration,
        phase.done.clone(),
    );
    let (_, stats) = run_phase(&workload, states, phase).await?;
    let elapsed = start.elapsed();
    let server_cpu_s = match cpu_before {
        Some(before) => Some(proc_cpu::read_cpu_total(&spec.server_pids)?.since_s(&before)),
        None => None,
    };
    progress.finish();

    let mut latency = Latency::new();
    let mut result = BenchResult {
        workload: workload.name().to_string(),
        label: spec.label.clone(),
        endpoints: pool.endpoints().to_vec(),
        clients,
        conns: pool.conns(),
        duration_s: elapsed.as_secs_f64(),
        ..Default::default()
    };
    let mut tally = Tally::default();
    for s in &stats {
        latency.merge(&s.latency);
        result.successes += s.successes;
        errors::merge(&mut result.errors, &s.errors);
        tally.merge(&s.tally);
    }
    result.error_total = errors::total(&result.errors);
    result.ops = result.successes + result.error_total;
    result.qps = if result.duration_s > 0.0 {
        result.successes as f64 / result.duration_s
    } else {
        0.0
    };
    result.set_latency(&latency.summary());
    if let Some(cpu_s) = server_cpu_s {
        result.set_server_cpu(cpu_s);
    }
    result.counters = tally.to_map();
    let mut latencies = Latencies::new();
    workload
        .finish(&mut result, &mut latencies)
        .await
        .with_context(|| format!("finishing {}", workload.name()))?;
    result.latencies = latencies
        .iter()
        .map(|(k, l)| (k.clone(), l.summary()))
        .collect();
    Ok(RunOutput {
        result,
        latency,
        latencies,
    })
}

async fn run_phase<W: Workload>(
    workload: &Arc<W>,
    states: Vec<W::Client>,
    phase: Arc<Phase>,
) -> Result<(Vec<W::Client>, Vec<ClientStats>)> {
    let mut tasks = Vec::with_capacity(states.len());
    for state in states {
        let w = workload.clone();
        let p = phase.clone();
        tasks.push(tokio::spawn(client_loop(w, state, p)));
    }
    let mut back = Vec::with_capacity(tasks.len());
    let mut stats = Vec::with_capacity(tasks.len());
    for t in tasks {
        let (state, s) = t.await.context("client task panicked")?;
        back.push(state);
        stats.push(s);
    }
    Ok((back, stats))
}

async fn client_loop<W: Workload>(
    workload: Arc<W>,
    mut state: W::Client,
    phase: Arc<Phase>,
) -> (W::Client, ClientStats) {
    let mut stats = ClientStats {
        latency: Latency::new(),
        successes: 0,
        errors: ErrorCounts::new(),
        tally: Tally::default(),
    };
    loop {
        if phase.deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let seq = phase.started.fetch_add(1, Ordering::Relaxed);
        if phase.total.is_some_and(|t| seq >= t) {
            break;
        }
        phase.pacer.wait(seq).await;
        if phase.deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let t0 = Instant::now();
        let outcome = tokio::time::timeout(
            phase.op_timeout,
            workload.op(&mut state, seq, &mut stats.tally),
        )
        .await;
        let took = t0.elapsed();
        match outcome {
            Ok(Ok(())) => {
                stats.successes += 1;
                stats.latency.record(took);
            }
            Ok(Err(status)) => errors::add(&mut stats.errors, &errors::code_name(&status)),
            Err(_) => errors::add(&mut stats.errors, errors::TIMEOUT),
        }
        phase.done.fetch_add(1, Ordering::Relaxed);
    }
    (state, stats)
}
