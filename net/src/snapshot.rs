//! `Maintenance.Snapshot`: the server's data as an etcd 3.4 backend file (bbolt), so that
//! `etcdctl snapshot save`, `snapshot status` and `snapshot restore` work with Ballast and the
//! restored directory starts a real etcd holding what Ballast held (`layout.rs` says what the
//! file holds, `bolt/writer.rs` how it is written).
//!
//! How one is taken ([`take`]):
//! 1. Learn every shard's revision (Status); the snapshot's revision `R` is the highest. Shards
//!    below `R` apply `Advance(R)` first (design.md §5), so no later write in any shard can take
//!    a revision at or below `R`: everything at or below `R` is final (only a compaction could
//!    still drop records, and every history chunk reports the compact revision it was read
//!    under: one that moves aborts the snapshot with [`SnapshotError::Interrupted`]).
//! 2. Read each shard's history up to `R` in chunks (`Request::History`, served by the shard
//!    from its local store like a serializable read, at most [`CHUNK_ENTRIES`] records or 4 MiB
//!    each, so a shard is never busy with a snapshot for long) and merge the shards by main
//!    revision. Shards share revision numbers, so changes of several shards at one main
//!    revision are numbered with consecutive sub revisions (shard 0's first): etcd reads them
//!    as the changes of one txn. Keys never repeat across shards, so this changes no key's
//!    history.
//! 3. A blocking thread (tokio's blocking pool, off the shard cores and the gRPC workers)
//!    writes the bbolt file into a temporary file under `<data-dir>/ballast`, unlinked as soon
//!    as it is created: a failure or a crash leaves nothing behind. The channel between the two
//!    holds at most [`WRITER_QUEUE`] batches, so memory stays bounded whatever the data size.
//! 4. The lease table (shard 0's: ids and granted TTLs) is read before step 1 and after step 2;
//!    the file holds the union (TTL from the later read), so a key at or below `R` never names
//!    a lease the file lacks.
//! 5. The cluster's users, roles, auth switch and revision, and alarms (shard 0's auth state
//!    and alarm table, `ballast_consensus::auth` and `alarms`; [`ClusterTables`]) are read
//!    before step 1 and again once every shard has advanced, each time after a linearizable
//!    read of shard 0 (so this node's copies hold every change committed before it). The two
//!    reads must agree (the auth revision moves with every auth change): the auth state and
//!    alarms were then the same from before `R` was chosen until every write at or below `R`
//!    was done, so every auth change the file holds came before every write it lacks, and the
//!    other way round: the file is one point in time, as etcd's (one bbolt transaction). When
//!    they differ, step 1 is taken again, at most [`CLUSTER_READS`] times, then the snapshot
//!    fails with [`SnapshotError::ClusterChanged`] (try again). They are written as etcd
//!    writes its `auth`, `authUsers`, `authRoles` and `alarm` buckets (`layout.rs`), so
//!    `etcdctl snapshot restore` brings back the users (with their bcrypt hashes), roles,
//!    permissions, the auth switch and the alarms, and so does `ballast snapshot restore`.
//!
//! [`stream`] then sends the file as etcd's server does: chunks of 32 KiB with
//! `remaining_bytes` counting what follows, then one last message whose blob is the file's
//! SHA-256 (`etcdctl snapshot restore` checks it).

pub mod layout;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use ballast_consensus::{
    AlarmTable, AlarmType, AuthState, NodeAlarms, NodeAuth, Request, Response, ShardError,
};
use ballast_engine::mvcc::export::{HistoryChunk, HistoryCursor, HistoryEntry};
use ballast_engine::RangeRequest;
use ballast_engine::{Error as EngineError, LeaseId, Revision};
use ballast_proto::etcdserverpb as pb;
use futures::Stream;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::bolt::writer::BoltWriter;
use crate::partition::ShardSet;
use crate::router::{RouteError, Router};

