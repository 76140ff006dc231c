//! Sending a shard's snapshot to a follower whose log is behind the leader's purged log
//! (openraft's `full_snapshot`), and receiving one.
//!
//! The snapshot's content is the engine's transfer stream (`ballast_engine::mvcc::image::
//! transfer`: bounded, crc32c-checked chunks of the store's image entries). The leader
//! exports it from the snapshot itself: an in-memory shard's snapshot is a copy of its store,
//! a durable shard's is its last checkpoint, read from the page log a batch at a time (the
//! export checks that the checkpoint it reads is the one the snapshot names; after a newer
//! checkpoint the transfer fails and openraft sends the newer snapshot).
//!
//! Each chunk goes as one [`PeerKind::Snapshot`] message (`wire::encode_snapshot_chunk`):
//! a transfer id, the chunk's number, the leader's vote and the snapshot's meta on chunk 0,
//! a done flag on the last. The follower answers each one: "next" until the last, then the
//! vote openraft's `install_full_snapshot` answered with. The leader sends the next chunk
//! only after the previous one is answered, each within the RPC timeout, and stops as soon as
//! openraft cancels the transfer; so at most one chunk (a few MiB) is in flight and in memory
//! on either side.
//!
//! The follower keeps one transfer at a time ([`Incoming`], in the shard state); chunk 0 of
//! another transfer replaces it, anything else out of order is refused (the leader then
//! starts over). Chunks go into a new store image, never the live one: a new in-memory store,
//! or on a durable shard a new page log beside the live one (`durable.rs`), committed only by
//! the last chunk. So a crash or a failed transfer leaves the old state serving; the switch
//! happens in the state machine's `install_snapshot` (`state_machine.rs`). A failed write of
//! the incoming image is the transfer's failure, not the shard's: the live state is intact.
//!
//! Chunk 0's meta is the checkpoint facts (`durable.rs`), alarm table included: a durable
//! sender sends the table of its last committed checkpoint, which is the snapshot's or a
//! newer one (harmless: `alarms.rs` says why); an in-memory sender sends none. The auth
//! state (`auth.rs`) travels beside it in the same way; each state names the last auth entry
//! it holds, so entries replayed after a newer state are skipped.
//!
//! Invariants: a snapshot is installed only whole (every chunk in order, the stream's own end
//! and counts checked); the data sent is the state at exactly the snapshot's last log id.

use std::time::{Duration, Instant};

use ballast_engine::mvcc::image::transfer::{StoreExport, StoreImport, TransferError};
use bytes::Bytes;
use futures::future::{select, Either};
use openraft::async_runtime::WatchReceiver;
use openraft::error::{NetworkError, StreamingError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::SnapshotResponse;

use crate::alarms::AlarmTable;
use crate::auth::AuthState;
use crate::durable::encode_app;
use crate::log_store::LocalFuture;
use crate::network::{CancelTransfer, ChannelTransport, PeerFailure, PeerKind, ShardSnapshot};
use crate::state_machine::{Shared, SnapshotData};
use crate::types::{NodeId, Raft, ShardId, ShardRaft, SnapshotMeta, Vote};
use crate::wire::{self, SnapshotAnswer, SnapshotChunk};

/// Chunks of a snapshot, in order.
pub trait ChunkSource {
    /// The next chunk, `None` after the last.
    fn next_chunk(&mut self) -> LocalFuture<Result<Option<Bytes>, TransferError>>;
}

/// Where a follower writes an incoming snapshot.
pub trait ChunkSink {
    fn push(&mut self, chunk: Bytes) -> LocalFuture<Result<(), TransferError>>;
    /// Commits what arrived as the state after backend log index `applied_index` (1-based),
    /// with `app` (the checkpoint facts) saved beside.
    fn finish(
        self: Box<Self>,
        applied_index: u64,
        app: Bytes,
    ) -> LocalFuture<Result<(), TransferError>>;
}

struct StoreChunks(StoreExport);

impl ChunkSource for StoreChunks {
    fn next_chunk(&mut self) -> LocalFuture<Result<Option<Bytes>, TransferError>> {
        let next = self.0.next_chunk();
        Box::pin(std::future::ready(Ok(next)))
    }
}

/// Why a snapshot could not be read for sending.
fn unreadable(target: NodeId, what: impl std::fmt::Display) -> StreamingError<ShardRaft> {
    NetworkError::from_string(format!(
        "snapshot for node {target:x} could not be read: {what}"
    ))
    .into()
}

/// The chunks of `snapshot`'s data.
fn export(
    target: NodeId,
    snapshot: ShardSnapshot,
) -> Result<Box<dyn ChunkSource>, StreamingError<ShardRaft>> {
    match snapshot.snapshot {
        SnapshotData::Store(store) => Ok(Box::new(StoreChunks(StoreExport::new(store)))),
        SnapshotData::Checkpoint(image) => {
            let want = snapshot.meta.last_log_id.map_or(0, |id| id.index + 1);
            image.0.export(want).map_err(|e| unreadable(target, e))
        }
        SnapshotData::Received => Err(unreadable(
            target,
            "a snapshot being installed is not sent on",
        )),
    }
}

/// A number naming one transfer (unique enough: time and a counter).
fn transfer_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ NEXT.fetch_add(1, Ordering::Relaxed).rotate_left(48)
}

