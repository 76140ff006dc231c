//! [`Wal`]: the log of one shard over a [`Disk`]: open and recover, append with group commit,
//! read, truncate, purge, and the vote.
//!
//! Group commit without a background task: `append` encodes its records and queues them at
//! once (so the log order is the call order), then its future waits until they are durable.
//! Whichever waiting future finds no flush in flight becomes the flusher: it takes a batch off
//! the front of the queue (bounded by [`WalConfig::batch_records_max`] and
//! `batch_bytes_max`, and by the room left in the segment), writes it with one aligned
//! `write_at`, calls `sync_data` once, marks it durable and wakes every waiter. Appends made
//! while that sync is in flight wait in the queue and go together in the next write. This
//! works on any single-threaded executor (glommio, a `futures` `LocalPool`).
//!
//! Example: tasks A, B, C append 1, 2, 3 one after the other. A's future is polled first,
//! finds no flush, writes [1] and awaits its sync. Meanwhile B and C queue 2 and 3 and wait.
//! A's sync completes: 1 is durable, everyone is woken, A returns. B is polled, finds no
//! flush, writes [2, 3] with one write and one sync; B and C both return after it.
//!
//! Writes are whole 4 KiB pages: a batch starts at the page holding the current end of the
//! segment, so it rewrites the bytes already in that page (kept in `tail`) unchanged, and ends
//! with zero padding. Rewriting equal bytes is harmless even if torn, and a cancelled flush
//! (its future dropped mid-write) is redone by the next flusher at the same offset.
//!
//! The next segment is prepared ahead of need, still without a background task. Once the
//! active segment is filled past [`WalConfig::prepare_next_at_fill_percent`], the flusher
//! starts a preparation future for segment `active + 1` (create, allocate — which zero-fills
//! on glommio —, write a *prepared* header page, `sync_data`, `sync_dir`) and keeps it in
//! `Inner::prep`. Every poll of a flush round polls that future first, then the round's own
//! write and sync, so the preparation's I/O is in flight alongside the appends' and no append
//! waits for it; it advances only while flushes run, which is when a roll can come. The roll
//! then seals the prepared file — its final header (with `prev`, known only now) written over
//! the prepared one and synced: one 4 KiB write and one sync on the append path, no create,
//! no allocation, no directory sync. A roll that finds the preparation still running waits
//! for it (driving it meanwhile); a roll with nothing prepared (preparation disabled, or the
//! threshold not reached before a large record) creates the segment inline as before.
//! Example (defaults, 64 MiB segments): the flush round that ends past 32 MiB starts
//! preparing segment N+1; its ~70-100 ms of zero-filling overlap the next rounds; the append
//! that crosses 64 MiB writes N+1's header, syncs, and writes its batch there.
//!
//! A prepared file holds no record until its seal is durable, so after a crash recovery may
//! keep it (prepared header valid, full size, zero body: it becomes `prepared` again) or
//! remove it (anything less), and a half-written seal reads as either header over a zero
//! body. Purge only removes segments below the active one, never the prepared file.
//!
//! Invariants:
//! - at most one flush is in flight (`flushing`); the queue is in log order;
//! - records with `seq < durable_seq` are durable; `written_last` is the last log id of the
//!   durable record stream, which a new segment's header records as its `prev`;
//! - a segment becomes active (header with `prev` written, synced, name durable) only when no
//!   write is pending, so only the last segment can hold a torn write;
//! - at most one preparation exists (`preparing` iff `Inner::prep` holds a future); `prepared`
//!   and a running preparation are both for `active_seq() + 1` and exclude each other; the
//!   prepared file is not in `segments` and never holds a record;
//! - after `failed` is set no byte is written again: the flush path stops, and a running
//!   preparation is dropped at its next poll.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use super::log::LogState;
use super::record::{self, decode, Decoded, KIND_TAIL_MARKER};
use super::segment::{
    nonzero_end, parse_segment_name, scan, segment_name, PreparedHeader, SegmentHeader, StopReason,
    SEGMENT_HEADER_BYTES,
};
use super::vote::{self, Vote, VoteFile, VOTE_FILE, VOTE_FILE_BYTES, VOTE_SLOT_BYTES};
use super::{CorruptReason, Entry, LogId, LogIndex, WalConfig, WalError};
use crate::io::{Disk, DiskFile, IoError, ALIGN};

/// Largest single `read_at` / `write_at` the WAL issues outside group commit (recovery reads,
/// zeroing a torn tail).
const IO_CHUNK_BYTES: usize = 1 << 20;
const _: () = assert!(IO_CHUNK_BYTES.is_multiple_of(ALIGN));

fn align_down(x: u64) -> u64 {
    x - x % ALIGN as u64
}
fn align_up(x: u64) -> u64 {
    x.div_ceil(ALIGN as u64) * ALIGN as u64
}

/// What `open` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// First retained index (`prev.index + 1`).
    pub first_index: LogIndex,
    /// The entry before the first retained one: the last purged, or `(0, 0)`.
    pub prev: LogId,
    /// The last entry, or `prev` when the log is empty.
    pub last: LogId,
    pub vote: Option<Vote>,
    /// Set when the last segment ended in a torn write that was cut and zeroed.
    pub torn_tail: Option<TornTail>,
    /// Segments holding the log (a prepared file is not counted).
    pub segments: usize,
    /// A prepared segment file found after the last segment and kept for the next roll.
    pub prepared_segment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    pub file: String,
    /// Where the log now ends (the first byte of the torn record).
    pub offset: u64,
    /// Bytes that were zeroed from `offset`.
    pub bytes: u64,
}

