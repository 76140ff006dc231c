//! One shard: its public handle ([`ShardHandle`]) and its core, a glommio executor thread
//! running the shard's openraft group over the shard state (`state_machine`).
//!
//! How a request is served (design.md §6):
//! - a write (`Put`, `DeleteRange`, a `Txn` with a write anywhere in it, `Compact`,
//!   `LeaseGrant`, `LeaseRevoke`, `Advance`) becomes a [`LogCommand`], is proposed with
//!   `client_write_ff`, and is answered from the apply step once committed;
//! - a linearizable read (`Range` with `serializable == false`, a read-only `Txn` with a
//!   linearizable range) first waits for openraft's read index (`ensure_linearizable` with
//!   `ReadPolicy::ReadIndex`: leadership confirmed by a quorum, the state machine applied up
//!   to the commit index seen then) and is then served from the local store — no log write;
//! - a serializable read is served from the local store at once;
//! - an alarm change (`Request::Alarm` activate/deactivate, shard 0) goes through the log like
//!   a write; listing the alarms is a linearizable read of shard 0's table (`alarms.rs`);
//! - an auth change or authentication (`Request::Auth`, shard 0) goes through the log
//!   (`auth.rs`); auth reads are served by the edge from the node's copy;
//! - `LeaseKeepAlive` and `LeaseTimeToLive` are answered by the leader without the log, as
//!   etcd does: a lease's deadline is leader-local state (followers hold no timers and reset
//!   every deadline when they become leader), so refreshing it needs no agreement; only the
//!   facts every replica must share — that a lease exists, with which TTL, and that it is gone
//!   with its keys — go through the log (grant, revoke). Compaction changes what every replica
//!   can answer, so it goes through the log too;
//! - expired leases are revoked by the leader proposing `LeaseRevoke`, never by a replica
//!   deleting keys on its own;
//! - on a node of a cluster ([`ClusterConfig`]), a follower forwards whatever else needs the
//!   leader (writes, keep-alives, TimeToLive, membership changes) to the shard's leader over
//!   the peer transport ([`PeerKind::Forward`]) and answers with the leader's answer; a
//!   forwarded request is never forwarded again. A follower serves a linearizable read itself,
//!   as etcd's followers do (Raft thesis §6.4): it asks the leader for its read index
//!   ([`PeerKind::ReadIndex`]; the leader confirms its leadership with a quorum and answers
//!   openraft's read log id; concurrent reads share one question per round trip), waits
//!   until its own state machine has applied up to that index, and reads its local store —
//!   every write acknowledged before the read began is committed at or below that index. A leader that does not know the kind (an older member during a
//!   rolling upgrade refuses it) gets the read forwarded instead. While no leader is known the
//!   follower waits for one, up to the request deadline (etcd's: 5 s plus two election
//!   timeouts), for a read index as for a forwarded request; a follower that cannot reach its
//!   leader, or cannot apply up to the read index, before the deadline answers "request timed
//!   out". A write is re-sent only when it never reached a leader (connect refused); lost after
//!   sending, its outcome is unknown and the client is told so ("request timed out"), as etcd
//!   does.
//!
//! Invariants: the core never blocks on a client (watch messages are `try_send`, replies are
//! oneshots whose receiver may be gone); no `RefCell` borrow of the shard state is held across
//! an `.await`; every queue is bounded ([`COMMAND_QUEUE_MAX`], openraft's channel sizes).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ballast_engine::{
    DeleteRangeRequest, DeleteRangeResponse, Error as EngineError, LeaseId, PutRequest,
    PutResponse, RangeRequest, RangeResponse, RequestOp, Revision, Store, TxnRequest, TxnResponse,
};
use openraft::async_runtime::WatchReceiver;
use openraft::error::ClientWriteError;
use openraft::impls::BasicNode;
use openraft::raft::linearizable_read::{Linearizer, ReadLogId};
use openraft::raft::{AppendEntriesResponse, ClientWriteResult};
use openraft::type_config::alias::WatchReceiverOf;
use openraft::{Config, RaftMetrics, ReadPolicy, SnapshotPolicy};
use tokio::sync::{mpsc, oneshot};

use crate::alarms::{AlarmAction, AlarmMember, AlarmTable, NodeAlarms};
use crate::auth::{AuthCommand, AuthOutcome, AuthState, NodeAuth};
use crate::codec::LogCommand;
use crate::durable::ShardStorage;
use crate::log_store::{LogBackend, LogStore, MemLog};
use crate::membership::{MembershipChange, MembershipError, Unmade};
use crate::network::{
    cluster_transport, ChannelTransport, Network, NoPeers, Outbound, PeerFailure, PeerKind,
};
use crate::placement::{self, Anchor, LiveLeader, Pace, TransferError};
use crate::runtime::{spawn_executor, GlommioRuntime};
use crate::state_machine::{make_resident, ShardState, ShardStateMachine, Shared};
use crate::types::{FnResponder, LogId, NodeId, Raft, ShardId, ShardRaft};
use crate::watchers::{StreamId, WatchCreate, WatchMessage};
use crate::wire;
use ballast_engine::mvcc::export::{HistoryChunk, HistoryCursor};
use ballast_engine::mvcc::paging::Access;

/// Commands queued for one shard at most; a full queue makes callers wait (backpressure).
pub const COMMAND_QUEUE_MAX: usize = 4096;
/// How long a new single-node group may take to elect itself before the shard serves anyway
/// (requests then fail with `NotLeader` until it has).
const LEADERSHIP_WAIT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct ShardConfig {
    pub min_lease_ttl_secs: i64,
    /// How often watchers that asked for it get a progress notification (etcd's
    /// `--experimental-watch-progress-notify-interval`, 10 minutes by default).
    pub progress_notify_interval: Duration,
    /// How often slow watchers are caught up and leases checked.
    pub tick: Duration,
    pub shard_id: ShardId,
    /// This node's id in the shard's Raft group (etcd's member id).
    pub node_id: NodeId,
    /// The core to pin the shard's executor to; `None` leaves it unbound (tests, or several
    /// shards sharing a machine with other work). Pinning falls back to unbound if it fails.
    pub core: Option<usize>,
    /// Raft heartbeat (etcd's `--heartbeat-interval`, 100 ms).
    pub heartbeat_interval: Duration,
    /// Raft election timeout (etcd's `--election-timeout`, 1000 ms); openraft draws each
    /// timeout between this and twice this.
    pub election_timeout: Duration,
    /// Entries applied between two snapshots (etcd's `--snapshot-count`). On a durable shard
    /// a snapshot is a checkpoint of the changes since the last one; in memory it copies the
    /// whole store, so this stays large.
    pub snapshot_count: u64,
    /// Where the shard keeps its log and state (`None`: in memory only, for tests and
    /// examples; nothing survives the process).
    pub storage: Option<ShardStorage>,
    /// What the leader does with a lease whose deadline passed.
    pub lease_expiry: LeaseExpiry,
    /// The cluster the shard's group spans; `None` for a single node (no peers).
    pub cluster: Option<ClusterConfig>,
    /// Shard 0's leader and term on this node, shared by all its shards (`placement.rs`):
    /// shard 0 writes it, the others place their leaders by it.
    pub anchor: Arc<Anchor>,
    /// The cluster's alarm table as this node's replica of shard 0 applies it (`alarms.rs`):
    /// shard 0 writes it, the node's write path reads it.
    pub alarms: Arc<NodeAlarms>,
    /// The cluster's auth state as this node's replica of shard 0 applies it (`auth.rs`):
    /// shard 0 writes it, the node's edge reads it.
    pub auth: Arc<NodeAuth>,
    /// Where the shard publishes its backend size in use, for the node's storage quota check
    /// (`state_machine::BackendSize`).
    pub backend_bytes: Arc<std::sync::atomic::AtomicU64>,
}

/// How a shard's group spans the nodes of a cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Where messages for peers go (the node's peer hub).
    pub peers: flume::Sender<Outbound>,
    /// Every member at bootstrap: node id and peer URL (the address peers dial).
    pub members: BTreeMap<NodeId, String>,
    /// Whether this node forms a new cluster (`--initial-cluster-state new`): an empty group
    /// initializes itself with `members` (every member does, with the same list, which Raft
    /// makes safe). Otherwise it waits for the cluster's leader to add it.
    pub bootstrap: bool,
}

/// What a shard's leader does when a lease's deadline passes.
///
/// With several shards the lease table's owner (shard 0) reports expiry to the router, which
/// revokes the lease in every shard (each shard holds the lease to attach its keys); the other
/// shards keep no deadlines of their own.
#[derive(Clone, Debug, Default)]
pub enum LeaseExpiry {
    /// Propose `LeaseRevoke` in this shard (one shard owns every key).
    #[default]
    Revoke,
    /// Send the lease id on this channel and let the receiver revoke it. A lease still expired
    /// a while after it was reported ([`EXPIRY_REPORT_AGAIN`]) is reported again, so a revoke
    /// lost to a failure is retried.
    Report(mpsc::Sender<LeaseId>),
    /// Never act on deadlines (keep-alives go to the owner shard, which reports expiry).
    Ignore,
}

/// How long a reported expired lease waits before it is reported again (see
/// [`LeaseExpiry::Report`]).
pub const EXPIRY_REPORT_AGAIN: Duration = Duration::from_secs(1);

impl Default for ShardConfig {
    fn default() -> Self {
        ShardConfig {
            min_lease_ttl_secs: 2,
            progress_notify_interval: Duration::from_secs(600),
            tick: Duration::from_millis(50),
            shard_id: ShardId(0),
            node_id: 1,
            core: None,
            heartbeat_interval: Duration::from_millis(100),
            election_timeout: Duration::from_millis(1000),
            snapshot_count: 100_000,
            storage: None,
            lease_expiry: LeaseExpiry::Revoke,
            cluster: None,
            anchor: Arc::default(),
            alarms: Arc::default(),
            auth: Arc::default(),
            backend_bytes: Arc::default(),
        }
    }
}

/// A request for the shard. Writes (`Put`, `DeleteRange`, `Txn` with writes, `Compact`,
/// `LeaseGrant`, `LeaseRevoke`, `Advance`) go through the shard's Raft log. `Advance { to }`
/// moves the shard's revision to `max(revision, to)` and changes no key (design.md §5: how a
/// shard that fell behind the others catches up); it is answered with [`Response::Advance`].
#[derive(Clone, Debug)]
pub enum Request {
    Range(RangeRequest),
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
    LeaseKeepAlive {
        id: LeaseId,
    },
    LeaseTimeToLive {
        id: LeaseId,
        keys: bool,
    },
    LeaseLeases,
    /// `Maintenance.Alarm` (shard 0): `Get` lists the alarms of `member.alarm` (every alarm
    /// for `AlarmType::NONE`), a linearizable read; `Activate`/`Deactivate` change the table
    /// through the log. Answered with [`Response::Alarms`].
    Alarm {
        action: AlarmAction,
        member: AlarmMember,
    },
    /// An auth change or authentication by user `by` (shard 0), through the log; answered
    /// with [`Response::Auth`].
    Auth {
        by: String,
        cmd: AuthCommand,
    },
    HashKv {
        revision: Revision,
    },
    Hash,
    Status,
    /// A change to the members of the shard's group, made by its leader; answered with
    /// [`Response::Members`].
    Membership(MembershipChange),
    /// A stretch of the store's history for a snapshot (`Store::history_chunk`), read from
    /// the local store like a serializable read; answered with [`Response::History`].
    History {
        from: HistoryCursor,
        upto: Revision,
        max_entries: usize,
    },
}

