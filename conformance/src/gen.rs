//! Random and directed op sequences for the differential test.
//!
//! Invariants:
//! - Given a seed and the reference server's answers (the [`Ctx`]: current and compacted
//!   revision), the generated sequence is deterministic, so a failing seed replays.
//! - Keys come from [`KEYS`], ten keys sharing prefixes, so ops collide on keys and ranges.
//!   At most twelve keys ever exist: etcd sorts by a non-key target with Go's `sort.Sort`, which
//!   is an insertion sort (stable, ties keep key order) for up to twelve elements and unstable
//!   above; keeping under that bound makes etcd's tie order well defined and comparable.
//! - Leases use explicit IDs from [`LEASE_IDS`] and TTLs far beyond a run's length, so no lease
//!   expires by time during a run (expiry timing is not comparable between two servers).
//!   Short TTLs are only granted in [`Op::LeaseGrantRevoke`], which revokes at once.

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use ballast_proto::etcdserverpb::{
    compare, range_request, request_op, watch_create_request, CompactionRequest, Compare,
    DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest, LeaseTimeToLiveRequest, PutRequest,
    RangeRequest, RequestOp, TxnRequest, WatchCreateRequest,
};

use crate::diff::{Ctx, Op, WATCH_STREAMS};

/// The key universe (ten keys; see the module doc for why at most twelve).
pub const KEYS: [&[u8]; 10] = [
    b"a", b"a/1", b"a/2", b"a0", b"b", b"b/1", b"b/2", b"c", b"c\xff", b"\xff",
];
/// Range boundaries: the keys and points between them.
const BOUNDS: [&[u8]; 8] = [
    b"a/",
    b"a/1\x00",
    b"a1",
    b"b/",
    b"b0",
    b"c",
    b"d",
    b"\xff\xff",
];
/// Prefixes used for prefix ranges.
const PREFIXES: [&[u8]; 7] = [b"a", b"a/", b"b", b"b/", b"c", b"\xff", b"z"];
/// Values; equal values make VALUE compares and VALUE sorts tie.
const VALUES: [&[u8]; 6] = [b"", b"v", b"v1", b"v2", b"w", b"xyz"];
/// Lease IDs the generator grants, attaches and revokes.
pub const LEASE_IDS: [i64; 4] = [1, 2, 0x51, i64::MAX];
/// etcd's `MaxLeaseTTL` is 9,000,000,000 s; one more is refused.
const TOO_LARGE_TTL: i64 = 9_000_000_001;
/// etcd's default `--max-txn-ops`.
pub const MAX_TXN_OPS: usize = 128;

/// The smallest key greater than every key with this prefix (etcd's rule: increment the last
/// byte below 0xff after dropping trailing 0xff bytes; all 0xff gives `"\0"`, i.e. no end).
pub fn prefix_end(prefix: &[u8]) -> Bytes {
    let mut end = prefix.to_vec();
    while let Some(&last) = end.last() {
        if last < 0xff {
            *end.last_mut().expect("non-empty") += 1;
            return Bytes::from(end);
        }
        end.pop();
    }
    Bytes::from_static(b"\0")
}

/// A seeded generator of ops.
pub struct Gen {
    rng: StdRng,
}

impl Gen {
    pub fn new(seed: u64) -> Gen {
        Gen {
            rng: StdRng::seed_from_u64(seed),
        }
    }

    fn key(&mut self) -> Bytes {
        Bytes::from_static(KEYS.choose(&mut self.rng).expect("non-empty"))
    }

    fn value(&mut self) -> Bytes {
        if self.rng.gen_bool(0.1) {
            let n = self.rng.gen_range(1..24);
            Bytes::from((0..n).map(|_| self.rng.gen::<u8>()).collect::<Vec<u8>>())
        } else {
            Bytes::from_static(VALUES.choose(&mut self.rng).expect("non-empty"))
        }
    }

    fn lease(&mut self) -> i64 {
        if self.rng.gen_bool(0.05) {
            999 // never granted
        } else {
            *LEASE_IDS.choose(&mut self.rng).expect("non-empty")
        }
    }

    fn bound(&mut self) -> Bytes {
        if self.rng.gen_bool(0.5) {
            self.key()
        } else {
            Bytes::from_static(BOUNDS.choose(&mut self.rng).expect("non-empty"))
        }
    }

