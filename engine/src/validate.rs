//! The request checks etcd's API layer (`v3rpc/key.go`) makes before a request reaches
//! consensus, with etcd's exact rules and error precedence:
//!
//! - every key must be non-empty (compares included): EmptyKey;
//! - a put with `ignore_value` may not carry a value (ValueProvided), one with `ignore_lease`
//!   no lease (LeaseProvided);
//! - a txn's op count is the largest of its compare, success and failure lists; it may not
//!   exceed `max_txn_ops`, and a nested txn gets what its parent left (`max - parent count`);
//! - no key may be written twice on one path of a txn (DuplicateKey), by etcd's
//!   `checkIntervals`: a put clashes with another put or with a delete range at its own level or
//!   below, or with a delete in an *earlier* sibling nested txn (a delete in a later sibling
//!   does not count, as in etcd); the two branches of one nested txn never clash; deletes never
//!   clash with deletes. A delete whose `range_end` is `"\0"` (from-key) counts as the interval
//!   `[key, "\0")`, which holds no key, so it clashes with nothing — etcd 3.4 accepts
//!   `txn { delete from "a"; put "b" }` (checked against the reference server).

use std::collections::HashSet;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::types::*;

pub fn range(r: &RangeRequest) -> Result<()> {
    if r.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    Ok(())
}

pub fn put(r: &PutRequest) -> Result<()> {
    if r.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(Error::ValueProvided);
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(Error::LeaseProvided);
    }
    Ok(())
}

pub fn delete_range(r: &DeleteRangeRequest) -> Result<()> {
    if r.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    Ok(())
}

pub fn txn(r: &TxnRequest, max_txn_ops: usize) -> Result<()> {
    check_txn(r, max_txn_ops)?;
    // After the per-op checks, as etcd does, so the quadratic part only sees sane requests.
    check_intervals(&r.success)?;
    check_intervals(&r.failure)?;
    Ok(())
}

fn check_txn(r: &TxnRequest, max_txn_ops: usize) -> Result<()> {
    let ops = r.compare.len().max(r.success.len()).max(r.failure.len());
    if ops > max_txn_ops {
        return Err(Error::TooManyOps {
            ops,
            max: max_txn_ops,
        });
    }
    if r.compare.iter().any(|c| c.key.is_empty()) {
        return Err(Error::EmptyKey);
    }
    for op in r.success.iter().chain(&r.failure) {
        match op {
            RequestOp::Range(q) => range(q)?,
            RequestOp::Put(q) => put(q)?,
            RequestOp::DeleteRange(q) => delete_range(q)?,
            RequestOp::Txn(q) => check_txn(q, max_txn_ops - ops)?,
        }
    }
    Ok(())
}

/// A delete's key interval `[start, end)`; a single key `k` is `[k, k + "\0")`.
struct Interval {
    start: Bytes,
    end: Bytes,
}

impl Interval {
    fn holds(&self, key: &[u8]) -> bool {
        self.start[..] <= *key && *key < self.end[..]
    }
}

fn delete_interval(d: &DeleteRangeRequest) -> Interval {
    let end = if d.range_end.is_empty() {
        let mut end = d.key.to_vec();
        end.push(0);
        Bytes::from(end)
    } else {
        d.range_end.clone()
    };
    Interval {
        start: d.key.clone(),
        end,
    }
}

fn deleted(dels: &[Interval], key: &[u8]) -> bool {
    dels.iter().any(|iv| iv.holds(key))
}

/// The keys put and the intervals deleted by `ops` and their nested txns, or DuplicateKey.
fn check_intervals(ops: &[RequestOp]) -> Result<(HashSet<Bytes>, Vec<Interval>)> {
    let mut dels: Vec<Interval> = ops
        .iter()
        .filter_map(|op| match op {
            RequestOp::DeleteRange(d) => Some(delete_interval(d)),
            _ => None,
        })
        .collect();
    let mut puts: HashSet<Bytes> = HashSet::new();
    for op in ops {
        let RequestOp::Txn(nt) = op else { continue };
        let (puts_then, dels_then) = check_intervals(&nt.success)?;
        let (puts_else, dels_else) = check_intervals(&nt.failure)?;
        for k in &puts_then {
            if puts.contains(k) || deleted(&dels, k) {
                return Err(Error::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        for k in &puts_else {
            // Then and else exclude each other, so the same key in both is fine.
            if (puts.contains(k) && !puts_then.contains(k)) || deleted(&dels, k) {
                return Err(Error::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let RequestOp::Put(p) = op else { continue };
        if puts.contains(&p.key) || deleted(&dels, &p.key) {
            return Err(Error::DuplicateKey);
        }
        puts.insert(p.key.clone());
    }
    Ok((puts, dels))
}

#[cfg(test)]
mod tests;
