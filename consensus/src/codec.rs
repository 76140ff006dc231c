//! The log entry payload of a shard — [`LogCommand`], the writes a Raft log carries — and its
//! binary encoding. The engine's request types know nothing of encodings, so the format lives
//! here, written by hand.
//!
//! Format (all integers little-endian):
//! ```text
//! command  = version:u8 (= COMMAND_FORMAT_VERSION) tag:u8 body
//! tag 1 Put          put_request
//! tag 2 DeleteRange  delete_range_request
//! tag 3 Txn          txn_request
//! tag 4 Compact      revision:i64
//! tag 5 LeaseGrant   id:i64 ttl:i64
//! tag 6 LeaseRevoke  id:i64
//! tag 7 Advance      to:i64       (added after 1–6 within version 1: a log holding only
//!                                  tags 1–6 decodes as before; a decoder older than tag 7
//!                                  refuses it as an unknown tag)
//! tag 8 Alarm        action:u8 (0 get, 1 activate, 2 deactivate) member_id:u64 alarm:i32
//!                                 (added after 7, in the same way; only shard 0's log
//!                                  carries it, and only activate/deactivate)
//! tag 9 Auth         by:bytes auth_command (added after 8, in the same way; shard 0 only:
//!                                  an auth change or authentication, `auth.rs`)
//! auth_command         = tag:u8 body: 0 Enable | 1 Disable
//!                        | 2 UserAdd name:bytes hash:bytes no_password:bool
//!                        | 3 UserDelete name:bytes | 4 UserChangePassword name:bytes hash:bytes
//!                        | 5 UserGrantRole user:bytes role:bytes
//!                        | 6 UserRevokeRole name:bytes role:bytes | 7 RoleAdd name:bytes
//!                        | 8 RoleDelete name:bytes
//!                        | 9 RoleGrantPermission name:bytes type:i32 key:bytes range_end:bytes
//!                        | 10 RoleRevokePermission name:bytes key:bytes range_end:bytes
//!                        | 11 Authenticate name:bytes token_prefix:bytes
//! bytes    = len:u32 data[len]
//! bool     = u8 (0 or 1; anything else is refused)
//! put_request          = key:bytes value:bytes lease:i64 prev_kv:bool ignore_value:bool ignore_lease:bool
//! delete_range_request = key:bytes range_end:bytes prev_kv:bool
//! range_request        = key:bytes range_end:bytes limit:i64 revision:i64 sort_order:u8
//!                        sort_target:u8 serializable:bool keys_only:bool count_only:bool
//!                        min_mod:i64 max_mod:i64 min_create:i64 max_create:i64
//! txn_request          = n:u32 compare[n] n:u32 op[n] (success) n:u32 op[n] (failure)
//! compare              = result:u8 target:u8 key:bytes range_end:bytes union_tag:u8 [value]
//!                        (union_tag 0 none, 1 version:i64, 2 create:i64, 3 mod:i64,
//!                         4 value:bytes, 5 lease:i64)
//! op                   = 1 range_request | 2 put_request | 3 delete_range_request | 4 txn_request
//! ```
//! Invariants: `decode(encode(c)) == c` for every command; decoding never panics, refuses
//! trailing bytes, unknown tags and versions, and nests txns at most [`TXN_DEPTH_MAX`] deep.

use std::fmt;

use ballast_engine::{
    Compare, CompareResult, CompareTarget, CompareValue, DeleteRangeRequest, LeaseId, PutRequest,
    RangeRequest, RequestOp, Revision, SortOrder, SortTarget, TxnRequest,
};
use bytes::{BufMut, Bytes};

use crate::alarms::{AlarmAction, AlarmMember, AlarmType};
use crate::auth::AuthCommand;

/// Version of the command encoding. 1: first layout.
pub const COMMAND_FORMAT_VERSION: u8 = 1;
/// Deepest txn nesting a decoder accepts (etcd allows nested txns; a bound keeps a hostile or
/// damaged payload from recursing without end).
pub const TXN_DEPTH_MAX: usize = 64;