/// `Status` is the largest variant, 8 bytes past clippy's size bound since `served` joined
/// `ShardStatus`; its large parts are boxed, and it is asked for rarely (a `/metrics` scrape,
/// `Maintenance.Status`), so the rest stays inline.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Response {
    Range(RangeResponse),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compact,
    LeaseGrant {
        id: LeaseId,
        ttl: i64,
    },
    LeaseRevoke,
    /// The reply's revision is the shard's revision after the advance (`>= to`).
    Advance,
    LeaseKeepAlive {
        ttl: i64,
    },
    LeaseTimeToLive(ballast_engine::LeaseTimeToLive),
    LeaseLeases(Vec<LeaseId>),
    /// The alarms a `Request::Alarm` listed or changed (etcd's `AlarmResponse.alarms`).
    Alarms(Vec<AlarmMember>),
    /// What a `Request::Auth` came to (etcd's auth errors are answers, not shard errors).
    Auth(AuthOutcome),
    HashKv(ballast_engine::HashKv),
    Hash(u32),
    Status(ShardStatus),
    /// The group's members after a membership change.
    Members(Vec<RaftMember>),
    History(HistoryChunk),
    /// A log entry without a client payload (a leader's blank entry, a membership change) was
    /// applied. No `Request` is answered with it.
    Noop,
}

/// A response with the store revision for its header.
#[derive(Debug)]
pub struct Reply {
    pub revision: Revision,
    pub response: Response,
}

/// The shard's state and figures at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardStatus {
    pub revision: Revision,
    pub compact_revision: Revision,
    pub size_bytes: u64,
    /// The shard's backend size and the part in use, which the storage quota counts
    /// (`state_machine::BackendSize`).
    pub backend_bytes: u64,
    pub backend_in_use_bytes: u64,
    /// Index of the last log entry applied to the store (Raft's applied index; blank and
    /// membership entries count). Log indexes here count from 1, as etcd's raft and the WAL
    /// do (openraft's first entry, index 0, is index 1 here).
    pub applied_index: u64,
    pub watchers: usize,
    /// The current Raft term of the shard's group.
    pub raft_term: u64,
    /// Index of the last entry in the shard's log.
    pub raft_index: u64,
    /// Index of the last entry known committed.
    pub raft_commit_index: u64,
    /// The group's leader as this replica knows it (0: none known).
    pub leader_id: NodeId,
    pub is_leader: bool,
    /// Commands waiting in the shard's queue.
    pub queue_depth: usize,
    /// Writes proposed and not yet answered.
    pub writes_in_flight: usize,
    /// Entries applied since the shard started.
    pub entries_applied: u64,
    /// Time to apply one entry to the store (and notify watchers), since start.
    pub apply_latency_ns_p50: u64,
    pub apply_latency_ns_p99: u64,
    /// Time from a write reaching the shard to its answer (append, commit, apply), since start.
    pub write_latency_us_p50: u64,
    pub write_latency_us_p99: u64,
    /// The same time by stage (`stages.rs`): propose, log (WAL group commit), commit, apply.
    /// Boxed: `Response` carries a `ShardStatus`, and its variants stay close in size.
    pub write_stages: Box<crate::stages::StageFigures>,
    /// Whether the shard keeps its data on disk.
    pub durable: bool,
    /// Checkpoints completed since start, and the log index of the last one (1-based).
    pub checkpoints: u64,
    pub checkpoint_index: u64,
    pub checkpoint_duration_ms_last: u64,
    /// Changes (revisions, key indexes, leases) waiting for the next checkpoint.
    pub checkpoint_pending_changes: u64,
    /// Key indexes and history records in memory (a durable shard's memory caches its page
    /// log), and how many loads from the page log filled it.
    pub cached_keys: u64,
    pub cached_records: u64,
    pub cache_loads: u64,
    /// Page-log size on disk (preallocated segments and the superblock file) and its cache.
    pub page_log_bytes: u64,
    pub page_cache_bytes: u64,
    /// WAL group-commit writes (each one fdatasync) and the records they carried, since start.
    pub wal_syncs: u64,
    pub wal_records: u64,
    /// Why the shard stopped, when it did (fail-stop).
    pub failure: Option<String>,
    /// The group's members as this replica's membership names them.
    pub members: Vec<RaftMember>,
    /// Where its linearizable reads and its followers' requests were served. Boxed, as
    /// `write_stages` is.
    pub served: Box<ServedFigures>,
    /// The figures behind etcd's metric names (`/metrics`). Boxed, as `write_stages` is.
    pub etcd: Box<EtcdFigures>,
}

/// What etcd's own metric names report, as this replica of the shard measured it since start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EtcdFigures {
    /// Each WAL group commit's fdatasync (`etcd_disk_wal_fsync_duration_seconds`).
    pub wal_fsync: ballast_engine::histogram::DiskHistogram,
    /// Each checkpoint's page-log write and sync, Ballast's nearest to etcd's bolt commit
    /// (`etcd_disk_backend_commit_duration_seconds`).
    pub backend_commit: ballast_engine::histogram::DiskHistogram,
    /// Times this replica saw the group's leader change to a known leader (the first election
    /// counts, as in etcd).
    pub leader_changes: u64,
    /// Proposals (writes) whose Raft answer was a failure: no leader, or the shard stopped.
    pub proposals_failed: u64,
    /// Store operations as etcd's mvcc counts them (`op_counts.rs`).
    pub ops: crate::op_counts::OpCounts,
}

/// How a replica's linearizable reads and its followers' requests were served, since start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServedFigures {
    /// Linearizable reads this replica served from its own store after its leader's read
    /// index (a follower's reads, [`PeerKind::ReadIndex`]).
    pub follower_reads: u64,
    /// Read indexes this replica answered for followers (as their leader).
    pub read_indexes_answered: u64,
    /// Requests followers forwarded that this replica served (as their leader).
    pub forwarded_served: u64,
}

/// A member of a shard's Raft group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RaftMember {
    pub id: NodeId,
    /// Its peer URL.
    pub addr: String,
    /// A learner replicates and does not vote.
    pub is_learner: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShardError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("shard stopped")]
    Stopped,
    /// This replica is not the shard's leader (`leader_id`: the one it knows of, if any).
    #[error("etcdserver: not leader")]
    NotLeader { leader_id: Option<NodeId> },
    /// The shard stopped after a storage failure (fail-stop); it serves nothing until the
    /// process restarts and recovers from disk.
    #[error("shard stopped after a storage failure: {cause}")]
    Failed { cause: String },
    /// A forwarded request was sent and no answer came: it may or may not have taken effect.
    #[error("etcdserver: request timed out")]
    Timeout,
    /// A membership change was refused (etcd's errors).
    #[error(transparent)]
    Membership(#[from] MembershipError),
}

type ReplyTx = oneshot::Sender<Result<Reply, ShardError>>;

enum Command {
    Call(Request, ReplyTx),
    WatchCreate(WatchCreate),
    WatchCancel {
        stream: StreamId,
        watch_id: i64,
        done: oneshot::Sender<Revision>,
    },
    WatchProgress {
        stream: StreamId,
        sender: mpsc::Sender<WatchMessage>,
    },
    StreamClosed(StreamId),
    /// A message from a peer node (Raft RPC or forwarded request), answered encoded.
    Peer {
        kind: PeerKind,
        body: bytes::Bytes,
        reply: oneshot::Sender<Result<bytes::Bytes, String>>,
    },
    MoveLeader {
        to: NodeId,
        reply: oneshot::Sender<Result<(), TransferError>>,
    },
}

/// The way into a shard: cheap to clone, usable from any thread or async runtime.
#[derive(Clone)]
pub struct ShardHandle {
    tx: flume::Sender<Command>,
}

impl ShardHandle {
    /// Starts the shard's executor thread, opens its storage (recovering the log and the last
    /// checkpoint) and its Raft group (a single-node group initializes itself), and returns
    /// once it serves — blocking the caller meanwhile — or with the reason it could not start
    /// (e.g. a corrupt log, named by file and offset). It stops when every handle is dropped.
    pub fn spawn(
        name: &str,
        config: ShardConfig,
    ) -> std::io::Result<(ShardHandle, JoinHandle<()>)> {
        let (tx, rx) = flume::bounded(COMMAND_QUEUE_MAX);
        let (started_tx, started_rx) = std::sync::mpsc::sync_channel(1);
        let core = config.core;
        let thread = spawn_executor(name, core, move || shard_main(config, rx, started_tx))?;
        match started_rx.recv() {
            Ok(Ok(())) => Ok((ShardHandle { tx }, thread)),
            Ok(Err(reason)) => {
                let _ = thread.join();
                Err(std::io::Error::other(reason))
            }
            Err(_) => {
                let _ = thread.join();
                Err(std::io::Error::other("shard thread died while starting"))
            }
        }
    }

    pub async fn call(&self, request: Request) -> Result<Reply, ShardError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        self.tx
            .send_async(Command::Call(request, reply_tx))
            .await
            .map_err(|_| ShardError::Stopped)?;
        reply_rx.await.map_err(|_| ShardError::Stopped)?
    }

    pub async fn watch_create(&self, create: WatchCreate) -> Result<(), ShardError> {
        self.tx
            .send_async(Command::WatchCreate(create))
            .await
            .map_err(|_| ShardError::Stopped)
    }

    /// Cancels a watcher; returns the revision at which it stopped.
    pub async fn watch_cancel(
        &self,
        stream: StreamId,
        watch_id: i64,
    ) -> Result<Revision, ShardError> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send_async(Command::WatchCancel {
                stream,
                watch_id,
                done,
            })
            .await
            .map_err(|_| ShardError::Stopped)?;
        rx.await.map_err(|_| ShardError::Stopped)
    }

    pub async fn watch_progress(
        &self,
        stream: StreamId,
        sender: mpsc::Sender<WatchMessage>,
    ) -> Result<(), ShardError> {
        self.tx
            .send_async(Command::WatchProgress { stream, sender })
            .await
            .map_err(|_| ShardError::Stopped)
    }

    /// Hands the shard a message from a peer node and returns the encoded answer, or why it
    /// could not be handled (undecodable, the shard stopped).
    pub async fn peer_message(
        &self,
        kind: PeerKind,
        body: bytes::Bytes,
    ) -> Result<bytes::Bytes, String> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send_async(Command::Peer { kind, body, reply })
            .await
            .map_err(|_| "shard stopped".to_owned())?;
        answer.await.map_err(|_| "shard stopped".to_owned())?
    }

    /// Hands this replica's leadership of the shard to the voter `to` and returns once `to`
    /// leads (etcd's `MoveLeader`); refused unless this replica leads and `to` votes.
    pub async fn move_leader(&self, to: NodeId) -> Result<(), TransferError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send_async(Command::MoveLeader { to, reply })
            .await
            .map_err(|_| TransferError::Stopped)?;
        answer.await.map_err(|_| TransferError::Stopped)?
    }

    /// Tells the shard a watch stream is gone (best effort: a stopped shard has no watchers).
    pub fn stream_closed(&self, stream: StreamId) {
        let _ = self.tx.try_send(Command::StreamClosed(stream));
    }
}

