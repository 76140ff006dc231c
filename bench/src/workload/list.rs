//! `list`: full paginated listings of a preloaded prefix; one operation = one whole listing.
//!
//! Invariants: `setup` writes exactly `keys.key_space` keys under a prefix no other workload
//! uses; a listing that does not return each of them exactly once fails as `DataLoss` (counted
//! in `list_mismatch` too), so `keys_listed == lists × key_space` on a correct server.

use anyhow::Result;
use ballast_proto::etcdserverpb::{kv_client::KvClient, DeleteRangeRequest};
use tonic::transport::Channel;
use tonic::Status;

use crate::conn::Pool;
use crate::keys::{random_value, KeyGen};
use crate::result::BenchResult;
use crate::tally::Tally;
use crate::workload::pager::{list_all, strictly_increasing};
use crate::workload::Latencies;
use crate::workload::{preload::preload, Workload};

/// The list workload.
pub struct List {
    keys: KeyGen,
    value_size: usize,
    page_size: i64,
    serializable: bool,
}

impl List {
    pub fn new(keys: KeyGen, value_size: usize, page_size: i64, serializable: bool) -> Self {
        Self {
            keys,
            value_size,
            page_size: page_size.max(1),
            serializable,
        }
    }
}

/// Per-client state.
pub struct ListClient {
    kv: KvClient<Channel>,
}

impl Workload for List {
    type Client = ListClient;

    fn name(&self) -> &'static str {
        "list"
    }

    async fn setup(&self, pool: &Pool) -> Result<()> {
        let (key, range_end) = self.keys.prefix_range();
        pool.kv(0)
            .delete_range(DeleteRangeRequest {
                key,
                range_end,
                ..Default::default()
            })
            .await?;
        preload(
            pool,
            &self.keys,
            self.keys.key_space,
            random_value(self.value_size),
        )
        .await
    }

    fn client(&self, index: usize, pool: &Pool) -> ListClient {
        ListClient { kv: pool.kv(index) }
    }

    async fn op(&self, c: &mut ListClient, _seq: u64, tally: &mut Tally) -> Result<(), Status> {
        let (key, range_end) = self.keys.prefix_range();
        let listing =
            list_all(&mut c.kv, key, range_end, self.page_size, self.serializable).await?;
        tally.add("pages", listing.pages);
        tally.add("keys_listed", listing.keys.len() as u64);
        tally.add("lists", 1);
        if listing.keys.len() as u64 != self.keys.key_space || !strictly_increasing(&listing.keys) {
            tally.add("list_mismatch", 1);
            return Err(Status::data_loss(
                "listing did not return every key exactly once",
            ));
        }
        Ok(())
    }

    async fn finish(&self, result: &mut BenchResult, _latencies: &mut Latencies) -> Result<()> {
        result.counters.insert("keys".into(), self.keys.key_space);
        Ok(())
    }
}
