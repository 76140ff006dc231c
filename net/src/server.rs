//! Assembles and runs the server: starts the shard, serves every client URL with the gRPC
//! services and the HTTP endpoints, and stops cleanly on SIGTERM or SIGINT.

use std::future::Future;

use anyhow::Context as _;
use ballast_consensus::{ShardConfig, ShardHandle};
use ballast_proto::etcdserverpb as pb;
use tokio::sync::watch;

use crate::context::{Context, Limits, Member};
use crate::flags::{self, Flags};
use crate::services::{cluster, election, kv, lease, lock, maintenance, watch as watch_svc};

/// gRPC's own per-message limit sits this far above `--max-request-bytes`, as in etcd, so that
/// a request just over the limit gets etcd's "request is too large" rather than a transport error.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

pub async fn run(flags: Flags, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    flags.check()?;
    let listen = flags::parse_listen_urls(&flags.listen_client_urls)?;
    let data_dir = flags.data_dir();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating data dir {}", data_dir.display()))?;

    let shard_config = ShardConfig {
        min_lease_ttl_secs: flags.min_lease_ttl_secs(),
        progress_notify_interval: flags.experimental_watch_progress_notify_interval,
        ..ShardConfig::default()
    };
    let (shard, shard_thread) = ShardHandle::spawn("shard-0", shard_config)?;
    let member = Member::new(
        &flags.name,
        flags.peer_urls(),
        flags.advertise_client_urls(),
        &flags.initial_cluster_token,
    );
    let ctx = Context {
        shard,
        member,
        limits: Limits {
            max_txn_ops: flags.max_txn_ops,
            max_request_bytes: flags.max_request_bytes,
        },
    };
    tracing::info!(
        name = %flags.name,
        member_id = format_args!("{:x}", ctx.member.id),
        data_dir = %data_dir.display(),
        "starting ballast (data is kept in memory until durable storage lands)"
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut servers = Vec::new();
    for url in &listen {
        let routes = routes(&ctx, &flags);
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

fn routes(ctx: &Context, flags: &Flags) -> tonic::service::Routes {
    let max = flags.max_request_bytes + GRPC_OVERHEAD_BYTES;
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