/// Sends `snapshot` to `target` (at `addr`) chunk by chunk and returns its answer (see the
/// module comment). Fails when a chunk gets no answer in time or is refused (openraft retries
/// later, from chunk 0), or with `Closed` when `cancel` resolves first.
#[allow(clippy::too_many_arguments)]
pub async fn send(
    channel: ChannelTransport,
    addr: String,
    shard: ShardId,
    target: NodeId,
    vote: Vote,
    snapshot: ShardSnapshot,
    mut cancel: CancelTransfer,
    option: RPCOption,
) -> Result<SnapshotResponse<ShardRaft>, StreamingError<ShardRaft>> {
    let started = Instant::now();
    let meta = snapshot.meta.clone();
    let (alarms, auth) = match &snapshot.snapshot {
        SnapshotData::Checkpoint(image) => image
            .0
            .committed_alarms()
            .await
            .map_err(|e| unreadable(target, e))?,
        _ => Default::default(),
    };
    let mut source = export(target, snapshot)?;
    let transfer = transfer_id();
    let meta_bytes = encode_app(
        meta.last_log_id.as_ref(),
        &meta.last_membership,
        &alarms,
        &auth,
    );
    let read = |e: TransferError| unreadable(target, e);
    let mut chunk = source.next_chunk().await.map_err(read)?;
    let mut seq = 0u64;
    let mut bytes_sent = 0u64;
    while let Some(data) = chunk {
        // One ahead, to flag the last chunk (at most two chunks in memory).
        let next = source.next_chunk().await.map_err(read)?;
        bytes_sent += data.len() as u64;
        let body = wire::encode_snapshot_chunk(&SnapshotChunk {
            transfer,
            seq,
            first: (seq == 0).then(|| (vote, meta_bytes.clone())),
            done: next.is_none(),
            data,
        });
        let sending = channel.send(&addr, shard, PeerKind::Snapshot, body, option.hard_ttl());
        let answer = match select(Box::pin(sending), cancel.as_mut()).await {
            Either::Left((answer, _)) => answer,
            Either::Right((closed, _)) => return Err(StreamingError::Closed(closed)),
        };
        let answer = answer.map_err(|f| match f {
            PeerFailure::Refused { .. } => NetworkError::from_string(format!(
                "node {target:x} refused snapshot chunk {seq}: {f}"
            ))
            .into(),
            _ => StreamingError::from(Unreachable::<ShardRaft>::from_string(format!(
                "node {target:x}: snapshot chunk {seq}: {f}"
            ))),
        })?;
        match wire::decode_snapshot_answer(&answer).map_err(|e| {
            StreamingError::from(NetworkError::<ShardRaft>::from_string(format!(
                "node {target:x} answered snapshot chunk {seq} with something unreadable: {e}"
            )))
        })? {
            SnapshotAnswer::Next if next.is_some() => {}
            SnapshotAnswer::Next => {
                return Err(NetworkError::from_string(format!(
                    "node {target:x} asked for more after the last snapshot chunk"
                ))
                .into())
            }
            // Done early: the follower refused the transfer (a higher vote).
            SnapshotAnswer::Done(vote) => {
                tracing::info!(
                    %shard,
                    target = format_args!("{target:x}"),
                    chunks = seq + 1,
                    bytes = bytes_sent,
                    ms = started.elapsed().as_millis() as u64,
                    last_log_id = ?meta.last_log_id,
                    "snapshot sent"
                );
                return Ok(SnapshotResponse { vote });
            }
        }
        chunk = next;
        seq += 1;
    }
    Err(NetworkError::from_string(format!(
        "node {target:x} did not answer the last snapshot chunk with its vote"
    ))
    .into())
}

/// Where an incoming snapshot goes.
enum Sink {
    Memory(StoreImport),
    Image(Box<dyn ChunkSink>),
}

/// The snapshot a follower is receiving.
pub struct Incoming {
    transfer: u64,
    vote: Vote,
    meta: SnapshotMeta,
    alarms: AlarmTable,
    auth: AuthState,
    next_seq: u64,
    sink: Option<Sink>,
}