/// Records one history request asks a shard for.
pub const CHUNK_ENTRIES: usize = 1024;
/// Bytes of file per streamed message (etcd's snapshot send buffer).
pub const SEND_CHUNK_BYTES: usize = 32 * 1024;
/// Batches of encoded entries waiting for the writer thread, at most.
pub const WRITER_QUEUE: usize = 8;
/// Entries per batch handed to the writer thread.
const BATCH_ENTRIES: usize = 512;
/// Streamed messages waiting for the client, at most.
const SEND_QUEUE: usize = 4;
/// Times step 1 is taken while the users, roles or alarms keep changing (module comment).
pub const CLUSTER_READS: usize = 3;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error("snapshot file: {0}")]
    Io(#[from] io::Error),
    /// A compaction ran while the history was read: what was read no longer fits together.
    #[error(
        "ballast: a compaction (shard {shard}: compact revision {was} -> {now}) interrupted the \
         snapshot; try again"
    )]
    Interrupted {
        shard: usize,
        was: Revision,
        now: Revision,
    },
    #[error("ballast: unexpected answer from shard {shard} while taking a snapshot")]
    Unexpected { shard: usize },
    /// Users, roles, the auth switch or the alarms changed while the revision was chosen,
    /// [`CLUSTER_READS`] times in a row.
    #[error(
        "ballast: users, roles or alarms kept changing while the snapshot was taken; try again"
    )]
    ClusterChanged,
}

/// Where shard 0's cluster state is read on this node: the auth state and the alarm table its
/// replica of shard 0 applies (the `NodeAuth` and `NodeAlarms` shard 0's config holds).
#[derive(Clone, Debug, Default)]
pub struct ClusterTables {
    pub auth: Arc<NodeAuth>,
    pub alarms: Arc<NodeAlarms>,
}

/// The users, roles, auth switch and revision, and the alarms a snapshot holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterFacts {
    /// `last_index` is 0: the position in shard 0's log means nothing to the file's reader.
    pub auth: AuthState,
    pub alarms: AlarmTable,
}

/// Shard 0's cluster state after a linearizable read of shard 0 (module comment, step 5).
async fn cluster_facts(
    router: &Router,
    tables: &ClusterTables,
) -> Result<ClusterFacts, SnapshotError> {
    let probe = RangeRequest {
        key: bytes::Bytes::from_static(b"\0"),
        count_only: true,
        serializable: false,
        ..RangeRequest::default()
    };
    router.call_shard(0, Request::Range(probe)).await?;
    let mut auth = tables.auth.state();
    // Authentications move it without changing any user or role.
    auth.last_index = 0;
    Ok(ClusterFacts {
        auth,
        alarms: tables.alarms.table(),
    })
}

/// A built snapshot file, ready to stream.
#[derive(Debug)]
pub struct Snapshot {
    file: File,
    pub size_bytes: u64,
    /// The revision the file holds the data of.
    pub revision: Revision,
    /// Entries in the key bucket, and leases.
    pub changes: u64,
    pub leases: usize,
    pub compact_revision: Revision,
    /// Users, roles and alarms in the file.
    pub users: usize,
    pub roles: usize,
    pub alarms: usize,
}

/// What the writer thread is handed.
enum Batch {
    Keys(Vec<(Vec<u8>, Vec<u8>)>),
    /// The rest of the file: leases `(id, ttl)`, the compact revision (`< 0`: never), the
    /// users, roles and alarms.
    Finish {
        leases: Vec<(LeaseId, i64)>,
        compact_revision: Revision,
        facts: Box<ClusterFacts>,
    },
}

