//! Kubernetes traffic against Ballast alone, checked against a model of the acknowledged writes
//! rather than against etcd: concurrent clients do what kube-apiserver does to its store, over
//! twelve resource prefixes in several namespaces, while watchers and a compactor run.
//!
//! The traffic, each step as kube-apiserver sends it:
//! - create: a txn comparing the key's `mod_revision` (or `create_revision`) with 0, putting the
//!   object, else reading it (some creates reuse a live name and must fail);
//! - GuaranteedUpdate: a txn comparing `mod_revision` with the one last seen, putting the new
//!   object, else reading the current one and retrying with it;
//! - delete with a precondition: the same compare, a DeleteRange (with prev_kv), else a read;
//! - paginated list: `limit` pages over the resource prefix, the first at the current revision,
//!   the others from after the last key at the first page's header revision; some lists wait
//!   between pages until a compaction has passed their revision, and must then be refused with
//!   "mvcc: required revision has been compacted" and relist; count-only lists;
//! - watch: per resource, a list and then a watch of the prefix from the list's revision + 1 with
//!   progress_notify, ended after a few seconds and started again from a new list; one more
//!   watcher does the same over all of `/registry/` (a read and a watch across shards);
//! - compaction: the `compact_rev_key` txn and Compact at the revision the previous round saw.
//!   Events are written with a lease, as kube-apiserver does.
//!
//! Checked, once every write is known (answers are recorded and compared at the end):
//! - revisions: every acknowledged write got a revision no other write of its resource prefix
//!   got, nor any other write of its shard (`ballast_conformance::partition`; all writes with one
//!   shard); a write sent after another was acknowledged got a higher revision;
//! - reads see every acknowledged write: a list's revision is at least that of every write to
//!   its prefix acknowledged before it was sent; every list page is the model at the list's
//!   revision (keys, values, create/mod revision, version, lease, `more`, `count`); reads in
//!   failed txns and deletes' prev_kv are the model at their revision;
//! - watches: each session's events are in revision order, and are exactly the model's writes
//!   on its prefix from its start revision up to what it covered (the last event or progress
//!   notification); the last session of each watcher must cover every write, which it learns
//!   from progress notifications once the writers stop;
//! - compaction: a list or watch is refused as compacted only below a revision a Compact was
//!   sent for; with one shard, a page read after a Compact above its revision was acknowledged
//!   must be refused. (With several shards Compact(R) compacts each shard at the lower of R and
//!   its own revision, so a page may still be served there; it must then match the model.)
//!
//! Bounded: a fixed number of ops per client and a deadline on the traffic, on draining the
//! watchers and on the whole test. The figures (ops, conflicts, relists, events, progress
//! notifications) are printed. With `BALLAST_CONFORMANCE_BOTH_ETCD=1` the test runs against
//! etcd, which validates the test itself.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use ballast_conformance::gen::prefix_end;
use ballast_conformance::partition::shard_of;
use ballast_conformance::{Clients, Kind, Server};
use ballast_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use ballast_proto::etcdserverpb::kv_client::KvClient;
use ballast_proto::etcdserverpb::request_op::Request;
use ballast_proto::etcdserverpb::response_op::Response;
use ballast_proto::etcdserverpb::{
    watch_request, CompactionRequest, Compare, DeleteRangeRequest, LeaseGrantRequest, PutRequest,
    RangeRequest, RangeResponse, RequestOp, TxnRequest, TxnResponse, WatchCreateRequest,
    WatchRequest,
};
use ballast_proto::mvccpb::{event::EventType, Event, KeyValue};
use bytes::Bytes;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// One resource type: its key prefix and whether its objects live in namespaces.
struct Resource {
    prefix: &'static str,
    namespaced: bool,
}

/// Twelve resources as kube-apiserver lays them out (with two shards, five of them hash to
/// shard 1 and seven to shard 0).
const RESOURCES: [Resource; 12] = [
    Resource {
        prefix: "/registry/pods/",
        namespaced: true,
    },
    Resource {
        prefix: "/registry/configmaps/",
        namespaced: true,
    },
    Resource {
        prefix: "/registry/events/",
        namespaced: true,
    },
    Resource {
        prefix: "/registry/leases/",
        namespaced: true,
    },
    Resource {
        prefix: "/registry/secrets/",
        namespaced: true,
    },
    Resource {
        prefix: "/registry/services/specs/",
        namespaced: true,
    },
    Resource {
        prefix: "/registry/deployments/",
        namespaced: true,
    },
    Resource {
        prefix: "/registry/serviceaccounts/",
        namespaced: true,
    },
    Resource {
        prefix: "/registry/endpointslices/",
        namespaced: true,
    },
    Resource {
        prefix: "/registry/apiregistration.k8s.io/apiservices/",
        namespaced: false,
    },
    Resource {
        prefix: "/registry/namespaces/",
        namespaced: false,
    },
    Resource {
        prefix: "/registry/minions/",
        namespaced: false,
    },
];
/// The events resource (its objects carry [`EVENT_LEASE`]).
const EVENTS: usize = 2;
const NAMESPACES: [&str; 4] = ["default", "kube-system", "team-a", "team-b"];
/// The lease events are written with (kube-apiserver attaches one to every event).
const EVENT_LEASE: i64 = 0x6b75_6265;
const COMPACT_REV_KEY: &[u8] = b"compact_rev_key";
/// The whole of `/registry/`, as one more watcher lists and watches it.
const REGISTRY: &str = "/registry/";

/// Concurrent clients doing creates, updates, deletes and lists.
const CLIENTS: usize = 6;
/// Ops each client does (fewer if the traffic deadline comes first).
const OPS_PER_CLIENT: usize = 400;
/// When the clients stop even if they have ops left.
const TRAFFIC_DEADLINE: Duration = Duration::from_secs(22);
/// Page size of the paginated lists (small, so lists take several pages).
const PAGE_LIMIT: i64 = 7;
/// Page size of the list of all of `/registry/`.
const REGISTRY_PAGE_LIMIT: i64 = 40;
/// GuaranteedUpdate and precondition deletes give up after this many conflicts.
const MAX_ATTEMPTS: usize = 6;
/// A list is started again at most this many times after its revision was compacted.
const MAX_RELISTS: usize = 8;
/// The server's `--experimental-watch-progress-notify-interval`.
const PROGRESS_NOTIFY_INTERVAL: &str = "200ms";
/// How often the compactor runs (kube-apiserver: every 5 minutes).
const COMPACT_INTERVAL: Duration = Duration::from_millis(700);
/// How long one watch session runs before the watcher lists and watches again.
const SESSION: std::ops::Range<u64> = 1500..4000;
/// How long a slow list waits between its pages for a compaction to pass its revision.
const SLOW_LIST_WAIT: Duration = Duration::from_secs(3);
/// How long watchers get, once the writes stop, to be notified of progress past the last one.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on one RPC.
const RPC_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on the whole test.
const TEST_TIMEOUT: Duration = Duration::from_secs(100);
/// How far from its revision a wrong page is searched for the revision it shows.
const PAGE_SEARCH: i64 = 200;
/// Violations printed when the test fails.
const REPORT_MAX: usize = 25;
/// etcd's error for a read below the compacted revision (code OutOfRange).
const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";

