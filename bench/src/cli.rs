//! Command-line arguments of `ballast-bench` (clap derive): one subcommand per workload plus
//! `disk`, `compare`, `report`, and the server-process benchmarks `restart` and `memory`.
//!
//! Invariant: parsing only; no I/O happens here. Durations take humantime syntax (`500ms`,
//! `10s`, `2m`).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::disk::Engine;

/// Load generator, disk check and side-by-side comparison for etcd v3 endpoints.
#[derive(Parser, Debug)]
#[command(name = "ballast-bench", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    #[command(flatten)]
    Workload(WorkloadCmd),
    /// etcd's disk check: sequential 2300-byte writes, each followed by fdatasync, over 22 MiB.
    Disk(DiskArgs),
    /// Runs one workload against two endpoint sets, alternating A B A B, and prints ratios.
    Compare(CompareArgs),
    /// Renders JSON results into one self-contained HTML page with SVG plots.
    Report(ReportArgs),
    /// Restart time with data: load, stop (kill -9 / SIGTERM), start again on the same data
    /// dir; time to the first linearizable Range and to `/health` true, per server.
    Restart(RestartArgs),
    /// Resident memory per key: load keys, then read VmRSS/VmHWM of the server process.
    Memory(MemoryArgs),
}

/// The workloads.
#[derive(Subcommand, Debug, Clone)]
pub enum WorkloadCmd {
    /// One Put per operation.
    Put(PutArgs),
    /// Reads of preloaded keys: one key, or a prefix with a limit.
    Range(RangeArgs),
    /// Kubernetes' GuaranteedUpdate: get, then a Txn on mod_revision, retried on conflict.
    TxnCas(TxnCasArgs),
    /// N watchers on one prefix, writers put under it; put-to-event latency.
    Watch(WatchArgs),
    /// Full paginated listings of a preloaded prefix.
    List(ListArgs),
    /// A Kubernetes-like mix over /registry/<resource>/<namespace>/<name>.
    K8s(K8sArgs),
}

impl WorkloadCmd {
    /// The options every workload has.
    pub fn common(&self) -> &CommonArgs {
        match self {
            WorkloadCmd::Put(a) => &a.common,
            WorkloadCmd::Range(a) => &a.common,
            WorkloadCmd::TxnCas(a) => &a.common,
            WorkloadCmd::Watch(a) => &a.common,
            WorkloadCmd::List(a) => &a.common,
            WorkloadCmd::K8s(a) => &a.common,
        }
    }
}

/// Options of every workload.
#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// Comma-separated endpoints (`host:port` or URL; a bare `host:port` is `https://` when
    /// --cacert is given).
    #[arg(long, default_value = "127.0.0.1:2379")]
    pub endpoints: String,
    /// CA certificate (PEM) to verify `https://` endpoints with (etcdctl's --cacert).
    #[arg(long)]
    pub cacert: Option<PathBuf>,
    /// Client certificate (PEM) for endpoints that require one (etcdctl's --cert; needs --key).
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM; etcdctl's --key).
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// Concurrent clients (each runs one operation at a time).
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// gRPC connections the clients share.
    #[arg(long, default_value_t = 1)]
    pub conns: usize,
    /// Operations to run (default 10000 when neither --total nor --duration is given).
    #[arg(long)]
    pub total: Option<u64>,
    /// How long to run; with --total, whichever ends first.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Operations per second over all clients (open-loop pacing); unpaced when absent.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Unmeasured run time before the measured phase.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    pub warmup: Duration,
    /// Per-request timeout; a request past it counts as a `Timeout` error.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub timeout: Duration,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write the latency histogram as an HdrHistogram interval log to this file.
    #[arg(long)]
    pub hdr_log: Option<PathBuf>,
    /// Label stored in the result (shown by `report`).
    #[arg(long, default_value = "")]
    pub label: String,
    /// Never draw a progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

/// Key and value shape.
#[derive(Args, Debug, Clone)]
pub struct KeyArgs {
    /// Key size in bytes (prefix included).
    #[arg(long, default_value_t = 16)]
    pub key_size: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    pub val_size: usize,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 10_000)]
    pub key_space: u64,
    /// Pick keys sequentially instead of uniformly at random.
    #[arg(long)]
    pub sequential_keys: bool,
    /// Key prefix.
    #[arg(long)]
    pub prefix: Option<String>,
}

