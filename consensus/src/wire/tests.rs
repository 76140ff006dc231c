//! Tests of the peer wire encoding: every message round-trips, one of each is pinned byte for
//! byte, and damaged input (every truncation, every single-byte change, bad version, kind, tag
//! or text, trailing bytes, deep nesting, huge counts) is refused without a panic.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use ballast_engine::{
    Compare, CompareResult, CompareTarget, CompareValue, DeleteRangeRequest, PutRequest,
    RangeRequest, RequestOp, SortOrder, SortTarget, TxnRequest,
};
use openraft::impls::BasicNode;
use openraft::EntryPayload;

use super::*;
use crate::codec::LogCommand;
use crate::membership::{MembershipChange, MembershipError};
use crate::shard::{RaftMember, ShardStatus};
use crate::types::Membership;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// `Request`, `Response` and `AppendEntriesRequest` have no `PartialEq`; their `Debug` shows
/// every field.
fn assert_same<T: Debug>(decoded: &T, original: &T) {
    assert_eq!(format!("{decoded:?}"), format!("{original:?}"));
}

fn vote(term: u64, voted_for: u64, committed: bool) -> Vote {
    Vote {
        leader_id: LeaderId { term, voted_for },
        committed,
    }
}

fn kv(key: &str, rev: i64) -> KeyValue {
    KeyValue {
        key: b(key),
        create_revision: rev,
        mod_revision: rev + 3,
        version: 4,
        value: Bytes::from(vec![0u8, 255, 7]),
        lease: -5,
    }
}

fn nested_txn_request() -> TxnRequest {
    let inner = TxnRequest {
        compare: vec![],
        success: vec![RequestOp::Put(PutRequest::default())],
        failure: vec![RequestOp::DeleteRange(DeleteRangeRequest::default())],
    };
    TxnRequest {
        compare: vec![
            Compare {
                result: CompareResult::Greater,
                target: CompareTarget::Mod,
                key: b("c"),
                range_end: b("d"),
                target_union: Some(CompareValue::ModRevision(9)),
            },
            Compare {
                result: CompareResult::NotEqual,
                target: CompareTarget::Value,
                key: b("v"),
                range_end: Bytes::new(),
                target_union: Some(CompareValue::Value(b("x"))),
            },
        ],
        success: vec![
            RequestOp::Range(RangeRequest {
                key: b("a"),
                range_end: b("z"),
                limit: 3,
                sort_order: SortOrder::Descend,
                sort_target: SortTarget::Mod,
                ..RangeRequest::default()
            }),
            RequestOp::Txn(inner),
        ],
        failure: vec![RequestOp::Put(PutRequest {
            key: b("k"),
            value: b("v"),
            lease: 7,
            prev_kv: true,
            ..PutRequest::default()
        })],
    }
}

fn every_request() -> Vec<Request> {
    vec![
        Request::Range(RangeRequest {
            key: b("a"),
            range_end: b("\0"),
            limit: 10,
            revision: 4,
            sort_order: SortOrder::Ascend,
            sort_target: SortTarget::Value,
            serializable: true,
            keys_only: true,
            count_only: true,
            min_mod_revision: 1,
            max_mod_revision: 9,
            min_create_revision: 2,
            max_create_revision: 8,
        }),
        Request::Put(PutRequest {
            key: b("k"),
            value: b("v"),
            lease: i64::MAX,
            prev_kv: true,
            ignore_value: true,
            ignore_lease: true,
        }),
        Request::DeleteRange(DeleteRangeRequest {
            key: b("a"),
            range_end: b("b"),
            prev_kv: true,
        }),
        Request::Txn(nested_txn_request()),
        Request::Txn(TxnRequest::default()),
        Request::Alarm {
            action: AlarmAction::Activate,
            member: AlarmMember {
                alarm: AlarmType::NOSPACE,
                member_id: u64::MAX,
            },
        },
        Request::Alarm {
            action: AlarmAction::Deactivate,
            member: AlarmMember {
                alarm: AlarmType(-7),
                member_id: 1,
            },
        },
        Request::Alarm {
            action: AlarmAction::Get,
            member: AlarmMember::default(),
        },
        Request::Auth {
            by: "root".into(),
            cmd: crate::auth::AuthCommand::UserAdd {
                name: "u".into(),
                password_hash: b("$2b$10$x"),
                no_password: false,
            },
        },
        Request::Auth {
            by: String::new(),
            cmd: crate::auth::AuthCommand::Authenticate {
                name: "u".into(),
                token_prefix: "abcdefghijklmnop".into(),
            },
        },
        Request::Compact { revision: 42 },
        Request::LeaseGrant { id: 0, ttl: 60 },
        Request::LeaseRevoke { id: -1 },
        Request::Advance { to: 1 << 40 },
        Request::LeaseKeepAlive { id: 9 },
        Request::LeaseTimeToLive { id: 9, keys: true },
        Request::LeaseTimeToLive { id: 9, keys: false },
        Request::LeaseLeases,
        Request::HashKv { revision: 0 },
        Request::Hash,
        Request::Status,
        Request::History {
            from: ballast_engine::mvcc::export::HistoryCursor { main: 7, sub: 2 },
            upto: 1 << 33,
            max_entries: 1024,
        },
        Request::Membership(MembershipChange::Add {
            id: u64::MAX,
            addr: "http://127.0.0.1:2380".into(),
            learner: true,
        }),
        Request::Membership(MembershipChange::Add {
            id: 1,
            addr: String::new(),
            learner: false,
        }),
        Request::Membership(MembershipChange::Remove { id: 7 }),
        Request::Membership(MembershipChange::Update {
            id: 7,
            addr: "http://h:1".into(),
        }),
        Request::Membership(MembershipChange::Promote { id: 8 }),
        Request::Membership(MembershipChange::Vote { id: 9 }),
    ]
}

