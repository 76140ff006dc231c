//! Turns a parsed workload subcommand into a run: connects to the endpoints, builds the
//! workload from its options, runs it with the driver, and records the options in the result.
//!
//! Invariant: a fresh workload value per call, so repeated runs (compare rounds) never share
//! state such as open watchers or counters.

use std::sync::Arc;

use anyhow::Result;

use crate::cli::{CommonArgs, Consistency, KeyArgs, WorkloadCmd};
use crate::conn::{Endpoints, Pool};
use crate::driver::{self, RunOutput, RunSpec};
use crate::keys::KeyGen;
use crate::tls::ClientTls;
use crate::workload::{k8s, list, put, range, txn_cas, watch, Workload};

fn keygen(k: &KeyArgs, default_prefix: &str) -> KeyGen {
    KeyGen {
        prefix: k
            .prefix
            .clone()
            .unwrap_or_else(|| default_prefix.to_string()),
        key_size: k.key_size,
        key_space: k.key_space.max(1),
        sequential: k.sequential_keys,
    }
}

fn spec(c: &CommonArgs, label: &str, progress: bool, server_pids: &[u32]) -> RunSpec {
    RunSpec {
        clients: c.clients,
        total: c.total,
        duration: c.duration,
        rate: c.rate,
        warmup: c.warmup,
        op_timeout: c.timeout,
        progress: progress && !c.no_progress,
        label: label.to_string(),
        server_pids: server_pids.to_vec(),
    }
}

/// The command's own `--endpoints` with the TLS its `--cacert/--cert/--key` give.
pub fn own_endpoints(c: &CommonArgs) -> Result<Endpoints> {
    let tls = ClientTls::from_flags(c.cacert.as_deref(), c.cert.as_deref(), c.key.as_deref())?;
    Ok(Endpoints::parse(&c.endpoints, tls))
}

/// Runs `cmd` against `endpoints` (the command's own `--endpoints` when `None`), charging the
/// measured phase's CPU time to processes `server_pids` (summed) when any are given.
pub async fn run(
    cmd: &WorkloadCmd,
    endpoints: Option<&Endpoints>,
    label: &str,
    progress: bool,
    server_pids: &[u32],
) -> Result<RunOutput> {
    let c = cmd.common();
    let eps = match endpoints {
        Some(e) => e.clone(),
        None => own_endpoints(c)?,
    };
    let pool = Pool::connect_to(&eps, c.conns).await?;
    let label = if label.is_empty() {
        c.label.as_str()
    } else {
        label
    };
    let s = spec(c, label, progress, server_pids);
    let mut out = match cmd {
        WorkloadCmd::Put(a) => {
            go(
                put::Put::new(keygen(&a.keys, "/bench/put/"), a.keys.val_size),
                &pool,
                &s,
            )
            .await?
        }
        WorkloadCmd::Range(a) => {
            let w = range::Range::new(
                keygen(&a.keys, "/bench/range/"),
                a.keys.val_size,
                a.consistency == Consistency::S,
                a.prefix_limit,
                !a.no_preload,
            );
            go(w, &pool, &s).await?
        }
        WorkloadCmd::TxnCas(a) => {
            go(
                txn_cas::TxnCas::new(
                    keygen(&a.keys, "/bench/cas/"),
                    a.keys.val_size,
                    a.max_retries,
                ),
                &pool,
                &s,
            )
            .await?
        }
        WorkloadCmd::Watch(a) => {
            go(
                watch::Watch::new(
                    keygen(&a.keys, "/bench/watch/"),
                    a.keys.val_size,
                    a.watchers,
                    a.settle,
                ),
                &pool,
                &s,
            )
            .await?
        }
        WorkloadCmd::List(a) => {
            let w = list::List::new(
                keygen(&a.keys, "/bench/list/"),
                a.keys.val_size,
                a.page_size,
                a.consistency == Consistency::S,
            );
            go(w, &pool, &s).await?
        }
        WorkloadCmd::K8s(a) => {
            let cfg = k8s::K8sConfig {
                resources: a.resources.clone(),
                namespaces: a.namespaces,
                objects: a.objects,
                value_min: a.val_min,
                value_max: a.val_max,
                page_size: a.page_size,
                compact_every: a.compact_every,
                event_ttl_s: a.event_ttl,
                max_retries: a.max_retries,
            };
            go(k8s::K8s::new(cfg), &pool, &s).await?
        }
    };
    out.result.params = params(cmd);
    Ok(out)
}

async fn go<W: Workload>(w: W, pool: &Pool, s: &RunSpec) -> Result<RunOutput> {
    driver::run(Arc::new(w), pool, s).await
}

/// The workload's options as strings, for the record (endpoints and output flags left out).
fn params(cmd: &WorkloadCmd) -> std::collections::BTreeMap<String, String> {
    let text = format!("{cmd:?}");
    let mut out = std::collections::BTreeMap::new();
    out.insert("command".to_string(), text);
    out
}