/// A write, as the Raft log carries it. Reads never enter the log. `Advance { to }` moves the
/// shard's revision to `max(revision, to)` without changing any key, so shard revisions stay
/// comparable (design.md §5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogCommand {
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact {
        revision: Revision,
    },
    LeaseGrant {
        id: LeaseId,
        ttl: i64,
    },
    LeaseRevoke {
        id: LeaseId,
    },
    Advance {
        to: Revision,
    },
    /// A change to the cluster's alarm table (`alarms.rs`), in shard 0.
    Alarm {
        action: AlarmAction,
        member: AlarmMember,
    },
    /// An auth change or authentication by user `by` (empty: none), in shard 0 (`auth.rs`).
    Auth {
        by: String,
        cmd: AuthCommand,
    },
}

impl fmt::Display for LogCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogCommand::Put(r) => write!(f, "put({} bytes key)", r.key.len()),
            LogCommand::DeleteRange(r) => write!(f, "delete_range({} bytes key)", r.key.len()),
            LogCommand::Txn(t) => write!(
                f,
                "txn({} compares, {}/{} ops)",
                t.compare.len(),
                t.success.len(),
                t.failure.len()
            ),
            LogCommand::Compact { revision } => write!(f, "compact({revision})"),
            LogCommand::LeaseGrant { id, ttl } => write!(f, "lease_grant({id}, ttl {ttl})"),
            LogCommand::LeaseRevoke { id } => write!(f, "lease_revoke({id})"),
            LogCommand::Advance { to } => write!(f, "advance({to})"),
            LogCommand::Alarm { action, member } => write!(
                f,
                "alarm({action:?} {} of {:x})",
                member.alarm, member.member_id
            ),
            LogCommand::Auth { cmd, .. } => write!(f, "auth({})", auth_name(cmd)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("command format version {version} is not {COMMAND_FORMAT_VERSION}")]
    Version { version: u8 },
    #[error("payload ends at byte {offset}, {wanted} more bytes were expected")]
    Truncated { offset: usize, wanted: usize },
    #[error("unknown {what} tag {tag} at byte {offset}")]
    Tag {
        what: &'static str,
        tag: u8,
        offset: usize,
    },
    #[error("{extra} bytes after the end of the command")]
    Trailing { extra: usize },
    #[error("txn nested deeper than {TXN_DEPTH_MAX}")]
    TooDeep,
}

// ------------------------------------------------------------------ encoding

pub fn encode(cmd: &LogCommand) -> Bytes {
    let mut out = Vec::with_capacity(64);
    out.put_u8(COMMAND_FORMAT_VERSION);
    match cmd {
        LogCommand::Put(r) => {
            out.put_u8(1);
            put_put(&mut out, r);
        }
        LogCommand::DeleteRange(r) => {
            out.put_u8(2);
            put_delete(&mut out, r);
        }
        LogCommand::Txn(t) => {
            out.put_u8(3);
            put_txn(&mut out, t);
        }
        LogCommand::Compact { revision } => {
            out.put_u8(4);
            out.put_i64_le(*revision);
        }
        LogCommand::LeaseGrant { id, ttl } => {
            out.put_u8(5);
            out.put_i64_le(*id);
            out.put_i64_le(*ttl);
        }
        LogCommand::LeaseRevoke { id } => {
            out.put_u8(6);
            out.put_i64_le(*id);
        }
        LogCommand::Advance { to } => {
            out.put_u8(7);
            out.put_i64_le(*to);
        }
        LogCommand::Alarm { action, member } => {
            out.put_u8(8);
            put_alarm(&mut out, *action, *member);
        }
        LogCommand::Auth { by, cmd } => {
            out.put_u8(9);
            crate::auth::put_auth(&mut out, by, cmd);
        }
    }
    Bytes::from(out)
}

/// An auth command's name for logs (never its names or hashes).
fn auth_name(cmd: &AuthCommand) -> &'static str {
    match cmd {
        AuthCommand::Enable => "enable",
        AuthCommand::Disable => "disable",
        AuthCommand::UserAdd { .. } => "user_add",
        AuthCommand::UserDelete { .. } => "user_delete",
        AuthCommand::UserChangePassword { .. } => "user_change_password",
        AuthCommand::UserGrantRole { .. } => "user_grant_role",
        AuthCommand::UserRevokeRole { .. } => "user_revoke_role",
        AuthCommand::RoleAdd { .. } => "role_add",
        AuthCommand::RoleDelete { .. } => "role_delete",
        AuthCommand::RoleGrantPermission { .. } => "role_grant_permission",
        AuthCommand::RoleRevokePermission { .. } => "role_revoke_permission",
        AuthCommand::Authenticate { .. } => "authenticate",
    }
}

