//! A client watch over several shards: one sub-watcher per shard, merged by one task into the
//! messages one shard would have sent (design.md §5: "a watch over several shards merges their
//! streams in revision order, releasing events only up to the lowest progress among them").
//!
//! Each part is registered in its shard under its own stream id ([`next_stream_id`]) with its
//! own bounded channel; the merge task reads them and forwards to the client stream's message
//! channel, so the stream handles a merged watcher like any other. Invariants:
//! - `Created` first, once every part has created its own; its revision is the highest.
//! - Events in revision order (two shards may both have a revision `r`: shard order breaks the
//!   tie), never twice, none missed. The *progress* of a part is the highest revision up to
//!   which it has delivered everything: from its events, its progress notifications, and its
//!   `Created` (the current revision when the watch starts now, `start_revision - 1` when it
//!   starts in the past). An event of revision `r` is released only when every part's progress
//!   is at least `r`, so no later message of a slower part can carry an older event.
//! - A watch that starts now: each part delivers what its shard applies after the part was
//!   registered. A shard behind the others (revisions are aligned only every
//!   `router::ALIGN_INTERVAL`) may so deliver events at or below the `Created` revision; they
//!   happened after the create and are forwarded, not dropped (dropping would lose them).
//! - Events held for a lagging part make the merger *poke* it: `Advance` its shard to the
//!   highest held revision, then ask the shard for the sub-stream's progress (answered once the
//!   part is synced, with a revision at least that high). One poke per part in flight, retried
//!   after [`POKE_RETRY`] while the part still lags.
//! - Bounded: each part's channel holds [`PART_MESSAGES_MAX`] messages (a full channel makes the
//!   shard catch the part up from history later, as for any slow watcher); a part holding
//!   [`PART_HELD_PAUSE`] events is not read until they are released (it is never the lowest
//!   part, so this cannot stall the merge); a merger that still holds more than
//!   [`HELD_EVENTS_MAX`] events (a single write carrying thousands of events while another shard
//!   lags) cancels the watch with [`HELD_EVENTS_REASON`] instead of growing.
//! - At most one `Canceled`: a compaction cancel of any part cancels every part and is forwarded
//!   (after the events already releasable); a stopped shard cancels the watch with
//!   [`SHARD_STOPPED_REASON`]. A cancel by the client is [`MergedWatch::cancel`]; dropping the
//!   [`MergedWatch`] (the client stream closed) ends the task, which closes every sub-stream.
//! - Periodic progress notifications (`progress_notify`) are forwarded once every part has sent
//!   one since the last, with the lowest progress, after every event at or below it.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, OnceLock};
use std::task::Poll;
use std::time::Duration;

use ballast_consensus::{ShardError, StreamId, WatchCreate, WatchMessage};
use ballast_engine::watch::WatchFilter;
use ballast_engine::{Event, Revision};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::watch::next_stream_id;
use crate::partition::ShardSet;
use crate::router::{RouteError, Router};

/// Messages buffered from one part's shard.
pub const PART_MESSAGES_MAX: usize = 256;
/// A part holding this many events is not read until some are released.
pub const PART_HELD_PAUSE: usize = 1_000;
/// A merged watcher holding more events than this is canceled.
pub const HELD_EVENTS_MAX: usize = 10_000;
/// How long a poke may stay unanswered before the lagging part is poked again.
pub const POKE_RETRY: Duration = Duration::from_millis(30);
/// Requests to one merger (stream-wide progress) waiting at once.
const CONTROL_MAX: usize = 4;

/// Cancel reason of a merged watcher that held more than [`HELD_EVENTS_MAX`] events.
pub const HELD_EVENTS_REASON: &str =
    "ballast: watch canceled: more than 10000 events held while waiting for a lagging shard; \
     watch again from the next revision";