fn refuse(why: impl std::fmt::Display) -> String {
    format!("snapshot refused: {why}")
}

/// Handles one [`PeerKind::Snapshot`] message on the follower (see the module comment):
/// the answer, or why the chunk was refused.
pub async fn receive(raft: &Raft, shared: &Shared, body: Bytes) -> Result<Bytes, String> {
    let msg = wire::decode_snapshot_chunk(&body).map_err(refuse)?;
    let mut incoming = match &msg.first {
        Some((vote, meta_bytes)) => {
            // A vote below ours would be refused at install: say so now, before any data.
            let ours = raft.metrics().borrow_watched().vote;
            if vote < &ours {
                return Ok(wire::encode_snapshot_answer(&SnapshotAnswer::Done(ours)));
            }
            let facts =
                crate::durable::decode_app(meta_bytes).ok_or_else(|| refuse("unreadable meta"))?;
            let (last_log_id, last_membership) = (facts.applied, facts.membership);
            if last_log_id.is_none() {
                return Err(refuse("a snapshot without a last log id"));
            }
            let durable = shared.borrow().durable.clone();
            let sink = match durable {
                None => Sink::Memory(StoreImport::new()),
                Some(d) => Sink::Image(d.receive().await.map_err(refuse)?),
            };
            Incoming {
                transfer: msg.transfer,
                vote: *vote,
                meta: SnapshotMeta {
                    last_log_id,
                    last_membership,
                },
                alarms: facts.alarms,
                auth: facts.auth,
                next_seq: 0,
                sink: Some(sink),
            }
        }
        None => {
            let current = shared.borrow_mut().incoming.take();
            match current {
                Some(c) if c.transfer == msg.transfer => c,
                other => {
                    shared.borrow_mut().incoming = other;
                    return Err(refuse(format!(
                        "chunk {} of transfer {:x}, which is not the one in progress",
                        msg.seq, msg.transfer
                    )));
                }
            }
        }
    };
    if incoming.next_seq != msg.seq {
        return Err(refuse(format!(
            "chunk {} where chunk {} was expected",
            msg.seq, incoming.next_seq
        )));
    }
    let mut sink = incoming
        .sink
        .take()
        .expect("a transfer in progress has its sink");
    match &mut sink {
        Sink::Memory(import) => import.push(&msg.data).map_err(refuse)?,
        Sink::Image(image) => image.push(msg.data.clone()).await.map_err(refuse)?,
    }
    incoming.next_seq += 1;
    if !msg.done {
        incoming.sink = Some(sink);
        // Another transfer may have begun meanwhile (a chunk 0 while this one was written);
        // the newer one stays.
        let mut st = shared.borrow_mut();
        if st.incoming.is_none() {
            st.incoming = Some(incoming);
        }
        return Ok(wire::encode_snapshot_answer(&SnapshotAnswer::Next));
    }
    let Incoming {
        vote,
        meta,
        alarms,
        auth,
        ..
    } = incoming;
    let applied_index = meta.last_log_id.map_or(0, |id| id.index + 1);
    let data = match sink {
        Sink::Memory(import) => {
            let now_ms = shared.borrow().now_ms();
            SnapshotData::Store(Box::new(import.finish(now_ms).map_err(refuse)?))
        }
        Sink::Image(image) => {
            let app = crate::durable::encode_installed_app(
                meta.last_log_id.as_ref(),
                &meta.last_membership,
                &alarms,
                &auth,
            );
            image.finish(applied_index, app).await.map_err(refuse)?;
            SnapshotData::Received
        }
    };
    let started = Instant::now();
    let snapshot = ShardSnapshot {
        meta: meta.clone(),
        snapshot: data,
    };
    // The state machine's install takes the table with the snapshot.
    shared.borrow_mut().received_alarms = Some((alarms, auth));
    let installed = raft.install_full_snapshot(vote, snapshot).await;
    // Not installed (openraft keeps a newer state): the table goes with the snapshot.
    shared.borrow_mut().received_alarms = None;
    let response = installed.map_err(|e| format!("installing the snapshot: {e}"))?;
    // openraft installs only a snapshot newer than what this replica committed; a received
    // image it did not take is removed (a restart would otherwise find it committed).
    let durable = shared.borrow().durable.clone();
    if let Some(d) = durable {
        d.discard_received().await;
    }
    tracing::info!(
        last_log_id = ?meta.last_log_id,
        install_ms = started.elapsed().as_millis() as u64,
        "snapshot received"
    );
    Ok(wire::encode_snapshot_answer(&SnapshotAnswer::Done(
        response.vote,
    )))
}

/// How long an install waits between looks at a running checkpoint.
pub const CHECKPOINT_WAIT: Duration = Duration::from_millis(2);
