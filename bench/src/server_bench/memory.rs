//! `memory`: resident memory per key. Per server: start it fresh, read its memory (the
//! baseline), load `--keys` keys once each, wait `--settle`, read its memory again; bytes per
//! key are the loaded figures divided by the keys, in all and above the baseline.
//!
//! Invariants: the figures are the kernel's (`/proc/<pid>/status` of the server process, see
//! [`super::procfs`]); resident memory counts file-backed pages too (etcd maps its bbolt file),
//! so `RssAnon` and `RssFile` are kept apart; the count of keys the server holds after the load
//! is read back and reported, not assumed.

use anyhow::{anyhow, Result};
use serde::{Deserialize, Serialize};

use super::dir_usage::{dir_usage, DirUsage};
use super::loader::{load, LoadReport, RegistryKeys};
use super::procfs::{load_average_1m, read_memory, ProcMemory};
use super::{count_keys, ratio, setups, ServerSetup};
use crate::cli::MemoryArgs;
use crate::conn::Pool;

/// What `memory --json` prints.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemoryOutput {
    pub keys: u64,
    pub key_size: usize,
    pub val_size: usize,
    pub settle_s: f64,
    pub load_average_start: Option<f64>,
    pub load_average_end: Option<f64>,
    pub servers: Vec<ServerMemory>,
    /// Ballast/etcd per figure, when both ran.
    pub ratios: Option<MemoryRatios>,
}

/// One server's memory before and after the load.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServerMemory {
    pub server: String,
    pub binary: String,
    pub args: Vec<String>,
    pub load: LoadReport,
    /// Keys the server holds after the load.
    pub keys_held: i64,
    /// Once serving, before the load.
    pub baseline: ProcMemory,
    /// After the load and `--settle`.
    pub loaded: ProcMemory,
    /// `loaded.vm_rss_bytes / keys`.
    pub rss_bytes_per_key: f64,
    /// `(loaded.vm_rss_bytes - baseline.vm_rss_bytes) / keys`.
    pub rss_delta_bytes_per_key: f64,
    /// `loaded.rss_anon_bytes / keys`.
    pub anon_bytes_per_key: f64,
    /// `loaded.vm_hwm_bytes / keys`.
    pub hwm_bytes_per_key: f64,
    /// The data dir after the load.
    pub data_dir: DirUsage,
}

/// Ballast/etcd of the per-key figures.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MemoryRatios {
    pub rss_bytes_per_key: Option<f64>,
    pub rss_delta_bytes_per_key: Option<f64>,
    pub anon_bytes_per_key: Option<f64>,
    pub hwm_bytes_per_key: Option<f64>,
    pub data_dir_bytes: Option<f64>,
}

/// Runs the benchmark.
pub async fn run_memory(args: &MemoryArgs, progress: bool) -> Result<MemoryOutput> {
    if args.keys == 0 {
        return Err(anyhow!("--keys must be at least 1"));
    }
    let keys = RegistryKeys {
        count: args.keys,
        key_size: args.servers.key_size,
        val_size: args.val_size,
    };
    let load_average_start = load_average_1m();
    let mut servers = Vec::new();
    for setup in setups(&args.servers, keys.value_bytes())? {
        servers.push(one_server(args, &setup, &keys, progress).await?);
    }
    let ratios = memory_ratios(&servers);
    Ok(MemoryOutput {
        keys: keys.count,
        key_size: keys.key_size,
        val_size: keys.val_size,
        settle_s: args.settle.as_secs_f64(),
        load_average_start,
        load_average_end: load_average_1m(),
        servers,
        ratios,
    })
}

async fn one_server(
    args: &MemoryArgs,
    setup: &ServerSetup,
    keys: &RegistryKeys,
    progress: bool,
) -> Result<ServerMemory> {
    let common = &args.servers;
    if progress {
        eprintln!("{}: starting {}", setup.name(), setup.binary.display());
    }
    let mut server = setup.start(common).await?;
    let pid = server
        .pid()
        .ok_or_else(|| anyhow!("{} has no process", setup.name()))?;
    let baseline = read_memory(pid)?;
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
    tokio::time::sleep(args.settle).await;
    if let Some(status) = server.exited()? {
        return Err(anyhow!(
            "{} exited with {status} after the load; log:\n{}",
            setup.name(),
            server.log_tail()
        ));
    }
    let loaded = read_memory(pid)?;
    let keys_held = count_keys(&server.client_url, keys).await?;
    let data_dir = dir_usage(&server.data_dir)?;
    let n = keys.count as f64;
    Ok(ServerMemory {
        server: setup.name().to_string(),
        binary: setup.binary.display().to_string(),
        args: setup.extra_args.clone(),
        load: load_report,
        keys_held,
        baseline,
        loaded,
        rss_bytes_per_key: loaded.vm_rss_bytes as f64 / n,
        rss_delta_bytes_per_key: (loaded.vm_rss_bytes as f64 - baseline.vm_rss_bytes as f64) / n,
        anon_bytes_per_key: loaded.rss_anon_bytes as f64 / n,
        hwm_bytes_per_key: loaded.vm_hwm_bytes as f64 / n,
        data_dir,
    })
}

/// Ballast/etcd, when both servers ran.
pub fn memory_ratios(servers: &[ServerMemory]) -> Option<MemoryRatios> {
    let find = |name: &str| servers.iter().find(|s| s.server == name);
    let (a, b) = (find("etcd")?, find("ballast")?);
    Some(MemoryRatios {
        rss_bytes_per_key: ratio(a.rss_bytes_per_key, b.rss_bytes_per_key),
        rss_delta_bytes_per_key: ratio(a.rss_delta_bytes_per_key, b.rss_delta_bytes_per_key),
        anon_bytes_per_key: ratio(a.anon_bytes_per_key, b.anon_bytes_per_key),
        hwm_bytes_per_key: ratio(a.hwm_bytes_per_key, b.hwm_bytes_per_key),
        data_dir_bytes: ratio(a.data_dir.bytes as f64, b.data_dir.bytes as f64),
    })
}
