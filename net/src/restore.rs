//! `ballast snapshot restore FILE [flags]`: migrates etcd's data into a new Ballast data dir,
//! offline, as `etcdctl snapshot restore` makes a new etcd data dir. FILE is an etcd 3.4 or
//! 3.5 backend file: what `etcdctl snapshot save` writes (with its SHA-256 trailer, checked
//! unless `--skip-hash-check`), or a cleanly stopped etcd's `member/snap/db` (no trailer: needs
//! `--skip-hash-check`, as etcdctl does). The flags are the server's (`--data-dir`, `--name`,
//! `--initial-cluster`, `--initial-cluster-token`, `--initial-advertise-peer-urls`, `--shards`,
//! `--partition`, `ETCD_*` variables...), so the member then starts with the same ones.
//!
//! What is read (`bolt/reader.rs` reads the file; bucket layouts in `snapshot/layout.rs`):
//! - bucket `key`: every change the file keeps, in revision order, each put with its
//!   `mvccpb.KeyValue` as etcd stored it (create and mod revision, version, lease), each
//!   deletion (`t`-marked revision) as a tombstone;
//! - bucket `lease`: every lease's id and granted TTL (its clock restarts when a shard leader
//!   takes it up, as etcd restarts lease clocks when a member starts);
//! - bucket `meta`: `finishedCompactRev` and `scheduledCompactRev` (the compact revision is the
//!   higher: etcd finishes a scheduled compaction when it restarts); `consistent_index` (and
//!   3.5's `term`) are etcd's Raft position, only logged;
//! - buckets `auth`, `authUsers`, `authRoles`: etcd's auth store, kept as `etcdctl snapshot
//!   restore` keeps it: every user with its bcrypt hash as etcd stored it (Ballast hashes with
//!   bcrypt too, so the original passwords authenticate), its roles and `no_password`; every
//!   role with its key permissions; `authEnabled` and `authRevision`;
//! - bucket `alarm`: the alarms in force, kept as etcd 3.4.23 keeps them (checked: a NOSPACE
//!   alarm raised before `snapshot save` is listed by the restored member, under the old
//!   member id, and refuses writes until `etcdctl alarm disarm`);
//! - buckets `members`, `members_removed`: dropped (logged with what they held): the members
//!   come from the flags, as with etcdctl.
//!
//! What is written: the layout (`--shards`, `--partition`, recorded as the server records a new
//! data dir's) and each shard's store, built by `engine::mvcc::import::StoreBuilder` from the
//! changes whose keys the partition map gives it, every shard at the same revision (the file's)
//! and compact revision, every shard holding every lease (as `LeaseGrant` leaves them), and
//! written by `consensus::seed` as a checkpoint its Raft group starts from; shard 0's
//! checkpoint facts carry the auth state and the alarms (shard 0 holds the cluster's, where
//! the server's own auth and alarm entries put them). Everything goes
//! into `<data-dir>/ballast.restoring/` first and is renamed to `<data-dir>/ballast/` at the
//! end, so a restore that fails leaves no Ballast data behind; a data dir that already holds
//! `ballast/` is refused before anything is written.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use ballast_consensus::auth::{PermType, Permission, Role, User};
use ballast_consensus::durable::ShardStorage;
use ballast_consensus::{AlarmMember, AlarmTable, AlarmType, AuthState, NodeId, ShardId};
use ballast_engine::mvcc::import::{ImportSummary, StoreBuilder};
use ballast_engine::{KeyValue, LeaseId, Revision};
use ballast_proto::{authpb, etcdserverpb, mvccpb};
use prost::Message as _;
use sha2::{Digest, Sha256};

pub use crate::bolt::reader::{BoltError, BoltFile, Bucket, Entry};

use crate::flags::{self, CommandLine};
use crate::snapshot::layout;

/// etcd's `leasepb.Lease` (lease bucket values).
#[derive(Clone, PartialEq, prost::Message)]
struct LeasePb {
    #[prost(int64, tag = "1")]
    id: i64,
    #[prost(int64, tag = "2")]
    ttl: i64,
    #[prost(int64, tag = "3")]
    remaining_ttl: i64,
}

