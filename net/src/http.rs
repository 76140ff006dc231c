//! The plain-HTTP endpoints etcd serves on its client URLs: `/health`, `/version`, `/metrics`.
//! They share the port with gRPC (HTTP/1.1 and HTTP/2 on one listener).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use ballast_consensus::{Request, Response};

use crate::context::{Context, ETCD_CLUSTER_VERSION, ETCD_VERSION};

pub fn router(ctx: Context) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/version", get(version))
        .route("/metrics", get(metrics))
        .with_state(ctx)
}

/// Healthy when the shard answers a read, as etcd's /health checks that a request goes through.
async fn health(State(ctx): State<Context>) -> impl IntoResponse {
    let json = |ok: bool, reason: &str| {
        format!(
            "{{\"health\":\"{}\",\"reason\":\"{}\"}}",
            if ok { "true" } else { "false" },
            reason
        )
    };
    match ctx.call(Request::Status).await {
        Ok(_) => (StatusCode::OK, json(true, "")),
        Err(status) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json(false, &status.message().replace('"', "'")),
        ),
    }
}

async fn version() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        format!("{{\"etcdserver\":\"{ETCD_VERSION}\",\"etcdcluster\":\"{ETCD_CLUSTER_VERSION}\"}}"),
    )
}

/// A first set of etcd's metric names, with values read from the shard.
async fn metrics(State(ctx): State<Context>) -> impl IntoResponse {
    let reply = match ctx.call(Request::Status).await {
        Ok(reply) => reply,
        Err(status) => {
            return (StatusCode::SERVICE_UNAVAILABLE, status.message().to_owned()).into_response()
        }
    };
    let Response::Status(s) = reply.response else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "unexpected shard reply").into_response();
    };
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, value: String| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
        ));
    };
    gauge(
        "etcd_server_has_leader",
        "Whether or not a leader exists. 1 is existence, 0 is not.",
        "1".into(),
    );
    gauge(
        "etcd_server_is_leader",
        "Whether or not this member is a leader. 1 if is, 0 otherwise.",
        "1".into(),
    );
    gauge(
        "etcd_mvcc_db_total_size_in_bytes",
        "Total size of the underlying database physically allocated in bytes.",
        s.size_bytes.to_string(),
    );
    gauge(
        "etcd_mvcc_db_total_size_in_use_in_bytes",
        "Total size of the underlying database logically in use in bytes.",
        s.size_bytes.to_string(),
    );
    gauge(
        "etcd_debugging_mvcc_current_revision",
        "The current revision of store.",
        s.revision.to_string(),
    );
    gauge(
        "etcd_debugging_mvcc_compact_revision",
        "The revision of the last compaction in store.",
        s.compact_revision.to_string(),
    );
    gauge(
        "etcd_debugging_mvcc_watcher_total",
        "Total number of watchers.",
        s.watchers.to_string(),
    );
    gauge(
        "etcd_server_version",
        "Which version is running. 1 for 'server_version' label with current version.",
        "1".into(),
    );
    out.push_str(&settings_metrics(&ctx.settings));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// The resolved configuration: the profile it started from and every numeric setting.
fn settings_metrics(config: &ballast_tuning::Config) -> String {
    let profile = config.profile.as_deref().unwrap_or("none");
    let mut out = format!(
        "# HELP ballast_profile_info The capacity profile the settings started from.\n\
         # TYPE ballast_profile_info gauge\nballast_profile_info{{profile=\"{profile}\"}} 1\n\
         # HELP ballast_setting A numeric setting in effect (key as in ballast-tune show).\n\
         # TYPE ballast_setting gauge\n"
    );
    for (key, _) in ballast_tuning::settings::SETTINGS_KEYS {
        if let Some(value) = config.settings.value_of(key) {
            if value.parse::<f64>().is_ok() {
                out.push_str(&format!("ballast_setting{{key=\"{key}\"}} {value}\n"));
            }
        }
    }
    out
}