fn nested_txn_response() -> TxnResponse {
    let inner = TxnResponse {
        succeeded: false,
        responses: vec![ResponseOp::Put(PutResponse { prev_kv: None })],
    };
    TxnResponse {
        succeeded: true,
        responses: vec![
            ResponseOp::Range(RangeResponse {
                kvs: vec![kv("a", 1), kv("b", 2)],
                more: true,
                count: 5,
            }),
            ResponseOp::Put(PutResponse {
                prev_kv: Some(kv("p", 3)),
            }),
            ResponseOp::DeleteRange(DeleteRangeResponse {
                deleted: 1,
                prev_kvs: vec![kv("d", 4)],
            }),
            ResponseOp::Txn(inner),
            ResponseOp::Txn(TxnResponse::default()),
        ],
    }
}

fn every_response() -> Vec<Response> {
    vec![
        Response::Range(RangeResponse {
            kvs: vec![kv("a", 1), KeyValue::default()],
            more: false,
            count: 2,
        }),
        Response::Range(RangeResponse::default()),
        Response::Put(PutResponse {
            prev_kv: Some(kv("k", 8)),
        }),
        Response::Put(PutResponse { prev_kv: None }),
        Response::DeleteRange(DeleteRangeResponse {
            deleted: 2,
            prev_kvs: vec![kv("x", 1), kv("y", 2)],
        }),
        Response::Txn(nested_txn_response()),
        Response::Alarms(vec![]),
        Response::Auth(Ok(crate::auth::AuthAnswer::Done)),
        Response::Auth(Ok(crate::auth::AuthAnswer::Token("abc.12".into()))),
        Response::Auth(Err(crate::auth::AuthError::PermissionDenied)),
        Response::Alarms(vec![
            AlarmMember {
                alarm: AlarmType::NOSPACE,
                member_id: 9,
            },
            AlarmMember {
                alarm: AlarmType::CORRUPT,
                member_id: u64::MAX,
            },
        ]),
        Response::Compact,
        Response::LeaseGrant { id: 77, ttl: 10 },
        Response::LeaseRevoke,
        Response::Advance,
        Response::LeaseKeepAlive { ttl: -1 },
        Response::LeaseTimeToLive(LeaseTimeToLive {
            id: 3,
            ttl_remaining_secs: -2,
            granted_ttl: 60,
            keys: vec![b("k1"), Bytes::new(), b("k2")],
        }),
        Response::LeaseTimeToLive(LeaseTimeToLive {
            id: 3,
            ttl_remaining_secs: 5,
            granted_ttl: 60,
            keys: vec![],
        }),
        Response::LeaseLeases(vec![1, i64::MIN, 3]),
        Response::LeaseLeases(vec![]),
        Response::HashKv(HashKv {
            hash: 0xdead_beef,
            compact_revision: -1,
            hash_revision: 12,
        }),
        Response::Hash(u32::MAX),
        Response::Noop,
        Response::Members(vec![]),
        Response::Members(vec![
            RaftMember {
                id: 1,
                addr: "http://a:1".into(),
                is_learner: false,
            },
            RaftMember {
                id: u64::MAX,
                addr: "http://b:2".into(),
                is_learner: true,
            },
        ]),
    ]
}