const SHA256_BYTES: u64 = 32;
/// Where a restore writes before it renames to `<data-dir>/ballast`.
const STAGING: &str = "ballast.restoring";

/// What `ballast snapshot restore` was asked.
pub struct RestoreArgs {
    pub file: PathBuf,
    pub skip_hash_check: bool,
    pub cl: CommandLine,
}

/// Parses `ballast snapshot restore FILE [flags]` (`args` from the program name on).
pub fn parse_args(args: &[String]) -> anyhow::Result<RestoreArgs> {
    const USAGE: &str = "usage: ballast snapshot restore FILE --data-dir DIR [--name NAME \
        --initial-cluster NAME=URL,... --initial-cluster-token TOKEN \
        --initial-advertise-peer-urls URL --shards N --partition PREFIX=SHARD,... \
        --skip-hash-check]";
    match args.get(2).map(String::as_str) {
        Some("restore") => {}
        Some(other) => bail!("unknown snapshot command {other:?} (only restore)\n{USAGE}"),
        None => bail!("{USAGE}"),
    }
    let Some(file) = args.get(3).filter(|a| !a.starts_with('-')) else {
        bail!("snapshot restore names no file\n{USAGE}");
    };
    let mut skip_hash_check = false;
    let mut rest = vec![args[0].clone()];
    for arg in &args[4..] {
        let bare = arg.trim_start_matches('-');
        match bare.split_once('=') {
            None if bare == "skip-hash-check" => skip_hash_check = true,
            Some(("skip-hash-check", v)) => {
                skip_hash_check = match v {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => bail!("--skip-hash-check={v}: not a boolean"),
                }
            }
            _ => rest.push(arg.clone()),
        }
    }
    let cl = flags::parse(rest).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(RestoreArgs {
        file: PathBuf::from(file),
        skip_hash_check,
        cl,
    })
}

/// `ballast snapshot ...` from `main`: parses, restores, reports on stdout.
pub fn main(args: &[String]) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // An error is one line (with its causes), as etcdctl prints it, not a backtrace.
    match parse_args(args).and_then(|args| restore(&args)) {
        Ok(report) => {
            println!("{report}");
            Ok(())
        }
        Err(err) => {
            eprintln!("Error: {err:#}");
            std::process::exit(1);
        }
    }
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub data_dir: PathBuf,
    pub revision: Revision,
    /// The compact revision, 0 when never compacted.
    pub compact_revision: Revision,
    pub shards: Vec<ImportSummary>,
    pub leases: usize,
    pub auth_enabled: bool,
    pub users: usize,
    pub roles: usize,
    pub alarms: usize,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let changes: u64 = self.shards.iter().map(|s| s.changes).sum();
        let live: u64 = self.shards.iter().map(|s| s.live_keys).sum();
        write!(
            f,
            "restored into {}: revision {}, compact revision {}, {changes} changes, {live} \
             keys, {} leases, {} users, {} roles, auth {}, {} alarms, {} shard(s)",
            self.data_dir.display(),
            self.revision,
            self.compact_revision,
            self.leases,
            self.users,
            self.roles,
            if self.auth_enabled {
                "enabled"
            } else {
                "disabled"
            },
            self.alarms,
            self.shards.len()
        )
    }
}

