//! Worked histories for the MVCC store. Where a test says "etcd 3.4.23 answered", the same
//! requests were sent to the reference server and its answer is what the test asserts.

use bytes::Bytes;

use super::*;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn put(s: &mut Store, k: &str, v: &str) -> Applied<PutResponse> {
    let applied = s
        .put(&PutRequest {
            key: b(k),
            value: b(v),
            ..PutRequest::default()
        })
        .expect("put");
    s.check_invariants();
    applied
}

fn put_lease(s: &mut Store, k: &str, v: &str, lease: LeaseId) -> Result<Applied<PutResponse>> {
    let r = s.put(&PutRequest {
        key: b(k),
        value: b(v),
        lease,
        ..PutRequest::default()
    });
    s.check_invariants();
    r
}

fn del(s: &mut Store, k: &str, end: &str) -> Applied<DeleteRangeResponse> {
    let applied = s
        .delete_range(&DeleteRangeRequest {
            key: b(k),
            range_end: b(end),
            prev_kv: true,
        })
        .expect("delete");
    s.check_invariants();
    applied
}

fn rq(k: &str, end: &str) -> RangeRequest {
    RangeRequest {
        key: b(k),
        range_end: b(end),
        ..RangeRequest::default()
    }
}

fn get(s: &Store, k: &str, rev: Revision) -> Result<Option<KeyValue>> {
    let mut r = s.range(&RangeRequest {
        revision: rev,
        ..rq(k, "")
    })?;
    assert!(r.kvs.len() <= 1);
    Ok(r.kvs.pop())
}

fn keys(r: &RangeResponse) -> Vec<String> {
    r.kvs
        .iter()
        .map(|kv| String::from_utf8(kv.key.to_vec()).expect("utf8"))
        .collect()
}

fn kv(k: &str, v: &str, create: Revision, m: Revision, version: i64) -> KeyValue {
    KeyValue {
        key: b(k),
        value: b(v),
        create_revision: create,
        mod_revision: m,
        version,
        lease: 0,
    }
}

fn cmp(
    key: &str,
    target: CompareTarget,
    result: CompareResult,
    v: Option<CompareValue>,
) -> Compare {
    Compare {
        result,
        target,
        key: b(key),
        range_end: Bytes::new(),
        target_union: v,
    }
}

fn put_op(k: &str, v: &str) -> RequestOp {
    RequestOp::Put(PutRequest {
        key: b(k),
        value: b(v),
        ..PutRequest::default()
    })
}

// ------------------------------------------------------------------------------ puts and reads

#[test]
fn empty_store_is_at_revision_1() {
    let s = Store::new();
    assert_eq!(s.revision(), 1);
    assert_eq!(s.compact_revision(), 0);
    let r = s.range(&rq("\0", "\0")).expect("range");
    assert_eq!((r.kvs.len(), r.count, r.more), (0, 0, false));
    // Reading at revision 1 explicitly is fine; 2 is the future.
    assert!(s
        .range(&RangeRequest {
            revision: 1,
            ..rq("a", "")
        })
        .is_ok());
    assert_eq!(
        s.range(&RangeRequest {
            revision: 2,
            ..rq("a", "")
        }),
        Err(Error::FutureRevision {
            revision: 2,
            current: 1
        })
    );
}

#[test]
fn put_sets_create_mod_version_and_prev_kv() {
    let mut s = Store::new();
    let a1 = put(&mut s, "foo", "a");
    assert_eq!(a1.revision, 2);
    assert_eq!(a1.response.prev_kv, None);
    assert_eq!(
        a1.events,
        vec![Event {
            kind: EventKind::Put,
            kv: kv("foo", "a", 2, 2, 1),
            prev_kv: None
        }]
    );

    let a2 = s
        .put(&PutRequest {
            key: b("foo"),
            value: b("b"),
            prev_kv: true,
            ..PutRequest::default()
        })
        .expect("put");
    assert_eq!(a2.revision, 3);
    assert_eq!(a2.response.prev_kv, Some(kv("foo", "a", 2, 2, 1)));
    assert_eq!(a2.events[0].kv, kv("foo", "b", 2, 3, 2));
    // Events always carry prev_kv (the watch filter strips it); responses only on request.
    assert_eq!(a2.events[0].prev_kv, Some(kv("foo", "a", 2, 2, 1)));
    let a3 = put(&mut s, "foo", "c");
    assert_eq!(a3.response.prev_kv, None);
    assert_eq!(a3.events[0].prev_kv, Some(kv("foo", "b", 2, 3, 2)));

    assert_eq!(
        get(&s, "foo", 0).expect("read"),
        Some(kv("foo", "c", 2, 4, 3))
    );
    assert_eq!(
        get(&s, "foo", 3).expect("read"),
        Some(kv("foo", "b", 2, 3, 2))
    );
    assert_eq!(get(&s, "foo", 1).expect("read"), None);
}

/// Generations: foo lives at 2..4, is deleted at 4, is re-created at 6 with version 1.
#[test]
fn delete_then_recreate_starts_a_new_generation() {
    let mut s = Store::new();
    put(&mut s, "foo", "a"); // 2
    put(&mut s, "foo", "b"); // 3
    let d = del(&mut s, "foo", ""); // 4
    assert_eq!(d.revision, 4);
    assert_eq!(d.response.deleted, 1);
    assert_eq!(d.response.prev_kvs, vec![kv("foo", "b", 2, 3, 2)]);
    assert_eq!(
        d.events,
        vec![Event {
            kind: EventKind::Delete,
            kv: KeyValue {
                key: b("foo"),
                mod_revision: 4,
                ..KeyValue::default()
            },
            prev_kv: Some(kv("foo", "b", 2, 3, 2)),
        }]
    );
    put(&mut s, "bar", "x"); // 5
    let p = put(&mut s, "foo", "c"); // 6
    assert_eq!(p.events[0].kv, kv("foo", "c", 6, 6, 1));
    assert_eq!(
        p.events[0].prev_kv, None,
        "no previous version in this generation"
    );
    put(&mut s, "foo", "d"); // 7
    for (rev, want) in [
        (1, None),
        (2, Some(kv("foo", "a", 2, 2, 1))),
        (3, Some(kv("foo", "b", 2, 3, 2))),
        (4, None),
        (5, None),
        (6, Some(kv("foo", "c", 6, 6, 1))),
        (7, Some(kv("foo", "d", 6, 7, 2))),
    ] {
        assert_eq!(get(&s, "foo", rev).expect("read"), want, "at {rev}");
    }
}

#[test]
fn delete_range_counts_and_bumps_only_when_something_went() {
    let mut s = Store::new();
    for k in ["a", "b", "c", "d"] {
        put(&mut s, k, k);
    } // revisions 2..=5
    let none = del(&mut s, "x", "z");
    assert_eq!(
        (none.revision, none.response.deleted, none.events.len()),
        (5, 0, 0)
    );
    assert_eq!(s.revision(), 5);

    let some = del(&mut s, "b", "d");
    assert_eq!(some.revision, 6);
    assert_eq!(some.response.deleted, 2);
    assert_eq!(
        keys(&RangeResponse {
            kvs: some.response.prev_kvs.clone(),
            ..Default::default()
        }),
        ["b", "c"]
    );
    // One revision, sub-revisions in key order.
    assert_eq!(
        some.events
            .iter()
            .map(|e| (e.kind, e.kv.mod_revision))
            .collect::<Vec<_>>(),
        [(EventKind::Delete, 6), (EventKind::Delete, 6)]
    );
    let without_prev = s
        .delete_range(&DeleteRangeRequest {
            key: b("a"),
            range_end: b("\0"),
            prev_kv: false,
        })
        .expect("delete");
    assert_eq!(without_prev.response.deleted, 2);
    assert!(without_prev.response.prev_kvs.is_empty());
    assert_eq!(
        without_prev.events.len(),
        2,
        "events carry prev_kv regardless"
    );
    assert!(without_prev.events.iter().all(|e| e.prev_kv.is_some()));
    assert_eq!(s.range(&rq("\0", "\0")).expect("range").count, 0);
    s.check_invariants();
}

