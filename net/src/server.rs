//! Assembles and runs the server: starts the shard, serves every client URL with the gRPC
//! services and the HTTP endpoints, and stops cleanly on SIGTERM or SIGINT.

use std::future::Future;

use anyhow::Context as _;
use ballast_consensus::durable::ShardStorage;
use ballast_consensus::{ShardConfig, ShardHandle, ShardId};
use ballast_engine::{btree, wal};
use ballast_proto::etcdserverpb as pb;
use tokio::sync::watch;

use crate::context::{Context, Limits, Member};
use crate::flags::{self, CommandLine};
use crate::services::{cluster, election, kv, lease, lock, maintenance, watch as watch_svc};

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
/// data: Ballast cannot read etcd's files, and starting empty there would look like data loss.
fn check_data_dir(data_dir: &std::path::Path) -> anyhow::Result<()> {
    if data_dir.join("member").is_dir() && !data_dir.join("ballast").exists() {
        anyhow::bail!(
            "data dir {} holds an etcd member (member/); Ballast cannot read etcd's data files. \
             Use another --data-dir and copy the keys over with a client (etcdctl get/put, or a \
             Kubernetes backup and restore)",
            data_dir.display()
        );
    }
    Ok(())
}

/// The configuration of shard `id` from the resolved settings.
fn shard_config(
    config: &ballast_tuning::config::Config,
    flags: &flags::Flags,
    id: ShardId,
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
        cache_bytes: s.page_cache_bytes,
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

    let shard_config = shard_config(&config, &flags, ShardId(0));
    let storage = shard_config.storage.clone();
    let (shard, shard_thread) =
        ShardHandle::spawn("shard-0", shard_config).with_context(|| match &storage {
            Some(s) => format!("starting shard 0 from {}", s.dir.display()),
            None => "starting shard 0".to_string(),
        })?;
    let member = Member::new(
        &config.name,
        config.initial_advertise_peer_urls.clone(),
        config.advertise_client_urls.clone(),
        &config.initial_cluster_token,
    );
    let ctx = Context {
        shard,
        member,
        limits: Limits {
            max_txn_ops: usize::try_from(config.settings.max_txn_ops).unwrap_or(usize::MAX),
            max_request_bytes: usize::try_from(config.settings.max_request_bytes)
                .unwrap_or(usize::MAX),
        },
        settings: std::sync::Arc::new(config.clone()),
    };
    tracing::info!(
        name = %config.name,
        member_id = format_args!("{:x}", ctx.member.id),
        data_dir = %data_dir.display(),
        "starting ballast"
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut servers = Vec::new();
    for url in &listen {
        let routes = routes(&ctx);
        let mut stop = stop_rx.clone();
        let listener = tokio::net::TcpListener::bind(url.addr)
            .await
            .with_context(|| format!("listening on {}", url.url))?;
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        tracing::info!(url = %url.url, "serving client requests");
        let keepalive =
            (!flags.grpc_keepalive_interval.is_zero()).then_some(flags.grpc_keepalive_interval);
        let server = tonic::transport::Server::builder()
            .accept_http1(true)
            .max_concurrent_streams(Some(flags.max_concurrent_streams))
            .http2_keepalive_interval(keepalive)
            .http2_keepalive_timeout(Some(flags.grpc_keepalive_timeout))
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop.wait_for(|s| *s).await;
            });
        servers.push(tokio::spawn(server));
    }
    drop(ctx);

    shutdown.await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    for server in servers {
        if let Err(err) = server.await? {
            tracing::warn!(%err, "server ended with an error");
        }
    }
    // The shard thread ends when the last handle (held by the services) is dropped.
    let _ = tokio::task::spawn_blocking(move || shard_thread.join()).await;
    Ok(())
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
    let grpc = routes.routes();
    let http = crate::http::router(ctx.clone());
    tonic::service::Routes::from(grpc.into_axum_router().merge(http))
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
        let c = shard_config(&cl.config, &cl.flags, ShardId(0));
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