/// Runs a restore (module comment).
pub fn restore(args: &RestoreArgs) -> anyhow::Result<Report> {
    let config = &args.cl.config;
    // Absolute, so every message names the full path (and glommio once refused a relative
    // directory: fb66a73).
    let data_dir = std::path::absolute(&config.data_dir)
        .with_context(|| format!("data dir {}", config.data_dir))?;
    let target = data_dir.join("ballast");
    if target.exists() {
        bail!(
            "data dir {} already holds Ballast data ({}); a restore writes a new data dir \
             only: name another --data-dir, or remove that one first",
            data_dir.display(),
            target.display()
        );
    }
    let initial = flags::initial_members(config)?;
    let member = crate::context::Member::new(
        &config.name,
        config.initial_advertise_peer_urls.clone(),
        config.advertise_client_urls.clone(),
        &config.initial_cluster_token,
        &initial
            .iter()
            .map(|(_, urls)| urls.clone())
            .collect::<Vec<_>>(),
    );
    let members = crate::server::initial_raft_members(&initial, config, &member);
    let file = open_checked(&args.file, args.skip_hash_check)?;
    let etcd = read_etcd(&file).with_context(|| format!("reading {}", args.file.display()))?;

    let created_dir = !data_dir.exists();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating data dir {}", data_dir.display()))?;
    let staging = data_dir.join(STAGING);
    let result =
        write_staged(&staging, config, &etcd, &members, member.cluster_id).and_then(|summaries| {
            std::fs::rename(staging.join("ballast"), &target).with_context(|| {
                format!("renaming {} to {}", staging.display(), target.display())
            })?;
            sync_dir(&data_dir)?;
            Ok(summaries)
        });
    let _ = std::fs::remove_dir_all(&staging);
    let shards = match result {
        Ok(s) => s,
        Err(err) => {
            if created_dir {
                let _ = std::fs::remove_dir(&data_dir);
            }
            return Err(err);
        }
    };
    Ok(Report {
        data_dir,
        revision: etcd.revision,
        compact_revision: etcd.compact.unwrap_or(0),
        shards,
        leases: etcd.leases.len(),
        auth_enabled: etcd.auth.enabled,
        users: etcd.auth.users.len(),
        roles: etcd.auth.roles.len(),
        alarms: etcd.alarms.get(AlarmType::NONE).len(),
    })
}

/// Opens the file and checks etcdctl's SHA-256 trailer (etcdctl's rule: a file whose length
/// is 32 more than a multiple of 512 carries one); returns the file and the database's length.
fn open_checked(path: &Path, skip_hash_check: bool) -> anyhow::Result<(std::fs::File, u64)> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = file.metadata()?.len();
    let has_hash = len % 512 == SHA256_BYTES;
    if !has_hash {
        if !skip_hash_check {
            bail!(
                "{}: snapshot missing hash but --skip-hash-check=false (a file copied from \
                 an etcd data dir's member/snap/db has none: pass --skip-hash-check)",
                path.display()
            );
        }
        return Ok((file, len));
    }
    let db_len = len - SHA256_BYTES;
    if !skip_hash_check {
        let mut hasher = Sha256::new();
        let mut left = db_len;
        let mut buf = vec![0u8; 1 << 20];
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            file.read_exact(&mut buf[..n])?;
            hasher.update(&buf[..n]);
            left -= n as u64;
        }
        let mut want = [0u8; SHA256_BYTES as usize];
        file.read_exact(&mut want)?;
        let got = hasher.finalize();
        if got.as_slice() != want {
            bail!(
                "{}: snapshot file integrity check failed: expected sha256 {}, got {}",
                path.display(),
                hex(&want),
                hex(&got)
            );
        }
    }
    Ok((file, db_len))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// One change of the key bucket.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub main: Revision,
    pub sub: i64,
    pub tombstone: bool,
    pub kv: KeyValue,
}

/// What an etcd backend file holds that a restore uses.
#[derive(Debug, Default)]
pub struct EtcdData {
    pub changes: Vec<Change>,
    /// (id, granted TTL)
    pub leases: Vec<(LeaseId, i64)>,
    /// The store's revision as etcd computes it at start-up.
    pub revision: Revision,
    pub compact: Option<Revision>,
    /// etcd's auth store, as shard 0 will hold it.
    pub auth: AuthState,
    /// etcd's alarms in force, as shard 0 will hold them.
    pub alarms: AlarmTable,
}

fn rev_main(b: &[u8]) -> Option<i64> {
    let main = i64::try_from(u64::from_be_bytes(b.get(..8)?.try_into().ok()?)).ok()?;
    Some(main)
}

/// Decodes a key bucket key: `main(8 BE) _ sub(8 BE) [t]`.
fn decode_rev_key(k: &[u8]) -> Option<(i64, i64, bool)> {
    let tombstone = match k.len() {
        17 => false,
        18 if k[17] == b't' => true,
        _ => return None,
    };
    if k[8] != b'_' {
        return None;
    }
    let sub = i64::try_from(u64::from_be_bytes(k[9..17].try_into().ok()?)).ok()?;
    Some((rev_main(k)?, sub, tombstone))
}

