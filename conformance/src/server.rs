//! Starting the two servers under test: the reference etcd (`etcd` from `PATH`) and Ballast
//! (`BALLAST_BIN`, else `<target dir>/debug/ballast`), each on its own free loopback ports with a
//! temp data dir, and gRPC clients to them.
//!
//! Invariants:
//! - A [`Server`] owns its child process: `Drop` kills it (SIGKILL) and reaps it, also while a
//!   test panics, and then removes the temp dir. When the thread is panicking, `Drop` first
//!   prints the tail of the server's log (stdout and stderr, captured to `server.log` in the temp
//!   dir) so a failing test shows what the server said.
//! - Only 127.0.0.1 is used. Startup is bounded ([`READY_TIMEOUT`]); a server that exits early
//!   because its port was taken between probing and binding is retried on fresh ports. A server
//!   is ready only once its own process listens on its client port ([`Server::check_identity`]),
//!   so the process that took the port is never tested in its place.
//! - [`Server::kill9`] and [`Server::restart`] let a crash test SIGKILL the server and start it
//!   again on the same data dir (and the same ports while they are free); the log is appended
//!   to across restarts, so the tail shows the latest start.
//! - `BALLAST_CONFORMANCE_BOTH_ETCD=1` makes the "ballast" side a second etcd, which is how the
//!   harness itself is validated: with etcd on both sides every comparison must pass.
//! - `BALLAST_SHARDS=N` starts Ballast with `--shards N` (never etcd, nor the second etcd of
//!   `BALLAST_CONFORMANCE_BOTH_ETCD`). Unset, no `--shards` is passed and Ballast runs its
//!   default (one shard per core). [`Server::shard_count`] asks a running server how many shards
//!   it runs, so tests that depend on where keys live (see [`crate::partition`]) follow what
//!   the server does rather than what was asked.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use ballast_proto::etcdserverpb::{
    cluster_client::ClusterClient, kv_client::KvClient, lease_client::LeaseClient,
    maintenance_client::MaintenanceClient, watch_client::WatchClient, MemberListRequest,
    RangeRequest, StatusRequest, StatusResponse,
};
use tonic::transport::Channel;

use crate::tls::Pki;

/// How long a server may take to answer its first Range.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How many times startup is retried on fresh ports when the server dies before it is ready.
const START_ATTEMPTS: usize = 3;
/// The member name both servers get, so `member list` outputs can be compared.
pub const MEMBER_NAME: &str = "conformance";
/// Lines of the server log printed when a test fails.
const LOG_TAIL_LINES: usize = 200;
/// How long a SIGKILLed server may take to be reaped.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// Another server answered on a server's client port (see [`Server::check_identity`]).
#[derive(Debug)]
struct ForeignServer {
    port: u16,
    advertised: Vec<String>,
}

impl std::fmt::Display for ForeignServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "another server answers on port {} (it advertises {:?})",
            self.port, self.advertised
        )
    }
}

impl std::error::Error for ForeignServer {}

/// The line the harness writes into a server's log before it `what`s it (e.g. restarts it).
fn log_marker(what: &str) -> String {
    format!("===== conformance harness: {what} =====")
}

/// Whether a start that failed with `err` should be retried on fresh ports: the server lost
/// its port to another process between probing and binding.
fn lost_port(err: &anyhow::Error, exited: bool, log: &str) -> bool {
    err.downcast_ref::<ForeignServer>().is_some()
        || (exited && log.to_ascii_lowercase().contains("address already in use"))
}

/// Whether process `pid` holds a socket listening on TCP `port` (any local address, IPv4 or
/// IPv6), as its network namespace's `/proc/<pid>/net/tcp{,6}` and its open files show.
fn listens_on(pid: u32, port: u16) -> Result<bool> {
    let mut inodes = Vec::new();
    for table in ["tcp", "tcp6"] {
        let path = format!("/proc/{pid}/net/{table}");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            // The process has exited, or the kernel has no IPv6.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {path}")),
        };
        inodes.extend(listening_inodes(&text, port));
    }
    if inodes.is_empty() {
        return Ok(false);
    }
    let fds = format!("/proc/{pid}/fd");
    let entries = match std::fs::read_dir(&fds) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("listing {fds}")),
    };
    for entry in entries.flatten() {
        // An fd closed while listing is simply not a match.
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy();
        if inodes.iter().any(|i| target == format!("socket:[{i}]")) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The socket inodes of a `/proc/net/tcp`-format table's listening sockets on `port`.
fn listening_inodes(table: &str, port: u16) -> Vec<u64> {
    const LISTEN: &str = "0A";
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields.get(1)?.rsplit_once(':')?.1;
            let listening = *fields.get(3)? == LISTEN;
            let on_port = u16::from_str_radix(local_port, 16).ok()? == port;
            (listening && on_port).then(|| fields.get(9)?.parse().ok())?
        })
        .collect()
}

