//! The binary encoding of what nodes send each other (the peer transport, `network.rs`): Raft's
//! AppendEntries and RequestVote with their responses, the client requests a follower
//! forwards to its shard's leader with the leader's answers, and the read index a follower asks
//! the leader for to serve a linearizable read itself. Written by hand like `codec.rs`,
//! whose encoders and `Reader` it reuses for the engine's request types; log entries travel as
//! the log store's records (`log_store::record_of` / `entry_of`: a normal entry's payload is
//! `codec::encode`'s command, a membership entry's the log store's membership payload).
//!
//! Format (all integers little-endian; `bytes`, `bool`, `put_request`, `delete_range_request`,
//! `range_request` and `txn_request` as in `codec.rs`):
//! ```text
//! message  = version:u8 (= WIRE_FORMAT_VERSION) kind:u8 body
//! kind 1 request          request
//! kind 2 answer           answer
//! kind 3 append           append
//! kind 4 append response  append_response
//! kind 5 vote             vote_request
//! kind 6 vote response    vote_response
//! kind 7 snapshot chunk   snapshot_chunk
//! kind 8 snapshot answer  snapshot_answer
//! kind 9 transfer leader  transfer_leader
//! kind 10 transfer answer transfer_answer
//! kind 11 members answer  log_id:option_log_id n:u32 id:u64[n]
//! kind 12 read index      (no body: the asker's shard names the group)
//! kind 13 read index answer 1 log_id (Ok: openraft's read log id) | 2 shard_error
//!
//! request  = tag:u8 body
//!   1 Range range_request          8 Advance to:i64
//!   2 Put put_request              9 LeaseKeepAlive id:i64
//!   3 DeleteRange delete_range_req 10 LeaseTimeToLive id:i64 keys:bool
//!   4 Txn txn_request              11 LeaseLeases
//!   5 Compact revision:i64         12 HashKv revision:i64
//!   6 LeaseGrant id:i64 ttl:i64    13 Hash
//!   7 LeaseRevoke id:i64           14 Status
//!   16 History from_main:i64 from_sub:i64 upto:i64 max_entries:u64 (its answer is not
//!      forwardable: a snapshot reads the member's own store)
//! answer   = 1 revision:i64 response           Ok(Reply)
//!          | 2 shard_error                     Err(ShardError)
//!          | 3                                 not forwardable: decodes to Err(Stopped)
//! response = tag:u8 body
//!   1 Range range_response         8 Advance
//!   2 Put prev_kv:option_kv        9 LeaseKeepAlive ttl:i64
//!   3 DeleteRange deleted:i64      10 LeaseTimeToLive id:i64 ttl_remaining_secs:i64
//!     n:u32 kv[n]                     granted_ttl:i64 n:u32 key:bytes[n]
//!   4 Txn txn_response             11 LeaseLeases n:u32 id:i64[n]
//!   5 Compact                      12 HashKv hash:u32 compact_revision:i64 hash_revision:i64
//!   6 LeaseGrant id:i64 ttl:i64    13 Hash hash:u32
//!   7 LeaseRevoke                  14 Noop
//!   16 Alarms n:u32 (member_id:u64 alarm:i32)[n]
//!   (request 17 Alarm action:u8 member_id:u64 alarm:i32, action 0 get, 1 activate,
//!    2 deactivate)
//!   17 Auth 0 (0 | 1 token:string) | 1 error:u8   (`auth::put_outcome`)
//!   (request 18 Auth by:string auth_command, as the log's tag 9 body)
//! range_response = n:u32 kv[n] more:bool count:i64
//! txn_response   = succeeded:bool n:u32 response_op[n]
//! response_op    = 1 range_response | 2 option_kv | 3 deleted:i64 n:u32 kv[n] | 4 txn_response
//! kv             = key:bytes create_revision:i64 mod_revision:i64 version:i64 value:bytes lease:i64
//! option_x       = 0 | 1 x                      (a presence byte; anything else is refused)
//! string         = bytes (UTF-8)
//! shard_error    = 1 engine_error | 2 (Stopped) | 3 leader_id:option_u64 (NotLeader)
//!                | 4 cause:string (Failed) | 5 (Timeout)
//! engine_error   = 1 EmptyKey | 2 Compacted compact_revision:i64
//!                | 3 FutureRevision revision:i64 current:i64 | 4 DuplicateKey
//!                | 5 TooManyOps ops:u64 max:u64 | 6 KeyNotFound | 7 LeaseNotFound lease_id:i64
//!                | 8 LeaseExists lease_id:i64 | 9 LeaseTtlTooLarge ttl:i64 | 10 ValueProvided
//!                | 11 LeaseProvided | 12 InvalidSortOption
//!
//! vote           = term:u64 voted_for:u64 committed:bool   (standard leader id)
//! log_id         = term:u64 index:u64                      (openraft's 0-based index)
//! append         = vote prev_log_id:option_log_id leader_commit:option_log_id n:u32 entry[n]
//! entry          = term:u64 index:u64 kind:u8 payload:bytes
//!                  (index 0-based as in log_id; kind and payload as the log store's record)
//! append_response = 1 (Success) | 2 option_log_id (PartialSuccess) | 3 (Conflict)
//!                 | 4 vote (HigherVote)
//! vote_request   = vote last_log_id:option_log_id leadership_transfer:bool
//! vote_response  = vote vote_granted:bool last_log_id:option_log_id
//! snapshot_chunk = transfer:u64 seq:u64 first:option(vote meta:bytes) done:bool data:bytes
//!                  (meta: the checkpoint facts of `durable.rs`; data: one chunk of the
//!                  engine's snapshot stream, `mvcc::image::transfer`)
//! snapshot_answer = 1 (Next: send the next chunk) | 2 vote (Done: the install's answer)
//! transfer_leader = from_leader:vote to:u64 last_log_id:option_log_id
//! transfer_answer = 1 (Ok) | 2 expected:vote actual:vote (VoteChanged)
//!                 | 3 expected:option_log_id actual:option_log_id (LogNotFlushed)
//! ```
//! Every index on the wire is openraft's (the first entry is index 0); only the log store's
//! backend counts from 1.
//!
//! Not forwardable (answer tag 3): `Response::Status` describes the replica that made it, so a
//! follower answers Status itself and never forwards it; a leader asked anyway answers "not
//! forwardable", and so does an engine error this encoding does not know (`ballast_engine::Error`
//! is `#[non_exhaustive]`: a variant added there must be given a tag here). The asker decodes
//! it as `Err(ShardError::Stopped)`: the peer served nothing.
//!
//! Invariants: `decode_x(encode_x(m)) == m` for every message; decoding never panics, refuses
//! another version or message kind, unknown tags, presence or bool bytes other than 0/1, text
//! that is not UTF-8 and trailing bytes, nests txns (requests and responses) at most
//! [`TXN_DEPTH_MAX`] deep, and never allocates for more elements than bytes remain.