/// Read consistency.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// Linearizable (through the leader's read index).
    L,
    /// Serializable (local, possibly stale).
    S,
}

#[derive(Args, Debug, Clone)]
pub struct PutArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub keys: KeyArgs,
}

#[derive(Args, Debug, Clone)]
pub struct RangeArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub keys: KeyArgs,
    #[arg(long, value_enum, default_value = "l")]
    pub consistency: Consistency,
    /// Read the whole prefix with this limit per request instead of one key.
    #[arg(long)]
    pub prefix_limit: Option<i64>,
    /// Do not write the key space first.
    #[arg(long)]
    pub no_preload: bool,
}

#[derive(Args, Debug, Clone)]
pub struct TxnCasArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub keys: KeyArgs,
    /// Conflicts one update may meet before it fails as RetriesExhausted.
    #[arg(long, default_value_t = 100)]
    pub max_retries: u32,
}

#[derive(Args, Debug, Clone)]
pub struct WatchArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub keys: KeyArgs,
    /// Watch streams on the prefix (writers are the --clients).
    #[arg(long, default_value_t = 10)]
    pub watchers: usize,
    /// How long to wait after the last put for events still in flight.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub settle: Duration,
}

#[derive(Args, Debug, Clone)]
pub struct ListArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub keys: KeyArgs,
    /// Keys per page (Range limit).
    #[arg(long, default_value_t = 500)]
    pub page_size: i64,
    #[arg(long, value_enum, default_value = "l")]
    pub consistency: Consistency,
}

#[derive(Args, Debug, Clone)]
pub struct K8sArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Resource types (events are always added).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "pods,configmaps,secrets,services,deployments,nodes,leases"
    )]
    pub resources: Vec<String>,
    #[arg(long, default_value_t = 10)]
    pub namespaces: u64,
    /// Object names per resource (half exist before the run).
    #[arg(long, default_value_t = 200)]
    pub objects: u64,
    #[arg(long, default_value_t = 1024)]
    pub val_min: usize,
    #[arg(long, default_value_t = 10 * 1024)]
    pub val_max: usize,
    #[arg(long, default_value_t = 500)]
    pub page_size: i64,
    /// Compaction period (at the revision seen one period earlier).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    pub compact_every: Duration,
    /// TTL of the leases events are written with, in seconds.
    #[arg(long, default_value_t = 60)]
    pub event_ttl: i64,
    #[arg(long, default_value_t = 100)]
    pub max_retries: u32,
}

#[derive(Args, Debug, Clone)]
pub struct DiskArgs {
    /// Directory to test (the file is created and removed there).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Bytes per write (rounded up to 4096 with --direct).
    #[arg(long, default_value_t = crate::disk::ETCD_BLOCK_SIZE)]
    pub block_size: usize,
    /// Bytes written in all.
    #[arg(long, default_value_t = crate::disk::ETCD_TOTAL_BYTES)]
    pub total_bytes: u64,
    /// Open the file with O_DIRECT.
    #[arg(long)]
    pub direct: bool,
    #[arg(long, value_enum, default_value = "auto")]
    pub engine: EngineArg,
    /// Also run fio's etcd job in the same directory and print both side by side.
    #[arg(long)]
    pub fio: bool,
    #[arg(long)]
    pub json: bool,
}

/// `--engine` values.
#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum EngineArg {
    Auto,
    IoUring,
    Sync,
}

