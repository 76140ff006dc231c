//! The differential engine: one [`Op`] is sent to the reference etcd and to Ballast, and the two
//! outcomes (responses or gRPC errors) are compared field by field.
//!
//! Invariants:
//! - Ops are applied to both servers one at a time (the two sides concurrently, the next op only
//!   after both answered), so both stores go through the same history and every deterministic
//!   field must be equal: header revision, kvs, `more`, `count`, `deleted`, prev kvs, txn
//!   `succeeded` and nested responses, lease IDs and TTLs, watch IDs, created/canceled flags,
//!   compact revisions, events, and errors (code and message).
//! - Only these are normalized, each for a stated reason:
//!   - `cluster_id`, `member_id`, `raft_term` in every header (they identify a cluster, not a
//!     result);
//!   - a lease's remaining TTL may differ by one second (the two servers read their clocks at
//!     slightly different instants);
//!   - the order of `Leases` and of `TimeToLive` keys (etcd iterates Go maps there: its order is
//!     random, so no order can be required);
//!   - IDs the server generates (a lease granted with ID 0): only "non-zero" is compared;
//!   - watch responses that carry events are compared as the per-watch sequence of events, not
//!     by how they were batched into responses nor by their header revision, which in etcd depend
//!     on when its background catch-up loop ran. Control responses (created, canceled on
//!     request, progress) are compared exactly, in order.
//! - A mismatch panics with the seed, the op index, the request and both outcomes.
//! - Several shards: every key the generators write sorts after `/registry0`, so it lives in
//!   Ballast's shard 0, whose revisions are etcd's; reads, txns, deletes and watches over ranges
//!   that reach into `/registry/` (from `"\0"`, or from the empty key) run across shards and must
//!   still answer as etcd.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ballast_proto::etcdserverpb::{
    response_op, watch_request, CompactionRequest, CompactionResponse, DeleteRangeRequest,
    DeleteRangeResponse, LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest,
    LeaseKeepAliveResponse, LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest,
    LeaseRevokeResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, ResponseHeader, TxnRequest, TxnResponse, WatchCancelRequest,
    WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse,
};
use ballast_proto::mvccpb::Event;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::server::{Clients, Kind, Pair};

/// Bound on one RPC (or on waiting for one watch control response).
pub const RPC_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on waiting for the two sides' watch events to converge.
pub const WATCH_SETTLE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long etcd may take to move a watcher that starts in the past from its unsynced group to
/// its synced group (its catch-up loop runs every 100 ms): how long the watch views must stay
/// unchanged before a settle after such a watch was created counts as complete.
pub const CATCH_UP_GRACE: Duration = Duration::from_millis(350);
/// How long etcd's background compaction job may take on a store this small.
pub const COMPACTION_GRACE: Duration = Duration::from_millis(200);
/// Number of watch streams opened on each side.
pub const WATCH_STREAMS: usize = 2;

/// One step of a differential run.
#[derive(Debug, Clone)]
pub enum Op {
    Put(PutRequest),
    Range(RangeRequest),
    Delete(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(CompactionRequest),
    LeaseGrant(LeaseGrantRequest),
    /// Grant with ID 0 (the server picks the ID; the two picks differ), then revoke that lease.
    LeaseGrantGenerated {
        ttl: i64,
    },
    /// Grant an explicit ID, then revoke it at once: lets tiny TTLs (raised to etcd's minimum)
    /// be compared without the lease expiring during the run.
    LeaseGrantRevoke(LeaseGrantRequest),
    LeaseRevoke(LeaseRevokeRequest),
    LeaseTimeToLive(LeaseTimeToLiveRequest),
    LeaseLeases,
    /// One request and one response on a fresh LeaseKeepAlive stream.
    LeaseKeepAliveOnce(i64),
    /// Create a watch on stream `stream`; the outcome is the created response.
    WatchCreate {
        stream: usize,
        req: WatchCreateRequest,
    },
    /// Let the event streams settle, then cancel `watch_id` and send a progress request as a
    /// barrier; the outcome is every control response up to the progress response.
    WatchCancel {
        stream: usize,
        watch_id: i64,
    },
    /// A progress request; the outcome is the progress response.
    WatchProgress {
        stream: usize,
    },
    /// Wait until both sides delivered the same events on every watch, then compare them.
    WatchSettle,
}

impl Op {
    fn is_write(&self) -> bool {
        matches!(
            self,
            Op::Put(_) | Op::Delete(_) | Op::Txn(_) | Op::LeaseRevoke(_) | Op::LeaseGrantRevoke(_)
        )
    }
}

/// A gRPC error as the client sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub code: tonic::Code,
    pub message: String,
}

