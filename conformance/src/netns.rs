//! Ballast members in Linux network namespaces, so a test can cut one off the network: a
//! [`Network`] (one bridge in the root namespace, one namespace per host joined to it by a veth
//! pair, a private `10.a.b.0/24`) and an [`NsCluster`] (one `ballast` per namespace, listening
//! on its namespace's address; clients in the root namespace reach it through the bridge).
//!
//! A partition is a link taken down: [`Network::isolate`] sets the root-side veth of a host
//! down, so the bridge no longer reaches it; packets to and from it are dropped (no reset), as
//! in a real partition. Inside the isolated namespace the member still reaches itself, so a
//! client run there ([`NsCluster::exec_in`]) sees what the minority side serves.
//!
//! Invariants:
//! - Everything the harness creates is named after the test process and an instance counter
//!   (`ballast-pt-<pid>-<n>-h<i>` namespaces, `bb<pid>-<n>` bridge, `bv<pid>-<n>-<i>` veths),
//!   and its subnet is derived from the same pair and checked unused, so tests in parallel
//!   processes never share anything. Leftovers of a process that died without cleaning up
//!   (SIGKILL) are removed when the next [`Network`] is made.
//! - `Drop` removes what was created, also while a test panics: [`NsCluster`] first kills its
//!   members (printing their log tails when panicking), then [`Network`] deletes the
//!   namespaces (which deletes their veths) and the bridge.
//! - Every command is bounded ([`CMD_TIMEOUT`], run by [`crate::process::run_bounded`]);
//!   member start-up by [`READY_TIMEOUT`].
//! - Only addresses on a bridge this harness made are used: traffic never leaves the machine.
//!
//! Needs root (`ip netns add`); tests that use it should say so when [`Network::new`] fails.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use ballast_proto::etcdserverpb::{kv_client::KvClient, RangeRequest};
use tonic::transport::Channel;

use crate::process::{run_bounded, Run};
use crate::server::{ballast_bin, ballast_shards, CLUSTER_TOKEN, READY_TIMEOUT};

/// Bound on one `ip` command (or any other helper command).
pub const CMD_TIMEOUT: Duration = Duration::from_secs(10);
/// The client and peer ports every member uses (each namespace has its own port space).
pub const CLIENT_PORT: u16 = 2379;
pub const PEER_PORT: u16 = 2380;
/// Lines of a member's log printed when a test fails.
const LOG_TAIL_LINES: usize = 150;
/// Name prefix of the namespaces (the bridge and veths use `bb` and `bv`: interface names are
/// at most 15 bytes).
const NS_PREFIX: &str = "ballast-pt-";

static INSTANCE: AtomicU32 = AtomicU32::new(0);

/// Runs `ip args` within `bound`.
fn run_ip(args: &[&str], bound: Duration) -> Result<Run> {
    run_bounded(Command::new("ip").args(args), bound)
}

/// Runs `ip args`, failing on a non-zero exit.
fn ip(args: &[&str]) -> Result<()> {
    let r = run_ip(args, CMD_TIMEOUT)?;
    if !r.success() {
        bail!(
            "ip {} failed ({:?}): {}",
            args.join(" "),
            r.code,
            r.stderr.trim()
        );
    }
    Ok(())
}

/// Runs `ip args`, for cleanup: failures are ignored (the object may be gone already).
fn ip_quiet(args: &[&str]) {
    let _ = run_ip(args, CMD_TIMEOUT);
}

/// One namespace joined to the bridge.
#[derive(Debug, Clone)]
pub struct Host {
    pub ns: String,
    /// The veth end left in the root namespace, a port of the bridge.
    veth_root: String,
    /// The veth end inside the namespace.
    veth_ns: String,
    pub addr: Ipv4Addr,
}

/// A bridge and `n` namespaces on it. See the module doc.
#[derive(Debug)]
pub struct Network {
    bridge: String,
    /// The bridge's own address (the root namespace's), `10.a.b.1`.
    pub gateway: Ipv4Addr,
    hosts: Vec<Host>,
    /// Whether the bridge was created (so `Drop` deletes it).
    bridge_made: bool,
    /// Namespaces created so far (so `Drop` deletes exactly those).
    ns_made: Vec<String>,
}