use ballast_engine::{
    DeleteRangeResponse, Error as EngineError, HashKv, KeyValue, LeaseTimeToLive, PutResponse,
    RangeResponse, ResponseOp, TxnResponse,
};
use bytes::{BufMut, Bytes};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, VoteRequest, VoteResponse};
use openraft::raft::{TransferLeaderError, TransferLeaderRequest, TransferLeaderResponse};

use crate::alarms::{AlarmAction, AlarmMember, AlarmType};
use crate::codec::{self, DecodeError, Reader, TXN_DEPTH_MAX};
use crate::log_store::{entry_of, log_id, record_of, LogRecord};
use crate::membership::{MembershipChange, MembershipError};
use crate::shard::{RaftMember, Reply, Request, Response, ShardError};
use crate::types::{Entry, LeaderId, LogId, NodeId, ShardRaft, Vote};

/// Version of the peer wire encoding. 1: first layout.
pub const WIRE_FORMAT_VERSION: u8 = 1;

const KIND_REQUEST: u8 = 1;
const KIND_ANSWER: u8 = 2;
const KIND_APPEND: u8 = 3;
const KIND_APPEND_RESPONSE: u8 = 4;
const KIND_VOTE: u8 = 5;
const KIND_VOTE_RESPONSE: u8 = 6;
const KIND_SNAPSHOT_CHUNK: u8 = 7;
const KIND_SNAPSHOT_ANSWER: u8 = 8;
const KIND_TRANSFER_LEADER: u8 = 9;
const KIND_TRANSFER_ANSWER: u8 = 10;
const KIND_MEMBERS_ANSWER: u8 = 11;
const KIND_READ_INDEX: u8 = 12;
const KIND_READ_INDEX_ANSWER: u8 = 13;

const ANSWER_OK: u8 = 1;
const ANSWER_ERR: u8 = 2;
const ANSWER_NOT_FORWARDABLE: u8 = 3;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    #[error("wire format version {version} is not {WIRE_FORMAT_VERSION}")]
    Version { version: u8 },
    #[error("message kind {found} where kind {expected} was expected")]
    Kind { expected: u8, found: u8 },
    #[error("{extra} bytes after the end of the message")]
    Trailing { extra: usize },
    /// Truncation, an unknown tag or bool, or txns nested too deep.
    #[error(transparent)]
    Malformed(#[from] DecodeError),
    #[error("log entry at index {index}: {reason}")]
    Entry { index: u64, reason: String },
    #[error("text at byte {offset} is not UTF-8")]
    Utf8 { offset: usize },
    #[error("{value} at byte {offset} does not fit in a usize")]
    TooLarge { value: u64, offset: usize },
}

// ------------------------------------------------------------------ encoding

fn start(kind: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.put_u8(WIRE_FORMAT_VERSION);
    out.put_u8(kind);
    out
}

pub fn encode_request(request: &Request) -> Bytes {
    let mut out = start(KIND_REQUEST);
    match request {
        Request::Range(r) => {
            out.put_u8(1);
            codec::put_range(&mut out, r);
        }
        Request::Alarm { action, member } => {
            out.put_u8(17);
            codec::put_alarm(&mut out, *action, *member);
        }
        Request::Auth { by, cmd } => {
            out.put_u8(18);
            crate::auth::put_auth(&mut out, by, cmd);
        }
        Request::Put(r) => {
            out.put_u8(2);
            codec::put_put(&mut out, r);
        }
        Request::DeleteRange(r) => {
            out.put_u8(3);
            codec::put_delete(&mut out, r);
        }
        Request::Txn(t) => {
            out.put_u8(4);
            codec::put_txn(&mut out, t);
        }
        Request::Compact { revision } => {
            out.put_u8(5);
            out.put_i64_le(*revision);
        }
        Request::LeaseGrant { id, ttl } => {
            out.put_u8(6);
            out.put_i64_le(*id);
            out.put_i64_le(*ttl);
        }
        Request::LeaseRevoke { id } => {
            out.put_u8(7);
            out.put_i64_le(*id);
        }
        Request::Advance { to } => {
            out.put_u8(8);
            out.put_i64_le(*to);
        }
        Request::LeaseKeepAlive { id } => {
            out.put_u8(9);
            out.put_i64_le(*id);
        }
        Request::LeaseTimeToLive { id, keys } => {
            out.put_u8(10);
            out.put_i64_le(*id);
            codec::put_bool(&mut out, *keys);
        }
        Request::LeaseLeases => out.put_u8(11),
        Request::HashKv { revision } => {
            out.put_u8(12);
            out.put_i64_le(*revision);
        }
        Request::Hash => out.put_u8(13),
        Request::Status => out.put_u8(14),
        Request::Membership(change) => {
            out.put_u8(15);
            put_membership_change(&mut out, change);
        }
        Request::History {
            from,
            upto,
            max_entries,
        } => {
            out.put_u8(16);
            out.put_i64_le(from.main);
            out.put_i64_le(from.sub);
            out.put_i64_le(*upto);
            out.put_u64_le(*max_entries as u64);
        }
    }
    Bytes::from(out)
}