/// Takes a snapshot of every shard (see the module comment), building the file under `dir`;
/// the users, roles and alarms are read from `tables`.
pub async fn take(
    router: &Router,
    tables: &ClusterTables,
    dir: &Path,
) -> Result<Snapshot, SnapshotError> {
    let started = Instant::now();
    let leases_before = lease_table(router).await?;
    let mut reads = 0;
    let (revision, facts) = loop {
        let before = cluster_facts(router, tables).await?;
        let statuses = router.statuses().await;
        let mut revision = 0;
        for (shard, status) in statuses.into_iter().enumerate() {
            let status = status.map_err(|source| RouteError::Shard { shard, source })?;
            revision = revision.max(status.revision);
        }
        router
            .advance(ShardSet::all(router.shard_count()), revision)
            .await?;
        let after = cluster_facts(router, tables).await?;
        if before == after {
            break (revision, after);
        }
        reads += 1;
        if reads >= CLUSTER_READS {
            return Err(SnapshotError::ClusterChanged);
        }
    };
    let (users, roles) = (facts.auth.users.len(), facts.auth.roles.len());
    let alarms = facts.alarms.get(AlarmType::NONE).len();

    let file = temp_file(dir)?;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(WRITER_QUEUE);
    let writer = tokio::task::spawn_blocking(move || write_file(file, rx));

    let gathered = gather(router, revision, &tx).await;
    let (changes, compact_revision, last_main) = match gathered {
        Ok(g) => g,
        Err(err) => {
            drop(tx);
            let _ = writer.await;
            return Err(err);
        }
    };
    let leases_after = match lease_table(router).await {
        Ok(l) => l,
        Err(err) => {
            drop(tx);
            let _ = writer.await;
            return Err(err);
        }
    };
    let mut leases: BTreeMap<LeaseId, i64> = leases_before.into_iter().collect();
    leases.extend(leases_after);
    let lease_count = leases.len();
    // A writer that stopped early has its error in its result, which is returned below.
    let _ = tx.send(Batch::Finish {
        leases: leases.into_iter().collect(),
        compact_revision,
        facts: Box::new(facts),
    });
    drop(tx);
    let (file, size_bytes) = writer
        .await
        .map_err(|e| io::Error::other(format!("snapshot writer: {e}")))??;
    if last_main.max(compact_revision) < revision {
        // etcd takes its revision from the last change (or the compact revision): a restored
        // etcd would report `last_main` where Ballast reports `revision`.
        tracing::warn!(
            revision,
            last_change = last_main,
            "snapshot: no change at its revision; a restored etcd reports the last change's"
        );
    }
    tracing::info!(
        revision,
        compact_revision,
        changes,
        leases = lease_count,
        users,
        roles,
        alarms,
        size_bytes,
        took_ms = started.elapsed().as_millis() as u64,
        "snapshot built"
    );
    Ok(Snapshot {
        file,
        size_bytes,
        revision,
        changes,
        leases: lease_count,
        compact_revision,
        users,
        roles,
        alarms,
    })
}

/// One shard's side of the merge: records read and not yet merged, and where to read next.
struct ShardCursor {
    shard: usize,
    buffered: VecDeque<HistoryEntry>,
    next: Option<HistoryCursor>,
    /// The compact revision the first chunk was read under.
    compact_revision: Option<Revision>,
}

impl ShardCursor {
    /// Makes sure a record is buffered, unless the shard's history up to `upto` is all read.
    async fn fill(&mut self, router: &Router, upto: Revision) -> Result<(), SnapshotError> {
        while self.buffered.is_empty() {
            let Some(from) = self.next else {
                return Ok(());
            };
            let request = Request::History {
                from,
                upto,
                max_entries: CHUNK_ENTRIES,
            };
            let reply = router.call_shard(self.shard, request).await?;
            let Response::History(chunk) = reply.response else {
                return Err(SnapshotError::Unexpected { shard: self.shard });
            };
            let HistoryChunk {
                entries,
                next,
                compact_revision,
            } = chunk;
            match self.compact_revision {
                None => self.compact_revision = Some(compact_revision),
                Some(was) if was != compact_revision => {
                    return Err(SnapshotError::Interrupted {
                        shard: self.shard,
                        was,
                        now: compact_revision,
                    })
                }
                Some(_) => {}
            }
            self.buffered.extend(entries);
            self.next = next;
        }
        Ok(())
    }
}