    /// A (key, range_end) pair: single key, prefix, from-key, everything, an interval (possibly
    /// reversed or empty), or an empty key.
    fn range(&mut self) -> (Bytes, Bytes) {
        match self.rng.gen_range(0..100) {
            0..=34 => (self.key(), Bytes::new()),
            35..=54 => {
                let p = *PREFIXES.choose(&mut self.rng).expect("non-empty");
                (Bytes::from_static(p), prefix_end(p))
            }
            55..=64 => (self.bound(), Bytes::from_static(b"\0")),
            65..=71 => (Bytes::from_static(b"\0"), Bytes::from_static(b"\0")),
            72..=95 => (self.bound(), self.bound()),
            96..=97 => (Bytes::new(), self.bound()),
            _ => (Bytes::new(), Bytes::new()),
        }
    }

    /// A revision around the interesting points: compacted, at the compaction, current,
    /// future.
    fn revision(&mut self, ctx: &Ctx) -> i64 {
        match self.rng.gen_range(0..10) {
            0 => ctx.compact_revision - 1,
            1 => ctx.compact_revision,
            2 => ctx.revision,
            3 => ctx.revision + 1,
            4 => ctx.revision + self.rng.gen_range(2..5),
            _ => self.rng.gen_range(1..=ctx.revision.max(1)),
        }
    }

    fn maybe_revision_filter(&mut self, ctx: &Ctx) -> i64 {
        if self.rng.gen_bool(0.8) {
            0
        } else {
            self.rng.gen_range(0..=ctx.revision + 1)
        }
    }

    pub fn put(&mut self) -> PutRequest {
        let mut p = PutRequest {
            key: if self.rng.gen_bool(0.02) {
                Bytes::new()
            } else {
                self.key()
            },
            value: self.value(),
            prev_kv: self.rng.gen_bool(0.4),
            ..Default::default()
        };
        if self.rng.gen_bool(0.25) {
            p.lease = self.lease();
        }
        if self.rng.gen_bool(0.1) {
            p.ignore_value = true;
            if self.rng.gen_bool(0.7) {
                p.value = Bytes::new();
            }
        }
        if self.rng.gen_bool(0.1) {
            p.ignore_lease = true;
            if self.rng.gen_bool(0.7) {
                p.lease = 0;
            }
        }
        p
    }

    pub fn range_req(&mut self, ctx: &Ctx) -> RangeRequest {
        let (key, range_end) = self.range();
        let mut r = RangeRequest {
            key,
            range_end,
            serializable: self.rng.gen_bool(0.3),
            keys_only: self.rng.gen_bool(0.15),
            count_only: self.rng.gen_bool(0.1),
            ..Default::default()
        };
        if self.rng.gen_bool(0.3) {
            r.limit = self.rng.gen_range(-1..5);
        }
        if self.rng.gen_bool(0.25) {
            r.revision = self.revision(ctx);
        }
        if self.rng.gen_bool(0.35) {
            // Order 3 is not a valid order (etcd then leaves the result unsorted). No invalid
            // target is sent: etcd 3.4 dereferences a nil sorter and crashes on one.
            r.sort_order = self.rng.gen_range(0..=3);
            r.sort_target = self.rng.gen_range(0..=4);
            if self.rng.gen_bool(0.8) {
                r.sort_order = r.sort_order.min(2);
            }
        }
        if self.rng.gen_bool(0.2) {
            r.min_mod_revision = self.maybe_revision_filter(ctx);
            r.max_mod_revision = self.maybe_revision_filter(ctx);
            r.min_create_revision = self.maybe_revision_filter(ctx);
            r.max_create_revision = self.maybe_revision_filter(ctx);
        }
        r
    }

    pub fn delete(&mut self) -> DeleteRangeRequest {
        let (key, range_end) = if self.rng.gen_bool(0.6) {
            (self.key(), Bytes::new())
        } else {
            self.range()
        };
        DeleteRangeRequest {
            key,
            range_end,
            prev_kv: self.rng.gen_bool(0.5),
        }
    }

