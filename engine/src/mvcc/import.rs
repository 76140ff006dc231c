//! Builds a store from a history written elsewhere: an etcd backend file being migrated into
//! Ballast (`ballast snapshot restore`). The changes arrive in revision order, each with the
//! key-value exactly as etcd stored it (create revision, mod revision, version, lease); the
//! builder indexes them as the store's own writes would have, then applies the file's
//! compaction with [`Store::compact`] and attaches the live keys to their leases.
//!
//! What etcd 3.4's `mvcc.store.restore` does with the same file, and so what this does:
//! - A key's first change seen starts its index, whatever revision it is: after a compaction
//!   the older versions are gone from the file, and the record itself carries the create
//!   revision and version.
//! - A deletion of a key that is not live (its put was compacted away by a compaction that
//!   stopped part way, which deletes old revisions first) is skipped, as etcd skips it.
//! - The store's revision is the last change's main revision, or the compact revision when
//!   that is higher (every change up to the compact revision may have been compacted away).
//! - Keys are attached to the lease their current version names; a lease that does not exist
//!   is refused here ([`ImportError::MissingLease`]) where etcd logs it and leaves the key
//!   unattached: Ballast keeps "a key is attached exactly to its version's lease" as an
//!   invariant, and a consistent etcd file never names a revoked lease.
//!
//! Sub revisions are renumbered from 0 within each main revision in arrival order (a file's
//! keys split over several shards leave gaps otherwise); clients never see them, and the order
//! of the changes inside a revision is kept.
//!
//! Worked example (an etcd file after `compact 4`):
//!
//! ```text
//! 3_0 a {create 2, mod 3, version 2}     -> a's index {3.0}; version 2 as stored
//! 4_0 b {create 4, mod 4, version 1}
//! 5_0t a                                  -> a's generation {3.0, 5.0(t)}
//! 5_1 c {create 5, ..., lease 7}          -> 5.1: c attached to lease 7 at finish
//! finish(compact 4): revision 5, compact revision 4; a read at 4 sees a@3 and b@4
//! ```

use std::collections::BTreeMap;

use bytes::Bytes;

use super::history::Record;
use super::key_index::KeyIndex;
use super::{Rev, Store};
use crate::lease::MAX_LEASE_TTL_SECS;
use crate::types::{KeyValue, LeaseId, Revision};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    #[error("revision {main}_{sub} is not after the previous change (revision {prev_main}_{prev_sub}): changes must come in revision order")]
    OutOfOrder {
        main: Revision,
        sub: i64,
        prev_main: Revision,
        prev_sub: i64,
    },
    #[error("revision {main}_{sub}: {reason}")]
    BadChange {
        main: Revision,
        sub: i64,
        reason: &'static str,
    },
    #[error("lease {lease_id:016x} appears twice")]
    DuplicateLease { lease_id: LeaseId },
    #[error("lease {lease_id:016x} with TTL {ttl}: lease ids are positive and TTLs in 0..={MAX_LEASE_TTL_SECS}")]
    BadLease { lease_id: LeaseId, ttl: i64 },
    #[error("key {key:?} names lease {lease_id:016x}, which the lease table does not hold")]
    MissingLease { key: String, lease_id: LeaseId },
    #[error("compact revision {compact} is below the first revision 0")]
    BadCompact { compact: Revision },
}

/// What a finished import holds, for the operator's log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportSummary {
    /// Changes kept (puts and deletions), after the compaction.
    pub changes: u64,
    /// Deletions of keys that were not live, skipped as etcd skips them.
    pub skipped_tombstones: u64,
    /// Keys alive at the store's revision.
    pub live_keys: u64,
    pub leases: u64,
}

/// Builds one store from changes in revision order (module comment).
#[derive(Debug)]
pub struct StoreBuilder {
    store: Store,
    /// The source's revision of the last change taken.
    last_source: Option<(Revision, i64)>,
    /// The last revision indexed, in the store's numbering.
    last_rev: Option<Rev>,
    summary: ImportSummary,
}

impl Default for StoreBuilder {
    fn default() -> StoreBuilder {
        StoreBuilder::new()
    }
}

impl StoreBuilder {
    pub fn new() -> StoreBuilder {
        StoreBuilder {
            store: Store::new(),
            last_source: None,
            last_rev: None,
            summary: ImportSummary::default(),
        }
    }