/// Whether process `pid` runs.
fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// The pid a name made by this harness carries after `prefix` (`<prefix><pid>-...`).
fn owner_pid(name: &str, prefix: &str) -> Option<u32> {
    name.strip_prefix(prefix)?.split('-').next()?.parse().ok()
}

/// Removes namespaces and bridges left by harness processes that no longer run.
fn sweep_leftovers() {
    if let Ok(r) = run_ip(&["netns", "list"], CMD_TIMEOUT) {
        for line in r.stdout.lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if matches!(owner_pid(name, NS_PREFIX), Some(pid) if !alive(pid)) {
                ip_quiet(&["netns", "del", name]);
            }
        }
    }
    if let Ok(r) = run_ip(&["-o", "link", "show"], CMD_TIMEOUT) {
        for line in r.stdout.lines() {
            // "12: bb1234-0: <...>" or "13: bv1234-0-1@if12: <...>"
            let Some(name) = line.split(": ").nth(1) else {
                continue;
            };
            let name = name.split('@').next().unwrap_or("");
            let pid = owner_pid(name, "bb").or_else(|| owner_pid(name, "bv"));
            if matches!(pid, Some(pid) if !alive(pid)) {
                ip_quiet(&["link", "del", name]);
            }
        }
    }
}

impl Network {
    /// Creates the bridge and `n` namespaces (hosts `10.a.b.10`, `10.a.b.11`, ...).
    pub fn new(n: usize) -> Result<Network> {
        assert!((1..=100).contains(&n), "1 to 100 hosts");
        sweep_leftovers();
        let pid = std::process::id();
        let instance = INSTANCE.fetch_add(1, Ordering::Relaxed);
        let used = run_ip(&["-4", "-o", "addr", "show"], CMD_TIMEOUT)?.stdout;
        // A /24 inside 10.0.0.0/8 from (pid, instance); the next one when already in use.
        let mut key = (pid.wrapping_mul(8).wrapping_add(instance)) & 0xffff;
        let prefix = loop {
            let (a, b) = ((key >> 8) as u8, (key & 0xff) as u8);
            let p = format!("10.{a}.{b}.");
            if !used.contains(&p) {
                break [10, a, b];
            }
            key = (key + 1) & 0xffff;
        };
        let tag = format!("{pid}-{instance}");
        let mut net = Network {
            bridge: format!("bb{tag}"),
            gateway: Ipv4Addr::new(prefix[0], prefix[1], prefix[2], 1),
            hosts: Vec::new(),
            bridge_made: false,
            ns_made: Vec::new(),
        };
        assert!(net.bridge.len() <= 15, "interface name {}", net.bridge);
        // From here on `Drop` removes whatever was made, if a step fails.
        ip(&["link", "add", &net.bridge, "type", "bridge"])?;
        net.bridge_made = true;
        ip(&["link", "set", &net.bridge, "up"])?;
        let gw = format!("{}/24", net.gateway);
        ip(&["addr", "add", &gw, "dev", &net.bridge])?;
        for i in 0..n {
            let host = Host {
                ns: format!("{NS_PREFIX}{tag}-h{i}"),
                veth_root: format!("bv{tag}-{i}"),
                veth_ns: format!("bn{tag}-{i}"),
                addr: Ipv4Addr::new(prefix[0], prefix[1], prefix[2], 10 + i as u8),
            };
            assert!(
                host.veth_root.len() <= 15,
                "interface name {}",
                host.veth_root
            );
            ip(&["netns", "add", &host.ns])?;
            net.ns_made.push(host.ns.clone());
            ip(&[
                "link",
                "add",
                &host.veth_root,
                "type",
                "veth",
                "peer",
                "name",
                &host.veth_ns,
                "netns",
                &host.ns,
            ])?;
            net.hosts.push(host.clone());
            ip(&["link", "set", &host.veth_root, "master", &net.bridge])?;
            ip(&["link", "set", &host.veth_root, "up"])?;
            ip(&["-n", &host.ns, "link", "set", "lo", "up"])?;
            let addr = format!("{}/24", host.addr);
            ip(&["-n", &host.ns, "addr", "add", &addr, "dev", &host.veth_ns])?;
            ip(&["-n", &host.ns, "link", "set", &host.veth_ns, "up"])?;
        }
        Ok(net)
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Cuts host `i` off: its root-side veth goes down, so the bridge (the other hosts and the
    /// root namespace) no longer reaches it.
    pub fn isolate(&self, i: usize) -> Result<()> {
        ip(&["link", "set", &self.hosts[i].veth_root, "down"])
    }

    /// Undoes [`Network::isolate`].
    pub fn heal(&self, i: usize) -> Result<()> {
        ip(&["link", "set", &self.hosts[i].veth_root, "up"])
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end in it and so its peer on the bridge.
        for ns in &self.ns_made {
            ip_quiet(&["netns", "del", ns]);
        }
        for h in &self.hosts {
            ip_quiet(&["link", "del", &h.veth_root]);
        }
        if self.bridge_made {
            ip_quiet(&["link", "del", &self.bridge]);
        }
    }
}

/// One `ballast` running in a namespace of an [`NsCluster`].
#[derive(Debug)]
pub struct NsMember {
    name: String,
    ns: String,
    addr: Ipv4Addr,
    child: Option<Child>,
    log_path: PathBuf,
    dir: Option<tempfile::TempDir>,
}

impl NsMember {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace it runs in.
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// `http://10.a.b.c:2379`.
    pub fn client_url(&self) -> String {
        format!("http://{}:{CLIENT_PORT}", self.addr)
    }

    /// `http://10.a.b.c:2380`.
    pub fn peer_url(&self) -> String {
        format!("http://{}:{PEER_PORT}", self.addr)
    }

    /// A new gRPC channel to the client URL (from the root namespace, through the bridge).
    pub async fn channel(&self) -> Result<Channel> {
        Channel::from_shared(self.client_url())?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("connecting to {} at {}", self.name, self.client_url()))
    }

    /// The last [`LOG_TAIL_LINES`] lines of its log (stdout and stderr).
    pub fn log_tail(&self) -> String {
        let mut buf = Vec::new();
        if let Ok(mut f) = File::open(&self.log_path) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            let _ = f.seek(SeekFrom::Start(len.saturating_sub(256 * 1024)));
            let _ = f.read_to_end(&mut buf);
        }
        let text = String::from_utf8_lossy(&buf);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    fn spawn(&mut self, initial_cluster: &str, extra_args: &[&str]) -> Result<()> {
        let bin = ballast_bin();
        if !bin.is_file() {
            bail!(
                "the ballast binary is not at {} (build it with `cargo build -p ballast-net --bin \
                 ballast`, or set BALLAST_BIN)",
                bin.display()
            );
        }
        let dir = self
            .dir
            .as_ref()
            .ok_or_else(|| anyhow!("the member's temp dir is gone"))?
            .path()
            .to_path_buf();
        let log = File::options()
            .append(true)
            .create(true)
            .open(&self.log_path)
            .context("opening the member log")?;
        let client_url = self.client_url();
        let peer_url = self.peer_url();
        // `ip netns exec` enters the namespace and execs the program: the child is ballast.
        let mut cmd = Command::new("ip");
        cmd.arg("netns")
            .arg("exec")
            .arg(&self.ns)
            .arg(&bin)
            .arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--listen-client-urls")
            .arg(&client_url)
            .arg("--advertise-client-urls")
            .arg(&client_url)
            .arg("--listen-peer-urls")
            .arg(&peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer_url)
            .arg("--initial-cluster")
            .arg(initial_cluster)
            .arg("--initial-cluster-token")
            .arg(CLUSTER_TOKEN)
            .args(extra_args)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(shards) = ballast_shards() {
            cmd.arg("--shards").arg(shards.to_string());
        }
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ETCD_") {
                cmd.env_remove(k);
            }
        }
        self.child = Some(cmd.spawn().context("spawning ballast in its namespace")?);
        Ok(())
    }

    /// Waits until it answers a linearizable Range (which takes an elected leader).
    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last = String::from("no attempt");
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!("exited before it was ready: {status}");
                }
            }
            let probe = async {
                let mut kv = KvClient::new(self.channel().await?);
                let req = RangeRequest {
                    key: bytes::Bytes::from_static(b"conformance-ready-probe"),
                    ..Default::default()
                };
                kv.range(req).await?;
                anyhow::Ok(())
            };
            match tokio::time::timeout(Duration::from_secs(3), probe).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => last = format!("{e:#}"),
                Err(_) => last = "timed out".to_owned(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("not ready within {READY_TIMEOUT:?}; last error: {last}")
    }
}