/// Reads an etcd backend file: its key, lease and meta buckets, and logs what is dropped.
pub fn read_etcd(file: &(std::fs::File, u64)) -> anyhow::Result<EtcdData> {
    let bolt = BoltFile::open(file.0.try_clone()?, file.1)?;
    let root = bolt.root();
    let mut out = EtcdData::default();
    let mut compact_finished = None;
    let mut compact_scheduled = None;
    if let Some(meta) = bolt.bucket(&root, layout::META_BUCKET)? {
        let mut c = bolt.cursor(&meta);
        while let Some(e) = c.next_entry()? {
            match e.key.as_slice() {
                layout::FINISHED_COMPACT_REV | layout::SCHEDULED_COMPACT_REV => {
                    let main = rev_main(&e.value)
                        .filter(|m| *m >= 0 && e.value.len() == layout::REV_BYTES)
                        .with_context(|| {
                            format!("meta {}: not a revision", String::from_utf8_lossy(&e.key))
                        })?;
                    if e.key == layout::FINISHED_COMPACT_REV {
                        compact_finished = Some(main);
                    } else {
                        compact_scheduled = Some(main);
                    }
                }
                b"consistent_index" | b"term" => {
                    let n = e
                        .value
                        .get(..8)
                        .map_or(0, |b| u64::from_be_bytes(b.try_into().expect("8 bytes")));
                    tracing::info!(
                        what = %String::from_utf8_lossy(&e.key),
                        value = n,
                        "etcd's Raft position in the file (not used: Ballast's log starts anew)"
                    );
                }
                _ => {}
            }
        }
    }
    let Some(keys) = bolt.bucket(&root, layout::KEY_BUCKET)? else {
        bail!("no key bucket: not an etcd v3 backend file");
    };
    let mut c = bolt.cursor(&keys);
    while let Some(e) = c.next_entry()? {
        let Some((main, sub, tombstone)) = decode_rev_key(&e.key) else {
            bail!("key bucket: {:?} is not a revision", hex(&e.key));
        };
        let pb = mvccpb::KeyValue::decode(e.value.as_slice())
            .with_context(|| format!("key bucket: revision {main}_{sub} does not decode"))?;
        out.changes.push(Change {
            main,
            sub,
            tombstone,
            kv: KeyValue {
                key: pb.key,
                create_revision: pb.create_revision,
                mod_revision: pb.mod_revision,
                version: pb.version,
                value: pb.value,
                lease: pb.lease,
            },
        });
    }
    if let Some(leases) = bolt.bucket(&root, layout::LEASE_BUCKET)? {
        let mut c = bolt.cursor(&leases);
        while let Some(e) = c.next_entry()? {
            let pb = LeasePb::decode(e.value.as_slice())
                .with_context(|| format!("lease bucket: {} does not decode", hex(&e.key)))?;
            if e.key.as_slice() != pb.id.to_be_bytes() {
                bail!(
                    "lease bucket: key {} holds lease {:016x}",
                    hex(&e.key),
                    pb.id
                );
            }
            out.leases.push((pb.id, pb.ttl));
        }
    }
    out.auth = read_auth(&bolt)?;
    out.alarms = read_alarms(&bolt)?;
    log_dropped(&bolt)?;
    let finished = compact_finished.unwrap_or(-1);
    // etcd's restore: the last change's revision, or the finished compaction's when higher
    // (every change up to it may be gone); a scheduled compaction is then finished.
    let last = out.changes.last().map_or(1, |c| c.main);
    out.revision = last.max(finished);
    out.compact = match (compact_finished, compact_scheduled) {
        (f, Some(s)) if s > f.unwrap_or(-1) => Some(s),
        (f, _) => f,
    };
    if let Some(c) = out.compact {
        if c > out.revision {
            bail!(
                "meta bucket: compact revision {c} is above the file's revision {}",
                out.revision
            );
        }
    }
    Ok(out)
}

