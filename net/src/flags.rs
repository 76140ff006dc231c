//! The `ballast` command line: etcd's flags (same names, defaults and `ETCD_*` variables) plus
//! Ballast's own. Go's flag syntax is accepted too (`-name x`, `--flag=true`, bare `--flag`).
//!
//! Every flag is in one of three states, listed in [`FlagStatus`]: applied; accepted but its
//! feature not built yet (logged at start-up when set, never silently misapplied); or refused
//! with a clear error where running without the feature would be wrong (an `https://` URL,
//! a multi-member `--initial-cluster`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use ballast_tuning::config::{Config, ConfigFile};
use ballast_tuning::settings::SETTINGS_KEYS;
use ballast_tuning::ConfigError;
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, CommandFactory, FromArgMatches, Parser};

use crate::partition::PartitionMap;

/// Go's boolean syntax: 1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False.
fn parse_go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        other => Err(format!("invalid boolean value {other:?}")),
    }
}

/// Go's duration syntax as etcd's flags use it: "100ms", "5s", "10m", "2h", "1h30m", "0".
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("missing unit in duration {s:?}"))?;
        let (num, tail) = rest.split_at(num_len);
        let value: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(format!("unknown unit {unit:?} in duration {s:?}")),
        };
        total += value * scale;
        rest = tail;
    }
    Ok(Duration::from_secs_f64(total))
}

macro_rules! go_bool {
    () => {
        clap::builder::ValueParser::new(parse_go_bool)
    };
}

