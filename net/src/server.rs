//! Assembles and runs the server: settles the data dir's layout (how many shards, which
//! prefixes pinned where), starts one shard per layout slot pinned to a core, puts the router
//! over them, serves every client URL with the gRPC services and the HTTP endpoints, and stops
//! cleanly on SIGTERM or SIGINT.

use std::collections::BTreeMap;
use std::future::Future;

use anyhow::Context as _;
use ballast_consensus::durable::ShardStorage;
use ballast_consensus::{ClusterConfig, LeaseExpiry, NodeId, ShardConfig, ShardHandle, ShardId};
use ballast_engine::{btree, wal};
use ballast_proto::etcdserverpb as pb;
use ballast_tuning::config::ClusterState;
use tokio::sync::watch;
use tokio_stream::StreamExt as _;

use crate::context::{member_id, Context, Limits, Member};
use crate::flags::{self, CommandLine};
use crate::partition::{PartitionMap, Pin};
use crate::peer::{self, Hello, PeerHub};
use crate::router::{Router, EXPIRED_LEASES_MAX};
use crate::services::{cluster, election, kv, lease, lock, maintenance, watch as watch_svc};
use crate::tls;

/// gRPC's own per-message limit sits this far above `--max-request-bytes`, as in etcd, so that
/// a request just over the limit gets etcd's "request is too large" rather than a transport error.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// Where shard `id` keeps its files: `<data-dir>/ballast/shard-<id>/{wal,pages}`, or its WAL
/// under `<wal-dir>/shard-<id>` when `--wal-dir` is set. (Not `member/`: that is etcd's, and
/// [`check_data_dir`] refuses a data dir holding it.)
pub fn shard_dir(data_dir: &std::path::Path, id: ShardId) -> std::path::PathBuf {
    data_dir.join("ballast").join(format!("shard-{}", id.0))
}

/// Refuses a data dir that holds an etcd member (`member/wal`, `member/snap`) and no Ballast
/// data: the server does not read etcd's files in place, and starting empty there would look
/// like data loss. `ballast snapshot restore` migrates them (`restore.rs`).
fn check_data_dir(data_dir: &std::path::Path) -> anyhow::Result<()> {
    if data_dir.join("member").is_dir() && !data_dir.join("ballast").exists() {
        anyhow::bail!(
            "data dir {dir} holds an etcd member (member/) and no Ballast data; Ballast does \
             not start beside it. Migrate it first, from a stopped etcd: `ballast snapshot \
             restore {dir}/member/snap/db --skip-hash-check --data-dir {dir}` (or from \
             `etcdctl snapshot save` of a running one; docs/operations.md, \"Migrating from \
             etcd\")",
            dir = data_dir.display()
        );
    }
    Ok(())
}

/// The configuration of shard `id` of `shards` from the resolved settings. Memory budgets
/// (`page-cache-bytes`) are the server's, split evenly; per-write settings (group commit,
/// checkpoints) are each shard's.
fn shard_config(
    config: &ballast_tuning::config::Config,
    flags: &flags::Flags,
    id: ShardId,
    shards: usize,
) -> ShardConfig {
    let s = &config.settings;
    let data_dir = std::path::PathBuf::from(&config.data_dir);
    let dir = shard_dir(&data_dir, id);
    let mut storage = ShardStorage::new(&dir);
    if let Some(wal_dir) = &config.wal_dir {
        storage.wal_dir = Some(std::path::PathBuf::from(wal_dir).join(format!("shard-{}", id.0)));
    }
    storage.wal = wal::WalConfig {
        batch_records_max: usize::try_from(s.group_commit_max_batch)
            .unwrap_or(usize::MAX)
            .max(1),
        batch_bytes_max: usize::try_from(s.group_commit_max_bytes).unwrap_or(usize::MAX),
        // A request's entry: its bytes plus the command's framing.
        record_payload_bytes_max: usize::try_from(s.max_request_bytes)
            .unwrap_or(usize::MAX)
            .saturating_add(64 << 10),
        ..wal::WalConfig::default()
    };
    storage.pages = btree::Config {
        cache_bytes: s.page_cache_bytes / u64::try_from(shards.max(1)).unwrap_or(1),
        ..btree::Config::default()
    };
    storage.checkpoint_bytes = s.checkpoint_dirty_bytes;
    storage.checkpoint_interval = std::time::Duration::from_millis(s.checkpoint_interval_ms);
    ShardConfig {
        shard_id: id,
        min_lease_ttl_secs: flags::min_lease_ttl_secs(config),
        progress_notify_interval: flags.experimental_watch_progress_notify_interval,
        heartbeat_interval: std::time::Duration::from_millis(s.heartbeat_interval_ms),
        election_timeout: std::time::Duration::from_millis(s.election_timeout_ms),
        snapshot_count: s.snapshot_count.max(1),
        storage: Some(storage),
        ..ShardConfig::default()
    }
}