/// What [`encode_answer`] cannot carry (see the module comment).
struct NotForwardable;

pub fn encode_answer(answer: &Result<Reply, ShardError>) -> Bytes {
    let mut out = start(KIND_ANSWER);
    let written = match answer {
        Ok(reply) => {
            out.put_u8(ANSWER_OK);
            out.put_i64_le(reply.revision);
            put_response(&mut out, &reply.response)
        }
        Err(e) => {
            out.put_u8(ANSWER_ERR);
            put_shard_error(&mut out, e)
        }
    };
    if written.is_err() {
        out.truncate(2);
        out.put_u8(ANSWER_NOT_FORWARDABLE);
    }
    Bytes::from(out)
}

fn put_response(out: &mut Vec<u8>, response: &Response) -> Result<(), NotForwardable> {
    match response {
        Response::Range(r) => {
            out.put_u8(1);
            put_range_response(out, r);
        }
        Response::Auth(outcome) => {
            out.put_u8(17);
            crate::auth::put_outcome(out, outcome);
        }
        Response::Alarms(alarms) => {
            out.put_u8(16);
            codec::put_len(out, alarms.len());
            for m in alarms {
                out.put_u64_le(m.member_id);
                out.put_i32_le(m.alarm.0);
            }
        }
        Response::Put(r) => {
            out.put_u8(2);
            put_option_kv(out, r.prev_kv.as_ref());
        }
        Response::DeleteRange(r) => {
            out.put_u8(3);
            put_delete_response(out, r);
        }
        Response::Txn(t) => {
            out.put_u8(4);
            put_txn_response(out, t);
        }
        Response::Compact => out.put_u8(5),
        Response::LeaseGrant { id, ttl } => {
            out.put_u8(6);
            out.put_i64_le(*id);
            out.put_i64_le(*ttl);
        }
        Response::LeaseRevoke => out.put_u8(7),
        Response::Advance => out.put_u8(8),
        Response::LeaseKeepAlive { ttl } => {
            out.put_u8(9);
            out.put_i64_le(*ttl);
        }
        Response::LeaseTimeToLive(t) => {
            out.put_u8(10);
            out.put_i64_le(t.id);
            out.put_i64_le(t.ttl_remaining_secs);
            out.put_i64_le(t.granted_ttl);
            codec::put_len(out, t.keys.len());
            for key in &t.keys {
                codec::put_bytes(out, key);
            }
        }
        Response::LeaseLeases(ids) => {
            out.put_u8(11);
            codec::put_len(out, ids.len());
            for id in ids {
                out.put_i64_le(*id);
            }
        }
        Response::HashKv(h) => {
            out.put_u8(12);
            out.put_u32_le(h.hash);
            out.put_i64_le(h.compact_revision);
            out.put_i64_le(h.hash_revision);
        }
        Response::Hash(hash) => {
            out.put_u8(13);
            out.put_u32_le(*hash);
        }
        Response::Status(_) | Response::History(_) => return Err(NotForwardable),
        Response::Noop => out.put_u8(14),
        Response::Members(members) => {
            out.put_u8(15);
            out.put_u32_le(members.len() as u32);
            for m in members {
                out.put_u64_le(m.id);
                codec::put_bytes(out, m.addr.as_bytes());
                codec::put_bool(out, m.is_learner);
            }
        }
    }
    Ok(())
}

fn put_kv(out: &mut Vec<u8>, kv: &KeyValue) {
    codec::put_bytes(out, &kv.key);
    out.put_i64_le(kv.create_revision);
    out.put_i64_le(kv.mod_revision);
    out.put_i64_le(kv.version);
    codec::put_bytes(out, &kv.value);
    out.put_i64_le(kv.lease);
}

fn put_option_kv(out: &mut Vec<u8>, kv: Option<&KeyValue>) {
    match kv {
        None => out.put_u8(0),
        Some(kv) => {
            out.put_u8(1);
            put_kv(out, kv);
        }
    }
}

fn put_kvs(out: &mut Vec<u8>, kvs: &[KeyValue]) {
    codec::put_len(out, kvs.len());
    for kv in kvs {
        put_kv(out, kv);
    }
}

fn put_range_response(out: &mut Vec<u8>, r: &RangeResponse) {
    put_kvs(out, &r.kvs);
    codec::put_bool(out, r.more);
    out.put_i64_le(r.count);
}

fn put_delete_response(out: &mut Vec<u8>, r: &DeleteRangeResponse) {
    out.put_i64_le(r.deleted);
    put_kvs(out, &r.prev_kvs);
}

fn put_txn_response(out: &mut Vec<u8>, t: &TxnResponse) {
    codec::put_bool(out, t.succeeded);
    codec::put_len(out, t.responses.len());
    for op in &t.responses {
        match op {
            ResponseOp::Range(r) => {
                out.put_u8(1);
                put_range_response(out, r);
            }
            ResponseOp::Put(r) => {
                out.put_u8(2);
                put_option_kv(out, r.prev_kv.as_ref());
            }
            ResponseOp::DeleteRange(r) => {
                out.put_u8(3);
                put_delete_response(out, r);
            }
            ResponseOp::Txn(t) => {
                out.put_u8(4);
                put_txn_response(out, t);
            }
        }
    }
}

