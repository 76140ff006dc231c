//! What every service handler shares: the way to the shards (the [`Router`]), this member's
//! identity, and the request limits. Built once at start-up, then read-only.

use ballast_consensus::{Reply, Request, ShardError};
use ballast_proto::etcdserverpb as pb;
use tonic::Status;

use crate::router::{RouteError, Router};
use crate::status;

/// The etcd API version Ballast reports (Status, /version): one kube-apiserver accepts.
pub const ETCD_VERSION: &str = "3.5.17";
pub const ETCD_CLUSTER_VERSION: &str = "3.5.0";

#[derive(Clone, Debug)]
pub struct Member {
    pub id: u64,
    pub cluster_id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
}

impl Member {
    /// This member: its id from what identifies it (peer URLs, cluster token), and the cluster
    /// id from every initial member's id (`initial`: the `--initial-cluster` members' peer URLs,
    /// this one's included), the way etcd derives both from their inputs. Every member of a
    /// cluster started with the same `--initial-cluster` and token computes the same ids.
    pub fn new(
        name: &str,
        peer_urls: Vec<String>,
        client_urls: Vec<String>,
        token: &str,
        initial: &[Vec<String>],
    ) -> Member {
        let id = member_id(&peer_urls, token);
        let mut ids: Vec<u64> = initial.iter().map(|urls| member_id(urls, token)).collect();
        if !ids.contains(&id) {
            ids.push(id);
        }
        ids.sort_unstable();
        let bytes: Vec<u8> = ids.iter().flat_map(|id| id.to_be_bytes()).collect();
        Member {
            id,
            cluster_id: fnv1a64(&bytes).max(1),
            name: name.to_owned(),
            peer_urls,
            client_urls,
        }
    }
}

/// A member's id from its peer URLs and the cluster token.
pub fn member_id(peer_urls: &[String], token: &str) -> u64 {
    let mut sorted = peer_urls.to_vec();
    sorted.sort();
    fnv1a64(format!("{}|{}", sorted.join(","), token).as_bytes()).max(1)
}

fn fnv1a64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_txn_ops: usize,
    pub max_request_bytes: usize,
}

#[derive(Clone)]
pub struct Context {
    pub router: Router,
    pub member: Member,
    pub limits: Limits,
    /// The resolved configuration (profile, file, flags), reported in /metrics.
    pub settings: std::sync::Arc<ballast_tuning::Config>,
    /// The peer side of a cluster node (`None` on a single node).
    pub peers: Option<std::sync::Arc<crate::peer::PeerHub>>,
    /// Shard 0's leader and term as this node knows them (the term goes in every header).
    pub anchor: std::sync::Arc<ballast_consensus::Anchor>,
    /// The storage quota and the alarms' hold on writes (`quota.rs`), checked by [`Context::call`].
    pub quota: crate::quota::Quota,
    /// The auth state as this node applied it, and the auth settings (`auth.rs`).
    pub auth: crate::auth::AuthEdge,
    /// Calls and messages per gRPC method, counted by the gRPC layer (`grpc_metrics.rs`).
    pub grpc_metrics: std::sync::Arc<crate::grpc_metrics::GrpcMetrics>,
    /// What etcd's interceptors check (`interceptor.rs`).
    pub gate: crate::interceptor::Gate,
    /// How `/health` answered (`http.rs`).
    pub health: std::sync::Arc<crate::http::HealthCounts>,
}

impl Context {
    pub fn header(&self, revision: i64) -> pb::ResponseHeader {
        pb::ResponseHeader {
            cluster_id: self.member.cluster_id,
            member_id: self.member.id,
            revision,
            raft_term: self.anchor.term(),
        }
    }

    /// Serves a client's request, once the quota and the alarms allow it (`quota.rs`).
    pub async fn call(&self, request: Request) -> Result<Reply, Status> {
        self.quota.check(&self.router, &request).await?;
        self.router.call(request).await.map_err(route_error)
    }

    /// Serves a request of `caller` once auth permits it (`auth.rs`), then as [`Context::call`].
    pub async fn call_as(
        &self,
        caller: &crate::auth::Caller,
        request: Request,
    ) -> Result<Reply, Status> {
        self.auth
            .check_request(&self.router, caller, &request)
            .await?;
        self.call(request).await
    }

    /// The caller a gRPC request's metadata names (its token).
    pub async fn caller(
        &self,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<crate::auth::Caller, Status> {
        self.auth.caller(metadata).await
    }

    /// etcd refuses a write whose encoded request exceeds `--max-request-bytes`.
    pub fn check_size(&self, encoded_len: usize) -> Result<(), Status> {
        if encoded_len > self.limits.max_request_bytes {
            return Err(status::request_too_large());
        }
        Ok(())
    }

    pub fn pb_member(&self) -> pb::Member {
        pb::Member {
            id: self.member.id,
            name: self.member.name.clone(),
            peer_ur_ls: self.member.peer_urls.clone(),
            client_ur_ls: self.member.client_urls.clone(),
            is_learner: false,
        }
    }
}

/// A routing error as the client sees it: a shard's error as etcd's, a request over several
/// shards that must be atomic as FailedPrecondition.
pub fn route_error(err: RouteError) -> Status {
    match err {
        RouteError::Shard { source, .. } => shard_error(source),
        cross @ RouteError::CrossShard { .. } => Status::failed_precondition(cross.to_string()),
    }
}

/// A shard's error as the client sees it.
pub fn shard_error(err: ShardError) -> Status {
    match err {
        ShardError::Engine(err) => status::from_engine(&err),
        ShardError::NotLeader { leader_id: None } => status::no_leader(),
        ShardError::NotLeader { .. } => status::not_leader(),
        ShardError::Timeout => status::request_timeout(),
        ShardError::Membership(err) => status::membership(&err),
        ShardError::Failed { cause } => status::shard_failed(&cause),
        _ => status::shard_stopped(),
    }
}
