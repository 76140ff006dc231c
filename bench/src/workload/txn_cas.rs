//! `txn-cas`: Kubernetes' GuaranteedUpdate. Read the key, then a Txn that writes only if the
//! key's mod_revision is still the one read, else reads it again in the failure branch and
//! retries with that revision.
//!
//! Invariants: an operation succeeds exactly when one of its Txns succeeded; each failed
//! compare adds one to `conflicts`; after `max_retries` conflicts the operation fails as
//! `RetriesExhausted`. A missing key compares as mod_revision 0, so the first update creates it.

use anyhow::Result;
use ballast_proto::etcdserverpb::{
    compare, kv_client::KvClient, request_op, response_op, Compare, PutRequest, RangeRequest,
    RequestOp, TxnRequest,
};
use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use tonic::transport::Channel;
use tonic::Status;

use crate::conn::Pool;
use crate::errors::RETRIES_EXHAUSTED;
use crate::keys::{random_value, KeyGen};
use crate::result::BenchResult;
use crate::tally::Tally;
use crate::workload::Latencies;
use crate::workload::Workload;

/// The compare-and-swap workload.
pub struct TxnCas {
    keys: KeyGen,
    value: Bytes,
    max_retries: u32,
}

impl TxnCas {
    pub fn new(keys: KeyGen, value_size: usize, max_retries: u32) -> Self {
        Self {
            keys,
            value: random_value(value_size),
            max_retries,
        }
    }
}

/// Per-client state.
pub struct TxnCasClient {
    kv: KvClient<Channel>,
    rng: SmallRng,
}

/// One GuaranteedUpdate of `key` to `value`; returns the number of conflicts it met.
pub async fn guaranteed_update(
    kv: &mut KvClient<Channel>,
    key: Bytes,
    value: Bytes,
    max_retries: u32,
) -> Result<u32, Status> {
    let got = kv
        .range(RangeRequest {
            key: key.clone(),
            ..Default::default()
        })
        .await?;
    let mut mod_revision = got.into_inner().kvs.first().map_or(0, |kv| kv.mod_revision);
    let mut conflicts = 0;
    loop {
        let txn = TxnRequest {
            compare: vec![Compare {
                result: compare::CompareResult::Equal as i32,
                target: compare::CompareTarget::Mod as i32,
                key: key.clone(),
                target_union: Some(compare::TargetUnion::ModRevision(mod_revision)),
                ..Default::default()
            }],
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: key.clone(),
                    value: value.clone(),
                    ..Default::default()
                })),
            }],
            failure: vec![RequestOp {
                request: Some(request_op::Request::RequestRange(RangeRequest {
                    key: key.clone(),
                    ..Default::default()
                })),
            }],
        };
        let resp = kv.txn(txn).await?.into_inner();
        if resp.succeeded {
            return Ok(conflicts);
        }
        conflicts += 1;
        if conflicts > max_retries {
            return Err(Status::unknown(RETRIES_EXHAUSTED));
        }
        mod_revision = resp
            .responses
            .into_iter()
            .find_map(|r| match r.response {
                Some(response_op::Response::ResponseRange(rr)) => Some(rr),
                _ => None,
            })
            .and_then(|rr| rr.kvs.first().map(|kv| kv.mod_revision))
            .unwrap_or(0);
    }
}

impl Workload for TxnCas {
    type Client = TxnCasClient;

    fn name(&self) -> &'static str {
        "txn-cas"
    }

    async fn setup(&self, _pool: &Pool) -> Result<()> {
        Ok(())
    }

    fn client(&self, index: usize, pool: &Pool) -> TxnCasClient {
        TxnCasClient {
            kv: pool.kv(index),
            rng: SmallRng::from_entropy(),
        }
    }

    async fn op(&self, c: &mut TxnCasClient, seq: u64, tally: &mut Tally) -> Result<(), Status> {
        let key = self.keys.pick(seq, &mut c.rng);
        match guaranteed_update(&mut c.kv, key, self.value.clone(), self.max_retries).await {
            Ok(conflicts) => {
                tally.add("conflicts", u64::from(conflicts));
                Ok(())
            }
            Err(status) => {
                if status.message() == RETRIES_EXHAUSTED {
                    tally.add("conflicts", u64::from(self.max_retries) + 1);
                }
                Err(status)
            }
        }
    }

    async fn finish(&self, _result: &mut BenchResult, _latencies: &mut Latencies) -> Result<()> {
        Ok(())
    }
}
