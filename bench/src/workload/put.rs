//! `put`: one Put per operation, keys sequential or random over the key space.
//!
//! Invariant: every operation writes one key with the configured value size.

use anyhow::Result;
use ballast_proto::etcdserverpb::{kv_client::KvClient, PutRequest};
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
use crate::workload::Workload;

/// The put workload.
pub struct Put {
    keys: KeyGen,
    value: Bytes,
}

impl Put {
    pub fn new(keys: KeyGen, value_size: usize) -> Self {
        Self {
            keys,
            value: random_value(value_size),
        }
    }
}

/// Per-client state.
pub struct PutClient {
    kv: KvClient<Channel>,
    rng: SmallRng,
}

impl Workload for Put {
    type Client = PutClient;

    fn name(&self) -> &'static str {
        "put"
    }

    async fn setup(&self, _pool: &Pool) -> Result<()> {
        Ok(())
    }

    fn client(&self, index: usize, pool: &Pool) -> PutClient {
        PutClient {
            kv: pool.kv(index),
            rng: SmallRng::from_entropy(),
        }
    }

    async fn op(&self, c: &mut PutClient, seq: u64, _tally: &mut Tally) -> Result<(), Status> {
        let key = self.keys.pick(seq, &mut c.rng);
        c.kv.put(PutRequest {
            key,
            value: self.value.clone(),
            ..Default::default()
        })
        .await?;
        Ok(())
    }

    async fn finish(&self, _result: &mut BenchResult, _latencies: &mut Latencies) -> Result<()> {
        Ok(())
    }
}