/// Every entry of the root's bucket `name` (none when there is no such bucket).
fn bucket_entries(bolt: &BoltFile, name: &[u8]) -> anyhow::Result<Vec<Entry>> {
    let mut out = Vec::new();
    if let Some(b) = bolt.bucket(&bolt.root(), name)? {
        let mut c = bolt.cursor(&b);
        while let Some(e) = c.next_entry()? {
            out.push(e);
        }
    }
    Ok(out)
}

fn utf8_name(what: &str, b: &[u8]) -> anyhow::Result<String> {
    String::from_utf8(b.to_vec())
        .map_err(|_| anyhow::anyhow!("{what} {}: the name is not UTF-8", hex(b)))
}

/// Reads etcd's auth store (`auth`, `authUsers`, `authRoles`): the state a member restored
/// from the file starts with. A user's roles are sorted and deduplicated and a role's
/// permissions sorted by key (stably), as `AuthState` keeps them and etcd writes them; every
/// name must be the bucket key it is stored under, as etcd writes it. A file without an
/// `authRevision` (never written by etcd 3.4) keeps a new store's revision.
pub fn read_auth(bolt: &BoltFile) -> anyhow::Result<AuthState> {
    let mut state = AuthState::default();
    for e in bucket_entries(bolt, layout::AUTH_BUCKET)? {
        match e.key.as_slice() {
            layout::AUTH_ENABLED => {
                state.enabled = match e.value.as_slice() {
                    [1] => true,
                    [0] => false,
                    other => bail!("auth bucket: authEnabled is {}, not 0 or 1", hex(other)),
                }
            }
            layout::AUTH_REVISION => {
                let b: [u8; 8] = e.value.as_slice().try_into().with_context(|| {
                    format!("auth bucket: authRevision {} is not 8 bytes", hex(&e.value))
                })?;
                state.revision = u64::from_be_bytes(b);
            }
            _ => {}
        }
    }
    for e in bucket_entries(bolt, layout::AUTH_USERS_BUCKET)? {
        let pb = authpb::User::decode(e.value.as_slice())
            .with_context(|| format!("authUsers bucket: {} does not decode", hex(&e.key)))?;
        if pb.name != e.key {
            bail!(
                "authUsers bucket: key {} holds user {}",
                hex(&e.key),
                hex(&pb.name)
            );
        }
        let name = utf8_name("authUsers bucket: user", &pb.name)?;
        let mut roles = pb.roles;
        roles.sort();
        roles.dedup();
        state.users.insert(
            name,
            User {
                password_hash: pb.password,
                roles,
                no_password: pb.options.is_some_and(|o| o.no_password),
            },
        );
    }
    for e in bucket_entries(bolt, layout::AUTH_ROLES_BUCKET)? {
        let pb = authpb::Role::decode(e.value.as_slice())
            .with_context(|| format!("authRoles bucket: {} does not decode", hex(&e.key)))?;
        if pb.name != e.key {
            bail!(
                "authRoles bucket: key {} holds role {}",
                hex(&e.key),
                hex(&pb.name)
            );
        }
        let name = utf8_name("authRoles bucket: role", &pb.name)?;
        let mut permissions: Vec<Permission> = pb
            .key_permission
            .into_iter()
            .map(|p| Permission {
                perm_type: PermType(p.perm_type),
                key: p.key,
                range_end: p.range_end,
            })
            .collect();
        permissions.sort_by(|a, b| a.key.cmp(&b.key));
        state.roles.insert(name, Role { permissions });
    }
    if state.enabled || !state.users.is_empty() || !state.roles.is_empty() {
        tracing::info!(
            auth_enabled = state.enabled,
            auth_revision = state.revision,
            users = state.users.len(),
            roles = state.roles.len(),
            "keeping etcd's users and roles (passwords as etcd's bcrypt hashes)"
        );
    }
    Ok(state)
}

