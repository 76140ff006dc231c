//! `etcdserverpb.Cluster`: MemberList answers with this one member; membership changes answer
//! Unimplemented until clustering exists.

use ballast_proto::etcdserverpb as pb;
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status};

use crate::context::Context;
use crate::status;

pub struct ClusterService {
    ctx: Context,
}

impl ClusterService {
    pub fn new(ctx: Context) -> Self {
        ClusterService { ctx }
    }
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterService {
    async fn member_add(
        &self,
        _request: GrpcRequest<pb::MemberAddRequest>,
    ) -> Result<GrpcResponse<pb::MemberAddResponse>, Status> {
        Err(status::not_built("Cluster.MemberAdd"))
    }

    async fn member_remove(
        &self,
        _request: GrpcRequest<pb::MemberRemoveRequest>,
    ) -> Result<GrpcResponse<pb::MemberRemoveResponse>, Status> {
        Err(status::not_built("Cluster.MemberRemove"))
    }

    async fn member_update(
        &self,
        _request: GrpcRequest<pb::MemberUpdateRequest>,
    ) -> Result<GrpcResponse<pb::MemberUpdateResponse>, Status> {
        Err(status::not_built("Cluster.MemberUpdate"))
    }

    async fn member_list(
        &self,
        _request: GrpcRequest<pb::MemberListRequest>,
    ) -> Result<GrpcResponse<pb::MemberListResponse>, Status> {
        // etcd answers MemberList from its membership store, with no KV revision in the header.
        Ok(GrpcResponse::new(pb::MemberListResponse {
            header: Some(self.ctx.header(0)),
            members: vec![self.ctx.pb_member()],
        }))
    }

    async fn member_promote(
        &self,
        _request: GrpcRequest<pb::MemberPromoteRequest>,
    ) -> Result<GrpcResponse<pb::MemberPromoteResponse>, Status> {
        Err(status::not_built("Cluster.MemberPromote"))
    }
}
