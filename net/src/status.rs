//! The one mapping from Ballast's domain errors to etcd's gRPC status codes and exact messages
//! (etcd's `rpctypes`). Clients match on these strings (clientv3 turns them back into typed
//! errors), so every message here is etcd's, byte for byte.

use ballast_engine::Error as EngineError;
use tonic::{Code, Status};

pub const REQUEST_TOO_LARGE: &str = "etcdserver: request is too large";
pub const NOT_CAPABLE: &str = "etcdserver: not capable";
pub const SHARD_STOPPED: &str = "etcdserver: server stopped";
pub const NO_SPACE: &str = "etcdserver: mvcc: database space exceeded";
pub const CORRUPT: &str = "etcdserver: corrupt cluster";

/// etcd's auth errors (`rpctypes.ErrGRPC*`): the message is the error's text.
pub fn auth(err: ballast_consensus::AuthError) -> Status {
    use ballast_consensus::AuthError as A;
    let code = match err {
        A::UserEmpty | A::RoleEmpty | A::AuthFailed | A::InvalidAuthMgmt | A::AuthOldRevision => {
            Code::InvalidArgument
        }
        A::PermissionDenied => Code::PermissionDenied,
        A::InvalidAuthToken => Code::Unauthenticated,
        _ => Code::FailedPrecondition,
    };
    Status::new(code, err.to_string())
}

/// `Authenticate` as a user added with `--no-password`: etcd 3.4.23 answers its auth
/// package's own error, not turned into a gRPC one, so code Unknown (checked with etcdctl
/// `--user carol:x` against etcd 3.4.23).
pub fn no_password_user() -> Status {
    Status::unknown("auth: authentication failed, password was given for no password user")
}

/// A JWT that could not be signed: on a member with only the public key, etcd 3.4.23 answers
/// Authenticate with its auth package's error unconverted, code Unknown (checked against it).
pub fn jwt_mint(err: &crate::jwt::MintError) -> Status {
    Status::unknown(err.to_string())
}

/// An auth error as etcd 3.4's maintenance server returns it: not turned into its gRPC
/// error, so gRPC reports code Unknown with the auth package's own text.
pub fn auth_unconverted(err: ballast_consensus::AuthError) -> Status {
    use ballast_consensus::AuthError as A;
    let text = match err {
        A::UserEmpty => "auth: user name is empty",
        A::UserNotFound => "auth: user not found",
        A::PermissionDenied => "auth: permission denied",
        A::InvalidAuthToken => "auth: invalid auth token",
        other => return Status::unknown(other.to_string().replace("etcdserver: ", "auth: ")),
    };
    Status::unknown(text)
}

pub fn from_engine(err: &EngineError) -> Status {
    let (code, msg) = match err {
        EngineError::EmptyKey => (Code::InvalidArgument, "etcdserver: key is not provided"),
        EngineError::KeyNotFound => (Code::InvalidArgument, "etcdserver: key not found"),
        EngineError::ValueProvided => (Code::InvalidArgument, "etcdserver: value is provided"),
        EngineError::LeaseProvided => (Code::InvalidArgument, "etcdserver: lease is provided"),
        EngineError::DuplicateKey => (
            Code::InvalidArgument,
            "etcdserver: duplicate key given in txn request",
        ),
        EngineError::TooManyOps { .. } => (
            Code::InvalidArgument,
            "etcdserver: too many operations in txn request",
        ),
        EngineError::InvalidSortOption => {
            (Code::InvalidArgument, "etcdserver: invalid sort option")
        }
        EngineError::Compacted { .. } => (
            Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted",
        ),
        EngineError::FutureRevision { .. } => (
            Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision",
        ),
        EngineError::LeaseNotFound { .. } => {
            (Code::NotFound, "etcdserver: requested lease not found")
        }
        EngineError::LeaseExists { .. } => {
            (Code::FailedPrecondition, "etcdserver: lease already exists")
        }
        EngineError::LeaseTtlTooLarge { .. } => {
            (Code::OutOfRange, "etcdserver: too large lease TTL")
        }
        other => return from_unmapped(other),
    };
    Status::new(code, msg)
}

