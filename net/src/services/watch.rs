//! `etcdserverpb.Watch`: one task per client stream. It reads the client's create, cancel and
//! progress requests, and forwards what the shards send for the stream's watchers.
//!
//! A watch whose range lies in one shard is registered there under the stream's id; one whose
//! range spans several shards is a merged watch ([`super::watch_merge`]): one part per shard,
//! merged by a task that sends on the same channel as the shards, so both kinds reach the
//! client the same way.
//!
//! Invariants: watch ids are unique within a stream (client-chosen, or the lowest free id
//! counting from 0, as etcd assigns them); after a cancel no message of that watcher reaches the
//! client; responses larger than `--max-request-bytes` are split into fragments only for
//! watchers created with `fragment`; a progress response (watch id -1) never overtakes an event
//! at or below its revision of any watcher of the stream, merged ones included.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};

use ballast_consensus::{StreamId, WatchCreate, WatchMessage};
use ballast_engine::watch::WatchFilter;
use ballast_engine::Revision;
use ballast_proto::etcdserverpb as pb;
use bytes::Bytes;
use futures::Stream;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status, Streaming};

use super::watch_merge::{stream_progress, MergedSpec, MergedWatch};
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

/// A refused watch's reason as etcd 3.4 writes it: the gRPC error's text,
/// `rpc error: code = PermissionDenied desc = etcdserver: permission denied`.
fn watch_cancel_reason(e: &Status) -> String {
    let code = match e.code() {
        tonic::Code::PermissionDenied => "PermissionDenied",
        tonic::Code::InvalidArgument => "InvalidArgument",
        tonic::Code::Unauthenticated => "Unauthenticated",
        tonic::Code::FailedPrecondition => "FailedPrecondition",
        _ => "Unknown",
    };
    format!("rpc error: code = {code} desc = {}", e.message())
}

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

struct WatcherInfo {
    fragment: bool,
    place: Place,
    /// Its `created` response went out. A cancel that overtakes the shard's `Created` (the
    /// client cancels at once) sends it first, as etcd answers a create before it reads the
    /// next request.
    created: bool,
}

/// Where a watcher lives.
enum Place {
    /// Registered in one shard under the stream's id.
    Shard(usize),
    /// One part per shard, merged by a task (dropping the handle ends it).
    Merged(MergedWatch),
}

/// Progress requests answered as one when the server runs several shards: the one being
/// gathered and how many came while it was (answered by the next gathering, which starts
/// after them).
#[derive(Default)]
struct ProgressAsks {
    in_flight: Option<usize>,
    queued: usize,
}