fn put_membership_change(out: &mut Vec<u8>, change: &MembershipChange) {
    match change {
        MembershipChange::Add { id, addr, learner } => {
            out.put_u8(1);
            out.put_u64_le(*id);
            codec::put_bytes(out, addr.as_bytes());
            codec::put_bool(out, *learner);
        }
        MembershipChange::Remove { id } => {
            out.put_u8(2);
            out.put_u64_le(*id);
        }
        MembershipChange::Update { id, addr } => {
            out.put_u8(3);
            out.put_u64_le(*id);
            codec::put_bytes(out, addr.as_bytes());
        }
        MembershipChange::Promote { id } => {
            out.put_u8(4);
            out.put_u64_le(*id);
        }
        MembershipChange::Vote { id } => {
            out.put_u8(5);
            out.put_u64_le(*id);
        }
    }
}

fn put_shard_error(out: &mut Vec<u8>, e: &ShardError) -> Result<(), NotForwardable> {
    match e {
        ShardError::Engine(e) => {
            out.put_u8(1);
            put_engine_error(out, e)?;
        }
        ShardError::Stopped => out.put_u8(2),
        ShardError::NotLeader { leader_id } => {
            out.put_u8(3);
            match leader_id {
                None => out.put_u8(0),
                Some(id) => {
                    out.put_u8(1);
                    out.put_u64_le(*id);
                }
            }
        }
        ShardError::Failed { cause } => {
            out.put_u8(4);
            codec::put_bytes(out, cause.as_bytes());
        }
        ShardError::Timeout => out.put_u8(5),
        ShardError::Membership(e) => {
            out.put_u8(6);
            match e {
                MembershipError::NotFound => out.put_u8(1),
                MembershipError::IdExists => out.put_u8(2),
                MembershipError::PeerUrlExists => out.put_u8(3),
                MembershipError::NotLearner => out.put_u8(4),
                MembershipError::LearnerNotReady => out.put_u8(5),
                MembershipError::TooManyLearners => out.put_u8(7),
                MembershipError::Refused(why) => {
                    out.put_u8(6);
                    codec::put_bytes(out, why.as_bytes());
                }
            }
        }
    }
    Ok(())
}

fn put_engine_error(out: &mut Vec<u8>, e: &EngineError) -> Result<(), NotForwardable> {
    match e {
        EngineError::EmptyKey => out.put_u8(1),
        EngineError::Compacted { compact_revision } => {
            out.put_u8(2);
            out.put_i64_le(*compact_revision);
        }
        EngineError::FutureRevision { revision, current } => {
            out.put_u8(3);
            out.put_i64_le(*revision);
            out.put_i64_le(*current);
        }
        EngineError::DuplicateKey => out.put_u8(4),
        EngineError::TooManyOps { ops, max } => {
            out.put_u8(5);
            out.put_u64_le(*ops as u64);
            out.put_u64_le(*max as u64);
        }
        EngineError::KeyNotFound => out.put_u8(6),
        EngineError::LeaseNotFound { lease_id } => {
            out.put_u8(7);
            out.put_i64_le(*lease_id);
        }
        EngineError::LeaseExists { lease_id } => {
            out.put_u8(8);
            out.put_i64_le(*lease_id);
        }
        EngineError::LeaseTtlTooLarge { ttl } => {
            out.put_u8(9);
            out.put_i64_le(*ttl);
        }
        EngineError::ValueProvided => out.put_u8(10),
        EngineError::LeaseProvided => out.put_u8(11),
        EngineError::InvalidSortOption => out.put_u8(12),
        // A variant added to the engine after this encoding (the enum is non-exhaustive).
        _ => return Err(NotForwardable),
    }
    Ok(())
}

fn put_vote(out: &mut Vec<u8>, vote: &Vote) {
    out.put_u64_le(vote.leader_id.term);
    out.put_u64_le(vote.leader_id.voted_for);
    codec::put_bool(out, vote.committed);
}

fn put_option_log_id(out: &mut Vec<u8>, id: Option<&LogId>) {
    match id {
        None => out.put_u8(0),
        Some(id) => {
            out.put_u8(1);
            out.put_u64_le(id.leader_id.term);
            out.put_u64_le(id.index);
        }
    }
}

pub fn encode_append(rpc: &AppendEntriesRequest<ShardRaft>) -> Bytes {
    let mut out = start(KIND_APPEND);
    put_vote(&mut out, &rpc.vote);
    put_option_log_id(&mut out, rpc.prev_log_id.as_ref());
    put_option_log_id(&mut out, rpc.leader_commit.as_ref());
    codec::put_len(&mut out, rpc.entries.len());
    for entry in &rpc.entries {
        let record = record_of(entry);
        out.put_u64_le(entry.log_id.leader_id.term);
        // openraft's index, not the record's (1-based) one: see the module comment.
        out.put_u64_le(entry.log_id.index);
        out.put_u8(record.kind);
        codec::put_bytes(&mut out, &record.payload);
    }
    Bytes::from(out)
}

pub fn encode_append_response(r: &AppendEntriesResponse<ShardRaft>) -> Bytes {
    let mut out = start(KIND_APPEND_RESPONSE);
    match r {
        AppendEntriesResponse::Success => out.put_u8(1),
        AppendEntriesResponse::PartialSuccess(id) => {
            out.put_u8(2);
            put_option_log_id(&mut out, id.as_ref());
        }
        AppendEntriesResponse::Conflict => out.put_u8(3),
        AppendEntriesResponse::HigherVote(vote) => {
            out.put_u8(4);
            put_vote(&mut out, vote);
        }
    }
    Bytes::from(out)
}