/// Counters for tests and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Group-commit writes (each followed by one `sync_data`).
    pub flushes: u64,
    pub records_flushed: u64,
    /// Bytes of group-commit writes (segment headers and preparation not included).
    pub bytes_written: u64,
    /// Segment files created, on the write path or by preparation.
    pub segments_created: u64,
    /// Preparations of a next segment started, and completed.
    pub preparations_started: u64,
    pub segments_prepared: u64,
    pub segments_purged: u64,
    /// Times the active segment moved on to the next one.
    pub rolls: u64,
    /// Rolls that switched to a prepared file (one header write and one sync on the append
    /// path); the others created the segment there.
    pub rolls_to_prepared: u64,
    /// Rolls that found the preparation still running and waited for it.
    pub rolls_waited: u64,
    /// Time of each group commit's `sync_data` (etcd's `etcd_disk_wal_fsync_duration_seconds`).
    pub sync_durations: crate::histogram::DiskHistogram,
}

#[derive(Debug, Clone)]
enum Loc {
    /// Queued or being written: the encoded record.
    Mem(Bytes),
    Disk {
        seg: u64,
        offset: u64,
        size: u32,
    },
}

/// A retained entry's location, tagged with the sequence number of the record that wrote it
/// (0 for records found at open), so that a flush only relocates entries it really wrote.
#[derive(Debug, Clone)]
struct Tagged {
    seq: u64,
    loc: Loc,
}

#[derive(Debug, Clone)]
struct Queued {
    seq: u64,
    bytes: Bytes,
    log_id: LogId,
    marker: bool,
}

struct Segment<F> {
    file: Rc<F>,
    name: String,
    /// For a prepared file: its seq and size, with `prev` zero until the roll seals it.
    header: SegmentHeader,
}

/// A preparation in progress (see [`prepare_segment`]); `Err` names the failed operation.
type PrepFuture<F> = Pin<Box<dyn Future<Output = Result<Segment<F>, (&'static str, IoError)>>>>;

struct State<F> {
    failed: Option<WalError>,
    log: LogState<Tagged>,
    queue: VecDeque<Queued>,
    queued_bytes: usize,
    next_seq: u64,
    durable_seq: u64,
    flushing: bool,
    purging: bool,
    vote_busy: bool,
    /// Bumped whenever something a waiter may be waiting for changes.
    epoch: u64,
    segments: BTreeMap<u64, Segment<F>>,
    /// The next segment, prepared (allocated, zero-filled, prepared header synced, name
    /// synced) and not yet part of the log: its seq is `active_seq() + 1`.
    prepared: Option<Segment<F>>,
    /// A preparation future sits in `Inner::prep`.
    preparing: bool,
    /// End of the records in the active (last) segment.
    write_off: u64,
    /// The active segment's bytes in `[align_down(write_off), write_off)`.
    tail: Vec<u8>,
    written_last: LogId,
    vote_file: Rc<F>,
    vote_seq: u64,
    vote: Option<Vote>,
    stats: WalStats,
}

impl<F> State<F> {
    fn check_failed(&self) -> Result<(), WalError> {
        match &self.failed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    fn active_seq(&self) -> u64 {
        *self
            .segments
            .keys()
            .next_back()
            .expect("a WAL always has a segment")
    }
}

struct Inner<D: Disk> {
    disk: Rc<D>,
    config: WalConfig,
    st: RefCell<State<D::File>>,
    waiters: RefCell<Vec<Waker>>,
    /// The preparation in progress, polled by the flusher (see the module comment).
    prep: RefCell<Option<PrepFuture<D::File>>>,
}

/// The WAL handle. Cheap to clone; every clone is the same log. `!Send`: it lives on the
/// shard's thread.
pub struct Wal<D: Disk> {
    inner: Rc<Inner<D>>,
}

impl<D: Disk> Clone for Wal<D> {
    fn clone(&self) -> Self {
        Wal {
            inner: self.inner.clone(),
        }
    }
}

/// Resolves once `epoch` moved past `seen`.
struct Changed<'a, D: Disk> {
    inner: &'a Inner<D>,
    seen: u64,
}

impl<D: Disk> Future for Changed<'_, D> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.inner.st.borrow().epoch != self.seen {
            return Poll::Ready(());
        }
        self.inner.waiters.borrow_mut().push(cx.waker().clone());
        Poll::Pending
    }
}

/// Releases the flush slot if the flusher's future is dropped or fails mid-way: the batch goes
/// back to the front of the queue, to be written again at the same offset.
struct FlushGuard<'a, D: Disk> {
    inner: &'a Inner<D>,
    batch: Vec<Queued>,
    armed: bool,
}

impl<D: Disk> Drop for FlushGuard<'_, D> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        {
            let mut st = self.inner.st.borrow_mut();
            st.flushing = false;
            for q in self.batch.drain(..).rev() {
                st.queue.push_front(q);
            }
            st.epoch += 1;
        }
        self.inner.wake_all();
    }
}

/// Clears a busy flag (purge, vote) when its holder finishes or is dropped.
struct FlagGuard<'a, D: Disk> {
    inner: &'a Inner<D>,
    flag: fn(&mut State<D::File>) -> &mut bool,
}

impl<D: Disk> Drop for FlagGuard<'_, D> {
    fn drop(&mut self) {
        {
            let mut st = self.inner.st.borrow_mut();
            *(self.flag)(&mut st) = false;
            st.epoch += 1;
        }
        self.inner.wake_all();
    }
}

async fn read_all<F: DiskFile>(file: &F) -> Result<Vec<u8>, IoError> {
    let len = usize::try_from(file.len()).expect("file length fits in memory");
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let n = (len - out.len()).min(IO_CHUNK_BYTES);
        out.extend_from_slice(&file.read_at(out.len() as u64, n).await?);
    }
    Ok(out)
}

