//! Loads keys before a read workload: `count` keys of a generator, written by a bounded number
//! of concurrent tasks.
//!
//! Invariant: returns only when every key has been written, or the first error.

use anyhow::{Context, Result};
use ballast_proto::etcdserverpb::PutRequest;
use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};

use crate::conn::Pool;
use crate::keys::KeyGen;

/// Concurrent puts while preloading.
pub const PRELOAD_CONCURRENCY: usize = 32;

/// Writes keys `0..count` of `keys`, each with `value`.
pub async fn preload(pool: &Pool, keys: &KeyGen, count: u64, value: Bytes) -> Result<()> {
    stream::iter(0..count)
        .map(|n| {
            let mut kv = pool.kv(n as usize);
            let req = PutRequest {
                key: keys.key(n),
                value: value.clone(),
                ..Default::default()
            };
            async move { kv.put(req).await.map(|_| ()) }
        })
        .buffer_unordered(PRELOAD_CONCURRENCY)
        .try_collect::<()>()
        .await
        .context("preloading keys")
}
