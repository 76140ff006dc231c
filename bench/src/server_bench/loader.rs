//! Bulk loading for the server-process benchmarks: `count` Kubernetes-shaped keys written once
//! each by many concurrent clients, one Put per key.
//!
//! Invariants: key `n` is a pure function of `n`, exactly `key_size` bytes when that fits
//! (longer only when the prefix and the digits do not), distinct for distinct `n`, and under
//! `/registry/`; value `n` is a pure function of `n` and the value size, pseudo-random so that
//! no two values are equal and none compresses (a store that compresses pages gains nothing
//! from repetition a real cluster would not have). `load` returns only once every key was
//! acknowledged, or with the first failure, or at its time bound.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use ballast_proto::etcdserverpb::PutRequest;
use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use crate::conn::Pool;
use crate::keys::prefix_range;

/// Resources the keys are spread over, as Kubernetes stores them.
const RESOURCES: [&str; 8] = [
    "pods",
    "configmaps",
    "secrets",
    "services",
    "deployments",
    "nodes",
    "leases",
    "events",
];
/// Namespaces per resource.
const NAMESPACES: u64 = 100;
/// Every key starts with this.
pub const KEY_PREFIX: &str = "/registry/";
/// One Put's bound; past it the load fails.
const PUT_TIMEOUT: Duration = Duration::from_secs(30);
/// How often progress is printed while loading.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// The keys and values of one load.
#[derive(Clone, Debug)]
pub struct RegistryKeys {
    pub count: u64,
    pub key_size: usize,
    pub val_size: usize,
}

impl RegistryKeys {
    /// Key `n`: `/registry/<resource>/ns-<nn>/` then `n` zero-padded to fill `key_size`.
    pub fn key(&self, n: u64) -> Bytes {
        let resource = RESOURCES[(n % RESOURCES.len() as u64) as usize];
        let ns = (n / RESOURCES.len() as u64) % NAMESPACES;
        let head = format!("{KEY_PREFIX}{resource}/ns-{ns:02}/");
        let digits = self.count.max(1).saturating_sub(1).to_string().len();
        let width = self.key_size.saturating_sub(head.len()).max(digits);
        Bytes::from(format!("{head}{n:0width$}"))
    }

    /// Value `n`: `val_size` pseudo-random bytes seeded by `n`.
    pub fn value(&self, n: u64) -> Bytes {
        let mut v = vec![0u8; self.val_size];
        SmallRng::seed_from_u64(n ^ 0x9e37_79b9_7f4a_7c15).fill_bytes(&mut v);
        Bytes::from(v)
    }

    /// `[key, range_end)` over every key of every load.
    pub fn range(&self) -> (Bytes, Bytes) {
        prefix_range(KEY_PREFIX.as_bytes())
    }

    /// Bytes of values in all.
    pub fn value_bytes(&self) -> u64 {
        self.count * self.val_size as u64
    }
}

/// How one load went.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    pub keys: u64,
    pub key_size: usize,
    pub val_size: usize,
    pub clients: usize,
    pub conns: usize,
    pub duration_s: f64,
    pub keys_per_s: f64,
}

/// Writes every key of `keys` once through `clients` concurrent clients on `pool`, at most
/// `timeout` in all; prints progress to stderr every 10 s when `progress`.
pub async fn load(
    pool: &Pool,
    keys: &RegistryKeys,
    clients: usize,
    timeout: Duration,
    progress: bool,
) -> Result<LoadReport> {
    let clients = clients.max(1);
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..clients {
        let (kv, next, done, keys) = (pool.kv(i), next.clone(), done.clone(), keys.clone());
        tasks.spawn(async move {
            let mut kv = kv;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= keys.count {
                    return Ok::<(), anyhow::Error>(());
                }
                let req = PutRequest {
                    key: keys.key(n),
                    value: keys.value(n),
                    ..Default::default()
                };
                match tokio::time::timeout(PUT_TIMEOUT, kv.put(req)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(status)) => return Err(anyhow!("put of key {n} failed: {status}")),
                    Err(_) => return Err(anyhow!("put of key {n}: no answer in {PUT_TIMEOUT:?}")),
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let all = async {
        while let Some(joined) = tasks.join_next().await {
            joined.context("loading client panicked")??;
        }
        Ok::<(), anyhow::Error>(())
    };
    let ticker = async {
        let mut last = 0;
        loop {
            tokio::time::sleep(PROGRESS_EVERY).await;
            let now = done.load(Ordering::Relaxed);
            if progress {
                eprintln!(
                    "  loaded {now} of {} keys ({:.0} keys/s over the last {}s)",
                    keys.count,
                    (now - last) as f64 / PROGRESS_EVERY.as_secs_f64(),
                    PROGRESS_EVERY.as_secs()
                );
            }
            last = now;
        }
    };
    tokio::select! {
        r = tokio::time::timeout(timeout, all) => match r {
            Ok(r) => r.with_context(|| format!("loading {} keys", keys.count))?,
            Err(_) => {
                return Err(anyhow!(
                    "loading {} keys: {} done after the {timeout:?} bound",
                    keys.count,
                    done.load(Ordering::Relaxed)
                ))
            }
        },
        () = ticker => unreachable!("the ticker never ends"),
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(LoadReport {
        keys: keys.count,
        key_size: keys.key_size,
        val_size: keys.val_size,
        clients,
        conns: pool.conns(),
        duration_s: secs,
        keys_per_s: if secs > 0.0 {
            keys.count as f64 / secs
        } else {
            0.0
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_size_and_are_distinct() {
        let k = RegistryKeys {
            count: 1_000_000,
            key_size: 40,
            val_size: 256,
        };
        let mut seen = std::collections::HashSet::new();
        for n in (0..1_000_000).step_by(997).chain([999_999]) {
            let key = k.key(n);
            assert_eq!(key.len(), 40, "{key:?}");
            assert!(key.starts_with(KEY_PREFIX.as_bytes()));
            assert!(seen.insert(key));
        }
        assert_eq!(&k.key(9)[..], b"/registry/configmaps/ns-01/0000000000009");
        let (start, end) = k.range();
        assert!(k.key(5) >= start && k.key(5) < end);
    }

    #[test]
    fn values_are_sized_distinct_and_repeatable() {
        let k = RegistryKeys {
            count: 10,
            key_size: 40,
            val_size: 1024,
        };
        assert_eq!(k.value(3).len(), 1024);
        assert_eq!(k.value(3), k.value(3));
        assert_ne!(k.value(3), k.value(4));
        assert_eq!(k.value_bytes(), 10 * 1024);
    }
}