/// Creates segment `seq` durably: preallocated, header written and synced, name synced.
async fn create_segment<D: Disk>(
    disk: &D,
    seq: u64,
    prev: LogId,
    segment_bytes: u64,
) -> Result<Segment<D::File>, IoError> {
    let name = segment_name(seq);
    let file = disk.open(&name, true).await?;
    file.allocate(segment_bytes).await?;
    let header = SegmentHeader {
        seq,
        prev,
        segment_bytes,
    };
    file.write_at(0, &header.encode()).await?;
    file.sync_data().await?;
    disk.sync_dir().await?;
    Ok(Segment {
        file: Rc::new(file),
        name,
        header,
    })
}

/// Prepares segment `seq` ahead of need: created, allocated (zero-filled by the disk), given a
/// [`PreparedHeader`] page, synced, and its name synced. It holds no record, so a crash at any
/// point leaves a file that recovery keeps (when complete) or removes.
async fn prepare_segment<D: Disk>(
    disk: Rc<D>,
    seq: u64,
    segment_bytes: u64,
) -> Result<Segment<D::File>, (&'static str, IoError)> {
    let name = segment_name(seq);
    let file = disk
        .open(&name, true)
        .await
        .map_err(|e| ("create segment", e))?;
    file.allocate(segment_bytes)
        .await
        .map_err(|e| ("allocate segment", e))?;
    let page = PreparedHeader { seq, segment_bytes }.encode();
    file.write_at(0, &page)
        .await
        .map_err(|e| ("write prepared header", e))?;
    file.sync_data()
        .await
        .map_err(|e| ("sync prepared segment", e))?;
    disk.sync_dir().await.map_err(|e| ("sync dir", e))?;
    Ok(Segment {
        file: Rc::new(file),
        name,
        header: SegmentHeader {
            seq,
            prev: LogId::ZERO,
            segment_bytes,
        },
    })
}

fn corrupt(file: &str, offset: u64, reason: CorruptReason) -> WalError {
    WalError::Corrupt {
        file: file.to_string(),
        offset,
        reason,
    }
}

impl<D: Disk> Inner<D> {
    fn wake_all(&self) {
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for w in waiters {
            w.wake();
        }
    }

    /// Latches fail-stop (the first failure wins) and returns the latched error.
    fn fail(&self, op: &'static str, source: IoError) -> WalError {
        let err = {
            let mut st = self.st.borrow_mut();
            if st.failed.is_none() {
                st.failed = Some(WalError::FailStopped { op, source });
            }
            st.epoch += 1;
            st.failed.clone().expect("just latched")
        };
        self.wake_all();
        err
    }

    async fn wait_until(&self, cond: impl Fn(&State<D::File>) -> bool) {
        loop {
            let seen = {
                let st = self.st.borrow();
                if cond(&st) {
                    return;
                }
                st.epoch
            };
            Changed { inner: self, seen }.await;
        }
    }

    /// Queues encoded records; returns the sequence number every one of them is below.
    fn queue(st: &mut State<D::File>, records: Vec<(Bytes, LogId, bool)>) -> u64 {
        for (bytes, log_id, marker) in records {
            st.queued_bytes += bytes.len();
            let seq = st.next_seq;
            st.next_seq += 1;
            st.queue.push_back(Queued {
                seq,
                bytes,
                log_id,
                marker,
            });
        }
        st.next_seq
    }

    fn enqueue_entries(&self, entries: Vec<Entry>) -> Result<u64, WalError> {
        let mut st = self.st.borrow_mut();
        st.check_failed()?;
        let mut bytes_total = 0usize;
        let mut last = st.log.last();
        for e in &entries {
            if e.kind == 0 || e.kind > record::ENTRY_KIND_MAX {
                return Err(WalError::BadKind { kind: e.kind });
            }
            if e.payload.len() > self.config.record_payload_bytes_max {
                return Err(WalError::RecordTooLarge {
                    payload_bytes: e.payload.len(),
                    max: self.config.record_payload_bytes_max,
                });
            }
            // Same rule as LogState::check_push, applied along the batch.
            let probe: LogState<()> = LogState::new(last);
            probe
                .check_push(e.index, e.term)
                .map_err(WalError::Append)?;
            last = e.log_id();
            bytes_total += record::record_size(e.payload.len());
        }
        if st.queued_bytes + bytes_total > self.config.queue_bytes_max && !entries.is_empty() {
            return Err(WalError::QueueFull {
                queued_bytes: st.queued_bytes,
                max: self.config.queue_bytes_max,
            });
        }
        let mut records = Vec::with_capacity(entries.len());
        for e in entries {
            let bytes = Bytes::from(record::encode(e.kind, e.term, e.index, &e.payload));
            let seq = st.next_seq + records.len() as u64;
            st.log
                .push(
                    e.index,
                    e.term,
                    e.kind,
                    Tagged {
                        seq,
                        loc: Loc::Mem(bytes.clone()),
                    },
                )
                .expect("checked above");
            records.push((bytes, e.log_id(), false));
        }
        Ok(Self::queue(&mut st, records))
    }

    fn enqueue_marker(st: &mut State<D::File>, id: LogId) -> Result<u64, WalError> {
        st.log.cut_to(id).map_err(WalError::Append)?;
        let bytes = Bytes::from(record::encode(KIND_TAIL_MARKER, id.term, id.index, &[]));
        Ok(Self::queue(st, vec![(bytes, id, true)]))
    }
}

