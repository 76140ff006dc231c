//! The way a shard's Raft group reaches its peers: openraft's `RaftNetworkFactory` over a seam of
//! our own, [`PeerTransport`]. A single-node group uses [`NoPeers`], which refuses every RPC (it
//! never sends one). A node of a cluster uses [`ChannelTransport`]: each message is encoded
//! (`wire.rs`) on the shard's thread and handed as an [`Outbound`] to the node's peer hub (in
//! `net`, on the tokio side), which keeps one multiplexed connection per peer carrying every
//! shard's messages (design.md §3) and hands the encoded answer back on a oneshot. The same
//! channel carries requests a follower forwards to its shard's leader ([`PeerKind::Forward`])
//! and the read index a follower asks it for ([`PeerKind::ReadIndex`]).
//!
//! Invariants: every message names its shard, so one transport serves all shards of a node; a
//! call is answered by `target`'s replica of that shard or fails (openraft then backs off and
//! retries); a call never outlives its deadline.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;

use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::impls::BasicNode;
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse};
use openraft::raft::{TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse};
use openraft::{RaftNetworkV2, Snapshot};

use crate::log_store::LocalFuture;
use crate::state_machine::SnapshotData;
use crate::types::{CommittedLeaderId, NodeId, ShardId, ShardRaft, Vote};
use crate::wire;

pub type ShardSnapshot = Snapshot<CommittedLeaderId, NodeId, BasicNode, SnapshotData>;
/// Resolves when the snapshot transfer is no longer wanted.
pub type CancelTransfer = Pin<Box<dyn Future<Output = ReplicationClosed>>>;

/// Sends one shard's Raft messages to a peer node and returns its answers.
///
/// Contract: a call answers for `target`'s replica of `shard` or fails with an `RPCError`
/// (`Unreachable` when the peer cannot be reached: openraft then backs off); it never answers
/// for another shard or node. Calls may be in flight concurrently; each is independent.
pub trait PeerTransport: 'static {
    /// `target`'s address, as the membership names it (called before the first message to it).
    fn learn(&self, _target: NodeId, _addr: &str) {}

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

    /// Pre-Vote: asks whether `target` would grant `rpc.vote`. A transport that cannot reach
    /// the target fails (an unreachable peer never counts as granting).
    fn pre_vote(
        &self,
        shard: ShardId,
        target: NodeId,
        rpc: VoteRequest<ShardRaft>,
        option: RPCOption,
    ) -> LocalFuture<Result<VoteResponse<ShardRaft>, RPCError<ShardRaft>>> {
        let _ = (shard, rpc, option);
        Box::pin(std::future::ready(Err(no_peer(target).into())))
    }

    /// Tells `target` that this leader hands leadership to `rpc.to_node_id()` (openraft's
    /// transfer: the named node campaigns at once, the others stop trusting the old lease).
    fn transfer_leader(
        &self,
        shard: ShardId,
        target: NodeId,
        rpc: TransferLeaderRequest<ShardRaft>,
        option: RPCOption,
    ) -> LocalFuture<Result<TransferLeaderResponse<ShardRaft>, RPCError<ShardRaft>>> {
        let _ = (shard, rpc, option);
        Box::pin(std::future::ready(Err(no_peer(target).into())))
    }
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

/// What a message between nodes is; the answer is of the matching kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum PeerKind {
    /// Raft AppendEntries (`wire::encode_append`), answered with its response.
    Append = 1,
    /// Raft RequestVote (`wire::encode_vote`), answered with its response.
    Vote = 2,
    /// Raft Pre-Vote (`wire::encode_vote`): would the peer grant this vote? Answered with a
    /// vote response; nothing is persisted.
    PreVote = 4,
    /// A client request a follower forwards to its shard's leader (`wire::encode_request`),
    /// answered with the leader's `Result<Reply, ShardError>` (`wire::encode_answer`). The
    /// receiver serves it itself or refuses with `NotLeader`; it never forwards it again.
    Forward = 3,
    /// One chunk of a snapshot for a follower behind the leader's purged log
    /// (`wire::encode_snapshot_chunk`, `snapshot.rs`), answered with `wire::encode_snapshot_answer`.
    Snapshot = 5,
    /// A leader hands leadership on (`wire::encode_transfer_leader`), answered with
    /// `wire::encode_transfer_answer`.
    TransferLeader = 6,
    /// Which members does the peer's committed membership name, at which log id? (empty body,
    /// answered with `wire::encode_members_answer`): how a member learns it was removed.
    Members = 7,
    /// A follower asks its shard's leader for a read index (`wire::encode_read_index`), to
    /// serve a linearizable read from its own store once it has applied up to it (Raft thesis
    /// §6.4); answered with `wire::encode_read_index_answer`: openraft's read log id, after
    /// the leader confirmed its leadership with a quorum, or `NotLeader`. A member that does
    /// not know this kind (an older version) refuses it as unknown; the follower then forwards
    /// the read (`Forward`).
    ReadIndex = 8,
}