pub fn encode_vote(rpc: &VoteRequest<ShardRaft>) -> Bytes {
    let mut out = start(KIND_VOTE);
    put_vote(&mut out, &rpc.vote);
    put_option_log_id(&mut out, rpc.last_log_id.as_ref());
    codec::put_bool(&mut out, rpc.leadership_transfer);
    Bytes::from(out)
}

pub fn encode_vote_response(r: &VoteResponse<ShardRaft>) -> Bytes {
    let mut out = start(KIND_VOTE_RESPONSE);
    put_vote(&mut out, &r.vote);
    codec::put_bool(&mut out, r.vote_granted);
    put_option_log_id(&mut out, r.last_log_id.as_ref());
    Bytes::from(out)
}

/// One chunk of a snapshot sent to a follower (`snapshot.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotChunk {
    /// Names the transfer: every chunk of one transfer carries it.
    pub transfer: u64,
    /// The chunk's number, from 0.
    pub seq: u64,
    /// On chunk 0: the leader's vote and the snapshot's meta (`durable::encode_app`).
    pub first: Option<(Vote, Bytes)>,
    /// The last chunk.
    pub done: bool,
    pub data: Bytes,
}

/// A follower's answer to a snapshot chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotAnswer {
    /// Send the next chunk.
    Next,
    /// The transfer is over: the follower's vote (openraft's `SnapshotResponse`).
    Done(Vote),
}

pub fn encode_snapshot_chunk(c: &SnapshotChunk) -> Bytes {
    let mut out = start(KIND_SNAPSHOT_CHUNK);
    out.reserve(c.data.len() + 64);
    out.put_u64_le(c.transfer);
    out.put_u64_le(c.seq);
    match &c.first {
        None => out.put_u8(0),
        Some((vote, meta)) => {
            out.put_u8(1);
            put_vote(&mut out, vote);
            codec::put_bytes(&mut out, meta);
        }
    }
    codec::put_bool(&mut out, c.done);
    codec::put_bytes(&mut out, &c.data);
    Bytes::from(out)
}

pub fn encode_snapshot_answer(a: &SnapshotAnswer) -> Bytes {
    let mut out = start(KIND_SNAPSHOT_ANSWER);
    match a {
        SnapshotAnswer::Next => out.put_u8(1),
        SnapshotAnswer::Done(vote) => {
            out.put_u8(2);
            put_vote(&mut out, vote);
        }
    }
    Bytes::from(out)
}

pub fn encode_transfer_leader(req: &TransferLeaderRequest<ShardRaft>) -> Bytes {
    let mut out = start(KIND_TRANSFER_LEADER);
    put_vote(&mut out, req.from_leader());
    out.put_u64_le(*req.to_node_id());
    put_option_log_id(&mut out, req.last_log_id());
    Bytes::from(out)
}

pub fn encode_transfer_answer(a: &TransferLeaderResponse<ShardRaft>) -> Bytes {
    let mut out = start(KIND_TRANSFER_ANSWER);
    match a {
        Ok(()) => out.put_u8(1),
        Err(TransferLeaderError::VoteChanged { expected, actual }) => {
            out.put_u8(2);
            put_vote(&mut out, expected);
            put_vote(&mut out, actual);
        }
        Err(TransferLeaderError::LogNotFlushed { expected, actual }) => {
            out.put_u8(3);
            put_option_log_id(&mut out, expected.as_ref());
            put_option_log_id(&mut out, actual.as_ref());
        }
    }
    Bytes::from(out)
}

/// A replica's committed membership: the log id of its entry and every member it names
/// (voters and learners, of every config of a joint membership).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembersAnswer {
    pub log_id: Option<LogId>,
    pub ids: Vec<NodeId>,
}

pub fn encode_members_answer(a: &MembersAnswer) -> Bytes {
    let mut out = start(KIND_MEMBERS_ANSWER);
    put_option_log_id(&mut out, a.log_id.as_ref());
    codec::put_len(&mut out, a.ids.len());
    for id in &a.ids {
        out.put_u64_le(*id);
    }
    Bytes::from(out)
}

/// A follower's question to its shard's leader: the read index for a linearizable read
/// served by the follower (`PeerKind::ReadIndex`).
pub fn encode_read_index() -> Bytes {
    Bytes::from(start(KIND_READ_INDEX))
}

/// The leader's answer to [`encode_read_index`]: the log id the asker must have applied before
/// it reads (openraft's read log id, leadership confirmed by a quorum), or why there is none
/// (`NotLeader`, `Failed`, `Stopped`).
pub fn encode_read_index_answer(answer: &Result<LogId, ShardError>) -> Bytes {
    let mut out = start(KIND_READ_INDEX_ANSWER);
    match answer {
        Ok(id) => {
            out.put_u8(ANSWER_OK);
            out.put_u64_le(id.leader_id.term);
            out.put_u64_le(id.index);
        }
        Err(e) => {
            out.put_u8(ANSWER_ERR);
            if put_shard_error(&mut out, e).is_err() {
                // Only an engine error can fail to encode, and a read index has none.
                out.truncate(3);
                out.put_u8(2);
            }
        }
    }
    Bytes::from(out)
}

// ------------------------------------------------------------------ decoding