/// The flush path; `'static` because it boxes the preparation future.
impl<D: Disk + 'static> Inner<D> {
    /// Waits until every record below `target` is durable, flushing when nobody else is.
    async fn wait_durable(&self, target: u64) -> Result<(), WalError> {
        loop {
            let seen = {
                let st = self.st.borrow();
                if st.durable_seq >= target {
                    return Ok(());
                }
                st.check_failed()?;
                if !st.flushing {
                    assert!(!st.queue.is_empty(), "records below target are queued");
                    None
                } else {
                    Some(st.epoch)
                }
            };
            match seen {
                None => self.flush_round().await?,
                Some(seen) => Changed { inner: self, seen }.await,
            }
        }
    }

    /// The seq of the segment to prepare now, if a preparation is due: enabled, none prepared
    /// or running, not failed, and the active segment filled past the threshold.
    fn prep_due(&self) -> Option<u64> {
        let percent = u64::from(self.config.prepare_next_at_fill_percent?);
        let st = self.st.borrow();
        if st.failed.is_some() || st.prepared.is_some() || st.preparing {
            return None;
        }
        let active = st.active_seq();
        let cap = st.segments[&active].header.segment_bytes;
        (st.write_off * 100 >= cap * percent).then_some(active + 1)
    }

    /// Starts a preparation when one is due and advances the one in progress; called by the
    /// flusher on each of its polls, before it polls its own I/O.
    fn poll_prep(&self, cx: &mut Context<'_>) {
        let Ok(mut slot) = self.prep.try_borrow_mut() else {
            return;
        };
        if self.st.borrow().failed.is_some() {
            // Fail-stop: nothing more is written, a preparation included.
            if slot.take().is_some() {
                self.st.borrow_mut().preparing = false;
            }
            return;
        }
        if slot.is_none() {
            let Some(seq) = self.prep_due() else {
                return;
            };
            {
                let mut st = self.st.borrow_mut();
                st.preparing = true;
                st.stats.preparations_started += 1;
            }
            *slot = Some(Box::pin(prepare_segment(
                self.disk.clone(),
                seq,
                self.config.segment_bytes,
            )));
        }
        let fut = slot.as_mut().expect("a preparation is in progress");
        let Poll::Ready(result) = fut.as_mut().poll(cx) else {
            return;
        };
        *slot = None;
        drop(slot);
        match result {
            Ok(seg) => {
                {
                    let mut st = self.st.borrow_mut();
                    debug_assert_eq!(seg.header.seq, st.active_seq() + 1);
                    st.preparing = false;
                    st.prepared = Some(seg);
                    st.stats.segments_created += 1;
                    st.stats.segments_prepared += 1;
                    st.epoch += 1;
                }
                self.wake_all();
            }
            Err((op, e)) => {
                self.st.borrow_mut().preparing = false;
                self.fail(op, e);
            }
        }
    }

    /// One group commit, with the preparation of the next segment (if any) advanced on every
    /// poll alongside it.
    async fn flush_round(&self) -> Result<(), WalError> {
        let mut round = std::pin::pin!(self.flush_round_io());
        std::future::poll_fn(|cx| {
            self.poll_prep(cx);
            round.as_mut().poll(cx)
        })
        .await
    }

    /// Moves the active segment on to `active + 1`: seals the prepared file (waiting for its
    /// preparation if it is running), or creates the segment here when none is prepared.
    async fn roll(&self) -> Result<(), WalError> {
        let waited = self.st.borrow().preparing;
        if waited {
            self.wait_until(|st| !st.preparing || st.failed.is_some())
                .await;
            self.st.borrow().check_failed()?;
        }
        let (seq, prev, prepared) = {
            let st = self.st.borrow();
            let prepared = st.prepared.as_ref().map(|p| (p.file.clone(), p.header));
            (st.active_seq() + 1, st.written_last, prepared)
        };
        let seg = match prepared {
            Some((file, header)) => {
                assert_eq!(
                    header.seq, seq,
                    "the prepared segment follows the active one"
                );
                // The prepared file and its name are durable; only the header changes. It is
                // synced before any record goes in, as for a segment created here.
                let sealed = SegmentHeader {
                    seq,
                    prev,
                    segment_bytes: header.segment_bytes,
                };
                if let Err(e) = file.write_at(0, &sealed.encode()).await {
                    return Err(self.fail("seal segment", e));
                }
                if let Err(e) = file.sync_data().await {
                    return Err(self.fail("sync segment", e));
                }
                let mut st = self.st.borrow_mut();
                let mut seg = st.prepared.take().expect("still prepared");
                seg.header = sealed;
                st.stats.rolls_to_prepared += 1;
                seg
            }
            None => match create_segment(&*self.disk, seq, prev, self.config.segment_bytes).await {
                Ok(seg) => {
                    self.st.borrow_mut().stats.segments_created += 1;
                    seg
                }
                Err(e) => return Err(self.fail("create segment", e)),
            },
        };
        let mut st = self.st.borrow_mut();
        st.segments.insert(seq, seg);
        st.write_off = SEGMENT_HEADER_BYTES as u64;
        st.tail.clear();
        st.stats.rolls += 1;
        if waited {
            st.stats.rolls_waited += 1;
        }
        Ok(())
    }

    /// One group commit: [roll a segment,] write one batch, sync once.
    async fn flush_round_io(&self) -> Result<(), WalError> {
        let need_roll = {
            let mut st = self.st.borrow_mut();
            // A preparation polled just before this may have latched fail-stop.
            st.check_failed()?;
            assert!(!st.flushing, "one flush at a time");
            st.flushing = true;
            let first = st.queue.front().expect("flush_round needs a queued record");
            let active = &st.segments[&st.active_seq()];
            st.write_off + first.bytes.len() as u64 > active.header.segment_bytes
        };
        let mut guard = FlushGuard {
            inner: self,
            batch: Vec::new(),
            armed: true,
        };
        if need_roll {
            self.roll().await?;
        }
        let (file, seg_seq, page_start, buf, placed) = {
            let mut st = self.st.borrow_mut();
            let seg_seq = st.active_seq();
            let seg = &st.segments[&seg_seq];
            let (file, cap) = (seg.file.clone(), seg.header.segment_bytes);
            let start_off = st.write_off;
            let mut end = start_off;
            while let Some(q) = st.queue.front() {
                let size = q.bytes.len() as u64;
                let n = guard.batch.len();
                if n > 0
                    && (n >= self.config.batch_records_max
                        || (end - start_off + size) as usize > self.config.batch_bytes_max)
                {
                    break;
                }
                if end + size > cap {
                    break;
                }
                end += size;
                let q = st.queue.pop_front().expect("front exists");
                guard.batch.push(q);
            }
            assert!(!guard.batch.is_empty(), "a fresh segment holds any record");
            let page_start = align_down(start_off);
            let mut buf = Vec::with_capacity((align_up(end) - page_start) as usize);
            buf.extend_from_slice(&st.tail);
            debug_assert_eq!(page_start + buf.len() as u64, start_off);
            let mut placed = Vec::with_capacity(guard.batch.len());
            for q in &guard.batch {
                placed.push(page_start + buf.len() as u64);
                buf.extend_from_slice(&q.bytes);
            }
            buf.resize((align_up(end) - page_start) as usize, 0);
            (file, seg_seq, page_start, buf, placed)
        };
        if let Err(e) = file.write_at(page_start, &buf).await {
            return Err(self.fail("write", e));
        }
        let sync_started = std::time::Instant::now();
        if let Err(e) = file.sync_data().await {
            return Err(self.fail("sync", e));
        }
        let synced_in = sync_started.elapsed();
        {
            let mut st = self.st.borrow_mut();
            st.stats.sync_durations.observe(synced_in);
            let batch = std::mem::take(&mut guard.batch);
            let last = batch.last().expect("non-empty batch");
            let end = placed.last().expect("placed") + last.bytes.len() as u64;
            st.write_off = end;
            let tail_from = (align_down(end) - page_start) as usize;
            st.tail = buf[tail_from..(end - page_start) as usize].to_vec();
            st.written_last = last.log_id;
            st.durable_seq = last.seq + 1;
            st.stats.flushes += 1;
            st.stats.records_flushed += batch.len() as u64;
            st.stats.bytes_written += buf.len() as u64;
            for (q, &offset) in batch.iter().zip(&placed) {
                st.queued_bytes -= q.bytes.len();
                if q.marker {
                    continue;
                }
                if let Some(slot) = st.log.get_mut(q.log_id.index) {
                    if slot.loc.seq == q.seq {
                        slot.loc.loc = Loc::Disk {
                            seg: seg_seq,
                            offset,
                            size: q.bytes.len() as u32,
                        };
                    }
                }
            }
            st.flushing = false;
            st.epoch += 1;
        }
        guard.armed = false;
        drop(guard);
        self.wake_all();
        Ok(())
    }
}