fn every_engine_error() -> Vec<EngineError> {
    vec![
        EngineError::EmptyKey,
        EngineError::Compacted {
            compact_revision: 5,
        },
        EngineError::FutureRevision {
            revision: 9,
            current: 8,
        },
        EngineError::DuplicateKey,
        EngineError::TooManyOps { ops: 129, max: 128 },
        EngineError::KeyNotFound,
        EngineError::LeaseNotFound { lease_id: 4 },
        EngineError::LeaseExists { lease_id: -4 },
        EngineError::LeaseTtlTooLarge { ttl: i64::MAX },
        EngineError::ValueProvided,
        EngineError::LeaseProvided,
        EngineError::InvalidSortOption,
    ]
}

fn every_shard_error() -> Vec<ShardError> {
    let mut errors: Vec<ShardError> = every_engine_error()
        .into_iter()
        .map(ShardError::Engine)
        .collect();
    errors.extend([
        ShardError::Stopped,
        ShardError::Timeout,
        ShardError::Membership(MembershipError::NotFound),
        ShardError::Membership(MembershipError::IdExists),
        ShardError::Membership(MembershipError::PeerUrlExists),
        ShardError::Membership(MembershipError::NotLearner),
        ShardError::Membership(MembershipError::LearnerNotReady),
        ShardError::Membership(MembershipError::TooManyLearners),
        ShardError::Membership(MembershipError::Refused("in progress".into())),
        ShardError::NotLeader { leader_id: None },
        ShardError::NotLeader {
            leader_id: Some(u64::MAX),
        },
        ShardError::Failed {
            cause: "fdatasync: Input/output error — ünïcode".into(),
        },
        ShardError::Failed {
            cause: String::new(),
        },
    ]);
    errors
}

fn every_answer() -> Vec<Result<Reply, ShardError>> {
    let mut answers: Vec<Result<Reply, ShardError>> = every_response()
        .into_iter()
        .enumerate()
        .map(|(i, response)| {
            Ok(Reply {
                revision: i as i64 - 1,
                response,
            })
        })
        .collect();
    answers.extend(every_shard_error().into_iter().map(Err));
    answers
}

fn membership() -> Membership {
    let nodes = BTreeMap::from([
        (
            1,
            BasicNode {
                addr: "127.0.0.1:2380".into(),
            },
        ),
        (
            2,
            BasicNode {
                addr: "[::1]:2381".into(),
            },
        ),
        (3, BasicNode::default()),
    ]);
    Membership::new(vec![BTreeSet::from([1, 2]), BTreeSet::from([2])], nodes)
        .expect("valid membership")
}

fn every_append() -> Vec<AppendEntriesRequest<ShardRaft>> {
    let entries = vec![
        Entry {
            log_id: log_id(0, 0),
            payload: EntryPayload::Membership(membership()),
        },
        Entry {
            log_id: log_id(2, 1),
            payload: EntryPayload::Blank,
        },
        Entry {
            log_id: log_id(2, 2),
            payload: EntryPayload::Normal(LogCommand::Put(PutRequest {
                key: b("k"),
                value: b("v"),
                ..PutRequest::default()
            })),
        },
        Entry {
            log_id: log_id(2, 3),
            payload: EntryPayload::Normal(LogCommand::Txn(nested_txn_request())),
        },
    ];
    vec![
        AppendEntriesRequest {
            vote: vote(2, 1, true),
            prev_log_id: None,
            entries: entries.clone(),
            leader_commit: None,
        },
        AppendEntriesRequest {
            vote: vote(2, 1, true),
            prev_log_id: Some(log_id(1, 7)),
            entries: entries[1..].to_vec(),
            leader_commit: Some(log_id(1, 6)),
        },
        // A heartbeat.
        AppendEntriesRequest {
            vote: vote(u64::MAX, u64::MAX, false),
            prev_log_id: Some(log_id(u64::MAX, u64::MAX)),
            entries: vec![],
            leader_commit: Some(log_id(0, 0)),
        },
    ]
}

