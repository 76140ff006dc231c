//! One shard's thread: the only owner of its `Store` and watcher registry. Commands arrive on a
//! bounded channel and are applied one at a time in arrival order, so every write takes the next
//! revision and every read sees all writes acknowledged before it. Lease expiry and watcher
//! catch-up run on the same thread between commands, driven by a tick.
//!
//! The shard never blocks on a client: watch messages are `try_send`, and a command's reply is a
//! oneshot whose receiver may already be gone.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ballast_engine::{
    DeleteRangeRequest, DeleteRangeResponse, Error as EngineError, LeaseId, PutRequest,
    PutResponse, RangeRequest, RangeResponse, Revision, Store, TxnRequest, TxnResponse,
};
use tokio::sync::{mpsc, oneshot};

use crate::watchers::{Registry, StreamId, WatchCreate, WatchMessage};

/// Commands queued for one shard at most; a full queue makes callers wait (backpressure).
pub const COMMAND_QUEUE_MAX: usize = 4096;

#[derive(Clone, Debug)]
pub struct ShardConfig {
    pub min_lease_ttl_secs: i64,
    /// How often watchers that asked for it get a progress notification (etcd's
    /// `--experimental-watch-progress-notify-interval`, 10 minutes by default).
    pub progress_notify_interval: Duration,
    /// How often slow watchers are caught up and leases checked when nothing else happens.
    pub tick: Duration,
}

impl Default for ShardConfig {
    fn default() -> Self {
        ShardConfig {
            min_lease_ttl_secs: 2,
            progress_notify_interval: Duration::from_secs(600),
            tick: Duration::from_millis(50),
        }
    }
}

/// A request for the shard. Writes (`Put`, `DeleteRange`, `Txn` with writes, `Compact`,
/// `LeaseGrant`, `LeaseRevoke`) are what a Raft log will carry.
#[derive(Debug)]
pub enum Request {
    Range(RangeRequest),
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact { revision: Revision },
    LeaseGrant { id: LeaseId, ttl: i64 },
    LeaseRevoke { id: LeaseId },
    LeaseKeepAlive { id: LeaseId },
    LeaseTimeToLive { id: LeaseId, keys: bool },
    LeaseLeases,
    HashKv { revision: Revision },
    Hash,
    Status,
}

#[derive(Debug)]
pub enum Response {
    Range(RangeResponse),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compact,
    LeaseGrant { id: LeaseId, ttl: i64 },
    LeaseRevoke,
    LeaseKeepAlive { ttl: i64 },
    LeaseTimeToLive(ballast_engine::LeaseTimeToLive),
    LeaseLeases(Vec<LeaseId>),
    HashKv(ballast_engine::HashKv),
    Hash(u32),
    Status(ShardStatus),
}

/// A response with the store revision for its header.
#[derive(Debug)]
pub struct Reply {
    pub revision: Revision,
    pub response: Response,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardStatus {
    pub revision: Revision,
    pub compact_revision: Revision,
    pub size_bytes: u64,
    /// Commands that changed state, in apply order (what a Raft index will count).
    pub applied_index: u64,
    pub watchers: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShardError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("shard stopped")]
    Stopped,
}

enum Command {
    Call(Request, oneshot::Sender<Result<Reply, EngineError>>),
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
}

/// The way into a shard: cheap to clone, usable from any thread or async runtime.
#[derive(Clone)]
pub struct ShardHandle {
    tx: flume::Sender<Command>,
}

impl ShardHandle {
    /// Starts the shard's thread. It stops when every handle is dropped.
    pub fn spawn(
        name: &str,
        config: ShardConfig,
    ) -> std::io::Result<(ShardHandle, JoinHandle<()>)> {
        let (tx, rx) = flume::bounded(COMMAND_QUEUE_MAX);
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || ShardLoop::new(config).run(rx))?;
        Ok((ShardHandle { tx }, thread))
    }

    pub async fn call(&self, request: Request) -> Result<Reply, ShardError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        self.tx
            .send_async(Command::Call(request, reply_tx))
            .await
            .map_err(|_| ShardError::Stopped)?;
        reply_rx
            .await
            .map_err(|_| ShardError::Stopped)?
            .map_err(ShardError::Engine)
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

    /// Tells the shard a watch stream is gone (best effort: a stopped shard has no watchers).
    pub fn stream_closed(&self, stream: StreamId) {
        let _ = self.tx.try_send(Command::StreamClosed(stream));
    }
}

struct ShardLoop {
    store: Store,
    watchers: Registry,
    config: ShardConfig,
    started: Instant,
    applied_index: u64,
    next_progress: Instant,
}