/// Checks the version and kind, decodes the body and refuses what is left after it. The
/// message is copied once so that decoded keys and values share one buffer (`Reader::bytes`).
fn decode_message<T>(
    bytes: &[u8],
    kind: u8,
    body: impl FnOnce(&mut Reader<'_>) -> Result<T, WireError>,
) -> Result<T, WireError> {
    let buf = Bytes::copy_from_slice(bytes);
    let mut r = Reader { buf: &buf, at: 0 };
    let version = r.u8()?;
    if version != WIRE_FORMAT_VERSION {
        return Err(WireError::Version { version });
    }
    let found = r.u8()?;
    if found != kind {
        return Err(WireError::Kind {
            expected: kind,
            found,
        });
    }
    let value = body(&mut r)?;
    let extra = buf.len() - r.at;
    if extra != 0 {
        return Err(WireError::Trailing { extra });
    }
    Ok(value)
}

fn unknown(what: &'static str, tag: u8, offset: usize) -> WireError {
    WireError::Malformed(DecodeError::Tag { what, tag, offset })
}

pub fn decode_request(bytes: &[u8]) -> Result<Request, WireError> {
    decode_message(bytes, KIND_REQUEST, |r| {
        let at = r.at;
        Ok(match r.u8()? {
            1 => Request::Range(r.range()?),
            2 => Request::Put(r.put()?),
            3 => Request::DeleteRange(r.delete()?),
            17 => Request::Alarm {
                action: match r.tag("alarm action", 2)? {
                    0 => AlarmAction::Get,
                    1 => AlarmAction::Activate,
                    _ => AlarmAction::Deactivate,
                },
                member: r.alarm_member()?,
            },
            18 => {
                let (by, cmd) = crate::auth::read_auth(r)?;
                Request::Auth { by, cmd }
            }
            4 => Request::Txn(r.txn(0)?),
            5 => Request::Compact { revision: r.i64()? },
            6 => Request::LeaseGrant {
                id: r.i64()?,
                ttl: r.i64()?,
            },
            7 => Request::LeaseRevoke { id: r.i64()? },
            8 => Request::Advance { to: r.i64()? },
            9 => Request::LeaseKeepAlive { id: r.i64()? },
            10 => Request::LeaseTimeToLive {
                id: r.i64()?,
                keys: r.bool()?,
            },
            11 => Request::LeaseLeases,
            12 => Request::HashKv { revision: r.i64()? },
            13 => Request::Hash,
            14 => Request::Status,
            15 => Request::Membership(r.membership_change()?),
            16 => Request::History {
                from: ballast_engine::mvcc::export::HistoryCursor {
                    main: r.i64()?,
                    sub: r.i64()?,
                },
                upto: r.i64()?,
                max_entries: usize::try_from(r.u64()?).unwrap_or(usize::MAX),
            },
            tag => return Err(unknown("request", tag, at)),
        })
    })
}

pub fn decode_answer(bytes: &[u8]) -> Result<Result<Reply, ShardError>, WireError> {
    decode_message(bytes, KIND_ANSWER, |r| {
        let at = r.at;
        Ok(match r.u8()? {
            ANSWER_OK => Ok(Reply {
                revision: r.i64()?,
                response: r.response()?,
            }),
            ANSWER_ERR => Err(r.shard_error()?),
            ANSWER_NOT_FORWARDABLE => Err(ShardError::Stopped),
            tag => return Err(unknown("answer", tag, at)),
        })
    })
}

pub fn decode_append(bytes: &[u8]) -> Result<AppendEntriesRequest<ShardRaft>, WireError> {
    decode_message(bytes, KIND_APPEND, |r| {
        let vote = r.vote()?;
        let prev_log_id = r.option_log_id()?;
        let leader_commit = r.option_log_id()?;
        let n = r.count()?;
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            entries.push(r.entry()?);
        }
        Ok(AppendEntriesRequest {
            vote,
            prev_log_id,
            entries,
            leader_commit,
        })
    })
}

pub fn decode_append_response(bytes: &[u8]) -> Result<AppendEntriesResponse<ShardRaft>, WireError> {
    decode_message(bytes, KIND_APPEND_RESPONSE, |r| {
        let at = r.at;
        Ok(match r.u8()? {
            1 => AppendEntriesResponse::Success,
            2 => AppendEntriesResponse::PartialSuccess(r.option_log_id()?),
            3 => AppendEntriesResponse::Conflict,
            4 => AppendEntriesResponse::HigherVote(r.vote()?),
            tag => return Err(unknown("append response", tag, at)),
        })
    })
}

pub fn decode_vote(bytes: &[u8]) -> Result<VoteRequest<ShardRaft>, WireError> {
    decode_message(bytes, KIND_VOTE, |r| {
        Ok(VoteRequest {
            vote: r.vote()?,
            last_log_id: r.option_log_id()?,
            leadership_transfer: r.bool()?,
        })
    })
}

pub fn decode_vote_response(bytes: &[u8]) -> Result<VoteResponse<ShardRaft>, WireError> {
    decode_message(bytes, KIND_VOTE_RESPONSE, |r| {
        Ok(VoteResponse {
            vote: r.vote()?,
            vote_granted: r.bool()?,
            last_log_id: r.option_log_id()?,
        })
    })
}

pub fn decode_snapshot_chunk(bytes: &[u8]) -> Result<SnapshotChunk, WireError> {
    decode_message(bytes, KIND_SNAPSHOT_CHUNK, |r| {
        let transfer = r.u64()?;
        let seq = r.u64()?;
        let first = if r.present()? {
            Some((r.vote()?, r.bytes()?))
        } else {
            None
        };
        Ok(SnapshotChunk {
            transfer,
            seq,
            first,
            done: r.bool()?,
            data: r.bytes()?,
        })
    })
}