// ------------------------------------------------------------------------------ range rules

/// The store of the etcd session the sort/filter tests replay: a..e put at 2..6, then a again
/// at 7 (so a has version 2).
fn five_keys() -> Store {
    let mut s = Store::new();
    for k in ["a", "b", "c", "d", "e"] {
        put(&mut s, k, &format!("v{k}"));
    }
    put(&mut s, "a", "v2");
    s
}

#[test]
fn range_single_interval_from_key_and_everything() {
    let mut s = five_keys();
    put(&mut s, "ab", "x");
    assert_eq!(keys(&s.range(&rq("a", "")).expect("range")), ["a"]);
    assert_eq!(
        keys(&s.range(&rq("a", "c")).expect("range")),
        ["a", "ab", "b"]
    );
    assert_eq!(
        keys(&s.range(&rq("c", "\0")).expect("range")),
        ["c", "d", "e"]
    );
    assert_eq!(
        keys(&s.range(&rq("\0", "\0")).expect("range")),
        ["a", "ab", "b", "c", "d", "e"]
    );
    assert_eq!(
        s.range(&rq("d", "b"))
            .expect("inverted range is empty")
            .count,
        0
    );
    assert_eq!(s.range(&rq("zz", "")).expect("absent key").count, 0);
}

#[test]
fn range_limit_more_and_count() {
    let s = five_keys();
    let r = s
        .range(&RangeRequest {
            limit: 2,
            ..rq("a", "z")
        })
        .expect("range");
    assert_eq!(
        (keys(&r), r.more, r.count),
        (vec!["a".to_string(), "b".to_string()], true, 5)
    );
    let r = s
        .range(&RangeRequest {
            limit: 5,
            ..rq("a", "z")
        })
        .expect("range");
    assert_eq!((r.kvs.len(), r.more, r.count), (5, false, 5));
    let r = s
        .range(&RangeRequest {
            limit: -3,
            ..rq("a", "z")
        })
        .expect("negative limit = none");
    assert_eq!((r.kvs.len(), r.more), (5, false));
}

/// etcd 3.4.23 answered these exact requests on the five_keys history.
#[test]
fn range_sort_rules_match_etcd() {
    let s = five_keys();
    // VERSION target with order NONE sorts ascending, but only among the first limit+1 keys:
    // a, b, c fetched; sorted by version b(1), c(1), a(2); cut to 2.
    let r = s
        .range(&RangeRequest {
            sort_target: SortTarget::Version,
            limit: 2,
            keys_only: true,
            ..rq("a", "z")
        })
        .expect("range");
    assert_eq!(
        (keys(&r), r.more, r.count),
        (vec!["b".into(), "c".into()], true, 5)
    );
    assert!(r.kvs.iter().all(|kv| kv.value.is_empty()));
    // DESCEND fetches every key before sorting: a(2) first, then the version-1 keys.
    let r = s
        .range(&RangeRequest {
            sort_target: SortTarget::Version,
            sort_order: SortOrder::Descend,
            limit: 2,
            ..rq("a", "z")
        })
        .expect("range");
    assert_eq!(
        (keys(&r), r.more, r.count),
        (vec!["a".into(), "b".into()], true, 5)
    );
    // KEY target, DESCEND.
    let r = s
        .range(&RangeRequest {
            sort_order: SortOrder::Descend,
            limit: 3,
            ..rq("a", "z")
        })
        .expect("range");
    assert_eq!(keys(&r), ["e", "d", "c"]);
    // MOD target ascending: a moved to the end (mod 7).
    let r = s
        .range(&RangeRequest {
            sort_target: SortTarget::Mod,
            sort_order: SortOrder::Ascend,
            ..rq("a", "z")
        })
        .expect("range");
    assert_eq!(keys(&r), ["b", "c", "d", "e", "a"]);
    // CREATE descending and VALUE ascending.
    let r = s
        .range(&RangeRequest {
            sort_target: SortTarget::Create,
            sort_order: SortOrder::Descend,
            ..rq("a", "z")
        })
        .expect("range");
    assert_eq!(keys(&r), ["e", "d", "c", "b", "a"]);
    let r = s
        .range(&RangeRequest {
            sort_target: SortTarget::Value,
            sort_order: SortOrder::Ascend,
            ..rq("a", "z")
        })
        .expect("range");
    assert_eq!(keys(&r), ["a", "b", "c", "d", "e"], "v2 < vb < vc ...");
}

/// etcd 3.4.23: min_mod_revision 4 with limit 2 on five_keys gave [a(mod 7), c(mod 4)],
/// more = true, count = 5 (count ignores the filters).
#[test]
fn range_revision_filters_run_after_the_read() {
    let s = five_keys();
    let r = s
        .range(&RangeRequest {
            min_mod_revision: 4,
            limit: 2,
            ..rq("a", "z")
        })
        .expect("range");
    assert_eq!(
        (keys(&r), r.more, r.count),
        (vec!["a".into(), "c".into()], true, 5)
    );
    let r = s
        .range(&RangeRequest {
            max_mod_revision: 4,
            ..rq("a", "z")
        })
        .expect("range");
    assert_eq!(keys(&r), ["b", "c"]);
    let r = s
        .range(&RangeRequest {
            min_create_revision: 3,
            max_create_revision: 5,
            ..rq("a", "z")
        })
        .expect("range");
    assert_eq!(
        (keys(&r), r.more, r.count),
        (vec!["b".into(), "c".into(), "d".into()], false, 5)
    );
}

#[test]
fn range_count_only_and_keys_only() {
    let s = five_keys();
    // etcd 3.4.23: count_only with limit 2 answered count 5, no kvs, no more.
    let r = s
        .range(&RangeRequest {
            count_only: true,
            limit: 2,
            ..rq("a", "z")
        })
        .expect("range");
    assert_eq!(
        r,
        RangeResponse {
            kvs: vec![],
            more: false,
            count: 5
        }
    );
    let r = s
        .range(&RangeRequest {
            keys_only: true,
            ..rq("a", "")
        })
        .expect("range");
    assert_eq!(
        r.kvs,
        vec![KeyValue {
            value: Bytes::new(),
            ..kv("a", "", 2, 7, 2)
        }]
    );
}

#[test]
fn range_revision_errors() {
    let mut s = five_keys(); // revision 7
    assert_eq!(
        s.range(&RangeRequest {
            revision: 8,
            ..rq("a", "")
        }),
        Err(Error::FutureRevision {
            revision: 8,
            current: 7
        })
    );
    assert_eq!(
        get(&s, "a", -5).expect("negative = current"),
        Some(kv("a", "v2", 2, 7, 2))
    );
    s.compact(4).expect("compact");
    assert_eq!(
        get(&s, "a", 3),
        Err(Error::Compacted {
            compact_revision: 4
        })
    );
    // Exactly at the compact revision still reads.
    assert_eq!(
        get(&s, "a", 4).expect("read at compact rev"),
        Some(kv("a", "va", 2, 2, 1))
    );
    assert_eq!(get(&s, "c", 4).expect("read"), Some(kv("c", "vc", 4, 4, 1)));
}

// ------------------------------------------------------------------------------ put flags and leases

