//! `v3electionpb.Election`: leader election as etcd serves it. A candidate with lease L owns
//! `name/<L in hex>`; the leader is the key under `name/` with the lowest create revision.
//! Campaign returns once every earlier candidate's key is gone; Proclaim updates the leader's
//! value while it still holds the key; Observe streams the leader's value as it changes.

use std::pin::Pin;

use ballast_consensus::{Request, Response};
use ballast_engine::{
    Compare, CompareResult, CompareTarget, CompareValue, DeleteRangeRequest, EventKind, PutRequest,
    RequestOp, TxnRequest,
};
use ballast_proto::v3electionpb as pb;
use bytes::Bytes;
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status};

use crate::context::Context;
use crate::convert::kv_to_pb;
use crate::services::concurrency::{
    as_client_error, first_created, prefix_end, wait_deletes, ServerWatch,
};
use crate::services::lock::{join, participant_key, KeyGuard};
use crate::status::unexpected_reply;

/// etcd's election errors are plain Go errors, which gRPC reports with code Unknown.
fn not_leader() -> Status {
    Status::unknown("election: not leader")
}
fn no_leader() -> Status {
    Status::unknown("election: no leader")
}
fn missing_leader_key() -> Status {
    Status::unknown("\"leader\" field must be provided")
}

/// Responses buffered per Observe stream.
const OBSERVE_RESPONSES_MAX: usize = 16;

pub struct ElectionService {
    ctx: Context,
}

impl ElectionService {
    pub fn new(ctx: Context) -> Self {
        ElectionService { ctx }
    }
}

fn election_prefix(name: &[u8]) -> Bytes {
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    Bytes::from(prefix)
}

/// Runs `op` if `key` still has create revision `rev`; returns (succeeded, header revision).
async fn if_still_leader(
    ctx: &Context,
    key: &Bytes,
    rev: i64,
    op: RequestOp,
) -> Result<(bool, i64), Status> {
    let txn = TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Equal,
            target: CompareTarget::Create,
            key: key.clone(),
            range_end: Bytes::new(),
            target_union: Some(CompareValue::CreateRevision(rev)),
        }],
        success: vec![op],
        failure: Vec::new(),
    };
    let reply = ctx.call(Request::Txn(txn)).await?;
    match reply.response {
        Response::Txn(t) => Ok((t.succeeded, reply.revision)),
        _ => Err(unexpected_reply("Txn")),
    }
}

async fn proclaim(ctx: &Context, key: &Bytes, rev: i64, value: Bytes) -> Result<i64, Status> {
    let put = RequestOp::Put(PutRequest {
        key: key.clone(),
        value,
        ignore_lease: true,
        ..Default::default()
    });
    match if_still_leader(ctx, key, rev, put).await? {
        (true, revision) => Ok(revision),
        (false, _) => Err(not_leader()),
    }
}

async fn current_value(ctx: &Context, key: &Bytes) -> Result<Option<Bytes>, Status> {
    let reply = ctx
        .call(Request::Range(ballast_engine::RangeRequest {
            key: key.clone(),
            ..Default::default()
        }))
        .await?;
    match reply.response {
        Response::Range(r) => Ok(r.kvs.into_iter().next().map(|kv| kv.value)),
        _ => Err(unexpected_reply("Range")),
    }
}

/// Streams the leader of `prefix` to `tx` until the client goes away or the shard stops.
async fn observe(
    ctx: Context,
    prefix: Bytes,
    tx: mpsc::Sender<Result<pb::LeaderResponse, Status>>,
) -> Result<(), Status> {
    loop {
        let (leader, revision) = first_created(&ctx, &prefix).await?;
        let Some(mut leader) = leader else {
            // No leader: wait for the first put under the prefix, then read the owner again.
            let mut watch =
                ServerWatch::start(&ctx, prefix.clone(), prefix_end(&prefix), revision + 1).await?;
            while !watch.next().await?.iter().any(|e| e.kind == EventKind::Put) {}
            continue;
        };
        let resp = pb::LeaderResponse {
            header: Some(ctx.header(revision)),
            kv: Some(kv_to_pb(leader.clone())),
        };
        if tx.send(Ok(resp)).await.is_err() {
            return Ok(());
        }
        let mut watch =
            ServerWatch::start(&ctx, leader.key.clone(), Bytes::new(), revision + 1).await?;
        'leader: loop {
            for ev in watch.next().await? {
                match ev.kind {
                    EventKind::Delete => break 'leader,
                    EventKind::Put => {
                        if ev.kv.value == leader.value {
                            continue;
                        }
                        leader = ev.kv.clone();
                        let resp = pb::LeaderResponse {
                            header: Some(ctx.header(ev.kv.mod_revision)),
                            kv: Some(kv_to_pb(ev.kv)),
                        };
                        if tx.send(Ok(resp)).await.is_err() {
                            return Ok(());
                        }
                    }
                }
            }
        }
    }
}