fn every_append_response() -> Vec<AppendEntriesResponse<ShardRaft>> {
    vec![
        AppendEntriesResponse::Success,
        AppendEntriesResponse::PartialSuccess(None),
        AppendEntriesResponse::PartialSuccess(Some(log_id(3, 0))),
        AppendEntriesResponse::Conflict,
        AppendEntriesResponse::HigherVote(vote(4, 2, false)),
        AppendEntriesResponse::HigherVote(vote(4, 2, true)),
    ]
}

fn every_vote() -> Vec<VoteRequest<ShardRaft>> {
    vec![
        VoteRequest {
            vote: vote(5, 3, false),
            last_log_id: None,
            leadership_transfer: false,
        },
        VoteRequest {
            vote: vote(5, 3, false),
            last_log_id: Some(log_id(4, 10)),
            leadership_transfer: true,
        },
    ]
}

fn every_vote_response() -> Vec<VoteResponse<ShardRaft>> {
    vec![
        VoteResponse {
            vote: vote(5, 3, false),
            vote_granted: true,
            last_log_id: Some(log_id(4, 10)),
        },
        VoteResponse {
            vote: vote(6, 2, true),
            vote_granted: false,
            last_log_id: None,
        },
    ]
}

/// A decoder of one message kind, its result dropped: for the damage tests.
type Decoder = fn(&[u8]) -> bool;

/// Every test message encoded, with the decoder of its kind.
fn every_encoding() -> Vec<(Bytes, Decoder)> {
    let mut out: Vec<(Bytes, Decoder)> = Vec::new();
    for r in every_request() {
        out.push((encode_request(&r), |b| decode_request(b).is_ok()));
    }
    for a in every_answer() {
        out.push((encode_answer(&a), |b| decode_answer(b).is_ok()));
    }
    for a in every_append() {
        out.push((encode_append(&a), |b| decode_append(b).is_ok()));
    }
    for r in every_append_response() {
        out.push((encode_append_response(&r), |b| {
            decode_append_response(b).is_ok()
        }));
    }
    for v in every_vote() {
        out.push((encode_vote(&v), |b| decode_vote(b).is_ok()));
    }
    for v in every_vote_response() {
        out.push((encode_vote_response(&v), |b| {
            decode_vote_response(b).is_ok()
        }));
    }
    for c in every_snapshot_chunk() {
        out.push((encode_snapshot_chunk(&c), |b| {
            decode_snapshot_chunk(b).is_ok()
        }));
    }
    for a in [SnapshotAnswer::Next, SnapshotAnswer::Done(vote(7, 2, true))] {
        out.push((encode_snapshot_answer(&a), |b| {
            decode_snapshot_answer(b).is_ok()
        }));
    }
    for t in every_transfer_leader() {
        out.push((encode_transfer_leader(&t), |b| {
            decode_transfer_leader(b).is_ok()
        }));
    }
    for a in every_transfer_answer() {
        out.push((encode_transfer_answer(&a), |b| {
            decode_transfer_answer(b).is_ok()
        }));
    }
    for a in every_members_answer() {
        out.push((encode_members_answer(&a), |b| {
            decode_members_answer(b).is_ok()
        }));
    }
    out.push((encode_read_index(), |b| decode_read_index(b).is_ok()));
    for a in every_read_index_answer() {
        out.push((encode_read_index_answer(&a), |b| {
            decode_read_index_answer(b).is_ok()
        }));
    }
    out
}

fn every_read_index_answer() -> Vec<Result<LogId, ShardError>> {
    vec![
        Ok(log_id(3, 41)),
        Ok(log_id(u64::MAX, 0)),
        Err(ShardError::NotLeader { leader_id: Some(9) }),
        Err(ShardError::NotLeader { leader_id: None }),
        Err(ShardError::Failed {
            cause: "log write failed".into(),
        }),
        Err(ShardError::Stopped),
    ]
}

#[test]
fn read_indexes_and_their_answers_round_trip() {
    assert_eq!(decode_read_index(&encode_read_index()), Ok(()));
    for a in every_read_index_answer() {
        assert_eq!(
            decode_read_index_answer(&encode_read_index_answer(&a)),
            Ok(a)
        );
    }
    // A read index is not an answer, nor a forwarded request.
    assert_eq!(
        decode_read_index_answer(&encode_read_index()),
        Err(WireError::Kind {
            expected: KIND_READ_INDEX_ANSWER,
            found: KIND_READ_INDEX,
        })
    );
    assert!(decode_request(&encode_read_index()).is_err());
}

