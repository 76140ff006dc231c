//! `etcdserverpb.Watch`: one task per client stream. It reads the client's create, cancel and
//! progress requests, and forwards what the shard sends for the stream's watchers.
//!
//! Invariants: watch ids are unique within a stream (client-chosen, or the lowest free id
//! counting from 0, as etcd assigns them); after a cancel no message of that watcher reaches the
//! client; responses larger than `--max-request-bytes` are split into fragments only for
//! watchers created with `fragment`.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};

use ballast_consensus::{StreamId, WatchCreate, WatchMessage};
use ballast_engine::watch::WatchFilter;
use ballast_proto::etcdserverpb as pb;
use bytes::Bytes;
use futures::Stream;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status, Streaming};

use crate::context::Context;
use crate::convert;

/// Shard-to-stream messages buffered per stream; when full, the shard catches the stream's
/// watchers up from history later instead of waiting.
const STREAM_MESSAGES_MAX: usize = 1024;
/// Responses buffered per stream on the way to the client.
const STREAM_RESPONSES_MAX: usize = 64;
/// etcd's error text for a client-chosen watch id already in use on the stream.
const DUPLICATE_WATCH_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";
/// etcd's error text for a watch whose key is not below its range end.
const EMPTY_WATCH_RANGE: &str = "mvcc: watcher range is empty";

static NEXT_STREAM: AtomicU64 = AtomicU64::new(1);

/// A process-unique id for a new watch stream (client streams and the server's own watches).
pub fn next_stream_id() -> StreamId {
    NEXT_STREAM.fetch_add(1, Ordering::Relaxed)
}

pub struct WatchService {
    ctx: Context,
}

impl WatchService {
    pub fn new(ctx: Context) -> Self {
        WatchService { ctx }
    }
}

#[derive(Clone, Copy)]
struct WatcherInfo {
    fragment: bool,
    /// The shard the watcher is registered in.
    shard: usize,
}

/// etcd has no such case: a watch whose range spans several shards (merging their streams is
/// not built yet).
const CROSS_SHARD_WATCH: &str = "ballast: a watch whose range spans several shards is not built yet; watch a prefix inside one resource (/registry/<resource>/...)";

struct StreamState {
    ctx: Context,
    id: StreamId,
    watchers: HashMap<i64, WatcherInfo>,
    next_auto_id: i64,
    messages_tx: mpsc::Sender<WatchMessage>,
    out: mpsc::Sender<Result<pb::WatchResponse, Status>>,
}

impl StreamState {
    async fn send(&self, resp: pb::WatchResponse) -> bool {
        self.out.send(Ok(resp)).await.is_ok()
    }

    /// Returns false when the client is gone.
    async fn on_request(&mut self, req: pb::WatchRequest) -> bool {
        use pb::watch_request::RequestUnion;
        match req.request_union {
            Some(RequestUnion::CreateRequest(create)) => self.on_create(create).await,
            Some(RequestUnion::CancelRequest(cancel)) => {
                let watch_id = cancel.watch_id;
                let Some(info) = self.watchers.remove(&watch_id) else {
                    return true;
                };
                match self
                    .ctx
                    .router
                    .shard(info.shard)
                    .watch_cancel(self.id, watch_id)
                    .await
                {
                    Ok(revision) => {
                        self.send(pb::WatchResponse {
                            header: Some(self.ctx.header(revision)),
                            watch_id,
                            canceled: true,
                            ..Default::default()
                        })
                        .await
                    }
                    Err(_) => false,
                }
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                // The stream's watchers live in one shard until cross-shard watches merge.
                let shard = self.watchers.values().next().map_or(0, |w| w.shard);
                self.ctx
                    .router
                    .shard(shard)
                    .watch_progress(self.id, self.messages_tx.clone())
                    .await
                    .is_ok()
            }
            None => true,
        }
    }

