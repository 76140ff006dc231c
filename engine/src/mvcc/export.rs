//! Reading a store's whole history out in bounded chunks, for `Maintenance.Snapshot` (which
//! writes it as etcd's bbolt file; `net/src/snapshot`).
//!
//! What a chunk holds: the history records with `main <= upto`, in `(main, sub)` order, that
//! etcd would still hold after the store's compaction: every record above the compact
//! revision, and at or below it only the version each key had at the compact revision (never
//! a tombstone). On an unpaged store history holds exactly those; on a paged store the image
//! may still hold records a lazy compaction dropped (`paging.rs`), so a record at or below the
//! compact revision is kept only when its key's (compacted) index names it as the key's
//! version at the compact revision.
//!
//! Consistency across chunks: records at or below `upto` never change once written, except
//! by a compaction; every chunk reports the compact revision it was read under, so a reader
//! that sees it move between chunks knows its earlier chunks are stale.
//!
//! Worked example (compact revision 4): `put a@2, put a@3, put b@3.1, del a@4, put a@5`
//! exports `b@3.1, a@5`: `a@2`, `a@3` are superseded at 4, `a@4` is a tombstone at 4.

use std::ops::Bound;

use super::paging::{Missing, Span};
use super::{Rev, Store};
use crate::types::*;

/// Key and value bytes after which a chunk stops (a record larger than this comes alone).
pub const HISTORY_CHUNK_BYTES_MAX: usize = 4 << 20;

/// One change of a store's history: the record etcd keeps under key bucket key
/// `main '_' sub` (with a trailing `t` for a tombstone, whose `kv` holds only the key).
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryEntry {
    pub main: Revision,
    pub sub: i64,
    pub tombstone: bool,
    pub kv: KeyValue,
}

/// Where a history read resumes: the first `(main, sub)` not yet read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct HistoryCursor {
    pub main: Revision,
    pub sub: i64,
}

/// A stretch of history and where the next one starts.
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryChunk {
    pub entries: Vec<HistoryEntry>,
    /// `None`: every record up to `upto` was read.
    pub next: Option<HistoryCursor>,
    /// The store's compact revision when the chunk was read (-1: never compacted).
    pub compact_revision: Revision,
}

impl Store {
    /// At most `max_entries` (at least one) records from `from` on with `main <= upto`, as
    /// the module comment says, stopping early past [`HISTORY_CHUNK_BYTES_MAX`] bytes. On a
    /// paged store call it after [`Store::missing`] with `Access::History` returned `None`; the
    /// chunk then also stops where the records in memory stop being contiguous.
    pub fn history_chunk(
        &self,
        from: HistoryCursor,
        upto: Revision,
        max_entries: usize,
    ) -> HistoryChunk {
        let start = Rev {
            main: from.main.max(0),
            sub: from.sub.max(0),
        };
        let mut entries = Vec::new();
        let mut next = None;
        let stop = Rev {
            main: upto.saturating_add(1),
            sub: 0,
        };
        if start >= stop {
            return HistoryChunk {
                entries,
                next,
                compact_revision: self.compact_main,
            };
        }
        let end = match self.events_end(start) {
            Bound::Excluded(hi) if hi < stop => {
                next = Some(HistoryCursor {
                    main: hi.main,
                    sub: hi.sub,
                });
                Bound::Excluded(hi)
            }
            _ => Bound::Excluded(stop),
        };
        let mut bytes = 0usize;
        for (rev, record) in self.history.range((Bound::Included(start), end)) {
            if entries.len() >= max_entries.max(1)
                || (!entries.is_empty() && bytes >= HISTORY_CHUNK_BYTES_MAX)
            {
                next = Some(HistoryCursor {
                    main: rev.main,
                    sub: rev.sub,
                });
                break;
            }
            if rev.main <= self.compact_main && !self.kept_by_compaction(*rev, &record.kv.key) {
                continue;
            }
            bytes += record.kv.key.len() + record.kv.value.len();
            entries.push(HistoryEntry {
                main: rev.main,
                sub: rev.sub,
                tombstone: record.tombstone,
                kv: record.kv.clone(),
            });
        }
        HistoryChunk {
            entries,
            next,
            compact_revision: self.compact_main,
        }
    }

    /// Whether a record at or below the compact revision is one compaction keeps: the key's
    /// version at the compact revision.
    fn kept_by_compaction(&self, rev: Rev, key: &[u8]) -> bool {
        self.index
            .get(key)
            .and_then(|ki| ki.get(self.compact_main))
            .is_some_and(|kept| kept == rev)
    }