    fn compare(&mut self, ctx: &Ctx) -> Compare {
        let (key, range_end) = if self.rng.gen_bool(0.8) {
            (self.key(), Bytes::new())
        } else {
            self.range()
        };
        let result = self.rng.gen_range(0..=3);
        let target = self.rng.gen_range(0..=4);
        let union = match target {
            0 => compare::TargetUnion::Version(self.rng.gen_range(0..4)),
            1 => compare::TargetUnion::CreateRevision(self.rng.gen_range(0..=ctx.revision + 1)),
            2 => compare::TargetUnion::ModRevision(self.rng.gen_range(0..=ctx.revision + 1)),
            3 => compare::TargetUnion::Value(self.value()),
            _ => compare::TargetUnion::Lease(if self.rng.gen_bool(0.3) {
                0
            } else {
                self.lease()
            }),
        };
        Compare {
            result,
            target,
            key,
            range_end,
            target_union: Some(union),
        }
    }

    fn request_op(&mut self, ctx: &Ctx, depth: usize) -> RequestOp {
        let kind = if depth < 2 {
            self.rng.gen_range(0..10)
        } else {
            self.rng.gen_range(0..9)
        };
        let request = match kind {
            0..=3 => request_op::Request::RequestPut(self.put()),
            4..=5 => request_op::Request::RequestRange(self.range_req(ctx)),
            6..=8 => request_op::Request::RequestDeleteRange(self.delete()),
            _ => request_op::Request::RequestTxn(self.txn(ctx, depth + 1)),
        };
        RequestOp {
            request: Some(request),
        }
    }

    pub fn txn(&mut self, ctx: &Ctx, depth: usize) -> TxnRequest {
        let nc = self.rng.gen_range(0..=3);
        let ns = self.rng.gen_range(0..=3);
        let nf = self.rng.gen_range(0..=3);
        TxnRequest {
            compare: (0..nc).map(|_| self.compare(ctx)).collect(),
            success: (0..ns).map(|_| self.request_op(ctx, depth)).collect(),
            failure: (0..nf).map(|_| self.request_op(ctx, depth)).collect(),
        }
    }

    /// A txn with `n` read-only ops in success (duplicates are allowed among reads).
    pub fn wide_txn(&mut self, ctx: &Ctx, n: usize) -> TxnRequest {
        TxnRequest {
            compare: vec![self.compare(ctx)],
            success: (0..n)
                .map(|_| RequestOp {
                    request: Some(request_op::Request::RequestRange(RangeRequest {
                        key: self.key(),
                        ..Default::default()
                    })),
                })
                .collect(),
            failure: Vec::new(),
        }
    }

    fn watch_create(&mut self, ctx: &Ctx) -> WatchCreateRequest {
        let (key, range_end) = self.range();
        let mut filters = Vec::new();
        if self.rng.gen_bool(0.15) {
            filters.push(watch_create_request::FilterType::Noput as i32);
        }
        if self.rng.gen_bool(0.15) {
            filters.push(watch_create_request::FilterType::Nodelete as i32);
        }
        WatchCreateRequest {
            key,
            range_end,
            start_revision: if self.rng.gen_bool(0.5) {
                0
            } else {
                self.revision(ctx).max(0)
            },
            progress_notify: self.rng.gen_bool(0.2),
            filters,
            prev_kv: self.rng.gen_bool(0.4),
            watch_id: if self.rng.gen_bool(0.2) {
                self.rng.gen_range(100..104)
            } else {
                0
            },
            fragment: self.rng.gen_bool(0.1),
        }
    }

