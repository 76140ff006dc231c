//! `etcdserverpb.Maintenance`: Status, Hash, HashKV, Alarm, Defragment, Snapshot (an etcd 3.4
//! backend file, `crate::snapshot`), MoveLeader; Downgrade answers Unimplemented until it
//! exists.

use std::pin::Pin;

use ballast_consensus::{AlarmAction, AlarmMember, AlarmType, Request, Response, TransferError};
use ballast_proto::etcdserverpb as pb;
use futures::Stream;
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status};

use crate::context::{route_error, Context, ETCD_VERSION};
use crate::snapshot::{self, SnapshotError};
use crate::status::{self, unexpected_reply};

/// Times a snapshot is tried when compactions keep interrupting it.
const SNAPSHOT_ATTEMPTS: usize = 3;

/// A snapshot's failure as the client sees it: a shard's error as etcd's; a file error with
/// code Unknown and its text (etcd's answer to an error it has no code for).
fn snapshot_status(err: SnapshotError) -> Status {
    match err {
        SnapshotError::Route(e) => route_error(e),
        SnapshotError::Interrupted { .. } | SnapshotError::ClusterChanged => {
            Status::unavailable(err.to_string())
        }
        other => Status::unknown(other.to_string()),
    }
}

pub struct MaintenanceService {
    ctx: Context,
}

impl MaintenanceService {
    pub fn new(ctx: Context) -> Self {
        MaintenanceService { ctx }
    }
}

impl MaintenanceService {
    /// etcd 3.4's maintenance server lets only a root user defragment, hash or snapshot
    /// while auth is enabled.
    async fn admin<T>(&self, request: &GrpcRequest<T>) -> Result<(), Status> {
        self.ctx
            .auth
            .check_maintenance_admin(request.metadata())
            .await
    }
}

#[tonic::async_trait]
impl pb::maintenance_server::Maintenance for MaintenanceService {
    /// The cluster's alarm table, in shard 0 (`ballast_consensus::alarms`): GET lists the
    /// alarms of the type named (every one for NONE); ACTIVATE and DEACTIVATE change it
    /// through shard 0's log and answer the alarm changed, as etcd's applier does.
    async fn alarm(
        &self,
        request: GrpcRequest<pb::AlarmRequest>,
    ) -> Result<GrpcResponse<pb::AlarmResponse>, Status> {
        use pb::alarm_request::AlarmAction as Action;
        // No permission is needed (etcd 3.4), but a token must be valid.
        self.ctx.caller(request.metadata()).await?;
        let req = request.into_inner();
        let action = match Action::try_from(req.action) {
            Ok(Action::Activate) => AlarmAction::Activate,
            Ok(Action::Deactivate) => AlarmAction::Deactivate,
            Ok(Action::Get) | Err(_) => AlarmAction::Get,
        };
        let member = AlarmMember {
            alarm: AlarmType(req.alarm),
            member_id: req.member_id,
        };
        let reply = self.ctx.call(Request::Alarm { action, member }).await?;
        let Response::Alarms(alarms) = reply.response else {
            return Err(unexpected_reply("Alarm"));
        };
        Ok(GrpcResponse::new(pb::AlarmResponse {
            header: Some(self.ctx.header(reply.revision)),
            alarms: alarms.iter().map(alarm_to_pb).collect(),
        }))
    }

    async fn status(
        &self,
        _request: GrpcRequest<pb::StatusRequest>,
    ) -> Result<GrpcResponse<pb::StatusResponse>, Status> {
        let reply = self.ctx.call(Request::Status).await?;
        let Response::Status(s) = reply.response else {
            return Err(unexpected_reply("Status"));
        };
        // The backend size the quota counts (`ballast_consensus::state_machine::BackendSize`).
        let size = i64::try_from(s.backend_bytes).unwrap_or(i64::MAX);
        let in_use = i64::try_from(s.backend_in_use_bytes).unwrap_or(i64::MAX);
        let mut errors: Vec<String> = s.failure.iter().cloned().collect();
        errors.extend(self.ctx.quota.alarms.list().iter().map(alarm_error));
        // Without a live leader etcd reports none, and says so among the errors.
        let has_leader = self.ctx.anchor.has_leader();
        if !has_leader {
            errors.push(crate::status::no_leader().message().to_owned());
        }
        Ok(GrpcResponse::new(pb::StatusResponse {
            header: Some(self.ctx.header(reply.revision)),
            version: ETCD_VERSION.to_owned(),
            db_size: size,
            // Shard 0's leader (the combined status reports shard 0's Raft figures). In a
            // cluster the groups' node ids are the member ids; a single node's group knows
            // itself as node 1, so its leader is this member when the shard leads.
            leader: if !has_leader {
                0
            } else if self.ctx.peers.is_some() {
                s.leader_id
            } else if s.is_leader {
                self.ctx.member.id
            } else {
                0
            },
            raft_index: s.raft_index,
            raft_term: s.raft_term,
            raft_applied_index: s.applied_index,
            errors,
            db_size_in_use: in_use,
            is_learner: self.ctx.anchor.is_learner(),
            storage_version: String::new(),
            db_size_quota: self.ctx.quota.reported_bytes(),
        }))
    }