/// The layout pinned byte for byte: a change here is a new [`WIRE_FORMAT_VERSION`].
#[test]
fn a_read_index_and_its_answer_encode_as_documented() {
    assert_eq!(&encode_read_index()[..], &[1, 12]);
    #[rustfmt::skip]
    let expected: &[u8] = &[
        1, 13,                        // version, kind read index answer
        1,                            // Ok
        3, 0, 0, 0, 0, 0, 0, 0,       // term
        0x29, 0, 0, 0, 0, 0, 0, 0,    // index (openraft's, 0-based)
    ];
    assert_eq!(&encode_read_index_answer(&Ok(log_id(3, 41)))[..], expected);
    let not_leader = Err(ShardError::NotLeader { leader_id: Some(4) });
    #[rustfmt::skip]
    let expected: &[u8] = &[
        1, 13,                        // version, kind read index answer
        2, 3,                         // Err, NotLeader
        1, 4, 0, 0, 0, 0, 0, 0, 0,    // leader_id present, 4
    ];
    assert_eq!(&encode_read_index_answer(&not_leader)[..], expected);
}

fn every_members_answer() -> Vec<MembersAnswer> {
    vec![
        MembersAnswer {
            log_id: Some(log_id(3, 41)),
            ids: vec![1, u64::MAX, 7],
        },
        MembersAnswer {
            log_id: None,
            ids: Vec::new(),
        },
    ]
}

#[test]
fn members_answers_round_trip() {
    for a in every_members_answer() {
        assert_eq!(decode_members_answer(&encode_members_answer(&a)), Ok(a));
    }
}

fn every_transfer_leader() -> Vec<TransferLeaderRequest<ShardRaft>> {
    vec![
        TransferLeaderRequest::new(vote(4, 1, true), u64::MAX - 1, Some(log_id(4, 77))),
        TransferLeaderRequest::new(vote(1, 9, true), 2, None),
    ]
}

fn every_transfer_answer() -> Vec<TransferLeaderResponse<ShardRaft>> {
    vec![
        Ok(()),
        Err(TransferLeaderError::VoteChanged {
            expected: vote(4, 1, true),
            actual: vote(5, 2, false),
        }),
        Err(TransferLeaderError::LogNotFlushed {
            expected: Some(log_id(4, 77)),
            actual: None,
        }),
    ]
}

#[test]
fn transfer_leader_messages_round_trip() {
    for t in every_transfer_leader() {
        assert_eq!(decode_transfer_leader(&encode_transfer_leader(&t)), Ok(t));
    }
    for a in every_transfer_answer() {
        assert_eq!(decode_transfer_answer(&encode_transfer_answer(&a)), Ok(a));
    }
    let request = encode_transfer_leader(&every_transfer_leader()[0]);
    assert!(matches!(
        decode_transfer_answer(&request),
        Err(WireError::Kind { .. })
    ));
}

fn every_snapshot_chunk() -> Vec<SnapshotChunk> {
    vec![
        SnapshotChunk {
            transfer: u64::MAX - 3,
            seq: 0,
            first: Some((vote(9, 1, true), b("meta bytes"))),
            done: false,
            data: b("BLSX chunk"),
        },
        SnapshotChunk {
            transfer: 17,
            seq: 41,
            first: None,
            done: true,
            data: Bytes::new(),
        },
    ]
}

#[test]
fn snapshot_chunks_and_answers_round_trip() {
    for c in every_snapshot_chunk() {
        assert_eq!(
            decode_snapshot_chunk(&encode_snapshot_chunk(&c)).unwrap(),
            c
        );
    }
    for a in [
        SnapshotAnswer::Next,
        SnapshotAnswer::Done(vote(7, 2, false)),
    ] {
        assert_eq!(
            decode_snapshot_answer(&encode_snapshot_answer(&a)).unwrap(),
            a
        );
    }
    // A chunk is not an answer, nor the other way round.
    let chunk = encode_snapshot_chunk(&every_snapshot_chunk()[0]);
    assert!(matches!(
        decode_snapshot_answer(&chunk),
        Err(WireError::Kind { .. })
    ));
}

