//! The plain-HTTP endpoints etcd serves on its client URLs: `/health`, `/version`, `/metrics`,
//! and the JSON gateway (`/v3/...`, [`crate::gateway`]). They share the port with gRPC
//! (HTTP/1.1 and HTTP/2 on one listener).

use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use ballast_consensus::{Reply, Request, Response, ShardStatus};
use ballast_engine::histogram::{DiskHistogram, DISK_BUCKET_BOUNDS_SECONDS};

use crate::context::{shard_error, Context, ETCD_CLUSTER_VERSION, ETCD_VERSION};
use crate::router::combine_statuses;

pub fn router(ctx: Context) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/version", get(version))
        .route("/metrics", get(metrics))
        .with_state(ctx.clone())
        .merge(crate::gateway::router(ctx))
}

/// What a request no route takes is answered: a gRPC call to an unknown method gets gRPC's
/// Unimplemented (as tonic answers it); anything else etcd's plain 404, with the CORS headers
/// etcd sends on every HTTP answer of its client port.
pub async fn fallback(request: axum::extract::Request) -> axum::response::Response {
    let grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"));
    if grpc {
        let method = request.uri().path().trim_start_matches('/');
        return tonic::Status::unimplemented(format!("unknown method {method}"))
            .into_http::<axum::body::Body>();
    }
    (
        StatusCode::NOT_FOUND,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
            (
                header::ACCESS_CONTROL_ALLOW_METHODS,
                "POST, GET, OPTIONS, PUT, DELETE",
            ),
            (
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                "accept, content-type, authorization",
            ),
        ],
        "404 page not found\n",
    )
        .into_response()
}

/// What `--listen-metrics-urls` serve: `/health` and `/metrics` only, as etcd does.
pub fn monitoring_router(ctx: Context) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(fallback)
        .with_state(ctx)
}

/// How `/health` answered since the start: etcd's `etcd_server_health_success` and
/// `etcd_server_health_failures`.
#[derive(Default)]
pub struct HealthCounts {
    success: AtomicU64,
    failures: AtomicU64,
}

/// Answers `/health` ([`health_answer`]) and counts the answer as healthy (200) or not.
async fn health(State(ctx): State<Context>, query: RawQuery) -> axum::response::Response {
    let counts = ctx.health.clone();
    let answer = health_answer(ctx, query).await;
    let counter = if answer.status() == StatusCode::OK {
        &counts.success
    } else {
        &counts.failures
    };
    counter.fetch_add(1, Ordering::Relaxed);
    answer
}

/// Unhealthy while an alarm is in force, answered as etcd 3.4.23 answers it (503, its
/// `http.Error` body `{"health":"false"}` and a newline); `?exclude=NOSPACE` (repeatable)
/// leaves alarms of that type out, as etcd's does. Unhealthy without a live leader (shard 0's,
/// `Anchor::has_leader`), with etcd's reason. Otherwise healthy when the shard answers and
/// has not stopped after a storage failure (then the reason names the failure), as etcd's
/// /health checks that a request goes through.
async fn health_answer(ctx: Context, RawQuery(query): RawQuery) -> axum::response::Response {
    let json = |ok: bool, reason: &str| {
        format!(
            "{{\"health\":\"{}\",\"reason\":\"{}\"}}",
            if ok { "true" } else { "false" },
            reason
        )
    };
    let excluded: Vec<&str> = query
        .as_deref()
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.strip_prefix("exclude="))
        .collect();
    let alarmed = ctx
        .quota
        .alarms
        .list()
        .iter()
        .any(|a| !excluded.contains(&a.alarm.to_string().as_str()));
    if alarmed {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            "{\"health\":\"false\"}\n",
        )
            .into_response();
    }
    if !ctx.anchor.has_leader() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            json(false, "RAFT NO LEADER"),
        )
            .into_response();
    }
    let answer = match ctx.call(Request::Status).await {
        Ok(Reply {
            response:
                Response::Status(ShardStatus {
                    failure: Some(cause),
                    ..
                }),
            ..
        }) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json(false, &cause.replace('"', "'")),
        ),
        Ok(_) => (StatusCode::OK, json(true, "")),
        Err(status) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json(false, &status.message().replace('"', "'")),
        ),
    };
    answer.into_response()
}