/// etcd 3.4.23: ignore_value on a missing key → "etcdserver: key not found".
#[test]
fn put_ignore_value_and_ignore_lease() {
    let mut s = Store::new();
    let missing = s.put(&PutRequest {
        key: b("a"),
        ignore_value: true,
        ..PutRequest::default()
    });
    assert_eq!(missing, Err(Error::KeyNotFound));
    let missing = s.put(&PutRequest {
        key: b("a"),
        ignore_lease: true,
        ..PutRequest::default()
    });
    assert_eq!(missing, Err(Error::KeyNotFound));
    assert_eq!(s.revision(), 1);

    let (lease, _) = s.lease_grant(7, 60, 0).expect("grant");
    put_lease(&mut s, "a", "v1", lease).expect("put");
    // ignore_value keeps the value and (without ignore_lease) sets lease 0, detaching.
    let p = s
        .put(&PutRequest {
            key: b("a"),
            ignore_value: true,
            ..PutRequest::default()
        })
        .expect("put");
    assert_eq!(p.events[0].kv, kv("a", "v1", 2, 3, 2));
    assert!(s
        .lease_time_to_live(lease, true, 0)
        .expect("ttl")
        .keys
        .is_empty());
    // ignore_lease keeps the lease, takes the new value.
    put_lease(&mut s, "a", "v2", lease).expect("put");
    let p = s
        .put(&PutRequest {
            key: b("a"),
            value: b("v3"),
            ignore_lease: true,
            ..PutRequest::default()
        })
        .expect("put");
    assert_eq!(p.events[0].kv.lease, lease);
    assert_eq!(p.events[0].kv.value, b("v3"));
    assert_eq!(
        s.lease_time_to_live(lease, true, 0).expect("ttl").keys,
        vec![b("a")]
    );
    s.check_invariants();
}

#[test]
fn put_with_unknown_lease_changes_nothing() {
    let mut s = Store::new();
    put(&mut s, "a", "1");
    let before = s.hash();
    assert_eq!(
        put_lease(&mut s, "b", "2", 99),
        Err(Error::LeaseNotFound { lease_id: 99 })
    );
    assert_eq!((s.revision(), s.hash()), (2, before));
}

#[test]
fn reput_with_another_lease_moves_the_key() {
    let mut s = Store::new();
    s.lease_grant(1, 60, 0).expect("grant");
    s.lease_grant(2, 60, 0).expect("grant");
    put_lease(&mut s, "k", "v", 1).expect("put");
    put_lease(&mut s, "k", "v", 2).expect("put");
    assert!(s
        .lease_time_to_live(1, true, 0)
        .expect("ttl")
        .keys
        .is_empty());
    assert_eq!(
        s.lease_time_to_live(2, true, 0).expect("ttl").keys,
        vec![b("k")]
    );
    // Revoking the old lease touches nothing and takes no revision.
    let r = s.lease_revoke(1).expect("revoke");
    assert_eq!((r.revision, r.events.len()), (3, 0));
    assert_eq!(get(&s, "k", 0).expect("read").map(|kv| kv.lease), Some(2));
    // A delete detaches.
    del(&mut s, "k", "");
    assert!(s
        .lease_time_to_live(2, true, 0)
        .expect("ttl")
        .keys
        .is_empty());
}

// ------------------------------------------------------------------------------ txn

#[test]
fn txn_puts_on_several_keys_share_one_revision() {
    let mut s = Store::new();
    put(&mut s, "a", "0"); // 2
    let t = TxnRequest {
        compare: vec![],
        success: vec![put_op("a", "1"), put_op("b", "1"), put_op("c", "1")],
        failure: vec![],
    };
    let applied = s.txn(&t).expect("txn");
    s.check_invariants();
    assert_eq!(applied.revision, 3);
    assert!(applied.response.succeeded);
    assert_eq!(applied.response.responses.len(), 3);
    assert_eq!(
        applied
            .events
            .iter()
            .map(|e| (e.kv.key.clone(), e.kv.mod_revision, e.kv.version))
            .collect::<Vec<_>>(),
        vec![(b("a"), 3, 2), (b("b"), 3, 1), (b("c"), 3, 1)]
    );
    assert_eq!(applied.events[0].prev_kv, Some(kv("a", "0", 2, 2, 1)));
    // Watch catch-up sees the same three events in sub-revision order.
    let evs = s.events_since(b"a", b"\0", 3, 100).expect("events");
    assert_eq!(evs, applied.events);
}

/// etcd 3.4.23 answered: nested compares are evaluated before the outer txn writes, while
/// ranges inside the txn see its writes.
#[test]
fn nested_txn_compares_see_the_state_before_the_txn() {
    let mut s = Store::new();
    put(&mut s, "m", "x"); // 2, version 1
    let v1 = || {
        vec![cmp(
            "m",
            CompareTarget::Version,
            CompareResult::Equal,
            Some(CompareValue::Version(1)),
        )]
    };
    let t = TxnRequest {
        compare: v1(),
        success: vec![
            put_op("m", "y"),
            RequestOp::Txn(TxnRequest {
                compare: v1(),
                success: vec![RequestOp::Range(rq("m", ""))],
                failure: vec![],
            }),
        ],
        failure: vec![],
    };
    let applied = s.txn(&t).expect("txn");
    assert_eq!(applied.revision, 3);
    let ResponseOp::Txn(nested) = &applied.response.responses[1] else {
        panic!("nested response")
    };
    assert!(
        nested.succeeded,
        "compare saw version 1 though the put made it 2"
    );
    let ResponseOp::Range(r) = &nested.responses[0] else {
        panic!("range response")
    };
    assert_eq!(r.kvs, vec![kv("m", "y", 2, 3, 2)], "the range saw the put");
}

#[test]
fn failure_branch_and_deeply_nested_paths() {
    let mut s = Store::new();
    put(&mut s, "a", "1");
    let t = TxnRequest {
        compare: vec![cmp(
            "a",
            CompareTarget::Value,
            CompareResult::Equal,
            Some(CompareValue::Value(b("2"))),
        )],
        success: vec![put_op("never", "x")],
        failure: vec![
            RequestOp::Txn(TxnRequest {
                compare: vec![cmp(
                    "a",
                    CompareTarget::Create,
                    CompareResult::Equal,
                    Some(CompareValue::CreateRevision(2)),
                )],
                success: vec![
                    put_op("inner-then", "x"),
                    RequestOp::Txn(TxnRequest {
                        compare: vec![cmp(
                            "zz",
                            CompareTarget::Version,
                            CompareResult::Greater,
                            None,
                        )],
                        success: vec![put_op("deep-then", "x")],
                        failure: vec![put_op("deep-else", "x")],
                    }),
                ],
                failure: vec![put_op("inner-else", "x")],
            }),
            put_op("outer-else", "x"),
        ],
    };
    let applied = s.txn(&t).expect("txn");
    assert!(!applied.response.succeeded);
    let written: Vec<_> = applied.events.iter().map(|e| e.kv.key.clone()).collect();
    assert_eq!(
        written,
        vec![b("inner-then"), b("deep-else"), b("outer-else")]
    );
    assert_eq!(applied.revision, 3);
    let ResponseOp::Txn(inner) = &applied.response.responses[0] else {
        panic!("txn")
    };
    assert!(inner.succeeded);
    let ResponseOp::Txn(deep) = &inner.responses[1] else {
        panic!("txn")
    };
    assert!(!deep.succeeded);
}