/// Cancel reason of a merged watcher one of whose shards stopped.
pub const SHARD_STOPPED_REASON: &str = "ballast: watch canceled: a shard it spans stopped";
const _: () = assert!(
    HELD_EVENTS_MAX == 10_000,
    "HELD_EVENTS_REASON names the bound"
);

/// What a merged watch is asked to watch.
#[derive(Clone, Debug)]
pub struct MergedSpec {
    pub watch_id: i64,
    pub filter: WatchFilter,
    pub start_revision: Revision,
    pub progress_notify: bool,
}

/// One part: a watcher in one shard, under its own stream id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartId {
    pub shard: usize,
    pub stream: StreamId,
}

enum Control {
    /// Answer, once everything at or below `to` was forwarded, with the merged progress.
    Progress {
        to: Revision,
        done: oneshot::Sender<Revision>,
    },
}

/// The client stream's handle on a merged watcher. Dropping it ends the merge task at once:
/// it forwards nothing more (a message it was waiting to put in a full stream channel included).
pub struct MergedWatch {
    watch_id: i64,
    parts: Vec<PartId>,
    control: mpsc::Sender<Control>,
    reason: Arc<OnceLock<&'static str>>,
    /// Dropped to stop the task (progress handles may still hold `control` open).
    _stop: oneshot::Sender<()>,
}
/// A handle to ask one merger for its progress (see [`stream_progress`]).
#[derive(Clone)]
pub struct ProgressHandle(mpsc::Sender<Control>);

impl MergedWatch {
    /// Registers one part per shard of `shards` and starts the merge task, which forwards to
    /// `out` as if one shard sent the messages.
    pub async fn start(
        router: &Router,
        shards: ShardSet,
        spec: MergedSpec,
        out: mpsc::Sender<WatchMessage>,
    ) -> Result<MergedWatch, ShardError> {
        let mut parts = Vec::with_capacity(shards.len());
        let mut ids = Vec::with_capacity(shards.len());
        for shard in shards.iter() {
            let (tx, rx) = mpsc::channel(PART_MESSAGES_MAX);
            let id = PartId {
                shard,
                stream: next_stream_id(),
            };
            let created = router
                .shard(shard)
                .watch_create(WatchCreate {
                    stream: id.stream,
                    watch_id: spec.watch_id,
                    filter: spec.filter.clone(),
                    start_revision: spec.start_revision,
                    progress_notify: spec.progress_notify,
                    sender: tx.clone(),
                })
                .await;
            if let Err(err) = created {
                for p in &ids {
                    close_part(router, *p);
                }
                return Err(err);
            }
            ids.push(id);
            parts.push(Part::new(id, rx, tx.downgrade()));
        }
        let (control, control_rx) = mpsc::channel(CONTROL_MAX);
        let reason = Arc::new(OnceLock::new());
        let spec_watch_id = spec.watch_id;
        let (stop, stop_rx) = oneshot::channel();
        let merger = Merger {
            router: router.clone(),
            spec,
            parts,
            out,
            control: control_rx,
            stop: stop_rx,
            reason: reason.clone(),
            created_sent: None,
            last_header: 0,
            next_seq: 0,
            waiting: Vec::new(),
            pending_cancel: None,
            rotate: 0,
        };
        tokio::spawn(merger.run());
        Ok(MergedWatch {
            watch_id: spec_watch_id,
            parts: ids,
            control,
            reason,
            _stop: stop,
        })
    }

    pub fn parts(&self) -> &[PartId] {
        &self.parts
    }

    /// Why the merger canceled the watch on its own (not a compaction), once it did.
    pub fn cancel_reason(&self) -> Option<&'static str> {
        self.reason.get().copied()
    }

    pub fn progress_handle(&self) -> ProgressHandle {
        ProgressHandle(self.control.clone())
    }

    /// A client's cancel: cancels every part; answers with the highest revision at which a
    /// part stopped. Messages the task forwards afterwards are for a watch id the stream has
    /// forgotten.
    pub async fn cancel(self, router: &Router) -> Result<Revision, ShardError> {
        let MergedWatch {
            watch_id,
            parts,
            _stop,
            ..
        } = self;
        drop(_stop);
        let calls = parts
            .iter()
            .map(|p| router.shard(p.shard).watch_cancel(p.stream, watch_id));
        let mut revision = 0;
        for r in futures::future::join_all(calls).await {
            revision = revision.max(r?);
        }
        Ok(revision)
    }
}