// ------------------------------------------------------------------ the shard core

/// How a request is served.
enum Route {
    Write(LogCommand),
    LinearizableRead(Request),
    /// Served from the local store now: serializable reads and local facts.
    Local(Request),
    /// Served by the leader only, without the log.
    LeaderLocal(Request),
}

fn route(request: Request) -> Route {
    match request {
        Request::Put(r) => Route::Write(LogCommand::Put(r)),
        Request::DeleteRange(r) => Route::Write(LogCommand::DeleteRange(r)),
        Request::Txn(t) if txn_writes(&t) => Route::Write(LogCommand::Txn(t)),
        Request::Compact { revision } => Route::Write(LogCommand::Compact { revision }),
        Request::LeaseGrant { id, ttl } => Route::Write(LogCommand::LeaseGrant { id, ttl }),
        Request::LeaseRevoke { id } => Route::Write(LogCommand::LeaseRevoke { id }),
        Request::Advance { to } => Route::Write(LogCommand::Advance { to }),
        Request::Alarm {
            action: action @ (AlarmAction::Activate | AlarmAction::Deactivate),
            member,
        } => Route::Write(LogCommand::Alarm { action, member }),
        Request::Alarm { .. } => Route::LinearizableRead(request),
        Request::Auth { by, cmd } => Route::Write(LogCommand::Auth { by, cmd }),
        Request::Range(ref r) if !r.serializable => Route::LinearizableRead(request),
        Request::Txn(ref t) if !txn_serializable(t) => Route::LinearizableRead(request),
        Request::LeaseKeepAlive { .. }
        | Request::LeaseTimeToLive { .. }
        | Request::Membership(_) => Route::LeaderLocal(request),
        other => Route::Local(other),
    }
}

/// Whether any branch of the txn, at any depth, writes.
pub(crate) fn txn_writes(t: &TxnRequest) -> bool {
    t.success.iter().chain(&t.failure).any(|op| match op {
        RequestOp::Range(_) => false,
        RequestOp::Put(_) | RequestOp::DeleteRange(_) => true,
        RequestOp::Txn(t) => txn_writes(t),
    })
}

/// A read-only txn is serializable when every range in it is (etcd's `isTxnSerializable`).
fn txn_serializable(t: &TxnRequest) -> bool {
    t.success.iter().chain(&t.failure).all(|op| match op {
        RequestOp::Range(r) => r.serializable,
        RequestOp::Txn(t) => txn_serializable(t),
        RequestOp::Put(_) | RequestOp::DeleteRange(_) => true,
    })
}

/// Whether serving `request` takes the leader (everything `route` does not serve locally).
fn needs_leader(request: &Request) -> bool {
    match request {
        Request::Range(r) => !r.serializable,
        Request::Txn(t) => txn_writes(t) || !txn_serializable(t),
        Request::LeaseLeases
        | Request::HashKv { .. }
        | Request::Hash
        | Request::Status
        | Request::History { .. } => false,
        _ => true,
    }
}

/// Whether `request` is a linearizable read (`route` gives `Route::LinearizableRead`), which a
/// follower serves itself after its leader's read index.
fn linearizable_read(request: &Request) -> bool {
    match request {
        Request::Range(r) => !r.serializable,
        Request::Txn(t) => !txn_writes(t) && !txn_serializable(t),
        Request::Alarm { action, .. } => *action == AlarmAction::Get,
        _ => false,
    }
}

/// What a follower's read-index question came to: the leader's answer (`Timeout` for one it
/// could not read), or why there is none.
type ReadIndexAsked = Result<Result<LogId, ShardError>, PeerFailure>;

/// A follower's read-index questions, asked in rounds per leader address, as etcd's followers
/// batch theirs: at most one question is out to an address at a time; the reads that arrive
/// while it is out wait and share the next one. A read never shares a question sent before it
/// began: the answer to that one may predate a write acknowledged before the read began. So
/// under load the leader answers one read index per round trip, not one per read. Bounded by
/// the reads in flight (each waits at most until its request deadline).
#[derive(Default)]
struct ReadIndexRounds {
    by_addr: HashMap<String, ReadIndexRound>,
}

#[derive(Default)]
struct ReadIndexRound {
    /// A task is asking this address (and will ask again while reads wait).
    asking: bool,
    /// The reads waiting for the next question: each one's deadline and reply.
    waiting: Vec<(Instant, oneshot::Sender<ReadIndexAsked>)>,
}

/// Where a shard's leader is, as this replica knows it.
enum Leader {
    /// None known before the deadline.
    Unknown,
    /// This replica (serving as leader).
    Me,
    /// Another member, at this peer address.
    At(String),
    /// Another member whose address this replica's membership does not hold yet.
    NoAddress,
}

/// What [`Core::reach_leader`] found.
enum Reach {
    /// Boxed: a reply is large, and most steps find an address.
    Answered(Box<Result<Reply, ShardError>>),
    /// Try again (it paused already).
    Again,
    /// The leader is another member, at this peer address.
    At(String),
}

struct Core {
    raft: Raft,
    /// The way to peers for forwarded requests (`None` on a single node).
    forward: Option<ChannelTransport>,
    shared: Shared,
    metrics: WatchReceiverOf<ShardRaft, RaftMetrics<ShardRaft>>,
    queue: flume::Receiver<Command>,
    config: ShardConfig,
    loop_state: RefCell<LoopState>,
    /// A follower's read-index questions to its leader, in rounds.
    read_index_rounds: RefCell<ReadIndexRounds>,
}

/// What the command loop and housekeeping keep between calls.
struct LoopState {
    /// Leases whose revoke is proposed and not yet applied (not proposed twice).
    revoking: HashSet<LeaseId>,
    /// Expired leases reported to the receiver of [`LeaseExpiry::Report`], and when.
    reported: HashMap<LeaseId, Instant>,
    was_leader: bool,
    /// When a follower of shard 0 next asks its peers whether it is still a member.
    next_removal_check: Instant,
    /// When this replica last took an AppendEntries (entries or a heartbeat) from a leader it
    /// follows: whether it still "has a leader" (`Core::live_leader`).
    leader_heard: Option<Instant>,
    /// When this replica last became the leader, and last asked for a leadership transfer.
    leader_since: Instant,
    last_transfer: Option<Instant>,
    /// Membership changes this replica is making as the shard's leader (no automatic
    /// leadership transfer meanwhile: [`placement::Pace::changing_membership`]).
    membership_changes: usize,
    next_progress: Instant,
    writes_in_flight: usize,
    write_latency_us: crate::stats::Histogram,
    /// Checkpoint count and image loads at the last eviction of the store's cache.
    evicted_at: (u64, u64),
    last_eviction: Instant,
    /// See [`ServedFigures`].
    follower_reads: u64,
    read_indexes_answered: u64,
    forwarded_served: u64,
    /// See [`EtcdFigures`]; `last_leader` is the leader the last change counted.
    leader_changes: u64,
    last_leader: Option<NodeId>,
    proposals_failed: u64,
}

async fn shard_main(
    config: ShardConfig,
    rx: flume::Receiver<Command>,
    started: std::sync::mpsc::SyncSender<Result<(), String>>,
) {
    let core = match start(config, rx.clone()).await {
        Ok(core) => Rc::new(core),
        Err(err) => {
            let _ = started.send(Err(err));
            return;
        }
    };
    let _ = started.send(Ok(()));
    let housekeeping = glommio::spawn_local(housekeeping_loop(core.clone()));
    while let Ok(cmd) = rx.recv_async().await {
        core.handle(cmd).await;
    }
    // Dropping a glommio task cancels it.
    drop(housekeeping);
    if let Err(err) = core.raft.shutdown().await {
        tracing::warn!(%err, "shard raft shutdown");
    }
}