impl Drop for NsMember {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "===== {} log ({}), last {LOG_TAIL_LINES} lines =====\n{}\n===== end of {} log =====",
                self.name,
                self.log_path.display(),
                self.log_tail(),
                self.name
            );
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

/// A cluster of `ballast` members, one per namespace of its [`Network`]. Fields drop in order:
/// the members (killed) before the network (deleted).
#[derive(Debug)]
pub struct NsCluster {
    pub members: Vec<NsMember>,
    pub net: Network,
}

impl NsCluster {
    /// Makes a [`Network`] of `n` hosts, starts members `m0`, `m1`, ... in them with
    /// `extra_args` (and `--shards` from `BALLAST_SHARDS`), and waits until every one answers
    /// a linearizable Range.
    pub async fn start(n: usize, extra_args: &[&str]) -> Result<NsCluster> {
        let net = Network::new(n).context("creating network namespaces (this needs root)")?;
        let mut cluster = NsCluster {
            members: Vec::new(),
            net,
        };
        for (i, h) in cluster.net.hosts().iter().enumerate() {
            let dir = tempfile::Builder::new()
                .prefix(&format!("conformance-netns-m{i}-"))
                .tempdir()
                .context("creating a temp dir")?;
            let log_path = dir.path().join("server.log");
            File::create(&log_path).context("creating the member log")?;
            cluster.members.push(NsMember {
                name: format!("m{i}"),
                ns: h.ns.clone(),
                addr: h.addr,
                child: None,
                log_path,
                dir: Some(dir),
            });
        }
        let initial_cluster = cluster
            .members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        for m in cluster.members.iter_mut() {
            m.spawn(&initial_cluster, extra_args)?;
        }
        for m in cluster.members.iter_mut() {
            m.wait_ready().await.with_context(|| {
                format!(
                    "member {} did not start\n--- log ---\n{}",
                    m.name,
                    m.log_tail()
                )
            })?;
        }
        Ok(cluster)
    }