/// What a read or a watch covers: one resource prefix or all of `/registry/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Resource(usize),
    Registry,
}

impl Scope {
    fn prefix(self) -> &'static str {
        match self {
            Scope::Resource(r) => RESOURCES[r].prefix,
            Scope::Registry => REGISTRY,
        }
    }

    fn resources(self) -> std::ops::Range<usize> {
        match self {
            Scope::Resource(r) => r..r + 1,
            Scope::Registry => 0..RESOURCES.len(),
        }
    }
}

/// One acknowledged write of the model: a put (`value`) or a delete (`None`).
#[derive(Debug, Clone)]
struct Write {
    rev: i64,
    key: Bytes,
    value: Option<Bytes>,
    lease: i64,
}

/// When a write was sent and acknowledged, for the revision order checks.
#[derive(Debug, Clone)]
struct Ack {
    /// The resource, or `None` for `compact_rev_key`.
    resource: Option<usize>,
    shard: usize,
    rev: i64,
    sent: Instant,
    acked: Instant,
    what: String,
}

#[derive(Default)]
struct Model {
    /// Per resource, the acknowledged writes in acknowledgement order.
    writes: Vec<Vec<Write>>,
    /// Per resource, the highest acknowledged revision.
    acked_max: Vec<i64>,
    /// Per resource, keys created and not yet deleted (update and delete targets).
    live: Vec<BTreeSet<Bytes>>,
    acks: Vec<Ack>,
}

/// One page of a paginated (or count-only) list, checked against the model at `rev`.
#[derive(Debug)]
struct Page {
    scope: Scope,
    start: Bytes,
    limit: i64,
    count_only: bool,
    rev: i64,
    header: i64,
    kvs: Vec<KeyValue>,
    more: bool,
    count: i64,
}

/// A read of one key (a failed txn's read, a delete's prev_kv), checked against the model.
#[derive(Debug)]
struct PointRead {
    resource: usize,
    key: Bytes,
    rev: i64,
    kv: Option<KeyValue>,
    what: &'static str,
}

/// One watch session: what it received from `start` on, and how far that is complete.
#[derive(Debug)]
struct Session {
    scope: Scope,
    start: i64,
    events: Vec<Event>,
    /// Every event at or below this revision must have been received.
    covered: i64,
    last: bool,
}

#[derive(Default)]
struct Counters {
    creates: AtomicU64,
    create_conflicts: AtomicU64,
    updates: AtomicU64,
    update_conflicts: AtomicU64,
    deletes: AtomicU64,
    delete_conflicts: AtomicU64,
    not_found: AtomicU64,
    lists: AtomicU64,
    pages: AtomicU64,
    slow_lists: AtomicU64,
    relists_compacted: AtomicU64,
    watch_sessions: AtomicU64,
    late_watches: AtomicU64,
    watches_compacted: AtomicU64,
    events: AtomicU64,
    progress_notifies: AtomicU64,
    compactions: AtomicU64,
}

struct Shared {
    /// Shards the server runs (1 for etcd).
    shards: usize,
    model: Mutex<Model>,
    pages: Mutex<Vec<Page>>,
    points: Mutex<Vec<PointRead>>,
    sessions: Mutex<Vec<Session>>,
    violations: Mutex<Vec<String>>,
    /// Highest revision a Compact was sent for, and highest one acknowledged.
    compact_sent: AtomicI64,
    compact_acked: AtomicI64,
    /// Set once every client has stopped writing.
    writes_done: AtomicBool,
    counters: Counters,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Shared {
    fn violation(&self, v: String) {
        self.violations.lock().expect("violations lock").push(v);
    }

    /// The highest acknowledged revision of a write in `scope`.
    fn floor(&self, scope: Scope) -> i64 {
        let m = self.model.lock().expect("model lock");
        scope.resources().map(|r| m.acked_max[r]).max().unwrap_or(0)
    }

    fn record_write(&self, resource: usize, write: Write, sent: Instant, what: &str) {
        let acked = Instant::now();
        let mut m = self.model.lock().expect("model lock");
        m.acked_max[resource] = m.acked_max[resource].max(write.rev);
        if write.value.is_some() {
            m.live[resource].insert(write.key.clone());
        } else {
            m.live[resource].remove(&write.key);
        }
        m.acks.push(Ack {
            resource: Some(resource),
            shard: shard_of(&write.key, self.shards),
            rev: write.rev,
            sent,
            acked,
            what: format!("{what} {}", String::from_utf8_lossy(&write.key)),
        });
        m.writes[resource].push(write);
    }

    fn live_key(&self, resource: usize, rng: &mut StdRng) -> Option<Bytes> {
        let m = self.model.lock().expect("model lock");
        let live = &m.live[resource];
        if live.is_empty() {
            return None;
        }
        live.iter().nth(rng.gen_range(0..live.len())).cloned()
    }
}

async fn rpc<T>(
    what: &str,
    fut: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, tonic::Status> {
    match tokio::time::timeout(RPC_TIMEOUT, fut).await {
        Ok(r) => r.map(tonic::Response::into_inner),
        Err(_) => Err(tonic::Status::deadline_exceeded(format!(
            "{what}: no answer within {RPC_TIMEOUT:?}"
        ))),
    }
}

fn header_rev<T>(h: &Option<T>, rev: impl Fn(&T) -> i64) -> i64 {
    h.as_ref().map(rev).unwrap_or(0)
}

fn get(key: &Bytes) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestRange(RangeRequest {
            key: key.clone(),
            ..Default::default()
        })),
    }
}

fn compare(key: &Bytes, target: CompareTarget, union: TargetUnion) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: target as i32,
        key: key.clone(),
        range_end: Bytes::new(),
        target_union: Some(union),
    }
}

/// The kvs of a txn's failure-branch read.
fn failure_kv(t: &TxnResponse) -> Result<Option<KeyValue>> {
    match t.responses.first().and_then(|r| r.response.as_ref()) {
        Some(Response::ResponseRange(r)) => Ok(r.kvs.first().cloned()),
        other => bail!("a failed txn answered its read with {other:?}"),
    }
}