pub fn decode_snapshot_answer(bytes: &[u8]) -> Result<SnapshotAnswer, WireError> {
    decode_message(bytes, KIND_SNAPSHOT_ANSWER, |r| {
        let at = r.at;
        Ok(match r.u8()? {
            1 => SnapshotAnswer::Next,
            2 => SnapshotAnswer::Done(r.vote()?),
            tag => return Err(unknown("snapshot answer", tag, at)),
        })
    })
}

pub fn decode_transfer_leader(bytes: &[u8]) -> Result<TransferLeaderRequest<ShardRaft>, WireError> {
    decode_message(bytes, KIND_TRANSFER_LEADER, |r| {
        let from = r.vote()?;
        let to = r.u64()?;
        Ok(TransferLeaderRequest::new(from, to, r.option_log_id()?))
    })
}

pub fn decode_transfer_answer(
    bytes: &[u8],
) -> Result<TransferLeaderResponse<ShardRaft>, WireError> {
    decode_message(bytes, KIND_TRANSFER_ANSWER, |r| {
        let at = r.at;
        Ok(match r.u8()? {
            1 => Ok(()),
            2 => Err(TransferLeaderError::VoteChanged {
                expected: r.vote()?,
                actual: r.vote()?,
            }),
            3 => Err(TransferLeaderError::LogNotFlushed {
                expected: r.option_log_id()?,
                actual: r.option_log_id()?,
            }),
            tag => return Err(unknown("transfer answer", tag, at)),
        })
    })
}

pub fn decode_members_answer(bytes: &[u8]) -> Result<MembersAnswer, WireError> {
    decode_message(bytes, KIND_MEMBERS_ANSWER, |r| {
        let log_id = r.option_log_id()?;
        let n = r.count()?;
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            ids.push(r.u64()?);
        }
        Ok(MembersAnswer { log_id, ids })
    })
}

pub fn decode_read_index(bytes: &[u8]) -> Result<(), WireError> {
    decode_message(bytes, KIND_READ_INDEX, |_| Ok(()))
}

pub fn decode_read_index_answer(bytes: &[u8]) -> Result<Result<LogId, ShardError>, WireError> {
    decode_message(bytes, KIND_READ_INDEX_ANSWER, |r| {
        let at = r.at;
        Ok(match r.u8()? {
            ANSWER_OK => Ok(log_id(r.u64()?, r.u64()?)),
            ANSWER_ERR => Err(r.shard_error()?),
            tag => return Err(unknown("read index answer", tag, at)),
        })
    })
}