#[test]
fn every_request_round_trips() {
    for request in every_request() {
        let bytes = encode_request(&request);
        assert_eq!(bytes[..2], [WIRE_FORMAT_VERSION, KIND_REQUEST]);
        assert_same(&decode_request(&bytes).expect("decodes"), &request);
    }
}

#[test]
fn every_answer_round_trips() {
    for answer in every_answer() {
        let bytes = encode_answer(&answer);
        assert_eq!(bytes[..2], [WIRE_FORMAT_VERSION, KIND_ANSWER]);
        let decoded = decode_answer(&bytes).expect("decodes");
        assert_same(&decoded, &answer);
        if let (Err(decoded), Err(original)) = (&decoded, &answer) {
            assert_eq!(decoded, original);
        }
    }
}

#[test]
fn a_status_answer_is_not_forwardable_and_reads_as_stopped() {
    let status = Ok(Reply {
        revision: 7,
        response: Response::Status(ShardStatus {
            revision: 7,
            ..ShardStatus::default()
        }),
    });
    let bytes = encode_answer(&status);
    assert_eq!(
        &bytes[..],
        &[WIRE_FORMAT_VERSION, KIND_ANSWER, ANSWER_NOT_FORWARDABLE]
    );
    assert_eq!(
        decode_answer(&bytes).expect("decodes").map(|_| ()),
        Err(ShardError::Stopped)
    );
}

#[test]
fn appends_round_trip_with_openrafts_indexes() {
    for rpc in every_append() {
        let bytes = encode_append(&rpc);
        let decoded = decode_append(&bytes).expect("decodes");
        assert_eq!(decoded.vote, rpc.vote);
        assert_eq!(decoded.prev_log_id, rpc.prev_log_id);
        assert_eq!(decoded.leader_commit, rpc.leader_commit);
        assert_eq!(decoded.entries, rpc.entries);
        assert_same(&decoded, &rpc);
    }
    // The first entry, openraft index 0, is index 0 on the wire too (no shift): the bytes
    // after the header, vote (17), prev (1) and commit (1) and the count (4) are its term 0 and
    // its index 0.
    let bytes = encode_append(&every_append()[0]);
    let first = 2 + 17 + 1 + 1 + 4;
    assert_eq!(bytes[first..first + 16], [0u8; 16]);
}

#[test]
fn every_append_response_round_trips() {
    for r in every_append_response() {
        let bytes = encode_append_response(&r);
        assert_eq!(bytes[..2], [WIRE_FORMAT_VERSION, KIND_APPEND_RESPONSE]);
        assert_eq!(decode_append_response(&bytes), Ok(r));
    }
}

#[test]
fn votes_and_their_responses_round_trip() {
    for v in every_vote() {
        assert_eq!(decode_vote(&encode_vote(&v)), Ok(v));
    }
    for v in every_vote_response() {
        assert_eq!(decode_vote_response(&encode_vote_response(&v)), Ok(v));
    }
}

/// The layout pinned byte for byte: a change here is a new [`WIRE_FORMAT_VERSION`].
#[test]
fn a_vote_request_and_a_not_leader_answer_encode_as_documented() {
    let rpc = VoteRequest {
        vote: vote(2, 3, false),
        last_log_id: Some(log_id(1, 0x0102)),
        leadership_transfer: true,
    };
    #[rustfmt::skip]
    let expected: &[u8] = &[
        1, 5,                         // version, kind vote
        2, 0, 0, 0, 0, 0, 0, 0,       // term
        3, 0, 0, 0, 0, 0, 0, 0,       // voted_for
        0,                            // committed
        1,                            // last_log_id present
        1, 0, 0, 0, 0, 0, 0, 0,       // its term
        2, 1, 0, 0, 0, 0, 0, 0,       // its index
        1,                            // leadership_transfer
    ];
    assert_eq!(&encode_vote(&rpc)[..], expected);
    let answer = Err(ShardError::NotLeader { leader_id: Some(4) });
    #[rustfmt::skip]
    let expected: &[u8] = &[
        1, 2,                         // version, kind answer
        2, 3,                         // Err, NotLeader
        1, 4, 0, 0, 0, 0, 0, 0, 0,    // leader_id present, 4
    ];
    assert_eq!(&encode_answer(&answer)[..], expected);
}