fn object(key: &Bytes, tag: &str) -> Bytes {
    // Objects of a few hundred bytes, unique per write so that events and pages identify it.
    let filler = "x".repeat(120);
    Bytes::from(format!(
        "{{\"key\":\"{}\",\"write\":\"{tag}\",\"spec\":\"{filler}\"}}",
        String::from_utf8_lossy(key)
    ))
}

/// One client's view: what it last saw of each key (kube-apiserver's cache, possibly stale).
struct Client {
    sh: Arc<Shared>,
    kv: KvClient<Channel>,
    id: usize,
    rng: StdRng,
    seen: HashMap<Bytes, i64>,
}

impl Client {
    fn put_op(&self, resource: usize, key: &Bytes, value: &Bytes) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: key.clone(),
                value: value.clone(),
                lease: if resource == EVENTS { EVENT_LEASE } else { 0 },
                ..Default::default()
            })),
        }
    }

    fn new_key(&mut self, resource: usize, op: usize) -> Bytes {
        let r = &RESOURCES[resource];
        let ns = NAMESPACES.choose(&mut self.rng).expect("namespaces");
        Bytes::from(if r.namespaced {
            format!("{}{ns}/obj-c{}-{op}", r.prefix, self.id)
        } else {
            format!("{}obj-c{}-{op}", r.prefix, self.id)
        })
    }

    async fn create(&mut self, resource: usize, op: usize) -> Result<()> {
        let reuse = self.rng.gen_bool(0.1);
        let key = match reuse.then(|| self.sh.live_key(resource, &mut self.rng)) {
            Some(Some(k)) => k,
            _ => self.new_key(resource, op),
        };
        let value = object(&key, &format!("c{}-{op}-create", self.id));
        // kube-apiserver compares mod_revision with 0; create_revision == 0 means the same.
        let cmp = if self.rng.gen_bool(0.5) {
            compare(&key, CompareTarget::Mod, TargetUnion::ModRevision(0))
        } else {
            compare(&key, CompareTarget::Create, TargetUnion::CreateRevision(0))
        };
        let txn = TxnRequest {
            compare: vec![cmp],
            success: vec![self.put_op(resource, &key, &value)],
            failure: vec![get(&key)],
        };
        let sent = Instant::now();
        let t = rpc("create txn", self.kv.txn(txn))
            .await
            .context("create txn")?;
        let rev = header_rev(&t.header, |h| h.revision);
        if t.succeeded {
            bump(&self.sh.counters.creates);
            self.check_put_response(&t, rev)?;
            self.seen.insert(key.clone(), rev);
            let lease = if resource == EVENTS { EVENT_LEASE } else { 0 };
            self.sh.record_write(
                resource,
                Write {
                    rev,
                    key,
                    value: Some(value),
                    lease,
                },
                sent,
                "create",
            );
        } else {
            bump(&self.sh.counters.create_conflicts);
            let kv = failure_kv(&t)?;
            if let Some(kv) = &kv {
                self.seen.insert(key.clone(), kv.mod_revision);
            }
            self.record_point(resource, key, rev, kv, "failed create's read");
        }
        Ok(())
    }

    fn check_put_response(&self, t: &TxnResponse, rev: i64) -> Result<()> {
        match t.responses.first().and_then(|r| r.response.as_ref()) {
            Some(Response::ResponsePut(p)) => {
                let put_rev = header_rev(&p.header, |h| h.revision);
                ensure!(
                    put_rev == rev,
                    "a txn's put answered at revision {put_rev}, the txn at {rev}"
                );
                Ok(())
            }
            other => bail!("a succeeded txn answered its put with {other:?}"),
        }
    }

    fn record_point(
        &self,
        resource: usize,
        key: Bytes,
        rev: i64,
        kv: Option<KeyValue>,
        what: &'static str,
    ) {
        self.sh.points.lock().expect("points lock").push(PointRead {
            resource,
            key,
            rev,
            kv,
            what,
        });
    }

    /// The mod_revision this client believes `key` has: its cache, else a read.
    async fn last_seen(&mut self, resource: usize, key: &Bytes) -> Result<Option<i64>> {
        if let Some(&m) = self.seen.get(key) {
            return Ok(Some(m));
        }
        let r = rpc(
            "get",
            self.kv.range(RangeRequest {
                key: key.clone(),
                ..Default::default()
            }),
        )
        .await
        .context("get before update")?;
        let rev = header_rev(&r.header, |h| h.revision);
        let kv = r.kvs.first().cloned();
        let m = kv.as_ref().map(|kv| kv.mod_revision);
        self.record_point(resource, key.clone(), rev, kv, "get");
        Ok(m)
    }

    /// GuaranteedUpdate (`delete == false`) or a delete with a precondition on `key`.
    async fn update_or_delete(&mut self, resource: usize, op: usize, delete: bool) -> Result<()> {
        let Some(key) = self.sh.live_key(resource, &mut self.rng) else {
            return self.create(resource, op).await;
        };
        let Some(mut seen) = self.last_seen(resource, &key).await? else {
            bump(&self.sh.counters.not_found);
            return Ok(());
        };
        let what = if delete { "delete" } else { "update" };
        for attempt in 0..MAX_ATTEMPTS {
            let value = object(&key, &format!("c{}-{op}-{what}-{attempt}", self.id));
            let success = if delete {
                RequestOp {
                    request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                        key: key.clone(),
                        range_end: Bytes::new(),
                        prev_kv: true,
                    })),
                }
            } else {
                self.put_op(resource, &key, &value)
            };
            let txn = TxnRequest {
                compare: vec![compare(
                    &key,
                    CompareTarget::Mod,
                    TargetUnion::ModRevision(seen),
                )],
                success: vec![success],
                failure: vec![get(&key)],
            };
            let sent = Instant::now();
            let t = rpc(what, self.kv.txn(txn))
                .await
                .with_context(|| format!("{what} txn"))?;
            let rev = header_rev(&t.header, |h| h.revision);
            if t.succeeded {
                if delete {
                    bump(&self.sh.counters.deletes);
                    let Some(Response::ResponseDeleteRange(d)) =
                        t.responses.first().and_then(|r| r.response.clone())
                    else {
                        bail!("a succeeded delete txn answered {:?}", t.responses);
                    };
                    ensure!(
                        d.deleted == 1 && d.prev_kvs.len() == 1,
                        "precondition delete of {key:?} at mod_revision {seen} deleted {} keys \
                         (prev_kvs {:?})",
                        d.deleted,
                        d.prev_kvs
                    );
                    self.record_point(
                        resource,
                        key.clone(),
                        rev - 1,
                        d.prev_kvs.first().cloned(),
                        "delete's prev_kv",
                    );
                    self.seen.remove(&key);
                } else {
                    bump(&self.sh.counters.updates);
                    self.check_put_response(&t, rev)?;
                    self.seen.insert(key.clone(), rev);
                }
                let lease = if resource == EVENTS && !delete {
                    EVENT_LEASE
                } else {
                    0
                };
                self.sh.record_write(
                    resource,
                    Write {
                        rev,
                        key,
                        value: (!delete).then_some(value),
                        lease,
                    },
                    sent,
                    what,
                );
                return Ok(());
            }
            bump(if delete {
                &self.sh.counters.delete_conflicts
            } else {
                &self.sh.counters.update_conflicts
            });
            let kv = failure_kv(&t)?;
            self.record_point(
                resource,
                key.clone(),
                rev,
                kv.clone(),
                "failed precondition's read",
            );
            match kv {
                Some(kv) => {
                    seen = kv.mod_revision;
                    self.seen.insert(key.clone(), seen);
                }
                None => {
                    // Deleted meanwhile: kube-apiserver answers NotFound.
                    bump(&self.sh.counters.not_found);
                    self.seen.remove(&key);
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    async fn count(&mut self, resource: usize) -> Result<()> {
        let scope = Scope::Resource(resource);
        let floor = self.sh.floor(scope);
        let prefix = Bytes::from_static(scope.prefix().as_bytes());
        let r = rpc(
            "count",
            self.kv.range(RangeRequest {
                key: prefix.clone(),
                range_end: prefix_end(&prefix),
                count_only: true,
                ..Default::default()
            }),
        )
        .await
        .context("count-only list")?;
        let rev = header_rev(&r.header, |h| h.revision);
        if rev < floor {
            self.sh.violation(format!(
                "count of {} at revision {rev} is below an acknowledged write at {floor}",
                scope.prefix()
            ));
        }
        self.sh.pages.lock().expect("pages lock").push(Page {
            scope,
            start: prefix,
            limit: 0,
            count_only: true,
            rev,
            header: rev,
            kvs: r.kvs,
            more: r.more,
            count: r.count,
        });
        Ok(())
    }

    async fn run(mut self, deadline: Instant) -> Result<()> {
        for op in 0..OPS_PER_CLIENT {
            if Instant::now() >= deadline {
                break;
            }
            let resource = self.rng.gen_range(0..RESOURCES.len());
            match self.rng.gen_range(0..100) {
                0..=29 => self.create(resource, op).await?,
                30..=59 => self.update_or_delete(resource, op, false).await?,
                60..=74 => self.update_or_delete(resource, op, true).await?,
                75..=79 => self.count(resource).await?,
                _ => {
                    let slow = self.rng.gen_bool(0.1);
                    let sh = self.sh.clone();
                    list(
                        &sh,
                        &mut self.kv,
                        Scope::Resource(resource),
                        slow,
                        &mut self.rng,
                    )
                    .await?;
                }
            }
        }
        Ok(())
    }
}

/// kube-apiserver's paginated list of `scope`: pages at the first page's revision, started
/// again when that revision has been compacted. A `slow` list waits after its first page until
/// a compaction has passed its revision (at most [`SLOW_LIST_WAIT`]). Returns the revision of
/// the list that completed.
async fn list(
    sh: &Shared,
    kv: &mut KvClient<Channel>,
    scope: Scope,
    slow: bool,
    rng: &mut StdRng,
) -> Result<i64> {
    bump(&sh.counters.lists);
    if slow {
        bump(&sh.counters.slow_lists);
    }
    let prefix = Bytes::from_static(scope.prefix().as_bytes());
    let end = prefix_end(&prefix);
    let limit = match scope {
        Scope::Resource(_) => PAGE_LIMIT,
        Scope::Registry => REGISTRY_PAGE_LIMIT,
    };
    'relist: for attempt in 0..=MAX_RELISTS {
        // Only the first attempt waits: a relist reads at a revision above the compaction.
        let slow = slow && attempt == 0;
        let floor = sh.floor(scope);
        let mut start = prefix.clone();
        let mut rev = 0;
        loop {
            let req = RangeRequest {
                key: start.clone(),
                range_end: end.clone(),
                limit,
                revision: rev,
                ..Default::default()
            };
            if rev != 0 && slow {
                let until = Instant::now() + SLOW_LIST_WAIT;
                // No compaction comes once the writes (and the compactor) stopped.
                while sh.compact_acked.load(Ordering::SeqCst) <= rev
                    && Instant::now() < until
                    && !sh.writes_done.load(Ordering::SeqCst)
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            } else if rev != 0 && rng.gen_bool(0.3) {
                tokio::time::sleep(Duration::from_millis(rng.gen_range(1..30))).await;
            }
            let compacted_before = sh.compact_acked.load(Ordering::SeqCst);
            let r: RangeResponse = match rpc("list page", kv.range(req)).await {
                Ok(r) => r,
                Err(s) if s.code() == tonic::Code::OutOfRange && s.message() == COMPACTED => {
                    let sent = sh.compact_sent.load(Ordering::SeqCst);
                    if rev == 0 || rev >= sent {
                        sh.violation(format!(
                            "list of {} at revision {rev} refused as compacted, but no Compact \
                             above {rev} was sent (highest {sent})",
                            scope.prefix()
                        ));
                    }
                    bump(&sh.counters.relists_compacted);
                    continue 'relist;
                }
                Err(s) => bail!(
                    "list page of {} at revision {rev}: {:?} {}",
                    scope.prefix(),
                    s.code(),
                    s.message()
                ),
            };
            bump(&sh.counters.pages);
            let header = header_rev(&r.header, |h| h.revision);
            if rev == 0 {
                rev = header;
                if rev < floor {
                    sh.violation(format!(
                        "list of {} at revision {rev} is below a write acknowledged before it, \
                         at {floor}",
                        scope.prefix()
                    ));
                }
            } else if sh.shards == 1 && compacted_before > rev {
                sh.violation(format!(
                    "page of {} at revision {rev} served after Compact({compacted_before}) was \
                     acknowledged (etcd refuses it as compacted)",
                    scope.prefix()
                ));
            }
            let next = r.kvs.last().map(|kv| {
                let mut k = kv.key.to_vec();
                k.push(0);
                Bytes::from(k)
            });
            let more = r.more;
            sh.pages.lock().expect("pages lock").push(Page {
                scope,
                start: start.clone(),
                limit,
                count_only: false,
                rev,
                header,
                kvs: r.kvs,
                more: r.more,
                count: r.count,
            });
            match (more, next) {
                (true, Some(next)) => start = next,
                (true, None) => bail!("a page of {} says more but has no key", scope.prefix()),
                (false, _) => return Ok(rev),
            }
        }
    }
    bail!(
        "list of {} compacted {} times in a row",
        scope.prefix(),
        MAX_RELISTS + 1
    )
}

