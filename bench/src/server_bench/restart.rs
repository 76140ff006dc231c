//! `restart`: how long a server takes to serve again after a stop, with data. Per server: start
//! it fresh, load `--size` bytes of values, then for each `--stop` in order (on the same data
//! dir): stop it (SIGKILL, or SIGTERM), record the WAL and the data dir on disk, start it again
//! and time, from just before the spawn, the first successful linearizable Range and the first
//! `/health` true; then count the keys it holds.
//!
//! Invariants: the probes run concurrently from the spawn, and the child is watched meanwhile
//! (a server that exits fails the run with its log); sizes are read after the process is gone,
//! so they are exactly what the restart reads; the second stop starts from the state the
//! first restart left (recorded as such), no load happens between stops.

use std::time::Duration;

use anyhow::{anyhow, Result};
use serde::{Deserialize, Serialize};

use super::dir_usage::{dir_usage, wal_usage, DirUsage};
use super::loader::{load, LoadReport, RegistryKeys};
use super::procfs::{load_average_1m, read_memory};
use super::{count_keys, probe, ratio, setups, ServerSetup};
use crate::cli::{RestartArgs, StopArg};
use crate::conn::Pool;
use crate::local_server::{LocalServer, StopSignal};

/// What `restart --json` prints.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RestartOutput {
    pub keys: u64,
    pub key_size: usize,
    pub val_size: usize,
    pub value_bytes: u64,
    /// 1-minute load average when the benchmark started and ended.
    pub load_average_start: Option<f64>,
    pub load_average_end: Option<f64>,
    pub servers: Vec<ServerRestarts>,
    /// Ballast/etcd per stop and metric, when both ran.
    pub ratios: Vec<RestartRatios>,
}

/// One server's load and restarts.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServerRestarts {
    /// `etcd` or `ballast`.
    pub server: String,
    pub binary: String,
    pub args: Vec<String>,
    pub load: LoadReport,
    pub restarts: Vec<RestartRun>,
}

/// One stop and the start after it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RestartRun {
    /// `kill` (SIGKILL) or `term` (SIGTERM).
    pub stop: String,
    /// From the signal to the process being gone.
    pub stop_s: f64,
    /// SIGTERM was not enough within `--stop-grace`; SIGKILL followed.
    pub stop_forced: bool,
    /// The write-ahead log at the stop.
    pub wal: DirUsage,
    /// The whole data dir at the stop.
    pub data_dir: DirUsage,
    /// From the spawn to the first successful linearizable Range.
    pub first_range_s: f64,
    /// From the spawn to the first `/health` true.
    pub health_s: f64,
    /// Keys under `/registry/` after the restart (a count-only Range).
    pub keys_after: i64,
    /// Resident memory once serving again (`VmRSS`).
    pub vm_rss_bytes: u64,
}

/// Ballast/etcd of one stop's figures.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RestartRatios {
    pub stop: String,
    pub first_range_s: Option<f64>,
    pub health_s: Option<f64>,
    pub wal_bytes: Option<f64>,
    pub data_dir_bytes: Option<f64>,
    pub vm_rss_bytes: Option<f64>,
}

fn stop_name(s: StopArg) -> &'static str {
    match s {
        StopArg::Kill => "kill",
        StopArg::Term => "term",
    }
}

/// Runs the benchmark.
pub async fn run_restart(args: &RestartArgs, progress: bool) -> Result<RestartOutput> {
    let common = &args.servers;
    if args.val_size == 0 {
        return Err(anyhow!("--val-size must be at least 1"));
    }
    let keys = RegistryKeys {
        count: (args.size / args.val_size as u64).max(1),
        key_size: common.key_size,
        val_size: args.val_size,
    };
    let load_average_start = load_average_1m();
    let mut servers = Vec::new();
    for setup in setups(common, keys.value_bytes())? {
        servers.push(one_server(args, &setup, &keys, progress).await?);
    }
    let ratios = restart_ratios(&servers);
    Ok(RestartOutput {
        keys: keys.count,
        key_size: keys.key_size,
        val_size: keys.val_size,
        value_bytes: keys.value_bytes(),
        load_average_start,
        load_average_end: load_average_1m(),
        servers,
        ratios,
    })
}