#[test]
fn every_truncation_is_refused() {
    for (bytes, decode) in every_encoding() {
        assert!(decode(&bytes), "{bytes:?} decodes whole");
        for cut in 0..bytes.len() {
            assert!(!decode(&bytes[..cut]), "{bytes:?} cut at {cut}");
        }
    }
}

/// Every byte of every message replaced by a few values: decoding answers (most often with an
/// error) and never panics.
#[test]
fn changed_bytes_never_panic() {
    let mut decoded = 0usize;
    for (bytes, decode) in every_encoding() {
        for at in 0..bytes.len() {
            for value in [0u8, 1, 2, 3, 0x7f, 0x80, 0xff] {
                let mut changed = bytes.to_vec();
                changed[at] = value;
                decoded += usize::from(decode(&changed));
            }
        }
    }
    assert!(decoded > 0, "some changes (an i64 field) still decode");
}

/// A request or Raft message that decodes is the only encoding of what it decodes to: bytes
/// changed into another valid message re-encode to themselves.
#[test]
fn decoding_is_canonical() {
    let mut encodings: Vec<Bytes> = every_request().iter().map(encode_request).collect();
    encodings.extend(every_vote().iter().map(encode_vote));
    encodings.extend(every_vote_response().iter().map(encode_vote_response));
    encodings.extend(every_append_response().iter().map(encode_append_response));
    for bytes in encodings {
        for at in 0..bytes.len() {
            for value in [0u8, 1, 2, 0xff] {
                let mut changed = bytes.to_vec();
                changed[at] = value;
                let again = match changed[1] {
                    KIND_REQUEST => decode_request(&changed).map(|r| encode_request(&r)),
                    KIND_VOTE => decode_vote(&changed).map(|r| encode_vote(&r)),
                    KIND_VOTE_RESPONSE => {
                        decode_vote_response(&changed).map(|r| encode_vote_response(&r))
                    }
                    _ => decode_append_response(&changed).map(|r| encode_append_response(&r)),
                };
                if let Ok(again) = again {
                    assert_eq!(&again[..], &changed[..]);
                }
            }
        }
    }
}

#[test]
fn damage_is_refused() {
    // Another version.
    let mut v = encode_request(&Request::Hash).to_vec();
    v[0] = 2;
    assert_eq!(
        decode_request(&v).map(|_| ()),
        Err(WireError::Version { version: 2 })
    );
    // Another kind of message.
    let append = encode_append(&every_append()[2]);
    assert_eq!(
        decode_vote(&append).map(|_| ()),
        Err(WireError::Kind {
            expected: KIND_VOTE,
            found: KIND_APPEND
        })
    );
    // Unknown tags: request, answer, response, shard error, engine error, append response.
    for (mut bytes, at) in [
        (encode_request(&Request::Hash).to_vec(), 2),
        (encode_answer(&Err(ShardError::Stopped)).to_vec(), 2),
        (
            encode_answer(&Ok(Reply {
                revision: 1,
                response: Response::Noop,
            }))
            .to_vec(),
            11,
        ),
        (encode_answer(&Err(ShardError::Stopped)).to_vec(), 3),
        (
            encode_answer(&Err(ShardError::Engine(EngineError::EmptyKey))).to_vec(),
            4,
        ),
        (
            encode_append_response(&AppendEntriesResponse::Success).to_vec(),
            2,
        ),
    ] {
        bytes[at] = 99;
        let refused = match bytes[1] {
            KIND_REQUEST => decode_request(&bytes).map(|_| ()),
            KIND_ANSWER => decode_answer(&bytes).map(|_| ()),
            _ => decode_append_response(&bytes).map(|_| ()),
        };
        assert_eq!(
            refused,
            Err(WireError::Malformed(DecodeError::Tag {
                what: match (bytes[1], at) {
                    (KIND_REQUEST, _) => "request",
                    (KIND_ANSWER, 2) => "answer",
                    (KIND_ANSWER, 11) => "response",
                    (KIND_ANSWER, 3) => "shard error",
                    (KIND_ANSWER, _) => "engine error",
                    _ => "append response",
                },
                tag: 99,
                offset: at
            })),
            "{bytes:?}"
        );
    }
    // A trailing byte.
    let mut trailing = encode_vote(&every_vote()[0]).to_vec();
    trailing.push(0);
    assert_eq!(
        decode_vote(&trailing),
        Err(WireError::Trailing { extra: 1 })
    );
    // A presence byte other than 0/1 (the last_log_id of a vote request).
    let mut presence = encode_vote(&every_vote()[0]).to_vec();
    presence[19] = 2;
    assert!(matches!(
        decode_vote(&presence),
        Err(WireError::Malformed(DecodeError::Tag {
            what: "presence",
            tag: 2,
            offset: 19
        }))
    ));
    // A failure cause that is not UTF-8.
    let mut cause = encode_answer(&Err(ShardError::Failed { cause: "ab".into() })).to_vec();
    *cause.last_mut().expect("non-empty") = 0xff;
    assert_eq!(
        decode_answer(&cause).map(|_| ()),
        Err(WireError::Utf8 { offset: 4 })
    );
}

