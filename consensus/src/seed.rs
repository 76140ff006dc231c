//! Seeds a new shard's storage with a store built elsewhere (`ballast snapshot restore`, which
//! migrates an etcd backend file), so that the shard starts from it as from any checkpoint.
//!
//! The store is written the way a follower writes a snapshot it receives from its leader
//! (`durable.rs`, `snapshot.rs`): the in-memory store is exported in image chunks
//! (`StoreExport`) into a new page log (`ImageImport`), committed at the first log index with
//! the facts of a snapshot *installed* at log id `(term 0, index 0)` and the cluster's initial
//! membership, the log id and membership at which `raft.initialize` would have put them. At
//! the first start `durable::open` finds the image ahead of the empty WAL and, as after a
//! crash that followed an install, purges the log up to it; openraft then sees a group whose
//! log begins after (0, 0) with that membership: already initialized, so no member calls
//! `initialize` and the members elect a leader over the restored state. Every member restored
//! from the same file with the same `--initial-cluster` writes the same image and facts, so a
//! cluster's replicas start identical, as `etcdctl snapshot restore` makes etcd's members.
//!
//! A single-node server names itself node 1 with no address (as its `initialize` does); a
//! cluster member lists every initial member with its id and first peer URL (`ClusterConfig`).
//!
//! The facts also carry the alarm table and the auth state (users, roles, the enabled flag
//! and the auth revision) the shard starts with: for shard 0, which holds the cluster's
//! (`alarms.rs`, `auth.rs`), those the etcd file held; for the other shards, empty ones, as a
//! shard's own facts carry when it is not shard 0. At the first start they reach the node's
//! tables as any checkpoint's facts do (`shard.rs`, `attach_node_state`). The auth state's
//! `last_index` must be 0: the log starts anew, so no later entry may be taken for a replay.
//!
//! The WAL is not touched: it is created at the first start, in `<dir>/wal` or `--wal-dir`.

use std::collections::{BTreeMap, BTreeSet};

use ballast_engine::mvcc::image::transfer::{ImageImport, StoreExport};
use ballast_engine::Store;
use openraft::impls::BasicNode;

use crate::alarms::AlarmTable;
use crate::auth::AuthState;
use crate::durable::{encode_installed_app, ShardStorage};
use crate::log_store::log_id;
use crate::types::{Membership, NodeId, StoredMembership};

/// Backend log index (1-based) the seeded image is committed at: openraft's index 0.
pub const SEEDED_INDEX: u64 = 1;

/// The membership of a seeded shard: `members` maps node ids to peer addresses.
pub fn seeded_membership(members: &BTreeMap<NodeId, String>) -> Result<StoredMembership, String> {
    let voters: BTreeSet<NodeId> = members.keys().copied().collect();
    let nodes: BTreeMap<NodeId, BasicNode> = members
        .iter()
        .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
        .collect();
    let membership = Membership::new(vec![voters], nodes).map_err(|e| e.to_string())?;
    Ok(StoredMembership::new(Some(log_id(0, 0)), membership))
}

/// Writes `store`, with `alarms` and `auth`, as the state of the shard whose storage is
/// `storage` (module comment). The shard's page log must not exist yet. Runs a glommio
/// executor of its own (the page log's files are glommio DMA files) and returns once the
/// image is committed and synced.
pub fn seed(
    storage: &ShardStorage,
    store: Store,
    members: &BTreeMap<NodeId, String>,
    alarms: &AlarmTable,
    auth: &AuthState,
) -> Result<(), String> {
    if auth.last_index != 0 {
        return Err(format!(
            "a seeded auth state names log index {} as applied; the log starts anew",
            auth.last_index
        ));
    }
    let membership = seeded_membership(members)?;
    let app = encode_installed_app(Some(&log_id(0, 0)), &membership, alarms, auth);
    let pages_dir = storage.dir.join("pages");
    let config = storage.pages.clone();
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let dir_text = pages_dir.display().to_string();
    let thread = crate::runtime::spawn_executor("seed", None, move || async move {
        let result = async {
            let disk = ballast_engine_glommio::GlommioDisk::new(&pages_dir)
                .map_err(|e| format!("{}: {e}", pages_dir.display()))?;
            let mut import = ImageImport::create(disk, config)
                .await
                .map_err(|e| e.to_string())?;
            let mut export = StoreExport::new(Box::new(store));
            while let Some(chunk) = export.next_chunk() {
                import.push(&chunk).await.map_err(|e| e.to_string())?;
            }
            import
                .finish(SEEDED_INDEX, &app)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<(), String>(())
        }
        .await;
        let _ = tx.send(result);
    })
    .map_err(|e| format!("starting an executor to write {dir_text}: {e}"))?;
    let result = rx
        .recv()
        .unwrap_or_else(|_| Err(format!("writing {dir_text}: the writer thread died")));
    let _ = thread.join();
    result.map_err(|e| format!("writing {dir_text}: {e}"))
}