struct StreamState {
    ctx: Context,
    id: StreamId,
    watchers: HashMap<i64, WatcherInfo>,
    next_auto_id: i64,
    messages_tx: mpsc::Sender<WatchMessage>,
    out: mpsc::Sender<Result<pb::WatchResponse, Status>>,
    progress: ProgressAsks,
    /// Where gathered stream-wide progress arrives (`None`: a shard stopped).
    progress_tx: mpsc::Sender<Option<Revision>>,
    /// The token the stream was opened with: each create is checked against it (`auth.rs`).
    token: Option<String>,
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
                let canceled = match info.place {
                    Place::Shard(shard) => {
                        self.ctx
                            .router
                            .shard(shard)
                            .watch_cancel(self.id, watch_id)
                            .await
                    }
                    Place::Merged(merged) => merged.cancel(&self.ctx.router).await,
                };
                match canceled {
                    Ok(revision) => {
                        if !info.created
                            && !self
                                .send(pb::WatchResponse {
                                    header: Some(self.ctx.header(revision)),
                                    watch_id,
                                    created: true,
                                    ..Default::default()
                                })
                                .await
                        {
                            return false;
                        }
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
                if self.ctx.router.shard_count() == 1 {
                    // The shard answers on the stream's channel, after the events before it.
                    return self
                        .ctx
                        .router
                        .shard(0)
                        .watch_progress(self.id, self.messages_tx.clone())
                        .await
                        .is_ok();
                }
                if self.progress.in_flight.is_some() {
                    self.progress.queued += 1;
                } else {
                    self.gather_progress(1);
                }
                true
            }
            None => true,
        }
    }

    /// Starts gathering the stream-wide progress of several shards for `asks` requests
    /// ([`stream_progress`]); the answer comes back on `progress_tx`.
    fn gather_progress(&mut self, asks: usize) {
        self.progress.in_flight = Some(asks);
        let merged = self
            .watchers
            .values()
            .filter_map(|w| match &w.place {
                Place::Merged(m) => Some(m.progress_handle()),
                Place::Shard(_) => None,
            })
            .collect();
        let router = self.ctx.router.clone();
        let stream = self.id;
        let tx = self.progress_tx.clone();
        tokio::spawn(async move {
            let revision = stream_progress(&router, stream, merged).await.ok();
            let _ = tx.send(revision).await;
        });
    }

    /// The gathered progress arrived (the stream's channel was drained first): answers the
    /// requests it was gathered for, and starts gathering for those that came meanwhile.
    async fn on_progress(&mut self, revision: Revision) -> bool {
        let asks = self.progress.in_flight.take().unwrap_or(0);
        for _ in 0..asks {
            let resp = pb::WatchResponse {
                header: Some(self.ctx.header(revision)),
                watch_id: -1,
                ..Default::default()
            };
            if !self.send(resp).await {
                return false;
            }
        }
        if self.progress.queued > 0 {
            let queued = std::mem::take(&mut self.progress.queued);
            self.gather_progress(queued);
        }
        true
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
        // Permission first, as etcd: READ on the range, where etcd 3.4 checks a watch from a
        // key as the single key.
        let checked_end: &[u8] = if from_key { b"" } else { &create.range_end };
        let permitted = match self.ctx.auth.caller_of_token(self.token.as_deref()).await {
            Ok(caller) => self.ctx.auth.check_read(&caller, &key, checked_end),
            Err(e) => Err(e),
        };
        if let Err(e) = permitted {
            return self.refuse_create(&watch_cancel_reason(&e)).await;
        }
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
        let Some(shard) = shards.single() else {
            let spec = MergedSpec {
                watch_id,
                filter,
                start_revision: create.start_revision,
                progress_notify: create.progress_notify,
            };
            let merged =
                MergedWatch::start(&self.ctx.router, shards, spec, self.messages_tx.clone()).await;
            let Ok(merged) = merged else { return false };
            self.watchers.insert(
                watch_id,
                WatcherInfo {
                    fragment: create.fragment,
                    place: Place::Merged(merged),
                    created: false,
                },
            );
            return true;
        };
        self.watchers.insert(
            watch_id,
            WatcherInfo {
                fragment: create.fragment,
                place: Place::Shard(shard),
                created: false,
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
                let Some(info) = self.watchers.get_mut(&watch_id) else {
                    return true;
                };
                if std::mem::replace(&mut info.created, true) {
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
                let Some(fragment) = self.watchers.get(&watch_id).map(|w| w.fragment) else {
                    return true;
                };
                let resp = pb::WatchResponse {
                    header: Some(self.ctx.header(revision)),
                    watch_id,
                    events: events.into_iter().map(convert::event_to_pb).collect(),
                    ..Default::default()
                };
                if fragment && resp.encoded_len() > self.ctx.limits.max_request_bytes {
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
                let Some(info) = self.watchers.get(&watch_id) else {
                    return true;
                };
                // A merged watch the server gave up on says why (etcd has no such case).
                let cancel_reason = match &info.place {
                    Place::Merged(m) if compact_revision == 0 => {
                        m.cancel_reason().unwrap_or_default().to_owned()
                    }
                    _ => String::new(),
                };
                // etcd sends a compaction cancel with the revision of the watch response it
                // came in, which is zero.
                let revision = if compact_revision != 0 { 0 } else { revision };
                pb::WatchResponse {
                    header: Some(self.ctx.header(revision)),
                    watch_id,
                    canceled: true,
                    compact_revision,
                    cancel_reason,
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
        let token = crate::auth::token_of(request.metadata());
        let mut incoming = request.into_inner();
        let (messages_tx, mut messages_rx) = mpsc::channel(STREAM_MESSAGES_MAX);
        let (out, out_rx) = mpsc::channel(STREAM_RESPONSES_MAX);
        let (progress_tx, mut progress_rx) = mpsc::channel(1);
        let mut state = StreamState {
            ctx: self.ctx.clone(),
            id: next_stream_id(),
            watchers: HashMap::new(),
            next_auto_id: 0,
            messages_tx,
            out,
            progress: ProgressAsks::default(),
            progress_tx,
            token,
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
                        Err(status) => {
                            // An oversized request ends the stream with etcd's status; other
                            // read errors (the client gone) end it quietly.
                            if let Some(refusal) = crate::transport_status::etcd_refusal(&status) {
                                let _ = state.out.try_send(Err(refusal));
                            }
                            false
                        }
                    },
                    Some(msg) = messages_rx.recv() => state.on_message(msg).await,
                    Some(gathered) = progress_rx.recv() => match gathered {
                        Some(revision) => {
                            // Whatever the stream's channel held when the shards and mergers
                            // answered was sent before their answers: it goes out first.
                            let mut alive = true;
                            for _ in 0..messages_rx.len() {
                                let Ok(msg) = messages_rx.try_recv() else { break };
                                alive = state.on_message(msg).await;
                                if !alive {
                                    break;
                                }
                            }
                            alive && state.on_progress(revision).await
                        }
                        None => false,
                    },
                    () = state.out.closed() => false,
                };
                if !alive {
                    break;
                }
            }
            for shard in 0..state.ctx.router.shard_count() {
                state.ctx.router.shard(shard).stream_closed(state.id);
            }
            for info in state.watchers.values() {
                if let Place::Merged(m) = &info.place {
                    for part in m.parts() {
                        state
                            .ctx
                            .router
                            .shard(part.shard)
                            .stream_closed(part.stream);
                    }
                }
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
