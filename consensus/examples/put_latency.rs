//! Latency of sequential writes through a shard handle: 2,000 `call(Put)` one after another
//! from a tokio task (the way a gRPC handler reaches its shard), reported as HDR percentiles.
//! A benchmark prints figures; it asserts nothing about time.
//!
//! Run: `cargo run --release -p ballast-consensus --example put_latency [-- COUNT [DIR]]`
//! With DIR the shard is durable there (WAL fdatasync on every write, checkpoints); without,
//! its log and state are in memory.

use std::time::Instant;

use ballast_consensus::{Request, Response, ShardConfig, ShardHandle};
use ballast_engine::PutRequest;
use bytes::Bytes;
use hdrhistogram::Histogram;

const WARMUP: usize = 200;

fn main() -> anyhow::Result<()> {
    let count: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(2000);
    let storage = std::env::args()
        .nth(2)
        .map(ballast_consensus::durable::ShardStorage::new);
    let durable = storage.is_some();
    let config = ShardConfig {
        storage,
        ..ShardConfig::default()
    };
    let (shard, thread) = ShardHandle::spawn("bench-shard", config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let hist = runtime.block_on(async move {
        let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
        for i in 0..WARMUP + count {
            let request = Request::Put(PutRequest {
                key: Bytes::from(format!("key-{:06}", i % 1000)),
                value: Bytes::from_static(&[7u8; 128]),
                ..PutRequest::default()
            });
            let started = Instant::now();
            shard.call(request).await?;
            let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            if i >= WARMUP {
                hist.record(micros.max(1))?;
            }
        }
        let status = match shard.call(Request::Status).await?.response {
            Response::Status(status) => status,
            other => anyhow::bail!("status answered with {other:?}"),
        };
        drop(shard);
        anyhow::Ok((hist, status))
    })?;
    let (hist, status) = hist;
    thread
        .join()
        .map_err(|_| anyhow::anyhow!("shard thread panicked"))?;
    println!(
        "put x{count} sequential via ShardHandle::call ({}): p50 {} us, p90 {} us, p99 {} us, p99.9 {} us, max {} us, mean {:.1} us",
        if durable { "durable" } else { "in memory" },
        hist.value_at_quantile(0.50),
        hist.value_at_quantile(0.90),
        hist.value_at_quantile(0.99),
        hist.value_at_quantile(0.999),
        hist.max(),
        hist.mean()
    );
    // Inside the shard (warm-up included): from the command leaving the queue to its answer,
    // and that time by stage; the rest of the figure above is the hop between the threads.
    let st = &status.write_stages;
    println!(
        "inside the shard: p50 {} us, p99 {} us; by stage p50/p99/p99.9 us ({} writes): propose {:?}, log {:?}, commit {:?}, apply {:?}; WAL {} records in {} syncs",
        status.write_latency_us_p50,
        status.write_latency_us_p99,
        st.writes,
        st.propose_us,
        st.log_us,
        st.commit_us,
        st.apply_us,
        status.wal_records,
        status.wal_syncs
    );
    Ok(())
}