/// kube-apiserver's compactor: claim the next compaction in `compact_rev_key`, then compact at
/// the revision the previous round saw.
async fn compactor(sh: Arc<Shared>, mut kv: KvClient<Channel>) -> Result<()> {
    let key = Bytes::from_static(COMPACT_REV_KEY);
    let mut version = 0;
    let mut prev = 0;
    while !sh.writes_done.load(Ordering::SeqCst) {
        tokio::time::sleep(COMPACT_INTERVAL).await;
        let txn = TxnRequest {
            compare: vec![compare(
                &key,
                CompareTarget::Version,
                TargetUnion::Version(version),
            )],
            success: vec![RequestOp {
                request: Some(Request::RequestPut(PutRequest {
                    key: key.clone(),
                    value: Bytes::from(prev.to_string()),
                    ..Default::default()
                })),
            }],
            failure: vec![get(&key)],
        };
        let sent = Instant::now();
        let t = rpc("compaction claim", kv.txn(txn)).await?;
        let rev = header_rev(&t.header, |h| h.revision);
        if !t.succeeded {
            bail!(
                "the compaction claim at version {version} failed with no other compactor: {:?}",
                failure_kv(&t)?
            );
        }
        {
            let mut m = sh.model.lock().expect("model lock");
            m.acks.push(Ack {
                resource: None,
                shard: shard_of(&key, sh.shards),
                rev,
                sent,
                acked: Instant::now(),
                what: "compaction claim".into(),
            });
        }
        version += 1;
        if prev > 0 {
            sh.compact_sent.fetch_max(prev, Ordering::SeqCst);
            rpc(
                "compact",
                kv.compact(CompactionRequest {
                    revision: prev,
                    physical: version % 2 == 0,
                }),
            )
            .await
            .with_context(|| format!("Compact({prev})"))?;
            sh.compact_acked.fetch_max(prev, Ordering::SeqCst);
            bump(&sh.counters.compactions);
        }
        prev = rev;
    }
    Ok(())
}