#[derive(Parser, Debug, Clone)]
#[command(
    name = "ballast",
    version,
    about = "Ballast: an etcd-compatible key-value store. Accepts etcd's flags and ETCD_* variables.",
    after_help = "Flags marked [not built yet] are accepted for compatibility and logged at start-up when set."
)]
pub struct Flags {
    // ---- member ----
    /// Human-readable name for this member.
    #[arg(
        long,
        env = "ETCD_NAME",
        default_value = "default",
        help_heading = "Member"
    )]
    pub name: String,
    /// Path to the data directory [default: <name>.ballast].
    #[arg(long, env = "ETCD_DATA_DIR", help_heading = "Member")]
    pub data_dir: Option<PathBuf>,
    /// Path to the dedicated WAL directory (each shard's log goes in `shard-<n>` under it).
    #[arg(long, env = "ETCD_WAL_DIR", help_heading = "Member")]
    pub wal_dir: Option<PathBuf>,
    /// Applied entries that trigger a checkpoint of the state (and a log purge behind it).
    #[arg(
        long,
        env = "ETCD_SNAPSHOT_COUNT",
        default_value_t = 100_000,
        help_heading = "Member"
    )]
    pub snapshot_count: u64,
    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(
        long,
        env = "ETCD_HEARTBEAT_INTERVAL",
        default_value_t = 100,
        help_heading = "Member"
    )]
    pub heartbeat_interval: u64,
    /// Time (in milliseconds) for an election to timeout. Sets the minimum lease TTL (1.5x).
    #[arg(
        long,
        env = "ETCD_ELECTION_TIMEOUT",
        default_value_t = 1000,
        help_heading = "Member"
    )]
    pub election_timeout: u64,
    /// Whether to fast-forward initial election ticks on boot [not built yet].
    #[arg(long, env = "ETCD_INITIAL_ELECTION_TICK_ADVANCE", default_value = "true", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, value_parser = go_bool!(), help_heading = "Member")]
    pub initial_election_tick_advance: bool,
    /// List of URLs to listen on for peer traffic.
    #[arg(
        long,
        env = "ETCD_LISTEN_PEER_URLS",
        default_value = "http://localhost:2380",
        help_heading = "Member"
    )]
    pub listen_peer_urls: String,
    /// List of URLs to listen on for client traffic.
    #[arg(
        long,
        env = "ETCD_LISTEN_CLIENT_URLS",
        default_value = "http://localhost:2379",
        help_heading = "Member"
    )]
    pub listen_client_urls: String,
    /// Maximum number of snapshot files to retain (0 is unlimited) [not built yet].
    #[arg(
        long,
        env = "ETCD_MAX_SNAPSHOTS",
        default_value_t = 5,
        help_heading = "Member"
    )]
    pub max_snapshots: u32,
    /// Maximum number of wal files to retain (0 is unlimited) [not built yet].
    #[arg(
        long,
        env = "ETCD_MAX_WALS",
        default_value_t = 5,
        help_heading = "Member"
    )]
    pub max_wals: u32,
    /// Raise alarms when backend size exceeds the given quota (0 defaults to low space quota; negative: no quota).
    #[arg(
        long,
        env = "ETCD_QUOTA_BACKEND_BYTES",
        default_value_t = 0,
        allow_negative_numbers = true,
        help_heading = "Member"
    )]
    pub quota_backend_bytes: i64,
    /// BackendBatchInterval is the maximum time before commit the backend transaction [not applicable].
    #[arg(long, env = "ETCD_BACKEND_BATCH_INTERVAL", help_heading = "Member")]
    pub backend_batch_interval: Option<String>,
    /// BackendBatchLimit is the maximum operations before commit the backend transaction [not applicable].
    #[arg(long, env = "ETCD_BACKEND_BATCH_LIMIT", help_heading = "Member")]
    pub backend_batch_limit: Option<u64>,
    /// Maximum number of operations permitted in a transaction.
    #[arg(
        long,
        env = "ETCD_MAX_TXN_OPS",
        default_value_t = 128,
        help_heading = "Member"
    )]
    pub max_txn_ops: usize,
    /// Maximum client request size in bytes the server will accept.
    #[arg(
        long,
        env = "ETCD_MAX_REQUEST_BYTES",
        default_value_t = 1_572_864,
        help_heading = "Member"
    )]
    pub max_request_bytes: usize,
    /// Minimum duration interval that a client should wait before pinging server [not built yet].
    #[arg(long, env = "ETCD_GRPC_KEEPALIVE_MIN_TIME", default_value = "5s", value_parser = parse_go_duration, help_heading = "Member")]
    pub grpc_keepalive_min_time: Duration,
    /// Frequency duration of server-to-client ping to check if a connection is alive (0 to disable).
    #[arg(long, env = "ETCD_GRPC_KEEPALIVE_INTERVAL", default_value = "2h", value_parser = parse_go_duration, help_heading = "Member")]
    pub grpc_keepalive_interval: Duration,
    /// Additional duration of wait before closing a non-responsive connection (0 to disable).
    #[arg(long, env = "ETCD_GRPC_KEEPALIVE_TIMEOUT", default_value = "20s", value_parser = parse_go_duration, help_heading = "Member")]
    pub grpc_keepalive_timeout: Duration,
    /// Maximum concurrent streams that each client can open at a time.
    #[arg(long, env = "ETCD_MAX_CONCURRENT_STREAMS", default_value_t = u32::MAX, help_heading = "Member")]
    pub max_concurrent_streams: u32,

    // ---- clustering ----
    /// List of this member's peer URLs to advertise to the rest of the cluster.
    #[arg(
        long,
        env = "ETCD_INITIAL_ADVERTISE_PEER_URLS",
        default_value = "http://localhost:2380",
        help_heading = "Clustering"
    )]
    pub initial_advertise_peer_urls: String,
    /// Initial cluster configuration for bootstrapping (one member until clustering is built).
    #[arg(long, env = "ETCD_INITIAL_CLUSTER", help_heading = "Clustering")]
    pub initial_cluster: Option<String>,
    /// Initial cluster state ('new' or 'existing').
    #[arg(long, env = "ETCD_INITIAL_CLUSTER_STATE", default_value = "new", value_parser = ["new", "existing"], help_heading = "Clustering")]
    pub initial_cluster_state: String,
    /// Initial cluster token for the etcd cluster during bootstrap (part of the cluster id).
    #[arg(
        long,
        env = "ETCD_INITIAL_CLUSTER_TOKEN",
        default_value = "etcd-cluster",
        help_heading = "Clustering"
    )]
    pub initial_cluster_token: String,
    /// List of this member's client URLs to advertise to the public.
    #[arg(
        long,
        env = "ETCD_ADVERTISE_CLIENT_URLS",
        default_value = "http://localhost:2379",
        help_heading = "Clustering"
    )]
    pub advertise_client_urls: String,
    /// Discovery URL used to bootstrap the cluster [not built yet].
    #[arg(long, env = "ETCD_DISCOVERY", help_heading = "Clustering")]
    pub discovery: Option<String>,
    /// DNS srv domain used to bootstrap the cluster [not built yet].
    #[arg(long, env = "ETCD_DISCOVERY_SRV", help_heading = "Clustering")]
    pub discovery_srv: Option<String>,
    /// Suffix to the dns srv name queried when bootstrapping [not built yet].
    #[arg(long, env = "ETCD_DISCOVERY_SRV_NAME", help_heading = "Clustering")]
    pub discovery_srv_name: Option<String>,
    /// Expected behavior ('exit' or 'proxy') when discovery services fails [not built yet].
    #[arg(long, env = "ETCD_DISCOVERY_FALLBACK", help_heading = "Clustering")]
    pub discovery_fallback: Option<String>,
    /// HTTP proxy to use for traffic to discovery service [not built yet].
    #[arg(long, env = "ETCD_DISCOVERY_PROXY", help_heading = "Clustering")]
    pub discovery_proxy: Option<String>,
    /// Reject reconfiguration requests that would cause quorum loss [not built yet].
    #[arg(long, env = "ETCD_STRICT_RECONFIG_CHECK", default_value = "true", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, value_parser = go_bool!(), help_heading = "Clustering")]
    pub strict_reconfig_check: bool,
    /// Enable the raft Pre-Vote algorithm [not built yet].
    #[arg(long, env = "ETCD_PRE_VOTE", default_value = "false", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, value_parser = go_bool!(), help_heading = "Clustering")]
    pub pre_vote: bool,
    /// Auto compaction retention length. 0 means disable auto compaction.
    #[arg(
        long,
        env = "ETCD_AUTO_COMPACTION_RETENTION",
        default_value = "0",
        help_heading = "Clustering"
    )]
    pub auto_compaction_retention: String,
    /// Interpret 'auto-compaction-retention' one of: 'periodic', 'revision'.
    #[arg(long, env = "ETCD_AUTO_COMPACTION_MODE", default_value = "periodic", value_parser = ["periodic", "revision"], help_heading = "Clustering")]
    pub auto_compaction_mode: String,
    /// Accept etcd V2 client requests [not built: Ballast serves the v3 API only].
    #[arg(long, env = "ETCD_ENABLE_V2", default_value = "false", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, value_parser = go_bool!(), help_heading = "Clustering")]
    pub enable_v2: bool,

    // ---- security ----
    /// Path to the client server TLS cert file.
    #[arg(long, env = "ETCD_CERT_FILE", help_heading = "Security")]
    pub cert_file: Option<PathBuf>,
    /// Path to the client server TLS key file.
    #[arg(long, env = "ETCD_KEY_FILE", help_heading = "Security")]
    pub key_file: Option<PathBuf>,
    /// Enable client cert authentication.
    #[arg(long, env = "ETCD_CLIENT_CERT_AUTH", default_value = "false", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, value_parser = go_bool!(), help_heading = "Security")]
    pub client_cert_auth: bool,
    /// Path to the client certificate revocation list file.
    #[arg(long, env = "ETCD_CLIENT_CRL_FILE", help_heading = "Security")]
    pub client_crl_file: Option<PathBuf>,
    /// Allowed TLS hostname for client cert authentication.
    #[arg(
        long,
        env = "ETCD_CLIENT_CERT_ALLOWED_HOSTNAME",
        help_heading = "Security"
    )]
    pub client_cert_allowed_hostname: Option<String>,
    /// Path to the client server TLS trusted CA cert file.
    #[arg(long, env = "ETCD_TRUSTED_CA_FILE", help_heading = "Security")]
    pub trusted_ca_file: Option<PathBuf>,
    /// Client TLS using generated certificates.
    #[arg(long, env = "ETCD_AUTO_TLS", default_value = "false", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, value_parser = go_bool!(), help_heading = "Security")]
    pub auto_tls: bool,
    /// Path to the peer server TLS cert file.
    #[arg(long, env = "ETCD_PEER_CERT_FILE", help_heading = "Security")]
    pub peer_cert_file: Option<PathBuf>,
    /// Path to the peer server TLS key file.
    #[arg(long, env = "ETCD_PEER_KEY_FILE", help_heading = "Security")]
    pub peer_key_file: Option<PathBuf>,
    /// Enable peer client cert authentication.
    #[arg(long, env = "ETCD_PEER_CLIENT_CERT_AUTH", default_value = "false", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, value_parser = go_bool!(), help_heading = "Security")]
    pub peer_client_cert_auth: bool,
    /// Path to the peer server TLS trusted CA file.
    #[arg(long, env = "ETCD_PEER_TRUSTED_CA_FILE", help_heading = "Security")]
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// Peer TLS using self-generated certificates.
    #[arg(long, env = "ETCD_PEER_AUTO_TLS", default_value = "false", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, value_parser = go_bool!(), help_heading = "Security")]
    pub peer_auto_tls: bool,
    /// Allowed CN for inter peer authentication.
    #[arg(long, env = "ETCD_PEER_CERT_ALLOWED_CN", help_heading = "Security")]
    pub peer_cert_allowed_cn: Option<String>,
    /// Allowed TLS hostname for inter peer authentication.
    #[arg(
        long,
        env = "ETCD_PEER_CERT_ALLOWED_HOSTNAME",
        help_heading = "Security"
    )]
    pub peer_cert_allowed_hostname: Option<String>,
    /// Path to the peer certificate revocation list file.
    #[arg(long, env = "ETCD_PEER_CRL_FILE", help_heading = "Security")]
    pub peer_crl_file: Option<PathBuf>,
    /// The validity period of the self-signed certificate, in years.
    #[arg(
        long,
        env = "ETCD_SELF_SIGNED_CERT_VALIDITY",
        default_value_t = 1,
        help_heading = "Security"
    )]
    pub self_signed_cert_validity: u32,
    /// Comma-separated list of supported TLS cipher suites.
    #[arg(long, env = "ETCD_CIPHER_SUITES", help_heading = "Security")]
    pub cipher_suites: Option<String>,
    /// Comma-separated white list of origins for CORS [not built yet].
    #[arg(long, env = "ETCD_CORS", help_heading = "Security")]
    pub cors: Option<String>,
    /// Acceptable hostnames from HTTP client requests, if server is not secure [not built yet].
    #[arg(long, env = "ETCD_HOST_WHITELIST", help_heading = "Security")]
    pub host_whitelist: Option<String>,
    /// Minimum TLS version supported by etcd.
    #[arg(long, env = "ETCD_TLS_MIN_VERSION", help_heading = "Security")]
    pub tls_min_version: Option<String>,
    /// Maximum TLS version supported by etcd.
    #[arg(long, env = "ETCD_TLS_MAX_VERSION", help_heading = "Security")]
    pub tls_max_version: Option<String>,

    // ---- auth ----
    /// Specify a v3 authentication token type and its options ('simple' or 'jwt,sign-method=...,pub-key=...,priv-key=...,ttl=...').
    #[arg(
        long,
        env = "ETCD_AUTH_TOKEN",
        default_value = "simple",
        help_heading = "Auth"
    )]
    pub auth_token: String,
    /// Specify the cost / strength of the bcrypt algorithm for hashing auth passwords (4 to 31).
    #[arg(
        long,
        env = "ETCD_BCRYPT_COST",
        default_value_t = 10,
        help_heading = "Auth"
    )]
    pub bcrypt_cost: u32,
    /// The lifetime in seconds of the auth token.
    #[arg(
        long,
        env = "ETCD_AUTH_TOKEN_TTL",
        default_value_t = 300,
        help_heading = "Auth"
    )]
    pub auth_token_ttl: u64,

    // ---- logging ----
    /// Specify 'zap' for structured logging or 'capnslog' (Ballast always logs with tracing).
    #[arg(
        long,
        env = "ETCD_LOGGER",
        default_value = "zap",
        help_heading = "Logging"
    )]
    pub logger: String,
    /// Specify 'stdout' or 'stderr' to skip journald logging even when running under systemd.
    #[arg(
        long,
        env = "ETCD_LOG_OUTPUTS",
        default_value = "default",
        help_heading = "Logging"
    )]
    pub log_outputs: String,
    /// Configures log level. Only supports debug, info, warn, error, panic, or fatal.
    #[arg(
        long,
        env = "ETCD_LOG_LEVEL",
        default_value = "info",
        help_heading = "Logging"
    )]
    pub log_level: String,
    /// Enable debug-level logging (deprecated in etcd: use --log-level=debug).
    #[arg(long, env = "ETCD_DEBUG", default_value = "false", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, value_parser = go_bool!(), help_heading = "Logging")]
    pub debug: bool,

    // ---- monitoring ----
    /// Enable runtime profiling data via HTTP server [not built yet].
    #[arg(long, env = "ETCD_ENABLE_PPROF", default_value = "false", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, value_parser = go_bool!(), help_heading = "Monitoring")]
    pub enable_pprof: bool,
    /// Set level of detail for exported metrics, specify 'extensive' to include server side grpc histogram metrics [not built yet].
    #[arg(
        long,
        env = "ETCD_METRICS",
        default_value = "basic",
        help_heading = "Monitoring"
    )]
    pub metrics: String,
    /// List of URLs to listen on for the metrics and health endpoints.
    #[arg(long, env = "ETCD_LISTEN_METRICS_URLS", help_heading = "Monitoring")]
    pub listen_metrics_urls: Option<String>,

    // ---- experimental and unsafe ----
    /// Enable to check data corruption before serving any client/peer traffic [not built yet].
    #[arg(long, env = "ETCD_EXPERIMENTAL_INITIAL_CORRUPT_CHECK", default_value = "false", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, value_parser = go_bool!(), help_heading = "Experimental")]
    pub experimental_initial_corrupt_check: bool,
    /// Duration of time between cluster corruption check passes [not built yet].
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_CORRUPT_CHECK_TIME",
        help_heading = "Experimental"
    )]
    pub experimental_corrupt_check_time: Option<String>,
    /// Enable to persist lease remaining TTL to prevent indefinite auto-renewal of long lived leases [not built yet].
    #[arg(long, env = "ETCD_EXPERIMENTAL_ENABLE_LEASE_CHECKPOINT", default_value = "false", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, value_parser = go_bool!(), help_heading = "Experimental")]
    pub experimental_enable_lease_checkpoint: bool,
    /// Sets the maximum revisions deleted in each compaction batch [not applicable].
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_COMPACTION_BATCH_LIMIT",
        help_heading = "Experimental"
    )]
    pub experimental_compaction_batch_limit: Option<u64>,
    /// Skip verification of SAN field in client certificate for peer connections [not built yet].
    #[arg(long, env = "ETCD_EXPERIMENTAL_PEER_SKIP_CLIENT_SAN_VERIFICATION", default_value = "false", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, value_parser = go_bool!(), help_heading = "Experimental")]
    pub experimental_peer_skip_client_san_verification: bool,
    /// Duration of periodic watch progress notifications.
    #[arg(long, env = "ETCD_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL", default_value = "10m", value_parser = parse_go_duration, help_heading = "Experimental")]
    pub experimental_watch_progress_notify_interval: Duration,
    /// The freelist type that etcd backend(bboltdb) uses [not applicable].
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_BACKEND_BBOLT_FREELIST_TYPE",
        help_heading = "Experimental"
    )]
    pub experimental_backend_bbolt_freelist_type: Option<String>,
    /// Time duration after which a warning is generated if request takes more time [not built yet].
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_WARNING_APPLY_DURATION",
        help_heading = "Experimental"
    )]
    pub experimental_warning_apply_duration: Option<String>,
    /// Enable v2v3 proxy [not built: Ballast serves the v3 API only].
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_ENABLE_V2V3",
        help_heading = "Experimental"
    )]
    pub experimental_enable_v2v3: Option<String>,
    /// Force to create a new one member cluster [not built yet].
    #[arg(long, env = "ETCD_FORCE_NEW_CLUSTER", default_value = "false", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, value_parser = go_bool!(), help_heading = "Unsafe")]
    pub force_new_cluster: bool,
    /// Disables fsync, unsafe, will cause data loss [not built yet].
    #[arg(long, env = "ETCD_UNSAFE_NO_FSYNC", default_value = "false", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, value_parser = go_bool!(), help_heading = "Unsafe")]
    pub unsafe_no_fsync: bool,
    /// Path to the server configuration file (etcd's YAML keys plus Ballast's). Flags and
    /// ETCD_* variables override the file, which overrides the profile.
    #[arg(long, env = "ETCD_CONFIG_FILE", help_heading = "Member")]
    pub config_file: Option<PathBuf>,
    /// Enable GRPC gateway [not built yet].
    #[arg(long, env = "ETCD_ENABLE_GRPC_GATEWAY", default_value = "true", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, value_parser = go_bool!(), help_heading = "Member")]
    pub enable_grpc_gateway: bool,
    /// Enable to set socket option SO_REUSEPORT on listeners [not built yet].
    #[arg(long, env = "ETCD_SOCKET_REUSE_PORT", default_value = "false", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, value_parser = go_bool!(), help_heading = "Member")]
    pub socket_reuse_port: bool,
    /// Enable to set socket option SO_REUSEADDR on listeners [not built yet].
    #[arg(long, env = "ETCD_SOCKET_REUSE_ADDRESS", default_value = "false", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, value_parser = go_bool!(), help_heading = "Member")]
    pub socket_reuse_address: bool,

    // ---- Ballast's own ----
    /// Number of shards (default: number of cores; an existing data dir keeps its own).
    #[arg(long, env = "BALLAST_SHARDS", help_heading = "Ballast")]
    pub shards: Option<usize>,
    /// Capacity profile: small, medium, large or xlarge (`ballast-tune profiles` lists them).
    #[arg(long, env = "BALLAST_PROFILE", help_heading = "Ballast")]
    pub profile: Option<String>,
    /// Pin a key prefix to a shard, PREFIX=SHARD (repeatable; fixed when the data dir is created).
    #[arg(long, env = "BALLAST_PARTITION", help_heading = "Ballast")]
    pub partition: Vec<String>,
}

