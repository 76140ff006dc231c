//! `etcdserverpb.Lease`: Grant, Revoke, the KeepAlive stream, TimeToLive, Leases.
//! etcd answers a keep-alive or time-to-live of an unknown lease without an error: TTL 0 for a
//! keep-alive, TTL -1 for time-to-live.

use std::pin::Pin;

use ballast_consensus::{Request, Response};
use ballast_proto::etcdserverpb as pb;
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status, Streaming};

use crate::context::{route_error, Context};
use crate::status::unexpected_reply;

/// Keep-alive responses buffered per stream before the stream applies backpressure.
const KEEPALIVE_RESPONSES_MAX: usize = 64;

pub struct LeaseService {
    ctx: Context,
}

impl LeaseService {
    pub fn new(ctx: Context) -> Self {
        LeaseService { ctx }
    }
}

async fn keep_alive_once(ctx: &Context, id: i64) -> Result<pb::LeaseKeepAliveResponse, Status> {
    match ctx.router.call(Request::LeaseKeepAlive { id }).await {
        Ok(reply) => match reply.response {
            Response::LeaseKeepAlive { ttl } => Ok(pb::LeaseKeepAliveResponse {
                header: Some(ctx.header(reply.revision)),
                id,
                ttl,
            }),
            _ => Err(unexpected_reply("LeaseKeepAlive")),
        },
        Err(e) if e.is_lease_not_found() => {
            let revision = current_revision(ctx).await?;
            Ok(pb::LeaseKeepAliveResponse {
                header: Some(ctx.header(revision)),
                id,
                ttl: 0,
            })
        }
        Err(e) => Err(route_error(e)),
    }
}

async fn current_revision(ctx: &Context) -> Result<i64, Status> {
    Ok(ctx.call(Request::Status).await?.revision)
}

#[tonic::async_trait]
impl pb::lease_server::Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: GrpcRequest<pb::LeaseGrantRequest>,
    ) -> Result<GrpcResponse<pb::LeaseGrantResponse>, Status> {
        // No permission is needed (etcd 3.4), but a token must be valid.
        let caller = self.ctx.caller(request.metadata()).await?;
        let req = request.into_inner();
        let reply = self
            .ctx
            .call_as(
                &caller,
                Request::LeaseGrant {
                    id: req.id,
                    ttl: req.ttl,
                },
            )
            .await?;
        match reply.response {
            Response::LeaseGrant { id, ttl } => Ok(GrpcResponse::new(pb::LeaseGrantResponse {
                header: Some(self.ctx.header(reply.revision)),
                id,
                ttl,
                error: String::new(),
            })),
            _ => Err(unexpected_reply("LeaseGrant")),
        }
    }

    async fn lease_revoke(
        &self,
        request: GrpcRequest<pb::LeaseRevokeRequest>,
    ) -> Result<GrpcResponse<pb::LeaseRevokeResponse>, Status> {
        let caller = self.ctx.caller(request.metadata()).await?;
        let id = request.into_inner().id;
        let reply = self
            .ctx
            .call_as(&caller, Request::LeaseRevoke { id })
            .await?;
        match reply.response {
            Response::LeaseRevoke => Ok(GrpcResponse::new(pb::LeaseRevokeResponse {
                header: Some(self.ctx.header(reply.revision)),
            })),
            _ => Err(unexpected_reply("LeaseRevoke")),
        }
    }

    type LeaseKeepAliveStream =
        Pin<Box<dyn Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>> + Send + 'static>>;

    async fn lease_keep_alive(
        &self,
        request: GrpcRequest<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<GrpcResponse<Self::LeaseKeepAliveStream>, Status> {
        let mut incoming = request.into_inner();
        let (tx, rx) = mpsc::channel(KEEPALIVE_RESPONSES_MAX);
        let ctx = self.ctx.clone();
        tokio::spawn(async move {
            loop {
                let req = match incoming.message().await {
                    Ok(Some(req)) => req,
                    Ok(None) => return,
                    Err(status) => {
                        // An oversized request ends the stream with etcd's status; other read
                        // errors (the client gone) end it quietly.
                        if let Some(refusal) = crate::transport_status::etcd_refusal(&status) {
                            let _ = tx.try_send(Err(refusal));
                        }
                        return;
                    }
                };
                let resp = keep_alive_once(&ctx, req.id).await;
                let failed = resp.is_err();
                if tx.send(resp).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(GrpcResponse::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        request: GrpcRequest<pb::LeaseTimeToLiveRequest>,
    ) -> Result<GrpcResponse<pb::LeaseTimeToLiveResponse>, Status> {
        let req = request.into_inner();
        let result = self
            .ctx
            .router
            .call(Request::LeaseTimeToLive {
                id: req.id,
                keys: req.keys,
            })
            .await;
        let resp = match result {
            Ok(reply) => match reply.response {
                Response::LeaseTimeToLive(t) => pb::LeaseTimeToLiveResponse {
                    header: Some(self.ctx.header(reply.revision)),
                    id: t.id,
                    ttl: t.ttl_remaining_secs,
                    granted_ttl: t.granted_ttl,
                    keys: t.keys,
                },
                _ => return Err(unexpected_reply("LeaseTimeToLive")),
            },
            Err(e) if e.is_lease_not_found() => pb::LeaseTimeToLiveResponse {
                header: Some(self.ctx.header(current_revision(&self.ctx).await?)),
                id: req.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            },
            Err(e) => return Err(route_error(e)),
        };
        Ok(GrpcResponse::new(resp))
    }

    async fn lease_leases(
        &self,
        _request: GrpcRequest<pb::LeaseLeasesRequest>,
    ) -> Result<GrpcResponse<pb::LeaseLeasesResponse>, Status> {
        let reply = self.ctx.call(Request::LeaseLeases).await?;
        match reply.response {
            Response::LeaseLeases(ids) => Ok(GrpcResponse::new(pb::LeaseLeasesResponse {
                header: Some(self.ctx.header(reply.revision)),
                leases: ids.into_iter().map(|id| pb::LeaseStatus { id }).collect(),
            })),
            _ => Err(unexpected_reply("LeaseLeases")),
        }
    }
}