/// An alarm change: `action:u8` (0 get, 1 activate, 2 deactivate), `member_id:u64`,
/// `alarm:i32`; the log's tag 8 and the wire's request 17 carry the same body.
pub(crate) fn put_alarm(out: &mut Vec<u8>, action: AlarmAction, member: AlarmMember) {
    out.put_u8(match action {
        AlarmAction::Get => 0,
        AlarmAction::Activate => 1,
        AlarmAction::Deactivate => 2,
    });
    out.put_u64_le(member.member_id);
    out.put_i32_le(member.alarm.0);
}

pub(crate) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    let len = u32::try_from(b.len()).expect("a key or value is far below 4 GiB");
    out.put_u32_le(len);
    out.put_slice(b);
}

pub(crate) fn put_bool(out: &mut Vec<u8>, b: bool) {
    out.put_u8(u8::from(b));
}

pub(crate) fn put_len(out: &mut Vec<u8>, n: usize) {
    out.put_u32_le(u32::try_from(n).expect("op counts are bounded by --max-txn-ops"));
}

pub(crate) fn put_put(out: &mut Vec<u8>, r: &PutRequest) {
    put_bytes(out, &r.key);
    put_bytes(out, &r.value);
    out.put_i64_le(r.lease);
    put_bool(out, r.prev_kv);
    put_bool(out, r.ignore_value);
    put_bool(out, r.ignore_lease);
}

pub(crate) fn put_delete(out: &mut Vec<u8>, r: &DeleteRangeRequest) {
    put_bytes(out, &r.key);
    put_bytes(out, &r.range_end);
    put_bool(out, r.prev_kv);
}

pub(crate) fn put_range(out: &mut Vec<u8>, r: &RangeRequest) {
    put_bytes(out, &r.key);
    put_bytes(out, &r.range_end);
    out.put_i64_le(r.limit);
    out.put_i64_le(r.revision);
    out.put_u8(match r.sort_order {
        SortOrder::None => 0,
        SortOrder::Ascend => 1,
        SortOrder::Descend => 2,
    });
    out.put_u8(match r.sort_target {
        SortTarget::Key => 0,
        SortTarget::Version => 1,
        SortTarget::Create => 2,
        SortTarget::Mod => 3,
        SortTarget::Value => 4,
    });
    put_bool(out, r.serializable);
    put_bool(out, r.keys_only);
    put_bool(out, r.count_only);
    out.put_i64_le(r.min_mod_revision);
    out.put_i64_le(r.max_mod_revision);
    out.put_i64_le(r.min_create_revision);
    out.put_i64_le(r.max_create_revision);
}

pub(crate) fn put_txn(out: &mut Vec<u8>, t: &TxnRequest) {
    put_len(out, t.compare.len());
    for c in &t.compare {
        out.put_u8(match c.result {
            CompareResult::Equal => 0,
            CompareResult::Greater => 1,
            CompareResult::Less => 2,
            CompareResult::NotEqual => 3,
        });
        out.put_u8(match c.target {
            CompareTarget::Version => 0,
            CompareTarget::Create => 1,
            CompareTarget::Mod => 2,
            CompareTarget::Value => 3,
            CompareTarget::Lease => 4,
        });
        put_bytes(out, &c.key);
        put_bytes(out, &c.range_end);
        match &c.target_union {
            None => out.put_u8(0),
            Some(CompareValue::Version(v)) => {
                out.put_u8(1);
                out.put_i64_le(*v);
            }
            Some(CompareValue::CreateRevision(v)) => {
                out.put_u8(2);
                out.put_i64_le(*v);
            }
            Some(CompareValue::ModRevision(v)) => {
                out.put_u8(3);
                out.put_i64_le(*v);
            }
            Some(CompareValue::Value(v)) => {
                out.put_u8(4);
                put_bytes(out, v);
            }
            Some(CompareValue::Lease(v)) => {
                out.put_u8(5);
                out.put_i64_le(*v);
            }
        }
    }
    for ops in [&t.success, &t.failure] {
        put_len(out, ops.len());
        for op in ops {
            match op {
                RequestOp::Range(r) => {
                    out.put_u8(1);
                    put_range(out, r);
                }
                RequestOp::Put(r) => {
                    out.put_u8(2);
                    put_put(out, r);
                }
                RequestOp::DeleteRange(r) => {
                    out.put_u8(3);
                    put_delete(out, r);
                }
                RequestOp::Txn(t) => {
                    out.put_u8(4);
                    put_txn(out, t);
                }
            }
        }
    }
}