/// Reads every shard's history up to `upto`, merged, into the writer; returns the number of
/// changes, the compact revision and the last change's main revision.
async fn gather(
    router: &Router,
    upto: Revision,
    tx: &std::sync::mpsc::SyncSender<Batch>,
) -> Result<(u64, Revision, Revision), SnapshotError> {
    let mut cursors: Vec<ShardCursor> = (0..router.shard_count())
        .map(|shard| ShardCursor {
            shard,
            buffered: VecDeque::new(),
            next: Some(HistoryCursor::default()),
            compact_revision: None,
        })
        .collect();
    let mut batch = Vec::with_capacity(BATCH_ENTRIES);
    let mut changes = 0u64;
    let mut last_main = 0;
    loop {
        for c in cursors.iter_mut() {
            c.fill(router, upto).await?;
        }
        let Some(main) = cursors
            .iter()
            .filter_map(|c| c.buffered.front().map(|e| e.main))
            .min()
        else {
            break;
        };
        let mut sub = 0i64;
        for c in cursors.iter_mut() {
            loop {
                c.fill(router, upto).await?;
                let Some(entry) = c.buffered.front() else {
                    break;
                };
                if entry.main != main {
                    break;
                }
                let entry = c.buffered.pop_front().expect("front");
                let key = layout::rev_key(main, sub, entry.tombstone);
                batch.push((key, layout::kv_value(&entry)));
                sub += 1;
                changes += 1;
                if batch.len() >= BATCH_ENTRIES {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_ENTRIES));
                    send(tx, Batch::Keys(full)).await?;
                }
            }
        }
        last_main = main;
    }
    if !batch.is_empty() {
        send(tx, Batch::Keys(batch)).await?;
    }
    let compact_revision = cursors
        .iter()
        .filter_map(|c| c.compact_revision)
        .max()
        .unwrap_or(-1);
    Ok((changes, compact_revision, last_main))
}

