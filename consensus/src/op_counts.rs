//! How many puts, deletes, ranges and txns a shard's store ran, counted as etcd 3.4's mvcc
//! counts them (`etcd_mvcc_put_total`, `etcd_mvcc_delete_total`, `etcd_mvcc_range_total`,
//! `etcd_mvcc_txn_total`), so the same work moves the same figures.
//!
//! etcd counts inside each store transaction it opens: every range, put and delete call, and
//! one txn when a transaction made more than one call. The calls come from the request:
//! - a Range: one range;
//! - a Put: one put, and one range first when it asks for `prev_kv`, `ignore_value` or
//!   `ignore_lease` (it reads the old value), so such a put also counts a txn;
//! - a DeleteRange: one delete, and one range first when it asks for `prev_kv`;
//! - a Txn: its compares (one range each, nested txns on the chosen path included) run in a
//!   read transaction; a txn that writes ends that one and runs its operations in a second,
//!   so the two are counted apart; a read-only txn runs compares and operations in one.
//!
//! Worked example (observed on etcd 3.4.23): `value("a") = "v"` then `put b`: range +1, put +1,
//! txn +0 (one call in each transaction); `value("a") = "v"` then `get b`: range +2, txn +1.
//!
//! Counts are made where the store ran the request with success: writes on every replica as
//! it applies them (etcd's figures are "seen by this member"), reads where they were served.

use ballast_engine::types::{
    DeleteRangeRequest, PutRequest, RequestOp, ResponseOp, TxnRequest, TxnResponse,
};

/// The four counters, since the shard started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpCounts {
    pub puts: u64,
    pub deletes: u64,
    pub ranges: u64,
    pub txns: u64,
}

/// Calls made in one store transaction.
#[derive(Default)]
struct Calls {
    ranges: u64,
    puts: u64,
    deletes: u64,
}

impl OpCounts {
    fn end(&mut self, calls: Calls) {
        if calls.ranges + calls.puts + calls.deletes > 1 {
            self.txns += 1;
        }
        self.ranges += calls.ranges;
        self.puts += calls.puts;
        self.deletes += calls.deletes;
    }

    pub fn range(&mut self) {
        self.end(Calls {
            ranges: 1,
            ..Calls::default()
        });
    }

    pub fn put(&mut self, req: &PutRequest) {
        let mut calls = Calls::default();
        put_calls(&mut calls, req);
        self.end(calls);
    }

    pub fn delete(&mut self, req: &DeleteRangeRequest) {
        let mut calls = Calls::default();
        delete_calls(&mut calls, req);
        self.end(calls);
    }

    /// A txn that ran and answered `resp` (its path: `resp.succeeded`, nested likewise).
    pub fn txn(&mut self, req: &TxnRequest, resp: &TxnResponse, writes: bool) {
        let mut compares = Calls::default();
        let mut ops = Calls::default();
        txn_calls(&mut compares, &mut ops, req, resp);
        if writes {
            self.end(compares);
            self.end(ops);
        } else {
            self.end(Calls {
                ranges: compares.ranges + ops.ranges,
                ..ops
            });
        }
    }
}

fn put_calls(calls: &mut Calls, req: &PutRequest) {
    if req.prev_kv || req.ignore_value || req.ignore_lease {
        calls.ranges += 1;
    }
    calls.puts += 1;
}

fn delete_calls(calls: &mut Calls, req: &DeleteRangeRequest) {
    if req.prev_kv {
        calls.ranges += 1;
    }
    calls.deletes += 1;
}

fn txn_calls(compares: &mut Calls, ops: &mut Calls, req: &TxnRequest, resp: &TxnResponse) {
    compares.ranges += req.compare.len() as u64;
    let path = if resp.succeeded {
        &req.success
    } else {
        &req.failure
    };
    for (op, answer) in path.iter().zip(&resp.responses) {
        match (op, answer) {
            (RequestOp::Range(_), _) => ops.ranges += 1,
            (RequestOp::Put(p), _) => put_calls(ops, p),
            (RequestOp::DeleteRange(d), _) => delete_calls(ops, d),
            (RequestOp::Txn(inner), ResponseOp::Txn(inner_resp)) => {
                txn_calls(compares, ops, inner, inner_resp)
            }
            (RequestOp::Txn(_), _) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ballast_engine::types::{Compare, PutResponse, RangeRequest, RangeResponse};

    fn put() -> RequestOp {
        RequestOp::Put(PutRequest::default())
    }

    fn get() -> RequestOp {
        RequestOp::Range(RangeRequest::default())
    }

    #[test]
    fn counts_as_etcd_3_4_23_counted_the_same_requests() {
        let mut c = OpCounts::default();
        c.put(&PutRequest::default());
        c.range();
        c.delete(&DeleteRangeRequest::default());
        assert_eq!(
            c,
            OpCounts {
                puts: 1,
                deletes: 1,
                ranges: 1,
                txns: 0
            }
        );
        // A put that reads the old value first: two calls, one txn.
        c.put(&PutRequest {
            prev_kv: true,
            ..PutRequest::default()
        });
        assert_eq!((c.puts, c.ranges, c.txns), (2, 2, 1));

        let compare = vec![Compare::default()];
        let ok = |responses| TxnResponse {
            succeeded: true,
            responses,
        };
        // compare, put: one call in each transaction, no txn.
        let mut c = OpCounts::default();
        let req = TxnRequest {
            compare: compare.clone(),
            success: vec![put()],
            failure: vec![],
        };
        c.txn(
            &req,
            &ok(vec![ResponseOp::Put(PutResponse::default())]),
            true,
        );
        assert_eq!((c.ranges, c.puts, c.txns), (1, 1, 0));
        // compare, put, put: a txn.
        let mut c = OpCounts::default();
        let req = TxnRequest {
            compare: compare.clone(),
            success: vec![put(), put()],
            failure: vec![],
        };
        let answers = vec![
            ResponseOp::Put(PutResponse::default()),
            ResponseOp::Put(PutResponse::default()),
        ];
        c.txn(&req, &ok(answers), true);
        assert_eq!((c.ranges, c.puts, c.txns), (1, 2, 1));
        // compare, get (read-only): both in one transaction.
        let mut c = OpCounts::default();
        let req = TxnRequest {
            compare,
            success: vec![get()],
            failure: vec![put()],
        };
        c.txn(
            &req,
            &ok(vec![ResponseOp::Range(RangeResponse::default())]),
            false,
        );
        assert_eq!((c.ranges, c.puts, c.txns), (2, 0, 1));
        // The failure path ran: only its operations count.
        let mut c = OpCounts::default();
        let failed = TxnResponse {
            succeeded: false,
            responses: vec![ResponseOp::Put(PutResponse::default())],
        };
        c.txn(&req, &failed, true);
        assert_eq!((c.ranges, c.puts, c.txns), (1, 1, 0));
    }
}