impl From<EngineArg> for Engine {
    fn from(e: EngineArg) -> Engine {
        match e {
            EngineArg::Auto => Engine::Auto,
            EngineArg::IoUring => Engine::IoUring,
            EngineArg::Sync => Engine::Sync,
        }
    }
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Side A: `etcd` (started from PATH), `ballast` (started from --ballast-bin), or endpoints.
    #[arg(long, default_value = "etcd")]
    pub a: String,
    /// Side B, same forms as --a.
    #[arg(long, default_value = "ballast")]
    pub b: String,
    /// The etcd binary for `etcd` sides.
    #[arg(long, default_value = "etcd")]
    pub etcd_bin: PathBuf,
    /// The Ballast binary for `ballast` sides.
    #[arg(long)]
    pub ballast_bin: Option<PathBuf>,
    /// Members of each server `compare` starts (`etcd`, `ballast` sides): 1 runs a single
    /// node, 3 a 3-member cluster on this machine (every member on its own ports and data dir).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=7))]
    pub members: u8,
    /// Which members the clients' connections go to: `all` spreads them round-robin over the
    /// members (as etcd's benchmark tool does with several --endpoints; a started cluster is
    /// listed leader first), `leader` only the leader (etcd's `--target-leader`), `follower`
    /// only one follower (every write forwarded).
    #[arg(long, value_enum, default_value = "all")]
    pub target: TargetArg,
    /// Extra flag for started etcd servers (repeatable), e.g. `--etcd-arg=--snapshot-count=10000`.
    #[arg(long, allow_hyphen_values = true)]
    pub etcd_arg: Vec<String>,
    /// Extra flag for started Ballast servers (repeatable), e.g. `--ballast-arg=--shards=1`.
    #[arg(long, allow_hyphen_values = true)]
    pub ballast_arg: Vec<String>,
    /// Start the `etcd` and `ballast` sides as kubeadm runs etcd: a throwaway CA with server,
    /// peer and client certificates for 127.0.0.1, `https://` client and peer URLs, client
    /// certificates required (`--client-cert-auth`, `--peer-client-cert-auth`); the load
    /// generator dials over TLS with the client certificate. Endpoint sides use the workload's
    /// --cacert/--cert/--key.
    #[arg(long)]
    pub tls: bool,
    /// Rounds; each runs the workload on A, then on B.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Print one JSON object (sides, ratios, every run) instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub workload: WorkloadCmd,
}

/// `compare --target` values: which members of a cluster the clients talk to.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetArg {
    /// Every member, connections round-robin (leader first for a started cluster).
    All,
    /// The leader only (for Ballast: shard 0's leader).
    Leader,
    /// One follower only (the first member that does not lead).
    Follower,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// JSON files: a workload result, an array of them, or a `compare` output.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Output HTML file.
    #[arg(long, short, default_value = "report.html")]
    pub out: PathBuf,
    #[arg(long, default_value = "ballast-bench report")]
    pub title: String,
}

/// A server `restart` and `memory` start themselves.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerArg {
    /// The reference etcd (`--etcd-bin`).
    Etcd,
    /// Ballast (`--ballast-bin`).
    Ballast,
}

/// How `restart` stops a server before starting it again.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopArg {
    /// SIGKILL (`kill -9`): a crash.
    Kill,
    /// SIGTERM: a clean shutdown (SIGKILL after `--stop-grace`).
    Term,
}

/// Options `restart` and `memory` share: which servers, how to start them, how to load.
#[derive(Args, Debug, Clone)]
pub struct ServerBenchArgs {
    /// Servers to measure, one after the other, each on its own fresh data dir.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "etcd,ballast"
    )]
    pub servers: Vec<ServerArg>,
    /// The etcd binary.
    #[arg(long, default_value = "etcd")]
    pub etcd_bin: PathBuf,
    /// The Ballast binary (required when `ballast` is among --servers).
    #[arg(long)]
    pub ballast_bin: Option<PathBuf>,
    /// Extra flag for etcd (repeatable), e.g. `--etcd-arg=--snapshot-count=10000`.
    #[arg(long, allow_hyphen_values = true)]
    pub etcd_arg: Vec<String>,
    /// Extra flag for Ballast (repeatable).
    #[arg(long, allow_hyphen_values = true)]
    pub ballast_arg: Vec<String>,
    /// Directory the temporary data dirs are created in (removed afterwards); the system's
    /// temp dir by default.
    #[arg(long)]
    pub tmp_dir: Option<PathBuf>,
    /// Concurrent loading clients (each with one Put in flight).
    #[arg(long, default_value_t = 256)]
    pub clients: usize,
    /// gRPC connections the loading clients share.
    #[arg(long, default_value_t = 16)]
    pub conns: usize,
    /// Key size in bytes (keys are `/registry/<resource>/ns-<nn>/<number>`, padded).
    #[arg(long, default_value_t = 40)]
    pub key_size: usize,
    /// Bound on loading one server.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30m")]
    pub load_timeout: Duration,
    /// Bound on a server becoming ready after a start.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10m")]
    pub ready_timeout: Duration,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct RestartArgs {
    #[command(flatten)]
    pub servers: ServerBenchArgs,
    /// Bytes of values to load (`100MB`, `1GB`, `2MiB`; KB/MB/GB are powers of 1000, KiB/MiB/GiB
    /// of 1024); keys = size / --val-size.
    #[arg(long, value_parser = parse_size, default_value = "100MB")]
    pub size: u64,
    /// Value size in bytes (every value distinct and incompressible).
    #[arg(long, default_value_t = 1024)]
    pub val_size: usize,
    /// Stops to measure, in order, on the same data dir: each stops the server, then starts it
    /// again and times it.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "kill,term")]
    pub stop: Vec<StopArg>,
    /// After SIGTERM, how long to wait for the server to exit before SIGKILL.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    pub stop_grace: Duration,
}

