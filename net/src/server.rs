//! Assembles and runs the server: starts the shard, serves every client URL with the gRPC
//! services and the HTTP endpoints, and stops cleanly on SIGTERM or SIGINT.

use std::future::Future;

use anyhow::Context as _;
use ballast_consensus::{ShardConfig, ShardHandle};
use ballast_proto::etcdserverpb as pb;
use tokio::sync::watch;

use crate::context::{Context, Limits, Member};
use crate::flags::{self, CommandLine};
use crate::services::{cluster, election, kv, lease, lock, maintenance, watch as watch_svc};

/// gRPC's own per-message limit sits this far above `--max-request-bytes`, as in etcd, so that
/// a request just over the limit gets etcd's "request is too large" rather than a transport error.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

pub async fn run(cl: CommandLine, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let CommandLine { flags, config, .. } = cl;
    flags::check(&config)?;
    for line in config.startup_report() {
        tracing::info!("config {line}");
    }
    let listen = flags::parse_listen_urls(&config.listen_client_urls.join(","))?;
    let data_dir = std::path::PathBuf::from(&config.data_dir);
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating data dir {}", data_dir.display()))?;

    let shard_config = ShardConfig {
        min_lease_ttl_secs: flags::min_lease_ttl_secs(&config),
        progress_notify_interval: flags.experimental_watch_progress_notify_interval,
        ..ShardConfig::default()
    };
    let (shard, shard_thread) = ShardHandle::spawn("shard-0", shard_config)?;
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
        "starting ballast (data is kept in memory until durable storage lands)"
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