async fn version() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        format!("{{\"etcdserver\":\"{ETCD_VERSION}\",\"etcdcluster\":\"{ETCD_CLUSTER_VERSION}\"}}"),
    )
}

/// A first set of etcd's metric names, with values from every shard put together, then each
/// shard's own figures labelled with its id.
async fn metrics(State(ctx): State<Context>) -> impl IntoResponse {
    let mut shards = Vec::with_capacity(ctx.router.shard_count());
    for (shard, status) in ctx.router.statuses().await.into_iter().enumerate() {
        match status {
            Ok(s) => shards.push(s),
            Err(err) => {
                let message = format!("shard {shard}: {}", shard_error(err).message());
                return (StatusCode::SERVICE_UNAVAILABLE, message).into_response();
            }
        }
    }
    let s = combine_statuses(&shards);
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, value: String| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
        ));
    };
    // Shard 0's leader as etcd's members count one (`Anchor::has_leader`).
    gauge(
        "etcd_server_has_leader",
        "Whether or not a leader exists. 1 is existence, 0 is not.",
        u8::from(ctx.anchor.has_leader()).to_string(),
    );
    gauge(
        "etcd_server_is_leader",
        "Whether or not this member is a leader. 1 if is, 0 otherwise.",
        u8::from(ctx.anchor.is_leader()).to_string(),
    );
    // The backend size the storage quota counts (`ballast_consensus::state_machine::
    // BackendSize`), as etcd's figures are its bolt file's.
    gauge(
        "etcd_mvcc_db_total_size_in_bytes",
        "Total size of the underlying database physically allocated in bytes.",
        s.backend_bytes.to_string(),
    );
    // etcd 3.4 still shows the size under its older name too; dashboards read either.
    gauge(
        "etcd_debugging_mvcc_db_total_size_in_bytes",
        "Total size of the underlying database physically allocated in bytes.",
        s.backend_bytes.to_string(),
    );
    gauge(
        "etcd_server_is_learner",
        "Whether or not this member is a learner. 1 if is, 0 otherwise.",
        u8::from(ctx.anchor.is_learner()).to_string(),
    );
    gauge(
        "etcd_mvcc_db_total_size_in_use_in_bytes",
        "Total size of the underlying database logically in use in bytes.",
        s.backend_in_use_bytes.to_string(),
    );
    gauge(
        "etcd_server_quota_backend_bytes",
        "Current backend storage quota size in bytes.",
        ctx.quota.reported_bytes().to_string(),
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
    out.push_str(&info_metrics(ctx.member.id));
    let health = &ctx.health;
    for (name, help, n) in [
        (
            "etcd_server_health_success",
            "The total number of successful health checks",
            &health.success,
        ),
        (
            "etcd_server_health_failures",
            "The total number of failed health checks",
            &health.failures,
        ),
    ] {
        single(&mut out, name, "counter", help, n.load(Ordering::Relaxed));
    }
    out.push_str(&etcd_metrics(&shards, &s));
    out.push_str(&ctx.grpc_metrics.bytes_exposition());
    if let Some(hub) = &ctx.peers {
        out.push_str(&hub.metrics.exposition(ctx.member.id));
    }
    out.push_str(&ctx.grpc_metrics.exposition());
    out.push_str(&crate::process_metrics::exposition());
    out.push_str(&shard_metrics(&shards));
    out.push_str(&stage_metrics(&shards));
    out.push_str(&settings_metrics(&ctx.settings));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// etcd's info gauges: one sample of 1 whose label carries the figure. The versions are those
/// `/version` reports; the cluster version is its major and minor, as etcd writes it.
fn info_metrics(member_id: u64) -> String {
    let cluster_version = ETCD_CLUSTER_VERSION
        .splitn(3, '.')
        .take(2)
        .collect::<Vec<_>>()
        .join(".");
    let mut out = String::new();
    for (name, help, label, value) in [
        (
            "etcd_cluster_version",
            "Which version is running. 1 for 'cluster_version' label with current cluster \
             version",
            "cluster_version",
            cluster_version,
        ),
        (
            "etcd_server_id",
            "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.",
            "server_id",
            format!("{member_id:x}"),
        ),
        (
            "etcd_server_version",
            "Which version is running. 1 for 'server_version' label with current version.",
            "server_version",
            ETCD_VERSION.to_owned(),
        ),
    ] {
        family(&mut out, name, "gauge", help);
        out.push_str(&format!("{name}{{{label}=\"{value}\"}} 1\n"));
    }
    out
}

/// One metric family's `HELP` and `TYPE` lines.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
}

