//! `k8s`: a Kubernetes-like mix over `/registry/<resource>/<namespace>/<name>` keys with values
//! of 1–10 KiB: gets, paginated lists, creates (create-if-absent Txn), GuaranteedUpdates,
//! deletes (compare mod_revision), events written with a lease, one watch per resource with
//! progress notifications, and a compaction every `compact_every`.
//!
//! Invariants: operation kinds are drawn from fixed weights ([`MIX`]), each counted as `op_<kind>`;
//! half the objects exist before the run (even indexes), so creates and deletes both find work;
//! the compactor compacts at the revision seen one period earlier, as the API server does, so
//! watchers that keep up are never cancelled by it; background tasks stop in `finish` or on drop.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use ballast_proto::etcdserverpb::{
    compare, kv_client::KvClient, lease_client::LeaseClient, request_op, CompactionRequest,
    Compare, DeleteRangeRequest, LeaseGrantRequest, PutRequest, RangeRequest, RequestOp,
    TxnRequest,
};
use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;
use tonic::Status;

use crate::conn::Pool;
use crate::keys::{prefix_range, random_value};
use crate::result::BenchResult;
use crate::tally::Tally;
use crate::workload::pager::list_all;
use crate::workload::preload::PRELOAD_CONCURRENCY;
use crate::workload::txn_cas::guaranteed_update;
use crate::workload::watcher::{self, Watcher};
use crate::workload::Latencies;
use crate::workload::Workload;

/// Operation kinds and their weights (sum 100).
pub const MIX: &[(Kind, u32)] = &[
    (Kind::Get, 10),
    (Kind::List, 5),
    (Kind::Create, 10),
    (Kind::Update, 45),
    (Kind::Delete, 10),
    (Kind::Event, 20),
];
const _: () = {
    let mut i = 0;
    let mut sum = 0;
    while i < MIX.len() {
        sum += MIX[i].1;
        i += 1;
    }
    assert!(sum == 100);
};

/// One kind of Kubernetes storage call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Get,
    List,
    Create,
    Update,
    Delete,
    Event,
}

impl Kind {
    fn counter(self) -> &'static str {
        match self {
            Kind::Get => "op_get",
            Kind::List => "op_list",
            Kind::Create => "op_create",
            Kind::Update => "op_update",
            Kind::Delete => "op_delete",
            Kind::Event => "op_event",
        }
    }
}

/// Draws a kind from [`MIX`] given a number in `0..100`.
pub fn kind_for(roll: u32) -> Kind {
    let mut acc = 0;
    for (kind, weight) in MIX {
        acc += weight;
        if roll < acc {
            return *kind;
        }
    }
    Kind::Update
}

/// Shape of the simulated cluster.
#[derive(Clone, Debug)]
pub struct K8sConfig {
    /// Resource names (events are always added).
    pub resources: Vec<String>,
    pub namespaces: u64,
    /// Object names per resource.
    pub objects: u64,
    pub value_min: usize,
    pub value_max: usize,
    pub page_size: i64,
    pub compact_every: Duration,
    pub event_ttl_s: i64,
    pub max_retries: u32,
}

/// The Kubernetes-like workload.
pub struct K8s {
    cfg: K8sConfig,
    blob: Bytes,
    watchers: Mutex<Vec<Watcher>>,
    background: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    compactions: Arc<AtomicU64>,
}

impl K8s {
    pub fn new(mut cfg: K8sConfig) -> Self {
        cfg.value_max = cfg.value_max.max(cfg.value_min).max(1);
        cfg.namespaces = cfg.namespaces.max(1);
        cfg.objects = cfg.objects.max(1);
        Self {
            blob: random_value(cfg.value_max),
            cfg,
            watchers: Mutex::new(Vec::new()),
            background: Mutex::new(Vec::new()),
            compactions: Arc::new(AtomicU64::new(0)),
        }
    }

    fn key(&self, resource: &str, index: u64) -> Bytes {
        let ns = index % self.cfg.namespaces;
        Bytes::from(format!("/registry/{resource}/ns-{ns}/obj-{index:06}"))
    }

    fn value(&self, rng: &mut impl Rng) -> Bytes {
        let len = rng.gen_range(self.cfg.value_min..=self.cfg.value_max);
        self.blob.slice(..len.min(self.blob.len()))
    }