    /// The next random op.
    pub fn op(&mut self, ctx: &Ctx) -> Op {
        let stream = self.rng.gen_range(0..WATCH_STREAMS);
        match self.rng.gen_range(0..1000) {
            0..=259 => Op::Put(self.put()),
            260..=429 => Op::Range(self.range_req(ctx)),
            430..=509 => Op::Delete(self.delete()),
            510..=649 => {
                let mut t = self.txn(ctx, 0);
                if txn_has_delete(&t) {
                    strip_ignore_flags(&mut t);
                }
                Op::Txn(t)
            }
            650..=654 => {
                let n = if self.rng.gen_bool(0.5) {
                    MAX_TXN_OPS
                } else {
                    MAX_TXN_OPS + 1
                };
                Op::Txn(self.wide_txn(ctx, n))
            }
            655..=679 => Op::Compact(CompactionRequest {
                revision: match self.rng.gen_range(0..6) {
                    0 => ctx.compact_revision,
                    1 => ctx.revision + 1,
                    _ => self
                        .rng
                        .gen_range(ctx.compact_revision.max(1)..=ctx.revision.max(1)),
                },
                physical: self.rng.gen_bool(0.5),
            }),
            680..=724 => Op::LeaseGrant(LeaseGrantRequest {
                ttl: if self.rng.gen_bool(0.05) {
                    TOO_LARGE_TTL
                } else {
                    self.rng.gen_range(600..5000)
                },
                id: self.lease(),
            }),
            725..=734 => Op::LeaseGrantGenerated {
                ttl: self.rng.gen_range(600..5000),
            },
            735..=749 => Op::LeaseGrantRevoke(LeaseGrantRequest {
                ttl: self.rng.gen_range(-1..8),
                id: 0x1000 + self.rng.gen_range(0..3),
            }),
            750..=774 => Op::LeaseRevoke(LeaseRevokeRequest { id: self.lease() }),
            775..=799 => Op::LeaseTimeToLive(LeaseTimeToLiveRequest {
                id: self.lease(),
                keys: self.rng.gen_bool(0.6),
            }),
            800..=809 => Op::LeaseLeases,
            810..=824 => Op::LeaseKeepAliveOnce(self.lease()),
            825..=894 => Op::WatchCreate {
                stream,
                req: self.watch_create(ctx),
            },
            895..=929 => Op::WatchCancel {
                stream,
                watch_id: if self.rng.gen_bool(0.8) {
                    self.rng.gen_range(0..8)
                } else {
                    self.rng.gen_range(100..104)
                },
            },
            930..=964 => Op::WatchProgress { stream },
            _ => Op::WatchSettle,
        }
    }
}

/// True if the txn (nested ones included, either branch) deletes anything.
fn txn_has_delete(t: &TxnRequest) -> bool {
    t.success
        .iter()
        .chain(&t.failure)
        .any(|op| match &op.request {
            Some(request_op::Request::RequestDeleteRange(_)) => true,
            Some(request_op::Request::RequestTxn(inner)) => txn_has_delete(inner),
            _ => false,
        })
}

/// Clears `ignore_value` / `ignore_lease` on every put of the txn. etcd 3.4 checks those flags
/// against the store as it was before the txn; a put with them after a delete of the same key in
/// the same txn then fails while being applied, and etcd panics ("unexpected error during txn:
/// etcdserver: key not found"). The generator never sends that combination.
fn strip_ignore_flags(t: &mut TxnRequest) {
    for op in t.success.iter_mut().chain(t.failure.iter_mut()) {
        match &mut op.request {
            Some(request_op::Request::RequestPut(p)) => {
                p.ignore_value = false;
                p.ignore_lease = false;
            }
            Some(request_op::Request::RequestTxn(inner)) => strip_ignore_flags(inner),
            _ => {}
        }
    }
}

fn put(key: &'static [u8], value: &'static [u8]) -> Op {
    Op::Put(PutRequest {
        key: Bytes::from_static(key),
        value: Bytes::from_static(value),
        ..Default::default()
    })
}

fn range(key: &'static [u8], range_end: &'static [u8]) -> RangeRequest {
    RangeRequest {
        key: Bytes::from_static(key),
        range_end: Bytes::from_static(range_end),
        ..Default::default()
    }
}

fn cmp(key: &'static [u8], result: i32, union: compare::TargetUnion) -> Compare {
    let target = match union {
        compare::TargetUnion::Version(_) => 0,
        compare::TargetUnion::CreateRevision(_) => 1,
        compare::TargetUnion::ModRevision(_) => 2,
        compare::TargetUnion::Value(_) => 3,
        compare::TargetUnion::Lease(_) => 4,
    };
    Compare {
        result,
        target,
        key: Bytes::from_static(key),
        range_end: Bytes::new(),
        target_union: Some(union),
    }
}

fn rop(r: request_op::Request) -> RequestOp {
    RequestOp { request: Some(r) }
}