/// A family with one unlabelled sample.
fn single(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    family(out, name, kind, help);
    out.push_str(&format!("{name} {value}\n"));
}

/// A histogram in etcd's disk buckets: cumulative `le` buckets, `+Inf`, sum and count.
fn disk_histogram(out: &mut String, name: &str, help: &str, h: &DiskHistogram) {
    family(out, name, "histogram", help);
    for (bound, n) in DISK_BUCKET_BOUNDS_SECONDS.iter().zip(h.cumulative()) {
        out.push_str(&format!("{name}_bucket{{le=\"{bound}\"}} {n}\n"));
    }
    let (count, sum) = (h.count, h.sum_seconds());
    out.push_str(&format!(
        "{name}_bucket{{le=\"+Inf\"}} {count}\n{name}_sum {sum}\n{name}_count {count}\n"
    ));
}

/// etcd's names for what the shards measured, with etcd 3.4.23's types and help texts. One
/// member's shards make one series: histograms and counters add up over the shards, as do
/// the proposal indexes (each shard's log is a consensus group of its own, so the sums keep
/// `committed - applied` the backlog); leader changes are shard 0's, whose group is the
/// cluster's (membership, alarms, leases).
fn etcd_metrics(shards: &[ShardStatus], all: &ShardStatus) -> String {
    let mut out = String::new();
    let e = &all.etcd;
    disk_histogram(
        &mut out,
        "etcd_disk_wal_fsync_duration_seconds",
        "The latency distributions of fsync called by WAL.",
        &e.wal_fsync,
    );
    disk_histogram(
        &mut out,
        "etcd_disk_backend_commit_duration_seconds",
        "The latency distributions of commit called by backend.",
        &e.backend_commit,
    );
    let leader_changes = shards.first().map_or(0, |s| s.etcd.leader_changes);
    let sum = |f: fn(&ShardStatus) -> u64| shards.iter().map(f).sum::<u64>();
    let rows: [(&str, &str, &str, u64); 9] = [
        (
            "etcd_server_leader_changes_seen_total",
            "counter",
            "The number of leader changes seen.",
            leader_changes,
        ),
        // etcd declares these two gauges although their names end in _total.
        (
            "etcd_server_proposals_committed_total",
            "gauge",
            "The total number of consensus proposals committed.",
            sum(|s| s.raft_commit_index),
        ),
        (
            "etcd_server_proposals_applied_total",
            "gauge",
            "The total number of consensus proposals applied.",
            sum(|s| s.applied_index),
        ),
        (
            "etcd_server_proposals_pending",
            "gauge",
            "The current number of pending proposals to commit.",
            sum(|s| s.writes_in_flight as u64),
        ),
        (
            "etcd_server_proposals_failed_total",
            "counter",
            "The total number of failed proposals seen.",
            e.proposals_failed,
        ),
        (
            "etcd_mvcc_put_total",
            "counter",
            "Total number of puts seen by this member.",
            e.ops.puts,
        ),
        (
            "etcd_mvcc_delete_total",
            "counter",
            "Total number of deletes seen by this member.",
            e.ops.deletes,
        ),
        (
            "etcd_mvcc_range_total",
            "counter",
            "Total number of ranges seen by this member.",
            e.ops.ranges,
        ),
        (
            "etcd_mvcc_txn_total",
            "counter",
            "Total number of txns seen by this member.",
            e.ops.txns,
        ),
    ];
    for (name, kind, help, value) in rows {
        single(&mut out, name, kind, help, value);
    }
    out
}

