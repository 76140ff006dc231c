//! Recording a history from real clients: a [`Recorder`] holds the common clock and the
//! operations; a [`RecordingClient`] (one per simulated client, one request at a time) sends a
//! [`Call`] over gRPC, times it and files the result as an [`Operation`].
//!
//! How a result becomes an operation:
//! - an answer: a known outcome, read from the response (header revision, kvs, `deleted`,
//!   `succeeded` and per-op results);
//! - an error etcd returns before applying anything ([`definitely_failed`]): nothing is filed,
//!   since the request did nothing;
//! - any other error or the client's timeout: an unknown outcome (no return time), since the
//!   request may still be applied, even after the client gave up.
//!
//! Invariant: times are taken just before the request is sent and just after the answer
//! arrives, so the real interval of the operation lies within `[invoke, ret]`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ballast_proto::etcdserverpb::{
    compare, kv_client::KvClient, request_op, response_op, DeleteRangeRequest, DeleteRangeResponse,
    PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseOp, TxnRequest,
    TxnResponse,
};
use ballast_proto::mvccpb::KeyValue;
use bytes::Bytes;
use tonic::transport::Channel;
use tonic::{Code, Status};

use super::history::{
    Call, ClientId, Compare, CompareResult, CompareTarget, History, Kv, Nanos, OpResult, Operation,
    Outcome, TxnOp,
};

/// The default per-request timeout of a [`RecordingClient`].
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether an error guarantees the request did nothing: etcd refuses these before the request
/// is proposed (bad arguments, a refused cross-shard txn, auth). Everything else, including
/// `Unavailable` (etcd's "request timed out", "leader changed"), `DeadlineExceeded`,
/// `ResourceExhausted` and transport errors, may hide an applied request.
pub fn definitely_failed(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::NotFound
            | Code::AlreadyExists
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::Unimplemented
    )
}

/// The common clock and the operations recorded so far. Clones share both.
#[derive(Debug, Clone)]
pub struct Recorder {
    start: Instant,
    initial_revision: i64,
    initial_keys: Vec<(Bytes, Kv)>,
    ops: Arc<Mutex<Vec<Operation>>>,
}

impl Recorder {
    /// A recorder for a store at `initial_revision` in which every key the clients will touch
    /// is absent.
    pub fn new(initial_revision: i64) -> Recorder {
        Recorder::starting_from(initial_revision, Vec::new())
    }