impl ShardLoop {
    fn new(config: ShardConfig) -> ShardLoop {
        let mut store = Store::new();
        store.set_min_lease_ttl(config.min_lease_ttl_secs);
        let now = Instant::now();
        ShardLoop {
            store,
            watchers: Registry::default(),
            next_progress: now + config.progress_notify_interval,
            config,
            started: now,
            applied_index: 0,
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn run(mut self, rx: flume::Receiver<Command>) {
        loop {
            let timeout = self.next_wakeup();
            match rx.recv_timeout(timeout) {
                Ok(cmd) => self.handle(cmd),
                Err(flume::RecvTimeoutError::Timeout) => {}
                Err(flume::RecvTimeoutError::Disconnected) => return,
            }
            self.housekeeping();
        }
    }

    fn next_wakeup(&self) -> Duration {
        let mut wait = self.config.tick;
        if let Some(deadline) = self.store.next_lease_deadline_ms() {
            let now = self.now_ms();
            wait = wait.min(Duration::from_millis(deadline.saturating_sub(now)));
        }
        wait
    }

    fn housekeeping(&mut self) {
        let now = self.now_ms();
        for id in self.store.expired_leases(now) {
            match self.store.lease_revoke(id) {
                Ok(applied) => {
                    self.applied_index += 1;
                    self.watchers.notify(applied.revision, &applied.events);
                }
                Err(err) => tracing::warn!(lease_id = id, %err, "revoking an expired lease"),
            }
        }
        self.watchers.sync(&self.store);
        if Instant::now() >= self.next_progress {
            self.watchers.notify_progress(&self.store);
            self.next_progress = Instant::now() + self.config.progress_notify_interval;
        }
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Call(request, reply) => {
                let result = self.apply(request);
                let _ = reply.send(result);
            }
            Command::WatchCreate(create) => self.watchers.create(&self.store, create),
            Command::WatchCancel {
                stream,
                watch_id,
                done,
            } => {
                self.watchers.cancel(stream, watch_id);
                let _ = done.send(self.store.revision());
            }
            Command::WatchProgress { stream, sender } => {
                self.watchers
                    .request_progress(&self.store, stream, Some(sender));
            }
            Command::StreamClosed(stream) => self.watchers.close_stream(stream),
        }
    }

    fn apply(&mut self, request: Request) -> Result<Reply, EngineError> {
        let now = self.now_ms();
        let store = &mut self.store;
        let (revision, response) = match request {
            Request::Range(r) => {
                let response = store.range(&r)?;
                (store.revision(), Response::Range(response))
            }
            Request::Put(r) => {
                let a = store.put(&r)?;
                self.applied_index += 1;
                self.watchers.notify(a.revision, &a.events);
                (a.revision, Response::Put(a.response))
            }
            Request::DeleteRange(r) => {
                let a = store.delete_range(&r)?;
                self.applied_index += 1;
                self.watchers.notify(a.revision, &a.events);
                (a.revision, Response::DeleteRange(a.response))
            }
            Request::Txn(r) => {
                let a = store.txn(&r)?;
                self.applied_index += 1;
                self.watchers.notify(a.revision, &a.events);
                (a.revision, Response::Txn(a.response))
            }
            Request::Compact { revision } => {
                let a = store.compact(revision)?;
                self.applied_index += 1;
                (a.revision, Response::Compact)
            }
            Request::LeaseGrant { id, ttl } => {
                let (id, ttl) = store.lease_grant(id, ttl, now)?;
                self.applied_index += 1;
                (store.revision(), Response::LeaseGrant { id, ttl })
            }
            Request::LeaseRevoke { id } => {
                let a = store.lease_revoke(id)?;
                self.applied_index += 1;
                self.watchers.notify(a.revision, &a.events);
                (a.revision, Response::LeaseRevoke)
            }
            Request::LeaseKeepAlive { id } => {
                let ttl = store.lease_keep_alive(id, now)?;
                (store.revision(), Response::LeaseKeepAlive { ttl })
            }
            Request::LeaseTimeToLive { id, keys } => {
                let ttl = store.lease_time_to_live(id, keys, now)?;
                (store.revision(), Response::LeaseTimeToLive(ttl))
            }
            Request::LeaseLeases => (store.revision(), Response::LeaseLeases(store.leases())),
            Request::HashKv { revision } => {
                let h = store.hash_kv(revision)?;
                (store.revision(), Response::HashKv(h))
            }
            Request::Hash => (store.revision(), Response::Hash(store.hash())),
            Request::Status => {
                let status = ShardStatus {
                    revision: store.revision(),
                    compact_revision: store.compact_revision(),
                    size_bytes: store.approximate_size_bytes(),
                    applied_index: self.applied_index,
                    watchers: self.watchers.len(),
                };
                (status.revision, Response::Status(status))
            }
        };
        Ok(Reply { revision, response })
    }
}