/// The storage quota the resolved setting asks for (`None`: no quota, etcd's negative value).
pub fn quota_limit(setting: u64) -> Option<u64> {
    (setting != ballast_tuning::settings::QUOTA_DISABLED).then_some(setting)
}

pub async fn run(cl: CommandLine, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let CommandLine { flags, config, .. } = cl;
    flags::check(&config)?;
    for line in config.startup_report() {
        tracing::info!("config {line}");
    }
    let listen = flags::parse_listen_urls(&config.listen_client_urls.join(","))?;
    let data_dir = std::path::PathBuf::from(&config.data_dir);
    check_data_dir(&data_dir)?;
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating data dir {}", data_dir.display()))?;
    let protocol = tls::Protocol::from_config(&config, &flags)?;
    let auth = crate::auth::edge_from_settings(&config.auth_token, &flags)?;
    let client_tls = tls::client_tls(&config, &flags, &protocol, &data_dir)?;
    let peer_tls = tls::PeerTls::from_config(&config, &flags, &protocol, &data_dir)?;
    let monitoring = match config.listen_metrics_urls.join(",") {
        list if list.trim().is_empty() => Vec::new(),
        list => flags::parse_listen_urls(&list)?,
    };

    // Read before anything is written to the data dir (see `single_node_of_old`).
    let old_single_node = single_node_of_old(&data_dir);
    let map = settle_layout(&data_dir, &config, cores())?;
    let shard_count = map.shards();
    tracing::info!(
        shards = shard_count,
        pins = map.pins().len(),
        "data dir layout"
    );
    let initial = flags::initial_members(&config)?;
    let peerless = old_single_node && initial.len() == 1;
    let member = Member::new(
        &config.name,
        config.initial_advertise_peer_urls.clone(),
        config.advertise_client_urls.clone(),
        &config.initial_cluster_token,
        &initial
            .iter()
            .map(|(_, urls)| urls.clone())
            .collect::<Vec<_>>(),
    );
    let mut member = member;
    // Every member runs as a member of a cluster, a lone one too (etcd grows a one-member
    // cluster by MemberAdd: kubeadm's first control-plane node, joined by the next ones), but
    // a data dir written by a single node of a version before that, whose groups know it as
    // node 1 and have no peer side.
    if peerless {
        tracing::warn!(
            "this data dir was written by a single-node server of an earlier version: it runs \
             without a peer side, so its membership cannot change"
        );
    } else {
        member.cluster_id =
            settle_cluster_id(&data_dir, &config, &member, &initial, &peer_tls).await?;
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    // A cluster's peer side starts first: the shards' groups elect leaders over it.
    let mut peer_tasks = Vec::new();
    let mut hub = None;
    let shard_slot = peer::ShardSlot::default();
    let cluster = if !peerless {
        let (peer_tx, peer_rx) = flume::bounded(peer::OUTBOUND_QUEUE_MAX);
        let peers = PeerHub::new(
            Hello {
                cluster_id: member.cluster_id,
                member_id: member.id,
                name: member.name.clone(),
                client_urls: member.client_urls.clone(),
            },
            peer_tls.clone(),
        );
        for url in flags::parse_listen_urls(&config.listen_peer_urls.join(","))? {
            let listener = tokio::net::TcpListener::bind(url.addr)
                .await
                .with_context(|| format!("listening for peers on {}", url.url))?;
            tracing::info!(url = %url.url, "serving peers");
            let mut stop = stop_rx.clone();
            peer_tasks.push(tokio::spawn(peer::serve(
                listener,
                peers.clone(),
                shard_slot.clone(),
                async move {
                    let _ = stop.wait_for(|s| *s).await;
                },
            )));
        }
        peer_tasks.push(tokio::spawn(peers.clone().run(peer_rx)));
        hub = Some(peers);
        Some(ClusterConfig {
            peers: peer_tx,
            members: initial_raft_members(&initial, &config, &member),
            bootstrap: config.initial_cluster_state == ClusterState::New,
        })
    } else {
        None
    };
    let (expired_tx, expired_rx) = tokio::sync::mpsc::channel(EXPIRED_LEASES_MAX);
    let anchor = std::sync::Arc::new(ballast_consensus::Anchor::default());
    // The cluster's alarm table as this node's shard 0 applies it, and each shard's backend
    // size: what the storage quota is checked against (`quota.rs`).
    let alarms = std::sync::Arc::new(ballast_consensus::NodeAlarms::default());
    let backend_bytes: Vec<std::sync::Arc<std::sync::atomic::AtomicU64>> = (0..shard_count)
        .map(|_| std::sync::Arc::default())
        .collect();
    // Shard i runs on core (i + k) mod cores, k this member's place in `--initial-cluster`:
    // members sharing a machine (test and benchmark clusters) then do not stack every
    // member's shard 0 on core 0; one member per machine pins one shard per core either way.
    let first_core = initial
        .iter()
        .position(|(name, _)| *name == config.name)
        .unwrap_or(0);
    let configs: Vec<ShardConfig> = (0..shard_count)
        .map(|id| {
            let mut shard_config = shard_config(&config, &flags, ShardId(id as u32), shard_count);
            shard_config.core = Some((id + first_core) % cores() as usize);
            shard_config.anchor = anchor.clone();
            shard_config.alarms = alarms.clone();
            shard_config.auth = auth.node.clone();
            shard_config.backend_bytes = backend_bytes[id].clone();
            if let Some(cluster) = &cluster {
                shard_config.node_id = member.id;
                shard_config.cluster = Some(cluster.clone());
            }
            if shard_count > 1 {
                shard_config.lease_expiry = if id == 0 {
                    LeaseExpiry::Report(expired_tx.clone())
                } else {
                    LeaseExpiry::Ignore
                };
            }
            shard_config
        })
        .collect();
    // Shards recover at the same time (each on its own core), so a restart takes as long as
    // the slowest shard, not the sum.
    let started: Vec<_> = std::thread::scope(|scope| {
        let starting: Vec<_> = configs
            .into_iter()
            .enumerate()
            .map(|(id, shard_config)| {
                scope.spawn(move || {
                    let storage = shard_config.storage.clone();
                    ShardHandle::spawn(&format!("shard-{id}"), shard_config).with_context(|| {
                        match &storage {
                            Some(s) => format!("starting shard {id} from {}", s.dir.display()),
                            None => format!("starting shard {id}"),
                        }
                    })
                })
            })
            .collect();
        starting
            .into_iter()
            .map(|s| {
                s.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a shard panicked while starting")))
            })
            .collect()
    });
    let mut handles = Vec::with_capacity(shard_count);
    let mut shard_threads = Vec::with_capacity(shard_count);
    for result in started {
        let (handle, thread) = result?;
        handles.push(handle);
        shard_threads.push(thread);
    }
    drop(expired_tx);
    drop(cluster);
    let _ = shard_slot.set(handles.clone());
    let router = if hub.is_some() {
        Router::for_cluster(handles, map)
    } else {
        Router::new(handles, map)
    };
    router
        .load_revisions()
        .await
        .context("reading the shards' revisions")?;
    router
        .reconcile_leases()
        .await
        .context("reconciling the shards' lease tables")?;
    let member_id = member.id;
    let (endings_tx, endings_rx) = tokio::sync::watch::channel(0u64);
    let role: std::sync::Arc<dyn crate::interceptor::Role> = anchor.clone();
    let ctx = Context {
        router: router.clone(),
        member,
        limits: Limits {
            max_txn_ops: usize::try_from(config.settings.max_txn_ops).unwrap_or(usize::MAX),
            max_request_bytes: usize::try_from(config.settings.max_request_bytes)
                .unwrap_or(usize::MAX),
        },
        settings: std::sync::Arc::new(config.clone()),
        peers: hub,
        anchor: anchor.clone(),
        quota: crate::quota::Quota {
            limit_bytes: quota_limit(config.settings.quota_backend_bytes),
            alarms,
            backend_bytes,
            member_id,
        },
        auth,
        grpc_metrics: std::sync::Arc::default(),
        gate: crate::interceptor::Gate::new(role.clone(), endings_rx),
        health: std::sync::Arc::default(),
    };
    match ctx.quota.limit_bytes {
        Some(bytes) => tracing::info!(quota_bytes = bytes, "enabled backend quota"),
        None => tracing::info!("disabled backend quota"),
    }
    tracing::info!(
        name = %config.name,
        member_id = format_args!("{:x}", ctx.member.id),
        data_dir = %data_dir.display(),
        "starting ballast"
    );

    // Checked when the configuration was resolved; read before any task starts.
    let auto_compaction = config
        .settings
        .auto_compaction()
        .context("reading --auto-compaction-mode/--auto-compaction-retention")?;
    let mut align_stop = stop_rx.clone();
    let aligner = tokio::spawn(router.clone().align(async move {
        let _ = align_stop.wait_for(|s| *s).await;
    }));
    let mut compactor_stop = stop_rx.clone();
    let corrupt = {
        let alarms = ctx.quota.alarms.clone();
        move || alarms.corrupt()
    };
    let compactor = tokio::spawn(crate::compactor::run(
        router.clone(),
        auto_compaction,
        corrupt.clone(),
        async move {
            let _ = compactor_stop.wait_for(|s| *s).await;
        },
    ));
    let mut no_leader_stop = stop_rx.clone();
    let no_leader_watch = tokio::spawn(crate::interceptor::watch_for_no_leader(
        role,
        std::time::Duration::from_millis(config.settings.election_timeout_ms),
        endings_tx,
        async move {
            let _ = no_leader_stop.wait_for(|s| *s).await;
        },
    ));
    let mut expiry_stop = stop_rx.clone();
    let expiry = tokio::spawn(
        router
            .clone()
            .revoke_expired(expired_rx, corrupt, async move {
                let _ = expiry_stop.wait_for(|s| *s).await;
            }),
    );
    drop(router);
    let mut servers = Vec::new();
    for url in &listen {
        servers.push(
            serve_url(
                url,
                routes(&ctx),
                client_tls.as_ref(),
                &flags,
                stop_rx.clone(),
            )
            .await?,
        );
        tracing::info!(url = %url.url, "serving client requests");
    }
    // `--listen-metrics-urls`: /health and /metrics only, as etcd serves there (kubelet's
    // liveness probe of a kubeadm member asks http://127.0.0.1:2381/health).
    for url in &monitoring {
        let routes = tonic::service::Routes::from(crate::http::monitoring_router(ctx.clone()));
        servers.push(serve_url(url, routes, client_tls.as_ref(), &flags, stop_rx.clone()).await?);
        tracing::info!(url = %url.url, "serving /health and /metrics");
    }
    drop(ctx);

    // A member removed from its cluster stops itself, as etcd's does.
    let removed = async move {
        while !anchor.removed() {
            tokio::time::sleep(REMOVED_POLL).await;
        }
    };
    tokio::select! {
        () = shutdown => {}
        () = removed => tracing::error!(
            "stopping: this member was removed from the cluster; remove its data dir before \
             adding it again"
        ),
    }
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    for server in servers {
        if let Err(err) = server.await? {
            tracing::warn!(%err, "server ended with an error");
        }
    }
    tracing::debug!("client listeners closed");
    let _ = aligner.await;
    let _ = compactor.await;
    let _ = expiry.await;
    let _ = no_leader_watch.await;
    tracing::debug!("router tasks stopped");
    for task in peer_tasks {
        task.abort();
    }
    // A shard thread ends when the last handle to it (held by the services, the router's
    // tasks and, in a cluster, the peer side's slot) is dropped; the expiry task ends when
    // shard 0 closes its channel.
    drop(shard_slot);
    let joined = tokio::task::spawn_blocking(move || {
        for thread in shard_threads {
            let _ = thread.join();
        }
    });
    if tokio::time::timeout(SHUTDOWN_WAIT, joined).await.is_err() {
        // Whatever was acknowledged is in the WAL already: exiting loses nothing.
        tracing::warn!(after = ?SHUTDOWN_WAIT, "shards did not stop in time; exiting anyway");
    } else {
        tracing::info!("shards stopped");
    }
    Ok(())
}

/// Binds `url` and serves `routes` on it (gRPC and HTTP/1.1 on one listener), over TLS when
/// the URL is `https://`, until `stop` turns true.
async fn serve_url(
    url: &flags::ListenUrl,
    routes: tonic::service::Routes,
    tls: Option<&tls::ClientTls>,
    flags: &flags::Flags,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>> {
    let listener = tokio::net::TcpListener::bind(url.addr)
        .await
        .with_context(|| format!("listening on {}", url.url))?;
    // etcd accepts a URL as a request's authority (etcd 3.4's clients send one): see
    // `authority.rs`.
    Ok(if url.tls {
        let tls = tls
            .cloned()
            .with_context(|| format!("{}: no TLS configuration for an https URL", url.url))?;
        let incoming = tls::incoming(listener, tls)
            .map(|conn| conn.map(crate::authority::LenientAuthority::new));
        tokio::spawn(serve_incoming(incoming, routes, flags, stop))
    } else {
        let incoming = tonic::transport::server::TcpIncoming::from(listener)
            .with_nodelay(Some(true))
            .map(|conn| conn.map(crate::authority::LenientAuthority::new));
        tokio::spawn(serve_incoming(incoming, routes, flags, stop))
    })
}

fn serve_incoming<S, IO>(
    incoming: S,
    routes: tonic::service::Routes,
    flags: &flags::Flags,
    mut stop: watch::Receiver<bool>,
) -> impl Future<Output = Result<(), tonic::transport::Error>>
where
    S: tokio_stream::Stream<Item = std::io::Result<IO>> + Send + 'static,
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
    IO::ConnectInfo: Clone + Send + Sync + 'static,
{
    let keepalive =
        (!flags.grpc_keepalive_interval.is_zero()).then_some(flags.grpc_keepalive_interval);
    tonic::transport::Server::builder()
        .accept_http1(true)
        .max_concurrent_streams(Some(flags.max_concurrent_streams))
        .http2_keepalive_interval(keepalive)
        .http2_keepalive_timeout(Some(flags.grpc_keepalive_timeout))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = stop.wait_for(|s| *s).await;
        })
}

