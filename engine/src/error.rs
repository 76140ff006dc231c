//! The engine's errors. Each variant is an expected condition a client can cause; `net` maps
//! each to etcd's gRPC code and exact message (the `Display` text here is etcd's message).

use crate::types::{LeaseId, Revision};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// The text etcd's clients see on the wire (`rpctypes.ErrGRPCCompacted`), which clientv3 and
    /// Kubernetes match on; the mvcc layer's own text lacks the `etcdserver: ` prefix.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted { compact_revision: Revision },
    /// Wire text, as for `Compacted`.
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision {
        revision: Revision,
        current: Revision,
    },
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
    /// etcd 3.4's exact text (checked against the reference server).
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge { ttl: i64 },
    /// A put with `ignore_value` that also carries a value.
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// A put with `ignore_lease` that also carries a lease.
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    #[error("etcdserver: invalid sort option")]
    InvalidSortOption,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
