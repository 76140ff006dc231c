//! Field-by-field conversion between etcd's protobuf messages (`ballast_proto`) and the engine's
//! data model. The only place that knows both; every field keeps etcd's meaning.
//!
//! Enum values outside etcd's range are not silently mapped: `range_request_from_pb` reports them
//! so the caller can answer etcd's "invalid sort option".

use ballast_engine as engine;
use ballast_proto::etcdserverpb as pb;
use ballast_proto::mvccpb;

pub fn kv_to_pb(kv: engine::KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

pub fn event_to_pb(ev: engine::Event) -> mvccpb::Event {
    let kind = match ev.kind {
        engine::EventKind::Put => mvccpb::event::EventType::Put,
        engine::EventKind::Delete => mvccpb::event::EventType::Delete,
    };
    mvccpb::Event {
        r#type: kind as i32,
        kv: Some(kv_to_pb(ev.kv)),
        prev_kv: ev.prev_kv.map(kv_to_pb),
    }
}

/// Converts a range request; `InvalidSortOption` when sort_target is not one of etcd's values
/// (etcd 3.4 has no sorter for it).
pub fn range_request_from_pb(r: pb::RangeRequest) -> Result<engine::RangeRequest, engine::Error> {
    use pb::range_request::{SortOrder as O, SortTarget as T};
    let sort_target = match T::try_from(r.sort_target) {
        Ok(T::Key) => engine::SortTarget::Key,
        Ok(T::Version) => engine::SortTarget::Version,
        Ok(T::Create) => engine::SortTarget::Create,
        Ok(T::Mod) => engine::SortTarget::Mod,
        Ok(T::Value) => engine::SortTarget::Value,
        Err(_) => return Err(engine::Error::InvalidSortOption),
    };
    let (sort_order, sort_target) = match O::try_from(r.sort_order) {
        Ok(O::None) => (engine::SortOrder::None, sort_target),
        Ok(O::Ascend) => (engine::SortOrder::Ascend, sort_target),
        Ok(O::Descend) => (engine::SortOrder::Descend, sort_target),
        // etcd 3.4 accepts an unknown order, picks a sorter for the target but then sorts
        // neither way: the keys come back in key order, whatever the target.
        Err(_) => (engine::SortOrder::None, engine::SortTarget::Key),
    };
    Ok(engine::RangeRequest {
        key: r.key,
        range_end: r.range_end,
        limit: r.limit,
        revision: r.revision,
        sort_order,
        sort_target,
        serializable: r.serializable,
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    })
}

pub fn put_request_from_pb(r: pb::PutRequest) -> engine::PutRequest {
    engine::PutRequest {
        key: r.key,
        value: r.value,
        lease: r.lease,
        prev_kv: r.prev_kv,
        ignore_value: r.ignore_value,
        ignore_lease: r.ignore_lease,
    }
}

pub fn delete_request_from_pb(r: pb::DeleteRangeRequest) -> engine::DeleteRangeRequest {
    engine::DeleteRangeRequest {
        key: r.key,
        range_end: r.range_end,
        prev_kv: r.prev_kv,
    }
}

fn compare_from_pb(c: pb::Compare) -> engine::Compare {
    use pb::compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
    // An out-of-range enum value (no etcd client sends one) is read as the enum's zero value.
    let result = match R::try_from(c.result).unwrap_or(R::Equal) {
        R::Equal => engine::CompareResult::Equal,
        R::Greater => engine::CompareResult::Greater,
        R::Less => engine::CompareResult::Less,
        R::NotEqual => engine::CompareResult::NotEqual,
    };
    let target = match T::try_from(c.target).unwrap_or(T::Version) {
        T::Version => engine::CompareTarget::Version,
        T::Create => engine::CompareTarget::Create,
        T::Mod => engine::CompareTarget::Mod,
        T::Value => engine::CompareTarget::Value,
        T::Lease => engine::CompareTarget::Lease,
    };
    let target_union = c.target_union.map(|u| match u {
        U::Version(v) => engine::CompareValue::Version(v),
        U::CreateRevision(v) => engine::CompareValue::CreateRevision(v),
        U::ModRevision(v) => engine::CompareValue::ModRevision(v),
        U::Value(v) => engine::CompareValue::Value(v),
        U::Lease(v) => engine::CompareValue::Lease(v),
    });
    engine::Compare {
        result,
        target,
        key: c.key,
        range_end: c.range_end,
        target_union,
    }
}

fn request_op_from_pb(op: pb::RequestOp) -> Result<Option<engine::RequestOp>, engine::Error> {
    use pb::request_op::Request;
    Ok(match op.request {
        Some(Request::RequestRange(r)) => Some(engine::RequestOp::Range(range_request_from_pb(r)?)),
        Some(Request::RequestPut(r)) => Some(engine::RequestOp::Put(put_request_from_pb(r))),
        Some(Request::RequestDeleteRange(r)) => {
            Some(engine::RequestOp::DeleteRange(delete_request_from_pb(r)))
        }
        Some(Request::RequestTxn(r)) => Some(engine::RequestOp::Txn(txn_request_from_pb(r)?)),
        // etcd skips an empty RequestOp in a txn (it has no request to apply).
        None => None,
    })
}

pub fn txn_request_from_pb(r: pb::TxnRequest) -> Result<engine::TxnRequest, engine::Error> {
    let ops = |v: Vec<pb::RequestOp>| -> Result<Vec<engine::RequestOp>, engine::Error> {
        let mut out = Vec::with_capacity(v.len());
        for op in v {
            if let Some(op) = request_op_from_pb(op)? {
                out.push(op);
            }
        }
        Ok(out)
    };
    Ok(engine::TxnRequest {
        compare: r.compare.into_iter().map(compare_from_pb).collect(),
        success: ops(r.success)?,
        failure: ops(r.failure)?,
    })
}

pub fn range_response_to_pb(
    r: engine::RangeResponse,
    header: pb::ResponseHeader,
) -> pb::RangeResponse {
    pb::RangeResponse {
        header: Some(header),
        kvs: r.kvs.into_iter().map(kv_to_pb).collect(),
        more: r.more,
        count: r.count,
    }
}

pub fn put_response_to_pb(r: engine::PutResponse, header: pb::ResponseHeader) -> pb::PutResponse {
    pb::PutResponse {
        header: Some(header),
        prev_kv: r.prev_kv.map(kv_to_pb),
    }
}

pub fn delete_response_to_pb(
    r: engine::DeleteRangeResponse,
    header: pb::ResponseHeader,
) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header: Some(header),
        deleted: r.deleted,
        prev_kvs: r.prev_kvs.into_iter().map(kv_to_pb).collect(),
    }
}