impl ProgressHandle {
    /// Waits until the merger forwarded every event at or below `to`; answers its progress
    /// (at least `to`), or `None` when the merged watch ended meanwhile.
    async fn progress(&self, to: Revision) -> Option<Revision> {
        let (done, wait) = oneshot::channel();
        self.0.send(Control::Progress { to, done }).await.ok()?;
        wait.await.ok()
    }
}

/// A client's progress request on a stream when the server runs several shards: advances every
/// shard to the highest revision `T` any has answered with, asks every shard for the stream's
/// progress (a shard answers once the stream's watchers in it are synced, with its revision,
/// at least `T`), and asks every merged watcher of the stream for its progress (answered once
/// it has forwarded every event up to at least `T`). Answers the lowest of all: no event of any
/// watcher of the stream at or below it is still to come, provided the caller forwards what
/// the stream's channel holds before it answers the client. A merged watcher that ended
/// meanwhile is left out.
pub async fn stream_progress(
    router: &Router,
    stream: StreamId,
    merged: Vec<ProgressHandle>,
) -> Result<Revision, RouteError> {
    let shards = router.shard_count();
    let to = router.max_revision();
    router.advance(ShardSet::all(shards), to).await?;
    let (tx, mut rx) = mpsc::channel(shards);
    for shard in 0..shards {
        router
            .shard(shard)
            .watch_progress(stream, tx.clone())
            .await
            .map_err(|source| RouteError::Shard { shard, source })?;
    }
    drop(tx);
    let mut lowest = Revision::MAX;
    for _ in 0..shards {
        match rx.recv().await {
            Some(WatchMessage::Progress { revision, .. }) => lowest = lowest.min(revision),
            Some(_) | None => {
                return Err(RouteError::Shard {
                    shard: 0,
                    source: ShardError::Stopped,
                })
            }
        }
    }
    let asks = merged.iter().map(|m| m.progress(to));
    for revision in futures::future::join_all(asks).await.into_iter().flatten() {
        lowest = lowest.min(revision);
    }
    Ok(lowest)
}

/// Closes one part's sub-stream in its shard (best effort, as for a closed client stream).
fn close_part(router: &Router, part: PartId) {
    router.shard(part.shard).stream_closed(part.stream);
}

/// Events of one revision from one part, as they arrived.
struct Group {
    revision: Revision,
    /// The header revision of the message they came in.
    header: Revision,
    /// Which message they came in: groups of one message are forwarded together.
    seq: u64,
    events: Vec<Event>,
}

struct Part {
    id: PartId,
    rx: mpsc::Receiver<WatchMessage>,
    /// For pokes; weak, so the channel ends when the shard drops the watcher (it stopped).
    sender: mpsc::WeakSender<WatchMessage>,
    /// The revision of the part's own `Created`, once it came.
    created: Option<Revision>,
    /// Everything at or below this revision has been received from the part.
    progress: Revision,
    /// Received, not yet forwarded; in revision order.
    held: VecDeque<Group>,
    held_events: usize,
    /// When the part was last poked, until its answer comes.
    poke_sent: Option<Instant>,
    /// A poke task is still handing its requests to the shard.
    poke_in_flight: Arc<std::sync::atomic::AtomicBool>,
    /// Sent a periodic progress notification since the merger forwarded the last one.
    notified: bool,
}