#[test]
fn reads_inside_a_txn_see_its_earlier_writes_and_read_only_txns_keep_the_revision() {
    let mut s = Store::new();
    put(&mut s, "a", "1"); // 2
    let t = TxnRequest {
        compare: vec![],
        success: vec![
            RequestOp::Range(rq("a", "\0")),
            RequestOp::DeleteRange(DeleteRangeRequest {
                key: b("a"),
                ..Default::default()
            }),
            RequestOp::Range(rq("a", "\0")),
            put_op("b", "2"),
            RequestOp::Range(rq("a", "\0")),
            RequestOp::Range(RangeRequest {
                revision: 2,
                ..rq("a", "\0")
            }),
        ],
        failure: vec![],
    };
    let applied = s.txn(&t).expect("txn");
    let counts: Vec<i64> = applied
        .response
        .responses
        .iter()
        .filter_map(|r| match r {
            ResponseOp::Range(r) => Some(r.count),
            _ => None,
        })
        .collect();
    assert_eq!(counts, [1, 0, 1, 1]);
    assert_eq!(applied.revision, 3);

    let ro = TxnRequest {
        compare: vec![],
        success: vec![RequestOp::Range(rq("\0", "\0"))],
        failure: vec![],
    };
    let applied = s.txn(&ro).expect("txn");
    assert_eq!(
        (applied.revision, applied.events.len(), s.revision()),
        (3, 0, 3)
    );
    // A write txn whose chosen branch only reads also keeps the revision.
    let t = TxnRequest {
        compare: vec![cmp(
            "b",
            CompareTarget::Value,
            CompareResult::Equal,
            Some(CompareValue::Value(b("2"))),
        )],
        success: vec![RequestOp::Range(rq("b", ""))],
        failure: vec![put_op("b", "x")],
    };
    assert_eq!(s.txn(&t).expect("txn").revision, 3);
}

/// etcd 3.4.23: txn { put q; put r with lease 77 (absent) } → "requested lease not found"
/// and q was not written.
#[test]
fn txn_checks_every_put_before_writing_anything() {
    let mut s = Store::new();
    put(&mut s, "x", "1");
    let before = s.hash();
    let bad_lease = TxnRequest {
        compare: vec![],
        success: vec![
            put_op("q", ""),
            RequestOp::Txn(TxnRequest {
                compare: vec![],
                success: vec![RequestOp::Put(PutRequest {
                    key: b("r"),
                    lease: 77,
                    ..Default::default()
                })],
                failure: vec![],
            }),
        ],
        failure: vec![],
    };
    assert_eq!(
        s.txn(&bad_lease),
        Err(Error::LeaseNotFound { lease_id: 77 })
    );
    let ignore_missing = TxnRequest {
        compare: vec![],
        success: vec![
            put_op("q", ""),
            RequestOp::Put(PutRequest {
                key: b("nope"),
                ignore_value: true,
                ..Default::default()
            }),
        ],
        failure: vec![],
    };
    assert_eq!(s.txn(&ignore_missing), Err(Error::KeyNotFound));
    // A range at a future revision fails the txn before the put lands.
    let future = TxnRequest {
        compare: vec![],
        success: vec![
            put_op("q", ""),
            RequestOp::Range(RangeRequest {
                revision: 3,
                ..rq("x", "")
            }),
        ],
        failure: vec![],
    };
    assert_eq!(
        s.txn(&future),
        Err(Error::FutureRevision {
            revision: 3,
            current: 2
        })
    );
    // Put errors come before range errors, whatever their order in the txn.
    let both = TxnRequest {
        compare: vec![],
        success: vec![
            RequestOp::Range(RangeRequest {
                revision: 9,
                ..rq("x", "")
            }),
            RequestOp::Put(PutRequest {
                key: b("r"),
                lease: 5,
                ..Default::default()
            }),
        ],
        failure: vec![],
    };
    assert_eq!(s.txn(&both), Err(Error::LeaseNotFound { lease_id: 5 }));
    // Only the chosen path is checked.
    let other_branch = TxnRequest {
        compare: vec![cmp(
            "x",
            CompareTarget::Version,
            CompareResult::Equal,
            Some(CompareValue::Version(1)),
        )],
        success: vec![put_op("q", "")],
        failure: vec![RequestOp::Put(PutRequest {
            key: b("r"),
            lease: 5,
            ..Default::default()
        })],
    };
    assert_eq!(s.txn(&other_branch).expect("txn").revision, 3);
    s.check_invariants();
    let mut fresh = Store::new();
    put(&mut fresh, "x", "1");
    assert_eq!(fresh.hash(), before);
}

/// Without the API-layer validation a txn can fail halfway (here: the delete removes the key
/// that a later ignore_value put needs). Everything it did is undone.
#[test]
fn txn_failing_while_applying_is_rolled_back() {
    let mut s = Store::new();
    s.lease_grant(3, 60, 0).expect("grant");
    put_lease(&mut s, "a", "1", 3).expect("put");
    put_lease(&mut s, "b", "1", 3).expect("put");
    let before = (
        s.hash(),
        s.revision(),
        s.lease_time_to_live(3, true, 0).expect("ttl"),
    );
    let t = TxnRequest {
        compare: vec![],
        success: vec![
            put_op("new", "x"),
            RequestOp::DeleteRange(DeleteRangeRequest {
                key: b("a"),
                range_end: b("c"),
                ..Default::default()
            }),
            RequestOp::Put(PutRequest {
                key: b("a"),
                ignore_value: true,
                ..Default::default()
            }),
        ],
        failure: vec![],
    };
    assert_eq!(s.txn(&t), Err(Error::KeyNotFound));
    s.check_invariants();
    assert_eq!(
        (
            s.hash(),
            s.revision(),
            s.lease_time_to_live(3, true, 0).expect("ttl")
        ),
        before
    );
    assert_eq!(get(&s, "new", 0).expect("read"), None);
    // And the store keeps working at the next revision.
    assert_eq!(put(&mut s, "new", "y").revision, 4);
}

/// etcd 3.4.23 accepted txn { delete ["a", "\0"); put "b" }: deleted 5 keys and wrote b, all at
/// one revision. The put's event carries b's value before the txn as prev_kv, as etcd's watch
/// (which reads at mod_revision - 1) does.
#[test]
fn delete_and_recreate_in_one_txn() {
    let mut s = five_keys(); // revision 7
    let t = TxnRequest {
        compare: vec![],
        success: vec![
            RequestOp::DeleteRange(DeleteRangeRequest {
                key: b("a"),
                range_end: b("\0"),
                prev_kv: false,
            }),
            put_op("b", ""),
        ],
        failure: vec![],
    };
    let applied = s.txn(&t).expect("txn");
    s.check_invariants();
    assert_eq!(applied.revision, 8);
    let ResponseOp::DeleteRange(d) = &applied.response.responses[0] else {
        panic!("delete")
    };
    assert_eq!(d.deleted, 5);
    assert_eq!(applied.events.len(), 6);
    let last = &applied.events[5];
    assert_eq!(
        (last.kind, last.kv.clone()),
        (EventKind::Put, kv("b", "", 8, 8, 1))
    );
    assert_eq!(last.prev_kv, Some(kv("b", "vb", 3, 3, 1)));
    assert_eq!(keys(&s.range(&rq("\0", "\0")).expect("range")), ["b"]);
    assert_eq!(get(&s, "b", 7).expect("read"), Some(kv("b", "vb", 3, 3, 1)));
}