    /// A create etcd refuses: it still answers `created`, with `canceled`, watch id -1 and
    /// the reason.
    async fn refuse_create(&self, reason: &str) -> bool {
        let revision = match self.ctx.call(ballast_consensus::Request::Status).await {
            Ok(reply) => reply.revision,
            Err(_) => return false,
        };
        self.send(pb::WatchResponse {
            header: Some(self.ctx.header(revision)),
            watch_id: -1,
            created: true,
            canceled: true,
            cancel_reason: reason.to_owned(),
            ..Default::default()
        })
        .await
    }

    async fn on_create(&mut self, create: pb::WatchCreateRequest) -> bool {
        // etcd reads an empty key as "\0" (the smallest key) and a range end of "\0" as "every
        // key from `key` on"; a key not below a given range end is an empty range.
        let key = if create.key.is_empty() {
            Bytes::from_static(b"\0")
        } else {
            create.key
        };
        let from_key = create.range_end.as_ref() == b"\0";
        if !create.range_end.is_empty() && !from_key && key >= create.range_end {
            return self.refuse_create(EMPTY_WATCH_RANGE).await;
        }
        if create.watch_id != 0 && self.watchers.contains_key(&create.watch_id) {
            return self.refuse_create(DUPLICATE_WATCH_ID).await;
        }
        let watch_id = if create.watch_id != 0 {
            create.watch_id
        } else {
            while self.watchers.contains_key(&self.next_auto_id) {
                self.next_auto_id += 1;
            }
            let id = self.next_auto_id;
            self.next_auto_id += 1;
            id
        };
        let shards = self.ctx.router.shards_of_range(&key, &create.range_end);
        let Some(shard) = shards.single() else {
            return self.refuse_create(CROSS_SHARD_WATCH).await;
        };
        use pb::watch_create_request::FilterType;
        let no_put = create.filters.contains(&(FilterType::Noput as i32));
        let no_delete = create.filters.contains(&(FilterType::Nodelete as i32));
        let filter = WatchFilter {
            key,
            range_end: create.range_end,
            no_put,
            no_delete,
            prev_kv: create.prev_kv,
        };
        self.watchers.insert(
            watch_id,
            WatcherInfo {
                fragment: create.fragment,
                shard,
            },
        );
        self.ctx
            .router
            .shard(shard)
            .watch_create(WatchCreate {
                stream: self.id,
                watch_id,
                filter,
                start_revision: create.start_revision,
                progress_notify: create.progress_notify,
                sender: self.messages_tx.clone(),
            })
            .await
            .is_ok()
    }

    /// Returns false when the client is gone.
    async fn on_message(&mut self, msg: WatchMessage) -> bool {
        let resp = match msg {
            WatchMessage::Created { watch_id, revision } => {
                if !self.watchers.contains_key(&watch_id) {
                    return true;
                }
                pb::WatchResponse {
                    header: Some(self.ctx.header(revision)),
                    watch_id,
                    created: true,
                    ..Default::default()
                }
            }
            WatchMessage::Events {
                watch_id,
                revision,
                events,
            } => {
                let Some(info) = self.watchers.get(&watch_id).copied() else {
                    return true;
                };
                let resp = pb::WatchResponse {
                    header: Some(self.ctx.header(revision)),
                    watch_id,
                    events: events.into_iter().map(convert::event_to_pb).collect(),
                    ..Default::default()
                };
                if info.fragment && resp.encoded_len() > self.ctx.limits.max_request_bytes {
                    for part in fragments(resp, self.ctx.limits.max_request_bytes) {
                        if !self.send(part).await {
                            return false;
                        }
                    }
                    return true;
                }
                resp
            }
            WatchMessage::Canceled {
                watch_id,
                revision,
                compact_revision,
            } => {
                // The id stays taken until the client cancels it or closes the stream, as in
                // etcd: a later cancel of it is confirmed, and it is not handed out again.
                if !self.watchers.contains_key(&watch_id) {
                    return true;
                }
                // etcd sends a compaction cancel with the revision of the watch response it
                // came in, which is zero.
                let revision = if compact_revision != 0 { 0 } else { revision };
                pb::WatchResponse {
                    header: Some(self.ctx.header(revision)),
                    watch_id,
                    canceled: true,
                    compact_revision,
                    ..Default::default()
                }
            }
            WatchMessage::Progress { watch_id, revision } => {
                if watch_id != -1 && !self.watchers.contains_key(&watch_id) {
                    return true;
                }
                pb::WatchResponse {
                    header: Some(self.ctx.header(revision)),
                    watch_id,
                    ..Default::default()
                }
            }
        };
        self.send(resp).await
    }
}