impl Part {
    fn new(
        id: PartId,
        rx: mpsc::Receiver<WatchMessage>,
        sender: mpsc::WeakSender<WatchMessage>,
    ) -> Part {
        Part {
            id,
            rx,
            sender,
            created: None,
            progress: 0,
            held: VecDeque::new(),
            held_events: 0,
            poke_sent: None,
            poke_in_flight: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            notified: false,
        }
    }
}

/// The client stream is gone.
struct Closed;

enum Wake {
    Part(usize, Option<WatchMessage>),
    Control(Option<Control>),
    Retry,
}

struct Merger {
    router: Router,
    spec: MergedSpec,
    /// In shard order (ties between equal revisions go to the lower shard).
    parts: Vec<Part>,
    out: mpsc::Sender<WatchMessage>,
    control: mpsc::Receiver<Control>,
    /// Resolves (with an error) when the stream drops or cancels the watch.
    stop: oneshot::Receiver<()>,
    reason: Arc<OnceLock<&'static str>>,
    /// The revision of the `Created` forwarded, once it was.
    created_sent: Option<Revision>,
    /// The header revision of the last events forwarded (headers never go down).
    last_header: Revision,
    next_seq: u64,
    /// Stream-wide progress requests waiting for the merged progress to reach their revision.
    waiting: Vec<(Revision, oneshot::Sender<Revision>)>,
    /// A part was canceled (its history compacted): `(revision, compact_revision)`.
    pending_cancel: Option<(Revision, Revision)>,
    /// Which part is polled first (fairness).
    rotate: usize,
}

impl Merger {
    async fn run(mut self) {
        let _ = self.merge().await;
        for p in &self.parts {
            close_part(&self.router, p.id);
        }
    }

    /// Forwards one message; `Closed` when the stream is gone or no longer wants the watch.
    async fn send(&mut self, msg: WatchMessage) -> Result<(), Closed> {
        tokio::select! {
            sent = self.out.send(msg) => sent.map_err(|_| Closed),
            _ = &mut self.stop => Err(Closed),
        }
    }

    /// Runs until the watch ends (canceled, or the stream dropped its handle) or the stream is
    /// gone.
    async fn merge(&mut self) -> Result<(), Closed> {
        let watch_id = self.spec.watch_id;
        loop {
            if self.created_sent.is_none() && self.parts.iter().all(|p| p.created.is_some()) {
                let revision = self.highest_created();
                self.created_sent = Some(revision);
                self.send(WatchMessage::Created { watch_id, revision })
                    .await?;
            }
            if self.created_sent.is_some() {
                self.release().await?;
                if let Some((revision, compact_revision)) = self.pending_cancel {
                    self.cancel_parts().await;
                    let revision = revision.max(self.last_header);
                    return self
                        .send(WatchMessage::Canceled {
                            watch_id,
                            revision,
                            compact_revision,
                        })
                        .await;
                }
                if self.parts.iter().map(|p| p.held_events).sum::<usize>() > HELD_EVENTS_MAX {
                    return self.give_up(HELD_EVENTS_REASON).await;
                }
                self.poke();
            }
            let retry = self.retry_at();
            let wake = {
                let parts = &mut self.parts;
                let first = self.rotate;
                let only_uncreated = self.pending_cancel.is_some();
                let control = &mut self.control;
                let stop = &mut self.stop;
                tokio::select! {
                    (i, msg) = poll_fn(|cx| poll_parts(parts, first, only_uncreated, cx)) => {
                        Wake::Part(i, msg)
                    }
                    c = control.recv() => Wake::Control(c),
                    _ = stop => Wake::Control(None),
                    () = tokio::time::sleep_until(retry.unwrap_or_else(Instant::now)),
                        if retry.is_some() => Wake::Retry,
                }
            };
            self.rotate = self.rotate.wrapping_add(1);
            match wake {
                Wake::Part(i, Some(msg)) => self.on_part(i, msg),
                Wake::Part(_, None) => return self.give_up(SHARD_STOPPED_REASON).await,
                Wake::Control(Some(Control::Progress { to, done })) => {
                    self.waiting.push((to, done))
                }
                Wake::Control(None) => return Ok(()),
                Wake::Retry => {}
            }
        }
    }