/// etcd 3.4.23: on a missing key a VALUE compare fails even with NOT_EQUAL; LEASE = 0 holds.
#[test]
fn compares_on_missing_keys() {
    let mut s = Store::new();
    put(&mut s, "present", "x");
    let holds = |s: &mut Store, c: Compare| {
        s.txn(&TxnRequest {
            compare: vec![c],
            success: vec![],
            failure: vec![],
        })
        .expect("txn")
        .response
        .succeeded
    };
    use CompareResult::*;
    use CompareTarget::*;
    assert!(!holds(
        &mut s,
        cmp("nokey", Value, NotEqual, Some(CompareValue::Value(b("x"))))
    ));
    assert!(!holds(
        &mut s,
        cmp("nokey", Value, Equal, Some(CompareValue::Value(b(""))))
    ));
    assert!(holds(
        &mut s,
        cmp("nokey", Lease, Equal, Some(CompareValue::Lease(0)))
    ));
    assert!(holds(
        &mut s,
        cmp("nokey", Version, Equal, Some(CompareValue::Version(0)))
    ));
    assert!(holds(
        &mut s,
        cmp("nokey", Create, Less, Some(CompareValue::CreateRevision(1)))
    ));
    assert!(holds(&mut s, cmp("nokey", Mod, Equal, None)));
    // Present key: every target and result.
    assert!(holds(
        &mut s,
        cmp("present", Value, Greater, Some(CompareValue::Value(b("w"))))
    ));
    assert!(holds(
        &mut s,
        cmp("present", Value, Less, Some(CompareValue::Value(b("y"))))
    ));
    assert!(holds(
        &mut s,
        cmp("present", Mod, Equal, Some(CompareValue::ModRevision(2)))
    ));
    assert!(holds(
        &mut s,
        cmp("present", Version, Greater, Some(CompareValue::Version(0)))
    ));
    assert!(holds(
        &mut s,
        cmp("present", Lease, NotEqual, Some(CompareValue::Lease(4)))
    ));
    // A target_union of another kind reads as zero / empty.
    assert!(holds(
        &mut s,
        cmp(
            "present",
            Version,
            Greater,
            Some(CompareValue::Value(b("zzz")))
        )
    ));
    assert!(holds(
        &mut s,
        cmp("present", Value, Greater, Some(CompareValue::Version(9)))
    ));
}

#[test]
fn compare_over_a_range_needs_every_key() {
    let mut s = Store::new();
    put(&mut s, "k1", "a");
    put(&mut s, "k2", "a");
    put(&mut s, "k3", "b");
    let c = |end: &str| Compare {
        result: CompareResult::Equal,
        target: CompareTarget::Value,
        key: b("k1"),
        range_end: b(end),
        target_union: Some(CompareValue::Value(b("a"))),
    };
    let run = |s: &mut Store, c: Compare| {
        s.txn(&TxnRequest {
            compare: vec![c],
            success: vec![],
            failure: vec![],
        })
        .expect("txn")
        .response
        .succeeded
    };
    assert!(run(&mut s, c("k3")));
    assert!(!run(&mut s, c("k4")));
    assert!(!run(&mut s, c("\0")));
    // An empty range compares as a missing key.
    let version_zero = Compare {
        target: CompareTarget::Version,
        key: b("x"),
        range_end: b("y"),
        target_union: Some(CompareValue::Version(0)),
        result: CompareResult::Equal,
    };
    assert!(run(&mut s, version_zero));
}

// ------------------------------------------------------------------------------ compaction

/// The worked example of the module documentation.
#[test]
fn compaction_keeps_the_newest_live_version_per_key() {
    let mut s = Store::new();
    put(&mut s, "foo", "a"); // 2
    let t = TxnRequest {
        compare: vec![],
        success: vec![put_op("foo", "b"), put_op("bar", "x")],
        failure: vec![],
    };
    s.txn(&t).expect("txn"); // 3
    del(&mut s, "foo", ""); // 4
    put(&mut s, "foo", "c"); // 5
    assert_eq!(del(&mut s, "nothing", "").revision, 5);
    assert_eq!(
        get(&s, "foo", 3).expect("read"),
        Some(kv("foo", "b", 2, 3, 2))
    );
    assert_eq!(get(&s, "foo", 4).expect("read"), None);

    let size_before = s.approximate_size_bytes();
    let c = s.compact(4).expect("compact");
    s.check_invariants();
    assert_eq!(
        (c.revision, c.events.len(), s.compact_revision()),
        (5, 0, 4)
    );
    assert!(s.approximate_size_bytes() < size_before);
    assert_eq!(
        get(&s, "foo", 3),
        Err(Error::Compacted {
            compact_revision: 4
        })
    );
    let at4 = s
        .range(&RangeRequest {
            revision: 4,
            ..rq("\0", "\0")
        })
        .expect("range");
    assert_eq!(at4.kvs, vec![kv("bar", "x", 3, 3, 1)]);
    assert_eq!(
        get(&s, "foo", 5).expect("read"),
        Some(kv("foo", "c", 5, 5, 1))
    );
    // Only bar@3 and foo@5 are left.
    assert_eq!(
        s.history.iter().map(|(r, _)| r.main).collect::<Vec<_>>(),
        [3, 5]
    );
    assert_eq!(
        s.compact(4),
        Err(Error::Compacted {
            compact_revision: 4
        })
    );
    assert_eq!(
        s.compact(3),
        Err(Error::Compacted {
            compact_revision: 4
        })
    );
    assert_eq!(
        s.compact(6),
        Err(Error::FutureRevision {
            revision: 6,
            current: 5
        })
    );
}

#[test]
fn compaction_drops_deleted_keys_entirely() {
    let mut s = Store::new();
    put(&mut s, "a", "1"); // 2
    put(&mut s, "a", "2"); // 3
    del(&mut s, "a", ""); // 4
    s.compact(4).expect("compact");
    s.check_invariants();
    assert!(s.index.is_empty());
    assert_eq!(s.history.iter().count(), 0);
    let p = put(&mut s, "a", "3");
    assert_eq!(p.events[0].kv, kv("a", "3", 5, 5, 1));
}

/// etcd 3.4.23: Compact(0) on a fresh store succeeds (its compact revision starts at -1) and a
/// second Compact(0) is "required revision has been compacted".
#[test]
fn compact_zero_once_on_a_fresh_store() {
    let mut s = Store::new();
    assert_eq!(s.compact(0).expect("compact 0").revision, 1);
    assert_eq!(s.compact_revision(), 0);
    assert_eq!(
        s.compact(0),
        Err(Error::Compacted {
            compact_revision: 0
        })
    );
    assert_eq!(
        s.compact(2),
        Err(Error::FutureRevision {
            revision: 2,
            current: 1
        })
    );
    assert!(s.compact(1).is_ok());
}

#[test]
fn compaction_keeps_versions_and_later_history_intact() {
    let mut s = Store::new();
    for i in 0..5 {
        put(&mut s, "k", &i.to_string()); // 2..=6
    }
    s.compact(4).expect("compact");
    assert_eq!(get(&s, "k", 4).expect("read"), Some(kv("k", "2", 2, 4, 3)));
    assert_eq!(get(&s, "k", 6).expect("read"), Some(kv("k", "4", 2, 6, 5)));
    let p = put(&mut s, "k", "5");
    assert_eq!(
        (p.events[0].kv.version, p.events[0].kv.create_revision),
        (6, 2)
    );
}

// ------------------------------------------------------------------------------ watch catch-up