/// Splits a response's events over several responses, each under `limit` bytes where a single
/// event allows it; every part but the last has `fragment` set.
fn fragments(resp: pb::WatchResponse, limit: usize) -> Vec<pb::WatchResponse> {
    let template = pb::WatchResponse {
        events: Vec::new(),
        ..resp.clone()
    };
    let mut parts = Vec::new();
    let mut current = template.clone();
    for ev in resp.events {
        let ev_len = ev.encoded_len() + 8;
        if !current.events.is_empty() && current.encoded_len() + ev_len > limit {
            let mut full = std::mem::replace(&mut current, template.clone());
            full.fragment = true;
            parts.push(full);
        }
        current.events.push(ev);
    }
    parts.push(current);
    parts
}

#[tonic::async_trait]
impl pb::watch_server::Watch for WatchService {
    type WatchStream =
        Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send + 'static>>;

    async fn watch(
        &self,
        request: GrpcRequest<Streaming<pb::WatchRequest>>,
    ) -> Result<GrpcResponse<Self::WatchStream>, Status> {
        let mut incoming = request.into_inner();
        let (messages_tx, mut messages_rx) = mpsc::channel(STREAM_MESSAGES_MAX);
        let (out, out_rx) = mpsc::channel(STREAM_RESPONSES_MAX);
        let mut state = StreamState {
            ctx: self.ctx.clone(),
            id: next_stream_id(),
            watchers: HashMap::new(),
            next_auto_id: 0,
            messages_tx,
            out,
        };
        tokio::spawn(async move {
            // A client that half-closes its side still receives events until it goes away.
            let mut requests_open = true;
            loop {
                let alive = tokio::select! {
                    req = incoming.message(), if requests_open => match req {
                        Ok(Some(req)) => state.on_request(req).await,
                        Ok(None) => {
                            requests_open = false;
                            true
                        }
                        Err(_) => false,
                    },
                    Some(msg) = messages_rx.recv() => state.on_message(msg).await,
                    () = state.out.closed() => false,
                };
                if !alive {
                    break;
                }
            }
            for shard in 0..state.ctx.router.shard_count() {
                state.ctx.router.shard(shard).stream_closed(state.id);
            }
        });
        Ok(GrpcResponse::new(Box::pin(ReceiverStream::new(out_rx))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ballast_proto::mvccpb;

    fn event(value_len: usize) -> mvccpb::Event {
        mvccpb::Event {
            kv: Some(mvccpb::KeyValue {
                key: Bytes::from_static(b"k"),
                value: Bytes::from(vec![b'v'; value_len]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn fragments_respect_the_limit_and_flag_all_but_the_last() {
        let resp = pb::WatchResponse {
            watch_id: 7,
            events: (0..10).map(|_| event(100)).collect(),
            ..Default::default()
        };
        let parts = fragments(resp, 350);
        assert!(parts.len() > 1);
        let total: usize = parts.iter().map(|p| p.events.len()).sum();
        assert_eq!(total, 10);
        for (i, p) in parts.iter().enumerate() {
            assert_eq!(p.watch_id, 7);
            assert_eq!(p.fragment, i + 1 < parts.len());
            assert!(p.encoded_len() <= 350 || p.events.len() == 1);
        }
    }
}