/// Flags that are accepted but whose feature is not built yet.
const NOT_BUILT: &[&str] = &[
    "initial_election_tick_advance",
    "max_snapshots",
    "max_wals",
    "backend_batch_interval",
    "backend_batch_limit",
    "grpc_keepalive_min_time",
    "discovery",
    "discovery_srv",
    "discovery_srv_name",
    "discovery_fallback",
    "discovery_proxy",
    "strict_reconfig_check",
    "pre_vote",
    "enable_v2",
    "cors",
    "host_whitelist",
    "enable_pprof",
    "metrics",
    "experimental_initial_corrupt_check",
    "experimental_corrupt_check_time",
    "experimental_enable_lease_checkpoint",
    "experimental_compaction_batch_limit",
    "experimental_peer_skip_client_san_verification",
    "experimental_backend_bbolt_freelist_type",
    "experimental_warning_apply_duration",
    "experimental_enable_v2v3",
    "force_new_cluster",
    "unsafe_no_fsync",
    "enable_grpc_gateway",
    "socket_reuse_port",
    "socket_reuse_address",
];

/// Ballast tuning keys whose machinery is not built yet (the watch buffers); the
/// storage keys (`page-cache-bytes`, `checkpoint-*`, `group-commit-*`) act.
const TUNING_NOT_BUILT: &[&str] = &["watch-event-buffer", "watch-stream-buffer"];