#[test]
fn events_since_in_revision_order_with_prev_kv() {
    let mut s = Store::new();
    put(&mut s, "a", "1"); // 2
    put(&mut s, "b", "1"); // 3
    put(&mut s, "a", "2"); // 4
    del(&mut s, "a", ""); // 5
    put(&mut s, "c", "1"); // 6
    let evs = s.events_since(b"a", b"c", 2, 100).expect("events");
    let shape: Vec<_> = evs
        .iter()
        .map(|e| (e.kind, e.kv.key.clone(), e.kv.mod_revision))
        .collect();
    assert_eq!(
        shape,
        vec![
            (EventKind::Put, b("a"), 2),
            (EventKind::Put, b("b"), 3),
            (EventKind::Put, b("a"), 4),
            (EventKind::Delete, b("a"), 5),
        ]
    );
    assert_eq!(evs[0].prev_kv, None);
    assert_eq!(evs[2].prev_kv, Some(kv("a", "1", 2, 2, 1)));
    assert_eq!(evs[3].prev_kv, Some(kv("a", "2", 2, 4, 2)));
    assert_eq!(
        evs[3].kv,
        KeyValue {
            key: b("a"),
            mod_revision: 5,
            ..KeyValue::default()
        }
    );
    // Single key, later start, and the future.
    assert_eq!(s.events_since(b"a", b"", 4, 100).expect("events").len(), 2);
    assert_eq!(s.events_since(b"c", b"", 1, 100).expect("events").len(), 1);
    assert!(s
        .events_since(b"a", b"\0", 7, 100)
        .expect("events")
        .is_empty());
}

#[test]
fn events_since_returns_whole_revisions() {
    let mut s = Store::new();
    let t = TxnRequest {
        compare: vec![],
        success: vec![put_op("a", "1"), put_op("b", "1"), put_op("c", "1")],
        failure: vec![],
    };
    s.txn(&t).expect("txn"); // 2: three events
    put(&mut s, "d", "1"); // 3
    put(&mut s, "e", "1"); // 4
    let first = s.events_since(b"\0", b"\0", 1, 2).expect("events");
    assert_eq!(first.len(), 3, "a revision is never split");
    let next = s
        .events_since(b"\0", b"\0", first[2].kv.mod_revision + 1, 1)
        .expect("events");
    assert_eq!(
        next.iter().map(|e| e.kv.mod_revision).collect::<Vec<_>>(),
        [3]
    );
    let rest = s.events_since(b"\0", b"\0", 3, 10).expect("events");
    assert_eq!(rest.len(), 2);
}

/// etcd 3.4.23: after compact(5), a watch from 4 is cancelled as compacted while a watch from
/// 5 streams the puts of revision 5 onward.
#[test]
fn events_since_after_compaction() {
    let mut s = Store::new();
    put(&mut s, "a", "1"); // 2
    put(&mut s, "b", "1"); // 3
    put(&mut s, "a", "2"); // 4
    let t = TxnRequest {
        compare: vec![],
        success: vec![
            put_op("b", "2"),
            RequestOp::DeleteRange(DeleteRangeRequest {
                key: b("a"),
                ..Default::default()
            }),
        ],
        failure: vec![],
    };
    s.txn(&t).expect("txn"); // 5: put b, delete a
    put(&mut s, "b", "3"); // 6
    s.compact(5).expect("compact");
    assert_eq!(
        s.events_since(b"\0", b"\0", 4, 100),
        Err(Error::Compacted {
            compact_revision: 5
        })
    );
    let evs = s.events_since(b"\0", b"\0", 5, 100).expect("events");
    // The delete of a at 5 went with the compaction (etcd drops a tombstone at the compact
    // revision); prev_kv at revision 4 is no longer readable.
    let shape: Vec<_> = evs
        .iter()
        .map(|e| {
            (
                e.kind,
                e.kv.key.clone(),
                e.kv.mod_revision,
                e.prev_kv.is_some(),
            )
        })
        .collect();
    assert_eq!(
        shape,
        vec![
            (EventKind::Put, b("b"), 5, false),
            (EventKind::Put, b("b"), 6, true)
        ]
    );
    assert_eq!(evs[1].prev_kv, Some(kv("b", "2", 3, 5, 2)));
}

// ------------------------------------------------------------------------------ advance

/// As in the module's worked example, `advance 8` at revision 5 skips 6, 7 and 8, which hold
/// no change: every read, hash and watch sees them as the state of revision 5.
#[test]
fn advance_skips_revisions_that_read_as_the_last_change_before_them() {
    let mut s = Store::new();
    put(&mut s, "foo", "a"); // 2
    put(&mut s, "bar", "x"); // 3
    del(&mut s, "foo", ""); // 4
    put(&mut s, "foo", "c"); // 5
    let hash_at_5 = s.hash_kv(0).expect("hash").hash;

    let applied = s.advance(8);
    s.check_invariants();
    assert_eq!((applied.revision, applied.events), (8, vec![]));
    assert_eq!(s.revision(), 8);
    // Behind or at the revision: nothing moves.
    for to in [8, 3, 0, -1] {
        assert_eq!(s.advance(to).revision, 8, "advance {to}");
    }
    for rev in [5, 6, 7, 8, 0] {
        assert_eq!(
            get(&s, "foo", rev).expect("read"),
            Some(kv("foo", "c", 5, 5, 1)),
            "foo at {rev}"
        );
    }
    assert_eq!(
        get(&s, "foo", 9),
        Err(Error::FutureRevision {
            revision: 9,
            current: 8
        })
    );
    // No event for the skipped revisions; a watch from one of them resumes after the advance.
    let chunk = s.events_chunk(b"\0", b"\0", 6, 100).expect("events");
    assert_eq!((chunk.events, chunk.next_revision), (vec![], 9));
    // The data is that of revision 5, so is its hash (over the same records).
    let h = s.hash_kv(7).expect("hash at a skipped revision");
    assert_eq!((h.hash, h.hash_revision), (hash_at_5, 7));

    // The next write takes advance + 1, with prev_kv and versions as of revision 5.
    let p = s
        .put(&PutRequest {
            key: b("foo"),
            value: b("d"),
            prev_kv: true,
            ..PutRequest::default()
        })
        .expect("put");
    s.check_invariants();
    assert_eq!(p.revision, 9);
    assert_eq!(p.response.prev_kv, Some(kv("foo", "c", 5, 5, 1)));
    assert_eq!(
        get(&s, "foo", 0).expect("read"),
        Some(kv("foo", "d", 5, 9, 2))
    );
    let evs = s.events_since(b"foo", b"", 6, 100).expect("events");
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].prev_kv, Some(kv("foo", "c", 5, 5, 1)));

    // Compacting at a skipped revision keeps what is readable there.
    s.compact(7).expect("compact at a skipped revision");
    s.check_invariants();
    assert_eq!(
        get(&s, "foo", 7).expect("read"),
        Some(kv("foo", "c", 5, 5, 1))
    );
    assert_eq!(
        get(&s, "bar", 8).expect("read"),
        Some(kv("bar", "x", 3, 3, 1))
    );
    assert!(matches!(get(&s, "foo", 6), Err(Error::Compacted { .. })));
}

/// An in-memory store keeps no journal: an advance is not a pending change there.
#[test]
fn advance_on_a_store_without_journal_pends_nothing() {
    let mut s = Store::new();
    s.advance(10);
    assert_eq!(s.pending_changes(), image::Pending::default());
    assert_eq!(s.take_changes().revision(), 10);
}

// ------------------------------------------------------------------------------ leases

