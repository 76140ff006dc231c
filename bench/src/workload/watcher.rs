//! One watch stream over a key range, read by a background task that counts what arrives:
//! events, progress notifications, cancellations, and (for stamped values) put-to-event latency.
//!
//! Invariants: `open` returns only after the server confirmed the watch (`created`), so writes
//! issued afterwards are seen; the request sender is kept alive as long as the `Watcher`, so the
//! server never sees the stream half-closed; dropping a `Watcher` stops its task.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use ballast_proto::etcdserverpb::{
    watch_request, WatchCreateRequest, WatchProgressRequest, WatchRequest,
};
use ballast_proto::mvccpb::event::EventType;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use crate::conn::Pool;
use crate::latency::Latency;
use crate::workload::stamp;

const CREATE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a watcher has seen so far.
#[derive(Debug, Default)]
pub struct WatcherStats {
    pub events: AtomicU64,
    pub puts: AtomicU64,
    pub progress_notifies: AtomicU64,
    pub canceled: AtomicU64,
    pub stream_errors: AtomicU64,
    /// Put-to-event latency of stamped put events.
    pub latency: Mutex<Latency>,
}

/// An open watch stream.
pub struct Watcher {
    task: tokio::task::JoinHandle<()>,
    requests: mpsc::Sender<WatchRequest>,
    pub stats: Arc<WatcherStats>,
}

impl Watcher {
    /// Asks the server for a progress notification (etcd 3.4+); false when the request queue
    /// is full or the stream is gone.
    pub fn request_progress(&self) -> bool {
        let req = WatchRequest {
            request_union: Some(watch_request::RequestUnion::ProgressRequest(
                WatchProgressRequest {},
            )),
        };
        self.requests.try_send(req).is_ok()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Opens a watch on `[key, range_end)` over channel `index % conns`.
pub async fn open(
    pool: &Pool,
    index: usize,
    key: Bytes,
    range_end: Bytes,
    progress_notify: bool,
    stamped: bool,
) -> Result<Watcher> {
    let (tx, rx) = mpsc::channel(4);
    let create = WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                key,
                range_end,
                progress_notify,
                ..Default::default()
            },
        )),
    };
    tx.send(create)
        .await
        .map_err(|_| anyhow!("watch request channel closed"))?;
    let mut client = pool.watch(index);
    let mut stream = tokio::time::timeout(CREATE_TIMEOUT, client.watch(ReceiverStream::new(rx)))
        .await
        .context("timed out opening a watch stream")??
        .into_inner();
    let first = tokio::time::timeout(CREATE_TIMEOUT, stream.next())
        .await
        .context("timed out waiting for the watch to be created")?
        .ok_or_else(|| anyhow!("watch stream ended before created"))??;
    if !first.created || first.canceled {
        bail!("watch not created: {:?}", first.cancel_reason);
    }
    let stats = Arc::new(WatcherStats::default());
    let s = stats.clone();
    let task = tokio::spawn(async move {
        while let Some(msg) = stream.next().await {
            let resp = match msg {
                Ok(r) => r,
                Err(_) => {
                    s.stream_errors.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            if resp.canceled {
                s.canceled.fetch_add(1, Ordering::Relaxed);
                return;
            }
            if resp.events.is_empty() {
                if !resp.created {
                    s.progress_notifies.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
            s.events
                .fetch_add(resp.events.len() as u64, Ordering::Relaxed);
            let mut lat = s.latency.lock().expect("latency lock");
            for ev in &resp.events {
                if ev.r#type != EventType::Put as i32 {
                    continue;
                }
                s.puts.fetch_add(1, Ordering::Relaxed);
                if stamped {
                    if let Some(age) = ev.kv.as_ref().and_then(|kv| stamp::age(&kv.value)) {
                        lat.record(age);
                    }
                }
            }
        }
    });
    Ok(Watcher {
        task,
        requests: tx,
        stats,
    })
}
