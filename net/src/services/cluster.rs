//! `etcdserverpb.Cluster`. MemberList answers with the members of shard 0's Raft group (the
//! cluster's membership), each named as it introduced itself over the peer transport; a member
//! not heard from yet has no name and no client URLs, as etcd shows an unstarted member. A
//! single node answers with itself.
//!
//! Membership changes (add as voter or learner, remove, update peer URLs, promote) go to every
//! shard's group through the router, shard 0 first (its membership is the cluster's): a change
//! refused by shard 0 changes nothing; one that fails in a later shard after shard 0 took it is
//! reported, and running it again completes it (a change already in effect is not an error in
//! the later shards). A lone member is a cluster of one and changes as any. Only a data dir
//! written by a single-node server of an earlier version runs without a peer transport
//! (`server.rs`): there changes are refused (FailedPrecondition), and a change of another
//! member is answered as etcd does, "member not found".
//!
//! A new member's id follows from its peer URLs and the cluster token (as every member's does,
//! `context::member_id`), so the member started with `--initial-cluster-state existing` and the
//! same token knows itself by the id the cluster gave it.

use ballast_consensus::{MembershipChange, RaftMember, Request, Response};
use ballast_proto::etcdserverpb as pb;
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status};

use crate::context::{member_id, route_error, Context};
use crate::status;

pub struct ClusterService {
    ctx: Context,
}

impl ClusterService {
    pub fn new(ctx: Context) -> Self {
        ClusterService { ctx }
    }

    /// The members as etcd lists them: this member with its own names and URLs, the others as
    /// their hello named them.
    fn pb_members(&self, members: Vec<RaftMember>) -> Vec<pb::Member> {
        members
            .into_iter()
            .map(|m| {
                if m.id == self.ctx.member.id {
                    let mut me = self.ctx.pb_member();
                    me.is_learner = m.is_learner;
                    return me;
                }
                let heard = self
                    .ctx
                    .peers
                    .as_ref()
                    .and_then(|hub| hub.peer(m.id))
                    .unwrap_or_default();
                pb::Member {
                    id: m.id,
                    name: heard.name,
                    peer_ur_ls: vec![m.addr],
                    client_ur_ls: heard.client_urls,
                    is_learner: m.is_learner,
                }
            })
            .collect()
    }

    /// Makes `change` in every shard's group and returns the cluster's members after it.
    async fn change(&self, change: MembershipChange) -> Result<Vec<pb::Member>, Status> {
        if self.ctx.peers.is_none() {
            // A member other than this one does not exist here: etcd's answer.
            let other = match &change {
                MembershipChange::Add { .. } => None,
                MembershipChange::Remove { id }
                | MembershipChange::Update { id, .. }
                | MembershipChange::Promote { id }
                | MembershipChange::Vote { id } => Some(*id),
            };
            if other.is_some_and(|id| id != self.ctx.member.id) {
                return Err(Status::not_found("etcdserver: member not found"));
            }
            return Err(Status::failed_precondition(
                "ballast: this data dir was written by a single-node server of an earlier \
                 version, which runs without a peer transport; its membership cannot change \
                 (take a snapshot and restore it into a new data dir to grow it)",
            ));
        }
        let members = self
            .ctx
            .router
            .change_membership(change)
            .await
            .map_err(route_error)?;
        Ok(self.pb_members(members))
    }
}

/// The one peer URL a member is reached at (Ballast keeps one per member): etcd's
/// "given member URLs are invalid" unless exactly one `http://host:port` (or `https://`) URL
/// is given.
fn one_peer_url(urls: &[String]) -> Result<String, Status> {
    let invalid = || Status::invalid_argument("etcdserver: given member URLs are invalid");
    let [url] = urls else {
        return Err(invalid());
    };
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(invalid)?;
    let (host, port) = rest
        .trim_end_matches('/')
        .rsplit_once(':')
        .ok_or_else(invalid)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(invalid());
    }
    Ok(url.clone())
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterService {
    async fn member_add(
        &self,
        request: GrpcRequest<pb::MemberAddRequest>,
    ) -> Result<GrpcResponse<pb::MemberAddResponse>, Status> {
        let r = request.into_inner();
        let addr = one_peer_url(&r.peer_ur_ls)?;
        let id = member_id(
            std::slice::from_ref(&addr),
            &self.ctx.settings.initial_cluster_token,
        );
        let members = self
            .change(MembershipChange::Add {
                id,
                addr: addr.clone(),
                learner: r.is_learner,
            })
            .await?;
        Ok(GrpcResponse::new(pb::MemberAddResponse {
            header: Some(self.ctx.header(0)),
            member: Some(pb::Member {
                id,
                name: String::new(),
                peer_ur_ls: vec![addr],
                client_ur_ls: Vec::new(),
                is_learner: r.is_learner,
            }),
            members,
        }))
    }

    async fn member_remove(
        &self,
        request: GrpcRequest<pb::MemberRemoveRequest>,
    ) -> Result<GrpcResponse<pb::MemberRemoveResponse>, Status> {
        let id = request.into_inner().id;
        let members = self.change(MembershipChange::Remove { id }).await?;
        Ok(GrpcResponse::new(pb::MemberRemoveResponse {
            header: Some(self.ctx.header(0)),
            members,
        }))
    }

    async fn member_update(
        &self,
        request: GrpcRequest<pb::MemberUpdateRequest>,
    ) -> Result<GrpcResponse<pb::MemberUpdateResponse>, Status> {
        let r = request.into_inner();
        let addr = one_peer_url(&r.peer_ur_ls)?;
        let members = self
            .change(MembershipChange::Update { id: r.id, addr })
            .await?;
        Ok(GrpcResponse::new(pb::MemberUpdateResponse {
            header: Some(self.ctx.header(0)),
            members,
        }))
    }

    async fn member_list(
        &self,
        _request: GrpcRequest<pb::MemberListRequest>,
    ) -> Result<GrpcResponse<pb::MemberListResponse>, Status> {
        // etcd answers MemberList from its membership store, with no KV revision in the header.
        if self.ctx.peers.is_none() {
            return Ok(GrpcResponse::new(pb::MemberListResponse {
                header: Some(self.ctx.header(0)),
                members: vec![self.ctx.pb_member()],
            }));
        }
        let reply = self
            .ctx
            .router
            .call_shard(0, Request::Status)
            .await
            .map_err(route_error)?;
        let Response::Status(status) = reply.response else {
            return Err(status::unexpected_reply("Status"));
        };
        Ok(GrpcResponse::new(pb::MemberListResponse {
            header: Some(self.ctx.header(0)),
            members: self.pb_members(status.members),
        }))
    }

    async fn member_promote(
        &self,
        request: GrpcRequest<pb::MemberPromoteRequest>,
    ) -> Result<GrpcResponse<pb::MemberPromoteResponse>, Status> {
        let id = request.into_inner().id;
        let members = self.change(MembershipChange::Promote { id }).await?;
        Ok(GrpcResponse::new(pb::MemberPromoteResponse {
            header: Some(self.ctx.header(0)),
            members,
        }))
    }
}