async fn start(config: ShardConfig, queue: flume::Receiver<Command>) -> Result<Core, String> {
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
    let election = millis(config.election_timeout);
    // Failover as etcd's (a new leader within one to two election timeouts of the last
    // heartbeat): openraft's followers refuse votes while the leader's lease lasts, and the
    // lease is `election_timeout_max`; a follower's timer fires between half and one election
    // timeout after the last heartbeat, so the first election that can win starts between one
    // and two. Pre-Vote keeps a follower that merely missed heartbeats (a stall, a partition)
    // from raising the term and deposing a live leader when it comes back.
    let raft_config = Config {
        cluster_name: format!("ballast-{}", config.shard_id),
        heartbeat_interval: millis(config.heartbeat_interval),
        election_timeout_min: (election / 2).max(millis(config.heartbeat_interval) + 1),
        election_timeout_max: election.max(millis(config.heartbeat_interval) + 2),
        enable_pre_vote: Some(true),
        // A snapshot chunk (up to ~4 MiB) written to a follower's disk may take longer than
        // openraft's 200 ms default.
        install_snapshot_timeout: 5_000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_count),
        ..Config::default()
    }
    .validate()
    .map_err(|e| format!("raft config: {e}"))?;
    let raft_config = Arc::new(raft_config);
    let (shared, raft) = match &config.storage {
        None => {
            let mut state = ShardState::new(Store::new());
            attach_node_state(
                &config,
                &mut state,
                AlarmTable::default(),
                AuthState::default(),
            );
            let shared: Shared = Rc::new(RefCell::new(state));
            let raft = new_raft(&config, raft_config, MemLog::new(), &shared).await?;
            (shared, raft)
        }
        Some(storage) => match &storage.disks {
            crate::durable::Disks::Files => {
                let disk = |dir: std::path::PathBuf| {
                    ballast_engine_glommio::GlommioDisk::new(&dir)
                        .map_err(|e| format!("{}: {e}", dir.display()))
                };
                let wal_dir = storage
                    .wal_dir
                    .clone()
                    .unwrap_or_else(|| storage.dir.join("wal"));
                let (wal, pages) = (disk(wal_dir)?, disk(storage.dir.join("pages"))?);
                start_durable(&config, storage, raft_config, wal, pages).await?
            }
            crate::durable::Disks::Sim(make) => {
                let (wal, pages) = make();
                start_durable(&config, storage, raft_config, wal, pages).await?
            }
        },
    };
    shared
        .borrow_mut()
        .store
        .set_min_lease_ttl(config.min_lease_ttl_secs);
    let initialized = raft
        .is_initialized()
        .await
        .map_err(|e| format!("raft: {e}"))?;
    match &config.cluster {
        None => {
            if !initialized {
                let members = BTreeMap::from([(config.node_id, BasicNode::default())]);
                raft.initialize(members)
                    .await
                    .map_err(|e| format!("raft initialize: {e}"))?;
            }
        }
        Some(cluster) => {
            // The others may not run yet: the group elects a leader once a quorum does, and
            // requests wait for it meanwhile.
            if !initialized && cluster.bootstrap {
                let members: BTreeMap<NodeId, BasicNode> = cluster
                    .members
                    .iter()
                    .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
                    .collect();
                raft.initialize(members)
                    .await
                    .map_err(|e| format!("raft initialize: {e}"))?;
            }
        }
    }
    // A group whose only voter is this node elects itself at once and commits a blank entry;
    // wait until it has applied its whole log, so the first request finds a leader and a
    // current store.
    let node_id = config.node_id;
    let alone = match &config.cluster {
        None => true,
        Some(cluster) if !initialized => cluster.bootstrap && cluster.members.keys().eq([&node_id]),
        // Restarted: the stored membership says, once the group's metrics show it (they are
        // published by the group's task, not by `Raft::new`).
        Some(_) => raft
            .wait(Some(LEADERSHIP_WAIT))
            .metrics(
                |m| m.membership_config.membership().nodes().next().is_some(),
                "the stored membership is loaded",
            )
            .await
            .is_ok_and(|m| m.membership_config.membership().voter_ids().eq([node_id])),
    };
    if alone {
        let _ = raft
            .wait(Some(LEADERSHIP_WAIT))
            .metrics(
                move |m| {
                    m.current_leader == Some(node_id)
                        && m.last_applied.map(|id| id.index) == m.last_log_index
                },
                "a lone voter elects itself and applies its log",
            )
            .await;
    }
    let metrics = raft.metrics();
    let progress_interval = config.progress_notify_interval;
    Ok(Core {
        raft,
        forward: config
            .cluster
            .as_ref()
            .map(|c| ChannelTransport::new(c.peers.clone())),
        shared,
        metrics,
        queue,
        config,
        loop_state: RefCell::new(LoopState {
            revoking: HashSet::new(),
            reported: HashMap::new(),
            was_leader: false,
            leader_since: Instant::now(),
            last_transfer: None,
            membership_changes: 0,
            next_removal_check: Instant::now() + REMOVAL_CHECK_INTERVAL,
            leader_heard: None,
            next_progress: Instant::now() + progress_interval,
            writes_in_flight: 0,
            write_latency_us: crate::stats::Histogram::new(),
            evicted_at: (0, 0),
            last_eviction: Instant::now(),
            follower_reads: 0,
            read_indexes_answered: 0,
            forwarded_served: 0,
            leader_changes: 0,
            last_leader: None,
            proposals_failed: 0,
        }),
        read_index_rounds: RefCell::default(),
    })
}

/// Opens a durable shard's storage on `wal` and `pages` and starts its Raft group on it.
async fn start_durable<D: ballast_engine::io::Disk + Clone + 'static>(
    config: &ShardConfig,
    storage: &ShardStorage,
    raft_config: Arc<Config>,
    wal: D,
    pages: D,
) -> Result<(Shared, Raft), String> {
    let opened = crate::durable::open(wal, pages, storage)
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(
        shard = %config.shard_id,
        dir = %storage.dir.display(),
        revision = opened.store.revision(),
        checkpoint_index = opened.last_applied.map_or(0, |id| id.index + 1),
        "opened shard storage"
    );
    let mut state = ShardState::durable(
        opened.store,
        opened.last_applied,
        opened.membership,
        opened.durability,
    );
    attach_node_state(config, &mut state, opened.alarms, opened.auth);
    let shared: Shared = Rc::new(RefCell::new(state));
    let raft = new_raft(config, raft_config, opened.log, &shared).await?;
    Ok((shared, raft))
}

/// Connects a new shard state to what the node's shards share, before any entry is applied:
/// shard 0 applies alarm changes to the node's table (starting from the checkpoint's `alarms`),
/// and every shard publishes its backend size.
fn attach_node_state(
    config: &ShardConfig,
    state: &mut ShardState,
    alarms: AlarmTable,
    auth: AuthState,
) {
    if config.shard_id.0 == 0 {
        state.alarms = config.alarms.clone();
        state.auth = config.auth.clone();
    }
    state.alarms.replace(alarms);
    state.auth.replace(auth);
    state.backend_bytes = config.backend_bytes.clone();
    state.publish_backend_size();
}

async fn new_raft<B: LogBackend>(
    config: &ShardConfig,
    raft_config: Arc<Config>,
    log: B,
    shared: &Shared,
) -> Result<Raft, String> {
    let network = match &config.cluster {
        None => Network::new(config.shard_id, Rc::new(NoPeers)),
        Some(cluster) => {
            let transport = cluster_transport(ChannelTransport::new(cluster.peers.clone()));
            for (id, addr) in &cluster.members {
                transport.learn(*id, addr);
            }
            Network::new(config.shard_id, transport)
        }
    };
    let stages = shared.borrow().stages.clone();
    Raft::new(
        config.node_id,
        raft_config,
        network,
        LogStore::with_stages(log, stages),
        ShardStateMachine::new(shared.clone()),
    )
    .await
    .map_err(|e| format!("raft start: {e}"))
}

/// A write's reply channel. Dropped unanswered (openraft stopped and dropped the write's
/// responder), it answers with the shard's failure, so the caller learns why.
struct Answer {
    reply: Option<ReplyTx>,
    core: std::rc::Weak<Core>,
}

impl Answer {
    fn send(&mut self, result: Result<Reply, ShardError>) {
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(result);
        }
    }

    /// `Failed` with the cause when the shard stopped on a storage failure, else `Stopped`.
    fn stopped(&self) -> ShardError {
        match self.core.upgrade().and_then(|core| core.failure()) {
            Some(cause) => ShardError::Failed { cause },
            None => ShardError::Stopped,
        }
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        if self.reply.is_some() {
            let err = self.stopped();
            self.send(Err(err));
        }
    }
}

fn write_answer(result: ClientWriteResult<ShardRaft>) -> Result<Reply, ShardError> {
    match result {
        Ok(response) => response.data.map_err(ShardError::Engine),
        Err(ClientWriteError::ForwardToLeader(f)) => Err(ShardError::NotLeader {
            leader_id: f.leader_id,
        }),
        // Appended, then lost to another leader's log: it may still commit, so it is not
        // "not leader" (which a caller may retry) but an unknown outcome.
        Err(ClientWriteError::LogEntryDiscarded(_)) => Err(ShardError::Timeout),
        Err(other) => {
            tracing::error!(%other, "unexpected write error");
            Err(ShardError::Stopped)
        }
    }
}

impl Core {
    async fn handle(self: &Rc<Self>, cmd: Command) {
        match cmd {
            Command::Call(request, reply) => self.call(request, reply).await,
            Command::WatchCreate(create) => {
                let start = create.start_revision;
                let access = Access::Events {
                    key: &create.filter.key,
                    range_end: &create.filter.range_end,
                    from: start,
                };
                if start > 0 && make_resident(&self.shared, &access).await.is_err() {
                    // The shard stopped: the stream ends when the shard does.
                    return;
                }
                let mut st = self.shared.borrow_mut();
                let ShardState {
                    store, watchers, ..
                } = &mut *st;
                watchers.create(store, create);
            }
            Command::WatchCancel {
                stream,
                watch_id,
                done,
            } => {
                let mut st = self.shared.borrow_mut();
                st.watchers.cancel(stream, watch_id);
                let _ = done.send(st.store.revision());
            }
            Command::WatchProgress { stream, sender } => {
                let mut st = self.shared.borrow_mut();
                let ShardState {
                    store, watchers, ..
                } = &mut *st;
                watchers.request_progress(store, stream, Some(sender));
            }
            Command::StreamClosed(stream) => self.shared.borrow_mut().watchers.close_stream(stream),
            Command::Peer { kind, body, reply } => {
                let core = self.clone();
                glommio::spawn_local(async move {
                    let _ = reply.send(core.peer_message(kind, body).await);
                })
                .detach();
            }
            Command::MoveLeader { to, reply } => {
                let core = self.clone();
                glommio::spawn_local(async move {
                    let _ = reply.send(core.move_leader(to).await);
                })
                .detach();
            }
        }
    }

    /// Handles a message from a peer node: a Raft RPC for this replica, or a request a
    /// follower forwarded (served here, never forwarded again).
    async fn peer_message(
        self: &Rc<Self>,
        kind: PeerKind,
        body: bytes::Bytes,
    ) -> Result<bytes::Bytes, String> {
        match kind {
            PeerKind::Append => {
                let rpc = wire::decode_append(&body).map_err(|e| e.to_string())?;
                let answer = self
                    .raft
                    .append_entries(rpc)
                    .await
                    .map_err(|e| e.to_string())?;
                if !matches!(answer, AppendEntriesResponse::HigherVote(_)) {
                    self.loop_state.borrow_mut().leader_heard = Some(Instant::now());
                    if self.config.shard_id.0 == 0 {
                        self.publish_leader();
                    }
                }
                Ok(wire::encode_append_response(&answer))
            }
            PeerKind::Vote => {
                let rpc = wire::decode_vote(&body).map_err(|e| e.to_string())?;
                let answer = self.raft.vote(rpc).await.map_err(|e| e.to_string())?;
                Ok(wire::encode_vote_response(&answer))
            }
            PeerKind::PreVote => {
                let rpc = wire::decode_vote(&body).map_err(|e| e.to_string())?;
                let answer = self.raft.pre_vote(rpc).await.map_err(|e| e.to_string())?;
                Ok(wire::encode_vote_response(&answer))
            }
            PeerKind::Snapshot => crate::snapshot::receive(&self.raft, &self.shared, body).await,
            PeerKind::Members => {
                let m = self.metrics.borrow_watched();
                let committed = &m.committed_membership_config;
                let membership = committed.membership();
                let mut ids: Vec<NodeId> = membership
                    .voter_ids()
                    .chain(membership.learner_ids())
                    .collect();
                ids.sort_unstable();
                ids.dedup();
                Ok(wire::encode_members_answer(&wire::MembersAnswer {
                    log_id: *committed.log_id(),
                    ids,
                }))
            }
            PeerKind::TransferLeader => {
                let rpc = wire::decode_transfer_leader(&body).map_err(|e| e.to_string())?;
                let answer = self
                    .raft
                    .handle_transfer_leader(rpc)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(wire::encode_transfer_answer(&answer))
            }
            PeerKind::ReadIndex => {
                wire::decode_read_index(&body).map_err(|e| e.to_string())?;
                let answer = self.read_index().await;
                if answer.is_ok() {
                    self.loop_state.borrow_mut().read_indexes_answered += 1;
                }
                Ok(wire::encode_read_index_answer(&answer))
            }
            PeerKind::Forward => {
                let request = wire::decode_request(&body).map_err(|e| e.to_string())?;
                self.loop_state.borrow_mut().forwarded_served += 1;
                let (tx, rx) = oneshot::channel();
                self.serve(request, tx, false).await;
                let answer = rx.await.unwrap_or(Err(ShardError::Stopped));
                Ok(wire::encode_answer(&answer))
            }
        }
    }