/// One shard's own figures.
fn shard_rows(s: &ShardStatus) -> [(&'static str, &'static str, u64); 22] {
    [
        (
            "ballast_shard_failed",
            "1 when the shard stopped after a storage failure.",
            u64::from(s.failure.is_some()),
        ),
        (
            "ballast_shard_durable",
            "1 when the shard keeps its data on disk.",
            u64::from(s.durable),
        ),
        (
            "ballast_shard_applied_index",
            "Last log index applied to the store.",
            s.applied_index,
        ),
        (
            "ballast_shard_queue_depth",
            "Requests waiting in the shard's queue.",
            s.queue_depth as u64,
        ),
        (
            "ballast_shard_writes_in_flight",
            "Writes proposed and not yet answered.",
            s.writes_in_flight as u64,
        ),
        (
            "ballast_shard_write_latency_p50_microseconds",
            "Write latency inside the shard (append, commit, apply), median since start.",
            s.write_latency_us_p50,
        ),
        (
            "ballast_shard_write_latency_p99_microseconds",
            "Write latency inside the shard, 99th percentile since start.",
            s.write_latency_us_p99,
        ),
        (
            "ballast_shard_apply_latency_p99_nanoseconds",
            "Time to apply one entry, 99th percentile since start.",
            s.apply_latency_ns_p99,
        ),
        (
            "ballast_shard_wal_syncs_total",
            "WAL group-commit writes, each one fdatasync.",
            s.wal_syncs,
        ),
        (
            "ballast_shard_wal_records_total",
            "Log records written by those writes.",
            s.wal_records,
        ),
        (
            "ballast_shard_checkpoints_total",
            "Checkpoints completed since start.",
            s.checkpoints,
        ),
        (
            "ballast_shard_checkpoint_index",
            "Log index of the last checkpoint.",
            s.checkpoint_index,
        ),
        (
            "ballast_shard_checkpoint_last_duration_milliseconds",
            "Duration of the last checkpoint.",
            s.checkpoint_duration_ms_last,
        ),
        (
            "ballast_shard_checkpoint_pending_changes",
            "Changes waiting for the next checkpoint.",
            s.checkpoint_pending_changes,
        ),
        (
            "ballast_shard_page_log_bytes",
            "Page-log segment bytes on disk.",
            s.page_log_bytes,
        ),
        (
            "ballast_shard_page_cache_bytes",
            "Clean pages held in the page cache.",
            s.page_cache_bytes,
        ),
        (
            "ballast_shard_store_cached_keys",
            "Key indexes held in memory.",
            s.cached_keys,
        ),
        (
            "ballast_shard_store_cached_records",
            "History records held in memory.",
            s.cached_records,
        ),
        (
            "ballast_shard_store_loads_total",
            "Reads of key indexes and records from the page log.",
            s.cache_loads,
        ),
        (
            "ballast_shard_follower_reads_total",
            "Linearizable reads served from this member's store after the leader's read index.",
            s.served.follower_reads,
        ),
        (
            "ballast_shard_read_indexes_answered_total",
            "Read indexes this member answered for followers, as the shard's leader.",
            s.served.read_indexes_answered,
        ),
        (
            "ballast_shard_forwarded_served_total",
            "Requests followers forwarded that this member served, as the shard's leader.",
            s.served.forwarded_served,
        ),
    ]
}