    /// Cuts member `i`'s namespace off the bridge ([`Network::isolate`]).
    pub fn isolate(&self, i: usize) -> Result<()> {
        self.net.isolate(i)
    }

    /// Reconnects member `i`'s namespace.
    pub fn heal(&self, i: usize) -> Result<()> {
        self.net.heal(i)
    }

    /// Runs `program args` inside member `i`'s namespace, bounded by `bound`; blocks a tokio
    /// worker only on a blocking-pool thread.
    pub async fn exec_in(
        &self,
        i: usize,
        program: &str,
        args: &[&str],
        bound: Duration,
    ) -> Result<Run> {
        let mut full = vec![
            "netns".to_owned(),
            "exec".to_owned(),
            self.members[i].ns.clone(),
            program.to_owned(),
        ];
        full.extend(args.iter().map(|a| (*a).to_owned()));
        tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = full.iter().map(String::as_str).collect();
            run_ip(&refs, bound)
        })
        .await
        .context("joining the command's thread")?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_their_owner_pid() {
        assert_eq!(owner_pid("ballast-pt-1234-0-h2", NS_PREFIX), Some(1234));
        assert_eq!(owner_pid("bb77-3", "bb"), Some(77));
        assert_eq!(owner_pid("bv77-3-1", "bv"), Some(77));
        assert_eq!(owner_pid("br-lan", "bb"), None);
        assert_eq!(owner_pid("eth0", "bv"), None);
    }
}