// ------------------------------------------------------------------ decoding

pub fn decode(payload: &Bytes) -> Result<LogCommand, DecodeError> {
    let mut r = Reader {
        buf: payload,
        at: 0,
    };
    let version = r.u8()?;
    if version != COMMAND_FORMAT_VERSION {
        return Err(DecodeError::Version { version });
    }
    let at = r.at;
    let cmd = match r.u8()? {
        1 => LogCommand::Put(r.put()?),
        2 => LogCommand::DeleteRange(r.delete()?),
        3 => LogCommand::Txn(r.txn(0)?),
        4 => LogCommand::Compact { revision: r.i64()? },
        5 => LogCommand::LeaseGrant {
            id: r.i64()?,
            ttl: r.i64()?,
        },
        6 => LogCommand::LeaseRevoke { id: r.i64()? },
        7 => LogCommand::Advance { to: r.i64()? },
        8 => LogCommand::Alarm {
            action: match r.tag("alarm action", 2)? {
                0 => AlarmAction::Get,
                1 => AlarmAction::Activate,
                _ => AlarmAction::Deactivate,
            },
            member: AlarmMember {
                member_id: u64::from_le_bytes(r.array()?),
                alarm: AlarmType(i32::from_le_bytes(r.array()?)),
            },
        },
        9 => {
            let (by, cmd) = crate::auth::read_auth(&mut r)?;
            LogCommand::Auth { by, cmd }
        }
        tag => {
            return Err(DecodeError::Tag {
                what: "command",
                tag,
                offset: at,
            })
        }
    };
    let extra = payload.len() - r.at;
    if extra != 0 {
        return Err(DecodeError::Trailing { extra });
    }
    Ok(cmd)
}

pub(crate) struct Reader<'a> {
    pub(crate) buf: &'a Bytes,
    pub(crate) at: usize,
}