    /// See [`ShardHandle::move_leader`]. The wait is bounded by the request deadline.
    async fn move_leader(self: &Rc<Self>, to: NodeId) -> Result<(), TransferError> {
        {
            let m = self.metrics.borrow_watched();
            if !m.state.is_leader() {
                return Err(TransferError::NotLeader);
            }
            if !m
                .membership_config
                .membership()
                .voter_ids()
                .any(|v| v == to)
            {
                return Err(TransferError::BadTransferee);
            }
        }
        if to == self.config.node_id {
            return Ok(());
        }
        self.loop_state.borrow_mut().last_transfer = Some(Instant::now());
        tracing::info!(
            shard = %self.config.shard_id,
            to = format_args!("{to:x}"),
            "moving the shard's leadership (MoveLeader)"
        );
        self.raft
            .trigger()
            .transfer_leader(to)
            .await
            .map_err(|_| TransferError::Stopped)?;
        self.raft
            .wait(Some(self.request_timeout()))
            .metrics(
                move |m| m.current_leader == Some(to),
                "the new leader is known",
            )
            .await
            .map(|_| ())
            .map_err(|_| TransferError::TookTooLong)
    }

    /// Shard 0's replica writes its leader, term, live leader and learner state in the node's
    /// anchor (from housekeeping, and at once when an append from its leader arrives).
    fn publish_leader(&self) {
        let m = self.metrics.borrow_watched();
        self.config.anchor.set(m.current_leader, m.current_term);
        self.config
            .anchor
            .set_live(self.live_leader(&m, Instant::now()));
        // Not a voter: a learner, or a member that joined and has not yet received the
        // membership that names it (etcd's joining member serves nothing before then).
        let me = self.config.node_id;
        let voter = m
            .membership_config
            .membership()
            .voter_ids()
            .any(|id| id == me);
        self.config.anchor.set_learner(!voter);
    }

    /// The leader this replica has, as etcd's members count one: itself, for an election
    /// timeout after it was elected and then while a quorum has answered it within one (or it
    /// is the only voter; etcd's CheckQuorum); another, while its appends or heartbeats keep
    /// arriving within an election timeout. `None` otherwise (no
    /// leader known, a follower cut off from it, a leader cut off from its quorum), which
    /// openraft's `current_leader` does not show: with Pre-Vote a cut-off follower keeps the
    /// last leader's vote, and a leader does not step down.
    fn live_leader(
        &self,
        m: &openraft::RaftMetrics<ShardRaft>,
        now: Instant,
    ) -> Option<(NodeId, LiveLeader)> {
        let leader = m.current_leader?;
        let within =
            |at: Instant| now.saturating_duration_since(at) <= self.config.election_timeout;
        let ls = self.loop_state.borrow();
        let live = if leader == self.config.node_id {
            let alone = m.membership_config.membership().voter_ids().count() <= 1;
            let acked = m.last_quorum_acked.as_ref().is_some_and(|at| within(**at));
            let new = ls.was_leader && within(ls.leader_since);
            (alone || acked || new).then_some(LiveLeader::Itself)
        } else {
            ls.leader_heard
                .is_some_and(within)
                .then_some(LiveLeader::Other)
        };
        live.map(|kind| (leader, kind))
    }

    /// Shard 0 publishes its leader and term in the node's anchor; another shard's leader hands
    /// leadership to the node the placement rule prefers, when that costs little
    /// (`placement.rs`).
    async fn place_leader(self: &Rc<Self>) {
        let target = {
            let m = self.metrics.borrow_watched();
            if self.config.shard_id.0 == 0 {
                drop(m);
                self.publish_leader();
                return;
            }
            if self.config.cluster.is_none() {
                return;
            }
            let ls = self.loop_state.borrow();
            let pace = Pace {
                election_timeout: self.config.election_timeout,
                leader_since: ls.leader_since,
                last_transfer: ls.last_transfer,
                changing_membership: ls.membership_changes > 0,
            };
            let anchor = self.config.anchor.leader();
            placement::transfer_target(&m, self.config.shard_id, anchor, pace, Instant::now())
        };
        let Some(to) = target else {
            return;
        };
        self.loop_state.borrow_mut().last_transfer = Some(Instant::now());
        tracing::info!(
            shard = %self.config.shard_id,
            to = format_args!("{to:x}"),
            "moving the shard's leadership to its preferred node"
        );
        if let Err(fatal) = self.raft.trigger().transfer_leader(to).await {
            tracing::error!(%fatal, "shard raft stopped");
        }
    }

    /// A follower of shard 0 in a cluster asks its peers, every [`REMOVAL_CHECK_INTERVAL`],
    /// which members their committed membership names: one committed at or after the latest
    /// membership this replica knows (log id not lower) that does not name this member means
    /// it was removed (the leader stops replicating to a removed member, which may never learn
    /// it from its own log). The anchor then says so, and the server stops, as etcd's does. A
    /// peer whose membership is older proves nothing (it may lag behind a member just added),
    /// nor does this replica's own membership (a new member catching up replays configs that
    /// predate it).
    fn check_removal(self: &Rc<Self>) {
        let Some(channel) = self.forward.clone() else {
            return;
        };
        if self.config.shard_id.0 != 0 || self.config.anchor.removed() || self.raft.is_leader() {
            return;
        }
        {
            let mut ls = self.loop_state.borrow_mut();
            let now = Instant::now();
            if now < ls.next_removal_check {
                return;
            }
            ls.next_removal_check = now + REMOVAL_CHECK_INTERVAL;
        }
        let (mine, peers) = {
            let m = self.metrics.borrow_watched();
            let latest = &m.membership_config;
            let peers: Vec<String> = latest
                .membership()
                .nodes()
                .filter(|(id, _)| **id != self.config.node_id)
                .map(|(_, node)| node.addr.clone())
                .collect();
            (*latest.log_id(), peers)
        };
        let core = self.clone();
        glommio::spawn_local(async move {
            let me = core.config.node_id;
            for addr in peers {
                let asked = channel
                    .send(
                        &addr,
                        core.config.shard_id,
                        PeerKind::Members,
                        bytes::Bytes::new(),
                        REMOVAL_CHECK_TIMEOUT,
                    )
                    .await;
                let Ok(answer) = asked.map_err(|e| e.to_string()).and_then(|bytes| {
                    wire::decode_members_answer(&bytes).map_err(|e| e.to_string())
                }) else {
                    continue;
                };
                if answer.log_id >= mine && !answer.ids.contains(&me) {
                    tracing::error!(
                        member_id = format_args!("{me:x}"),
                        peer = %addr,
                        "the member has been permanently removed from the cluster"
                    );
                    core.config.anchor.set_removed();
                    return;
                }
            }
        })
        .detach();
    }

    /// How long a request may wait for a leader and its answer (etcd's request timeout: 5 s
    /// plus two election timeouts).
    fn request_timeout(&self) -> Duration {
        Duration::from_secs(5) + 2 * self.config.election_timeout
    }

    /// Waits (polling) until the local store reaches `revision` or `deadline` passes; a write
    /// the leader answered is committed, so this replica applies it as soon as it learns so.
    async fn await_revision(&self, revision: Revision, deadline: Instant) {
        while self.shared.borrow().store.revision() < revision && Instant::now() < deadline {
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
    }

    /// How long to wait before asking again when the leader is unreachable or changing.
    fn retry_pause(&self) -> Duration {
        self.config
            .heartbeat_interval
            .min(Duration::from_millis(50))
    }

    /// Waits, at most `left`, until a leader is known, and says where it is. When it is this
    /// replica, only once it serves as leader (a vote just won names it before it takes
    /// writes).
    async fn await_leader(&self, left: Duration) -> Leader {
        let me = self.config.node_id;
        let leader = self
            .raft
            .wait(Some(left))
            .metrics(
                move |m| match m.current_leader {
                    Some(id) => id != me || m.state.is_leader(),
                    None => false,
                },
                "a leader is known",
            )
            .await
            .ok()
            .and_then(|m| m.current_leader);
        match leader {
            None => Leader::Unknown,
            Some(id) if id == me => Leader::Me,
            Some(id) => {
                let addr = self
                    .metrics
                    .borrow_watched()
                    .membership_config
                    .membership()
                    .get_node(&id)
                    .map(|n| n.addr.clone());
                match addr {
                    Some(addr) => Leader::At(addr),
                    None => Leader::NoAddress,
                }
            }
        }
    }

    /// Serves `request` here as the leader (it was found to be this replica); `None` when
    /// leadership moved on meanwhile and the caller should look for the leader again.
    async fn serve_as_leader(
        self: &Rc<Self>,
        request: Request,
    ) -> Option<Result<Reply, ShardError>> {
        let (tx, rx) = oneshot::channel();
        self.serve(request, tx, false).await;
        match rx.await.unwrap_or(Err(ShardError::Stopped)) {
            Err(ShardError::NotLeader { .. }) => None,
            answer => Some(answer),
        }
    }

    /// One step towards the shard's leader for a request that needs it, until `deadline`: the
    /// leader's peer address, or the answer (this replica leads and served it; no leader
    /// known in time; the deadline passed), or `Again` after a `pause` (this replica is
    /// leader but not serving yet, or the leader's address is not known here yet).
    async fn reach_leader(
        self: &Rc<Self>,
        request: &Request,
        deadline: Instant,
        pause: Duration,
    ) -> Reach {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Reach::Answered(Box::new(Err(ShardError::Timeout)));
        }
        match self.await_leader(left).await {
            Leader::Unknown => {
                Reach::Answered(Box::new(Err(ShardError::NotLeader { leader_id: None })))
            }
            Leader::Me => match self.serve_as_leader(request.clone()).await {
                Some(answer) => Reach::Answered(Box::new(answer)),
                None => {
                    glommio::timer::sleep(pause).await;
                    Reach::Again
                }
            },
            Leader::NoAddress => {
                glommio::timer::sleep(pause).await;
                Reach::Again
            }
            Leader::At(addr) => Reach::At(addr),
        }
    }