/// The parsed command line: the raw flags, the configuration resolved from profile, config
/// file, `ETCD_*` variables and flags, and which flags the user set whose feature is not built.
pub struct CommandLine {
    pub flags: Flags,
    pub config: Config,
    pub set_but_not_built: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Clap(#[from] clap::Error),
    #[error("{0}")]
    Config(#[from] ConfigError),
}

/// The command with every tuning key that the derive above does not declare (Ballast's own
/// settings such as `--page-cache-bytes`), so `ballast-tune show NAME --format flags` output is
/// accepted as it is.
pub fn command() -> clap::Command {
    let mut cmd = Flags::command();
    let declared: std::collections::HashSet<String> = cmd
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_owned))
        .collect();
    for key in ConfigFile::keys() {
        if declared.contains(&key) {
            continue;
        }
        let help = SETTINGS_KEYS
            .iter()
            .find(|(k, _)| *k == key)
            .map_or("Ballast setting (see docs/tuning.md).", |(_, h)| *h);
        let env = format!("BALLAST_{}", key.to_ascii_uppercase().replace('-', "_"));
        cmd = cmd.arg(
            clap::Arg::new(key.clone())
                .long(key)
                .env(env)
                .help(help)
                .help_heading("Ballast tuning"),
        );
    }
    cmd
}

