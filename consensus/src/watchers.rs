//! The watcher registry of one shard. Invariants:
//! - Every message of one watcher goes through its stream's bounded channel, in revision order:
//!   `Created` first, then events (each batch one write revision, or a catch-up chunk), then at
//!   most one `Canceled`.
//! - A full channel never blocks the shard: the watcher turns *unsynced* at the first revision it
//!   missed and is caught up later from the store's history (`Store::events_since`), the way
//!   etcd's watchable store moves slow watchers to its victim list. If that history has been
//!   compacted meanwhile, the watcher is canceled with the compact revision, as etcd does.
//! - A watcher never receives an event below its start revision or twice.

use std::collections::HashMap;

use ballast_engine::watch::WatchFilter;
use ballast_engine::{Event, Revision, Store};
use bytes::Bytes;
use tokio::sync::mpsc;

/// Identifies one client watch stream (unique within the process).
pub type StreamId = u64;

/// Largest number of events read from history for one catch-up step of one watcher.
const CATCH_UP_EVENTS_MAX: usize = 1000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchMessage {
    Created {
        watch_id: i64,
        revision: Revision,
    },
    Events {
        watch_id: i64,
        revision: Revision,
        events: Vec<Event>,
    },
    /// The watcher is gone. `compact_revision` is non-zero when its history was compacted away.
    Canceled {
        watch_id: i64,
        revision: Revision,
        compact_revision: Revision,
    },
    /// A progress notification: no event at or below `revision` is still to come for the
    /// watcher (`watch_id` -1: for every watcher of the stream).
    Progress {
        watch_id: i64,
        revision: Revision,
    },
}

pub struct WatchCreate {
    pub stream: StreamId,
    pub watch_id: i64,
    pub filter: WatchFilter,
    pub start_revision: Revision,
    pub progress_notify: bool,
    pub sender: mpsc::Sender<WatchMessage>,
}

struct Watcher {
    filter: WatchFilter,
    progress_notify: bool,
    /// Lowest revision not yet delivered (or skipped as not matching).
    next_revision: Revision,
    /// `Created` is still to be sent.
    created_pending: bool,
    /// Behind the live stream of writes; caught up from history on `sync`.
    unsynced: bool,
    sender: mpsc::Sender<WatchMessage>,
}

#[derive(Default)]
pub struct Registry {
    watchers: HashMap<(StreamId, i64), Watcher>,
    /// Streams owed a stream-wide progress notification that did not fit in their channel.
    progress_pending: HashMap<StreamId, mpsc::Sender<WatchMessage>>,
}

impl Registry {
    pub fn len(&self) -> usize {
        self.watchers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.watchers.is_empty()
    }

    /// Registers a watcher and sends what it is owed now (`Created`, then history).
    pub fn create(&mut self, store: &Store, req: WatchCreate) {
        let current = store.revision();
        let start = if req.start_revision <= 0 {
            current + 1
        } else {
            req.start_revision
        };
        let watcher = Watcher {
            filter: req.filter,
            progress_notify: req.progress_notify,
            next_revision: start,
            created_pending: true,
            unsynced: start <= current,
            sender: req.sender,
        };
        let key = (req.stream, req.watch_id);
        self.watchers.insert(key, watcher);
        self.sync_one(store, key);
    }

    /// Removes a watcher. Returns whether it existed.
    pub fn cancel(&mut self, stream: StreamId, watch_id: i64) -> bool {
        self.watchers.remove(&(stream, watch_id)).is_some()
    }

    /// Forgets every watcher of a closed stream.
    pub fn close_stream(&mut self, stream: StreamId) {
        self.watchers.retain(|(s, _), _| *s != stream);
        self.progress_pending.remove(&stream);
    }

    /// Marks every watcher behind: after the store was replaced wholesale (a snapshot was
    /// installed) the live stream of writes skipped revisions, so each catches up from the
    /// store's history on the next `sync` (or is canceled if that history is compacted).
    pub fn resync_all(&mut self) {
        for w in self.watchers.values_mut() {
            w.unsynced = true;
        }
    }

    /// Delivers the events of one applied write (all at `revision`) to the synced watchers.
    pub fn notify(&mut self, revision: Revision, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        for ((_, watch_id), w) in self.watchers.iter_mut() {
            if w.unsynced || w.created_pending || revision < w.next_revision {
                continue;
            }
            let batch: Vec<Event> = events
                .iter()
                .filter(|e| w.filter.matches_key(&e.kv.key))
                .filter_map(|e| w.filter.shape(e))
                .collect();
            if batch.is_empty() {
                w.next_revision = revision + 1;
                continue;
            }
            let msg = WatchMessage::Events {
                watch_id: *watch_id,
                revision,
                events: batch,
            };
            match w.sender.try_send(msg) {
                Ok(()) => w.next_revision = revision + 1,
                Err(_) => w.unsynced = true,
            }
        }
    }