    /// Cancels the watch on the merger's own account, with `reason`.
    /// The highest revision a part was created at (0 before any was).
    fn highest_created(&self) -> Revision {
        self.parts
            .iter()
            .filter_map(|p| p.created)
            .max()
            .unwrap_or(0)
    }

    async fn give_up(&mut self, reason: &'static str) -> Result<(), Closed> {
        let watch_id = self.spec.watch_id;
        let _ = self.reason.set(reason);
        self.cancel_parts().await;
        let revision = self.highest_created();
        if self.created_sent.is_none() {
            self.created_sent = Some(revision);
            self.send(WatchMessage::Created { watch_id, revision })
                .await?;
        }
        let revision = revision.max(self.last_header);
        self.send(WatchMessage::Canceled {
            watch_id,
            revision,
            compact_revision: 0,
        })
        .await
    }

    async fn cancel_parts(&self) {
        let calls = self.parts.iter().map(|p| {
            self.router
                .shard(p.id.shard)
                .watch_cancel(p.id.stream, self.spec.watch_id)
        });
        futures::future::join_all(calls).await;
    }

    fn on_part(&mut self, i: usize, msg: WatchMessage) {
        let start = self.spec.start_revision;
        let seq = self.next_seq;
        self.next_seq += 1;
        let p = &mut self.parts[i];
        match msg {
            WatchMessage::Created { revision, .. } => {
                p.created = Some(revision);
                p.progress = if start <= 0 { revision } else { start - 1 };
            }
            WatchMessage::Events {
                revision: header,
                events,
                ..
            } => {
                for e in events {
                    let revision = e.kv.mod_revision;
                    p.progress = p.progress.max(revision);
                    p.held_events += 1;
                    match p.held.back_mut() {
                        Some(g) if g.seq == seq && g.revision == revision => g.events.push(e),
                        _ => p.held.push_back(Group {
                            revision,
                            header,
                            seq,
                            events: vec![e],
                        }),
                    }
                }
            }
            WatchMessage::Canceled {
                revision,
                compact_revision,
                ..
            } => {
                if self.pending_cancel.is_none() {
                    self.pending_cancel = Some((revision, compact_revision));
                }
            }
            WatchMessage::Progress { watch_id, revision } => {
                p.progress = p.progress.max(revision);
                if watch_id == -1 {
                    p.poke_sent = None;
                } else {
                    p.notified = true;
                }
            }
        }
    }

    /// The merged progress: every event at or below it has been received from every part.
    fn bound(&self) -> Revision {
        self.parts.iter().map(|p| p.progress).min().unwrap_or(0)
    }