/// Engine errors added after this table was written: their Display text is etcd's message.
fn from_unmapped(err: &EngineError) -> Status {
    let text = err.to_string();
    let msg = if text.starts_with("etcdserver: ") {
        text
    } else {
        format!("etcdserver: {text}")
    };
    Status::new(Code::InvalidArgument, msg)
}

pub fn request_too_large() -> Status {
    Status::invalid_argument(REQUEST_TOO_LARGE)
}

/// etcd's `ErrGRPCNoSpace`: the storage quota is reached, or a NOSPACE alarm is in force.
pub fn no_space() -> Status {
    Status::resource_exhausted(NO_SPACE)
}

/// etcd's `ErrGRPCCorrupt`: a CORRUPT alarm is in force.
pub fn corrupt() -> Status {
    Status::data_loss(CORRUPT)
}

pub fn not_leader() -> Status {
    Status::unavailable("etcdserver: not leader")
}

/// A `MoveLeader` that did not move the leadership, with etcd's code and text.
pub fn transfer(err: &ballast_consensus::TransferError) -> Status {
    use ballast_consensus::TransferError as E;
    match err {
        E::NotLeader | E::BadTransferee => Status::failed_precondition(err.to_string()),
        E::TookTooLong => Status::unavailable(err.to_string()),
        E::Stopped => shard_stopped(),
    }
}

/// etcd's `ErrGPRCNotSupportedForLearner`: a learner serves only Status and serializable
/// Ranges.
pub fn not_supported_for_learner() -> Status {
    Status::unavailable("etcdserver: rpc not supported for learner")
}

/// etcd's `ErrGRPCNoLeader`: no leader is known within the request timeout.
pub fn no_leader() -> Status {
    Status::unavailable("etcdserver: no leader")
}

/// etcd's `ErrGRPCTimeout`: the request was sent and no answer came; it may have taken effect.
pub fn request_timeout() -> Status {
    Status::unavailable("etcdserver: request timed out")
}

/// A refused membership change, with etcd's code and text.
pub fn membership(err: &ballast_consensus::MembershipError) -> Status {
    use ballast_consensus::MembershipError as E;
    match err {
        E::NotFound => Status::not_found(err.to_string()),
        _ => Status::failed_precondition(err.to_string()),
    }
}

pub fn shard_stopped() -> Status {
    Status::unavailable(SHARD_STOPPED)
}

/// A shard that stopped after a storage failure (fail-stop): nothing is served until the
/// process restarts and recovers from disk. etcd itself would exit; the code is the one
/// clients retry elsewhere on.
pub fn shard_failed(cause: &str) -> Status {
    Status::unavailable(format!(
        "etcdserver: ballast shard stopped after a storage failure: {cause}"
    ))
}

/// The shard answered with a response of another kind than the request: a broken invariant
/// reported to the client rather than a panic in the server.
pub fn unexpected_reply(method: &str) -> Status {
    Status::internal(format!(
        "ballast: the shard answered {method} with another response kind"
    ))
}

/// A method whose feature is not built yet: said plainly, never answered with made-up data.
pub fn not_built(method: &str) -> Status {
    Status::unimplemented(format!("ballast: {method} is not implemented yet"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compacted_and_future_carry_etcds_prefix_and_code() {
        let s = from_engine(&EngineError::Compacted {
            compact_revision: 3,
        });
        assert_eq!(s.code(), Code::OutOfRange);
        assert_eq!(
            s.message(),
            "etcdserver: mvcc: required revision has been compacted"
        );
        let s = from_engine(&EngineError::FutureRevision {
            revision: 9,
            current: 2,
        });
        assert_eq!(s.code(), Code::OutOfRange);
        assert_eq!(
            s.message(),
            "etcdserver: mvcc: required revision is a future revision"
        );
    }

    #[test]
    fn lease_errors_use_etcds_codes() {
        assert_eq!(
            from_engine(&EngineError::LeaseNotFound { lease_id: 1 }).code(),
            Code::NotFound
        );
        assert_eq!(
            from_engine(&EngineError::LeaseExists { lease_id: 1 }).code(),
            Code::FailedPrecondition
        );
    }
}
