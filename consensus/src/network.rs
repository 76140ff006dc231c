//! The way a shard's Raft group reaches its peers: openraft's `RaftNetworkFactory` over a seam of
//! our own, [`PeerTransport`]. The peer transport of the next issue (one multiplexed stream per
//! node pair carrying every shard's messages, design.md §3) implements that trait; until then
//! [`NoPeers`] refuses every RPC, which a single-node group never sends.
//!
//! Invariant: every message names its shard, so one transport serves all shards of a node.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use openraft::error::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::impls::BasicNode;
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse};
use openraft::raft::{VoteRequest, VoteResponse};
use openraft::{RaftNetworkV2, Snapshot};

use crate::log_store::LocalFuture;
use crate::state_machine::SnapshotData;
use crate::types::{CommittedLeaderId, NodeId, ShardId, ShardRaft, Vote};

pub type ShardSnapshot = Snapshot<CommittedLeaderId, NodeId, BasicNode, SnapshotData>;
/// Resolves when the snapshot transfer is no longer wanted.
pub type CancelTransfer = Pin<Box<dyn Future<Output = ReplicationClosed>>>;

/// Sends one shard's Raft messages to a peer node and returns its answers.
///
/// Contract: a call answers for `target`'s replica of `shard` or fails with an `RPCError`
/// (`Unreachable` when the peer cannot be reached: openraft then backs off); it never answers
/// for another shard or node. Calls may be in flight concurrently; each is independent.
pub trait PeerTransport: 'static {
    fn append_entries(
        &self,
        shard: ShardId,
        target: NodeId,
        rpc: AppendEntriesRequest<ShardRaft>,
        option: RPCOption,
    ) -> LocalFuture<Result<AppendEntriesResponse<ShardRaft>, RPCError<ShardRaft>>>;

    fn vote(
        &self,
        shard: ShardId,
        target: NodeId,
        rpc: VoteRequest<ShardRaft>,
        option: RPCOption,
    ) -> LocalFuture<Result<VoteResponse<ShardRaft>, RPCError<ShardRaft>>>;

    fn full_snapshot(
        &self,
        shard: ShardId,
        target: NodeId,
        vote: Vote,
        snapshot: ShardSnapshot,
        cancel: CancelTransfer,
        option: RPCOption,
    ) -> LocalFuture<Result<SnapshotResponse<ShardRaft>, StreamingError<ShardRaft>>>;
}

/// The transport of a single-node cluster: there is nobody to talk to.
pub struct NoPeers;

fn no_peer(target: NodeId) -> Unreachable<ShardRaft> {
    Unreachable::from_string(format!(
        "node {target:x}: this node has no peer transport (single-node cluster)"
    ))
}

impl PeerTransport for NoPeers {
    fn append_entries(
        &self,
        _shard: ShardId,
        target: NodeId,
        _rpc: AppendEntriesRequest<ShardRaft>,
        _option: RPCOption,
    ) -> LocalFuture<Result<AppendEntriesResponse<ShardRaft>, RPCError<ShardRaft>>> {
        Box::pin(std::future::ready(Err(no_peer(target).into())))
    }

    fn vote(
        &self,
        _shard: ShardId,
        target: NodeId,
        _rpc: VoteRequest<ShardRaft>,
        _option: RPCOption,
    ) -> LocalFuture<Result<VoteResponse<ShardRaft>, RPCError<ShardRaft>>> {
        Box::pin(std::future::ready(Err(no_peer(target).into())))
    }

    fn full_snapshot(
        &self,
        _shard: ShardId,
        target: NodeId,
        _vote: Vote,
        _snapshot: ShardSnapshot,
        _cancel: CancelTransfer,
        _option: RPCOption,
    ) -> LocalFuture<Result<SnapshotResponse<ShardRaft>, StreamingError<ShardRaft>>> {
        Box::pin(std::future::ready(Err(no_peer(target).into())))
    }
}

/// openraft's network factory for one shard over a shared [`PeerTransport`].
pub struct Network {
    shard: ShardId,
    transport: Rc<dyn PeerTransport>,
}

impl Network {
    pub fn new(shard: ShardId, transport: Rc<dyn PeerTransport>) -> Network {
        Network { shard, transport }
    }
}

/// The client for one peer.
pub struct PeerClient {
    shard: ShardId,
    target: NodeId,
    transport: Rc<dyn PeerTransport>,
}

impl RaftNetworkFactory<ShardRaft> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> PeerClient {
        PeerClient {
            shard: self.shard,
            target,
            transport: self.transport.clone(),
        }
    }
}

impl RaftNetworkV2<ShardRaft> for PeerClient {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<ShardRaft>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<ShardRaft>, RPCError<ShardRaft>> {
        self.transport
            .append_entries(self.shard, self.target, rpc, option)
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<ShardRaft>,
        option: RPCOption,
    ) -> Result<VoteResponse<ShardRaft>, RPCError<ShardRaft>> {
        self.transport
            .vote(self.shard, self.target, rpc, option)
            .await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: ShardSnapshot,
        cancel: impl Future<Output = ReplicationClosed> + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<ShardRaft>, StreamingError<ShardRaft>> {
        self.transport
            .full_snapshot(
                self.shard,
                self.target,
                vote,
                snapshot,
                Box::pin(cancel),
                option,
            )
            .await
    }
}