    /// Serves `request` at the shard's leader on another node (see the module comment).
    async fn forward(self: &Rc<Self>, request: Request) -> Result<Reply, ShardError> {
        let deadline = Instant::now() + self.request_timeout();
        self.forward_until(request, deadline).await
    }

    /// [`Core::forward`] with the request's deadline already set.
    async fn forward_until(
        self: &Rc<Self>,
        request: Request,
        deadline: Instant,
    ) -> Result<Reply, ShardError> {
        let Some(channel) = self.forward.clone() else {
            return Err(self.not_leader());
        };
        let body = wire::encode_request(&request);
        // A membership change sent twice may be refused the second time ("already exists").
        let writes = matches!(request, Request::Membership(_))
            || matches!(route(request.clone()), Route::Write(_));
        let pause = self.retry_pause();
        loop {
            let addr = match self.reach_leader(&request, deadline, pause).await {
                Reach::Answered(answer) => return *answer,
                Reach::Again => continue,
                Reach::At(addr) => addr,
            };
            let left = deadline.saturating_duration_since(Instant::now());
            match channel
                .send(
                    &addr,
                    self.config.shard_id,
                    PeerKind::Forward,
                    body.clone(),
                    left,
                )
                .await
            {
                Ok(answer) => match wire::decode_answer(&answer) {
                    // Leadership moved after we looked: ask the new leader.
                    Ok(Err(ShardError::NotLeader { .. })) => glommio::timer::sleep(pause).await,
                    Ok(Ok(reply)) if writes => {
                        // Answer once this replica has applied the write too (as etcd's
                        // members do): a read of this member's own state that follows — a
                        // serializable read, a HashKV at the write's revision — sees it.
                        self.await_revision(reply.revision, deadline).await;
                        return Ok(reply);
                    }
                    Ok(answer) => return answer,
                    Err(err) => {
                        tracing::error!(%err, %addr, "unreadable answer to a forwarded request");
                        return Err(ShardError::Timeout);
                    }
                },
                // Never sent: safe to send again once a leader answers.
                Err(PeerFailure::Unreachable { .. }) => glommio::timer::sleep(pause).await,
                Err(PeerFailure::Refused { why, .. }) => {
                    tracing::warn!(%why, %addr, "a forwarded request was refused");
                    glommio::timer::sleep(pause).await;
                }
                // Sent, then no answer: a read is asked again, a write may have taken effect.
                Err(PeerFailure::Lost { .. } | PeerFailure::Timeout { .. }) if !writes => {
                    glommio::timer::sleep(pause).await
                }
                Err(PeerFailure::Lost { .. } | PeerFailure::Timeout { .. }) => {
                    return Err(ShardError::Timeout)
                }
            }
        }
    }

    /// Serves a linearizable read on a follower from its own store (Raft thesis §6.4, as
    /// etcd's followers serve them): asks the shard's leader for its read index
    /// ([`PeerKind::ReadIndex`], in rounds shared by concurrent reads: [`ReadIndexRounds`]),
    /// waits until this replica has applied up to it, then reads.
    /// The leader unknown, unreachable or changing: asked again after a pause, as
    /// [`Core::forward`] does, until the request deadline. A leader that refuses the question
    /// (an older member that does not know the kind) gets the read forwarded instead.
    ///
    /// Why it is linearizable: a write acknowledged before this read began is committed, at
    /// some index `w`; the leader answers only after a quorum confirmed it still leads, with
    /// its commit index then (or its own first entry's, if higher), so the read index is at
    /// least `w`, and this replica's store has every entry up to the read index applied once
    /// its applied index reaches it (entries only apply once committed, and a committed entry
    /// never changes).
    async fn follower_read(self: &Rc<Self>, request: Request) -> Result<Reply, ShardError> {
        let Some(channel) = self.forward.clone() else {
            return Err(self.not_leader());
        };
        let deadline = Instant::now() + self.request_timeout();
        let pause = self.retry_pause();
        loop {
            let addr = match self.reach_leader(&request, deadline, pause).await {
                Reach::Answered(answer) => return *answer,
                Reach::Again => continue,
                Reach::At(addr) => addr,
            };
            match self.ask_read_index(&channel, addr.clone(), deadline).await {
                Ok(Ok(read_log_id)) => return self.read_at(read_log_id, request, deadline).await,
                // Leadership moved after we looked, or the leader could not confirm it with a
                // quorum: ask again.
                Ok(Err(ShardError::NotLeader { .. })) => glommio::timer::sleep(pause).await,
                Ok(Err(err)) => return Err(err),
                // An older leader that does not know `ReadIndex` (a rolling upgrade), or one
                // that could not hand the question to its shard: the read goes the old way.
                Err(PeerFailure::Refused { why, .. }) => {
                    tracing::debug!(%why, %addr, "a read index was refused: forwarding the read");
                    return self.forward_until(request, deadline).await;
                }
                // Asking changes nothing, so it is always safe to ask again.
                Err(
                    PeerFailure::Unreachable { .. }
                    | PeerFailure::Lost { .. }
                    | PeerFailure::Timeout { .. },
                ) => glommio::timer::sleep(pause).await,
            }
        }
    }

    /// Asks the leader at `addr` for a read index on behalf of one read, in the next round of
    /// questions to it ([`ReadIndexRounds`]); waits until `deadline` at most (then `Timeout`).
    async fn ask_read_index(
        self: &Rc<Self>,
        channel: &ChannelTransport,
        addr: String,
        deadline: Instant,
    ) -> ReadIndexAsked {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut rounds = self.read_index_rounds.borrow_mut();
            let round = rounds.by_addr.entry(addr.clone()).or_default();
            round.waiting.push((deadline, tx));
            !std::mem::replace(&mut round.asking, true)
        };
        if start {
            let (core, channel, addr) = (self.clone(), channel.clone(), addr.clone());
            glommio::spawn_local(async move { core.read_index_rounds(channel, addr).await })
                .detach();
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let expired = Box::pin(glommio::timer::sleep(left));
        match futures::future::select(rx, expired).await {
            futures::future::Either::Left((Ok(asked), _)) => asked,
            // The deadline passed first, or the round gave up on this read (its deadline).
            _ => Err(PeerFailure::Timeout { addr, after: left }),
        }
    }

    /// Asks the leader at `addr` one read index per round for every read waiting when the
    /// round starts, until no read waits (see [`ReadIndexRounds`]).
    async fn read_index_rounds(self: Rc<Self>, channel: ChannelTransport, addr: String) {
        loop {
            let batch = {
                let mut rounds = self.read_index_rounds.borrow_mut();
                let round = rounds.by_addr.get_mut(&addr).expect("a round is asking");
                let batch = std::mem::take(&mut round.waiting);
                if batch.is_empty() {
                    rounds.by_addr.remove(&addr);
                    return;
                }
                batch
            };
            let now = Instant::now();
            let timeout = batch
                .iter()
                .map(|(deadline, _)| deadline.saturating_duration_since(now))
                .max()
                .unwrap_or_default();
            if timeout.is_zero() {
                continue; // every read in it is past its deadline: dropping them tells them
            }
            let asked = channel
                .send(
                    &addr,
                    self.config.shard_id,
                    PeerKind::ReadIndex,
                    wire::encode_read_index(),
                    timeout,
                )
                .await
                .map(|answer| {
                    wire::decode_read_index_answer(&answer).unwrap_or_else(|err| {
                        tracing::error!(%err, %addr, "unreadable answer to a read index");
                        Err(ShardError::Timeout)
                    })
                });
            for (_, reply) in batch {
                let _ = reply.send(asked.clone());
            }
        }
    }

    /// Reads `request` from the local store once this replica has applied up to `read_log_id`,
    /// waiting until `deadline` at most ("request timed out" after it).
    async fn read_at(
        &self,
        read_log_id: LogId,
        request: Request,
        deadline: Instant,
    ) -> Result<Reply, ShardError> {
        let left = deadline.saturating_duration_since(Instant::now());
        let linearizer = Linearizer::new(
            self.config.node_id,
            ReadLogId::from_log_id(read_log_id),
            None,
        );
        match linearizer.try_await_ready(&self.raft, Some(left)).await {
            Ok(Ok(_)) => {
                self.loop_state.borrow_mut().follower_reads += 1;
                self.serve_local(request).await
            }
            Ok(Err(_)) => Err(ShardError::Timeout),
            Err(_) => Err(match self.failure() {
                Some(cause) => ShardError::Failed { cause },
                None => ShardError::Stopped,
            }),
        }
    }

    /// The leader's side of [`Core::follower_read`]: openraft's read log id once a quorum has
    /// confirmed this replica still leads, or `NotLeader`.
    async fn read_index(&self) -> Result<LogId, ShardError> {
        if let Some(cause) = self.failure() {
            return Err(ShardError::Failed { cause });
        }
        match self.raft.get_read_log_id(ReadPolicy::ReadIndex).await {
            Ok((read_log_id, _applied)) => Ok(*read_log_id.log_id()),
            Err(_) => Err(match self.failure() {
                Some(cause) => ShardError::Failed { cause },
                None => self.not_leader(),
            }),
        }
    }

    /// Why the shard stopped, if it did: a failed checkpoint, a failed WAL write or sync, or
    /// openraft's fatal stop (which a log-store error causes).
    fn failure(&self) -> Option<String> {
        let st = self.shared.borrow();
        if let Some(f) = &st.failure {
            return Some(f.clone());
        }
        if let Some(f) = st.durable.as_ref().and_then(|d| d.wal_failure()) {
            return Some(format!("log write failed: {f}"));
        }
        match &self.metrics.borrow_watched().running_state {
            Ok(()) => None,
            Err(fatal) => Some(format!("raft stopped: {fatal}")),
        }
    }

    async fn call(self: &Rc<Self>, request: Request, reply: ReplyTx) {
        self.serve(request, reply, true).await;
    }