/// A fixed sequence that reaches every case the random generator may miss on a given seed:
/// each error etcd returns for KV, Txn, Lease and Watch, compaction edges, sorting on every
/// target, every compare target and result, nested and too-wide txns, watches from compacted,
/// past and future revisions with filters and prev_kv.
pub fn directed() -> Vec<Op> {
    use compare::TargetUnion as T;
    use range_request::{SortOrder as O, SortTarget as S};
    use request_op::Request as R;
    let mut ops = vec![
        // Watches first, so they see everything below.
        Op::WatchCreate {
            stream: 0,
            req: WatchCreateRequest {
                key: Bytes::from_static(b"\0"),
                range_end: Bytes::from_static(b"\0"),
                prev_kv: true,
                ..Default::default()
            },
        },
        Op::WatchCreate {
            stream: 0,
            req: WatchCreateRequest {
                key: Bytes::from_static(b"a"),
                range_end: prefix_end(b"a"),
                filters: vec![watch_create_request::FilterType::Noput as i32],
                watch_id: 100,
                ..Default::default()
            },
        },
        Op::WatchCreate {
            stream: 1,
            req: WatchCreateRequest {
                key: Bytes::from_static(b"b"),
                filters: vec![watch_create_request::FilterType::Nodelete as i32],
                start_revision: 6, // in the future now
                ..Default::default()
            },
        },
        put(b"a", b"1"),
        put(b"a/1", b"x"),
        put(b"a/2", b"x"),
        put(b"b", b"2"),
        put(b"b", b"3"),
        put(b"c", b"y"),
        put(b"c\xff", b"y"),
        put(b"\xff", b"z"),
        // Put errors and flags.
        put(b"", b"v"),
        Op::Put(PutRequest {
            key: Bytes::from_static(b"a"),
            value: Bytes::from_static(b"11"),
            prev_kv: true,
            ..Default::default()
        }),
        Op::Put(PutRequest {
            key: Bytes::from_static(b"nokey"),
            ignore_value: true,
            ..Default::default()
        }),
        Op::Put(PutRequest {
            key: Bytes::from_static(b"a"),
            value: Bytes::from_static(b"v"),
            ignore_value: true,
            ..Default::default()
        }),
        Op::Put(PutRequest {
            key: Bytes::from_static(b"a"),
            ignore_value: true,
            prev_kv: true,
            ..Default::default()
        }),
        Op::Put(PutRequest {
            key: Bytes::from_static(b"a"),
            value: Bytes::from_static(b"v"),
            lease: 42,
            ..Default::default()
        }),
        Op::Put(PutRequest {
            key: Bytes::from_static(b"nokey"),
            value: Bytes::from_static(b"v"),
            ignore_lease: true,
            ..Default::default()
        }),
        Op::Put(PutRequest {
            key: Bytes::from_static(b"a"),
            value: Bytes::from_static(b"v"),
            lease: 1,
            ignore_lease: true,
            ..Default::default()
        }),
        // Request too large (etcd's --max-request-bytes default is 1.5 MiB).
        Op::Put(PutRequest {
            key: Bytes::from_static(b"big"),
            value: Bytes::from(vec![b'x'; 1_600_000]),
            ..Default::default()
        }),
        // Leases: grant, attach, ignore_lease keeps it, TTL and keys.
        Op::LeaseGrant(LeaseGrantRequest { ttl: 900, id: 1 }),
        Op::LeaseGrant(LeaseGrantRequest { ttl: 900, id: 1 }),
        Op::LeaseGrant(LeaseGrantRequest {
            ttl: TOO_LARGE_TTL,
            id: 2,
        }),
        Op::LeaseGrant(LeaseGrantRequest { ttl: 1200, id: 2 }),
        Op::LeaseGrantRevoke(LeaseGrantRequest { ttl: 1, id: 0x1000 }),
        Op::LeaseGrantRevoke(LeaseGrantRequest { ttl: 0, id: 0x1001 }),
        Op::LeaseGrantRevoke(LeaseGrantRequest {
            ttl: -5,
            id: 0x1002,
        }),
        Op::LeaseGrantGenerated { ttl: 700 },
        Op::Put(PutRequest {
            key: Bytes::from_static(b"b/1"),
            value: Bytes::from_static(b"leased"),
            lease: 1,
            ..Default::default()
        }),
        Op::Put(PutRequest {
            key: Bytes::from_static(b"b/2"),
            value: Bytes::from_static(b"leased"),
            lease: 1,
            ..Default::default()
        }),
        Op::Put(PutRequest {
            key: Bytes::from_static(b"b/1"),
            value: Bytes::from_static(b"again"),
            ignore_lease: true,
            prev_kv: true,
            ..Default::default()
        }),
        Op::Put(PutRequest {
            key: Bytes::from_static(b"a0"),
            value: Bytes::from_static(b"l2"),
            lease: 2,
            ..Default::default()
        }),
        Op::LeaseTimeToLive(LeaseTimeToLiveRequest { id: 1, keys: true }),
        Op::LeaseTimeToLive(LeaseTimeToLiveRequest { id: 2, keys: false }),
        Op::LeaseTimeToLive(LeaseTimeToLiveRequest { id: 77, keys: true }),
        Op::LeaseLeases,
        Op::LeaseKeepAliveOnce(1),
        Op::LeaseKeepAliveOnce(77),
        Op::Txn(TxnRequest {
            compare: vec![cmp(b"b/1", 0, T::Lease(1)), cmp(b"a0", 0, T::Lease(2))],
            success: vec![rop(R::RequestRange(range(b"b/", b"b0")))],
            failure: vec![],
        }),
        Op::LeaseRevoke(LeaseRevokeRequest { id: 1 }),
        Op::LeaseRevoke(LeaseRevokeRequest { id: 1 }),
        Op::LeaseTimeToLive(LeaseTimeToLiveRequest { id: 1, keys: true }),
        Op::LeaseLeases,
        Op::WatchProgress { stream: 0 },
        Op::WatchSettle,
    ];
    // Ranges: every sort order and target, limits, keys_only, count_only, filters.
    for order in [O::None, O::Ascend, O::Descend] {
        for target in [S::Key, S::Version, S::Create, S::Mod, S::Value] {
            for limit in [0, 2] {
                ops.push(Op::Range(RangeRequest {
                    key: Bytes::from_static(b"\0"),
                    range_end: Bytes::from_static(b"\0"),
                    sort_order: order as i32,
                    sort_target: target as i32,
                    limit,
                    ..Default::default()
                }));
            }
        }
    }
    ops.extend([
        Op::Range(RangeRequest {
            sort_order: 7,
            ..range(b"a", b"b")
        }),
        Op::Range(RangeRequest {
            sort_target: 3,
            sort_order: 9,
            ..range(b"a", b"b")
        }),
        Op::Range(range(b"", b"")),
        Op::Range(range(b"", b"b")),
        Op::Range(range(b"b", b"a")),
        Op::Range(range(b"a", b"\0")),
        Op::Range(RangeRequest {
            limit: 1,
            ..range(b"a", b"\0")
        }),
        Op::Range(RangeRequest {
            limit: -3,
            ..range(b"a", b"\0")
        }),
        Op::Range(RangeRequest {
            keys_only: true,
            ..range(b"a", b"b")
        }),
        Op::Range(RangeRequest {
            count_only: true,
            limit: 1,
            ..range(b"\0", b"\0")
        }),
        Op::Range(RangeRequest {
            count_only: true,
            keys_only: true,
            ..range(b"a", b"b")
        }),
        Op::Range(RangeRequest {
            min_mod_revision: 4,
            max_mod_revision: 8,
            ..range(b"\0", b"\0")
        }),
        Op::Range(RangeRequest {
            min_create_revision: 3,
            max_create_revision: 5,
            limit: 1,
            ..range(b"\0", b"\0")
        }),
        Op::Range(RangeRequest {
            revision: 3,
            ..range(b"\0", b"\0")
        }),
        Op::Range(RangeRequest {
            revision: 1000,
            ..range(b"a", b"")
        }),
        Op::Range(RangeRequest {
            serializable: true,
            ..range(b"a", b"b")
        }),
        // Deletes.
        Op::Delete(DeleteRangeRequest {
            key: Bytes::from_static(b"nokey"),
            range_end: Bytes::new(),
            prev_kv: true,
        }),
        Op::Delete(DeleteRangeRequest {
            key: Bytes::from_static(b"a/"),
            range_end: prefix_end(b"a/"),
            prev_kv: true,
        }),
        Op::Delete(DeleteRangeRequest {
            key: Bytes::from_static(b"c"),
            range_end: Bytes::new(),
            prev_kv: false,
        }),
        Op::Delete(DeleteRangeRequest {
            key: Bytes::new(),
            range_end: Bytes::new(),
            prev_kv: false,
        }),
        // Txn: every compare target and result, nested, duplicates, limits.
        Op::Txn(TxnRequest {
            compare: vec![
                cmp(b"a", 0, T::Version(3)),
                cmp(b"a", 1, T::CreateRevision(1)),
                cmp(b"a", 2, T::ModRevision(1000)),
                cmp(b"a", 3, T::Value(Bytes::from_static(b"zz"))),
                cmp(b"a", 0, T::Lease(0)),
            ],
            success: vec![
                rop(R::RequestPut(PutRequest {
                    key: Bytes::from_static(b"t1"),
                    value: Bytes::from_static(b"s"),
                    prev_kv: true,
                    ..Default::default()
                })),
                rop(R::RequestRange(range(b"a", b"b"))),
                rop(R::RequestDeleteRange(DeleteRangeRequest {
                    key: Bytes::from_static(b"b"),
                    range_end: Bytes::new(),
                    prev_kv: true,
                })),
                rop(R::RequestTxn(TxnRequest {
                    compare: vec![cmp(b"t1", 0, T::Version(0))],
                    success: vec![rop(R::RequestPut(PutRequest {
                        key: Bytes::from_static(b"t2"),
                        value: Bytes::from_static(b"n"),
                        ..Default::default()
                    }))],
                    failure: vec![rop(R::RequestRange(range(b"t1", b"")))],
                })),
            ],
            failure: vec![rop(R::RequestRange(range(b"\0", b"\0")))],
        }),
        Op::Txn(TxnRequest {
            compare: vec![cmp(b"missing", 0, T::Version(0))],
            success: vec![],
            failure: vec![],
        }),
        Op::Txn(TxnRequest {
            compare: vec![cmp(b"missing", 0, T::Value(Bytes::new()))],
            success: vec![],
            failure: vec![rop(R::RequestRange(range(b"missing", b"")))],
        }),
        Op::Txn(TxnRequest {
            compare: vec![Compare {
                range_end: prefix_end(b"a"),
                ..cmp(b"a", 1, T::ModRevision(0))
            }],
            success: vec![rop(R::RequestRange(range(b"a", b"")))],
            failure: vec![],
        }),
        Op::Txn(TxnRequest {
            compare: vec![Compare {
                range_end: Bytes::from_static(b"\0"),
                ..cmp(b"a", 2, T::CreateRevision(3))
            }],
            success: vec![],
            failure: vec![],
        }),
        Op::Txn(TxnRequest {
            compare: vec![],
            success: vec![
                rop(R::RequestPut(PutRequest {
                    key: Bytes::from_static(b"d"),
                    ..Default::default()
                })),
                rop(R::RequestPut(PutRequest {
                    key: Bytes::from_static(b"d"),
                    ..Default::default()
                })),
            ],
            failure: vec![],
        }),
        Op::Txn(TxnRequest {
            compare: vec![],
            success: vec![
                rop(R::RequestPut(PutRequest {
                    key: Bytes::from_static(b"a/1"),
                    ..Default::default()
                })),
                rop(R::RequestDeleteRange(DeleteRangeRequest {
                    key: Bytes::from_static(b"a"),
                    range_end: prefix_end(b"a"),
                    prev_kv: false,
                })),
            ],
            failure: vec![],
        }),
        Op::Txn(TxnRequest {
            compare: vec![],
            success: vec![
                rop(R::RequestPut(PutRequest {
                    key: Bytes::from_static(b"d"),
                    ..Default::default()
                })),
                rop(R::RequestTxn(TxnRequest {
                    compare: vec![],
                    success: vec![rop(R::RequestPut(PutRequest {
                        key: Bytes::from_static(b"d"),
                        ..Default::default()
                    }))],
                    failure: vec![],
                })),
            ],
            failure: vec![],
        }),
        Op::Txn(TxnRequest {
            compare: vec![],
            success: vec![rop(R::RequestTxn(TxnRequest {
                compare: vec![],
                success: vec![rop(R::RequestPut(PutRequest {
                    key: Bytes::from_static(b"e"),
                    ..Default::default()
                }))],
                failure: vec![rop(R::RequestPut(PutRequest {
                    key: Bytes::from_static(b"e"),
                    ..Default::default()
                }))],
            }))],
            failure: vec![],
        }),
        Op::Txn(TxnRequest {
            compare: vec![],
            success: vec![rop(R::RequestPut(PutRequest {
                key: Bytes::new(),
                ..Default::default()
            }))],
            failure: vec![],
        }),
        Op::Txn(TxnRequest {
            compare: vec![],
            success: vec![rop(R::RequestPut(PutRequest {
                key: Bytes::from_static(b"f"),
                lease: 424242,
                ..Default::default()
            }))],
            failure: vec![],
        }),
        Op::Txn(TxnRequest {
            compare: vec![],
            success: vec![rop(R::RequestRange(RangeRequest {
                revision: 10_000,
                ..range(b"a", b"")
            }))],
            failure: vec![],
        }),
        Op::WatchSettle,
    ]);
    let mut g = Gen::new(0);
    let ctx = Ctx {
        revision: 20,
        ..Default::default()
    };
    ops.push(Op::Txn(g.wide_txn(&ctx, MAX_TXN_OPS)));
    ops.push(Op::Txn(g.wide_txn(&ctx, MAX_TXN_OPS + 1)));
    ops.push(Op::Txn(TxnRequest {
        compare: (0..MAX_TXN_OPS + 1)
            .map(|_| cmp(b"a", 0, T::Version(1)))
            .collect(),
        success: vec![],
        failure: vec![],
    }));
    ops.extend([
        // Compaction: future, then real, then the same and older again, then reads and
        // watches around it.
        Op::Compact(CompactionRequest {
            revision: 10_000,
            physical: false,
        }),
        Op::Compact(CompactionRequest {
            revision: 8,
            physical: true,
        }),
        Op::Compact(CompactionRequest {
            revision: 8,
            physical: false,
        }),
        Op::Compact(CompactionRequest {
            revision: 5,
            physical: true,
        }),
        Op::Range(RangeRequest {
            revision: 7,
            ..range(b"a", b"")
        }),
        Op::Range(RangeRequest {
            revision: 8,
            ..range(b"\0", b"\0")
        }),
        Op::WatchCreate {
            stream: 1,
            req: WatchCreateRequest {
                key: Bytes::from_static(b"a"),
                start_revision: 3,
                ..Default::default()
            },
        },
        Op::WatchCreate {
            stream: 1,
            req: WatchCreateRequest {
                key: Bytes::from_static(b"\0"),
                range_end: Bytes::from_static(b"\0"),
                start_revision: 8,
                prev_kv: true,
                ..Default::default()
            },
        },
        Op::WatchCreate {
            stream: 0,
            req: WatchCreateRequest {
                key: Bytes::from_static(b"b"),
                range_end: prefix_end(b"b"),
                start_revision: 9,
                filters: vec![watch_create_request::FilterType::Noput as i32],
                ..Default::default()
            },
        },
        Op::WatchSettle,
        Op::WatchProgress { stream: 1 },
        Op::WatchCancel {
            stream: 0,
            watch_id: 100,
        },
        Op::WatchCancel {
            stream: 0,
            watch_id: 55,
        },
        put(b"a", b"after-cancel"),
        put(b"b", b"after-cancel"),
        Op::Delete(DeleteRangeRequest {
            key: Bytes::from_static(b"\0"),
            range_end: Bytes::from_static(b"\0"),
            prev_kv: true,
        }),
        Op::LeaseRevoke(LeaseRevokeRequest { id: 2 }),
        Op::WatchSettle,
        // Watch creations that fail: a duplicate client-chosen ID, an empty range. Last, so
        // that a server assigning IDs differently here does not shift every later watch ID.
        Op::WatchCreate {
            stream: 1,
            req: WatchCreateRequest {
                key: Bytes::from_static(b"x"),
                watch_id: 0x7000,
                ..Default::default()
            },
        },
        Op::WatchCreate {
            stream: 1,
            req: WatchCreateRequest {
                key: Bytes::from_static(b"x"),
                watch_id: 0x7000,
                ..Default::default()
            },
        },
        Op::WatchCreate {
            stream: 0,
            req: WatchCreateRequest {
                key: Bytes::from_static(b"b"),
                range_end: Bytes::from_static(b"a"),
                ..Default::default()
            },
        },
        Op::WatchProgress { stream: 0 },
    ]);
    ops
}
