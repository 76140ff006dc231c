//! `etcdserverpb.Cluster`: MemberList answers with the members of shard 0's Raft group (the
//! cluster's membership), each named as it introduced itself over the peer transport; a member
//! not heard from yet has no name and no client URLs, as etcd shows an unstarted member. A
//! single node answers with itself. Membership changes answer Unimplemented (not built yet).

use ballast_consensus::{Request, Response};
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
        let Some(hub) = &self.ctx.peers else {
            return Ok(GrpcResponse::new(pb::MemberListResponse {
                header: Some(self.ctx.header(0)),
                members: vec![self.ctx.pb_member()],
            }));
        };
        let reply = self
            .ctx
            .router
            .call_shard(0, Request::Status)
            .await
            .map_err(crate::context::route_error)?;
        let Response::Status(status) = reply.response else {
            return Err(status::unexpected_reply("Status"));
        };
        let members = status
            .members
            .into_iter()
            .map(|m| {
                if m.id == self.ctx.member.id {
                    let mut me = self.ctx.pb_member();
                    me.is_learner = m.is_learner;
                    return me;
                }
                let heard = hub.peer(m.id).unwrap_or_default();
                pb::Member {
                    id: m.id,
                    name: heard.name,
                    peer_ur_ls: vec![m.addr],
                    client_ur_ls: heard.client_urls,
                    is_learner: m.is_learner,
                }
            })
            .collect();
        Ok(GrpcResponse::new(pb::MemberListResponse {
            header: Some(self.ctx.header(0)),
            members,
        }))
    }

    async fn member_promote(
        &self,
        _request: GrpcRequest<pb::MemberPromoteRequest>,
    ) -> Result<GrpcResponse<pb::MemberPromoteResponse>, Status> {
        Err(status::not_built("Cluster.MemberPromote"))
    }
}
