//! ballast-engine: one shard's state. It owns etcd's revision model (MVCC key index and history),
//! leases and the rules of every KV request, and knows nothing of Raft, gRPC or any runtime:
//! callers pass requests in, and get responses, the header revision and watch events back.
//! Time (for lease expiry) is injected as monotonic milliseconds.
//!
//! Entry points: [`Store`] (apply requests), [`validate`] (the API-layer checks etcd makes
//! before consensus) and [`watch`] (matching events to one watcher's filter).

pub mod btree;
pub mod error;
pub mod histogram;
pub mod io;
mod keys;
pub mod lease;
pub mod mvcc;
pub mod types;
pub mod validate;
pub mod wal;
pub mod watch;

pub use error::{Error, Result};
pub use lease::{LeaseTimeToLive, DEFAULT_MIN_LEASE_TTL_SECS, MAX_LEASE_TTL_SECS};
pub use mvcc::{sort_range_kvs, Store};
pub use types::*;
pub use watch::WatchFilter;
