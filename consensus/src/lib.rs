//! ballast-consensus: runs shards. A shard is one Raft group (openraft) whose state machine is
//! one `ballast_engine::Store`; it lives on a glommio executor thread (a "shard core") and is
//! reached from any thread through a bounded channel ([`ShardHandle`]), answers coming back on
//! oneshots. Watchers of the shard are registered here ([`watchers`]) and fed at apply time.
//!
//! Modules: [`shard`] (handle, request routing, the core's loop), [`state_machine`] (apply,
//! snapshots), [`log_store`] (openraft's log storage over the [`log_store::LogBackend`] seam,
//! in memory or on the engine's WAL), [`durable`] (a shard's WAL and page-log image, checkpoints), [`network`] (the [`network::PeerTransport`] seam; a
//! single node refuses), [`runtime`] (openraft's runtime over glommio — with `engine::io`'s
//! glommio crate, the only code naming glommio), [`codec`] (the log entry payload and its
//! encoding), [`types`] (openraft's type configuration, `ShardId`), [`stages`] (where a write's
//! time goes inside the shard: propose, log, commit, apply), [`wire`] (what nodes send each
//! other, encoded: Raft's messages, forwarded requests and their answers), [`snapshot`] (a
//! snapshot sent to a follower behind the leader's purged log, and received), [`alarms`]
//! (etcd's alarm table, held by shard 0, and the node's view of it), [`auth`] (etcd's
//! users, roles and permissions, held by shard 0, and the node's view and simple tokens).

pub mod alarms;
pub mod auth;
pub mod codec;
pub mod durable;
pub mod log_store;
pub mod membership;
pub mod network;
pub mod op_counts;
pub mod placement;
pub mod runtime;
pub mod seed;
pub mod shard;
pub mod snapshot;
pub mod stages;
pub mod state_machine;
pub mod stats;
pub mod types;
pub mod watchers;
pub mod wire;

pub use alarms::{AlarmAction, AlarmMember, AlarmTable, AlarmType, NodeAlarms};
pub use auth::{AuthAnswer, AuthCommand, AuthError, AuthOutcome, AuthState, NodeAuth};
pub use codec::LogCommand;
pub use membership::{MembershipChange, MembershipError};
pub use network::{Outbound, PeerFailure, PeerKind};
pub use placement::{Anchor, TransferError};
pub use shard::{
    ClusterConfig, LeaseExpiry, RaftMember, Reply, Request, Response, ServedFigures, ShardConfig,
    ShardError, ShardHandle, ShardStatus,
};
pub use types::{NodeId, ShardId};
pub use watchers::{StreamId, WatchCreate, WatchMessage};