/// Which implementation a [`Server`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The reference etcd.
    Etcd,
    /// Ballast (or a second etcd when `BALLAST_CONFORMANCE_BOTH_ETCD=1`).
    Ballast,
}

impl Kind {
    /// The label used in mismatch reports.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Etcd => "etcd",
            Kind::Ballast => {
                if both_etcd() {
                    "ballast(=etcd)"
                } else {
                    "ballast"
                }
            }
        }
    }
}

/// True when `BALLAST_CONFORMANCE_BOTH_ETCD` asks for etcd on both sides.
pub fn both_etcd() -> bool {
    matches!(
        std::env::var("BALLAST_CONFORMANCE_BOTH_ETCD").as_deref(),
        Ok("1") | Ok("true") | Ok("yes")
    )
}

/// The ballast binary: `BALLAST_BIN`, else `$CARGO_TARGET_DIR/debug/ballast`, else the
/// workspace's `target/debug/ballast`.
pub fn ballast_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BALLAST_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("debug").join("ballast")
}

/// One running server process.
pub struct Server {
    kind: Kind,
    child: Option<Child>,
    client_port: u16,
    peer_port: u16,
    log_path: PathBuf,
    dir: Option<tempfile::TempDir>,
    /// Arguments added after the harness's own (e.g. a short watch progress interval).
    extra_args: Vec<String>,
    /// How it joins a cluster (`None`: a cluster of one, named [`MEMBER_NAME`]).
    member: Option<ClusterMember>,
    /// Served over TLS with these certificates (client and peer URLs `https://`, client
    /// certificates required); the harness's own clients present the client certificate.
    tls: Option<std::sync::Arc<Pki>>,
}

/// A member of a cluster the harness starts ([`Server::start_cluster`]).
#[derive(Clone, Debug)]
struct ClusterMember {
    name: String,
    /// `--initial-cluster`: every member's `NAME=PEER_URL`.
    initial_cluster: String,
    /// Joins a running cluster (`--initial-cluster-state existing`).
    existing: bool,
}

/// The `--initial-cluster-token` of clusters the harness starts.
pub const CLUSTER_TOKEN: &str = "conformance-cluster";

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("kind", &self.kind)
            .field("client_port", &self.client_port)
            .field("peer_port", &self.peer_port)
            .field("log", &self.log_path)
            .finish()
    }
}

/// `BALLAST_SHARDS`: the `--shards` Ballast is started with, if set.
///
/// # Panics
/// When the variable is set to something other than a positive integer: a typo must not make a
/// run silently test the default shard count.
pub fn ballast_shards() -> Option<usize> {
    let v = std::env::var("BALLAST_SHARDS").ok()?;
    match v.trim().parse::<usize>() {
        Ok(n) if n > 0 => Some(n),
        _ => panic!("BALLAST_SHARDS={v:?} is not a positive number of shards"),
    }
}

/// Picks a port the kernel considers free on 127.0.0.1. The listener is closed before the
/// server binds it, so another process may take it meanwhile: [`Server::start`] retries.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding a probe socket on 127.0.0.1")?;
    Ok(l.local_addr()?.port())
}

/// Two distinct free ports: (client, peer).
fn free_port_pair() -> Result<(u16, u16)> {
    let client_port = free_port()?;
    let mut peer_port = free_port()?;
    while peer_port == client_port {
        peer_port = free_port()?;
    }
    Ok((client_port, peer_port))
}

impl Server {
    /// Starts a server of `kind` and waits until it answers a Range.
    pub async fn start(kind: Kind) -> Result<Server> {
        Server::start_with_args(kind, &[]).await
    }

    /// Starts a server of `kind` with `extra_args` after the harness's own arguments (flags
    /// both etcd and Ballast accept, since `kind` may be run by etcd), and waits until it
    /// answers a Range.
    pub async fn start_with_args(kind: Kind, extra_args: &[&str]) -> Result<Server> {
        Server::start_with(kind, extra_args, None).await
    }

    /// [`Server::start_with_args`], serving its client and peer URLs over TLS with `pki`'s
    /// certificates and requiring client certificates (a kubeadm member's settings).
    pub async fn start_tls(
        kind: Kind,
        pki: &std::sync::Arc<Pki>,
        extra_args: &[&str],
    ) -> Result<Server> {
        Server::start_with(kind, extra_args, Some(pki.clone())).await
    }