impl PeerKind {
    pub fn from_u8(b: u8) -> Option<PeerKind> {
        match b {
            1 => Some(PeerKind::Append),
            2 => Some(PeerKind::Vote),
            3 => Some(PeerKind::Forward),
            5 => Some(PeerKind::Snapshot),
            4 => Some(PeerKind::PreVote),
            6 => Some(PeerKind::TransferLeader),
            7 => Some(PeerKind::Members),
            8 => Some(PeerKind::ReadIndex),
            _ => None,
        }
    }
}

/// Why a message got no answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PeerFailure {
    /// The peer could not be reached (connect failed, connection lost before the answer).
    #[error("peer {addr} unreachable: {why}")]
    Unreachable { addr: String, why: String },
    /// The connection was lost after the message was sent: it may have been handled.
    #[error("peer {addr}: connection lost before the answer: {why}")]
    Lost { addr: String, why: String },
    /// No answer before the deadline.
    #[error("peer {addr} did not answer within {after:?}")]
    Timeout { addr: String, after: Duration },
    /// The peer received the message and could not handle it (e.g. its shard is not running).
    #[error("peer {addr} refused: {why}")]
    Refused { addr: String, why: String },
}

/// A message for the peer hub to deliver: to the node at `addr` (its peer URL), for its
/// replica of `shard`; the encoded answer (or why there is none) goes to `reply`. The hub
/// drops a message whose deadline passed and answers it with `Timeout`.
#[derive(Debug)]
pub struct Outbound {
    pub addr: String,
    pub shard: ShardId,
    pub kind: PeerKind,
    pub body: Bytes,
    pub timeout: Duration,
    pub reply: oneshot::Sender<Result<Bytes, PeerFailure>>,
}

/// The transport of a node in a cluster: messages go to the peer hub over a channel.
#[derive(Clone)]
pub struct ChannelTransport {
    tx: flume::Sender<Outbound>,
}

impl ChannelTransport {
    pub fn new(tx: flume::Sender<Outbound>) -> ChannelTransport {
        ChannelTransport { tx }
    }