    /// What [`Store::history_chunk`] from `from` needs in memory: the stretch of history from
    /// there, and the key index of every record in it at or below the compact revision.
    pub(super) fn history_missing(&self, from: HistoryCursor, upto: Revision, m: &mut Missing) {
        let paging = self.paging.as_ref().expect("paged");
        let start = Rev {
            main: from.main.max(0),
            sub: from.sub.max(0),
        };
        if start.main > upto {
            return;
        }
        if !paging.record_resident(start) {
            m.history = Some((start, paging.history_from));
            return;
        }
        let stop = Rev {
            main: self.compact_main.min(upto).saturating_add(1),
            sub: 0,
        };
        let end = match self.events_end(start) {
            Bound::Excluded(hi) if hi < stop => Bound::Excluded(hi),
            _ => Bound::Excluded(stop),
        };
        if start >= stop {
            return;
        }
        for (_, record) in self.history.range((Bound::Included(start), end)) {
            let key = &record.kv.key;
            if !self.index.contains_key(key) && !self.key_known_absent(key) {
                m.spans.push((Span::point(key), None));
            }
        }
        m.spans.dedup();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn put(store: &mut Store, key: &str, value: &str) {
        store
            .put(&PutRequest {
                key: Bytes::copy_from_slice(key.as_bytes()),
                value: Bytes::copy_from_slice(value.as_bytes()),
                ..PutRequest::default()
            })
            .expect("put");
    }

    fn del(store: &mut Store, key: &str) {
        store
            .delete_range(&DeleteRangeRequest {
                key: Bytes::copy_from_slice(key.as_bytes()),
                ..DeleteRangeRequest::default()
            })
            .expect("delete");
    }

    fn read_all(store: &Store, upto: Revision, max: usize) -> Vec<(i64, i64, bool, String)> {
        let mut out = Vec::new();
        let mut from = HistoryCursor::default();
        for _ in 0..1000 {
            let chunk = store.history_chunk(from, upto, max);
            assert!(chunk.entries.len() <= max);
            out.extend(chunk.entries.into_iter().map(|e| {
                (
                    e.main,
                    e.sub,
                    e.tombstone,
                    String::from_utf8_lossy(&e.kv.key).into_owned(),
                )
            }));
            match chunk.next {
                Some(next) => from = next,
                None => return out,
            }
        }
        panic!("history read did not end");
    }

    #[test]
    fn exports_every_record_up_to_the_revision_in_chunks() {
        let mut s = Store::new();
        put(&mut s, "a", "1"); // 2
        s.txn(&TxnRequest {
            success: vec![
                RequestOp::Put(PutRequest {
                    key: Bytes::from_static(b"b"),
                    value: Bytes::from_static(b"x"),
                    ..PutRequest::default()
                }),
                RequestOp::Put(PutRequest {
                    key: Bytes::from_static(b"c"),
                    value: Bytes::from_static(b"y"),
                    ..PutRequest::default()
                }),
            ],
            ..TxnRequest::default()
        })
        .expect("txn"); // 3.0, 3.1
        del(&mut s, "a"); // 4 (tombstone)
        put(&mut s, "a", "2"); // 5
        let want = vec![
            (2, 0, false, "a".to_owned()),
            (3, 0, false, "b".to_owned()),
            (3, 1, false, "c".to_owned()),
            (4, 0, true, "a".to_owned()),
            (5, 0, false, "a".to_owned()),
        ];
        for max in [1, 2, 3, 100] {
            assert_eq!(read_all(&s, 5, max), want, "chunks of {max}");
        }
        assert_eq!(read_all(&s, 3, 2), want[..3].to_vec());
        let past = s.history_chunk(HistoryCursor { main: 9, sub: 0 }, 5, 10);
        assert!(past.entries.is_empty() && past.next.is_none());
        let chunk = s.history_chunk(HistoryCursor::default(), 5, 100);
        assert_eq!(chunk.compact_revision, -1);
        let tomb = &chunk.entries[3];
        assert_eq!(tomb.kv.key, Bytes::from_static(b"a"));
        let a = &chunk.entries[4].kv;
        assert_eq!((a.create_revision, a.mod_revision, a.version), (5, 5, 1));
    }

    #[test]
    fn keeps_what_compaction_keeps() {
        let mut s = Store::new();
        put(&mut s, "a", "1"); // 2
        put(&mut s, "a", "2"); // 3
        put(&mut s, "b", "x"); // 4
        del(&mut s, "a"); // 5
        put(&mut s, "c", "z"); // 6
        put(&mut s, "a", "3"); // 7
        s.compact(5).expect("compact");
        let got = read_all(&s, 7, 2);
        assert_eq!(
            got,
            vec![
                (4, 0, false, "b".to_owned()),
                (6, 0, false, "c".to_owned()),
                (7, 0, false, "a".to_owned()),
            ]
        );
        assert_eq!(
            s.history_chunk(HistoryCursor::default(), 7, 9)
                .compact_revision,
            5
        );
    }
}