    async fn start_with(
        kind: Kind,
        extra_args: &[&str],
        tls: Option<std::sync::Arc<Pki>>,
    ) -> Result<Server> {
        let mut last_err = None;
        for _ in 0..START_ATTEMPTS {
            let mut server = Server::spawn(kind, extra_args, tls.clone())?;
            match server.wait_ready().await {
                Ok(()) => return Ok(server),
                Err(e) => {
                    let exited = server.exited();
                    let log = server.log_tail();
                    let err = anyhow!(
                        "{} failed to start: {e:#}\n--- log ---\n{log}",
                        kind.label()
                    );
                    // A port taken between probe and bind makes the server exit at once (or
                    // another server answer on it); any other failure (timeout, crash for
                    // another reason) is reported as is.
                    let retry = lost_port(&e, exited, &log);
                    drop(server);
                    if retry {
                        last_err = Some(err);
                        continue;
                    }
                    return Err(err);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow!("{} failed to start", kind.label())))
    }

    /// Whether the server's process has exited (or was never started).
    fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| matches!(c.try_wait(), Ok(Some(_))))
    }

    fn spawn(kind: Kind, extra_args: &[&str], tls: Option<std::sync::Arc<Pki>>) -> Result<Server> {
        let dir = tempfile::Builder::new()
            .prefix(&format!(
                "conformance-{}-",
                if kind == Kind::Etcd {
                    "etcd"
                } else {
                    "ballast"
                }
            ))
            .tempdir()
            .context("creating a temp dir")?;
        let (client_port, peer_port) = free_port_pair()?;
        let log_path = dir.path().join("server.log");
        File::create(&log_path).context("creating the server log")?;
        let mut server = Server {
            kind,
            child: None,
            client_port,
            peer_port,
            log_path,
            dir: Some(dir),
            extra_args: extra_args.iter().map(|a| (*a).to_owned()).collect(),
            member: None,
            tls,
        };
        server.spawn_child()?;
        Ok(server)
    }

    /// The program to run for `kind`.
    fn program(kind: Kind) -> Result<PathBuf> {
        Ok(match kind {
            Kind::Etcd => PathBuf::from("etcd"),
            Kind::Ballast if both_etcd() => PathBuf::from("etcd"),
            Kind::Ballast => {
                let bin = ballast_bin();
                if !bin.is_file() {
                    bail!(
                        "the ballast binary is not at {} (build it with `cargo build -p ballast-net \
                         --bin ballast`, set BALLAST_BIN, or set BALLAST_CONFORMANCE_BOTH_ETCD=1 to \
                         validate the harness with etcd on both sides)",
                        bin.display()
                    );
                }
                bin
            }
        })
    }

    /// Spawns the server process on this server's dir, data dir and ports, its output appended
    /// to the log.
    fn spawn_child(&mut self) -> Result<()> {
        let dir = self
            .dir
            .as_ref()
            .ok_or_else(|| anyhow!("the server's temp dir is gone"))?
            .path()
            .to_path_buf();
        let program = Server::program(self.kind)?;
        let log = File::options()
            .append(true)
            .create(true)
            .open(&self.log_path)
            .context("opening the server log")?;
        let client_url = self.client_url();
        let peer_url = self.peer_url();
        let (name, initial_cluster) = match &self.member {
            Some(m) => (m.name.clone(), m.initial_cluster.clone()),
            None => (MEMBER_NAME.to_owned(), format!("{MEMBER_NAME}={peer_url}")),
        };
        let mut cmd = Command::new(&program);
        if let Some(m) = &self.member {
            cmd.arg("--initial-cluster-token").arg(CLUSTER_TOKEN);
            if m.existing {
                cmd.arg("--initial-cluster-state").arg("existing");
            }
        }
        cmd.arg("--name")
            .arg(&name)
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--listen-client-urls")
            .arg(&client_url)
            .arg("--advertise-client-urls")
            .arg(&client_url)
            .arg("--listen-peer-urls")
            .arg(&peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer_url)
            .arg("--initial-cluster")
            .arg(&initial_cluster)
            .args(self.tls.iter().flat_map(|pki| pki.server_args()))
            .args(&self.extra_args)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if self.kind == Kind::Ballast && !both_etcd() {
            if let Some(shards) = ballast_shards() {
                cmd.arg("--shards").arg(shards.to_string());
            }
        }
        // Environment the test runner may carry must not reconfigure the servers.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ETCD_") {
                cmd.env_remove(k);
            }
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", program.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// The server's data dir (`<temp dir>/data`); it survives [`Server::kill9`].
    pub fn data_dir(&self) -> PathBuf {
        self.dir
            .as_ref()
            .map(|d| d.path().join("data"))
            .unwrap_or_default()
    }

    /// The server process's id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server process with SIGKILL and reaps it (bounded by [`KILL_TIMEOUT`]). The
    /// data dir and log stay, for [`Server::restart`].
    pub fn kill9(&mut self) -> Result<ExitStatus> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("{} is not running", self.kind.label()))?;
        // `Child::kill` sends SIGKILL on Unix; it fails only if the process was already reaped.
        child.kill().context("sending SIGKILL")?;
        let deadline = Instant::now() + KILL_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().context("waiting for the killed server")? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                // Keep it owned so `Drop` tries again.
                self.child = Some(child);
                bail!(
                    "{} did not exit within {KILL_TIMEOUT:?} of SIGKILL",
                    self.kind.label()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops the server process with SIGTERM (a clean shutdown, as systemd or the kubelet ask
    /// for one) and reaps it; fails if it is still running after `within`. Returns its exit
    /// status and how long it took.
    pub fn terminate(&mut self, within: Duration) -> Result<(ExitStatus, Duration)> {
        let pid = self
            .pid()
            .ok_or_else(|| anyhow!("{} is not running", self.kind.label()))?;
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .context("running kill -TERM")?;
        if !sent.success() {
            bail!("kill -TERM failed: {sent}");
        }
        self.wait_exit(within)
    }

    /// Waits for the server process to end by itself (e.g. a member removed from its
    /// cluster) and reaps it; fails if it still runs after `within`. Returns its exit status
    /// and how long the wait took.
    pub fn wait_exit(&mut self, within: Duration) -> Result<(ExitStatus, Duration)> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("{} is not running", self.kind.label()))?;
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().context("waiting for the server")? {
                return Ok((status, started.elapsed()));
            }
            if started.elapsed() >= within {
                // Keep it owned so `Drop` kills it.
                self.child = Some(child);
                bail!("{} still running after {within:?}", self.kind.label());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts a cluster of `n` members of `kind` (`m0`, `m1`, ...) on fresh loopback ports,
    /// each with `extra_args`, and waits until every one answers a linearizable Range (which
    /// takes an elected leader). Servers are in member order.
    pub async fn start_cluster(kind: Kind, n: usize, extra_args: &[&str]) -> Result<Vec<Server>> {
        Server::start_cluster_with(kind, n, extra_args, None).await
    }

    /// [`Server::start_cluster`] with every member's client and peer URLs served over TLS with
    /// `pki`'s certificates (client certificates required on both).
    pub async fn start_cluster_tls(
        kind: Kind,
        n: usize,
        pki: &std::sync::Arc<Pki>,
        extra_args: &[&str],
    ) -> Result<Vec<Server>> {
        Server::start_cluster_with(kind, n, extra_args, Some(pki.clone())).await
    }

    async fn start_cluster_with(
        kind: Kind,
        n: usize,
        extra_args: &[&str],
        tls: Option<std::sync::Arc<Pki>>,
    ) -> Result<Vec<Server>> {
        let mut last_err = None;
        for _ in 0..START_ATTEMPTS {
            match Server::try_start_cluster(kind, n, extra_args, tls.clone()).await {
                Ok(servers) => return Ok(servers),
                // A member lost a port between probe and bind: the whole cluster again on
                // fresh ports (its members name each other's peer URLs).
                Err((err, true)) => last_err = Some(err),
                Err((err, false)) => return Err(err),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow!("{} cluster failed to start", kind.label())))
    }

    /// One try of [`Server::start_cluster_with`]; a failure says whether a member lost its
    /// port (then the servers started are dropped, which kills them).
    async fn try_start_cluster(
        kind: Kind,
        n: usize,
        extra_args: &[&str],
        tls: Option<std::sync::Arc<Pki>>,
    ) -> std::result::Result<Vec<Server>, (anyhow::Error, bool)> {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut ports = std::collections::HashSet::new();
        let mut pairs = Vec::new();
        while pairs.len() < n {
            let (c, p) = free_port_pair().map_err(|e| (e, false))?;
            if ports.insert(c) && ports.insert(p) {
                pairs.push((c, p));
            }
        }
        let initial_cluster = pairs
            .iter()
            .enumerate()
            .map(|(i, (_, p))| format!("m{i}={scheme}://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut servers = Vec::new();
        for (i, (client_port, peer_port)) in pairs.into_iter().enumerate() {
            let dir = tempfile::Builder::new()
                .prefix(&format!("conformance-cluster-m{i}-"))
                .tempdir()
                .context("creating a temp dir")
                .map_err(|e| (e, false))?;
            let log_path = dir.path().join("server.log");
            File::create(&log_path)
                .context("creating the server log")
                .map_err(|e| (e, false))?;
            let mut server = Server {
                kind,
                child: None,
                client_port,
                peer_port,
                log_path,
                dir: Some(dir),
                extra_args: extra_args.iter().map(|a| (*a).to_owned()).collect(),
                member: Some(ClusterMember {
                    name: format!("m{i}"),
                    initial_cluster: initial_cluster.clone(),
                    existing: false,
                }),
                tls: tls.clone(),
            };
            server.spawn_child().map_err(|e| (e, false))?;
            servers.push(server);
        }
        for server in servers.iter_mut() {
            if let Err(e) = server.wait_ready().await {
                let exited = server.exited();
                let log = server.log_tail();
                let retry = lost_port(&e, exited, &log);
                let err = e.context(format!(
                    "cluster member {} did not start\n--- log ---\n{log}",
                    server.member.as_ref().map_or("?", |m| m.name.as_str()),
                ));
                return Err((err, retry));
            }
        }
        Ok(servers)
    }

    /// A member to add to a running cluster: named `name`, on fresh ports, not started; add it
    /// with its [`Server::peer_url`] (MemberAdd), then [`Server::join`] it.
    pub fn new_member(kind: Kind, name: &str, extra_args: &[&str]) -> Result<Server> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("conformance-cluster-{name}-"))
            .tempdir()
            .context("creating a temp dir")?;
        let log_path = dir.path().join("server.log");
        File::create(&log_path).context("creating the server log")?;
        let (client_port, peer_port) = free_port_pair()?;
        Ok(Server {
            kind,
            child: None,
            client_port,
            peer_port,
            log_path,
            dir: Some(dir),
            extra_args: extra_args.iter().map(|a| (*a).to_owned()).collect(),
            member: Some(ClusterMember {
                name: name.to_owned(),
                initial_cluster: String::new(),
                existing: true,
            }),
            tls: None,
        })
    }

    /// Starts a member made by [`Server::new_member`] with `--initial-cluster` naming the
    /// `cluster`'s members and itself, and waits until it answers a linearizable Range.
    pub async fn join(&mut self, cluster: &[&Server]) -> Result<()> {
        let mut entries: Vec<String> = cluster
            .iter()
            .map(|s| format!("{}={}", s.name(), s.peer_url()))
            .collect();
        entries.push(format!("{}={}", self.name(), self.peer_url()));
        let m = self
            .member
            .as_mut()
            .ok_or_else(|| anyhow!("not a member made by new_member"))?;
        m.initial_cluster = entries.join(",");
        self.spawn_child()?;
        self.wait_ready().await.with_context(|| {
            format!(
                "{} did not join\n--- log ---\n{}",
                self.name(),
                self.log_tail()
            )
        })
    }

    /// The peer URL (`http://127.0.0.1:<peer port>`, `https://` when served over TLS).
    pub fn peer_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme(), self.peer_port)
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The member name (`conformance` outside a started cluster).
    pub fn name(&self) -> &str {
        self.member
            .as_ref()
            .map_or(MEMBER_NAME, |m| m.name.as_str())
    }

    /// Starts the server again on the same data dir after [`Server::kill9`] and waits until it
    /// answers a Range (at most [`READY_TIMEOUT`]). The same ports are used unless the server
    /// reports them taken, then fresh ones.
    pub async fn restart(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("{} is still running; kill it first", self.kind.label());
        }
        let mut last_err = None;
        for attempt in 0..START_ATTEMPTS {
            // A cluster member keeps its ports: the others know it by them.
            if attempt > 0 && self.member.is_none() {
                (self.client_port, self.peer_port) = free_port_pair()?;
            }
            let log_start = self.append_log_marker("restart")?;
            self.spawn_child()?;
            match self.wait_ready().await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    let exited = self
                        .child
                        .as_mut()
                        .map(|c| matches!(c.try_wait(), Ok(Some(_))))
                        .unwrap_or(true);
                    let log = self.log_since(log_start);
                    let err = anyhow!(
                        "{} failed to restart on {}: {e:#}\n--- log ---\n{log}",
                        self.kind.label(),
                        self.data_dir().display()
                    );
                    if let Some(mut child) = self.child.take() {
                        let _ = child.kill();
                        let _ = child.wait();
                    }
                    if lost_port(&e, exited, &log) {
                        last_err = Some(err);
                        continue;
                    }
                    return Err(err);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow!("{} failed to restart", self.kind.label())))
    }

    /// What the server logged since its latest [`Server::restart`] (since it first started if
    /// it never restarted), at most the last 16 MiB: for tests that check what a start did
    /// (e.g. that a member caught up through a snapshot).
    pub fn log_since_restart(&self) -> String {
        let mut buf = Vec::new();
        if let Ok(mut f) = File::open(&self.log_path) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            let _ = f.seek(SeekFrom::Start(len.saturating_sub(16 << 20)));
            let _ = f.read_to_end(&mut buf);
        }
        let text = String::from_utf8_lossy(&buf);
        let marker = log_marker("restart");
        match text.rfind(&marker) {
            Some(at) => text[at + marker.len()..].to_owned(),
            None => text.into_owned(),
        }
    }

    /// Appends a marker line to the log and returns the offset after it.
    fn append_log_marker(&self, what: &str) -> Result<u64> {
        let mut f = File::options()
            .append(true)
            .create(true)
            .open(&self.log_path)
            .context("opening the server log")?;
        writeln!(f, "{}", log_marker(what))?;
        Ok(f.metadata()?.len())
    }

    /// The log written since `offset` (at most its last 256 KiB).
    fn log_since(&self, offset: u64) -> String {
        let mut buf = Vec::new();
        if let Ok(mut f) = File::open(&self.log_path) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            let start = offset.max(len.saturating_sub(256 * 1024));
            let _ = f.seek(SeekFrom::Start(start));
            let _ = f.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last = String::from("no attempt");
        let mut foreign = None;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!("exited before it was ready: {status}");
                }
            }
            match self.try_range().await {
                // Another server answering on the port is waited out while our process runs
                // (a member joining a cluster lists itself only once the membership that adds
                // it has reached it); if it lasts, the error says so and start-up retries.
                Ok(()) => match self.check_identity().await {
                    Ok(()) => return Ok(()),
                    Err(e) => {
                        last = format!("{e:#}");
                        foreign = Some(e);
                    }
                },
                Err(e) => last = format!("{e:#}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Some(e) = foreign {
            return Err(e);
        }
        bail!("not ready within {READY_TIMEOUT:?}; last error: {last}")
    }

    /// Checks that the server answering on the client port is this one: it must advertise
    /// this server's client URL. Probe ports are released before the servers bind them, so two
    /// servers started at once may be handed the same port (one's client port, the other's
    /// peer port, which etcd also serves gRPC on); the one that loses the bind exits, and
    /// without this check the other's answers would pass as its own.
    ///
    /// The URL alone does not tell apart two servers handed the same client port: the one that
    /// binds it advertises the other's URL too. So while this server's process runs, it must
    /// also be the process listening on the port.
    async fn check_identity(&self) -> Result<()> {
        if let Some(pid) = self.pid() {
            if !listens_on(pid, self.client_port)? {
                return Err(anyhow!(ForeignServer {
                    port: self.client_port,
                    advertised: vec![format!("a listener outside process {pid}")],
                }));
            }
        }
        let channel = tokio::time::timeout(Duration::from_secs(2), self.channel())
            .await
            .map_err(|_| anyhow!("connect timed out"))??;
        let members = match tokio::time::timeout(
            Duration::from_secs(2),
            ClusterClient::new(channel).member_list(MemberListRequest::default()),
        )
        .await
        .map_err(|_| anyhow!("MemberList timed out"))?
        {
            Ok(r) => r.into_inner().members,
            // A learner lists no members; its process holding the port (checked above) is
            // what identifies it.
            Err(s)
                if s.message() == "etcdserver: rpc not supported for learner"
                    && self.pid().is_some() =>
            {
                return Ok(())
            }
            Err(s) => return Err(s.into()),
        };
        let url = self.client_url();
        if members.iter().any(|m| m.client_ur_ls.contains(&url)) {
            return Ok(());
        }
        Err(anyhow!(ForeignServer {
            port: self.client_port,
            advertised: members
                .iter()
                .flat_map(|m| m.client_ur_ls.clone())
                .collect(),
        }))
    }

    async fn try_range(&self) -> Result<()> {
        let channel = tokio::time::timeout(Duration::from_secs(2), self.channel())
            .await
            .map_err(|_| anyhow!("connect timed out"))??;
        let mut kv = KvClient::new(channel);
        let req = RangeRequest {
            key: bytes::Bytes::from_static(b"conformance-ready-probe"),
            ..Default::default()
        };
        match tokio::time::timeout(Duration::from_secs(2), kv.range(req.clone()))
            .await
            .map_err(|_| anyhow!("Range timed out"))?
        {
            Ok(_) => Ok(()),
            // Auth is enabled (a restart of a server that had it on): the server answers, and
            // refuses an anonymous read only after it could serve it.
            Err(s) if s.message() == "etcdserver: user name is empty" => Ok(()),
            // A learner serves serializable reads only.
            Err(s) if s.message() == "etcdserver: rpc not supported for learner" => {
                let serializable = RangeRequest {
                    serializable: true,
                    ..req
                };
                tokio::time::timeout(Duration::from_secs(2), kv.range(serializable))
                    .await
                    .map_err(|_| anyhow!("serializable Range timed out"))??;
                Ok(())
            }
            Err(s) => Err(s.into()),
        }
    }

    /// How many shards the running server serves: 1 for etcd; for Ballast, the number of
    /// `ballast_shard_failed{shard="..."}` rows of its `/metrics` (one per running shard), read
    /// over plain HTTP/1.0 on the client port, so what is counted is what runs, not what
    /// `--shards` asked for.
    pub async fn shard_count(&self) -> Result<usize> {
        if Server::program(self.kind)? == Path::new("etcd") {
            return Ok(1);
        }
        let body = tokio::time::timeout(Duration::from_secs(5), self.http_get("/metrics"))
            .await
            .map_err(|_| anyhow!("GET /metrics timed out"))??;
        let shards = body
            .lines()
            .filter(|l| l.starts_with("ballast_shard_failed{"))
            .count();
        if shards == 0 {
            bail!("no ballast_shard_failed rows in /metrics:\n{body}");
        }
        Ok(shards)
    }

    /// The server's `/metrics` page (Prometheus text), read over plain HTTP on the client port
    /// (at most 5 s).
    pub async fn metrics(&self) -> Result<String> {
        tokio::time::timeout(Duration::from_secs(5), self.http_get("/metrics"))
            .await
            .map_err(|_| anyhow!("GET /metrics timed out"))?
    }

    /// The body of `GET path` on the client port, which must answer 200.
    async fn http_get(&self, path: &str) -> Result<String> {
        match self.http_get_any(path).await? {
            (200, body) => Ok(body),
            (code, body) => bail!("GET {path}: status {code}: {body}"),
        }
    }

    /// The status code and body of `GET path` on the client port (at most 5 s; HTTP/1.0: the
    /// server closes the connection after the response, so the body is everything after the
    /// headers).
    pub async fn http_get_any(&self, path: &str) -> Result<(u16, String)> {
        tokio::time::timeout(Duration::from_secs(5), self.http_get_raw(path))
            .await
            .map_err(|_| anyhow!("GET {path} timed out"))?
    }

    async fn http_get_raw(&self, path: &str) -> Result<(u16, String)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.client_port))
            .await
            .context("connecting for HTTP")?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
            .await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| anyhow!("no HTTP response to GET {path}: {text:?}"))?;
        let code = head
            .strip_prefix("HTTP/1.")
            .and_then(|rest| rest.get(2..5))
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| anyhow!("GET {path}: not an HTTP answer: {head}"))?;
        Ok((code, body.to_owned()))
    }

    /// Which implementation this is.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// `127.0.0.1:<client port>`, the form etcdctl's `--endpoints` takes.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// `http://127.0.0.1:<client port>` (`https://` when served over TLS).
    pub fn client_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme(), self.client_port)
    }

    /// The client port.
    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    /// The peer port.
    pub fn peer_port(&self) -> u16 {
        self.peer_port
    }

    /// A new gRPC channel to the client URL (over TLS with the client certificate when the
    /// server serves TLS).
    pub async fn channel(&self) -> Result<Channel> {
        let mut endpoint = Channel::from_shared(self.client_url())?;
        if let Some(pki) = &self.tls {
            let read =
                |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
            endpoint = endpoint.tls_config(
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(read(&pki.ca)?))
                    .identity(tonic::transport::Identity::from_pem(
                        read(&pki.client.cert)?,
                        read(&pki.client.key)?,
                    ))
                    .domain_name("127.0.0.1"),
            )?;
        }
        endpoint
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| {
                format!(
                    "connecting to {} at {}",
                    self.kind.label(),
                    self.client_url()
                )
            })
    }

    /// gRPC clients over one channel.
    pub async fn clients(&self) -> Result<Clients> {
        let ch = self.channel().await?;
        Ok(Clients {
            kv: KvClient::new(ch.clone()),
            watch: WatchClient::new(ch.clone()),
            lease: LeaseClient::new(ch.clone()),
            maintenance: MaintenanceClient::new(ch.clone()),
            cluster: ClusterClient::new(ch),
        })
    }

    /// The server's Maintenance Status.
    pub async fn status(&self) -> Result<StatusResponse> {
        let mut c = self.clients().await?;
        Ok(c.maintenance.status(StatusRequest {}).await?.into_inner())
    }

    /// The member id the server answers with, and the leader its Status names (0: none).
    pub async fn member_and_leader(&self) -> Result<(u64, u64)> {
        let st = self.status().await?;
        let member = st.header.map_or(0, |h| h.member_id);
        Ok((member, st.leader))
    }

    /// The last [`LOG_TAIL_LINES`] lines of the server's log.
    pub fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = File::open(&self.log_path) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            // Read at most the last 256 KiB; that holds far more than the lines kept.
            let start = len.saturating_sub(256 * 1024);
            let _ = f.seek(SeekFrom::Start(start));
            let mut buf = Vec::new();
            let _ = f.read_to_end(&mut buf);
            text = String::from_utf8_lossy(&buf).into_owned();
        }
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(LOG_TAIL_LINES);
        lines[from..].join("\n")
    }

    /// Prints the log tail to stderr (captured by the test harness, shown on failure).
    pub fn print_log(&self) {
        eprintln!(
            "===== {} log ({}), last {LOG_TAIL_LINES} lines =====\n{}\n===== end of {} log =====",
            self.kind.label(),
            self.log_path.display(),
            self.log_tail(),
            self.kind.label()
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_log();
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}

/// The gRPC clients of one server.
#[derive(Clone)]
pub struct Clients {
    pub kv: KvClient<Channel>,
    pub watch: WatchClient<Channel>,
    pub lease: LeaseClient<Channel>,
    pub maintenance: MaintenanceClient<Channel>,
    pub cluster: ClusterClient<Channel>,
}

/// The reference etcd and the server under test, started side by side.
#[derive(Debug)]
pub struct Pair {
    pub etcd: Server,
    pub ballast: Server,
}

impl Pair {
    /// Starts both servers (concurrently) and waits until both are ready.
    pub async fn start() -> Result<Pair> {
        let (etcd, ballast) = tokio::join!(Server::start(Kind::Etcd), Server::start(Kind::Ballast));
        Ok(Pair {
            etcd: etcd?,
            ballast: ballast?,
        })
    }

    /// Both servers, reference first.
    pub fn both(&self) -> [&Server; 2] {
        [&self.etcd, &self.ballast]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A "Ballast" server on these ports whose process (if any) is `child`, to check a port
    /// that another server holds.
    fn on_ports(client_port: u16, peer_port: u16, child: Option<Child>) -> Server {
        Server {
            kind: Kind::Ballast,
            child,
            client_port,
            peer_port,
            log_path: PathBuf::new(),
            dir: None,
            extra_args: Vec::new(),
            member: None,
            tls: None,
        }
    }

    /// A server whose client port is another server's port is told apart: etcd serves gRPC on
    /// its peer port too, so a Range there succeeds, but the member it describes advertises
    /// another client URL.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn another_server_on_the_client_port_is_not_taken_for_this_one() {
        let etcd = Server::start(Kind::Etcd).await.expect("starting etcd");
        etcd.check_identity().await.expect("etcd is itself");
        let impostor = on_ports(etcd.peer_port, etcd.client_port, None);
        impostor
            .try_range()
            .await
            .expect("etcd answers on its peer port");
        let err = impostor
            .check_identity()
            .await
            .expect_err("etcd's peer port is not the impostor's server");
        assert!(lost_port(&err, false, ""), "{err:#}");
        assert!(!lost_port(
            &anyhow!("timed out"),
            false,
            "Address already in use"
        ));
        assert!(lost_port(
            &anyhow!("exited"),
            true,
            "Error: Address already in use (os error 98)"
        ));
    }

    /// Two servers handed the same client port: the one that lost the bind is not taken for
    /// the one that won it, although the winner advertises the loser's client URL too.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_server_that_lost_its_client_port_is_not_taken_for_the_winner() {
        let etcd = Server::start(Kind::Etcd).await.expect("starting etcd");
        let etcd_pid = etcd.pid().expect("etcd runs");
        assert!(listens_on(etcd_pid, etcd.client_port).expect("reading /proc"));
        assert!(!listens_on(etcd_pid, free_port().expect("a free port")).expect("reading /proc"));
        // A process that listens on nothing stands for the server that lost the bind.
        let loser = Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawning sleep");
        let same_port = on_ports(etcd.client_port, etcd.peer_port, Some(loser));
        same_port
            .try_range()
            .await
            .expect("etcd answers on the port");
        let err = same_port
            .check_identity()
            .await
            .expect_err("the winner's answers are not the loser's");
        assert!(lost_port(&err, false, ""), "{err:#}");
    }

    #[test]
    fn listening_sockets_are_read_from_a_proc_table() {
        let table = "\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:0929 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0
   1: 0100007F:0929 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0
   2: 00000000:092A 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4444 1 0
";
        assert_eq!(listening_inodes(table, 0x0929), vec![4242]);
        assert_eq!(listening_inodes(table, 0x092A), vec![4444]);
        assert!(listening_inodes(table, 0x0928).is_empty());
    }
}