/// How often the server looks whether shard 0 learned this member was removed.
const REMOVED_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// How long a clean shutdown waits for the shards to stop before the process exits anyway.
const SHUTDOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether `data_dir` holds shards but no cluster id: written by a single-node server of a
/// version that ran a lone member without a peer side, whose groups know it as node 1.
fn single_node_of_old(data_dir: &std::path::Path) -> bool {
    shard_dir(data_dir, ShardId(0)).exists() && !cluster_id_path(data_dir).exists()
}

fn cluster_id_path(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("ballast").join("cluster-id")
}

/// The Raft members a new cluster's groups start with: node id and peer URL of every
/// `--initial-cluster` member, each id from its peer URLs and the token. This member is named
/// by the URLs it advertises (a lone member's `--initial-cluster` may name other URLs, which
/// etcd refuses only for several members, `flags::initial_members`).
pub(crate) fn initial_raft_members(
    initial: &[(String, Vec<String>)],
    config: &ballast_tuning::config::Config,
    member: &Member,
) -> BTreeMap<NodeId, String> {
    let mut members: BTreeMap<NodeId, String> = initial
        .iter()
        .filter(|(name, _)| *name != config.name)
        .map(|(_, urls)| {
            (
                member_id(urls, &config.initial_cluster_token),
                urls[0].clone(),
            )
        })
        .collect();
    let mine = member.peer_urls.first().cloned().unwrap_or_default();
    members.insert(member.id, mine);
    members
}