    /// Adds the change at revision `main`/`sub` (the source's numbering): a put of `kv`, or
    /// with `tombstone` the deletion of `kv.key` (whose other fields are ignored).
    pub fn change(
        &mut self,
        main: Revision,
        sub: i64,
        kv: KeyValue,
        tombstone: bool,
    ) -> Result<(), ImportError> {
        let bad = |reason| ImportError::BadChange { main, sub, reason };
        if main < 2 || sub < 0 {
            // Revision 1 is the empty store's: etcd's first change is at 2.
            return Err(bad("changes start at revision 2 and sub revision 0"));
        }
        if kv.key.is_empty() {
            return Err(bad("empty key"));
        }
        if let Some((prev_main, prev_sub)) = self.last_source {
            if (main, sub) <= (prev_main, prev_sub) {
                return Err(ImportError::OutOfOrder {
                    main,
                    sub,
                    prev_main,
                    prev_sub,
                });
            }
        }
        self.last_source = Some((main, sub));
        let s = &mut self.store;
        let live = s.index.get(&kv.key).is_some_and(KeyIndex::is_live);
        if tombstone && !live {
            self.summary.skipped_tombstones += 1;
            return Ok(());
        }
        if !tombstone {
            if kv.mod_revision != main {
                return Err(bad("the value's mod revision is not its revision"));
            }
            if kv.create_revision < 1 || kv.create_revision > main || kv.version < 1 {
                return Err(bad("create revision or version out of range"));
            }
            if kv.lease < 0 {
                return Err(bad("negative lease id"));
            }
        }
        let rev = Rev {
            main,
            sub: match self.last_rev {
                Some(last) if last.main == main => last.sub + 1,
                _ => 0,
            },
        };
        self.last_rev = Some(rev);
        let index = s.index.entry(kv.key.clone()).or_insert_with(KeyIndex::new);
        let record = if tombstone {
            index.tombstone(rev);
            Record {
                kv: KeyValue {
                    key: kv.key,
                    mod_revision: main,
                    ..KeyValue::default()
                },
                tombstone: true,
            }
        } else {
            index.put(rev);
            Record {
                kv,
                tombstone: false,
            }
        };
        s.history.insert(rev, record);
        s.current_revision = main;
        self.summary.changes += 1;
        Ok(())
    }

    /// Adds a lease granted `ttl_secs` (its clock starts when a shard leader takes it up).
    pub fn lease(&mut self, lease_id: LeaseId, ttl_secs: i64) -> Result<(), ImportError> {
        if lease_id <= 0 || !(0..=MAX_LEASE_TTL_SECS).contains(&ttl_secs) {
            return Err(ImportError::BadLease {
                lease_id,
                ttl: ttl_secs,
            });
        }
        if self.store.lessor.exists(lease_id) {
            return Err(ImportError::DuplicateLease { lease_id });
        }
        self.store.lessor.restore(lease_id, ttl_secs, 0);
        self.summary.leases += 1;
        Ok(())
    }

    /// The store at revision `max(last change, revision)`, compacted at `compact` when given
    /// (etcd's `finishedCompactRev`, or its `scheduledCompactRev` when that is higher), with
    /// every live key attached to its lease.
    pub fn finish(
        mut self,
        revision: Revision,
        compact: Option<Revision>,
    ) -> Result<(Store, ImportSummary), ImportError> {
        let s = &mut self.store;
        s.current_revision = s.current_revision.max(revision);
        if let Some(at) = compact {
            if at < 0 {
                return Err(ImportError::BadCompact { compact: at });
            }
            s.current_revision = s.current_revision.max(at);
            s.compact(at)
                .expect("a fresh store compacts at or below its revision");
        }
        let current = s.current_revision;
        let mut attach: BTreeMap<Bytes, LeaseId> = BTreeMap::new();
        let mut live = 0;
        for (key, index) in &s.index {
            let Some(rev) = index.get(current) else {
                continue;
            };
            live += 1;
            let kv = &s
                .history
                .get(rev)
                .expect("indexed revision has a record")
                .kv;
            if kv.lease != 0 {
                attach.insert(key.clone(), kv.lease);
            }
        }
        for (key, lease_id) in attach {
            if !s.lessor.attach(lease_id, &key) {
                return Err(ImportError::MissingLease {
                    key: String::from_utf8_lossy(&key).into_owned(),
                    lease_id,
                });
            }
        }
        self.summary.live_keys = live;
        self.summary.changes = s.history.len() as u64;
        Ok((self.store, self.summary))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::RangeRequest;

    fn kv(key: &str, value: &str, create: i64, main: i64, version: i64, lease: i64) -> KeyValue {
        KeyValue {
            key: Bytes::copy_from_slice(key.as_bytes()),
            create_revision: create,
            mod_revision: main,
            version,
            value: Bytes::copy_from_slice(value.as_bytes()),
            lease,
        }
    }

    fn tomb(key: &str) -> KeyValue {
        KeyValue {
            key: Bytes::copy_from_slice(key.as_bytes()),
            ..KeyValue::default()
        }
    }

    fn read(s: &Store, key: &str, at: i64) -> crate::Result<Vec<KeyValue>> {
        s.range(&RangeRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            revision: at,
            ..RangeRequest::default()
        })
        .map(|r| r.kvs)
    }