    /// A recorder for a store at `initial_revision` in which, of the keys the clients will
    /// touch, exactly `live_keys` exist (as a Range at that revision returned them).
    pub fn starting_from(initial_revision: i64, mut live_keys: Vec<(Bytes, Kv)>) -> Recorder {
        live_keys.sort_by(|a, b| a.0.cmp(&b.0));
        Recorder {
            start: Instant::now(),
            initial_revision,
            initial_keys: live_keys,
            ops: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Nanoseconds since the recorder was made.
    pub fn now(&self) -> Nanos {
        Nanos(u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    /// Files the result of `call`, invoked at `invoke` and answered (or given up on) now.
    pub fn record(
        &self,
        client: ClientId,
        call: Call,
        invoke: Nanos,
        result: &Result<Outcome, Status>,
    ) {
        let ret = self.now();
        let op = match result {
            Ok(outcome) => Operation {
                client,
                invoke,
                ret: Some(ret),
                call,
                outcome: outcome.clone(),
            },
            Err(status) if definitely_failed(status) => return,
            Err(_) => Operation {
                client,
                invoke,
                ret: None,
                call,
                outcome: Outcome::Unknown,
            },
        };
        self.ops.lock().expect("recorder lock").push(op);
    }

    /// A client that records into this recorder.
    pub fn client(&self, id: u32, kv: KvClient<Channel>) -> RecordingClient {
        RecordingClient {
            id: ClientId(id),
            kv,
            recorder: self.clone(),
            timeout: REQUEST_TIMEOUT,
        }
    }

    /// The history recorded so far.
    pub fn history(&self) -> History {
        History {
            initial_revision: self.initial_revision,
            initial_keys: self.initial_keys.clone(),
            ops: self.ops.lock().expect("recorder lock").clone(),
        }
    }
}

/// One client: sends calls one at a time and records each.
#[derive(Debug, Clone)]
pub struct RecordingClient {
    id: ClientId,
    kv: KvClient<Channel>,
    recorder: Recorder,
    timeout: Duration,
}

impl RecordingClient {
    /// Gives up on a request after `timeout` (it is then recorded with an unknown outcome).
    pub fn with_timeout(mut self, timeout: Duration) -> RecordingClient {
        self.timeout = timeout;
        self
    }

    pub fn id(&self) -> ClientId {
        self.id
    }

    /// Sends `call`, records it and returns what the client was told.
    pub async fn run(&mut self, call: Call) -> Result<Outcome, Status> {
        let invoke = self.recorder.now();
        let sent = tokio::time::timeout(self.timeout, send(&mut self.kv, &call)).await;
        let result = sent.unwrap_or_else(|_| Err(Status::deadline_exceeded("client timeout")));
        self.recorder.record(self.id, call, invoke, &result);
        result
    }

    pub async fn put(&mut self, key: &[u8], value: &[u8]) -> Result<Outcome, Status> {
        self.run(Call::Put {
            key: key.to_vec().into(),
            value: value.to_vec().into(),
            prev_kv: false,
        })
        .await
    }

    pub async fn get(&mut self, key: &[u8]) -> Result<Outcome, Status> {
        self.run(Call::Get {
            key: key.to_vec().into(),
        })
        .await
    }

    pub async fn delete(&mut self, key: &[u8]) -> Result<Outcome, Status> {
        self.run(Call::Delete {
            key: key.to_vec().into(),
        })
        .await
    }
}

async fn send(kv: &mut KvClient<Channel>, call: &Call) -> Result<Outcome, Status> {
    Ok(match call {
        Call::Put {
            key,
            value,
            prev_kv,
        } => put_outcome(
            kv.put(put_request(key, value, *prev_kv))
                .await?
                .into_inner(),
        ),
        Call::Get { key } => get_outcome(kv.range(range_request(key)).await?.into_inner()),
        Call::Delete { key } => {
            delete_outcome(kv.delete_range(delete_request(key)).await?.into_inner())
        }
        Call::Txn { .. } => txn_outcome(kv.txn(txn_request(call)).await?.into_inner()),
    })
}

fn put_request(key: &Bytes, value: &Bytes, prev_kv: bool) -> PutRequest {
    PutRequest {
        key: key.clone(),
        value: value.clone(),
        prev_kv,
        ..Default::default()
    }
}

fn range_request(key: &Bytes) -> RangeRequest {
    RangeRequest {
        key: key.clone(),
        ..Default::default()
    }
}

fn delete_request(key: &Bytes) -> DeleteRangeRequest {
    DeleteRangeRequest {
        key: key.clone(),
        ..Default::default()
    }
}

fn request_op(op: &TxnOp) -> RequestOp {
    let request = match op {
        TxnOp::Put { key, value } => {
            request_op::Request::RequestPut(put_request(key, value, false))
        }
        TxnOp::Get { key } => request_op::Request::RequestRange(range_request(key)),
        TxnOp::Delete { key } => request_op::Request::RequestDeleteRange(delete_request(key)),
    };
    RequestOp {
        request: Some(request),
    }
}

fn compare_request(c: &Compare) -> ballast_proto::etcdserverpb::Compare {
    use compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
    let (target, union) = match &c.target {
        CompareTarget::Value(v) => (T::Value, U::Value(v.clone())),
        CompareTarget::Version(n) => (T::Version, U::Version(*n)),
        CompareTarget::CreateRevision(n) => (T::Create, U::CreateRevision(*n)),
        CompareTarget::ModRevision(n) => (T::Mod, U::ModRevision(*n)),
    };
    let result = match c.result {
        CompareResult::Equal => R::Equal,
        CompareResult::Greater => R::Greater,
        CompareResult::Less => R::Less,
        CompareResult::NotEqual => R::NotEqual,
    };
    ballast_proto::etcdserverpb::Compare {
        result: result as i32,
        target: target as i32,
        key: c.key.clone(),
        target_union: Some(union),
        ..Default::default()
    }
}

/// The etcd request for a [`Call::Txn`].
///
/// # Panics
/// When `call` is not a txn.
pub fn txn_request(call: &Call) -> TxnRequest {
    let Call::Txn {
        compares,
        success,
        failure,
    } = call
    else {
        panic!("txn_request of a {call}");
    };
    TxnRequest {
        compare: compares.iter().map(compare_request).collect(),
        success: success.iter().map(request_op).collect(),
        failure: failure.iter().map(request_op).collect(),
    }
}

fn kv(k: KeyValue) -> Kv {
    Kv {
        value: k.value,
        create_revision: k.create_revision,
        mod_revision: k.mod_revision,
        version: k.version,
    }
}

/// The first kv of a single-key range (a second one would be a server bug the model then
/// reports, since it never answers two).
fn first_kv(kvs: Vec<KeyValue>) -> Option<Kv> {
    kvs.into_iter().next().map(kv)
}

fn header_revision(h: Option<ballast_proto::etcdserverpb::ResponseHeader>) -> i64 {
    h.map_or(0, |h| h.revision)
}

pub fn put_outcome(r: PutResponse) -> Outcome {
    Outcome::Put {
        revision: header_revision(r.header),
        prev_kv: r.prev_kv.map(kv),
    }
}

pub fn get_outcome(r: RangeResponse) -> Outcome {
    Outcome::Get {
        revision: header_revision(r.header),
        kv: first_kv(r.kvs),
    }
}

pub fn delete_outcome(r: DeleteRangeResponse) -> Outcome {
    Outcome::Delete {
        revision: header_revision(r.header),
        deleted: r.deleted,
    }
}

fn op_result(r: ResponseOp) -> OpResult {
    match r.response {
        Some(response_op::Response::ResponsePut(_)) => OpResult::Put,
        Some(response_op::Response::ResponseRange(r)) => OpResult::Get(first_kv(r.kvs)),
        Some(response_op::Response::ResponseDeleteRange(r)) => {
            OpResult::Delete { deleted: r.deleted }
        }
        // Not something this module sends; a nested txn answer fails the kind check.
        Some(response_op::Response::ResponseTxn(_)) | None => OpResult::Delete { deleted: -1 },
    }
}

pub fn txn_outcome(r: TxnResponse) -> Outcome {
    Outcome::Txn {
        revision: header_revision(r.header),
        succeeded: r.succeeded,
        results: r.responses.into_iter().map(op_result).collect(),
    }
}