/// Hands a batch to the writer thread without blocking a tokio worker while its queue is full.
async fn send(tx: &std::sync::mpsc::SyncSender<Batch>, batch: Batch) -> Result<(), SnapshotError> {
    let mut batch = batch;
    loop {
        match tx.try_send(batch) {
            Ok(()) => return Ok(()),
            Err(std::sync::mpsc::TrySendError::Full(b)) => {
                batch = b;
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => {
                return Err(io::Error::other("snapshot writer stopped").into())
            }
        }
    }
}

/// Shard 0's leases: id and granted TTL. A lease revoked between the list and its TTL is left
/// out.
async fn lease_table(router: &Router) -> Result<Vec<(LeaseId, i64)>, SnapshotError> {
    let ids = match router.call_shard(0, Request::LeaseLeases).await?.response {
        Response::LeaseLeases(ids) => ids,
        _ => return Err(SnapshotError::Unexpected { shard: 0 }),
    };
    let mut table = Vec::with_capacity(ids.len());
    for id in ids {
        let asked = router
            .call_shard(0, Request::LeaseTimeToLive { id, keys: false })
            .await;
        match asked {
            Ok(reply) => match reply.response {
                Response::LeaseTimeToLive(t) => table.push((id, t.granted_ttl)),
                _ => return Err(SnapshotError::Unexpected { shard: 0 }),
            },
            Err(RouteError::Shard {
                source: ShardError::Engine(EngineError::LeaseNotFound { .. }),
                ..
            }) => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(table)
}

/// A file under `dir` (or the system's temporary directory when `dir` does not exist), already
/// unlinked: it lives as long as the handle.
fn temp_file(dir: &Path) -> io::Result<File> {
    let dir = if dir.is_dir() {
        dir.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let path = dir.join(format!("snapshot-{}-{nanos}.db.tmp", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

/// The writer thread: the key bucket as batches arrive, then the rest (see `layout.rs`).
fn write_file(file: File, rx: std::sync::mpsc::Receiver<Batch>) -> io::Result<(File, u64)> {
    let mut w = BoltWriter::new(BufWriter::with_capacity(1 << 20, file))?;
    w.begin_bucket(layout::KEY_BUCKET)?;
    let (leases, compact_revision, facts) = loop {
        match rx.recv() {
            Ok(Batch::Keys(entries)) => {
                for (k, v) in entries {
                    w.put(&k, &v)?;
                }
            }
            Ok(Batch::Finish {
                leases,
                compact_revision,
                facts,
            }) => break (leases, compact_revision, facts),
            Err(_) => return Err(io::Error::other("snapshot abandoned")),
        }
    };
    w.end_bucket()?;
    let mut lease_entries: Vec<_> = leases
        .into_iter()
        .map(|(id, ttl)| layout::lease_entry(id, ttl))
        .collect();
    lease_entries.sort();
    w.begin_bucket(layout::LEASE_BUCKET)?;
    for (k, v) in &lease_entries {
        w.put(k, v)?;
    }
    w.end_bucket()?;
    w.begin_bucket(layout::META_BUCKET)?;
    if compact_revision >= 0 {
        let rev = layout::rev_key(compact_revision, 0, false);
        w.put(layout::FINISHED_COMPACT_REV, &rev)?;
        w.put(layout::SCHEDULED_COMPACT_REV, &rev)?;
    }
    w.end_bucket()?;
    write_cluster_facts(&mut w, &facts)?;
    for (name, entries) in layout::METADATA_BUCKETS {
        w.begin_bucket(name)?;
        for (k, v) in entries {
            w.put(k, v)?;
        }
        w.end_bucket()?;
    }
    let (out, size) = w.finish()?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_data()?;
    Ok((file, size))
}

/// The `alarm`, `auth`, `authRoles` and `authUsers` buckets (`layout.rs`).
fn write_cluster_facts<W: io::Write + io::Seek>(
    w: &mut BoltWriter<W>,
    facts: &ClusterFacts,
) -> io::Result<()> {
    let mut alarms: Vec<Vec<u8>> = facts
        .alarms
        .get(AlarmType::NONE)
        .iter()
        .map(layout::alarm_key)
        .collect();
    alarms.sort();
    let users = facts
        .auth
        .users
        .iter()
        .map(|(name, u)| layout::user_entry(name, u))
        .collect();
    let roles = facts
        .auth
        .roles
        .iter()
        .map(|(name, r)| layout::role_entry(name, r))
        .collect();
    let buckets: [(&[u8], layout::BucketEntries); 4] = [
        (
            layout::ALARM_BUCKET,
            alarms.into_iter().map(|k| (k, Vec::new())).collect(),
        ),
        (layout::AUTH_BUCKET, layout::auth_entries(&facts.auth)),
        (layout::AUTH_ROLES_BUCKET, roles),
        (layout::AUTH_USERS_BUCKET, users),
    ];
    for (name, entries) in &buckets {
        w.begin_bucket(name)?;
        for (k, v) in entries {
            w.put(k, v)?;
        }
        w.end_bucket()?;
    }
    Ok(())
}

/// The file as etcd streams it: [`SEND_CHUNK_BYTES`] chunks with the bytes remaining after
/// each, then the SHA-256 of everything sent. Reading happens on a blocking thread; a client
/// that goes away stops it, and the unlinked file vanishes when the thread drops it.
pub fn stream(
    snapshot: Snapshot,
) -> impl Stream<Item = Result<pb::SnapshotResponse, tonic::Status>> + Send + 'static {
    let (tx, rx) = mpsc::channel(SEND_QUEUE);
    tokio::task::spawn_blocking(move || {
        let Snapshot {
            mut file,
            size_bytes,
            ..
        } = snapshot;
        let result = send_file(&mut file, size_bytes, &tx);
        if let Err(err) = result {
            tracing::warn!(%err, "snapshot: sending stopped");
            let _ = tx.blocking_send(Err(tonic::Status::unknown(err.to_string())));
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

fn send_file(
    file: &mut File,
    size: u64,
    tx: &mpsc::Sender<Result<pb::SnapshotResponse, tonic::Status>>,
) -> io::Result<()> {
    file.seek(SeekFrom::Start(0))?;
    let mut hash = Sha256::new();
    let mut sent = 0u64;
    while sent < size {
        let n = SEND_CHUNK_BYTES.min((size - sent) as usize);
        let mut buf = vec![0u8; n];
        file.read_exact(&mut buf)?;
        hash.update(&buf);
        sent += n as u64;
        let message = pb::SnapshotResponse {
            header: None,
            remaining_bytes: size - sent,
            blob: buf.into(),
            // etcd 3.5 names its storage version here; 3.4 (whose file this is) sends none.
            version: String::new(),
        };
        if tx.blocking_send(Ok(message)).is_err() {
            return Ok(()); // the client went away
        }
    }
    let digest = pb::SnapshotResponse {
        header: None,
        remaining_bytes: 0,
        blob: hash.finalize().to_vec().into(),
        version: String::new(),
    };
    let _ = tx.blocking_send(Ok(digest));
    Ok(())
}