/// Go accepts `-flag` as well as `--flag`; clap wants two dashes.
fn normalize_go_args(args: impl IntoIterator<Item = String>) -> Vec<String> {
    args.into_iter()
        .enumerate()
        .map(|(i, a)| {
            let single_dash = a.starts_with('-') && !a.starts_with("--") && a.len() > 2;
            let is_flag = a[1..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic());
            if i > 0 && single_dash && is_flag {
                format!("-{a}")
            } else {
                a
            }
        })
        .collect()
}

pub fn parse(args: impl IntoIterator<Item = String>) -> Result<CommandLine, CliError> {
    let cmd = command();
    let matches = cmd.clone().try_get_matches_from(normalize_go_args(args))?;
    let flags = Flags::from_arg_matches(&matches)?;
    let keys: std::collections::HashSet<String> = ConfigFile::keys().into_iter().collect();
    let (mut env_layer, mut flag_layer) = (ConfigFile::default(), ConfigFile::default());
    let mut set_but_not_built = not_built_set(&matches);
    for arg in cmd.get_arguments() {
        let (Some(long), id) = (arg.get_long(), arg.get_id().as_str()) else {
            continue;
        };
        if !keys.contains(long) {
            continue;
        }
        let layer = match matches.value_source(id) {
            Some(ValueSource::CommandLine) => &mut flag_layer,
            Some(ValueSource::EnvVariable) => &mut env_layer,
            _ => continue,
        };
        let text: Vec<String> = matches
            .get_raw(id)
            .into_iter()
            .flatten()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        layer.set(long, &text.join(","))?;
        if TUNING_NOT_BUILT.contains(&long)
            && !Flags::command()
                .get_arguments()
                .any(|a| a.get_long() == Some(long))
        {
            set_but_not_built.push(format!("--{long}"));
        }
    }
    let file_layer = match &flags.config_file {
        Some(path) => ballast_tuning::config::from_yaml_file(path)?,
        None => ConfigFile::default(),
    };
    let config = ballast_tuning::config::resolve(&[&env_layer, &file_layer, &flag_layer])?;
    Ok(CommandLine {
        flags,
        config,
        set_but_not_built,
    })
}