#[test]
fn lease_grant_rules() {
    let mut s = Store::new();
    // etcd 3.4.23: TTL 1 and TTL -5 were both granted as 2 (the default minimum).
    assert_eq!(s.lease_grant(42, 1, 0), Ok((42, 2)));
    assert_eq!(s.lease_grant(43, -5, 0), Ok((43, 2)));
    assert_eq!(
        s.lease_grant(42, 10, 0),
        Err(Error::LeaseExists { lease_id: 42 })
    );
    assert_eq!(
        s.lease_grant(44, MAX_LEASE_TTL + 1, 0),
        Err(Error::LeaseTtlTooLarge {
            ttl: MAX_LEASE_TTL + 1
        })
    );
    assert_eq!(s.lease_grant(44, MAX_LEASE_TTL, 0), Ok((44, MAX_LEASE_TTL)));
    s.set_min_lease_ttl(5);
    assert_eq!(s.lease_grant(45, 3, 0), Ok((45, 5)));
    // Id 0 gets a fresh positive id, the same on every replica applying the same grants.
    let mut twin = s.clone();
    let (g1, _) = s.lease_grant(0, 60, 0).expect("grant");
    let (g2, _) = s.lease_grant(0, 60, 0).expect("grant");
    assert!(g1 > 0 && g2 > 0 && g1 != g2);
    assert_eq!(twin.lease_grant(0, 60, 0).expect("grant").0, g1);
    assert_eq!(s.leases(), {
        let mut ids = vec![42, 43, 44, 45, g1, g2];
        ids.sort();
        ids
    });
    // Granting touches no revision.
    assert_eq!(s.revision(), 1);
}

const MAX_LEASE_TTL: i64 = crate::lease::MAX_LEASE_TTL_SECS;

#[test]
fn lease_revoke_deletes_keys_sorted_in_one_revision() {
    let mut s = Store::new();
    s.lease_grant(9, 30, 0).expect("grant");
    for k in ["z", "m", "a"] {
        put_lease(&mut s, k, "v", 9).expect("put"); // 2, 3, 4
    }
    put(&mut s, "free", "v"); // 5
    let ttl = s.lease_time_to_live(9, true, 1_500).expect("ttl");
    assert_eq!(ttl.keys, vec![b("a"), b("m"), b("z")]);
    assert_eq!((ttl.granted_ttl, ttl.ttl_remaining_secs), (30, 28));
    assert!(s
        .lease_time_to_live(9, false, 0)
        .expect("ttl")
        .keys
        .is_empty());

    let r = s.lease_revoke(9).expect("revoke");
    s.check_invariants();
    assert_eq!(r.revision, 6);
    let shape: Vec<_> = r
        .events
        .iter()
        .map(|e| (e.kind, e.kv.key.clone(), e.kv.mod_revision))
        .collect();
    assert_eq!(
        shape,
        vec![
            (EventKind::Delete, b("a"), 6),
            (EventKind::Delete, b("m"), 6),
            (EventKind::Delete, b("z"), 6)
        ]
    );
    assert!(r
        .events
        .iter()
        .all(|e| e.prev_kv.as_ref().is_some_and(|p| p.lease == 9)));
    assert_eq!(keys(&s.range(&rq("\0", "\0")).expect("range")), ["free"]);
    assert_eq!(s.lease_revoke(9), Err(Error::LeaseNotFound { lease_id: 9 }));
    assert_eq!(
        s.lease_time_to_live(9, false, 0),
        Err(Error::LeaseNotFound { lease_id: 9 })
    );
    // A lease without keys is revoked without a revision.
    s.lease_grant(10, 30, 0).expect("grant");
    assert_eq!(s.lease_revoke(10).expect("revoke").revision, 6);
    assert!(s.leases().is_empty());
}

#[test]
fn lease_expiry_keep_alive_and_remaining_ttl() {
    let mut s = Store::new();
    s.lease_grant(1, 10, 1_000).expect("grant"); // deadline 11_000
    s.lease_grant(2, 5, 1_000).expect("grant"); // deadline 6_000
    assert_eq!(s.next_lease_deadline_ms(), Some(6_000));
    assert!(s.expired_leases(5_999).is_empty());
    assert_eq!(s.expired_leases(6_000), vec![2]);
    assert_eq!(s.expired_leases(20_000), vec![2, 1]);
    // Remaining TTL truncates toward zero, like etcd's int64(Seconds()).
    assert_eq!(
        s.lease_time_to_live(1, false, 1_001)
            .expect("ttl")
            .ttl_remaining_secs,
        9
    );
    assert_eq!(
        s.lease_time_to_live(2, false, 6_500)
            .expect("ttl")
            .ttl_remaining_secs,
        0
    );
    assert_eq!(
        s.lease_time_to_live(2, false, 7_999)
            .expect("ttl")
            .ttl_remaining_secs,
        -1
    );
    // An expired lease is not renewed (etcd waits for its revoke, then says not found).
    assert_eq!(
        s.lease_keep_alive(2, 6_000),
        Err(Error::LeaseNotFound { lease_id: 2 })
    );
    assert_eq!(s.lease_keep_alive(1, 10_000), Ok(10));
    assert_eq!(
        s.lease_time_to_live(1, false, 10_000)
            .expect("ttl")
            .ttl_remaining_secs,
        10
    );
    assert_eq!(s.expired_leases(19_999), vec![2]);
    assert_eq!(s.next_lease_deadline_ms(), Some(6_000));
    s.lease_revoke(2).expect("revoke");
    assert_eq!(s.next_lease_deadline_ms(), Some(20_000));
    assert_eq!(
        s.lease_keep_alive(77, 0),
        Err(Error::LeaseNotFound { lease_id: 77 })
    );
    s.lease_refresh_all(50_000, 1_500);
    assert_eq!(s.next_lease_deadline_ms(), Some(61_500));
}

// ------------------------------------------------------------------------------ hashing

/// The first `upto` steps of one fixed history: put a, put b, delete a, put a, put c.
fn scripted(s: &mut Store, upto: usize) {
    for step in 0..upto {
        match step {
            0 => put(s, "a", "1").revision,
            1 => put(s, "b", "1").revision,
            2 => del(s, "a", "").revision,
            3 => put(s, "a", "2").revision,
            _ => put(s, "c", "3").revision,
        };
    }
}

#[test]
fn hash_kv_is_deterministic_and_covers_history_up_to_the_revision() {
    let (mut x, mut y) = (Store::new(), Store::new());
    scripted(&mut x, 5);
    scripted(&mut y, 5);
    assert_eq!(x.hash_kv(0), y.hash_kv(0));
    assert_eq!(x.hash(), y.hash());
    let h = x.hash_kv(0).expect("hash");
    // etcd 3.4.23 answers compact_revision -1 for a store never compacted.
    assert_eq!((h.hash_revision, h.compact_revision), (6, -1));
    // The hash at revision 4 equals the hash of a store that stopped there.
    let mut z = Store::new();
    scripted(&mut z, 3);
    assert_eq!(
        x.hash_kv(4).expect("hash").hash,
        z.hash_kv(0).expect("hash").hash
    );
    assert_ne!(
        x.hash_kv(5).expect("hash").hash,
        z.hash_kv(0).expect("hash").hash
    );
    // A different value changes it.
    put(&mut y, "c", "other");
    put(&mut x, "c", "same");
    assert_ne!(
        x.hash_kv(0).expect("hash").hash,
        y.hash_kv(0).expect("hash").hash
    );
    assert_ne!(x.hash(), y.hash());
    // etcd 3.4: hashing at or below the compact revision is refused; above it is fine.
    x.compact(4).expect("compact");
    assert_eq!(
        x.hash_kv(4),
        Err(Error::Compacted {
            compact_revision: 4
        })
    );
    assert_eq!(
        x.hash_kv(3),
        Err(Error::Compacted {
            compact_revision: 4
        })
    );
    assert_eq!(
        x.hash_kv(8),
        Err(Error::FutureRevision {
            revision: 8,
            current: 7
        })
    );
    let after = x.hash_kv(5).expect("hash");
    assert_eq!((after.compact_revision, after.hash_revision), (4, 5));
    // Two replicas that compacted alike agree.
    y.compact(4).expect("compact");
    assert_eq!(x.hash_kv(5), y.hash_kv(5));
    // Leases are part of the whole-state hash.
    let before = x.hash();
    x.lease_grant(5, 10, 0).expect("grant");
    assert_ne!(x.hash(), before);
}