/// The cluster id of a member of a cluster, kept in `<data-dir>/ballast/cluster-id` from its
/// first start: a new cluster's from its initial members (`Member::new`); a member joining a
/// running one (`--initial-cluster-state existing`) asks the other members
/// (`peer::discover_cluster_id`), as the cluster's id was fixed when it was formed.
async fn settle_cluster_id(
    data_dir: &std::path::Path,
    config: &ballast_tuning::config::Config,
    member: &Member,
    initial: &[(String, Vec<String>)],
    tls: &tls::PeerTls,
) -> anyhow::Result<u64> {
    let path = cluster_id_path(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            return u64::from_str_radix(text.trim(), 16)
                .with_context(|| format!("reading the cluster id in {}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let id = if config.initial_cluster_state == ClusterState::Existing {
        let others: Vec<String> = initial
            .iter()
            .filter(|(name, _)| *name != config.name)
            .flat_map(|(_, urls)| urls.clone())
            .collect();
        let me = Hello {
            cluster_id: 0,
            member_id: member.id,
            name: member.name.clone(),
            client_urls: member.client_urls.clone(),
        };
        peer::discover_cluster_id(&me, &others, tls, std::time::Duration::from_secs(30))
            .await
            .context("joining a running cluster (--initial-cluster-state existing)")?
    } else {
        member.cluster_id
    };
    write_cluster_id(data_dir, id)?;
    Ok(id)
}

/// Records `id` as the cluster id of the member whose data dir is `data_dir`.
pub(crate) fn write_cluster_id(data_dir: &std::path::Path, id: u64) -> anyhow::Result<()> {
    let path = cluster_id_path(data_dir);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&path, format!("{id:x}\n"))
        .with_context(|| format!("writing {}", path.display()))
}

pub(crate) fn cores() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX))
}