async fn one_server(
    args: &RestartArgs,
    setup: &ServerSetup,
    keys: &RegistryKeys,
    progress: bool,
) -> Result<ServerRestarts> {
    let common = &args.servers;
    if progress {
        eprintln!("{}: starting {}", setup.name(), setup.binary.display());
    }
    let mut server = setup.start(common).await?;
    if progress {
        eprintln!(
            "{}: loading {} keys of {} B with {} clients",
            setup.name(),
            keys.count,
            keys.val_size,
            common.clients
        );
    }
    let pool = Pool::connect(std::slice::from_ref(&server.client_url), common.conns).await?;
    let load_report = load(&pool, keys, common.clients, common.load_timeout, progress).await?;
    drop(pool);
    let mut restarts = Vec::new();
    for stop in &args.stop {
        let run = stop_and_restart(&mut server, *stop, args, keys).await?;
        if progress {
            eprintln!(
                "{}: after {}: first range {:.3} s, health {:.3} s, {} keys",
                setup.name(),
                run.stop,
                run.first_range_s,
                run.health_s,
                run.keys_after
            );
        }
        restarts.push(run);
    }
    Ok(ServerRestarts {
        server: setup.name().to_string(),
        binary: setup.binary.display().to_string(),
        args: setup.extra_args.clone(),
        load: load_report,
        restarts,
    })
}

async fn stop_and_restart(
    server: &mut LocalServer,
    stop: StopArg,
    args: &RestartArgs,
    keys: &RegistryKeys,
) -> Result<RestartRun> {
    let signal = match stop {
        StopArg::Kill => StopSignal::Kill,
        StopArg::Term => StopSignal::Term,
    };
    let (stop_took, stop_forced) = server.stop(signal, args.stop_grace).await?;
    let wal = wal_usage(&server.data_dir)?;
    let data_dir = dir_usage(&server.data_dir)?;

    let spawned = tokio::time::Instant::from_std(server.spawn()?);
    let deadline = spawned + args.servers.ready_timeout;
    let url = server.client_url.clone();
    let probes = async {
        tokio::try_join!(
            probe::first_linearizable_range(&url, keys.key(0), deadline),
            probe::health_true(&url, deadline),
        )
    };
    let watch_exit = async {
        loop {
            if let Some(status) = server.exited()? {
                return Err::<(), _>(anyhow!(
                    "server exited with {status} while restarting; log:\n{}",
                    server.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let (range_at, health_at) = tokio::select! {
        r = probes => r?,
        e = watch_exit => { e?; unreachable!("the exit watcher only returns errors") }
    };
    let keys_after = count_keys(&server.client_url, keys).await?;
    let vm_rss_bytes = match server.pid() {
        Some(pid) => read_memory(pid)?.vm_rss_bytes,
        None => 0,
    };
    Ok(RestartRun {
        stop: stop_name(stop).to_string(),
        stop_s: stop_took.as_secs_f64(),
        stop_forced,
        wal,
        data_dir,
        first_range_s: (range_at - spawned).as_secs_f64(),
        health_s: (health_at - spawned).as_secs_f64(),
        keys_after,
        vm_rss_bytes,
    })
}

/// Ballast/etcd per stop, when both servers ran that stop.
pub fn restart_ratios(servers: &[ServerRestarts]) -> Vec<RestartRatios> {
    let find = |name: &str| servers.iter().find(|s| s.server == name);
    let (Some(etcd), Some(ballast)) = (find("etcd"), find("ballast")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (a, b) in etcd.restarts.iter().zip(&ballast.restarts) {
        if a.stop != b.stop {
            continue;
        }
        out.push(RestartRatios {
            stop: a.stop.clone(),
            first_range_s: ratio(a.first_range_s, b.first_range_s),
            health_s: ratio(a.health_s, b.health_s),
            wal_bytes: ratio(a.wal.bytes as f64, b.wal.bytes as f64),
            data_dir_bytes: ratio(a.data_dir.bytes as f64, b.data_dir.bytes as f64),
            vm_rss_bytes: ratio(a.vm_rss_bytes as f64, b.vm_rss_bytes as f64),
        });
    }
    out
}
