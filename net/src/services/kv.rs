//! `etcdserverpb.KV`: Range, Put, DeleteRange, Txn, Compact.

use ballast_consensus::{Request, Response};
use ballast_engine::validate;
use ballast_proto::etcdserverpb as pb;
use prost::Message;
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status};

use crate::context::Context;
use crate::status::unexpected_reply;
use crate::{convert, status};

pub struct KvService {
    ctx: Context,
}

impl KvService {
    pub fn new(ctx: Context) -> Self {
        KvService { ctx }
    }
}

#[tonic::async_trait]
impl pb::kv_server::Kv for KvService {
    async fn range(
        &self,
        request: GrpcRequest<pb::RangeRequest>,
    ) -> Result<GrpcResponse<pb::RangeResponse>, Status> {
        // A learner serves serializable Ranges only (the rest it refuses before: interceptor.rs).
        if !request.get_ref().serializable && self.ctx.anchor.is_learner() {
            return Err(status::not_supported_for_learner());
        }
        let caller = self.ctx.caller(request.metadata()).await?;
        let req = convert::range_request_from_pb(request.into_inner())
            .map_err(|e| status::from_engine(&e))?;
        validate::range(&req).map_err(|e| status::from_engine(&e))?;
        let reply = self.ctx.call_as(&caller, Request::Range(req)).await?;
        match reply.response {
            Response::Range(r) => Ok(GrpcResponse::new(convert::range_response_to_pb(
                r,
                self.ctx.header(reply.revision),
            ))),
            _ => Err(unexpected_reply("Range")),
        }
    }

    async fn put(
        &self,
        request: GrpcRequest<pb::PutRequest>,
    ) -> Result<GrpcResponse<pb::PutResponse>, Status> {
        let caller = self.ctx.caller(request.metadata()).await?;
        let pb_req = request.into_inner();
        let encoded_len = pb_req.encoded_len();
        let req = convert::put_request_from_pb(pb_req);
        validate::put(&req).map_err(|e| status::from_engine(&e))?;
        self.ctx.check_size(encoded_len)?;
        let reply = self.ctx.call_as(&caller, Request::Put(req)).await?;
        match reply.response {
            Response::Put(r) => Ok(GrpcResponse::new(convert::put_response_to_pb(
                r,
                self.ctx.header(reply.revision),
            ))),
            _ => Err(unexpected_reply("Put")),
        }
    }

    async fn delete_range(
        &self,
        request: GrpcRequest<pb::DeleteRangeRequest>,
    ) -> Result<GrpcResponse<pb::DeleteRangeResponse>, Status> {
        let caller = self.ctx.caller(request.metadata()).await?;
        let pb_req = request.into_inner();
        let encoded_len = pb_req.encoded_len();
        let req = convert::delete_request_from_pb(pb_req);
        validate::delete_range(&req).map_err(|e| status::from_engine(&e))?;
        self.ctx.check_size(encoded_len)?;
        let reply = self.ctx.call_as(&caller, Request::DeleteRange(req)).await?;
        match reply.response {
            Response::DeleteRange(r) => Ok(GrpcResponse::new(convert::delete_response_to_pb(
                r,
                self.ctx.header(reply.revision),
            ))),
            _ => Err(unexpected_reply("DeleteRange")),
        }
    }

    async fn txn(
        &self,
        request: GrpcRequest<pb::TxnRequest>,
    ) -> Result<GrpcResponse<pb::TxnResponse>, Status> {
        let caller = self.ctx.caller(request.metadata()).await?;
        let pb_req = request.into_inner();
        let encoded_len = pb_req.encoded_len();
        let req = convert::txn_request_from_pb(pb_req).map_err(|e| status::from_engine(&e))?;
        validate::txn(&req, self.ctx.limits.max_txn_ops).map_err(|e| status::from_engine(&e))?;
        self.ctx.check_size(encoded_len)?;
        let reply = self.ctx.call_as(&caller, Request::Txn(req)).await?;
        match reply.response {
            Response::Txn(r) => Ok(GrpcResponse::new(convert::txn_response_to_pb(
                r,
                self.ctx.header(reply.revision),
            ))),
            _ => Err(unexpected_reply("Txn")),
        }
    }

    /// The store applies a compaction before it answers, so `physical` (wait until the
    /// compaction has taken effect) holds for every compaction.
    async fn compact(
        &self,
        request: GrpcRequest<pb::CompactionRequest>,
    ) -> Result<GrpcResponse<pb::CompactionResponse>, Status> {
        // etcd 3.4 checks no permission for a compaction, but a token must be valid.
        let caller = self.ctx.caller(request.metadata()).await?;
        let req = request.into_inner();
        let reply = self
            .ctx
            .call_as(
                &caller,
                Request::Compact {
                    revision: req.revision,
                },
            )
            .await?;
        match reply.response {
            Response::Compact => Ok(GrpcResponse::new(pb::CompactionResponse {
                header: Some(self.ctx.header(reply.revision)),
            })),
            _ => Err(unexpected_reply("Compact")),
        }
    }
}