/// Reads etcd's alarms in force (`alarm` bucket), each under the member id that raised it.
pub fn read_alarms(bolt: &BoltFile) -> anyhow::Result<AlarmTable> {
    let mut table = AlarmTable::default();
    for e in bucket_entries(bolt, layout::ALARM_BUCKET)? {
        let pb = etcdserverpb::AlarmMember::decode(e.key.as_slice())
            .with_context(|| format!("alarm bucket: {} does not decode", hex(&e.key)))?;
        let m = AlarmMember {
            alarm: AlarmType(pb.alarm),
            member_id: pb.member_id,
        };
        tracing::warn!(
            alarm = %m.alarm,
            member_id = format_args!("{:x}", m.member_id),
            "keeping etcd's alarm: it stays in force until `etcdctl alarm disarm`, as etcd keeps \
             it on restore"
        );
        table.activate(m);
    }
    Ok(table)
}

/// Logs etcd's cluster metadata that a restore does not carry over: the members.
fn log_dropped(bolt: &BoltFile) -> anyhow::Result<()> {
    let entries = |name: &[u8]| bucket_entries(bolt, name);
    for e in entries(b"members")? {
        let v: serde_json::Value = serde_json::from_slice(&e.value).unwrap_or_default();
        tracing::info!(
            id = %String::from_utf8_lossy(&e.key),
            name = %v.get("name").and_then(|n| n.as_str()).unwrap_or(""),
            peer_urls = %v.get("peerURLs").map(|u| u.to_string()).unwrap_or_default(),
            "dropping etcd member (the restored members are those --initial-cluster names)"
        );
    }
    let removed = entries(b"members_removed")?.len();
    if removed > 0 {
        tracing::info!(count = removed, "dropping etcd's list of removed members");
    }
    Ok(())
}

/// Builds and writes every shard under `staging` (laid out as a data dir); returns each
/// shard's summary.
fn write_staged(
    staging: &Path,
    config: &ballast_tuning::config::Config,
    etcd: &EtcdData,
    members: &BTreeMap<NodeId, String>,
    cluster_id: u64,
) -> anyhow::Result<Vec<ImportSummary>> {
    if staging.exists() {
        // Left by a restore that died: it was never renamed into place.
        std::fs::remove_dir_all(staging)
            .with_context(|| format!("removing {}", staging.display()))?;
    }
    std::fs::create_dir_all(staging)?;
    let map = crate::server::settle_layout(staging, config, crate::server::cores())?;
    // The id of the cluster the restored members form, as the server keeps it
    // (`server::settle_cluster_id`); its presence also tells the server the groups name
    // members by their member ids.
    crate::server::write_cluster_id(staging, cluster_id)?;
    let mut builders: Vec<StoreBuilder> = (0..map.shards()).map(|_| StoreBuilder::new()).collect();
    for b in &mut builders {
        for (id, ttl) in &etcd.leases {
            b.lease(*id, *ttl)?;
        }
    }
    for c in &etcd.changes {
        let shard = map.shard_of(&c.kv.key);
        builders[shard]
            .change(c.main, c.sub, c.kv.clone(), c.tombstone)
            .with_context(|| format!("key {:?}", String::from_utf8_lossy(&c.kv.key)))?;
    }
    let mut summaries = Vec::new();
    for (id, b) in builders.into_iter().enumerate() {
        let (store, summary) = b.finish(etcd.revision, etcd.compact)?;
        let dir = crate::server::shard_dir(staging, ShardId(id as u32));
        // Shard 0 holds the cluster's auth state and alarms; the others, empty ones.
        let (alarms, auth) = if id == 0 {
            (etcd.alarms.clone(), etcd.auth.clone())
        } else {
            Default::default()
        };
        ballast_consensus::seed::seed(&ShardStorage::new(&dir), store, members, &alarms, &auth)
            .map_err(|e| anyhow::anyhow!("shard {id}: {e}"))?;
        tracing::info!(
            shard = id,
            changes = summary.changes,
            keys = summary.live_keys,
            skipped_tombstones = summary.skipped_tombstones,
            "wrote shard"
        );
        summaries.push(summary);
    }
    sync_dir(&staging.join("ballast"))?;
    Ok(summaries)
}

fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))
}

#[cfg(test)]
mod tests;