/// Lists `scope` and watches it from the list's revision + 1, session after session, until the
/// writes are done and the last session has been notified of progress past the last write.
async fn watcher(sh: Arc<Shared>, clients: Clients, scope: Scope, seed: u64) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut kv = clients.kv.clone();
    let prefix = Bytes::from_static(scope.prefix().as_bytes());
    loop {
        let slow = rng.gen_bool(0.25);
        let listed = list(&sh, &mut kv, scope, slow, &mut rng).await?;
        let start = listed + 1;
        // Some watchers are late, as a watch cache that took long over its list: they start
        // watching only once a compaction passed the start revision, and must be refused.
        if !sh.writes_done.load(Ordering::SeqCst) && rng.gen_bool(0.2) {
            bump(&sh.counters.late_watches);
            let until = Instant::now() + SLOW_LIST_WAIT;
            while sh.compact_acked.load(Ordering::SeqCst) <= start && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let compacted_before = sh.compact_acked.load(Ordering::SeqCst);
        let (tx, rx) = mpsc::channel::<WatchRequest>(4);
        let mut client = clients.watch.clone();
        tx.send(WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest {
                    key: prefix.clone(),
                    range_end: prefix_end(&prefix),
                    start_revision: start,
                    progress_notify: true,
                    ..Default::default()
                },
            )),
        })
        .await
        .map_err(|_| anyhow!("watch request channel closed"))?;
        let mut stream = rpc("watch", client.watch(ReceiverStream::new(rx))).await?;
        bump(&sh.counters.watch_sessions);
        let mut session = Session {
            scope,
            start,
            events: Vec::new(),
            covered: start - 1,
            last: false,
        };
        let mut last_event = 0;
        let ends = Instant::now() + Duration::from_millis(rng.gen_range(SESSION));
        let mut drain_until: Option<Instant> = None;
        let mut created = false;
        // With one shard, a watch from below an acknowledged compaction must be cancelled: the
        // session waits for that answer (bounded) before anything else may end it.
        let expect_compacted = sh.shards == 1 && compacted_before > start;
        let created_at = Instant::now();
        let outcome = loop {
            let done = sh.writes_done.load(Ordering::SeqCst);
            if done && drain_until.is_none() {
                drain_until = Some(Instant::now() + DRAIN_TIMEOUT);
            }
            if expect_compacted {
                if created_at.elapsed() >= RPC_TIMEOUT {
                    break "not cancelled";
                }
            } else if let Some(until) = drain_until {
                let target = sh.floor(scope);
                if session.covered >= target {
                    break "drained";
                }
                if Instant::now() >= until {
                    sh.violation(format!(
                        "watch of {} from {start} covered up to {} within {DRAIN_TIMEOUT:?} of \
                         the last write, not up to it at {target} (no progress notification \
                         past it)",
                        scope.prefix(),
                        session.covered
                    ));
                    break "drain timed out";
                }
            } else if Instant::now() >= ends {
                break "session over";
            }
            let msg = match tokio::time::timeout(Duration::from_millis(100), stream.message()).await
            {
                Err(_) => continue,
                Ok(Ok(Some(m))) => m,
                Ok(Ok(None)) => bail!("watch of {} closed by the server", scope.prefix()),
                Ok(Err(s)) => bail!(
                    "watch of {}: {:?} {}",
                    scope.prefix(),
                    s.code(),
                    s.message()
                ),
            };
            if msg.created {
                ensure!(!created, "two created responses on one watch");
                created = true;
            }
            if msg.compact_revision != 0 {
                let sent = sh.compact_sent.load(Ordering::SeqCst);
                if msg.compact_revision <= start || msg.compact_revision > sent {
                    sh.violation(format!(
                        "watch of {} from {start} cancelled as compacted at {} (highest \
                         Compact sent: {sent})",
                        scope.prefix(),
                        msg.compact_revision
                    ));
                }
                bump(&sh.counters.watches_compacted);
                break "compacted";
            }
            if msg.canceled {
                bail!(
                    "watch of {} cancelled: {:?}",
                    scope.prefix(),
                    msg.cancel_reason
                );
            }
            let header = header_rev(&msg.header, |h| h.revision);
            if msg.events.is_empty() {
                if !msg.created {
                    bump(&sh.counters.progress_notifies);
                    session.covered = session.covered.max(header);
                }
                continue;
            }
            for e in &msg.events {
                let rev = e.kv.as_ref().map(|kv| kv.mod_revision).unwrap_or(0);
                last_event = last_event.max(rev);
            }
            sh.counters
                .events
                .fetch_add(msg.events.len() as u64, Ordering::Relaxed);
            session.events.extend(msg.events);
            // A watch of one shard delivers all of a revision's events together; a merged one
            // may deliver another shard's events at the same revision later.
            let complete_below = match scope {
                Scope::Resource(_) => last_event,
                Scope::Registry => last_event - 1,
            };
            session.covered = session.covered.max(complete_below);
        };
        if expect_compacted && outcome != "compacted" {
            sh.violation(format!(
                "watch of {} from {start} created after Compact({compacted_before}) was \
                 acknowledged was not cancelled as compacted ({outcome})",
                scope.prefix()
            ));
        }
        session.last = outcome == "drained" || outcome == "drain timed out";
        let finished = session.last;
        sh.sessions.lock().expect("sessions lock").push(session);
        drop(tx);
        if finished {
            return Ok(());
        }
    }
}