impl From<tonic::Status> for RpcError {
    fn from(s: tonic::Status) -> Self {
        RpcError {
            code: s.code(),
            message: s.message().to_string(),
        }
    }
}

/// One answer of a server, normalized as the module doc says.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Put(PutResponse),
    Range(RangeResponse),
    Delete(DeleteRangeResponse),
    Txn(TxnResponse),
    Compact(CompactionResponse),
    LeaseGrant(LeaseGrantResponse),
    LeaseRevoke(LeaseRevokeResponse),
    LeaseTimeToLive(LeaseTimeToLiveResponse),
    LeaseLeases(LeaseLeasesResponse),
    LeaseKeepAlive(LeaseKeepAliveResponse),
    /// Watch control responses consumed by the op, in arrival order.
    Watch(Vec<WatchResponse>),
    /// Something that is not a response, e.g. "no response within 10 s".
    Note(String),
}

/// The outcome of one op on one server: one entry per request the op made.
pub type Outcome = Vec<Result<Reply, RpcError>>;

/// Clears the fields of a header that identify the cluster rather than the result.
pub fn normalize_header(h: &mut Option<ResponseHeader>) {
    if let Some(h) = h.as_mut() {
        h.cluster_id = 0;
        h.member_id = 0;
        h.raft_term = 0;
    }
}

fn normalize_txn(t: &mut TxnResponse) {
    normalize_header(&mut t.header);
    for r in &mut t.responses {
        match r.response.as_mut() {
            Some(response_op::Response::ResponseRange(x)) => normalize_header(&mut x.header),
            Some(response_op::Response::ResponsePut(x)) => normalize_header(&mut x.header),
            Some(response_op::Response::ResponseDeleteRange(x)) => normalize_header(&mut x.header),
            Some(response_op::Response::ResponseTxn(x)) => normalize_txn(x),
            None => {}
        }
    }
}

/// What a watch stream received, shared with the task that reads it.
#[derive(Debug, Default)]
struct StreamLog {
    responses: Vec<WatchResponse>,
    ended: Option<String>,
}

/// True for responses on etcd's event path (events, or a cancellation because the start
/// revision was compacted); everything else is a control response.
fn is_event_path(r: &WatchResponse) -> bool {
    !r.events.is_empty() || r.compact_revision != 0
}