fn was_set(matches: &ArgMatches, id: &str) -> bool {
    matches!(
        matches.value_source(id),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

fn not_built_set(matches: &ArgMatches) -> Vec<String> {
    NOT_BUILT
        .iter()
        .filter(|id| was_set(matches, id))
        .map(|id| format!("--{}", id.replace('_', "-")))
        .collect()
}

/// A URL this node serves on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenUrl {
    pub url: String,
    pub addr: SocketAddr,
    /// `https://`: the listener serves TLS.
    pub tls: bool,
}

/// Parses a comma-separated URL list such as `http://127.0.0.1:2379,http://localhost:22379`.
/// `localhost` binds the IPv4 loopback, as etcd does.
pub fn parse_listen_urls(list: &str) -> anyhow::Result<Vec<ListenUrl>> {
    let mut out = Vec::new();
    for url in list.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        let (rest, tls) = if let Some(rest) = url.strip_prefix("http://") {
            (rest, false)
        } else if let Some(rest) = url.strip_prefix("https://") {
            (rest, true)
        } else if url.starts_with("unix://") || url.starts_with("unixs://") {
            bail!("{url}: unix socket listeners are not built yet")
        } else {
            bail!("{url}: URL scheme must be http or https")
        };
        let hostport = rest.trim_end_matches('/');
        let (host, port) = hostport
            .rsplit_once(':')
            .with_context(|| format!("{url}: missing port"))?;
        let port: u16 = port
            .parse()
            .with_context(|| format!("{url}: invalid port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let ip: std::net::IpAddr = if host == "localhost" {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            host.parse()
                .with_context(|| format!("{url}: listen host must be an IP address or localhost"))?
        };
        out.push(ListenUrl {
            url: url.to_owned(),
            addr: SocketAddr::new(ip, port),
            tls,
        });
    }
    if out.is_empty() {
        bail!("no listen URL given");
    }
    Ok(out)
}

/// etcd's minimum lease TTL: 1.5 election timeouts, rounded up to whole seconds.
pub fn min_lease_ttl_secs(config: &Config) -> i64 {
    let heartbeat = config.settings.heartbeat_interval_ms.max(1);
    let election_ticks = config.settings.election_timeout_ms / heartbeat;
    let min_ttl_ms = (3 * election_ticks / 2) * heartbeat;
    i64::try_from(min_ttl_ms.div_ceil(1000)).unwrap_or(i64::MAX)
}

/// Refuses settings this node cannot honour without misapplying them.
pub fn check(config: &Config) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism()
        .map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX));
    check_partition(config, cores)?;
    initial_members(config)?;
    Ok(())
}

/// The members `--initial-cluster` names (`NAME=PEER_URL,...`; a name given twice has several
/// peer URLs), in the order first named. This node must be among them, with exactly its
/// `--initial-advertise-peer-urls` (etcd's checks and messages).
pub fn initial_members(config: &Config) -> anyhow::Result<Vec<(String, Vec<String>)>> {
    let mut members: Vec<(String, Vec<String>)> = Vec::new();
    for entry in config
        .initial_cluster
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
    {
        let (name, url) = entry
            .split_once('=')
            .with_context(|| format!("--initial-cluster entry {entry:?} is not NAME=PEER_URL"))?;
        let (name, url) = (name.trim().to_owned(), url.trim().to_owned());
        match members.iter_mut().find(|(n, _)| *n == name) {
            Some((_, urls)) => urls.push(url),
            None => members.push((name, vec![url])),
        }
    }
    let Some((_, mine)) = members.iter().find(|(n, _)| *n == config.name) else {
        bail!(
            "couldn't find local name {:?} in the initial cluster configuration",
            config.name
        );
    };
    let mut mine = mine.clone();
    let mut advertised = config.initial_advertise_peer_urls.clone();
    mine.sort();
    advertised.sort();
    if members.len() > 1 && mine != advertised {
        bail!(
            "--initial-cluster has {}={} but missing from --initial-advertise-peer-urls={} \
             (the peer URLs this member advertises must be those the cluster names it with)",
            config.name,
            mine.join(","),
            advertised.join(",")
        );
    }
    Ok(members)
}

