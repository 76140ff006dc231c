//! Each error path of the API-layer checks, with the nested-txn duplicate-key rules. Cases
//! marked "etcd 3.4.23" were sent to the reference server with the same outcome.

use bytes::Bytes;

use super::*;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn p(k: &str) -> RequestOp {
    RequestOp::Put(PutRequest {
        key: b(k),
        ..PutRequest::default()
    })
}

fn d(k: &str, end: &str) -> RequestOp {
    RequestOp::DeleteRange(DeleteRangeRequest {
        key: b(k),
        range_end: b(end),
        prev_kv: false,
    })
}

fn r(k: &str) -> RequestOp {
    RequestOp::Range(RangeRequest {
        key: b(k),
        ..RangeRequest::default()
    })
}

fn t(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
    TxnRequest {
        compare: vec![],
        success,
        failure,
    }
}

fn nested(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> RequestOp {
    RequestOp::Txn(t(success, failure))
}

#[test]
fn empty_keys_are_rejected_everywhere() {
    assert_eq!(range(&RangeRequest::default()), Err(Error::EmptyKey));
    assert_eq!(put(&PutRequest::default()), Err(Error::EmptyKey));
    assert_eq!(
        delete_range(&DeleteRangeRequest::default()),
        Err(Error::EmptyKey)
    );
    assert!(range(&RangeRequest {
        key: b("a"),
        ..Default::default()
    })
    .is_ok());
    assert!(delete_range(&DeleteRangeRequest {
        key: b("a"),
        range_end: b("\0"),
        prev_kv: false
    })
    .is_ok());
    let compare_without_key = TxnRequest {
        compare: vec![Compare::default()],
        success: vec![],
        failure: vec![],
    };
    assert_eq!(txn(&compare_without_key, 128), Err(Error::EmptyKey));
    assert_eq!(txn(&t(vec![p("")], vec![]), 128), Err(Error::EmptyKey));
    assert_eq!(
        txn(&t(vec![], vec![nested(vec![r("")], vec![])]), 128),
        Err(Error::EmptyKey)
    );
}

/// etcd 3.4.23: "etcdserver: value is provided" / "etcdserver: lease is provided".
#[test]
fn put_flags_exclude_values() {
    let with_value = PutRequest {
        key: b("a"),
        value: b("x"),
        ignore_value: true,
        ..Default::default()
    };
    assert_eq!(put(&with_value), Err(Error::ValueProvided));
    let with_lease = PutRequest {
        key: b("a"),
        lease: 5,
        ignore_lease: true,
        ..Default::default()
    };
    assert_eq!(put(&with_lease), Err(Error::LeaseProvided));
    assert!(put(&PutRequest {
        key: b("a"),
        ignore_value: true,
        ignore_lease: true,
        ..Default::default()
    })
    .is_ok());
    assert_eq!(
        txn(&t(vec![RequestOp::Put(with_value)], vec![]), 128),
        Err(Error::ValueProvided)
    );
    assert_eq!(
        Error::ValueProvided.to_string(),
        "etcdserver: value is provided"
    );
}

#[test]
fn op_count_is_the_largest_list_and_nested_txns_get_the_rest() {
    let ranges = |n: usize| (0..n).map(|i| r(&format!("k{i}"))).collect::<Vec<_>>();
    assert!(
        txn(&t(ranges(3), ranges(3)), 3).is_ok(),
        "branches are counted apart"
    );
    assert_eq!(
        txn(&t(ranges(4), vec![]), 3),
        Err(Error::TooManyOps { ops: 4, max: 3 })
    );
    let compares = TxnRequest {
        compare: (0..4)
            .map(|i| Compare {
                key: b(&format!("c{i}")),
                ..Compare::default()
            })
            .collect(),
        success: vec![],
        failure: vec![],
    };
    assert_eq!(txn(&compares, 3), Err(Error::TooManyOps { ops: 4, max: 3 }));
    // Outer uses 2 of 4, so a nested txn may hold 2, not 3.
    let ok = t(vec![r("a"), nested(ranges(2), vec![])], vec![]);
    assert!(txn(&ok, 4).is_ok());
    let too_many = t(vec![r("a"), nested(ranges(3), vec![])], vec![]);
    assert_eq!(txn(&too_many, 4), Err(Error::TooManyOps { ops: 3, max: 2 }));
}

#[test]
fn duplicate_puts_and_put_delete_overlaps() {
    assert_eq!(
        txn(&t(vec![p("a"), p("a")], vec![]), 128),
        Err(Error::DuplicateKey)
    );
    assert!(
        txn(&t(vec![p("a")], vec![p("a")]), 128).is_ok(),
        "success and failure are apart"
    );
    assert_eq!(
        txn(&t(vec![d("a", ""), p("a")], vec![]), 128),
        Err(Error::DuplicateKey)
    );
    assert_eq!(
        txn(&t(vec![p("b"), d("a", "c")], vec![]), 128),
        Err(Error::DuplicateKey)
    );
    assert!(
        txn(&t(vec![p("c"), d("a", "c")], vec![]), 128).is_ok(),
        "range_end is exclusive"
    );
    assert!(
        txn(&t(vec![d("a", "c"), d("b", "d")], vec![]), 128).is_ok(),
        "deletes never clash"
    );
    assert!(txn(&t(vec![p("ab"), d("a", "")], vec![]), 128).is_ok());
    // etcd 3.4.23 accepted a from-key delete with a put inside its range.
    assert!(txn(&t(vec![d("a", "\0"), p("b")], vec![]), 128).is_ok());
    assert_eq!(
        Error::DuplicateKey.to_string(),
        "etcdserver: duplicate key given in txn request"
    );
}

#[test]
fn duplicates_through_nested_txns() {
    // A nested put against an outer put or delete.
    assert_eq!(
        txn(&t(vec![p("a"), nested(vec![p("a")], vec![])], vec![]), 128),
        Err(Error::DuplicateKey)
    );
    assert_eq!(
        txn(
            &t(vec![d("a", "b"), nested(vec![], vec![p("a")])], vec![]),
            128
        ),
        Err(Error::DuplicateKey)
    );
    // An outer put against a nested delete.
    assert_eq!(
        txn(
            &t(vec![p("a"), nested(vec![d("a", "")], vec![])], vec![]),
            128
        ),
        Err(Error::DuplicateKey)
    );
    // The two branches of one nested txn exclude each other.
    assert!(txn(&t(vec![nested(vec![p("a")], vec![p("a")])], vec![]), 128).is_ok());
    // Two sibling nested txns putting the same key clash, whichever branch.
    assert_eq!(
        txn(
            &t(
                vec![nested(vec![p("a")], vec![]), nested(vec![], vec![p("a")])],
                vec![]
            ),
            128
        ),
        Err(Error::DuplicateKey)
    );
    // etcd 3.4.23: a delete in an earlier sibling clashes with a put in a later one, but not the
    // other way round.
    assert_eq!(
        txn(
            &t(
                vec![
                    nested(vec![d("b", "")], vec![]),
                    nested(vec![p("b")], vec![])
                ],
                vec![]
            ),
            128
        ),
        Err(Error::DuplicateKey)
    );
    assert!(txn(
        &t(
            vec![
                nested(vec![p("b")], vec![]),
                nested(vec![d("b", "")], vec![])
            ],
            vec![]
        ),
        128
    )
    .is_ok());
    // Clashes deep inside are found too.
    let deep = t(
        vec![nested(vec![nested(vec![p("x"), p("x")], vec![])], vec![])],
        vec![],
    );
    assert_eq!(txn(&deep, 128), Err(Error::DuplicateKey));
    let deep_failure = t(
        vec![],
        vec![nested(
            vec![],
            vec![nested(vec![d("a", "z")], vec![]), p("q")],
        )],
    );
    assert_eq!(txn(&deep_failure, 128), Err(Error::DuplicateKey));
}

#[test]
fn count_is_checked_before_duplicates() {
    let dup = t(vec![p("a"), p("a"), p("b")], vec![]);
    assert_eq!(txn(&dup, 2), Err(Error::TooManyOps { ops: 3, max: 2 }));
    let dup_empty = t(vec![p("a"), p("a"), p("")], vec![]);
    assert_eq!(txn(&dup_empty, 128), Err(Error::EmptyKey));
}