    /// Serves a request here, or (`may_forward`, on a follower) at the leader.
    async fn serve(self: &Rc<Self>, request: Request, reply: ReplyTx, may_forward: bool) {
        // A stopped shard still reports its status (that is how /health learns of the stop).
        if !matches!(request, Request::Status) {
            if let Some(cause) = self.failure() {
                let _ = reply.send(Err(ShardError::Failed { cause }));
                return;
            }
        }
        if may_forward && self.forward.is_some() && needs_leader(&request) && !self.raft.is_leader()
        {
            let core = self.clone();
            glommio::spawn_local(async move {
                let answer = if linearizable_read(&request) {
                    core.follower_read(request).await
                } else {
                    core.forward(request).await
                };
                let _ = reply.send(answer);
            })
            .detach();
            return;
        }
        // In a cluster, a write this leader loses its leadership before appending is sent on
        // to the new leader (it was never appended, so it cannot take effect twice).
        let resend = (may_forward && self.forward.is_some()).then(|| request.clone());
        match route(request) {
            Route::Write(cmd) => match resend {
                Some(original) => {
                    let (tx, rx) = oneshot::channel();
                    self.propose(cmd, tx).await;
                    let core = self.clone();
                    glommio::spawn_local(async move {
                        let answer = match rx.await.unwrap_or(Err(ShardError::Stopped)) {
                            Err(ShardError::NotLeader { .. }) => core.forward(original).await,
                            answer => answer,
                        };
                        let _ = reply.send(answer);
                    })
                    .detach();
                }
                None => self.propose(cmd, reply).await,
            },
            Route::LinearizableRead(request) => {
                let core = self.clone();
                let may_forward = may_forward && self.forward.is_some();
                glommio::spawn_local(async move {
                    let answer = match core.raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
                        Ok(_) => core.serve_local(request).await,
                        Err(_) => match core.failure() {
                            Some(cause) => Err(ShardError::Failed { cause }),
                            // Leadership moved while the read waited for its read index (a
                            // leader transfer, an election): served as a follower serves it,
                            // with the new leader's read index once one is known, within the
                            // request timeout, as etcd's read waits rather than failing at once.
                            None if may_forward => core.follower_read(request).await,
                            None => Err(core.not_leader()),
                        },
                    };
                    let _ = reply.send(answer);
                })
                .detach();
            }
            Route::LeaderLocal(Request::Membership(change)) => {
                let core = self.clone();
                let may_forward = may_forward && self.forward.is_some();
                glommio::spawn_local(async move {
                    let answer = match core.change_membership(change).await {
                        Ok(reply) => Ok(reply),
                        // openraft refuses a step with "forward to leader" before it appends
                        // anything (this leader is handing its leadership over, or lost it):
                        // what is left of the change goes to the new leader once one is known,
                        // as a write refused before appending does.
                        Err(Unmade {
                            error: ShardError::NotLeader { .. },
                            rest,
                        }) if may_forward => core.forward(Request::Membership(rest)).await,
                        Err(unmade) => Err(unmade.error),
                    };
                    let _ = reply.send(answer);
                })
                .detach();
            }
            Route::LeaderLocal(request) => {
                let answer = if self.raft.is_leader() {
                    self.serve_local(request).await
                } else {
                    Err(self.not_leader())
                };
                let _ = reply.send(answer);
            }
            Route::Local(request) => {
                let _ = reply.send(self.serve_local(request).await);
            }
        }
    }

    /// Makes a membership change as this shard's leader; no automatic leadership transfer
    /// starts meanwhile.
    async fn change_membership(self: &Rc<Self>, change: MembershipChange) -> Result<Reply, Unmade> {
        if !self.raft.is_leader() {
            return Err(Unmade {
                error: self.not_leader(),
                rest: change,
            });
        }
        /// Counts the change in [`LoopState::membership_changes`] while it runs.
        struct Changing<'a>(&'a RefCell<LoopState>);
        impl Drop for Changing<'_> {
            fn drop(&mut self) {
                self.0.borrow_mut().membership_changes -= 1;
            }
        }
        self.loop_state.borrow_mut().membership_changes += 1;
        let _changing = Changing(&self.loop_state);
        let deadline = Instant::now() + self.request_timeout();
        let members = crate::membership::change(&self.raft, change, deadline).await?;
        Ok(Reply {
            revision: self.shared.borrow().store.revision(),
            response: Response::Members(members),
        })
    }

    fn not_leader(&self) -> ShardError {
        ShardError::NotLeader {
            leader_id: self.metrics.borrow_watched().current_leader,
        }
    }

    /// Proposes a write; `reply` is answered from the apply step (or with the refusal).
    async fn propose(self: &Rc<Self>, cmd: LogCommand, reply: ReplyTx) {
        let received = Instant::now();
        self.loop_state.borrow_mut().writes_in_flight += 1;
        let core = Rc::downgrade(self);
        let mut answer = Answer {
            reply: Some(reply),
            core: core.clone(),
        };
        let responder = FnResponder::new(move |result: ClientWriteResult<ShardRaft>| {
            if let Some(core) = core.upgrade() {
                let now = Instant::now();
                let mut ls = core.loop_state.borrow_mut();
                ls.writes_in_flight -= 1;
                if result.is_err() {
                    ls.proposals_failed += 1;
                }
                let micros = u64::try_from((now - received).as_micros()).unwrap_or(u64::MAX);
                ls.write_latency_us.record(micros);
                let stages = core.shared.borrow().stages.clone();
                stages.borrow_mut().answered(received, now);
            }
            let answer_now = match write_answer(result) {
                Err(ShardError::Stopped) => Err(answer.stopped()),
                other => other,
            };
            answer.send(answer_now);
        });
        if let Err(fatal) = self.raft.client_write_ff(cmd, Some(responder)).await {
            // The responder was dropped with the request: its `Answer` tells the caller why.
            let mut ls = self.loop_state.borrow_mut();
            ls.writes_in_flight -= 1;
            ls.proposals_failed += 1;
            drop(ls);
            tracing::error!(%fatal, "shard raft stopped");
        }
    }

    /// Serves a request from the local store (reads, lease facts, status), once the store
    /// holds what it reads.
    async fn serve_local(&self, request: Request) -> Result<Reply, ShardError> {
        let access = match &request {
            Request::Range(r) => Some(Access::Range(r)),
            Request::Txn(t) => Some(Access::Txn(t)),
            Request::HashKv { .. } | Request::Hash => Some(Access::Everything),
            Request::History { from, upto, .. } => Some(Access::History {
                from: *from,
                upto: *upto,
            }),
            _ => None,
        };
        if let Some(access) = access {
            make_resident(&self.shared, &access)
                .await
                .map_err(|cause| ShardError::Failed { cause })?;
        }
        // No `.await` from here: the store still holds what was made resident.
        let mut st = self.shared.borrow_mut();
        if let Request::Alarm { action, member } = &request {
            // Only listing is routed here: changes go through the log.
            debug_assert_eq!(*action, AlarmAction::Get);
            return Ok(Reply {
                revision: st.store.revision(),
                response: Response::Alarms(st.alarms.table().get(member.alarm)),
            });
        }
        let now = st.now_ms();
        let store = &mut st.store;
        let current = store.revision();
        let response = match request {
            Request::Range(r) => {
                let answer = store.range(&r)?;
                st.ops.range();
                Response::Range(answer)
            }
            // Only read-only txns are routed here: they change nothing and take no revision.
            Request::Txn(t) => {
                debug_assert!(!txn_writes(&t));
                let a = store.txn(&t)?;
                st.ops.txn(&t, &a.response, false);
                Response::Txn(a.response)
            }
            Request::LeaseKeepAlive { id } => Response::LeaseKeepAlive {
                ttl: store.lease_keep_alive(id, now)?,
            },
            Request::LeaseTimeToLive { id, keys } => {
                Response::LeaseTimeToLive(store.lease_time_to_live(id, keys, now)?)
            }
            Request::LeaseLeases => Response::LeaseLeases(store.leases()),
            Request::Alarm { .. } => unreachable!("answered above"),
            Request::Auth { .. } => unreachable!("auth requests go through the log"),
            Request::HashKv { revision } => Response::HashKv(store.hash_kv(revision)?),
            Request::Hash => Response::Hash(store.hash()),
            Request::History {
                from,
                upto,
                max_entries,
            } => Response::History(store.history_chunk(from, upto, max_entries)),
            Request::Status => {
                drop(st);
                Response::Status(self.status())
            }
            Request::Put(_)
            | Request::DeleteRange(_)
            | Request::Compact { .. }
            | Request::LeaseGrant { .. }
            | Request::LeaseRevoke { .. }
            | Request::Advance { .. } => {
                unreachable!("writes are routed through the log")
            }
            Request::Membership(_) => unreachable!("membership changes are made by the leader"),
        };
        Ok(Reply {
            revision: current,
            response,
        })
    }

    fn status(&self) -> ShardStatus {
        let failure = self.failure();
        let mut status = self.figures();
        status.failure = failure;
        status
    }

    fn figures(&self) -> ShardStatus {
        let st = self.shared.borrow();
        let ls = self.loop_state.borrow();
        let m = self.metrics.borrow_watched();
        let pages = st.durable.as_ref().map(|d| d.page_stats());
        let wal = st.durable.as_ref().map(|d| d.wal_stats());
        let cache = st.store.cache_figures();
        let stage_figures = Box::new(st.stages.borrow().figures());
        let backend = st.backend_size();
        ShardStatus {
            revision: st.store.revision(),
            compact_revision: st.store.compact_revision(),
            size_bytes: cache.bytes,
            backend_bytes: backend.total_bytes,
            backend_in_use_bytes: backend.in_use_bytes,
            applied_index: st.last_applied.map_or(0, |id| id.index + 1),
            watchers: st.watchers.len(),
            raft_term: m.current_term,
            raft_index: m.last_log_index.map_or(0, |i| i + 1),
            raft_commit_index: m.cluster_committed.map_or(0, |id| id.index + 1),
            leader_id: m.current_leader.unwrap_or(0),
            is_leader: m.state.is_leader(),
            queue_depth: self.queue.len(),
            writes_in_flight: ls.writes_in_flight,
            entries_applied: st.entries_applied,
            apply_latency_ns_p50: st.apply_latency_ns.quantile(0.5),
            apply_latency_ns_p99: st.apply_latency_ns.quantile(0.99),
            write_latency_us_p50: ls.write_latency_us.quantile(0.5),
            write_latency_us_p99: ls.write_latency_us.quantile(0.99),
            write_stages: stage_figures,
            durable: st.durable.is_some(),
            checkpoints: st.checkpoints.count,
            checkpoint_index: st.checkpoints.last_index,
            checkpoint_duration_ms_last: st.checkpoints.last_duration_ms,
            checkpoint_pending_changes: st.store.pending_changes().changes as u64,
            cached_keys: cache.keys,
            cached_records: cache.records,
            cache_loads: cache.loads,
            page_log_bytes: st.durable.as_ref().map_or(0, |d| d.page_log_bytes()),
            page_cache_bytes: pages.as_ref().map_or(0, |p| p.cache_bytes),
            wal_syncs: wal.map_or(0, |w| w.flushes),
            wal_records: wal.map_or(0, |w| w.records_flushed),
            failure: None,
            members: crate::membership::members_of(&m),
            served: Box::new(ServedFigures {
                follower_reads: ls.follower_reads,
                read_indexes_answered: ls.read_indexes_answered,
                forwarded_served: ls.forwarded_served,
            }),
            etcd: Box::new(EtcdFigures {
                wal_fsync: wal.map_or_else(Default::default, |w| w.sync_durations),
                backend_commit: st.checkpoints.commit_durations,
                leader_changes: ls.leader_changes,
                proposals_failed: ls.proposals_failed,
                ops: st.ops,
            }),
        }
    }

    fn next_wakeup(&self) -> Duration {
        let st = self.shared.borrow();
        let mut wait = self.config.tick;
        let deadline = match self.config.lease_expiry {
            LeaseExpiry::Ignore => None,
            _ => st.store.next_lease_deadline_ms(),
        };
        if let Some(deadline) = deadline {
            wait = wait.min(Duration::from_millis(deadline.saturating_sub(st.now_ms())));
        }
        wait.max(Duration::from_millis(1))
    }

    /// Lease expiry (leader only), watcher catch-up and progress notifications.
    async fn housekeeping(self: &Rc<Self>) {
        let is_leader = self.raft.is_leader();
        let became_leader = is_leader && !self.loop_state.borrow().was_leader;
        let leader = self.metrics.borrow_watched().current_leader;
        {
            let mut ls = self.loop_state.borrow_mut();
            ls.was_leader = is_leader;
            if leader.is_some() && leader != ls.last_leader {
                ls.leader_changes += 1;
                ls.last_leader = leader;
            }
            if became_leader {
                ls.leader_since = Instant::now();
            }
        }
        let expired = {
            let mut st = self.shared.borrow_mut();
            let now = st.now_ms();
            if became_leader {
                // Deadlines restart on a new leader (etcd's lessor promotion): a follower's
                // clock knew nothing of the old leader's refreshes.
                let extend = u64::try_from(self.config.election_timeout.as_millis()).unwrap_or(0);
                st.store.lease_refresh_all(now, extend);
            }
            if is_leader && !matches!(self.config.lease_expiry, LeaseExpiry::Ignore) {
                st.store.expired_leases(now)
            } else {
                Vec::new()
            }
        };
        if let LeaseExpiry::Report(to) = &self.config.lease_expiry {
            self.report_expired(to, &expired);
            return self.housekeeping_rest().await;
        }
        for id in expired {
            if !self.loop_state.borrow_mut().revoking.insert(id) {
                continue;
            }
            let core = Rc::downgrade(self);
            let responder = FnResponder::new(move |result: ClientWriteResult<ShardRaft>| {
                if let Err(err) = write_answer(result) {
                    tracing::debug!(lease_id = id, %err, "revoking an expired lease");
                }
                if let Some(core) = core.upgrade() {
                    core.loop_state.borrow_mut().revoking.remove(&id);
                }
            });
            let cmd = LogCommand::LeaseRevoke { id };
            if let Err(fatal) = self.raft.client_write_ff(cmd, Some(responder)).await {
                tracing::error!(%fatal, "shard raft stopped");
                return;
            }
        }
        self.housekeeping_rest().await;
    }

    /// Reports each expired lease not reported in the last [`EXPIRY_REPORT_AGAIN`]; a full
    /// channel leaves the rest for the next round.
    fn report_expired(&self, to: &mpsc::Sender<LeaseId>, expired: &[LeaseId]) {
        let now = Instant::now();
        let still: HashSet<LeaseId> = expired.iter().copied().collect();
        let mut state = self.loop_state.borrow_mut();
        state.reported.retain(|id, _| still.contains(id));
        for &id in expired {
            if state
                .reported
                .get(&id)
                .is_some_and(|at| now.duration_since(*at) < EXPIRY_REPORT_AGAIN)
            {
                continue;
            }
            if to.try_send(id).is_err() {
                break;
            }
            state.reported.insert(id, now);
        }
    }

    /// Checkpoints, the store's cache, watcher catch-up and progress notifications.
    async fn housekeeping_rest(self: &Rc<Self>) {
        {
            let st = self.shared.borrow();
            if st.durable.is_none() {
                // A pass over the key index: here, not after every apply.
                st.publish_backend_size();
            }
        }
        self.place_leader().await;
        self.check_removal();
        if self.checkpoint_due() {
            if let Err(fatal) = self.raft.trigger().snapshot().await {
                tracing::error!(%fatal, "shard raft stopped");
                return;
            }
        }
        self.page_housekeeping().await;
        let targets = self.shared.borrow().watchers.catch_up_targets();
        for (key, range_end, from) in targets {
            let access = Access::Events {
                key: &key,
                range_end: &range_end,
                from,
            };
            if make_resident(&self.shared, &access).await.is_err() {
                return;
            }
        }
        // Watchers whose history was evicted during the loads above catch up next time.
        let mut st = self.shared.borrow_mut();
        let ShardState {
            store, watchers, ..
        } = &mut *st;
        watchers.sync(store);
        let mut ls = self.loop_state.borrow_mut();
        if Instant::now() >= ls.next_progress {
            watchers.notify_progress(store);
            ls.next_progress = Instant::now() + self.config.progress_notify_interval;
        }
    }
}