    /// Sends one message and waits for its answer (at most `timeout`).
    pub async fn send(
        &self,
        addr: &str,
        shard: ShardId,
        kind: PeerKind,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, PeerFailure> {
        let (reply, answer) = oneshot::channel();
        let gone = || PeerFailure::Unreachable {
            addr: addr.to_owned(),
            why: "the peer hub stopped".to_owned(),
        };
        self.tx
            .send_async(Outbound {
                addr: addr.to_owned(),
                shard,
                kind,
                body,
                timeout,
                reply,
            })
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

fn rpc_failure(target: NodeId, failure: PeerFailure) -> RPCError<ShardRaft> {
    match failure {
        PeerFailure::Refused { .. } => NetworkError::from_string(failure).into(),
        _ => Unreachable::from_string(format!("node {target:x}: {failure}")).into(),
    }
}

fn bad_answer(target: NodeId, err: wire::WireError) -> RPCError<ShardRaft> {
    NetworkError::from_string(format!(
        "node {target:x} answered something unreadable: {err}"
    ))
    .into()
}

/// The transport of a node in a cluster over [`ChannelTransport`], for openraft: `target`'s
/// address comes from the membership (the node's `BasicNode::addr`, its peer URL).
struct ClusterPeers {
    channel: ChannelTransport,
    addrs: std::cell::RefCell<std::collections::HashMap<NodeId, String>>,
}

impl ClusterPeers {
    fn addr(&self, target: NodeId) -> Result<String, RPCError<ShardRaft>> {
        self.addrs.borrow().get(&target).cloned().ok_or_else(|| {
            Unreachable::from_string(format!("node {target:x} has no known address")).into()
        })
    }
}

impl ClusterPeers {
    /// Sends one encoded Raft message of `kind` to `target` and decodes its answer.
    fn ask<T: 'static>(
        &self,
        shard: ShardId,
        target: NodeId,
        kind: PeerKind,
        body: Bytes,
        option: RPCOption,
        decode: fn(&[u8]) -> Result<T, wire::WireError>,
    ) -> LocalFuture<Result<T, RPCError<ShardRaft>>> {
        let addr = self.addr(target);
        let channel = self.channel.clone();
        Box::pin(async move {
            let answer = channel
                .send(&addr?, shard, kind, body, option.hard_ttl())
                .await
                .map_err(|f| rpc_failure(target, f))?;
            decode(&answer).map_err(|e| bad_answer(target, e))
        })
    }
}

/// The [`PeerTransport`] of a cluster node over `channel`.
pub fn cluster_transport(channel: ChannelTransport) -> Rc<dyn PeerTransport> {
    Rc::new(ClusterPeers {
        channel,
        addrs: Default::default(),
    })
}

impl PeerTransport for ClusterPeers {
    fn learn(&self, target: NodeId, addr: &str) {
        self.addrs.borrow_mut().insert(target, addr.to_owned());
    }

    fn append_entries(
        &self,
        shard: ShardId,
        target: NodeId,
        rpc: AppendEntriesRequest<ShardRaft>,
        option: RPCOption,
    ) -> LocalFuture<Result<AppendEntriesResponse<ShardRaft>, RPCError<ShardRaft>>> {
        let body = wire::encode_append(&rpc);
        let decode = wire::decode_append_response;
        self.ask(shard, target, PeerKind::Append, body, option, decode)
    }

    fn vote(
        &self,
        shard: ShardId,
        target: NodeId,
        rpc: VoteRequest<ShardRaft>,
        option: RPCOption,
    ) -> LocalFuture<Result<VoteResponse<ShardRaft>, RPCError<ShardRaft>>> {
        let body = wire::encode_vote(&rpc);
        let decode = wire::decode_vote_response;
        self.ask(shard, target, PeerKind::Vote, body, option, decode)
    }

    fn pre_vote(
        &self,
        shard: ShardId,
        target: NodeId,
        rpc: VoteRequest<ShardRaft>,
        option: RPCOption,
    ) -> LocalFuture<Result<VoteResponse<ShardRaft>, RPCError<ShardRaft>>> {
        let body = wire::encode_vote(&rpc);
        let decode = wire::decode_vote_response;
        self.ask(shard, target, PeerKind::PreVote, body, option, decode)
    }

    fn transfer_leader(
        &self,
        shard: ShardId,
        target: NodeId,
        rpc: TransferLeaderRequest<ShardRaft>,
        option: RPCOption,
    ) -> LocalFuture<Result<TransferLeaderResponse<ShardRaft>, RPCError<ShardRaft>>> {
        let body = wire::encode_transfer_leader(&rpc);
        let decode = wire::decode_transfer_answer;
        self.ask(
            shard,
            target,
            PeerKind::TransferLeader,
            body,
            option,
            decode,
        )
    }

    fn full_snapshot(
        &self,
        shard: ShardId,
        target: NodeId,
        vote: Vote,
        snapshot: ShardSnapshot,
        cancel: CancelTransfer,
        option: RPCOption,
    ) -> LocalFuture<Result<SnapshotResponse<ShardRaft>, StreamingError<ShardRaft>>> {
        let addr = self.addrs.borrow().get(&target).cloned();
        let channel = self.channel.clone();
        Box::pin(async move {
            let Some(addr) = addr else {
                return Err(Unreachable::from_string(format!(
                    "node {target:x} has no known address"
                ))
                .into());
            };
            crate::snapshot::send(channel, addr, shard, target, vote, snapshot, cancel, option)
                .await
        })
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

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        self.transport.learn(target, &node.addr);
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

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<ShardRaft>,
        option: RPCOption,
    ) -> Result<VoteResponse<ShardRaft>, RPCError<ShardRaft>> {
        self.transport
            .pre_vote(self.shard, self.target, rpc, option)
            .await
    }

    async fn transfer_leader(
        &mut self,
        rpc: TransferLeaderRequest<ShardRaft>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<ShardRaft>, RPCError<ShardRaft>> {
        self.transport
            .transfer_leader(self.shard, self.target, rpc, option)
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