    /// Forwards every held event at or below the merged progress, in revision order (ties:
    /// shard order), then answers the progress requests it satisfies and forwards a periodic
    /// progress notification once every part sent one.
    async fn release(&mut self) -> Result<(), Closed> {
        if self.created_sent.is_none() {
            return Ok(());
        }
        let watch_id = self.spec.watch_id;
        let bound = self.bound();
        // (part, message seq, header, events)
        let mut batch: Option<(usize, u64, Revision, Vec<Event>)> = None;
        loop {
            let next = self
                .parts
                .iter()
                .enumerate()
                .filter_map(|(i, p)| p.held.front().map(|g| (g.revision, i)))
                .filter(|&(revision, _)| revision <= bound)
                .min();
            let Some((_, i)) = next else { break };
            let p = &mut self.parts[i];
            let g = p.held.pop_front().expect("a held group");
            p.held_events -= g.events.len();
            match &mut batch {
                Some((bi, bseq, _, events)) if *bi == i && *bseq == g.seq => {
                    events.extend(g.events);
                }
                _ => {
                    if let Some(full) = batch.take() {
                        self.forward(full, bound).await?;
                    }
                    batch = Some((i, g.seq, g.header, g.events));
                }
            }
        }
        if let Some(full) = batch.take() {
            self.forward(full, bound).await?;
        }
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|(to, _)| *to <= bound);
        self.waiting = waiting;
        for (_, done) in ready {
            let _ = done.send(bound);
        }
        if self.spec.progress_notify && self.parts.iter().all(|p| p.notified) {
            for p in &mut self.parts {
                p.notified = false;
            }
            self.send(WatchMessage::Progress {
                watch_id,
                revision: bound,
            })
            .await?;
        }
        Ok(())
    }

    /// Sends one batch of events with a header at least its newest event (the revision of the
    /// message they came in, capped at the merged progress), never below an earlier header.
    async fn forward(
        &mut self,
        (_, _, header, events): (usize, u64, Revision, Vec<Event>),
        bound: Revision,
    ) -> Result<(), Closed> {
        let revision = self.last_header.max(header.min(bound));
        self.last_header = revision;
        let watch_id = self.spec.watch_id;
        self.send(WatchMessage::Events {
            watch_id,
            revision,
            events,
        })
        .await
    }

    /// The revision every part must reach: the newest held event, or a waiting progress
    /// request's revision.
    fn target(&self) -> Revision {
        let held = self
            .parts
            .iter()
            .filter_map(|p| p.held.back().map(|g| g.revision));
        let asked = self.waiting.iter().map(|(to, _)| *to);
        held.chain(asked).max().unwrap_or(0)
    }

    /// Pokes every part below the target that has no poke outstanding (or one older than
    /// [`POKE_RETRY`]): advance its shard to the target, then ask for the part's progress.
    fn poke(&mut self) {
        let target = self.target();
        if target <= 0 {
            return;
        }
        let now = Instant::now();
        for p in &mut self.parts {
            let due = p.poke_sent.is_none_or(|t| now >= t + POKE_RETRY);
            if p.progress >= target || !due {
                continue;
            }
            if p.poke_in_flight.load(std::sync::atomic::Ordering::Acquire) {
                continue;
            }
            let Some(sender) = p.sender.upgrade() else {
                continue;
            };
            p.poke_sent = Some(now);
            p.poke_in_flight
                .store(true, std::sync::atomic::Ordering::Release);
            let in_flight = p.poke_in_flight.clone();
            let router = self.router.clone();
            let id = p.id;
            tokio::spawn(async move {
                if router
                    .advance(ShardSet::one(id.shard), target)
                    .await
                    .is_ok()
                {
                    let _ = router
                        .shard(id.shard)
                        .watch_progress(id.stream, sender)
                        .await;
                }
                in_flight.store(false, std::sync::atomic::Ordering::Release);
            });
        }
    }

    /// When a lagging part's unanswered poke is due again.
    fn retry_at(&self) -> Option<Instant> {
        let target = self.target();
        self.parts
            .iter()
            .filter(|p| p.progress < target)
            .filter_map(|p| p.poke_sent)
            .min()
            .map(|t| t + POKE_RETRY)
    }
}

/// The next message of any readable part, polling from part `first` on. A part is readable
/// while it holds fewer than [`PART_HELD_PAUSE`] events; once a part's compaction cancel came,
/// only parts whose `Created` has not come yet are read.
fn poll_parts(
    parts: &mut [Part],
    first: usize,
    only_uncreated: bool,
    cx: &mut std::task::Context<'_>,
) -> Poll<(usize, Option<WatchMessage>)> {
    let n = parts.len();
    for k in 0..n {
        let i = (first + k) % n;
        let p = &mut parts[i];
        let readable = if only_uncreated {
            p.created.is_none()
        } else {
            p.held_events < PART_HELD_PAUSE
        };
        if !readable {
            continue;
        }
        if let Poll::Ready(msg) = p.rx.poll_recv(cx) {
            return Poll::Ready((i, msg));
        }
    }
    Poll::Pending
}

#[cfg(test)]
mod tests;
