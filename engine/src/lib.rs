//! ballast-engine: one shard's state. It owns etcd's revision model (MVCC key index and history),
//! leases and the rules of every KV request, and knows nothing of Raft, gRPC or any runtime:
//! callers pass requests in, and get responses, the header revision and watch events back.
//! Time (for lease expiry) is injected as monotonic milliseconds.

pub mod error;
pub mod types;

pub use error::{Error, Result};
pub use types::*;