impl Reader<'_> {
    pub(crate) fn take(&mut self, n: usize) -> Result<std::ops::Range<usize>, DecodeError> {
        let left = self.buf.len() - self.at;
        if n > left {
            return Err(DecodeError::Truncated {
                offset: self.buf.len(),
                wanted: n - left,
            });
        }
        let range = self.at..self.at + n;
        self.at += n;
        Ok(range)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let range = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(&self.buf[range]);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    pub(crate) fn tag(&mut self, what: &'static str, max: u8) -> Result<u8, DecodeError> {
        let offset = self.at;
        let tag = self.u8()?;
        if tag > max {
            return Err(DecodeError::Tag { what, tag, offset });
        }
        Ok(tag)
    }

    pub(crate) fn bool(&mut self) -> Result<bool, DecodeError> {
        Ok(self.tag("bool", 1)? == 1)
    }

    /// Shares the payload's buffer rather than copying.
    pub(crate) fn bytes(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u32()? as usize;
        let range = self.take(len)?;
        Ok(self.buf.slice(range))
    }

    pub(crate) fn count(&mut self) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        // Every element takes at least one byte: a count past the bytes left is damage, and
        // must not turn into a huge allocation.
        if n > self.buf.len() - self.at {
            return Err(DecodeError::Truncated {
                offset: self.buf.len(),
                wanted: n - (self.buf.len() - self.at),
            });
        }
        Ok(n)
    }

    pub(crate) fn put(&mut self) -> Result<PutRequest, DecodeError> {
        Ok(PutRequest {
            key: self.bytes()?,
            value: self.bytes()?,
            lease: self.i64()?,
            prev_kv: self.bool()?,
            ignore_value: self.bool()?,
            ignore_lease: self.bool()?,
        })
    }

    pub(crate) fn delete(&mut self) -> Result<DeleteRangeRequest, DecodeError> {
        Ok(DeleteRangeRequest {
            key: self.bytes()?,
            range_end: self.bytes()?,
            prev_kv: self.bool()?,
        })
    }

    pub(crate) fn range(&mut self) -> Result<RangeRequest, DecodeError> {
        Ok(RangeRequest {
            key: self.bytes()?,
            range_end: self.bytes()?,
            limit: self.i64()?,
            revision: self.i64()?,
            sort_order: match self.tag("sort order", 2)? {
                0 => SortOrder::None,
                1 => SortOrder::Ascend,
                _ => SortOrder::Descend,
            },
            sort_target: match self.tag("sort target", 4)? {
                0 => SortTarget::Key,
                1 => SortTarget::Version,
                2 => SortTarget::Create,
                3 => SortTarget::Mod,
                _ => SortTarget::Value,
            },
            serializable: self.bool()?,
            keys_only: self.bool()?,
            count_only: self.bool()?,
            min_mod_revision: self.i64()?,
            max_mod_revision: self.i64()?,
            min_create_revision: self.i64()?,
            max_create_revision: self.i64()?,
        })
    }

    fn compare(&mut self) -> Result<Compare, DecodeError> {
        let result = match self.tag("compare result", 3)? {
            0 => CompareResult::Equal,
            1 => CompareResult::Greater,
            2 => CompareResult::Less,
            _ => CompareResult::NotEqual,
        };
        let target = match self.tag("compare target", 4)? {
            0 => CompareTarget::Version,
            1 => CompareTarget::Create,
            2 => CompareTarget::Mod,
            3 => CompareTarget::Value,
            _ => CompareTarget::Lease,
        };
        let key = self.bytes()?;
        let range_end = self.bytes()?;
        let target_union = match self.tag("compare value", 5)? {
            0 => None,
            1 => Some(CompareValue::Version(self.i64()?)),
            2 => Some(CompareValue::CreateRevision(self.i64()?)),
            3 => Some(CompareValue::ModRevision(self.i64()?)),
            4 => Some(CompareValue::Value(self.bytes()?)),
            _ => Some(CompareValue::Lease(self.i64()?)),
        };
        Ok(Compare {
            result,
            target,
            key,
            range_end,
            target_union,
        })
    }

    fn ops(&mut self, depth: usize) -> Result<Vec<RequestOp>, DecodeError> {
        let n = self.count()?;
        let mut ops = Vec::with_capacity(n);
        for _ in 0..n {
            let at = self.at;
            ops.push(match self.u8()? {
                1 => RequestOp::Range(self.range()?),
                2 => RequestOp::Put(self.put()?),
                3 => RequestOp::DeleteRange(self.delete()?),
                4 => RequestOp::Txn(self.txn(depth + 1)?),
                tag => {
                    return Err(DecodeError::Tag {
                        what: "txn op",
                        tag,
                        offset: at,
                    })
                }
            });
        }
        Ok(ops)
    }

    pub(crate) fn txn(&mut self, depth: usize) -> Result<TxnRequest, DecodeError> {
        if depth >= TXN_DEPTH_MAX {
            return Err(DecodeError::TooDeep);
        }
        let n = self.count()?;
        let mut compare = Vec::with_capacity(n);
        for _ in 0..n {
            compare.push(self.compare()?);
        }
        Ok(TxnRequest {
            compare,
            success: self.ops(depth)?,
            failure: self.ops(depth)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn full_range() -> RangeRequest {
        RangeRequest {
            key: b("a"),
            range_end: b("z"),
            limit: 10,
            revision: 4,
            sort_order: SortOrder::Descend,
            sort_target: SortTarget::Value,
            serializable: true,
            keys_only: true,
            count_only: false,
            min_mod_revision: 1,
            max_mod_revision: 9,
            min_create_revision: 2,
            max_create_revision: 8,
        }
    }

    fn full_put() -> PutRequest {
        PutRequest {
            key: b("k"),
            value: Bytes::from(vec![0u8, 255, 7]),
            lease: 0x1234_5678_9abc,
            prev_kv: true,
            ignore_value: false,
            ignore_lease: true,
        }
    }

    fn nested_txn() -> TxnRequest {
        let compares = [
            (CompareResult::Equal, CompareTarget::Version, None),
            (
                CompareResult::Greater,
                CompareTarget::Create,
                Some(CompareValue::CreateRevision(3)),
            ),
            (
                CompareResult::Less,
                CompareTarget::Mod,
                Some(CompareValue::ModRevision(-1)),
            ),
            (
                CompareResult::NotEqual,
                CompareTarget::Value,
                Some(CompareValue::Value(b("v"))),
            ),
            (
                CompareResult::Equal,
                CompareTarget::Lease,
                Some(CompareValue::Lease(77)),
            ),
            (
                CompareResult::Equal,
                CompareTarget::Value,
                Some(CompareValue::Version(5)),
            ),
        ];
        let compare = compares
            .into_iter()
            .map(|(result, target, target_union)| Compare {
                result,
                target,
                key: b("c"),
                range_end: b("d"),
                target_union,
            })
            .collect();
        let inner = TxnRequest {
            compare: vec![],
            success: vec![RequestOp::Put(PutRequest::default())],
            failure: vec![],
        };
        TxnRequest {
            compare,
            success: vec![
                RequestOp::Range(full_range()),
                RequestOp::Put(full_put()),
                RequestOp::DeleteRange(DeleteRangeRequest {
                    key: b("x"),
                    range_end: Bytes::new(),
                    prev_kv: true,
                }),
                RequestOp::Txn(inner),
            ],
            failure: vec![RequestOp::Range(RangeRequest::default())],
        }
    }

    fn every_command() -> Vec<LogCommand> {
        vec![
            LogCommand::Put(full_put()),
            LogCommand::Put(PutRequest::default()),
            LogCommand::DeleteRange(DeleteRangeRequest {
                key: b("a"),
                range_end: b("\0"),
                prev_kv: false,
            }),
            LogCommand::Txn(nested_txn()),
            LogCommand::Txn(TxnRequest::default()),
            LogCommand::Compact { revision: 42 },
            LogCommand::LeaseGrant { id: 0, ttl: 60 },
            LogCommand::LeaseGrant {
                id: i64::MAX,
                ttl: -1,
            },
            LogCommand::LeaseRevoke { id: 9 },
            LogCommand::Advance { to: 1 << 40 },
            LogCommand::Advance { to: -1 },
            LogCommand::Alarm {
                action: AlarmAction::Activate,
                member: AlarmMember {
                    alarm: AlarmType::NOSPACE,
                    member_id: u64::MAX,
                },
            },
            LogCommand::Alarm {
                action: AlarmAction::Deactivate,
                member: AlarmMember {
                    alarm: AlarmType(-3),
                    member_id: 1,
                },
            },
            LogCommand::Alarm {
                action: AlarmAction::Get,
                member: AlarmMember::default(),
            },
        ]
        .into_iter()
        .chain(auth_commands())
        .collect()
    }

    fn auth_commands() -> Vec<LogCommand> {
        use crate::auth::{AuthCommand as A, PermType, Permission};
        let name = || "näme".to_owned();
        let b = |s: &'static str| Bytes::from_static(s.as_bytes());
        [
            A::Enable,
            A::Disable,
            A::UserAdd {
                name: name(),
                password_hash: b("$2a$10$hash"),
                no_password: false,
            },
            A::UserAdd {
                name: name(),
                password_hash: Bytes::new(),
                no_password: true,
            },
            A::UserDelete { name: name() },
            A::UserChangePassword {
                name: name(),
                password_hash: b("h"),
            },
            A::UserGrantRole {
                user: name(),
                role: "r".into(),
            },
            A::UserRevokeRole {
                name: name(),
                role: "r".into(),
            },
            A::RoleAdd { name: name() },
            A::RoleDelete { name: name() },
            A::RoleGrantPermission {
                name: name(),
                permission: Permission {
                    perm_type: PermType::READWRITE,
                    key: b("k"),
                    range_end: b("\0"),
                },
            },
            A::RoleRevokePermission {
                name: name(),
                key: b("k"),
                range_end: Bytes::new(),
            },
            A::Authenticate {
                name: name(),
                token_prefix: "abcdefghijklmnop".into(),
            },
        ]
        .into_iter()
        .enumerate()
        .map(|(i, cmd)| LogCommand::Auth {
            by: if i % 2 == 0 {
                String::new()
            } else {
                "root".into()
            },
            cmd,
        })
        .collect()
    }

    #[test]
    fn every_command_round_trips() {
        for cmd in every_command() {
            let bytes = encode(&cmd);
            assert_eq!(bytes[0], COMMAND_FORMAT_VERSION);
            assert_eq!(decode(&bytes), Ok(cmd.clone()), "{cmd}");
        }
    }

    #[test]
    fn every_range_option_round_trips() {
        for order in [SortOrder::None, SortOrder::Ascend, SortOrder::Descend] {
            for target in [
                SortTarget::Key,
                SortTarget::Version,
                SortTarget::Create,
                SortTarget::Mod,
                SortTarget::Value,
            ] {
                let txn = TxnRequest {
                    success: vec![RequestOp::Range(RangeRequest {
                        sort_order: order,
                        sort_target: target,
                        count_only: true,
                        ..full_range()
                    })],
                    ..TxnRequest::default()
                };
                let cmd = LogCommand::Txn(txn);
                assert_eq!(decode(&encode(&cmd)), Ok(cmd));
            }
        }
    }

    #[test]
    fn every_truncation_is_refused_without_panic() {
        for cmd in every_command() {
            let bytes = encode(&cmd);
            for cut in 0..bytes.len() {
                assert!(decode(&bytes.slice(..cut)).is_err(), "{cmd} cut at {cut}");
            }
        }
    }

    #[test]
    fn damage_is_refused() {
        let mut v = encode(&LogCommand::Put(full_put())).to_vec();
        v[0] = 2;
        assert_eq!(
            decode(&Bytes::from(v.clone())),
            Err(DecodeError::Version { version: 2 })
        );
        v[0] = COMMAND_FORMAT_VERSION;
        v[1] = 99;
        assert!(matches!(
            decode(&Bytes::from(v.clone())),
            Err(DecodeError::Tag { tag: 99, .. })
        ));
        let mut trailing = encode(&LogCommand::LeaseRevoke { id: 1 }).to_vec();
        trailing.push(0);
        assert_eq!(
            decode(&Bytes::from(trailing)),
            Err(DecodeError::Trailing { extra: 1 })
        );
        // A bool byte other than 0/1 (the last byte of a put is ignore_lease).
        let mut bad_bool = encode(&LogCommand::Put(PutRequest::default())).to_vec();
        *bad_bool.last_mut().expect("non-empty") = 2;
        assert!(matches!(
            decode(&Bytes::from(bad_bool)),
            Err(DecodeError::Tag { what: "bool", .. })
        ));
    }

    /// Entries written before tag 7 existed, byte for byte: they decode to the same commands.
    #[test]
    fn old_entries_decode_unchanged() {
        let old: [(&[u8], LogCommand); 4] = [
            (
                &[1, 4, 42, 0, 0, 0, 0, 0, 0, 0],
                LogCommand::Compact { revision: 42 },
            ),
            (
                &[1, 5, 7, 0, 0, 0, 0, 0, 0, 0, 60, 0, 0, 0, 0, 0, 0, 0],
                LogCommand::LeaseGrant { id: 7, ttl: 60 },
            ),
            (
                &[1, 6, 9, 0, 0, 0, 0, 0, 0, 0],
                LogCommand::LeaseRevoke { id: 9 },
            ),
            (
                &[
                    1, 1, 1, 0, 0, 0, b'k', 1, 0, 0, 0, b'v', 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0,
                ],
                LogCommand::Put(PutRequest {
                    key: b("k"),
                    value: b("v"),
                    prev_kv: true,
                    ..PutRequest::default()
                }),
            ),
        ];
        for (bytes, cmd) in old {
            assert_eq!(decode(&Bytes::copy_from_slice(bytes)), Ok(cmd.clone()));
            assert_eq!(&encode(&cmd)[..], bytes, "{cmd} encodes as before");
        }
    }

    #[test]
    fn advance_encodes_as_tag_7_and_damage_is_refused() {
        let bytes = encode(&LogCommand::Advance { to: 0x0102 });
        assert_eq!(&bytes[..], &[1, 7, 2, 1, 0, 0, 0, 0, 0, 0]);
        // Short of its revision, or with a byte after it.
        assert_eq!(
            decode(&bytes.slice(..6)),
            Err(DecodeError::Truncated {
                offset: 6,
                wanted: 4
            })
        );
        let mut trailing = bytes.to_vec();
        trailing.push(0);
        assert_eq!(
            decode(&Bytes::from(trailing)),
            Err(DecodeError::Trailing { extra: 1 })
        );
        // The tag after the last is still unknown.
        let mut unknown = bytes.to_vec();
        unknown[1] = 10;
        assert_eq!(
            decode(&Bytes::from(unknown)),
            Err(DecodeError::Tag {
                what: "command",
                tag: 10,
                offset: 1
            })
        );
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut txn = TxnRequest::default();
        for _ in 0..TXN_DEPTH_MAX {
            txn = TxnRequest {
                success: vec![RequestOp::Txn(txn)],
                ..TxnRequest::default()
            };
        }
        assert_eq!(
            decode(&encode(&LogCommand::Txn(txn))),
            Err(DecodeError::TooDeep)
        );
    }
}
