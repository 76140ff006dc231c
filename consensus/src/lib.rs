//! ballast-consensus: runs shards over the engine. A shard is one thread that owns its
//! `ballast_engine::Store` and applies commands in arrival order; callers reach it through a
//! bounded channel ([`ShardHandle`]) and get answers on oneshots. Watchers of the shard are
//! registered here ([`watchers`]) and fed from the events every write produces.
//!
//! This is the single-node runtime of the API issue: commands are applied directly. Raft per
//! shard (openraft) slots in between the handle and the apply step without changing callers.

pub mod shard;
pub mod watchers;

pub use shard::{Reply, Request, Response, ShardConfig, ShardError, ShardHandle, ShardStatus};
pub use watchers::{StreamId, WatchCreate, WatchMessage};
