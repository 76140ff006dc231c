//! `range`: reads over preloaded keys, linearizable or serializable, either one key per
//! operation or a prefix range with a limit.
//!
//! Invariants: `setup` writes `keys.key_space` keys first (unless told not to); a single-key
//! read of a preloaded key that returns nothing is counted as `NotFound`, so a broken server
//! cannot pass as fast.

use anyhow::Result;
use ballast_proto::etcdserverpb::{kv_client::KvClient, RangeRequest};
use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use tonic::transport::Channel;
use tonic::Status;

use crate::conn::Pool;
use crate::keys::{random_value, KeyGen};
use crate::result::BenchResult;
use crate::tally::Tally;
use crate::workload::Latencies;
use crate::workload::{preload::preload, Workload};

/// The range workload.
pub struct Range {
    keys: KeyGen,
    value_size: usize,
    serializable: bool,
    /// `Some(limit)`: read the whole prefix with this limit instead of one key.
    prefix_limit: Option<i64>,
    preload: bool,
}

impl Range {
    pub fn new(
        keys: KeyGen,
        value_size: usize,
        serializable: bool,
        prefix_limit: Option<i64>,
        preload: bool,
    ) -> Self {
        Self {
            keys,
            value_size,
            serializable,
            prefix_limit,
            preload,
        }
    }
}

/// Per-client state.
pub struct RangeClient {
    kv: KvClient<Channel>,
    rng: SmallRng,
}

impl Workload for Range {
    type Client = RangeClient;

    fn name(&self) -> &'static str {
        "range"
    }

    async fn setup(&self, pool: &Pool) -> Result<()> {
        if self.preload {
            preload(
                pool,
                &self.keys,
                self.keys.key_space,
                random_value(self.value_size),
            )
            .await?;
        }
        Ok(())
    }

    fn client(&self, index: usize, pool: &Pool) -> RangeClient {
        RangeClient {
            kv: pool.kv(index),
            rng: SmallRng::from_entropy(),
        }
    }

    async fn op(&self, c: &mut RangeClient, seq: u64, tally: &mut Tally) -> Result<(), Status> {
        let (key, range_end, limit) = match self.prefix_limit {
            Some(limit) => {
                let (k, e) = self.keys.prefix_range();
                (k, e, limit)
            }
            None => (self.keys.pick(seq, &mut c.rng), Bytes::new(), 0),
        };
        let single = range_end.is_empty();
        let resp =
            c.kv.range(RangeRequest {
                key,
                range_end,
                limit,
                serializable: self.serializable,
                ..Default::default()
            })
            .await?
            .into_inner();
        tally.add("kvs_read", resp.kvs.len() as u64);
        if single && self.preload && resp.kvs.is_empty() {
            return Err(Status::not_found("preloaded key missing"));
        }
        Ok(())
    }

    async fn finish(&self, _result: &mut BenchResult, _latencies: &mut Latencies) -> Result<()> {
        Ok(())
    }
}