/// The wire's readers, on `codec.rs`'s `Reader` (which reads the engine's request types).
impl Reader<'_> {
    fn alarm_member(&mut self) -> Result<AlarmMember, DecodeError> {
        Ok(AlarmMember {
            member_id: self.u64()?,
            alarm: AlarmType(i32::from_le_bytes(self.array()?)),
        })
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn usize(&mut self) -> Result<usize, WireError> {
        let offset = self.at;
        let value = self.u64()?;
        usize::try_from(value).map_err(|_| WireError::TooLarge { value, offset })
    }

    /// A presence byte: `Some` follows when true.
    fn present(&mut self) -> Result<bool, DecodeError> {
        Ok(self.tag("presence", 1)? == 1)
    }

    fn string(&mut self) -> Result<String, WireError> {
        let offset = self.at;
        let bytes = self.bytes()?;
        String::from_utf8(bytes.to_vec()).map_err(|_| WireError::Utf8 { offset })
    }

    fn kv(&mut self) -> Result<KeyValue, DecodeError> {
        Ok(KeyValue {
            key: self.bytes()?,
            create_revision: self.i64()?,
            mod_revision: self.i64()?,
            version: self.i64()?,
            value: self.bytes()?,
            lease: self.i64()?,
        })
    }

    fn option_kv(&mut self) -> Result<Option<KeyValue>, DecodeError> {
        Ok(if self.present()? {
            Some(self.kv()?)
        } else {
            None
        })
    }

    fn kvs(&mut self) -> Result<Vec<KeyValue>, DecodeError> {
        let n = self.count()?;
        let mut kvs = Vec::with_capacity(n);
        for _ in 0..n {
            kvs.push(self.kv()?);
        }
        Ok(kvs)
    }

    fn range_response(&mut self) -> Result<RangeResponse, DecodeError> {
        Ok(RangeResponse {
            kvs: self.kvs()?,
            more: self.bool()?,
            count: self.i64()?,
        })
    }

    fn delete_response(&mut self) -> Result<DeleteRangeResponse, DecodeError> {
        Ok(DeleteRangeResponse {
            deleted: self.i64()?,
            prev_kvs: self.kvs()?,
        })
    }

    fn txn_response(&mut self, depth: usize) -> Result<TxnResponse, WireError> {
        if depth >= TXN_DEPTH_MAX {
            return Err(DecodeError::TooDeep.into());
        }
        let succeeded = self.bool()?;
        let n = self.count()?;
        let mut responses = Vec::with_capacity(n);
        for _ in 0..n {
            let at = self.at;
            responses.push(match self.u8()? {
                1 => ResponseOp::Range(self.range_response()?),
                2 => ResponseOp::Put(PutResponse {
                    prev_kv: self.option_kv()?,
                }),
                3 => ResponseOp::DeleteRange(self.delete_response()?),
                4 => ResponseOp::Txn(self.txn_response(depth + 1)?),
                tag => return Err(unknown("txn response op", tag, at)),
            });
        }
        Ok(TxnResponse {
            succeeded,
            responses,
        })
    }

    fn response(&mut self) -> Result<Response, WireError> {
        let at = self.at;
        Ok(match self.u8()? {
            1 => Response::Range(self.range_response()?),
            2 => Response::Put(PutResponse {
                prev_kv: self.option_kv()?,
            }),
            3 => Response::DeleteRange(self.delete_response()?),
            16 => {
                let n = self.count()?;
                let mut alarms = Vec::with_capacity(n);
                for _ in 0..n {
                    alarms.push(self.alarm_member()?);
                }
                Response::Alarms(alarms)
            }
            17 => Response::Auth(crate::auth::read_outcome(self)?),
            4 => Response::Txn(self.txn_response(0)?),
            5 => Response::Compact,
            6 => Response::LeaseGrant {
                id: self.i64()?,
                ttl: self.i64()?,
            },
            7 => Response::LeaseRevoke,
            8 => Response::Advance,
            9 => Response::LeaseKeepAlive { ttl: self.i64()? },
            10 => {
                let id = self.i64()?;
                let ttl_remaining_secs = self.i64()?;
                let granted_ttl = self.i64()?;
                let n = self.count()?;
                let mut keys = Vec::with_capacity(n);
                for _ in 0..n {
                    keys.push(self.bytes()?);
                }
                Response::LeaseTimeToLive(LeaseTimeToLive {
                    id,
                    ttl_remaining_secs,
                    granted_ttl,
                    keys,
                })
            }
            11 => {
                let n = self.count()?;
                let mut ids = Vec::with_capacity(n);
                for _ in 0..n {
                    ids.push(self.i64()?);
                }
                Response::LeaseLeases(ids)
            }
            12 => Response::HashKv(HashKv {
                hash: self.u32()?,
                compact_revision: self.i64()?,
                hash_revision: self.i64()?,
            }),
            13 => Response::Hash(self.u32()?),
            14 => Response::Noop,
            15 => {
                let n = self.count()?;
                let mut members = Vec::with_capacity(n);
                for _ in 0..n {
                    members.push(RaftMember {
                        id: self.u64()?,
                        addr: self.string()?,
                        is_learner: self.bool()?,
                    });
                }
                Response::Members(members)
            }
            tag => return Err(unknown("response", tag, at)),
        })
    }

    fn membership_change(&mut self) -> Result<MembershipChange, WireError> {
        let at = self.at;
        Ok(match self.u8()? {
            1 => MembershipChange::Add {
                id: self.u64()?,
                addr: self.string()?,
                learner: self.bool()?,
            },
            2 => MembershipChange::Remove { id: self.u64()? },
            3 => MembershipChange::Update {
                id: self.u64()?,
                addr: self.string()?,
            },
            4 => MembershipChange::Promote { id: self.u64()? },
            5 => MembershipChange::Vote { id: self.u64()? },
            tag => return Err(unknown("membership change", tag, at)),
        })
    }

    fn shard_error(&mut self) -> Result<ShardError, WireError> {
        let at = self.at;
        Ok(match self.u8()? {
            1 => ShardError::Engine(self.engine_error()?),
            2 => ShardError::Stopped,
            3 => ShardError::NotLeader {
                leader_id: if self.present()? {
                    Some(self.u64()?)
                } else {
                    None
                },
            },
            4 => ShardError::Failed {
                cause: self.string()?,
            },
            5 => ShardError::Timeout,
            6 => {
                let at = self.at;
                ShardError::Membership(match self.u8()? {
                    1 => MembershipError::NotFound,
                    2 => MembershipError::IdExists,
                    3 => MembershipError::PeerUrlExists,
                    4 => MembershipError::NotLearner,
                    5 => MembershipError::LearnerNotReady,
                    6 => MembershipError::Refused(self.string()?),
                    7 => MembershipError::TooManyLearners,
                    tag => return Err(unknown("membership error", tag, at)),
                })
            }
            tag => return Err(unknown("shard error", tag, at)),
        })
    }

    fn engine_error(&mut self) -> Result<EngineError, WireError> {
        let at = self.at;
        Ok(match self.u8()? {
            1 => EngineError::EmptyKey,
            2 => EngineError::Compacted {
                compact_revision: self.i64()?,
            },
            3 => EngineError::FutureRevision {
                revision: self.i64()?,
                current: self.i64()?,
            },
            4 => EngineError::DuplicateKey,
            5 => EngineError::TooManyOps {
                ops: self.usize()?,
                max: self.usize()?,
            },
            6 => EngineError::KeyNotFound,
            7 => EngineError::LeaseNotFound {
                lease_id: self.i64()?,
            },
            8 => EngineError::LeaseExists {
                lease_id: self.i64()?,
            },
            9 => EngineError::LeaseTtlTooLarge { ttl: self.i64()? },
            10 => EngineError::ValueProvided,
            11 => EngineError::LeaseProvided,
            12 => EngineError::InvalidSortOption,
            tag => return Err(unknown("engine error", tag, at)),
        })
    }

    fn vote(&mut self) -> Result<Vote, DecodeError> {
        Ok(Vote {
            leader_id: LeaderId {
                term: self.u64()?,
                voted_for: self.u64()?,
            },
            committed: self.bool()?,
        })
    }

    fn option_log_id(&mut self) -> Result<Option<LogId>, DecodeError> {
        Ok(if self.present()? {
            Some(log_id(self.u64()?, self.u64()?))
        } else {
            None
        })
    }

    fn entry(&mut self) -> Result<Entry, WireError> {
        let term = self.u64()?;
        let index = self.u64()?;
        let kind = self.u8()?;
        let payload = self.bytes()?;
        // The log store's records count from 1 (see the module comment).
        let record_index = index.checked_add(1).ok_or_else(|| WireError::Entry {
            index,
            reason: "index past the last one a log can hold".into(),
        })?;
        let record = LogRecord {
            term,
            index: record_index,
            kind,
            payload,
        };
        entry_of(&record).map_err(|e| WireError::Entry {
            index,
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests;
