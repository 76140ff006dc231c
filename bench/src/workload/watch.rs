//! `watch`: N watchers on one prefix, the clients write stamped values under it; measures
//! put latency (the operations) and put-to-event latency (`latencies.event`).
//!
//! Invariants: every watcher is created before the first put; every successful put (warm-up
//! included) is counted in `puts_total`, so after settling `events_received` must equal
//! `puts_total × watchers` (`events_expected`); `finish` waits at most `settle` for stragglers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Result;
use ballast_proto::etcdserverpb::{kv_client::KvClient, PutRequest};
use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use tonic::transport::Channel;
use tonic::Status;

use crate::conn::Pool;
use crate::keys::{random_value, KeyGen};
use crate::latency::Latency;
use crate::result::BenchResult;
use crate::tally::Tally;
use crate::workload::watcher::{self, Watcher};
use crate::workload::Latencies;
use crate::workload::{stamp, Workload};

/// The watch fan-out workload.
pub struct Watch {
    keys: KeyGen,
    value_size: usize,
    filler: Bytes,
    watchers: usize,
    settle: Duration,
    open: Mutex<Vec<Watcher>>,
    puts: AtomicU64,
}

impl Watch {
    pub fn new(keys: KeyGen, value_size: usize, watchers: usize, settle: Duration) -> Self {
        Self {
            keys,
            value_size,
            filler: random_value(64),
            watchers,
            settle,
            open: Mutex::new(Vec::new()),
            puts: AtomicU64::new(0),
        }
    }

    fn events_received(&self) -> u64 {
        let open = self.open.lock().expect("watchers lock");
        open.iter()
            .map(|w| w.stats.events.load(Ordering::Relaxed))
            .sum()
    }
}

/// Per-client (writer) state.
pub struct WatchClient {
    kv: KvClient<Channel>,
    rng: SmallRng,
}

impl Workload for Watch {
    type Client = WatchClient;

    fn name(&self) -> &'static str {
        "watch"
    }

    async fn setup(&self, pool: &Pool) -> Result<()> {
        let (key, end) = self.keys.prefix_range();
        let mut opened = Vec::with_capacity(self.watchers);
        for i in 0..self.watchers {
            opened.push(watcher::open(pool, i, key.clone(), end.clone(), false, true).await?);
        }
        *self.open.lock().expect("watchers lock") = opened;
        Ok(())
    }

    fn client(&self, index: usize, pool: &Pool) -> WatchClient {
        WatchClient {
            kv: pool.kv(index),
            rng: SmallRng::from_entropy(),
        }
    }

    async fn op(&self, c: &mut WatchClient, seq: u64, _tally: &mut Tally) -> Result<(), Status> {
        let key = self.keys.pick(seq, &mut c.rng);
        let value = stamp::stamped_value(self.value_size, &self.filler);
        c.kv.put(PutRequest {
            key,
            value,
            ..Default::default()
        })
        .await?;
        self.puts.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn finish(&self, result: &mut BenchResult, latencies: &mut Latencies) -> Result<()> {
        let puts = self.puts.load(Ordering::Relaxed);
        let expected = puts * self.watchers as u64;
        let deadline = tokio::time::Instant::now() + self.settle;
        while self.events_received() < expected && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let watchers = std::mem::take(&mut *self.open.lock().expect("watchers lock"));
        let mut latency = Latency::new();
        let mut received = 0;
        let mut canceled = 0;
        for w in &watchers {
            received += w.stats.events.load(Ordering::Relaxed);
            canceled += w.stats.canceled.load(Ordering::Relaxed)
                + w.stats.stream_errors.load(Ordering::Relaxed);
            latency.merge(&w.stats.latency.lock().expect("latency lock"));
        }
        drop(watchers);
        let c = &mut result.counters;
        c.insert("watchers".into(), self.watchers as u64);
        c.insert("puts_total".into(), puts);
        c.insert("events_expected".into(), expected);
        c.insert("events_received".into(), received);
        c.insert("watchers_lost".into(), canceled);
        latencies.insert("event".into(), latency);
        Ok(())
    }
}