/// The file recording a data dir's layout: `<data-dir>/ballast/layout`.
pub fn layout_path(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("ballast").join("layout")
}

/// The layout of a data dir: how many shards hold its keys and which prefixes are pinned
/// where. Fixed when the data dir is created: a key's shard follows from it, and moving keys
/// between shards is not built.
#[derive(Debug, PartialEq, Eq)]
struct Layout {
    shards: usize,
    /// Pins as `--partition` takes them (`PREFIX=SHARD,...`), empty for none.
    partition: String,
}

impl Layout {
    fn render(&self) -> String {
        format!(
            "# Written by ballast when this data dir was created: how its keys are spread over\n\
             # shards. It cannot change while the data dir holds keys.\n\
             shards = {}\npartition = {}\n",
            self.shards, self.partition
        )
    }

    fn parse(text: &str) -> anyhow::Result<Layout> {
        let mut shards = None;
        let mut partition = String::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = line
                .split_once('=')
                .with_context(|| format!("layout line {line:?} is not KEY = VALUE"))?;
            match key.trim() {
                "shards" => shards = Some(value.trim().parse().context("layout shards")?),
                "partition" => partition = value.trim().to_owned(),
                other => anyhow::bail!("unknown layout key {other:?}"),
            }
        }
        Ok(Layout {
            shards: shards.context("layout names no shard count")?,
            partition,
        })
    }
}