// ------------------------------------------------------------------------------ model check

/// A plain model: the whole key space after each revision.
struct Model {
    snapshots: Vec<BTreeMap<Bytes, KeyValue>>, // index = revision; [0] unused
}

impl Model {
    fn now(&self) -> &BTreeMap<Bytes, KeyValue> {
        self.snapshots.last().expect("non-empty")
    }
}

/// Random puts, deletes, multi-op txns and compactions, checked against the model: every read
/// at every live revision, and watch catch-up, must agree.
#[test]
fn random_histories_match_a_snapshot_model() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x0BA1_1A57);
    let keys_pool: Vec<Bytes> = (0..8).map(|i| b(&format!("k{i}"))).collect();
    let mut s = Store::new();
    let mut m = Model {
        snapshots: vec![BTreeMap::new(), BTreeMap::new()],
    };
    let mut compacted = 0;
    for step in 0..600 {
        let mut next = m.now().clone();
        let main = s.revision() + 1;
        let choice = rng.gen_range(0..10);
        if choice < 5 {
            let key = keys_pool[rng.gen_range(0..keys_pool.len())].clone();
            let value = b(&format!("v{step}"));
            s.put(&PutRequest {
                key: key.clone(),
                value: value.clone(),
                ..Default::default()
            })
            .expect("put");
            let (create, version) = next
                .get(&key)
                .map_or((main, 1), |kv| (kv.create_revision, kv.version + 1));
            next.insert(
                key.clone(),
                KeyValue {
                    key,
                    value,
                    create_revision: create,
                    mod_revision: main,
                    version,
                    lease: 0,
                },
            );
        } else if choice < 8 {
            let i = rng.gen_range(0..keys_pool.len());
            let j = rng.gen_range(i..=keys_pool.len());
            let end = if j == keys_pool.len() {
                b("\0")
            } else {
                keys_pool[j].clone()
            };
            let d = s
                .delete_range(&DeleteRangeRequest {
                    key: keys_pool[i].clone(),
                    range_end: end.clone(),
                    prev_kv: true,
                })
                .expect("delete");
            let kr = KeyRange::new(&keys_pool[i], &end);
            let gone: Vec<Bytes> = next.keys().filter(|k| kr.contains(k)).cloned().collect();
            assert_eq!(d.response.deleted as usize, gone.len());
            for k in gone {
                next.remove(&k);
            }
        } else if choice < 9 {
            // A txn writing two distinct keys.
            let i = rng.gen_range(0..keys_pool.len());
            let k = (i + rng.gen_range(1..keys_pool.len())) % keys_pool.len();
            let ops = vec![
                put_op(std::str::from_utf8(&keys_pool[i]).expect("utf8"), "t"),
                put_op(std::str::from_utf8(&keys_pool[k]).expect("utf8"), "u"),
            ];
            crate::validate::txn(
                &TxnRequest {
                    compare: vec![],
                    success: ops.clone(),
                    failure: vec![],
                },
                128,
            )
            .expect("valid");
            s.txn(&TxnRequest {
                compare: vec![],
                success: ops,
                failure: vec![],
            })
            .expect("txn");
            for (key, value) in [
                (keys_pool[i].clone(), b("t")),
                (keys_pool[k].clone(), b("u")),
            ] {
                let (create, version) = next
                    .get(&key)
                    .map_or((main, 1), |kv| (kv.create_revision, kv.version + 1));
                next.insert(
                    key.clone(),
                    KeyValue {
                        key,
                        value,
                        create_revision: create,
                        mod_revision: main,
                        version,
                        lease: 0,
                    },
                );
            }
        } else if rng.gen_bool(0.3) {
            // An advance: the revisions it skips hold no change, each reading as the one
            // before it (the model gets a copy for each but the last, pushed below).
            let to = s.revision() + rng.gen_range(-1..5);
            assert!(s.advance(to).events.is_empty());
            for _ in main..to {
                m.snapshots.push(next.clone());
            }
        } else if compacted < s.revision() {
            let at = rng.gen_range(compacted + 1..=s.revision());
            s.compact(at).expect("compact");
            compacted = at;
        }
        s.check_invariants();
        if s.revision() >= main {
            m.snapshots.push(next);
        } else {
            assert_eq!(&next, m.now(), "a no-op write changed the model");
        }
        assert_eq!(s.revision() as usize, m.snapshots.len() - 1);
        // Every readable revision matches.
        if step % 25 == 0 || step == 599 {
            for rev in compacted.max(1)..=s.revision() {
                let got = s
                    .range(&RangeRequest {
                        revision: rev,
                        ..rq("\0", "\0")
                    })
                    .expect("range");
                let want: Vec<KeyValue> = m.snapshots[rev as usize].values().cloned().collect();
                assert_eq!(got.kvs, want, "at revision {rev}");
            }
            if compacted > 1 {
                assert!(s
                    .range(&RangeRequest {
                        revision: compacted - 1,
                        ..rq("\0", "\0")
                    })
                    .is_err());
            }
            // Watch catch-up from just after the compaction replays the model's changes.
            let from = compacted + 1;
            let evs = s
                .events_since(b"\0", b"\0", from, usize::MAX)
                .expect("events");
            let mut replay = m.snapshots[(from - 1).max(1) as usize].clone();
            for e in &evs {
                match e.kind {
                    EventKind::Put => {
                        replay.insert(e.kv.key.clone(), e.kv.clone());
                    }
                    EventKind::Delete => {
                        assert!(
                            replay.remove(&e.kv.key).is_some(),
                            "delete of a missing key"
                        );
                    }
                }
                let before = m.snapshots[(e.kv.mod_revision - 1) as usize].get(&e.kv.key);
                assert_eq!(e.prev_kv.as_ref(), before, "prev_kv of {e:?}");
            }
            assert_eq!(&replay, m.now());
        }
    }
    assert!(compacted > 0, "the run compacted at least once");
}

/// etcd 3.4.23 answered: with p1 at version 2, p2 at 3 and p3 at 1, `sort_target VERSION,
/// limit 1` gives p1 with order NONE (only p1, p2 were fetched) but p3 with order ASCEND
/// (everything fetched, then sorted).
#[test]
fn non_key_target_with_order_none_sorts_only_the_fetched_keys() {
    let mut s = Store::new();
    for k in ["p1", "p1", "p2", "p2", "p2", "p3"] {
        put(&mut s, k, "x");
    }
    let req = RangeRequest {
        sort_target: SortTarget::Version,
        limit: 1,
        ..rq("p", "q")
    };
    let none = s.range(&req).expect("range");
    assert_eq!(
        (keys(&none), none.more, none.count),
        (vec!["p1".into()], true, 3)
    );
    let asc = s
        .range(&RangeRequest {
            sort_order: SortOrder::Ascend,
            ..req
        })
        .expect("range");
    assert_eq!(
        (keys(&asc), asc.more, asc.count),
        (vec!["p3".into()], true, 3)
    );
}

/// etcd 3.4.23: a range inside a txn at a negative revision fails with "compacted" on a store
/// never compacted (its raw compact revision is -1), while a plain range reads the current one.
#[test]
fn negative_revision_inside_a_txn_is_compacted() {
    let mut s = Store::new();
    assert!(s
        .range(&RangeRequest {
            revision: -3,
            ..rq("a", "")
        })
        .is_ok());
    let t = TxnRequest {
        compare: vec![],
        success: vec![RequestOp::Range(RangeRequest {
            revision: -3,
            ..rq("a", "")
        })],
        failure: vec![],
    };
    assert_eq!(
        s.txn(&t),
        Err(Error::Compacted {
            compact_revision: 0
        })
    );
}