/// The offset of the first entry's `index` in an append with no log ids.
const FIRST_ENTRY_INDEX_AT: usize = 2 + 17 + 1 + 1 + 4 + 8;

#[test]
fn damaged_entries_are_refused() {
    let rpc = AppendEntriesRequest::<ShardRaft> {
        vote: vote(1, 1, true),
        prev_log_id: None,
        entries: vec![Entry {
            log_id: log_id(1, 0),
            payload: EntryPayload::Blank,
        }],
        leader_commit: None,
    };
    let bytes = encode_append(&rpc).to_vec();
    // An unknown entry kind.
    let mut kind = bytes.clone();
    kind[FIRST_ENTRY_INDEX_AT + 8] = 9;
    assert!(matches!(
        decode_append(&kind),
        Err(WireError::Entry { index: 0, .. })
    ));
    // An index no log can hold (its record index would overflow).
    let mut index = bytes.clone();
    index[FIRST_ENTRY_INDEX_AT..FIRST_ENTRY_INDEX_AT + 8].fill(0xff);
    assert!(matches!(
        decode_append(&index),
        Err(WireError::Entry {
            index: u64::MAX,
            ..
        })
    ));
    // A normal entry whose command is damaged (an empty payload).
    let mut normal = bytes;
    normal[FIRST_ENTRY_INDEX_AT + 8] = crate::log_store::KIND_NORMAL;
    assert!(matches!(
        decode_append(&normal),
        Err(WireError::Entry { index: 0, .. })
    ));
}

/// `n` txns, each nested in the one before.
fn nested(n: usize) -> (Request, Result<Reply, ShardError>) {
    let mut request = TxnRequest::default();
    let mut response = TxnResponse::default();
    for _ in 1..n {
        request = TxnRequest {
            success: vec![RequestOp::Txn(request)],
            ..TxnRequest::default()
        };
        response = TxnResponse {
            succeeded: true,
            responses: vec![ResponseOp::Txn(response)],
        };
    }
    let answer = Ok(Reply {
        revision: 1,
        response: Response::Txn(response),
    });
    (Request::Txn(request), answer)
}

#[test]
fn txns_nest_up_to_the_bound() {
    let (request, answer) = nested(TXN_DEPTH_MAX);
    assert_same(
        &decode_request(&encode_request(&request)).expect("decodes"),
        &request,
    );
    assert_same(
        &decode_answer(&encode_answer(&answer)).expect("decodes"),
        &answer,
    );
    let (request, answer) = nested(TXN_DEPTH_MAX + 1);
    let too_deep = Err(WireError::Malformed(DecodeError::TooDeep));
    assert_eq!(
        decode_request(&encode_request(&request)).map(|_| ()),
        too_deep
    );
    assert_eq!(decode_answer(&encode_answer(&answer)).map(|_| ()), too_deep);
}

#[test]
fn a_count_past_the_bytes_left_is_refused_before_allocating() {
    let mut bytes = encode_answer(&Ok(Reply {
        revision: 1,
        response: Response::LeaseLeases(vec![]),
    }))
    .to_vec();
    // The count (the last four bytes) says u32::MAX ids; none follow.
    let n = bytes.len();
    bytes[n - 4..].fill(0xff);
    assert!(matches!(
        decode_answer(&bytes),
        Err(WireError::Malformed(DecodeError::Truncated { .. }))
    ));
    let mut append = encode_append(&every_append()[2]).to_vec();
    let n = append.len();
    append[n - 4..].fill(0xff);
    assert!(matches!(
        decode_append(&append),
        Err(WireError::Malformed(DecodeError::Truncated { .. }))
    ));
}