#[tonic::async_trait]
impl pb::election_server::Election for ElectionService {
    async fn campaign(
        &self,
        request: GrpcRequest<pb::CampaignRequest>,
    ) -> Result<GrpcResponse<pb::CampaignResponse>, Status> {
        async move {
            let caller = self.ctx.caller(request.metadata()).await?;
            let req = request.into_inner();
            let prefix = election_prefix(&req.name);
            let key = participant_key(&prefix, req.lease);
            let end = crate::services::concurrency::prefix_end(&prefix);
            self.ctx
                .auth
                .check_concurrency(&caller, Some((&prefix, &end)), Some(&key))?;
            let joined = join(&self.ctx, &prefix, &key, req.value.clone(), req.lease).await?;
            let my_revision = joined.my_revision;
            let guard = KeyGuard::new(&self.ctx, key.clone());
            let mut header_revision = joined.revision;
            if !joined.created {
                // The key existed (a resumed campaign): make its value the requested one.
                if current_value(&self.ctx, &key).await?.as_ref() != Some(&req.value) {
                    header_revision = proclaim(&self.ctx, &key, my_revision, req.value).await?;
                }
            }
            wait_deletes(&self.ctx, &prefix, my_revision - 1).await?;
            guard.disarm();
            Ok(GrpcResponse::new(pb::CampaignResponse {
                header: Some(self.ctx.header(header_revision)),
                leader: Some(pb::LeaderKey {
                    name: req.name,
                    key,
                    rev: my_revision,
                    lease: req.lease,
                }),
            }))
        }
        .await
        .map_err(as_client_error)
    }

    async fn proclaim(
        &self,
        request: GrpcRequest<pb::ProclaimRequest>,
    ) -> Result<GrpcResponse<pb::ProclaimResponse>, Status> {
        async move {
            let caller = self.ctx.caller(request.metadata()).await?;
            let req = request.into_inner();
            let leader = req.leader.ok_or_else(missing_leader_key)?;
            self.ctx
                .auth
                .check_concurrency(&caller, None, Some(&leader.key))?;
            let revision = proclaim(&self.ctx, &leader.key, leader.rev, req.value).await?;
            Ok(GrpcResponse::new(pb::ProclaimResponse {
                header: Some(self.ctx.header(revision)),
            }))
        }
        .await
        .map_err(as_client_error)
    }

    async fn leader(
        &self,
        request: GrpcRequest<pb::LeaderRequest>,
    ) -> Result<GrpcResponse<pb::LeaderResponse>, Status> {
        async move {
            let caller = self.ctx.caller(request.metadata()).await?;
            let prefix = election_prefix(&request.into_inner().name);
            let end = crate::services::concurrency::prefix_end(&prefix);
            self.ctx
                .auth
                .check_concurrency(&caller, Some((&prefix, &end)), None)?;
            let (leader, revision) = first_created(&self.ctx, &prefix).await?;
            let kv = leader.ok_or_else(no_leader)?;
            Ok(GrpcResponse::new(pb::LeaderResponse {
                header: Some(self.ctx.header(revision)),
                kv: Some(kv_to_pb(kv)),
            }))
        }
        .await
        .map_err(as_client_error)
    }

    type ObserveStream =
        Pin<Box<dyn Stream<Item = Result<pb::LeaderResponse, Status>> + Send + 'static>>;

    async fn observe(
        &self,
        request: GrpcRequest<pb::LeaderRequest>,
    ) -> Result<GrpcResponse<Self::ObserveStream>, Status> {
        let caller = self
            .ctx
            .caller(request.metadata())
            .await
            .map_err(as_client_error)?;
        let prefix = election_prefix(&request.into_inner().name);
        let end = crate::services::concurrency::prefix_end(&prefix);
        self.ctx
            .auth
            .check_concurrency(&caller, Some((&prefix, &end)), None)
            .map_err(as_client_error)?;
        let (tx, rx) = mpsc::channel(OBSERVE_RESPONSES_MAX);
        let ctx = self.ctx.clone();
        tokio::spawn(async move {
            let err_tx = tx.clone();
            tokio::select! {
                result = observe(ctx, prefix, tx) => {
                    if let Err(status) = result {
                        let _ = err_tx.send(Err(status)).await;
                    }
                }
                () = err_tx.closed() => {}
            }
        });
        Ok(GrpcResponse::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn resign(
        &self,
        request: GrpcRequest<pb::ResignRequest>,
    ) -> Result<GrpcResponse<pb::ResignResponse>, Status> {
        async move {
            let caller = self.ctx.caller(request.metadata()).await?;
            let leader = request.into_inner().leader.ok_or_else(missing_leader_key)?;
            self.ctx
                .auth
                .check_concurrency(&caller, None, Some(&leader.key))?;
            let delete = RequestOp::DeleteRange(DeleteRangeRequest {
                key: leader.key.clone(),
                ..Default::default()
            });
            let (_, revision) = if_still_leader(&self.ctx, &leader.key, leader.rev, delete).await?;
            Ok(GrpcResponse::new(pb::ResignResponse {
                header: Some(self.ctx.header(revision)),
            }))
        }
        .await
        .map_err(as_client_error)
    }
}