/// Replays `writes` (sorted by revision) up to `rev`.
fn state_at(writes: &[Write], rev: i64) -> BTreeMap<Bytes, KeyValue> {
    let mut state: BTreeMap<Bytes, KeyValue> = BTreeMap::new();
    for w in writes.iter().take_while(|w| w.rev <= rev) {
        apply(&mut state, w);
    }
    state
}

/// Applies one write; returns the event a watcher sees for it.
fn apply(state: &mut BTreeMap<Bytes, KeyValue>, w: &Write) -> Event {
    match &w.value {
        Some(value) => {
            let kv = match state.get(&w.key) {
                Some(old) => KeyValue {
                    key: w.key.clone(),
                    create_revision: old.create_revision,
                    mod_revision: w.rev,
                    version: old.version + 1,
                    value: value.clone(),
                    lease: w.lease,
                },
                None => KeyValue {
                    key: w.key.clone(),
                    create_revision: w.rev,
                    mod_revision: w.rev,
                    version: 1,
                    value: value.clone(),
                    lease: w.lease,
                },
            };
            state.insert(w.key.clone(), kv.clone());
            Event {
                r#type: EventType::Put as i32,
                kv: Some(kv),
                prev_kv: None,
            }
        }
        None => {
            state.remove(&w.key);
            Event {
                r#type: EventType::Delete as i32,
                kv: Some(KeyValue {
                    key: w.key.clone(),
                    mod_revision: w.rev,
                    ..Default::default()
                }),
                prev_kv: None,
            }
        }
    }
}

fn show_kv(kv: &KeyValue) -> String {
    format!(
        "{} c{} m{} v{} lease {} value {:?}",
        String::from_utf8_lossy(&kv.key),
        kv.create_revision,
        kv.mod_revision,
        kv.version,
        kv.lease,
        String::from_utf8_lossy(&kv.value)
            .chars()
            .take(60)
            .collect::<String>()
    )
}

fn show_event(e: &Event) -> String {
    let kind = if e.r#type == EventType::Delete as i32 {
        "DELETE"
    } else {
        "PUT"
    };
    format!("{kind} {}", e.kv.as_ref().map(show_kv).unwrap_or_default())
}

/// Revisions of the acknowledged writes in one group (a resource, or a shard): distinct, and a
/// write sent after another was acknowledged has a higher revision.
fn check_revision_order(group: &str, acks: &[&Ack], out: &mut Vec<String>) {
    let mut by_rev: Vec<&Ack> = acks.to_vec();
    by_rev.sort_by_key(|a| a.rev);
    for pair in by_rev.windows(2) {
        if pair[0].rev == pair[1].rev {
            out.push(format!(
                "{group}: {} and {} both got revision {}",
                pair[0].what, pair[1].what, pair[0].rev
            ));
        }
    }
    let mut by_sent = acks.to_vec();
    by_sent.sort_by_key(|a| a.sent);
    let mut by_acked = acks.to_vec();
    by_acked.sort_by_key(|a| a.acked);
    let mut i = 0;
    let mut max_before: Option<&Ack> = None;
    for b in by_sent {
        while i < by_acked.len() && by_acked[i].acked < b.sent {
            if max_before.is_none_or(|m| by_acked[i].rev > m.rev) {
                max_before = Some(by_acked[i]);
            }
            i += 1;
        }
        if let Some(a) = max_before {
            if a.rev >= b.rev {
                out.push(format!(
                    "{group}: {} got revision {}, not above {} acknowledged before it was sent \
                     at {}",
                    b.what, b.rev, a.what, a.rev
                ));
            }
        }
    }
}

/// What page `p` must hold if read at `rev`: its kvs, `count` and `more`.
fn expected_page(writes: &[Vec<Write>], p: &Page, rev: i64) -> (Vec<KeyValue>, i64, bool) {
    let end = prefix_end(p.scope.prefix().as_bytes());
    let mut expected: Vec<KeyValue> = Vec::new();
    for r in p.scope.resources() {
        expected.extend(
            state_at(&writes[r], rev)
                .into_values()
                .filter(|kv| kv.key >= p.start && kv.key < end),
        );
    }
    expected.sort_by(|a, b| a.key.cmp(&b.key));
    let count = expected.len() as i64;
    if p.count_only {
        (Vec::new(), count, false)
    } else if p.limit > 0 && expected.len() > p.limit as usize {
        expected.truncate(p.limit as usize);
        (expected, count, true)
    } else {
        (expected, count, false)
    }
}

