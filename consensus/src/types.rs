//! The Raft vocabulary of a shard: openraft's type configuration ([`ShardRaft`]), the ids, and
//! the responder that hands a write's result straight back to its caller.
//!
//! Choices and why:
//! - Standard Raft leader ids (one leader per term, as etcd's raft): a committed leader id is
//!   then just the term, so a log id is `(term, index)` — exactly what the WAL stores.
//! - The node is a `BasicNode { addr }`: the peer transport (next issue) dials `addr`.
//! - The responder is a boxed closure ([`FnResponder`]), so a write proposed with
//!   `client_write_ff` is answered from the apply step without a task waiting per write.

use std::fmt;

use ballast_engine::Error as EngineError;
use openraft::impls::{BasicNode, BoxedErrorSource, InlineBatch};
use openraft::raft::responder::Responder;
use openraft::{OptionalSend, RaftTypeConfig};

use crate::codec::LogCommand;
use crate::runtime::GlommioRuntime;
use crate::shard::Reply;

/// Identifies a shard within the cluster: one Raft group, one slice of the keyspace. Shard 0
/// holds every key outside the partition map and the cluster metadata (design.md §4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardId(pub u32);

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shard-{}", self.0)
    }
}

/// A member of the cluster (etcd's member id). Every shard's Raft group on a node uses the
/// node's id.
pub type NodeId = u64;

/// What applying one log entry answers: the reply, or the engine's refusal (a refused write
/// still takes its log index; it changes nothing).
pub type ApplyResult = Result<Reply, EngineError>;

/// openraft's type configuration for a shard's Raft group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct ShardRaft;

pub type LeaderId = openraft::impls::leader_id_std::LeaderId<u64, NodeId>;
pub type CommittedLeaderId = <LeaderId as openraft::vote::RaftLeaderId>::Committed;
pub type Vote = openraft::impls::Vote<LeaderId>;
pub type LogId = openraft::LogId<CommittedLeaderId>;
pub type Payload = openraft::EntryPayload<LogCommand, NodeId, BasicNode>;
pub type Entry = openraft::Entry<CommittedLeaderId, Payload>;
pub type Membership = openraft::Membership<NodeId, BasicNode>;
pub type StoredMembership = openraft::StoredMembership<CommittedLeaderId, NodeId, BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<CommittedLeaderId, NodeId, BasicNode>;
pub type Raft = openraft::Raft<ShardRaft, crate::state_machine::ShardStateMachine>;

impl RaftTypeConfig for ShardRaft {
    type D = LogCommand;
    type R = ApplyResult;
    type NodeId = NodeId;
    type Node = BasicNode;
    type Term = u64;
    type LeaderId = LeaderId;
    type Vote = Vote;
    type Payload = Payload;
    type Entry = Entry;
    type AsyncRuntime = GlommioRuntime;
    type Responder<T>
        = FnResponder<T>
    where
        T: OptionalSend + 'static;
    type Batch<T>
        = InlineBatch<T>
    where
        T: OptionalSend + 'static;
    type ErrorSource = BoxedErrorSource;
}

/// Answers a proposal by calling a closure with its result (on the shard's thread).
pub struct FnResponder<T> {
    complete: Box<dyn FnOnce(T)>,
}

impl<T> FnResponder<T> {
    pub fn new(complete: impl FnOnce(T) + 'static) -> FnResponder<T> {
        FnResponder {
            complete: Box::new(complete),
        }
    }
}

impl<T: OptionalSend + 'static> Responder<ShardRaft, T> for FnResponder<T> {
    fn on_complete(self, result: T) {
        (self.complete)(result)
    }
}