    /// The store lives in memory, where there is no file to compact: nothing to do.
    async fn defragment(
        &self,
        request: GrpcRequest<pb::DefragmentRequest>,
    ) -> Result<GrpcResponse<pb::DefragmentResponse>, Status> {
        self.admin(&request).await?;
        let revision = self.ctx.call(Request::Status).await?.revision;
        Ok(GrpcResponse::new(pb::DefragmentResponse {
            header: Some(self.ctx.header(revision)),
        }))
    }

    async fn hash(
        &self,
        request: GrpcRequest<pb::HashRequest>,
    ) -> Result<GrpcResponse<pb::HashResponse>, Status> {
        self.admin(&request).await?;
        let reply = self.ctx.call(Request::Hash).await?;
        let Response::Hash(hash) = reply.response else {
            return Err(unexpected_reply("Hash"));
        };
        Ok(GrpcResponse::new(pb::HashResponse {
            header: Some(self.ctx.header(reply.revision)),
            hash,
        }))
    }

    async fn hash_kv(
        &self,
        request: GrpcRequest<pb::HashKvRequest>,
    ) -> Result<GrpcResponse<pb::HashKvResponse>, Status> {
        self.admin(&request).await?;
        let revision = request.into_inner().revision;
        let reply = self.ctx.call(Request::HashKv { revision }).await?;
        let Response::HashKv(h) = reply.response else {
            return Err(unexpected_reply("HashKV"));
        };
        Ok(GrpcResponse::new(pb::HashKvResponse {
            header: Some(self.ctx.header(reply.revision)),
            hash: h.hash,
            compact_revision: h.compact_revision,
            hash_revision: h.hash_revision,
        }))
    }

    type SnapshotStream =
        Pin<Box<dyn Stream<Item = Result<pb::SnapshotResponse, Status>> + Send + 'static>>;

    /// The whole store as an etcd 3.4 backend file (`crate::snapshot`), streamed as etcd
    /// streams it. A compaction landing while the history is read makes it start again (at
    /// most [`SNAPSHOT_ATTEMPTS`] times).
    async fn snapshot(
        &self,
        request: GrpcRequest<pb::SnapshotRequest>,
    ) -> Result<GrpcResponse<Self::SnapshotStream>, Status> {
        self.admin(&request).await?;
        let dir = std::path::Path::new(&self.ctx.settings.data_dir).join("ballast");
        // Shard 0's users, roles and alarms as this node applies them (`crate::snapshot`).
        let tables = snapshot::ClusterTables {
            auth: self.ctx.auth.node.clone(),
            alarms: self.ctx.quota.alarms.clone(),
        };
        let mut attempt = 1;
        let snapshot = loop {
            match snapshot::take(&self.ctx.router, &tables, &dir).await {
                Ok(s) => break s,
                Err(SnapshotError::Interrupted { .. }) if attempt < SNAPSHOT_ATTEMPTS => {
                    attempt += 1;
                }
                Err(err) => return Err(snapshot_status(err)),
            }
        };
        Ok(GrpcResponse::new(Box::pin(snapshot::stream(snapshot))))
    }

    /// Moves shard 0's leadership (the leader Status reports) to the voter named; the other
    /// shards' leaders follow it (`ballast_consensus::placement`). Only the leader does it.
    async fn move_leader(
        &self,
        request: GrpcRequest<pb::MoveLeaderRequest>,
    ) -> Result<GrpcResponse<pb::MoveLeaderResponse>, Status> {
        let target = request.into_inner().target_id;
        let moved = if self.ctx.peers.is_some() {
            self.ctx.router.move_leader(target).await
        } else if target == self.ctx.member.id {
            // A single node leads already (its groups know it as node 1, not by member id).
            Ok(())
        } else {
            Err(TransferError::BadTransferee)
        };
        moved.map_err(|e| status::transfer(&e))?;
        let revision = self.ctx.call(Request::Status).await?.revision;
        Ok(GrpcResponse::new(pb::MoveLeaderResponse {
            header: Some(self.ctx.header(revision)),
        }))
    }

    async fn downgrade(
        &self,
        _request: GrpcRequest<pb::DowngradeRequest>,
    ) -> Result<GrpcResponse<pb::DowngradeResponse>, Status> {
        Err(status::not_built("Maintenance.Downgrade"))
    }
}

fn alarm_to_pb(m: &AlarmMember) -> pb::AlarmMember {
    pb::AlarmMember {
        member_id: m.member_id,
        alarm: m.alarm.0,
    }
}

/// An alarm as etcd lists it in `Status.errors` (its protobuf text form).
pub fn alarm_error(m: &AlarmMember) -> String {
    format!("memberID:{} alarm:{} ", m.member_id, m.alarm)
}