/// Every check that needs the complete model; returns the violations.
fn check(sh: &Shared) -> Vec<String> {
    let mut out = std::mem::take(&mut *sh.violations.lock().expect("violations lock"));
    let m = sh.model.lock().expect("model lock");
    let mut writes: Vec<Vec<Write>> = m.writes.clone();
    for w in &mut writes {
        w.sort_by_key(|w| w.rev);
    }

    // Revisions per resource prefix and per shard.
    for (r, res) in RESOURCES.iter().enumerate() {
        let acks: Vec<&Ack> = m.acks.iter().filter(|a| a.resource == Some(r)).collect();
        check_revision_order(res.prefix, &acks, &mut out);
    }
    for shard in 0..sh.shards {
        let acks: Vec<&Ack> = m.acks.iter().filter(|a| a.shard == shard).collect();
        check_revision_order(&format!("shard {shard}"), &acks, &mut out);
    }

    // Pages: the model at the list's revision.
    let mut searched = 0;
    for p in sh.pages.lock().expect("pages lock").iter() {
        let (want, count, more) = expected_page(&writes, p, p.rev);
        let what = format!(
            "{}page of {} from {:?} at revision {} (header {})",
            if p.count_only { "count-only " } else { "" },
            p.scope.prefix(),
            String::from_utf8_lossy(&p.start),
            p.rev,
            p.header
        );
        if p.header < p.rev {
            out.push(format!("{what}: header revision below the list's"));
        }
        if p.count == count && p.more == more && p.kvs == want {
            continue;
        }
        // Which revision the page does show, if a near one (nearest first; searched for the
        // first few wrong pages only): tells a read at another revision from a wrong one.
        searched += 1;
        let shown = (1..PAGE_SEARCH)
            .flat_map(|d| [p.rev - d, p.rev + d])
            .filter(|&r| r > 0 && searched <= REPORT_MAX)
            .find(|&r| expected_page(&writes, p, r) == (p.kvs.clone(), p.count, p.more));
        let shown = match shown {
            Some(r) => format!(" (the page is the model at revision {r})"),
            None => String::new(),
        };
        if p.count != count || p.more != more {
            out.push(format!(
                "{what}: count {} more {}, the model has count {count} more {more}{shown}",
                p.count, p.more
            ));
        }
        if p.kvs != want {
            let got: Vec<String> = p.kvs.iter().map(show_kv).collect();
            let want: Vec<String> = want.iter().map(show_kv).collect();
            let first = first_difference(&got, &want);
            out.push(format!(
                "{what}: {} kvs, the model {}; first difference at {first}: got {:?}, model \
                 {:?}{shown}",
                got.len(),
                want.len(),
                got.get(first),
                want.get(first)
            ));
        }
    }

    // Point reads.
    for p in sh.points.lock().expect("points lock").iter() {
        let want = state_at(&writes[p.resource], p.rev).remove(&p.key);
        if p.kv != want {
            out.push(format!(
                "{} of {} at revision {}: {:?}, the model {:?}",
                p.what,
                String::from_utf8_lossy(&p.key),
                p.rev,
                p.kv.as_ref().map(show_kv),
                want.as_ref().map(show_kv)
            ));
        }
    }

    // Watch sessions: in revision order, exactly the writes from start up to covered.
    for s in sh.sessions.lock().expect("sessions lock").iter() {
        let what = format!(
            "watch of {} from {} (covered to {}{})",
            s.scope.prefix(),
            s.start,
            s.covered,
            if s.last { ", last session" } else { "" }
        );
        let revs: Vec<i64> = s
            .events
            .iter()
            .map(|e| e.kv.as_ref().map(|kv| kv.mod_revision).unwrap_or(0))
            .collect();
        if let Some(i) = revs.windows(2).position(|w| w[1] < w[0]) {
            out.push(format!(
                "{what}: event at revision {} after one at {}",
                revs[i + 1],
                revs[i]
            ));
        }
        for r in s.scope.resources() {
            let prefix = RESOURCES[r].prefix.as_bytes();
            let got: Vec<&Event> = s
                .events
                .iter()
                .filter(|e| e.kv.as_ref().is_some_and(|kv| kv.key.starts_with(prefix)))
                .filter(|e| e.kv.as_ref().is_some_and(|kv| kv.mod_revision <= s.covered))
                .collect();
            let mut state = BTreeMap::new();
            let mut want = Vec::new();
            for w in writes[r].iter().take_while(|w| w.rev <= s.covered) {
                let e = apply(&mut state, w);
                if w.rev >= s.start {
                    want.push(e);
                }
            }
            let got: Vec<String> = got.into_iter().map(show_event).collect();
            let want: Vec<String> = want.iter().map(show_event).collect();
            if got != want {
                let first = first_difference(&got, &want);
                out.push(format!(
                    "{what}, {}: {} events, the model {}; first difference at {first}: got \
                     {:?}, model {:?}",
                    RESOURCES[r].prefix,
                    got.len(),
                    want.len(),
                    got.get(first),
                    want.get(first)
                ));
            }
        }
    }
    out
}