    fn stop_background(&self) {
        for t in self.background.lock().expect("background lock").drain(..) {
            t.abort();
        }
    }
}

impl Drop for K8s {
    fn drop(&mut self) {
        self.stop_background();
    }
}

/// Per-client state.
pub struct K8sClient {
    index: usize,
    kv: KvClient<Channel>,
    lease: LeaseClient<Channel>,
    rng: SmallRng,
    /// The lease events are attached to, and when it was granted.
    event_lease: Option<(i64, Instant)>,
}

impl Workload for K8s {
    type Client = K8sClient;

    fn name(&self) -> &'static str {
        "k8s"
    }

    async fn setup(&self, pool: &Pool) -> Result<()> {
        let mut seed = SmallRng::from_entropy();
        let puts: Vec<(Bytes, Bytes)> = self
            .cfg
            .resources
            .iter()
            .flat_map(|r| {
                (0..self.cfg.objects)
                    .step_by(2)
                    .map(move |i| (r.clone(), i))
            })
            .map(|(r, i)| (self.key(&r, i), self.value(&mut seed)))
            .collect();
        stream::iter(puts.into_iter().enumerate())
            .map(|(n, (key, value))| {
                let mut kv = pool.kv(n);
                async move {
                    kv.put(PutRequest {
                        key,
                        value,
                        ..Default::default()
                    })
                    .await
                }
            })
            .buffer_unordered(PRELOAD_CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;

        let mut opened = Vec::new();
        for (i, r) in self
            .cfg
            .resources
            .iter()
            .chain(std::iter::once(&"events".to_string()))
            .enumerate()
        {
            let (key, end) = prefix_range(format!("/registry/{r}/").as_bytes());
            opened.push(watcher::open(pool, i, key, end, true, false).await?);
        }
        *self.watchers.lock().expect("watchers lock") = opened;

        let mut kv = pool.kv(0);
        let period = self.cfg.compact_every;
        let compactions = self.compactions.clone();
        let compactor = tokio::spawn(async move {
            let mut previous = 0;
            loop {
                tokio::time::sleep(period).await;
                let now = kv
                    .range(RangeRequest {
                        key: Bytes::from_static(b"/registry/"),
                        limit: 1,
                        ..Default::default()
                    })
                    .await;
                let Ok(now) = now else { continue };
                let revision = now.into_inner().header.map_or(0, |h| h.revision);
                if previous > 0
                    && kv
                        .compact(CompactionRequest {
                            revision: previous,
                            physical: false,
                        })
                        .await
                        .is_ok()
                {
                    compactions.fetch_add(1, Ordering::Relaxed);
                }
                previous = revision;
            }
        });
        self.background
            .lock()
            .expect("background lock")
            .push(compactor);
        Ok(())
    }

    fn client(&self, index: usize, pool: &Pool) -> K8sClient {
        K8sClient {
            index,
            kv: pool.kv(index),
            lease: pool.lease(index),
            rng: SmallRng::from_entropy(),
            event_lease: None,
        }
    }

    async fn op(&self, c: &mut K8sClient, seq: u64, tally: &mut Tally) -> Result<(), Status> {
        let kind = kind_for(c.rng.gen_range(0..100));
        tally.add(kind.counter(), 1);
        let resource = self.cfg.resources[c.rng.gen_range(0..self.cfg.resources.len())].clone();
        let index = c.rng.gen_range(0..self.cfg.objects);
        let key = self.key(&resource, index);
        match kind {
            Kind::Get => {
                c.kv.range(RangeRequest {
                    key,
                    ..Default::default()
                })
                .await?;
            }
            Kind::List => {
                let prefix = if c.rng.gen_ratio(1, 5) {
                    format!("/registry/{resource}/")
                } else {
                    format!("/registry/{resource}/ns-{}/", index % self.cfg.namespaces)
                };
                let (key, end) = prefix_range(prefix.as_bytes());
                let listing = list_all(&mut c.kv, key, end, self.cfg.page_size, false).await?;
                tally.add("list_pages", listing.pages);
            }
            Kind::Create => {
                let value = self.value(&mut c.rng);
                let created = create_if_absent(&mut c.kv, key, value).await?;
                if !created {
                    tally.add("create_exists", 1);
                }
            }
            Kind::Update => {
                let value = self.value(&mut c.rng);
                let conflicts =
                    guaranteed_update(&mut c.kv, key, value, self.cfg.max_retries).await?;
                tally.add("conflicts", u64::from(conflicts));
            }
            Kind::Delete => {
                let deleted = delete_current(&mut c.kv, key).await?;
                if !deleted {
                    tally.add("delete_missed", 1);
                }
            }
            Kind::Event => {
                let ttl = self.cfg.event_ttl_s.max(1);
                let stale = c
                    .event_lease
                    .is_none_or(|(_, at)| at.elapsed() > Duration::from_secs(ttl as u64) / 2);
                if stale {
                    let granted = c
                        .lease
                        .lease_grant(LeaseGrantRequest { ttl, id: 0 })
                        .await?
                        .into_inner();
                    c.event_lease = Some((granted.id, Instant::now()));
                    tally.add("leases_granted", 1);
                }
                let lease = c.event_lease.map_or(0, |(id, _)| id);
                let ns = index % self.cfg.namespaces;
                let key = Bytes::from(format!("/registry/events/ns-{ns}/ev-{}-{seq}", c.index));
                let value = self.value(&mut c.rng);
                c.kv.put(PutRequest {
                    key,
                    value,
                    lease,
                    ..Default::default()
                })
                .await?;
            }
        }
        Ok(())
    }

    async fn finish(&self, result: &mut BenchResult, _latencies: &mut Latencies) -> Result<()> {
        let watchers = std::mem::take(&mut *self.watchers.lock().expect("watchers lock"));
        for w in &watchers {
            w.request_progress();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.stop_background();
        let sum = |f: fn(&Watcher) -> u64| watchers.iter().map(f).sum::<u64>();
        let c = &mut result.counters;
        c.insert("watchers".into(), watchers.len() as u64);
        c.insert(
            "watch_events".into(),
            sum(|w| w.stats.events.load(Ordering::Relaxed)),
        );
        c.insert(
            "progress_notifies".into(),
            sum(|w| w.stats.progress_notifies.load(Ordering::Relaxed)),
        );
        c.insert(
            "watchers_lost".into(),
            sum(|w| {
                w.stats.canceled.load(Ordering::Relaxed)
                    + w.stats.stream_errors.load(Ordering::Relaxed)
            }),
        );
        c.insert(
            "compactions".into(),
            self.compactions.load(Ordering::Relaxed),
        );
        Ok(())
    }
}

/// Kubernetes' Create: put only if the key has never existed in its current life
/// (mod_revision 0). Returns whether it was created.
pub async fn create_if_absent(
    kv: &mut KvClient<Channel>,
    key: Bytes,
    value: Bytes,
) -> Result<bool, Status> {
    let txn = TxnRequest {
        compare: vec![Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Mod as i32,
            key: key.clone(),
            target_union: Some(compare::TargetUnion::ModRevision(0)),
            ..Default::default()
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key,
                value,
                ..Default::default()
            })),
        }],
        failure: vec![],
    };
    Ok(kv.txn(txn).await?.into_inner().succeeded)
}

/// Kubernetes' Delete: read the object, delete it only if unchanged since. Returns whether a
/// key was deleted (false when it was absent or changed in between).
pub async fn delete_current(kv: &mut KvClient<Channel>, key: Bytes) -> Result<bool, Status> {
    let got = kv
        .range(RangeRequest {
            key: key.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let Some(current) = got.kvs.first() else {
        return Ok(false);
    };
    let txn = TxnRequest {
        compare: vec![Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Mod as i32,
            key: key.clone(),
            target_union: Some(compare::TargetUnion::ModRevision(current.mod_revision)),
            ..Default::default()
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestDeleteRange(
                DeleteRangeRequest {
                    key,
                    ..Default::default()
                },
            )),
        }],
        failure: vec![],
    };
    Ok(kv.txn(txn).await?.into_inner().succeeded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_covers_every_roll() {
        let mut seen = std::collections::HashMap::new();
        for roll in 0..100 {
            *seen.entry(format!("{:?}", kind_for(roll))).or_insert(0u32) += 1;
        }
        for (kind, weight) in MIX {
            assert_eq!(seen[&format!("{kind:?}")], *weight);
        }
    }
}