#[derive(Args, Debug, Clone)]
pub struct MemoryArgs {
    #[command(flatten)]
    pub servers: ServerBenchArgs,
    /// Keys to load.
    #[arg(long, default_value_t = 1_000_000)]
    pub keys: u64,
    /// Value size in bytes (every value distinct and incompressible).
    #[arg(long, default_value_t = 256)]
    pub val_size: usize,
    /// Idle time after loading before the memory is read.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub settle: Duration,
}

/// A byte count with an optional unit: `1024`, `100MB`, `1GB`, `2MiB`, `1.5GiB`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number with an optional unit"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        other => return Err(format!("{s:?}: unknown unit {other:?}")),
    };
    Ok((n * mult as f64).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn compare_takes_members_target_and_server_flags() {
        let cli = Cli::try_parse_from([
            "ballast-bench",
            "compare",
            "--members",
            "3",
            "--target",
            "leader",
            "--ballast-arg=--shards=1",
            "--ballast-arg",
            "--heartbeat-interval=50",
            "--etcd-arg=--snapshot-count=10000",
            "put",
            "--clients",
            "1",
        ])
        .unwrap();
        let Command::Compare(c) = cli.command else {
            panic!("not compare");
        };
        assert_eq!(c.members, 3);
        assert_eq!(c.target, TargetArg::Leader);
        assert_eq!(c.ballast_arg, ["--shards=1", "--heartbeat-interval=50"]);
        assert_eq!(c.etcd_arg, ["--snapshot-count=10000"]);
        assert_eq!(c.workload.common().clients, 1);

        let Command::Compare(d) = Cli::try_parse_from(["ballast-bench", "compare", "put"])
            .unwrap()
            .command
        else {
            panic!("not compare");
        };
        assert_eq!(d.members, 1, "a single node unless asked");
        assert_eq!(d.target, TargetArg::All, "etcd's benchmark tool's default");
        assert!(d.etcd_arg.is_empty() && d.ballast_arg.is_empty());

        for bad in [["--members", "0"], ["--members", "8"], ["--target", "m1"]] {
            let mut argv = vec!["ballast-bench", "compare"];
            argv.extend(bad);
            argv.push("put");
            assert!(Cli::try_parse_from(argv.clone()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tls_flags_parse_as_etcdctl_names_them() {
        let Command::Compare(c) = Cli::try_parse_from([
            "ballast-bench",
            "compare",
            "--tls",
            "put",
            "--cacert",
            "/p/ca.crt",
            "--cert",
            "/p/c.crt",
            "--key",
            "/p/c.key",
        ])
        .unwrap()
        .command
        else {
            panic!("not compare");
        };
        assert!(c.tls);
        let common = c.workload.common();
        assert_eq!(common.cacert.as_deref(), Some(Path::new("/p/ca.crt")));
        assert_eq!(common.cert.as_deref(), Some(Path::new("/p/c.crt")));
        assert_eq!(common.key.as_deref(), Some(Path::new("/p/c.key")));

        let Command::Compare(d) = Cli::try_parse_from(["ballast-bench", "compare", "put"])
            .unwrap()
            .command
        else {
            panic!("not compare");
        };
        assert!(!d.tls, "plain http unless asked");
        assert!(d.workload.common().cacert.is_none());
        for half in [["--cert", "/c"], ["--key", "/k"]] {
            let mut argv = vec!["ballast-bench", "put"];
            argv.extend(half);
            assert!(Cli::try_parse_from(argv).is_err(), "{half:?} alone");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("100MB"), Ok(100_000_000));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("2MiB"), Ok(2 << 20));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert!(parse_size("1XB").is_err());
        assert!(parse_size("MB").is_err());
    }
}