    /// The same history written through the store's own requests and imported change by
    /// change reads the same at every revision.
    #[test]
    fn imported_history_reads_as_written() {
        let mut b = StoreBuilder::new();
        b.lease(7, 60).unwrap();
        b.change(2, 0, kv("a", "1", 2, 2, 1, 0), false).unwrap();
        b.change(3, 0, kv("a", "2", 2, 3, 2, 0), false).unwrap();
        b.change(3, 1, kv("b", "x", 3, 3, 1, 7), false).unwrap();
        b.change(4, 0, tomb("a"), true).unwrap();
        b.change(5, 0, kv("a", "3", 5, 5, 1, 0), false).unwrap();
        let (s, summary) = b.finish(6, None).unwrap();
        s.check_invariants();
        assert_eq!(s.revision(), 6);
        assert_eq!(s.compact_revision(), 0);
        assert_eq!(read(&s, "a", 3).unwrap()[0].value, "2");
        assert_eq!(read(&s, "a", 3).unwrap()[0].version, 2);
        assert!(read(&s, "a", 4).unwrap().is_empty());
        assert_eq!(read(&s, "a", 6).unwrap()[0].create_revision, 5);
        assert_eq!(read(&s, "b", 0).unwrap()[0].lease, 7);
        assert_eq!(
            s.lease_time_to_live(7, true, 0).unwrap().keys,
            vec![Bytes::from_static(b"b")]
        );
        assert_eq!(
            summary,
            ImportSummary {
                changes: 5,
                skipped_tombstones: 0,
                live_keys: 2,
                leases: 1
            }
        );
        // The next write takes the next revision and continues the key's version.
        let mut s = s;
        let put = s
            .put(&crate::types::PutRequest {
                key: Bytes::from_static(b"a"),
                value: Bytes::from_static(b"4"),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(put.revision, 7);
        assert_eq!(read(&s, "a", 0).unwrap()[0].version, 2);
        assert_eq!(read(&s, "a", 0).unwrap()[0].create_revision, 5);
    }

    #[test]
    fn compacted_file_keeps_compaction_and_revision() {
        // After compact 5 etcd keeps a@3 (alive at 5) and drops a@2 and the whole life of
        // c (deleted at 4): the file starts at 3. Its last change is at 5, compacted at 6.
        let mut b = StoreBuilder::new();
        b.change(3, 0, kv("a", "2", 2, 3, 2, 0), false).unwrap();
        // A compaction cut short left c's deletion without its put: skipped, as etcd does.
        b.change(4, 0, tomb("c"), true).unwrap();
        b.change(5, 0, kv("b", "x", 5, 5, 1, 0), false).unwrap();
        let (mut s, summary) = b.finish(0, Some(6)).unwrap();
        s.check_invariants();
        assert_eq!(summary.skipped_tombstones, 1);
        assert_eq!(s.revision(), 6);
        assert_eq!(s.compact_revision(), 6);
        assert!(matches!(
            read(&s, "a", 5),
            Err(crate::Error::Compacted {
                compact_revision: 6
            })
        ));
        assert_eq!(read(&s, "a", 6).unwrap()[0].version, 2);
        assert!(s.compact(6).is_err());
    }

    #[test]
    fn bad_input_is_refused() {
        let mut b = StoreBuilder::new();
        b.change(3, 1, kv("a", "1", 3, 3, 1, 0), false).unwrap();
        assert!(matches!(
            b.change(3, 0, kv("b", "1", 3, 3, 1, 0), false),
            Err(ImportError::OutOfOrder { .. })
        ));
        assert!(matches!(
            b.change(4, 0, kv("b", "1", 4, 5, 1, 0), false),
            Err(ImportError::BadChange { .. })
        ));
        assert!(matches!(
            b.change(1, 0, kv("b", "1", 1, 1, 1, 0), false),
            Err(ImportError::BadChange { .. })
        ));
        b.change(6, 0, kv("b", "1", 6, 6, 1, 9), false).unwrap();
        b.lease(8, 10).unwrap();
        assert_eq!(
            b.lease(8, 10),
            Err(ImportError::DuplicateLease { lease_id: 8 })
        );
        assert!(matches!(b.lease(10, -1), Err(ImportError::BadLease { .. })));
        assert!(matches!(
            b.finish(0, None),
            Err(ImportError::MissingLease { lease_id: 9, .. })
        ));
    }
}