struct WatchStream {
    tx: mpsc::Sender<WatchRequest>,
    log: Arc<Mutex<StreamLog>>,
    /// Control responses already consumed by ops.
    control_consumed: usize,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WatchStream {
    fn open(clients: &Clients) -> WatchStream {
        let (tx, rx) = mpsc::channel::<WatchRequest>(64);
        let log = Arc::new(Mutex::new(StreamLog::default()));
        let mut client = clients.watch.clone();
        let task_log = log.clone();
        let task = tokio::spawn(async move {
            let mut inbound = match client.watch(ReceiverStream::new(rx)).await {
                Ok(r) => r.into_inner(),
                Err(e) => {
                    task_log.lock().expect("watch log lock").ended =
                        Some(format!("Watch call failed: {:?} {}", e.code(), e.message()));
                    return;
                }
            };
            loop {
                let next = inbound.message().await;
                let mut log = task_log.lock().expect("watch log lock");
                match next {
                    Ok(Some(mut r)) => {
                        normalize_header(&mut r.header);
                        log.responses.push(r);
                    }
                    Ok(None) => {
                        log.ended = Some("stream closed by the server".into());
                        return;
                    }
                    Err(e) => {
                        log.ended = Some(format!("stream error: {:?} {}", e.code(), e.message()));
                        return;
                    }
                }
            }
        });
        WatchStream {
            tx,
            log,
            control_consumed: 0,
            task,
        }
    }

    fn control(&self) -> Vec<WatchResponse> {
        let log = self.log.lock().expect("watch log lock");
        log.responses
            .iter()
            .filter(|r| !is_event_path(r))
            .cloned()
            .collect()
    }

    /// Waits for a control response past the consumed ones that satisfies `done`; returns every
    /// control response up to and including it.
    async fn take_control_until(
        &mut self,
        done: impl Fn(&WatchResponse) -> bool,
    ) -> Result<Reply, RpcError> {
        let deadline = Instant::now() + RPC_TIMEOUT;
        loop {
            let control = self.control();
            if let Some(pos) = control[self.control_consumed..].iter().position(&done) {
                let end = self.control_consumed + pos + 1;
                let taken = control[self.control_consumed..end].to_vec();
                self.control_consumed = end;
                return Ok(Reply::Watch(taken));
            }
            let ended = self.log.lock().expect("watch log lock").ended.clone();
            if let Some(why) = ended {
                let pending = control[self.control_consumed..].to_vec();
                return Ok(Reply::Note(format!(
                    "watch stream ended ({why}); pending {pending:?}"
                )));
            }
            if Instant::now() >= deadline {
                let pending = control[self.control_consumed..].to_vec();
                return Ok(Reply::Note(format!(
                    "no expected watch response within {RPC_TIMEOUT:?}; pending {pending:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    }

    async fn send(&self, req: watch_request::RequestUnion) -> Result<(), RpcError> {
        self.tx
            .send(WatchRequest {
                request_union: Some(req),
            })
            .await
            .map_err(|_| RpcError {
                code: tonic::Code::Unavailable,
                message: "watch request stream closed (client side)".into(),
            })
    }
}

/// Per watch ID, what arrived on the event path, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum EventItem {
    Event(Event),
    /// The watch was cancelled because its start revision was compacted.
    Compacted {
        compact_revision: i64,
        canceled: bool,
        cancel_reason: String,
        events: usize,
    },
}

/// The comparable view of one watch stream's event path.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EventView {
    pub by_watch: BTreeMap<i64, Vec<EventItem>>,
    pub ended: Option<String>,
}

/// One server as the runner drives it.
pub struct Side {
    pub kind: Kind,
    clients: Clients,
    streams: Vec<WatchStream>,
}

impl Side {
    pub async fn connect(server: &crate::server::Server) -> anyhow::Result<Side> {
        let clients = server.clients().await?;
        let streams = (0..WATCH_STREAMS)
            .map(|_| WatchStream::open(&clients))
            .collect();
        Ok(Side {
            kind: server.kind(),
            clients,
            streams,
        })
    }

    fn event_view(&self, stream: usize) -> EventView {
        let log = self.streams[stream].log.lock().expect("watch log lock");
        let mut view = EventView {
            ended: log.ended.clone(),
            ..Default::default()
        };
        for r in log.responses.iter().filter(|r| is_event_path(r)) {
            let items = view.by_watch.entry(r.watch_id).or_default();
            if r.compact_revision != 0 {
                items.push(EventItem::Compacted {
                    compact_revision: r.compact_revision,
                    canceled: r.canceled,
                    cancel_reason: r.cancel_reason.clone(),
                    events: r.events.len(),
                });
            } else {
                items.extend(r.events.iter().cloned().map(EventItem::Event));
            }
        }
        view
    }

    /// Checks what must hold of every event response whatever its batching: a header whose
    /// revision is at least the newest event's, events in revision order.
    fn event_invariants(&self, stream: usize) -> Result<(), String> {
        let log = self.streams[stream].log.lock().expect("watch log lock");
        for r in log.responses.iter().filter(|r| !r.events.is_empty()) {
            let newest = r
                .events
                .iter()
                .map(|e| e.kv.as_ref().map(|kv| kv.mod_revision).unwrap_or(0))
                .max()
                .unwrap_or(0);
            let hdr = r.header.as_ref().map(|h| h.revision).unwrap_or(0);
            if hdr < newest {
                return Err(format!(
                    "{}: event response header revision {hdr} below its newest event {newest}: {r:?}",
                    self.kind.label()
                ));
            }
            let revs: Vec<i64> = r
                .events
                .iter()
                .map(|e| e.kv.as_ref().map(|kv| kv.mod_revision).unwrap_or(0))
                .collect();
            if revs.windows(2).any(|w| w[0] > w[1]) {
                return Err(format!(
                    "{}: events out of revision order in {r:?}",
                    self.kind.label()
                ));
            }
        }
        Ok(())
    }

    fn unconsumed_control(&self, stream: usize) -> Vec<WatchResponse> {
        let s = &self.streams[stream];
        s.control()[s.control_consumed..].to_vec()
    }

    async fn exec(&mut self, op: &Op) -> Outcome {
        match op {
            Op::Put(r) => vec![rpc(self.clients.kv.put(r.clone())).await.map(|mut x| {
                normalize_header(&mut x.header);
                Reply::Put(x)
            })],
            Op::Range(r) => vec![rpc(self.clients.kv.range(r.clone())).await.map(|mut x| {
                normalize_header(&mut x.header);
                Reply::Range(x)
            })],
            Op::Delete(r) => {
                vec![rpc(self.clients.kv.delete_range(r.clone()))
                    .await
                    .map(|mut x| {
                        normalize_header(&mut x.header);
                        Reply::Delete(x)
                    })]
            }
            Op::Txn(r) => vec![rpc(self.clients.kv.txn(r.clone())).await.map(|mut x| {
                normalize_txn(&mut x);
                Reply::Txn(x)
            })],
            Op::Compact(r) => vec![rpc(self.clients.kv.compact(*r)).await.map(|mut x| {
                normalize_header(&mut x.header);
                Reply::Compact(x)
            })],
            Op::LeaseGrant(r) => vec![self.grant(*r).await],
            Op::LeaseGrantGenerated { ttl } => {
                let granted = rpc(self
                    .clients
                    .lease
                    .lease_grant(LeaseGrantRequest { ttl: *ttl, id: 0 }))
                .await;
                let mut out = Vec::new();
                match granted {
                    Ok(mut g) => {
                        let id = g.id;
                        normalize_header(&mut g.header);
                        // The ID is the server's pick: compare only that it is a valid one.
                        g.id = i64::from(id > 0);
                        out.push(Ok(Reply::LeaseGrant(g)));
                        if id != 0 {
                            out.push(self.revoke(id).await);
                        }
                    }
                    Err(e) => out.push(Err(e)),
                }
                out
            }
            Op::LeaseGrantRevoke(r) => {
                let g = self.grant(*r).await;
                let v = self.revoke(r.id).await;
                vec![g, v]
            }
            Op::LeaseRevoke(r) => vec![self.revoke(r.id).await],
            Op::LeaseTimeToLive(r) => vec![rpc(self.clients.lease.lease_time_to_live(*r))
                .await
                .map(|mut x| {
                    normalize_header(&mut x.header);
                    x.keys.sort();
                    Reply::LeaseTimeToLive(x)
                })],
            Op::LeaseLeases => vec![rpc(self.clients.lease.lease_leases(LeaseLeasesRequest {}))
                .await
                .map(|mut x| {
                    normalize_header(&mut x.header);
                    x.leases.sort_by_key(|l| l.id);
                    Reply::LeaseLeases(x)
                })],
            Op::LeaseKeepAliveOnce(id) => vec![self.keep_alive_once(*id).await],
            Op::WatchCreate { stream, req } => {
                let s = &mut self.streams[*stream];
                if let Err(e) = s
                    .send(watch_request::RequestUnion::CreateRequest(req.clone()))
                    .await
                {
                    return vec![Err(e)];
                }
                vec![s.take_control_until(|r| r.created).await]
            }
            Op::WatchCancel { stream, watch_id } => {
                let s = &mut self.streams[*stream];
                if let Err(e) = s
                    .send(watch_request::RequestUnion::CancelRequest(
                        WatchCancelRequest {
                            watch_id: *watch_id,
                        },
                    ))
                    .await
                {
                    return vec![Err(e)];
                }
                if let Err(e) = s
                    .send(watch_request::RequestUnion::ProgressRequest(
                        WatchProgressRequest {},
                    ))
                    .await
                {
                    return vec![Err(e)];
                }
                vec![s.take_control_until(is_progress).await]
            }
            Op::WatchProgress { stream } => {
                let s = &mut self.streams[*stream];
                if let Err(e) = s
                    .send(watch_request::RequestUnion::ProgressRequest(
                        WatchProgressRequest {},
                    ))
                    .await
                {
                    return vec![Err(e)];
                }
                vec![s.take_control_until(is_progress).await]
            }
            Op::WatchSettle => Vec::new(),
        }
    }

    async fn grant(&mut self, r: LeaseGrantRequest) -> Result<Reply, RpcError> {
        rpc(self.clients.lease.lease_grant(r)).await.map(|mut x| {
            normalize_header(&mut x.header);
            Reply::LeaseGrant(x)
        })
    }

    async fn revoke(&mut self, id: i64) -> Result<Reply, RpcError> {
        rpc(self.clients.lease.lease_revoke(LeaseRevokeRequest { id }))
            .await
            .map(|mut x| {
                normalize_header(&mut x.header);
                Reply::LeaseRevoke(x)
            })
    }

    async fn keep_alive_once(&mut self, id: i64) -> Result<Reply, RpcError> {
        let (tx, rx) = mpsc::channel(1);
        tx.send(LeaseKeepAliveRequest { id })
            .await
            .expect("fresh channel has room");
        let mut client = self.clients.lease.clone();
        let call = async move {
            let mut inbound = client
                .lease_keep_alive(ReceiverStream::new(rx))
                .await?
                .into_inner();
            let first = inbound.message().await;
            drop(tx);
            first
        };
        match tokio::time::timeout(RPC_TIMEOUT, call).await {
            Err(_) => Ok(Reply::Note(format!(
                "no keep-alive response within {RPC_TIMEOUT:?}"
            ))),
            Ok(Err(e)) => Err(e.into()),
            Ok(Ok(None)) => Ok(Reply::Note(
                "keep-alive stream ended without a response".into(),
            )),
            Ok(Ok(Some(mut x))) => {
                normalize_header(&mut x.header);
                Ok(Reply::LeaseKeepAlive(x))
            }
        }
    }
}

/// An error from the connection rather than from etcd's request handling.
fn is_transport(e: &RpcError) -> bool {
    matches!(e.code, tonic::Code::Unavailable | tonic::Code::Cancelled)
        || (e.code == tonic::Code::Unknown && e.message.contains("transport"))
        || e.message.starts_with("conformance harness:")
}

/// A progress response: not created, not canceled, no events, no compaction.
fn is_progress(r: &WatchResponse) -> bool {
    !r.created && !r.canceled && !is_event_path(r)
}

async fn rpc<T>(
    fut: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, RpcError> {
    match tokio::time::timeout(RPC_TIMEOUT, fut).await {
        Err(_) => Err(RpcError {
            code: tonic::Code::DeadlineExceeded,
            message: format!("conformance harness: no answer within {RPC_TIMEOUT:?}"),
        }),
        Ok(r) => r.map(|x| x.into_inner()).map_err(RpcError::from),
    }
}

/// Compares two outcomes; lease remaining TTLs may differ by one second.
pub fn outcomes_match(a: &Outcome, b: &Outcome) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).all(|(x, y)| match (x, y) {
        (Ok(Reply::LeaseTimeToLive(x)), Ok(Reply::LeaseTimeToLive(y))) => {
            let mut y = y.clone();
            if (x.ttl - y.ttl).abs() <= 1 {
                y.ttl = x.ttl;
            }
            *x == y
        }
        _ => x == y,
    })
}

/// What the generator may know of the store: taken from the reference side's answers.
#[derive(Debug, Clone, Default)]
pub struct Ctx {
    /// The newest header revision seen.
    pub revision: i64,
    /// The revision of the last successful compaction.
    pub compact_revision: i64,
    /// A watch starting in the past was created since the last compaction.
    pub catching_up: bool,
}

impl Ctx {
    fn observe(&mut self, op: &Op, outcome: &Outcome) {
        for r in outcome.iter().flatten() {
            let rev = match r {
                Reply::Put(x) => x.header.as_ref().map(|h| h.revision),
                Reply::Range(x) => x.header.as_ref().map(|h| h.revision),
                Reply::Delete(x) => x.header.as_ref().map(|h| h.revision),
                Reply::Txn(x) => x.header.as_ref().map(|h| h.revision),
                Reply::Compact(x) => x.header.as_ref().map(|h| h.revision),
                Reply::LeaseRevoke(x) => x.header.as_ref().map(|h| h.revision),
                Reply::LeaseGrant(x) => x.header.as_ref().map(|h| h.revision),
                _ => None,
            };
            if let Some(rev) = rev {
                self.revision = self.revision.max(rev);
            }
        }
        match op {
            Op::Compact(c) if matches!(outcome.first(), Some(Ok(_))) => {
                self.compact_revision = self.compact_revision.max(c.revision);
            }
            Op::WatchCreate { req, .. } if req.start_revision != 0 => self.catching_up = true,
            _ => {}
        }
    }
}

/// Drives both servers through a sequence of ops and compares every answer.
pub struct Runner {
    pub etcd: Side,
    pub ballast: Side,
    pub ctx: Ctx,
    label: String,
    mismatches: usize,
}

/// `BALLAST_DIFF_KEEP_GOING=1` reports every mismatch instead of stopping at the first.
fn keep_going() -> bool {
    std::env::var("BALLAST_DIFF_KEEP_GOING").is_ok_and(|v| v == "1")
}

/// `BALLAST_DIFF_VERBOSE=1` prints every op and the reference answer as the run goes.
fn verbose() -> bool {
    std::env::var("BALLAST_DIFF_VERBOSE").is_ok_and(|v| v == "1")
}

fn clip(s: String) -> String {
    const MAX: usize = 6000;
    if s.len() <= MAX {
        return s;
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes more)", &s[..end], s.len() - end)
}

impl Runner {
    /// Connects to both servers of `pair` and opens the watch streams. `label` (e.g. the seed)
    /// heads every mismatch report.
    pub async fn new(pair: &Pair, label: impl Into<String>) -> anyhow::Result<Runner> {
        Ok(Runner {
            etcd: Side::connect(&pair.etcd).await?,
            ballast: Side::connect(&pair.ballast).await?,
            ctx: Ctx {
                revision: 1,
                ..Default::default()
            },
            label: label.into(),
            mismatches: 0,
        })
    }

    /// Reports a mismatch: panics, or with `BALLAST_DIFF_KEEP_GOING=1` prints it and goes on
    /// (for surveying every difference at once; [`Runner::finish`] then fails the test).
    fn fail(&mut self, report: String) {
        if keep_going() {
            eprintln!("{report}\n");
            self.mismatches += 1;
        } else {
            panic!("{report}");
        }
    }

    /// Fails the test if mismatches were let through by `BALLAST_DIFF_KEEP_GOING`.
    pub fn finish(&self) {
        assert_eq!(
            self.mismatches, 0,
            "[{}] {} mismatches (printed above)",
            self.label, self.mismatches
        );
    }

    /// Runs one op on both sides and panics with a report if they disagree.
    pub async fn step(&mut self, index: usize, op: &Op) {
        match op {
            Op::WatchSettle => return self.settle(index).await,
            Op::WatchCancel { .. } | Op::Compact(_) => self.settle(index).await,
            _ => {}
        }
        let (a, b) = tokio::join!(self.etcd.exec(op), self.ballast.exec(op));
        if verbose() {
            eprintln!(
                "[{}] op #{index}: {}\n  -> {}",
                self.label,
                clip(format!("{op:?}")),
                clip(format!("{a:?}"))
            );
        }
        if let Some(e) = a
            .iter()
            .find_map(|r| r.as_ref().err().filter(|e| is_transport(e)))
        {
            // Equal transport failures on both sides prove nothing: the reference must answer.
            self.fail(format!(
                "REFERENCE FAILED [{}] op #{index}: etcd did not answer ({e:?}); it may have \
                 crashed on this request (see its log)\nrequest: {}",
                self.label,
                clip(format!("{op:?}"))
            ));
        }
        if !outcomes_match(&a, &b) {
            self.fail(format!(
                "MISMATCH [{}] op #{index} ({})\nrequest: {}\n{}: {}\n{}: {}",
                self.label,
                if op.is_write() { "write" } else { "read/other" },
                clip(format!("{op:?}")),
                self.etcd.kind.label(),
                clip(format!("{a:?}")),
                self.ballast.kind.label(),
                clip(format!("{b:?}")),
            ));
        }
        if let (Op::Compact(c), Some(Ok(_))) = (op, a.first()) {
            if !c.physical {
                // etcd answers a non-physical compaction before its background job removed the
                // old revisions; until then a watch replaying from the compaction revision still
                // sees a tombstone at that revision. Let the job finish, so the observable
                // history is the settled one on both sides.
                tokio::time::sleep(COMPACTION_GRACE).await;
            }
        }
        self.ctx.observe(op, &a);
    }

    /// Waits (bounded) until both sides delivered the same events on every watch stream, then
    /// compares the events, the event invariants and any control response no op consumed.
    ///
    /// When a watch that starts in the past was created since the last such settle, the views
    /// must also stay unchanged for [`CATCH_UP_GRACE`]: etcd replays history from a background
    /// loop, so both sides may still be behind (and equal) at first. The same holds before a
    /// cancel or a compaction, which would otherwise cut a replay short on one side only.
    pub async fn settle(&mut self, index: usize) {
        let deadline = Instant::now() + WATCH_SETTLE_TIMEOUT;
        let need_stable = self.ctx.catching_up;
        let mut stable_since: Option<(Instant, Vec<(EventView, EventView)>)> = None;
        let views = loop {
            let views: Vec<(EventView, EventView)> = (0..WATCH_STREAMS)
                .map(|s| (self.etcd.event_view(s), self.ballast.event_view(s)))
                .collect();
            if Instant::now() >= deadline {
                break views;
            }
            if views.iter().all(|(a, b)| a == b) {
                if !need_stable {
                    break views;
                }
                match &stable_since {
                    Some((since, seen)) if *seen == views => {
                        if since.elapsed() >= CATCH_UP_GRACE {
                            break views;
                        }
                    }
                    _ => stable_since = Some((Instant::now(), views)),
                }
            } else {
                stable_since = None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        self.ctx.catching_up = false;
        if verbose() {
            for (s, (a, _)) in views.iter().enumerate() {
                eprintln!("[{}] settle at op #{index}, stream {s}: {a:?}", self.label);
            }
        }
        let mut report = String::new();
        for (s, (a, b)) in views.iter().enumerate() {
            if a != b {
                let _ = writeln!(
                    report,
                    "watch stream {s} events differ after {WATCH_SETTLE_TIMEOUT:?}:"
                );
                let ids: std::collections::BTreeSet<i64> = a
                    .by_watch
                    .keys()
                    .chain(b.by_watch.keys())
                    .copied()
                    .collect();
                for id in ids {
                    let x = a.by_watch.get(&id);
                    let y = b.by_watch.get(&id);
                    if x != y {
                        let _ = writeln!(
                            report,
                            "  watch {id}:\n    {}: {x:?}\n    {}: {y:?}",
                            self.etcd.kind.label(),
                            self.ballast.kind.label()
                        );
                    }
                }
                if a.ended != b.ended {
                    let _ = writeln!(
                        report,
                        "  stream end: {}: {:?} / {}: {:?}",
                        self.etcd.kind.label(),
                        a.ended,
                        self.ballast.kind.label(),
                        b.ended
                    );
                }
            }
            for side in [&self.etcd, &self.ballast] {
                if let Err(e) = side.event_invariants(s) {
                    let _ = writeln!(report, "watch stream {s}: {e}");
                }
            }
            let (ca, cb) = (
                self.etcd.unconsumed_control(s),
                self.ballast.unconsumed_control(s),
            );
            if ca != cb {
                let _ = writeln!(
                    report,
                    "watch stream {s}: unsolicited control responses differ:\n    {}: {ca:?}\n    {}: {cb:?}",
                    self.etcd.kind.label(),
                    self.ballast.kind.label()
                );
            }
        }
        if !report.is_empty() {
            self.fail(clip(format!(
                "MISMATCH [{}] at op #{index} (watch settle)\n{report}",
                self.label
            )));
        }
    }
}
