//! The engine's errors. Each variant is an expected condition a client can cause; `net` maps
//! each to etcd's gRPC code and exact message (the `Display` text here is etcd's message).

use crate::types::{LeaseId, Revision};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    #[error("mvcc: required revision has been compacted")]
    Compacted { compact_revision: Revision },
    #[error("mvcc: required revision is a future revision")]
    FutureRevision { revision: Revision, current: Revision },
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps { ops: usize, max: usize },
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound { lease_id: LeaseId },
    #[error("etcdserver: lease already exists")]
    LeaseExists { lease_id: LeaseId },
    #[error("etcdserver: lease TTL is too large")]
    LeaseTtlTooLarge { ttl: i64 },
    #[error("etcdserver: invalid sort option")]
    InvalidSortOption,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