/// Settles the data dir's layout and returns its partition map. A new data dir takes the
/// configured one (`--shards`, default one per core; `--partition`) and records it; an existing
/// one keeps what it recorded, and a configuration asking for something else is refused
/// (unset `--shards`/`--partition` mean "as recorded"). A data dir from before layouts were
/// recorded holds one shard.
pub(crate) fn settle_layout(
    data_dir: &std::path::Path,
    config: &ballast_tuning::config::Config,
    cores: u32,
) -> anyhow::Result<PartitionMap> {
    let path = layout_path(data_dir);
    let asked_shards = config.settings.shards as usize;
    let asked_partition = config.partition_text();
    let recorded = match std::fs::read_to_string(&path) {
        Ok(text) => {
            Some(Layout::parse(&text).with_context(|| format!("reading {}", path.display()))?)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            shard_dir(data_dir, ShardId(0)).exists().then(|| Layout {
                shards: 1,
                partition: String::new(),
            })
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let layout = match recorded {
        Some(rec) => {
            if asked_shards != 0 && asked_shards != rec.shards {
                anyhow::bail!(
                    "data dir {} holds {} shard(s) and --shards asks for {asked_shards}; the \
                     shard count of a data dir cannot change (its keys would be in the wrong \
                     shards): start without --shards, or with a new --data-dir and reload the keys",
                    data_dir.display(),
                    rec.shards
                );
            }
            if !asked_partition.is_empty() && asked_partition != rec.partition {
                anyhow::bail!(
                    "data dir {} was created with partition {:?} and --partition asks for {:?}; \
                     the partition of a data dir cannot change: start without --partition, or \
                     with a new --data-dir and reload the keys",
                    data_dir.display(),
                    rec.partition,
                    asked_partition
                );
            }
            rec
        }
        None => Layout {
            shards: (config.settings.effective_shards(cores) as usize)
                .min(crate::partition::MAX_SHARDS),
            partition: asked_partition,
        },
    };
    let rules = ballast_tuning::settings::parse_partition("partition", &layout.partition)?;
    let pins = rules.iter().map(Pin::from).collect();
    let map = PartitionMap::new(layout.shards, pins)
        .map_err(|e| anyhow::anyhow!("data dir layout {}: {e}", path.display()))?;
    if !path.exists() {
        std::fs::create_dir_all(data_dir.join("ballast"))?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, layout.render())
            .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
            .and_then(|()| std::fs::rename(&tmp, &path))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(map)
}

fn routes(ctx: &Context) -> tonic::service::Routes {
    let max = ctx
        .limits
        .max_request_bytes
        .saturating_add(GRPC_OVERHEAD_BYTES);
    let mut routes = tonic::service::Routes::builder();
    routes
        .add_service(
            pb::kv_server::KvServer::new(kv::KvService::new(ctx.clone()))
                .max_decoding_message_size(max),
        )
        .add_service(
            pb::watch_server::WatchServer::new(watch_svc::WatchService::new(ctx.clone()))
                .max_decoding_message_size(max),
        )
        .add_service(
            pb::lease_server::LeaseServer::new(lease::LeaseService::new(ctx.clone()))
                .max_decoding_message_size(max),
        )
        .add_service(
            pb::cluster_server::ClusterServer::new(cluster::ClusterService::new(ctx.clone()))
                .max_decoding_message_size(max),
        )
        .add_service(
            pb::maintenance_server::MaintenanceServer::new(maintenance::MaintenanceService::new(
                ctx.clone(),
            ))
            .max_decoding_message_size(max),
        );
    routes
        .add_service(
            pb::auth_server::AuthServer::new(crate::services::auth::AuthService::new(ctx.clone()))
                .max_decoding_message_size(max),
        )
        .add_service(
            ballast_proto::v3lockpb::lock_server::LockServer::new(lock::LockService::new(
                ctx.clone(),
            ))
            .max_decoding_message_size(max),
        )
        .add_service(
            ballast_proto::v3electionpb::election_server::ElectionServer::new(
                election::ElectionService::new(ctx.clone()),
            )
            .max_decoding_message_size(max),
        );
    let grpc = routes
        .routes()
        .into_axum_router()
        // Innermost: the metrics count the code etcd would have answered.
        .layer(axum::middleware::from_fn(crate::transport_status::layer))
        .layer(axum::middleware::from_fn_with_state(
            ctx.grpc_metrics.clone(),
            crate::grpc_metrics::layer,
        ))
        // Outermost: etcd's interceptors refuse a call before its gRPC metrics see it.
        .layer(axum::middleware::from_fn_with_state(
            ctx.gate.clone(),
            crate::interceptor::gate,
        ));
    let http = crate::http::router(ctx.clone());
    tonic::service::Routes::from(grpc.merge(http).fallback(crate::http::fallback))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_dir_holding_an_etcd_member_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        check_data_dir(dir.path()).expect("an empty dir is fine");
        std::fs::create_dir_all(dir.path().join("member/wal")).unwrap();
        let err = check_data_dir(dir.path()).expect_err("etcd's files are not ours");
        assert!(err.to_string().contains("holds an etcd member"), "{err}");
        // Once Ballast's own data is there, a stray member/ does not stop it.
        std::fs::create_dir_all(shard_dir(dir.path(), ShardId(0))).unwrap();
        check_data_dir(dir.path()).expect("ballast data present");
    }

    fn config(args: &[&str]) -> ballast_tuning::config::Config {
        let argv = std::iter::once("ballast").chain(args.iter().copied());
        flags::parse(argv.map(String::from))
            .expect("flags parse")
            .config
    }

    #[test]
    fn a_data_dir_keeps_the_layout_it_was_created_with() {
        let dir = tempfile::tempdir().expect("temp dir");
        let map = settle_layout(dir.path(), &config(&[]), 3).expect("new data dir");
        assert_eq!(map.shards(), 3, "one shard per core by default");
        let text = std::fs::read_to_string(layout_path(dir.path())).unwrap();
        assert_eq!(
            Layout::parse(&text).unwrap(),
            Layout {
                shards: 3,
                partition: String::new()
            }
        );
        // Restarted on a machine with other cores and no --shards: still three shards.
        assert_eq!(
            settle_layout(dir.path(), &config(&[]), 8).unwrap().shards(),
            3
        );
        assert_eq!(
            settle_layout(dir.path(), &config(&["--shards", "3"]), 8)
                .unwrap()
                .shards(),
            3
        );
        let err = settle_layout(dir.path(), &config(&["--shards", "2"]), 8).unwrap_err();
        assert!(
            err.to_string()
                .contains("holds 3 shard(s) and --shards asks for 2"),
            "{err}"
        );
        let err = settle_layout(
            dir.path(),
            &config(&["--shards", "3", "--partition", "/registry/events/=2"]),
            8,
        )
        .unwrap_err();
        assert!(err.to_string().contains("partition"), "{err}");
    }

    #[test]
    fn pins_are_recorded_and_a_data_dir_from_before_layouts_holds_one_shard() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pinned = config(&["--shards", "2", "--partition", "/registry/events/=1"]);
        let map = settle_layout(dir.path(), &pinned, 2).unwrap();
        assert_eq!(map.shard_of(b"/registry/events/ns/e"), 1);
        // Without --partition the recorded pins still place keys.
        let map = settle_layout(dir.path(), &config(&[]), 2).unwrap();
        assert_eq!(map.shard_of(b"/registry/events/ns/e"), 1);

        let old = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(shard_dir(old.path(), ShardId(0))).unwrap();
        assert_eq!(
            settle_layout(old.path(), &config(&[]), 4).unwrap().shards(),
            1
        );
        assert!(layout_path(old.path()).exists(), "recorded from then on");
    }

    #[test]
    fn shard_settings_come_from_the_resolved_config() {
        let cl = flags::parse(
            [
                "ballast",
                "--data-dir",
                "/var/lib/x",
                "--wal-dir",
                "/fast/wal",
                "--snapshot-count",
                "5000",
                "--heartbeat-interval",
                "50",
                "--election-timeout",
                "500",
            ]
            .map(String::from),
        )
        .expect("flags parse");
        let c = shard_config(&cl.config, &cl.flags, ShardId(0), 1);
        let storage = c.storage.expect("servers are durable");
        assert_eq!(
            storage.dir,
            std::path::PathBuf::from("/var/lib/x/ballast/shard-0")
        );
        assert_eq!(
            storage.wal_dir,
            Some(std::path::PathBuf::from("/fast/wal/shard-0"))
        );
        assert_eq!(c.snapshot_count, 5000);
        assert_eq!(c.heartbeat_interval, std::time::Duration::from_millis(50));
        assert_eq!(c.election_timeout, std::time::Duration::from_millis(500));
        assert!(
            storage.wal.record_payload_bytes_max
                > usize::try_from(cl.config.settings.max_request_bytes).unwrap()
        );
        assert_eq!(
            storage.pages.cache_bytes,
            cl.config.settings.page_cache_bytes
        );
    }
}