/// Fills the headers nested in a txn response the way etcd does: only the revision is set
/// (cluster and member ids and the term are for the top-level header), and each op's revision
/// is the store revision as that op saw it: the revision before the txn, plus one once the txn
/// has changed anything (a put always does; a delete when it deleted something). A nested txn's
/// own header is left empty. `revision` is the header revision of the whole txn.
pub fn txn_response_to_pb(r: engine::TxnResponse, header: pb::ResponseHeader) -> pb::TxnResponse {
    let begin = header.revision - i64::from(txn_changed(&r));
    let mut changed = false;
    pb::TxnResponse {
        header: Some(header),
        succeeded: r.succeeded,
        responses: nested_responses(r.responses, begin, &mut changed),
    }
}

fn txn_changed(r: &engine::TxnResponse) -> bool {
    r.responses.iter().any(|op| match op {
        engine::ResponseOp::Put(_) => true,
        engine::ResponseOp::DeleteRange(d) => d.deleted > 0,
        engine::ResponseOp::Txn(t) => txn_changed(t),
        engine::ResponseOp::Range(_) => false,
    })
}

fn nested_responses(
    ops: Vec<engine::ResponseOp>,
    begin: i64,
    changed: &mut bool,
) -> Vec<pb::ResponseOp> {
    use pb::response_op::Response;
    let mut out = Vec::with_capacity(ops.len());
    for op in ops {
        let response = match op {
            engine::ResponseOp::Range(r) => {
                let h = revision_header(begin + i64::from(*changed));
                Response::ResponseRange(range_response_to_pb(r, h))
            }
            engine::ResponseOp::Put(r) => {
                *changed = true;
                Response::ResponsePut(put_response_to_pb(r, revision_header(begin + 1)))
            }
            engine::ResponseOp::DeleteRange(r) => {
                *changed |= r.deleted > 0;
                let h = revision_header(begin + i64::from(*changed));
                Response::ResponseDeleteRange(delete_response_to_pb(r, h))
            }
            engine::ResponseOp::Txn(t) => Response::ResponseTxn(pb::TxnResponse {
                header: Some(pb::ResponseHeader::default()),
                succeeded: t.succeeded,
                responses: nested_responses(t.responses, begin, changed),
            }),
        };
        out.push(pb::ResponseOp {
            response: Some(response),
        });
    }
    out
}

fn revision_header(revision: i64) -> pb::ResponseHeader {
    pb::ResponseHeader {
        revision,
        ..Default::default()
    }
}