/// The partition map the settings describe on `cores` cores: a `partition` that could never be
/// honoured (a pin to a shard that does not exist, an empty or twice-pinned prefix) stops
/// start-up with a message naming the setting.
pub fn check_partition(config: &Config, cores: u32) -> anyhow::Result<PartitionMap> {
    PartitionMap::from_settings(&config.settings, cores).map_err(|e| {
        anyhow::anyhow!(
            "invalid partition {:?} (--partition, or `partition` in the config file or profile): {e}",
            config.partition_text()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        std::iter::once("ballast")
            .chain(list.iter().copied())
            .map(String::from)
            .collect()
    }

    #[test]
    fn defaults_match_etcd() {
        let cl = parse(args(&[])).unwrap();
        let c = &cl.config;
        assert_eq!(c.name, "default");
        assert_eq!(c.data_dir, "default.ballast");
        assert_eq!(c.settings.max_txn_ops, 128);
        assert_eq!(c.settings.max_request_bytes, 1_572_864);
        assert_eq!(min_lease_ttl_secs(c), 2);
        let urls = parse_listen_urls(&c.listen_client_urls.join(",")).unwrap();
        assert_eq!(urls[0].addr, "127.0.0.1:2379".parse().unwrap());
        assert!(cl.set_but_not_built.is_empty());
    }

    #[test]
    fn go_syntax_and_bools() {
        let cl = parse(args(&[
            "-name",
            "n1",
            "--client-cert-auth=true",
            "--strict-reconfig-check=false",
            "--force-new-cluster",
            "--experimental-watch-progress-notify-interval=5s",
        ]))
        .unwrap();
        assert_eq!(cl.flags.name, "n1");
        assert!(cl.flags.client_cert_auth);
        assert!(!cl.flags.strict_reconfig_check);
        assert!(cl.flags.force_new_cluster);
        assert_eq!(
            cl.flags.experimental_watch_progress_notify_interval,
            Duration::from_secs(5)
        );
        assert!(!cl
            .set_but_not_built
            .contains(&"--client-cert-auth".to_owned()));
        assert!(cl
            .set_but_not_built
            .contains(&"--force-new-cluster".to_owned()));
    }

    #[test]
    fn quota_backend_bytes_acts_with_etcds_zero_and_negative() {
        use ballast_tuning::settings::{DEFAULT_QUOTA_BACKEND_BYTES, QUOTA_DISABLED};
        let quota = |list: &[&str]| {
            let cl = parse(args(list)).unwrap();
            assert!(
                cl.set_but_not_built.is_empty(),
                "{:?}",
                cl.set_but_not_built
            );
            cl.config.settings.quota_backend_bytes
        };
        assert_eq!(quota(&[]), DEFAULT_QUOTA_BACKEND_BYTES);
        assert_eq!(
            quota(&["--quota-backend-bytes=0"]),
            DEFAULT_QUOTA_BACKEND_BYTES
        );
        assert_eq!(quota(&["--quota-backend-bytes", "4194304"]), 4 << 20);
        // Go's flags take a negative value after a space too.
        assert_eq!(quota(&["--quota-backend-bytes", "-1"]), QUOTA_DISABLED);
        assert_eq!(quota(&["-quota-backend-bytes=-100"]), QUOTA_DISABLED);
    }

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(
            parse_go_duration("100ms").unwrap(),
            Duration::from_millis(100)
        );
        assert_eq!(
            parse_go_duration("1h30m").unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(parse_go_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_go_duration("5").is_err());
        assert!(parse_go_duration("5x").is_err());
    }

    #[test]
    fn initial_cluster_members_and_tls_urls() {
        let cl = parse(args(&[
            "--initial-cluster",
            "a=http://127.0.0.1:2380,b=http://127.0.0.1:2381,a=http://127.0.0.1:2390",
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:2390,http://127.0.0.1:2380",
            "--name",
            "a",
        ]))
        .unwrap();
        check(&cl.config).unwrap();
        assert_eq!(
            initial_members(&cl.config).unwrap(),
            vec![
                (
                    "a".to_owned(),
                    vec![
                        "http://127.0.0.1:2380".to_owned(),
                        "http://127.0.0.1:2390".to_owned()
                    ]
                ),
                ("b".to_owned(), vec!["http://127.0.0.1:2381".to_owned()]),
            ]
        );
        // This member's advertised peer URLs must be those the cluster names it with.
        let cl = parse(args(&[
            "--initial-cluster",
            "a=http://127.0.0.1:2380,b=http://127.0.0.1:2381",
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:2999",
            "--name",
            "a",
        ]))
        .unwrap();
        let err = check(&cl.config).unwrap_err().to_string();
        assert!(
            err.contains("missing from --initial-advertise-peer-urls"),
            "{err}"
        );
        let urls = parse_listen_urls("https://127.0.0.1:2379,http://localhost:22379").unwrap();
        assert_eq!(
            urls.iter()
                .map(|u| (u.addr.to_string(), u.tls))
                .collect::<Vec<_>>(),
            [
                ("127.0.0.1:2379".to_owned(), true),
                ("127.0.0.1:22379".to_owned(), false)
            ]
        );
        assert!(parse_listen_urls("unixs://sock").is_err());
        assert!(parse_listen_urls("ftp://127.0.0.1:1").is_err());
        let cl = parse(args(&["--initial-cluster", "other=http://127.0.0.1:2380"])).unwrap();
        let err = check(&cl.config).unwrap_err().to_string();
        assert!(err.contains("couldn't find local name"), "{err}");
    }

    #[test]
    fn profile_file_and_flags_layer_in_that_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ballast.yml");
        std::fs::write(
            &file,
            "name: from-file\nmax-txn-ops: 64\nheartbeat-interval: 200\n",
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let cl = parse(args(&[
            "--profile",
            "large",
            "--config-file",
            path,
            "--max-txn-ops",
            "32",
        ]))
        .unwrap();
        assert_eq!(cl.config.profile.as_deref(), Some("large"));
        assert_eq!(cl.config.name, "from-file");
        assert_eq!(
            cl.config.settings.max_txn_ops, 32,
            "a flag overrides the file"
        );
        assert_eq!(
            cl.config.settings.heartbeat_interval_ms, 200,
            "the file overrides the profile"
        );
        let large = ballast_tuning::Profile::by_name("large")
            .unwrap()
            .settings();
        assert_eq!(cl.config.settings.page_cache_bytes, large.page_cache_bytes);
    }

    #[test]
    fn invalid_config_values_name_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.yml");
        std::fs::write(&file, "heartbeat-interval: abc\n").unwrap();
        let err = parse(args(&["--config-file", file.to_str().unwrap()]))
            .err()
            .unwrap();
        assert!(err.to_string().contains("heartbeat-interval"), "{err}");
        let err = parse(args(&["--profile", "huge"])).err().unwrap();
        assert!(err.to_string().contains("huge"), "{err}");
    }

    #[test]
    fn ballast_tuning_keys_are_flags() {
        let cl = parse(args(&[
            "--page-cache-bytes",
            "134217728",
            "--group-commit-max-batch",
            "8",
        ]))
        .unwrap();
        assert_eq!(cl.config.settings.page_cache_bytes, 128 << 20);
        assert_eq!(cl.config.settings.group_commit_max_batch, 8);
        assert!(
            cl.set_but_not_built.is_empty(),
            "storage keys act: {:?}",
            cl.set_but_not_built
        );
        let cl = parse(args(&[
            "--shards",
            "2",
            "--partition",
            "/registry/events/=1",
        ]))
        .unwrap();
        assert!(
            cl.set_but_not_built.is_empty(),
            "{:?}",
            cl.set_but_not_built
        );
    }

    #[test]
    fn partition_is_parsed_and_validated_at_start_up() {
        // Repeated or comma-separated: the same pins.
        let cl = parse(args(&[
            "--shards",
            "4",
            "--partition",
            "/registry/events/=3",
            "--partition",
            "/registry/leases/=1",
        ]))
        .unwrap();
        let joined = parse(args(&[
            "--shards",
            "4",
            "--partition=/registry/events/=3,/registry/leases/=1",
        ]))
        .unwrap();
        assert_eq!(
            cl.config.settings.partition,
            joined.config.settings.partition
        );
        let map = check_partition(&cl.config, 2).unwrap();
        assert_eq!(map.shard_of(b"/registry/events/default/e"), 3);
        assert_eq!(map.shard_of(b"/registry/leases/ns/l"), 1);
        check(&cl.config).unwrap();

        // Refused when parsed: a shard past --shards, an empty prefix, a prefix pinned twice.
        for bad in [
            &["--shards", "2", "--partition", "/registry/events/=2"][..],
            &["--partition", "=1"][..],
            &["--partition", "/a/=1", "--partition", "/a/=0"][..],
            &["--partition", "/registry/events/"][..],
        ] {
            let err = parse(args(bad)).err().expect("refused");
            assert!(err.to_string().contains("partition"), "{bad:?}: {err}");
        }
        // With one shard per core (the default), checked against the cores at start-up.
        let cl = parse(args(&["--partition", "/registry/events/=3"])).unwrap();
        check_partition(&cl.config, 4).unwrap();
        let err = check_partition(&cl.config, 2).unwrap_err().to_string();
        assert!(
            err.contains("pinned to shard 3, but there are 2 shards"),
            "{err}"
        );
        assert!(err.contains("--partition"), "{err}");
    }

    #[test]
    fn min_lease_ttl_follows_election_timeout() {
        let cl = parse(args(&[
            "--election-timeout",
            "5000",
            "--heartbeat-interval",
            "500",
        ]))
        .unwrap();
        assert_eq!(min_lease_ttl_secs(&cl.config), 8);
    }
}