impl<D: Disk + 'static> Wal<D> {
    /// Opens (or creates) the WAL in `disk` and recovers it: replays every segment, cuts and
    /// zeroes a torn tail, and reads the vote. Refuses with [`WalError::Corrupt`] (file and
    /// offset) when a damaged record has valid records after it, or a segment other than the
    /// last is damaged.
    pub async fn open(disk: D, config: WalConfig) -> Result<(Wal<D>, Recovered), WalError> {
        config.validate()?;
        let mut seqs: Vec<u64> = disk
            .list()
            .await?
            .iter()
            .filter_map(|n| parse_segment_name(n))
            .collect();
        seqs.sort_unstable();
        for w in seqs.windows(2) {
            if w[1] != w[0] + 1 {
                return Err(WalError::MissingSegment { seq: w[0] + 1 });
            }
        }

        // The last file may be a prepared segment (prepared header, zero body, full size):
        // it holds no record and is kept for the next roll, unless it is the only file or
        // was prepared for another segment size. Otherwise the last file may be a creation or
        // preparation that never became durable: its header is not valid or its
        // preallocation is missing, and nothing was ever written after the header (records
        // follow only a synced creation or sealing). Such a file is removed.
        let mut images: BTreeMap<u64, (D::File, Vec<u8>)> = BTreeMap::new();
        let mut fresh_seq = 1;
        let mut prepared = None;
        if let Some(&last_seq) = seqs.last() {
            let name = segment_name(last_seq);
            let file = disk.open(&name, false).await?;
            let image = read_all(&file).await?;
            // Complete = header valid and the preallocation durable; creation writes the
            // header and allocates before one sync, so a crash may keep either without the
            // other.
            let complete = image.len() >= SEGMENT_HEADER_BYTES
                && SegmentHeader::decode(&image)
                    .is_ok_and(|h| image.len() as u64 >= h.segment_bytes);
            let body_zero = image.len() < SEGMENT_HEADER_BYTES
                || nonzero_end(&image[SEGMENT_HEADER_BYTES..]) == 0;
            let reusable = body_zero
                && seqs.len() > 1
                && image.len() >= SEGMENT_HEADER_BYTES
                && PreparedHeader::decode(&image).is_ok_and(|p| {
                    p.seq == last_seq
                        && p.segment_bytes == config.segment_bytes
                        && image.len() as u64 == p.segment_bytes
                });
            if reusable {
                prepared = Some(Segment {
                    file: Rc::new(file),
                    name,
                    header: SegmentHeader {
                        seq: last_seq,
                        prev: LogId::ZERO,
                        segment_bytes: config.segment_bytes,
                    },
                });
                seqs.pop();
            } else if !complete && body_zero {
                drop(file);
                disk.remove(&name).await?;
                disk.sync_dir().await?;
                seqs.pop();
                fresh_seq = last_seq;
            } else {
                images.insert(last_seq, (file, image));
            }
        }

        let mut log: LogState<Tagged> = LogState::new(LogId::ZERO);
        let mut written_last = LogId::ZERO;
        let mut segments = BTreeMap::new();
        let mut active_end: Option<(u64, Vec<u8>, u64)> = None; // (stop, tail, garbage end)
        for (i, &seq) in seqs.iter().enumerate() {
            let is_last = i + 1 == seqs.len();
            let name = segment_name(seq);
            let (file, image) = match images.remove(&seq) {
                Some(x) => x,
                None => {
                    let file = disk.open(&name, false).await?;
                    let image = read_all(&file).await?;
                    (file, image)
                }
            };
            if image.len() < SEGMENT_HEADER_BYTES {
                return Err(corrupt(
                    &name,
                    0,
                    CorruptReason::TooShort {
                        len: image.len() as u64,
                        expected: SEGMENT_HEADER_BYTES as u64,
                    },
                ));
            }
            let header = SegmentHeader::decode(&image)
                .map_err(|h| corrupt(&name, 0, CorruptReason::Header(h)))?;
            if header.seq != seq {
                return Err(corrupt(
                    &name,
                    16,
                    CorruptReason::SegmentSeqMismatch {
                        named: seq,
                        header: header.seq,
                    },
                ));
            }
            if (image.len() as u64) < header.segment_bytes {
                return Err(corrupt(
                    &name,
                    image.len() as u64,
                    CorruptReason::TooShort {
                        len: image.len() as u64,
                        expected: header.segment_bytes,
                    },
                ));
            }
            if i == 0 {
                log = LogState::new(header.prev);
            } else if header.prev != written_last {
                return Err(corrupt(
                    &name,
                    24,
                    CorruptReason::Discontinuity {
                        expected: written_last,
                        found: header.prev,
                    },
                ));
            }
            written_last = header.prev;
            let s = scan(&image, header.segment_bytes);
            for (offset, r) in &s.records {
                let applied = if r.is_marker() {
                    log.cut_to(r.log_id())
                } else {
                    let loc = Tagged {
                        seq: 0,
                        loc: Loc::Disk {
                            seg: seq,
                            offset: *offset,
                            size: r.size() as u32,
                        },
                    };
                    log.push(r.index, r.term, r.kind, loc)
                };
                applied.map_err(|e| corrupt(&name, *offset, CorruptReason::Log(e)))?;
                written_last = r.log_id();
            }
            match (s.reason, s.valid_after) {
                (StopReason::End, Some(valid_at)) => {
                    return Err(corrupt(
                        &name,
                        s.stop,
                        CorruptReason::ZeroedBeforeValid { valid_at },
                    ))
                }
                (StopReason::Invalid(why), Some(valid_at)) => {
                    return Err(corrupt(
                        &name,
                        s.stop,
                        CorruptReason::RecordBeforeValid { why, valid_at },
                    ))
                }
                (StopReason::Invalid(why), None) if !is_last => {
                    return Err(corrupt(&name, s.stop, CorruptReason::Record(why)))
                }
                _ => {}
            }
            if is_last {
                let stop = s.stop;
                let tail = image[align_down(stop) as usize..stop as usize].to_vec();
                let seg_end = header.segment_bytes as usize;
                let garbage_end = stop + nonzero_end(&image[stop as usize..seg_end]) as u64;
                active_end = Some((stop, tail, garbage_end));
            }
            segments.insert(
                seq,
                Segment {
                    file: Rc::new(file),
                    name,
                    header,
                },
            );
        }

        let mut stats = WalStats::default();
        let mut torn_tail = None;
        let (write_off, tail) = match active_end {
            None => {
                let seg =
                    create_segment(&disk, fresh_seq, LogId::ZERO, config.segment_bytes).await?;
                segments.insert(fresh_seq, seg);
                stats.segments_created += 1;
                (SEGMENT_HEADER_BYTES as u64, Vec::new())
            }
            Some((stop, tail, garbage_end)) => {
                if garbage_end > stop {
                    // Zero what a torn write left after the cut, so that the next append
                    // writes over zeros and a later tear reads as a tear again.
                    let seg = segments.values().next_back().expect("active segment");
                    let mut at = align_down(stop);
                    let end = align_up(garbage_end);
                    let mut first = true;
                    while at < end {
                        let n = (end - at).min(IO_CHUNK_BYTES as u64) as usize;
                        let mut buf = vec![0u8; n];
                        if first {
                            buf[..tail.len()].copy_from_slice(&tail);
                            first = false;
                        }
                        seg.file.write_at(at, &buf).await?;
                        at += n as u64;
                    }
                    seg.file.sync_data().await?;
                    torn_tail = Some(TornTail {
                        file: seg.name.clone(),
                        offset: stop,
                        bytes: garbage_end - stop,
                    });
                }
                (stop, tail)
            }
        };

        let (vote_file, vote_seq, vote) = open_vote(&disk).await?;
        // Every name found is made durable before anything is appended: a process killed
        // between a segment's sync and its directory sync leaves a name the OS still holds
        // but a power loss would not.
        disk.sync_dir().await?;

        let recovered = Recovered {
            first_index: log.first_index(),
            prev: log.prev(),
            last: log.last(),
            vote,
            torn_tail,
            segments: segments.len(),
            prepared_segment: prepared.as_ref().map(|p: &Segment<D::File>| p.name.clone()),
        };
        let st = State {
            failed: None,
            log,
            queue: VecDeque::new(),
            queued_bytes: 0,
            next_seq: 1,
            durable_seq: 1,
            flushing: false,
            purging: false,
            vote_busy: false,
            epoch: 0,
            segments,
            prepared,
            preparing: false,
            write_off,
            tail,
            written_last,
            vote_file: Rc::new(vote_file),
            vote_seq,
            vote,
            stats,
        };
        let wal = Wal {
            inner: Rc::new(Inner {
                disk: Rc::new(disk),
                config,
                st: RefCell::new(st),
                waiters: RefCell::new(Vec::new()),
                prep: RefCell::new(None),
            }),
        };
        Ok((wal, recovered))
    }

    pub fn config(&self) -> &WalConfig {
        &self.inner.config
    }

    /// First retained index.
    pub fn first_index(&self) -> LogIndex {
        self.inner.st.borrow().log.first_index()
    }

    /// The entry before the first retained one.
    pub fn prev(&self) -> LogId {
        self.inner.st.borrow().log.prev()
    }

    /// The last entry appended (durable or not), or `prev`.
    pub fn last(&self) -> LogId {
        self.inner.st.borrow().log.last()
    }

    /// The term of a retained entry (or of `prev`).
    pub fn term_of(&self, index: LogIndex) -> Option<super::Term> {
        self.inner.st.borrow().log.term_of(index)
    }

    pub fn vote(&self) -> Option<Vote> {
        self.inner.st.borrow().vote
    }

    /// The latched fail-stop error, if any.
    pub fn failed(&self) -> Option<WalError> {
        self.inner.st.borrow().failed.clone()
    }

    pub fn stats(&self) -> WalStats {
        self.inner.st.borrow().stats
    }

    /// Appends `entries` (contiguous, extending the log, terms not decreasing). They are in
    /// the log — readable, and ordered before any later call — as soon as this returns; the
    /// future resolves once they are durable. Validation errors come from the future
    /// without changing anything.
    pub fn append(&self, entries: Vec<Entry>) -> impl Future<Output = Result<(), WalError>> {
        let target = self.inner.enqueue_entries(entries);
        let inner = self.inner.clone();
        async move { inner.wait_durable(target?).await }
    }

    /// Resolves once everything appended before this call is durable.
    pub fn sync(&self) -> impl Future<Output = Result<(), WalError>> {
        let target = {
            let st = self.inner.st.borrow();
            st.check_failed().map(|_| st.next_seq)
        };
        let inner = self.inner.clone();
        async move { inner.wait_durable(target?).await }
    }

    /// Raft's conflict rule: drops every entry after `index` (`prev.index <= index <=
    /// last.index`). Takes effect at once in memory; the future resolves once a tail marker
    /// recording it is durable. A crash before that may bring the dropped entries back,
    /// which is a state the log legitimately had.
    pub fn truncate_after(&self, index: LogIndex) -> impl Future<Output = Result<(), WalError>> {
        let target = (|| {
            let mut st = self.inner.st.borrow_mut();
            st.check_failed()?;
            let (first, last) = (st.log.first_index(), st.log.last());
            let term = match st.log.term_of(index) {
                Some(t) if index <= last.index => t,
                _ => {
                    return Err(WalError::OutOfRange {
                        requested: index,
                        first,
                        last: last.index,
                    })
                }
            };
            Inner::<D>::enqueue_marker(&mut st, LogId { term, index })
        })();
        let inner = self.inner.clone();
        async move { inner.wait_durable(target?).await }
    }

    /// Allows every entry up to `upto.index` to be dropped, and drops the whole segments
    /// that hold only such entries (never the active one); they are removed one at a time,
    /// each removal made durable before the next, so a crash leaves no gap. When `upto` is
    /// past the last entry (a snapshot was installed), the log is first reset to end at
    /// `upto`, durably, and the next append must be `upto.index + 1`.
    pub async fn purge_upto(&self, upto: LogId) -> Result<(), WalError> {
        let inner = &*self.inner;
        inner
            .wait_until(|st| !st.purging || st.failed.is_some())
            .await;
        let reset_target = {
            let mut st = inner.st.borrow_mut();
            st.check_failed()?;
            st.purging = true;
            if upto.index > st.log.last().index {
                Some(Inner::<D>::enqueue_marker(&mut st, upto)?)
            } else {
                None
            }
        };
        let _busy = FlagGuard {
            inner,
            flag: |st| &mut st.purging,
        };
        if let Some(target) = reset_target {
            inner.wait_durable(target).await?;
        }
        let victims: Vec<(u64, String)> = {
            let st = inner.st.borrow();
            let active = st.active_seq();
            let boundary = st
                .log
                .iter()
                .find(|(i, _)| *i > upto.index)
                .map(|(_, s)| match s.loc.loc {
                    Loc::Disk { seg, .. } => seg,
                    Loc::Mem(_) => active,
                })
                .unwrap_or(active);
            st.segments
                .iter()
                .filter(|(&seq, _)| seq < boundary)
                .map(|(&seq, s)| (seq, s.name.clone()))
                .collect()
        };
        for (seq, name) in victims {
            if let Err(e) = inner.disk.remove(&name).await {
                return Err(inner.fail("remove segment", e));
            }
            if let Err(e) = inner.disk.sync_dir().await {
                return Err(inner.fail("sync dir", e));
            }
            let mut st = inner.st.borrow_mut();
            st.segments.remove(&seq);
            st.stats.segments_purged += 1;
            let n = st
                .log
                .iter()
                .take_while(|(_, s)| matches!(s.loc.loc, Loc::Disk { seg, .. } if seg == seq))
                .count();
            st.log.drop_front(n);
        }
        Ok(())
    }

    /// Reads entries `range` (half-open), checking each record read back. Queued entries
    /// come from memory.
    pub async fn read(&self, range: Range<LogIndex>) -> Result<Vec<Entry>, WalError> {
        struct Want<F> {
            id: LogId,
            kind: u8,
            loc: Loc,
            file: Option<(Rc<F>, String)>,
        }
        let wants: Vec<Want<D::File>> = {
            let st = self.inner.st.borrow();
            st.check_failed()?;
            let (first, last) = (st.log.first_index(), st.log.last().index);
            for requested in [range.start, range.end] {
                if requested < first || requested.0 > last.0 + 1 {
                    return Err(WalError::OutOfRange {
                        requested,
                        first,
                        last,
                    });
                }
            }
            (range.start.0..range.end.0.max(range.start.0))
                .map(|i| {
                    let s = st.log.get(LogIndex(i)).expect("in range");
                    let file = match s.loc.loc {
                        Loc::Disk { seg, .. } => {
                            let seg = &st.segments[&seg];
                            Some((seg.file.clone(), seg.name.clone()))
                        }
                        Loc::Mem(_) => None,
                    };
                    Want {
                        id: LogId {
                            term: s.term,
                            index: LogIndex(i),
                        },
                        kind: s.kind,
                        loc: s.loc.loc.clone(),
                        file,
                    }
                })
                .collect()
        };
        let mut out = Vec::with_capacity(wants.len());
        let mut i = 0;
        while i < wants.len() {
            let (seg, start, size) = match &wants[i].loc {
                Loc::Mem(bytes) => {
                    let w = &wants[i];
                    match decode(bytes) {
                        Decoded::Record(r) if r.log_id() == w.id && r.kind == w.kind => {
                            let from = record::RECORD_HEADER_BYTES;
                            out.push(Entry {
                                index: r.index,
                                term: r.term,
                                kind: r.kind,
                                payload: bytes.slice(from..from + r.payload.len()),
                            });
                        }
                        _ => panic!("queued record of {} does not decode as itself", w.id),
                    }
                    i += 1;
                    continue;
                }
                Loc::Disk { seg, offset, size } => (*seg, *offset, *size as u64),
            };
            // Coalesce a run of records that sit end to end in one segment into one read.
            let mut end = start + size;
            let mut j = i + 1;
            while j < wants.len() && end - start < IO_CHUNK_BYTES as u64 {
                match wants[j].loc {
                    Loc::Disk {
                        seg: s2,
                        offset: o2,
                        size: z2,
                    } if s2 == seg && o2 == end => end = o2 + z2 as u64,
                    _ => break,
                }
                j += 1;
            }
            let (file, name) = wants[i].file.clone().expect("disk entries have a file");
            let data = file.read_at(start, (end - start) as usize).await?;
            let mut at = 0usize;
            for w in &wants[i..j] {
                match decode(&data[at..]) {
                    Decoded::Record(r)
                        if !r.is_marker() && r.log_id() == w.id && r.kind == w.kind =>
                    {
                        out.push(Entry {
                            index: r.index,
                            term: r.term,
                            kind: r.kind,
                            payload: Bytes::copy_from_slice(r.payload),
                        });
                        at += r.size();
                    }
                    _ => {
                        return Err(corrupt(
                            &name,
                            start + at as u64,
                            CorruptReason::ReadBack { expected: w.id },
                        ))
                    }
                }
            }
            i = j;
        }
        Ok(out)
    }

    /// Saves the vote durably (one slot write and one sync); saves are serialized.
    pub async fn save_vote(&self, vote: Vote) -> Result<(), WalError> {
        let inner = &*self.inner;
        inner
            .wait_until(|st| !st.vote_busy || st.failed.is_some())
            .await;
        let (file, seq) = {
            let mut st = inner.st.borrow_mut();
            st.check_failed()?;
            st.vote_busy = true;
            (st.vote_file.clone(), st.vote_seq + 1)
        };
        let _busy = FlagGuard {
            inner,
            flag: |st| &mut st.vote_busy,
        };
        let slot = vote::slot_of(seq);
        let offset = (slot * VOTE_SLOT_BYTES) as u64;
        if let Err(e) = file.write_at(offset, &vote::encode_slot(seq, &vote)).await {
            return Err(inner.fail("vote write", e));
        }
        if let Err(e) = file.sync_data().await {
            return Err(inner.fail("vote sync", e));
        }
        let mut st = inner.st.borrow_mut();
        st.vote_seq = seq;
        st.vote = Some(vote);
        Ok(())
    }
}

/// Opens the vote file, creating it (preallocated, synced, name synced) when missing or when
/// its creation never became durable.
async fn open_vote<D: Disk>(disk: &D) -> Result<(D::File, u64, Option<Vote>), WalError> {
    let file = disk.open(VOTE_FILE, true).await?;
    if file.len() < VOTE_FILE_BYTES as u64 {
        file.allocate(VOTE_FILE_BYTES as u64).await?;
        file.sync_data().await?;
        disk.sync_dir().await?;
        return Ok((file, 0, None));
    }
    let image = file.read_at(0, VOTE_FILE_BYTES).await?;
    match vote::read_vote_file(&image) {
        VoteFile::Empty => Ok((file, 0, None)),
        VoteFile::Saved { seq, vote } => Ok((file, seq, Some(vote))),
        VoteFile::Corrupt { slot, why } => Err(corrupt(
            VOTE_FILE,
            (slot * VOTE_SLOT_BYTES) as u64,
            CorruptReason::Vote(why),
        )),
    }
}