impl Core {
    /// A paged store's upkeep: one step of the background compaction pass (while the changes
    /// waiting for a checkpoint stay few), and eviction of clean data beyond the cache bound
    /// after each checkpoint or after loads (at most once a second then).
    async fn page_housekeeping(&self) {
        let Some(budget) = self
            .shared
            .borrow()
            .durable
            .as_ref()
            .map(|d| d.store_cache_bytes())
        else {
            return;
        };
        let step = {
            let mut st = self.shared.borrow_mut();
            let pending = st.store.pending_changes().changes;
            if pending < COMPACTION_PENDING_MAX && st.failure.is_none() {
                st.store
                    .compaction_missing()
                    .map(|m| (m, st.durable.clone().expect("durable")))
            } else {
                None
            }
        };
        if let Some((missing, durable)) = step {
            match durable.fetch(missing).await {
                Ok(loaded) => self.shared.borrow_mut().store.compaction_loaded(loaded),
                Err(err) => {
                    let failure = format!("page log read failed: {err}");
                    tracing::error!(%failure, "shard stops (fail-stop)");
                    self.shared.borrow_mut().failure = Some(failure);
                    return;
                }
            }
        }
        let mut st = self.shared.borrow_mut();
        let mut ls = self.loop_state.borrow_mut();
        let now = (st.checkpoints.count, st.store.cache_loads());
        if st.loading > 0 {
            return; // a request is filling the cache: evicting now could undo its loads
        }
        let after_checkpoint = now.0 != ls.evicted_at.0;
        let after_loads =
            now.1 != ls.evicted_at.1 && ls.last_eviction.elapsed() >= EVICT_AFTER_LOADS;
        if after_checkpoint || after_loads {
            st.store.evict(budget);
            ls.evicted_at = now;
            ls.last_eviction = Instant::now();
        }
    }

    /// Whether a durable shard should checkpoint now: enough changed data, or changes older
    /// than the interval (openraft itself snapshots every `snapshot_count` entries).
    fn checkpoint_due(&self) -> bool {
        let (Some(storage), st) = (&self.config.storage, self.shared.borrow()) else {
            return false;
        };
        if st.checkpoints.running || st.failure.is_some() {
            return false;
        }
        let pending = st.store.pending_changes();
        if pending.changes == 0 {
            return false;
        }
        let since = st.checkpoints.last_at.unwrap_or(st.started).elapsed();
        pending.payload_bytes >= storage.checkpoint_bytes || since >= storage.checkpoint_interval
    }
}

/// How often a follower of shard 0 asks its peers whether it is still a member.
const REMOVAL_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// How long one peer may take to answer that.
const REMOVAL_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// The compaction pass waits while this many changes wait for a checkpoint.
const COMPACTION_PENDING_MAX: usize = 50_000;
/// Loads alone (no checkpoint) trigger an eviction at most this often.
const EVICT_AFTER_LOADS: Duration = Duration::from_secs(1);

async fn housekeeping_loop(core: Rc<Core>) {
    loop {
        let wait = core.next_wakeup();
        <GlommioRuntime as openraft::AsyncRuntime>::sleep(wait).await;
        core.housekeeping().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ballast_engine::{Compare, CompareResult, CompareTarget, CompareValue};
    use bytes::Bytes;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn writes_go_through_the_log_and_reads_do_not() {
        let read_txn = TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal,
                target: CompareTarget::Version,
                key: b("k"),
                range_end: Bytes::new(),
                target_union: Some(CompareValue::Version(0)),
            }],
            success: vec![RequestOp::Range(RangeRequest::default())],
            failure: vec![RequestOp::Txn(TxnRequest::default())],
        };
        let mut write_txn = read_txn.clone();
        write_txn.failure = vec![RequestOp::Txn(TxnRequest {
            success: vec![RequestOp::DeleteRange(DeleteRangeRequest::default())],
            ..TxnRequest::default()
        })];
        let serializable_txn = TxnRequest {
            success: vec![RequestOp::Range(RangeRequest {
                serializable: true,
                ..RangeRequest::default()
            })],
            ..TxnRequest::default()
        };
        assert!(matches!(
            route(Request::Txn(write_txn.clone())),
            Route::Write(LogCommand::Txn(_))
        ));
        assert!(matches!(
            route(Request::Txn(read_txn.clone())),
            Route::LinearizableRead(_)
        ));
        assert!(matches!(
            route(Request::Txn(serializable_txn.clone())),
            Route::Local(_)
        ));
        assert!(matches!(
            route(Request::Range(RangeRequest::default())),
            Route::LinearizableRead(_)
        ));
        assert!(matches!(
            route(Request::Range(RangeRequest {
                serializable: true,
                ..RangeRequest::default()
            })),
            Route::Local(_)
        ));
        assert!(matches!(
            route(Request::LeaseKeepAlive { id: 1 }),
            Route::LeaderLocal(_)
        ));
        // A follower serves itself exactly the reads `route` makes linearizable.
        for request in [
            Request::Range(RangeRequest::default()),
            Request::Range(RangeRequest {
                serializable: true,
                ..RangeRequest::default()
            }),
            Request::Txn(TxnRequest::default()),
            Request::Txn(read_txn),
            Request::Txn(write_txn),
            Request::Txn(serializable_txn),
            Request::Alarm {
                action: AlarmAction::Get,
                member: AlarmMember::default(),
            },
            Request::Alarm {
                action: AlarmAction::Activate,
                member: AlarmMember::default(),
            },
            Request::LeaseKeepAlive { id: 1 },
            Request::LeaseTimeToLive { id: 1, keys: false },
            Request::LeaseLeases,
            Request::Status,
            Request::Put(PutRequest::default()),
        ] {
            let linearizable = matches!(route(request.clone()), Route::LinearizableRead(_));
            assert_eq!(linearizable_read(&request), linearizable, "{request:?}");
        }
        for write in [
            Request::Put(PutRequest::default()),
            Request::DeleteRange(DeleteRangeRequest::default()),
            Request::Compact { revision: 1 },
            Request::LeaseGrant { id: 0, ttl: 5 },
            Request::LeaseRevoke { id: 1 },
            Request::Advance { to: 10 },
        ] {
            assert!(matches!(route(write), Route::Write(_)));
        }
    }
}