/// Every shard's own figures: each metric once, with one sample per shard labelled with its id.
fn shard_metrics(shards: &[ShardStatus]) -> String {
    let per_shard: Vec<_> = shards.iter().map(shard_rows).collect();
    let mut out = String::new();
    let Some(first) = per_shard.first() else {
        return out;
    };
    for (row, (name, help, _)) in first.iter().enumerate() {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (shard, rows) in per_shard.iter().enumerate() {
            let value = rows[row].2;
            out.push_str(&format!("{name}{{shard=\"{shard}\"}} {value}\n"));
        }
    }
    out
}

/// Where each shard's writes spend their time (`consensus::stages`): per stage, the p50, p99
/// and p99.9 since the shard started (a gauge per quantile), and the writes timed.
fn stage_metrics(shards: &[ShardStatus]) -> String {
    let name = "ballast_shard_write_stage_microseconds";
    let timed = "ballast_shard_write_stage_timed_total";
    let mut out = format!(
        "# HELP {name} Time a write spends in each stage inside its shard (propose: to the log; \
         log: WAL write and fdatasync; commit: to the apply step; apply: store, watchers, answer).\n\
         # TYPE {name} gauge\n"
    );
    for (shard, s) in shards.iter().enumerate() {
        let f = &s.write_stages;
        for (stage, q) in [
            ("propose", f.propose_us),
            ("log", f.log_us),
            ("commit", f.commit_us),
            ("apply", f.apply_us),
        ] {
            for (quantile, value) in ["0.5", "0.99", "0.999"].iter().zip(q) {
                out.push_str(&format!(
                    "{name}{{shard=\"{shard}\",stage=\"{stage}\",quantile=\"{quantile}\"}} {value}\n"
                ));
            }
        }
    }
    out.push_str(&format!(
        "# HELP {timed} Writes timed through every stage.\n# TYPE {timed} counter\n"
    ));
    for (shard, s) in shards.iter().enumerate() {
        let writes = s.write_stages.writes;
        out.push_str(&format!("{timed}{{shard=\"{shard}\"}} {writes}\n"));
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The sample lines of `name` (with its labels) in `text`.
    fn samples<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        text.lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .collect()
    }

    #[test]
    fn info_gauges_carry_the_member_id_and_versions_in_their_labels() {
        let text = info_metrics(0x0e44_70d3_6d12_a02b);
        for line in [
            "# TYPE etcd_server_id gauge".to_owned(),
            "etcd_server_id{server_id=\"e4470d36d12a02b\"} 1".to_owned(),
            format!("etcd_server_version{{server_version=\"{ETCD_VERSION}\"}} 1"),
            "etcd_cluster_version{cluster_version=\"3.5\"} 1".to_owned(),
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
    }

    #[test]
    fn disk_histograms_have_etcds_buckets_cumulative_counts_and_add_over_shards() {
        let mut one = ShardStatus::default();
        one.etcd.wal_fsync.observe(Duration::from_micros(500));
        one.etcd.wal_fsync.observe(Duration::from_millis(3));
        one.etcd.backend_commit.observe(Duration::from_millis(20));
        let mut two = ShardStatus::default();
        two.etcd.wal_fsync.observe(Duration::from_millis(3));
        let shards = [one, two];
        let text = etcd_metrics(&shards, &crate::router::combine_statuses(&shards));
        let name = "etcd_disk_wal_fsync_duration_seconds";
        assert!(text.contains(&format!(
            "# HELP {name} The latency distributions of fsync called by WAL.\n\
             # TYPE {name} histogram\n"
        )));
        let want: Vec<String> = [
            ("0.001", 1),
            ("0.002", 1),
            ("0.004", 3),
            ("0.008", 3),
            ("0.016", 3),
            ("0.032", 3),
            ("0.064", 3),
            ("0.128", 3),
            ("0.256", 3),
            ("0.512", 3),
            ("1.024", 3),
            ("2.048", 3),
            ("4.096", 3),
            ("8.192", 3),
            ("+Inf", 3),
        ]
        .iter()
        .map(|(le, n)| format!("{name}_bucket{{le=\"{le}\"}} {n}"))
        .collect();
        assert_eq!(samples(&text, &format!("{name}_bucket")), want);
        assert_eq!(
            samples(&text, &format!("{name}_count")),
            [format!("{name}_count 3")]
        );
        assert_eq!(
            samples(&text, &format!("{name}_sum")),
            [format!("{name}_sum 0.0065")]
        );
        let commit = "etcd_disk_backend_commit_duration_seconds";
        assert!(text.contains(&format!("# TYPE {commit} histogram\n")));
        assert!(text.contains(&format!("{commit}_bucket{{le=\"0.016\"}} 0\n")));
        assert!(text.contains(&format!("{commit}_bucket{{le=\"0.032\"}} 1\n")));
        assert!(text.contains(&format!("{commit}_count 1\n")));
    }

    #[test]
    fn server_and_mvcc_counters_take_etcds_names_and_types() {
        let mut zero = ShardStatus {
            raft_commit_index: 10,
            applied_index: 9,
            writes_in_flight: 1,
            ..ShardStatus::default()
        };
        zero.etcd.leader_changes = 2;
        zero.etcd.proposals_failed = 1;
        zero.etcd.ops.puts = 3;
        zero.etcd.ops.ranges = 4;
        let mut one = ShardStatus {
            raft_commit_index: 5,
            applied_index: 5,
            ..ShardStatus::default()
        };
        one.etcd.leader_changes = 7;
        one.etcd.ops.puts = 1;
        one.etcd.ops.deletes = 2;
        one.etcd.ops.txns = 1;
        let shards = [zero, one];
        let text = etcd_metrics(&shards, &crate::router::combine_statuses(&shards));
        for (name, kind, value) in [
            ("etcd_server_leader_changes_seen_total", "counter", 2),
            ("etcd_server_proposals_committed_total", "gauge", 15),
            ("etcd_server_proposals_applied_total", "gauge", 14),
            ("etcd_server_proposals_pending", "gauge", 1),
            ("etcd_server_proposals_failed_total", "counter", 1),
            ("etcd_mvcc_put_total", "counter", 4),
            ("etcd_mvcc_delete_total", "counter", 2),
            ("etcd_mvcc_range_total", "counter", 4),
            ("etcd_mvcc_txn_total", "counter", 1),
        ] {
            assert!(
                text.contains(&format!("# TYPE {name} {kind}\n")),
                "{name}\n{text}"
            );
            assert_eq!(samples(&text, name), [format!("{name} {value}")], "{name}");
        }
    }

    #[test]
    fn each_metric_family_is_described_once_with_a_sample_per_shard() {
        let mut one = ShardStatus {
            applied_index: 7,
            ..ShardStatus::default()
        };
        one.write_stages.log_us = [80, 900, 4000];
        one.write_stages.writes = 12;
        let two = ShardStatus {
            applied_index: 9,
            ..ShardStatus::default()
        };
        let text = shard_metrics(&[one.clone(), two.clone()]) + &stage_metrics(&[one, two]);
        for family in [
            "ballast_shard_applied_index",
            "ballast_shard_write_stage_microseconds",
            "ballast_shard_write_stage_timed_total",
        ] {
            let help = format!("# HELP {family} ");
            assert_eq!(text.matches(&help).count(), 1, "{family}\n{text}");
        }
        assert!(text.contains("ballast_shard_applied_index{shard=\"0\"} 7\n"));
        assert!(text.contains("ballast_shard_applied_index{shard=\"1\"} 9\n"));
        assert!(text.contains(
            "ballast_shard_write_stage_microseconds{shard=\"0\",stage=\"log\",quantile=\"0.99\"} 900\n"
        ));
        assert!(text.contains("ballast_shard_write_stage_timed_total{shard=\"0\"} 12\n"));
    }
}