    /// Catches up every unsynced watcher as far as its channel allows, and retries pending
    /// stream progress notifications. Called after creates and on every tick.
    pub fn sync(&mut self, store: &Store) {
        let keys: Vec<(StreamId, i64)> = self
            .watchers
            .iter()
            .filter(|(_, w)| w.unsynced || w.created_pending)
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            self.sync_one(store, key);
        }
        let pending: Vec<StreamId> = self.progress_pending.keys().copied().collect();
        for stream in pending {
            self.request_progress(store, stream, None);
        }
    }

    /// Sends a periodic progress notification to every synced watcher that asked for them.
    pub fn notify_progress(&mut self, store: &Store) {
        let revision = store.revision();
        for ((_, watch_id), w) in self.watchers.iter_mut() {
            if w.progress_notify && !w.unsynced && !w.created_pending {
                // A full channel means events are flowing; skipping this notification is safe.
                let _ = w.sender.try_send(WatchMessage::Progress {
                    watch_id: *watch_id,
                    revision,
                });
            }
        }
    }

    /// A client's RequestProgress on `stream`: answered with the current revision once every
    /// watcher of the stream has caught up, so the notification never overtakes an event.
    pub fn request_progress(
        &mut self,
        store: &Store,
        stream: StreamId,
        sender: Option<mpsc::Sender<WatchMessage>>,
    ) {
        let sender = match sender.or_else(|| self.progress_pending.get(&stream).cloned()) {
            Some(s) => s,
            None => return,
        };
        let behind = self
            .watchers
            .iter()
            .any(|((s, _), w)| *s == stream && (w.unsynced || w.created_pending));
        let msg = WatchMessage::Progress {
            watch_id: -1,
            revision: store.revision(),
        };
        if !behind && sender.try_send(msg).is_ok() {
            self.progress_pending.remove(&stream);
        } else {
            self.progress_pending.insert(stream, sender);
        }
    }

    /// `(key, range_end, next revision)` of every watcher that must catch up from history:
    /// what a paged store must hold before [`Registry::sync`] can move them on.
    pub fn catch_up_targets(&self) -> Vec<(Bytes, Bytes, Revision)> {
        self.watchers
            .values()
            .filter(|w| w.unsynced)
            .map(|w| {
                (
                    w.filter.key.clone(),
                    w.filter.range_end.clone(),
                    w.next_revision,
                )
            })
            .collect()
    }

    fn sync_one(&mut self, store: &Store, key: (StreamId, i64)) {
        let watch_id = key.1;
        let current = store.revision();
        let Some(w) = self.watchers.get_mut(&key) else {
            return;
        };
        if w.created_pending {
            let msg = WatchMessage::Created {
                watch_id,
                revision: current,
            };
            if w.sender.try_send(msg).is_err() {
                return;
            }
            w.created_pending = false;
        }
        while w.unsynced {
            if w.next_revision > current {
                w.unsynced = false;
                break;
            }
            if !store.events_resident(&w.filter.key, &w.filter.range_end, w.next_revision) {
                // A paged store must first load this history: the shard's housekeeping does,
                // then syncs again.
                return;
            }
            let chunk = match store.events_chunk(
                &w.filter.key,
                &w.filter.range_end,
                w.next_revision,
                CATCH_UP_EVENTS_MAX,
            ) {
                Ok(chunk) => chunk,
                Err(ballast_engine::Error::Compacted { compact_revision }) => {
                    let msg = WatchMessage::Canceled {
                        watch_id,
                        revision: current,
                        compact_revision,
                    };
                    if w.sender.try_send(msg).is_ok() {
                        self.watchers.remove(&key);
                    }
                    return;
                }
                Err(other) => {
                    tracing::error!(?other, "watch catch-up read failed");
                    return;
                }
            };
            // The store never splits a revision, so a chunk ends on a revision boundary.
            let next = chunk.next_revision;
            let batch: Vec<Event> = chunk
                .events
                .iter()
                .filter_map(|e| w.filter.shape(e))
                .collect();
            if !batch.is_empty() {
                let msg = WatchMessage::Events {
                    watch_id,
                    revision: current,
                    events: batch,
                };
                if w.sender.try_send(msg).is_err() {
                    return;
                }
            }
            w.next_revision = next;
        }
    }
}