async fn traffic(server: &Server) -> Result<()> {
    let shards = server.shard_count().await?;
    let clients = server.clients().await?;
    let mut lease = clients.lease.clone();
    rpc(
        "lease grant",
        lease.lease_grant(LeaseGrantRequest {
            ttl: 3600,
            id: EVENT_LEASE,
        }),
    )
    .await?;
    let sh = Arc::new(Shared {
        shards,
        model: Mutex::new(Model {
            writes: vec![Vec::new(); RESOURCES.len()],
            acked_max: vec![0; RESOURCES.len()],
            live: vec![BTreeSet::new(); RESOURCES.len()],
            acks: Vec::new(),
        }),
        pages: Mutex::default(),
        points: Mutex::default(),
        sessions: Mutex::default(),
        violations: Mutex::default(),
        compact_sent: AtomicI64::new(0),
        compact_acked: AtomicI64::new(0),
        writes_done: AtomicBool::new(false),
        counters: Counters::default(),
    });
    let seed: u64 = std::env::var("BALLAST_KUBE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    eprintln!("kube traffic: {shards} shard(s), BALLAST_KUBE_SEED={seed}");
    let began = Instant::now();

    let scopes = (0..RESOURCES.len())
        .map(Scope::Resource)
        .chain([Scope::Registry]);
    let mut watchers = Vec::new();
    for (i, scope) in scopes.enumerate() {
        // Each watcher on its own connection, as separate apiservers' watch caches would be.
        let c = server.clients().await?;
        watchers.push(tokio::spawn(watcher(
            sh.clone(),
            c,
            scope,
            seed ^ (1000 + i as u64),
        )));
    }
    let compactor = tokio::spawn(compactor(sh.clone(), clients.kv.clone()));
    let deadline = Instant::now() + TRAFFIC_DEADLINE;
    let mut workers = Vec::new();
    for id in 0..CLIENTS {
        let c = Client {
            sh: sh.clone(),
            kv: server.clients().await?.kv,
            id,
            rng: StdRng::seed_from_u64(seed ^ id as u64),
            seen: HashMap::new(),
        };
        workers.push(tokio::spawn(c.run(deadline)));
    }
    let mut first_err = None;
    for w in workers {
        if let Err(e) = w.await.map_err(anyhow::Error::from).and_then(|r| r) {
            first_err.get_or_insert(e);
        }
    }
    let writing = began.elapsed();
    sh.writes_done.store(true, Ordering::SeqCst);
    if let Err(e) = compactor.await.map_err(anyhow::Error::from).and_then(|r| r) {
        first_err.get_or_insert(e.context("compactor"));
    }
    for w in watchers {
        if let Err(e) = w.await.map_err(anyhow::Error::from).and_then(|r| r) {
            first_err.get_or_insert(e.context("watcher"));
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    let drained = began.elapsed();

    let c = &sh.counters;
    let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let writes: usize = sh
        .model
        .lock()
        .expect("model lock")
        .writes
        .iter()
        .map(Vec::len)
        .sum();
    eprintln!(
        "kube traffic: {writes} writes in {writing:.1?} ({} creates + {} failed, {} updates + {} \
         conflicts, {} deletes + {} conflicts, {} not found); {} lists ({} slow, {} pages, {} \
         relisted as compacted); {} watch sessions ({} late, {} compacted), {} events, {} \
         progress notifications; {} compactions; watchers drained at {drained:.1?}",
        n(&c.creates),
        n(&c.create_conflicts),
        n(&c.updates),
        n(&c.update_conflicts),
        n(&c.deletes),
        n(&c.delete_conflicts),
        n(&c.not_found),
        n(&c.lists),
        n(&c.slow_lists),
        n(&c.pages),
        n(&c.relists_compacted),
        n(&c.watch_sessions),
        n(&c.late_watches),
        n(&c.watches_compacted),
        n(&c.events),
        n(&c.progress_notifies),
        n(&c.compactions),
    );
    let violations = check(&sh);
    if !violations.is_empty() {
        let shown: Vec<&String> = violations.iter().take(REPORT_MAX).collect();
        bail!(
            "{} violations (BALLAST_KUBE_SEED={seed}; first {}):\n{}",
            violations.len(),
            shown.len(),
            shown
                .iter()
                .map(|v| format!("- {v}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    // The paths the checks are about were taken.
    ensure!(
        n(&c.update_conflicts) > 0 && n(&c.compactions) > 0 && n(&c.progress_notifies) > 0,
        "the traffic took too few paths to check them: {} conflicts, {} compactions, {} \
         progress notifications",
        n(&c.update_conflicts),
        n(&c.compactions),
        n(&c.progress_notifies)
    );
    if shards == 1 {
        ensure!(
            n(&c.relists_compacted) > 0 && n(&c.watches_compacted) > 0,
            "slow lists and late watches waited for compactions, yet {} lists and {} watches \
             were refused as compacted",
            n(&c.relists_compacted),
            n(&c.watches_compacted)
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_apiserver_traffic_over_many_resources() -> Result<()> {
    let arg = format!("--experimental-watch-progress-notify-interval={PROGRESS_NOTIFY_INTERVAL}");
    let server = Server::start_with_args(Kind::Ballast, &[&arg]).await?;
    tokio::time::timeout(TEST_TIMEOUT, traffic(&server))
        .await
        .map_err(|_| anyhow!("kube traffic not done within {TEST_TIMEOUT:?}"))?
}

/// Requests over two resources, as tools other than kube-apiserver send them (backups, `etcdctl
/// get --prefix /registry/`): with several shards, a txn or DeleteRange whose keys live in two
/// shards is refused with FailedPrecondition naming them (cross-shard atomicity is not built),
/// and a range over all of `/registry/` still reads every resource at one revision. With one
/// shard every request runs, as in etcd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_across_resources() -> Result<()> {
    let server = Server::start(Kind::Ballast).await?;
    let shards = server.shard_count().await?;
    let mut kv = server.clients().await?.kv;
    let a = Bytes::from_static(b"/registry/pods/default/a");
    // A resource in another shard than pods when there are several.
    let other = RESOURCES
        .iter()
        .map(|r| format!("{}default/b", r.prefix))
        .find(|k| shards == 1 || shard_of(k.as_bytes(), shards) != shard_of(&a, shards))
        .ok_or_else(|| anyhow!("no resource outside the shard of pods"))?;
    let b = Bytes::from(other);
    let mut written = BTreeMap::new();
    for key in [&a, &b] {
        let r = rpc(
            "put",
            kv.put(PutRequest {
                key: key.clone(),
                value: Bytes::from_static(b"v1"),
                ..Default::default()
            }),
        )
        .await?;
        written.insert(key.clone(), header_rev(&r.header, |h| h.revision));
    }
    let spanned = {
        let mut s: Vec<usize> = [&a, &b].iter().map(|k| shard_of(k, shards)).collect();
        s.sort_unstable();
        s.dedup();
        s.iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let refused = |what: &str, s: &tonic::Status| -> Result<()> {
        ensure!(
            s.code() == tonic::Code::FailedPrecondition
                && s.message().contains(&format!("shards {spanned}")),
            "{what} over shards {spanned}: {:?} {}",
            s.code(),
            s.message()
        );
        Ok(())
    };

    let put = |key: &Bytes| RequestOp {
        request: Some(Request::RequestPut(PutRequest {
            key: key.clone(),
            value: Bytes::from_static(b"v2"),
            ..Default::default()
        })),
    };
    let txn = TxnRequest {
        compare: vec![compare(&a, CompareTarget::Version, TargetUnion::Version(1))],
        success: vec![put(&a), put(&b)],
        failure: vec![],
    };
    match rpc("txn", kv.txn(txn)).await {
        Ok(t) if shards == 1 => {
            ensure!(
                t.succeeded,
                "txn over two resources failed its compare: {t:?}"
            );
            let rev = header_rev(&t.header, |h| h.revision);
            written.insert(a.clone(), rev);
            written.insert(b.clone(), rev);
        }
        Ok(t) => bail!("a txn over shards {spanned} ran: {t:?}"),
        Err(s) if shards > 1 => refused("txn", &s)?,
        Err(s) => bail!(
            "txn over two resources with one shard: {:?} {}",
            s.code(),
            s.message()
        ),
    }

    // The whole of /registry/: every resource, each key as last written, at one revision.
    let registry = Bytes::from_static(REGISTRY.as_bytes());
    let r = rpc(
        "range",
        kv.range(RangeRequest {
            key: registry.clone(),
            range_end: prefix_end(&registry),
            ..Default::default()
        }),
    )
    .await?;
    let header = header_rev(&r.header, |h| h.revision);
    let got: BTreeMap<Bytes, i64> = r
        .kvs
        .iter()
        .map(|kv| (kv.key.clone(), kv.mod_revision))
        .collect();
    ensure!(
        got == written,
        "range over /registry/ at {header}: {got:?}, written {written:?}"
    );
    let highest = written.values().copied().max().unwrap_or(0);
    ensure!(
        header >= highest,
        "range over /registry/ answered at revision {header}, below a write at {highest}"
    );

    let delete = DeleteRangeRequest {
        key: registry.clone(),
        range_end: prefix_end(&registry),
        prev_kv: false,
    };
    match rpc("delete", kv.delete_range(delete)).await {
        Ok(d) if shards == 1 => ensure!(d.deleted == 2, "deleted {} of 2 keys", d.deleted),
        Ok(d) => bail!("a delete over shards {spanned} ran: {d:?}"),
        Err(s) if shards > 1 => refused("delete", &s)?,
        Err(s) => bail!(
            "delete over /registry/ with one shard: {:?} {}",
            s.code(),
            s.message()
        ),
    }
    Ok(())
}

/// The index of the first item where two listings differ (the shorter one's length when one
/// is a prefix of the other).
fn first_difference(got: &[String], want: &[String]) -> usize {
    got.iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()))
}
