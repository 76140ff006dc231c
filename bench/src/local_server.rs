//! Starts an etcd-compatible server (the reference etcd, or Ballast, which takes etcd's flags)
//! as a single-node cluster on free 127.0.0.1 ports with a fresh data directory, stops it
//! (SIGTERM or SIGKILL), and starts it again on the same data directory and ports. The same
//! process handling serves one member of a cluster (`crate::local_cluster`): then the ports
//! and the `--initial-cluster` list are given, and `--initial-cluster-state new` and
//! `--initial-cluster-token` are passed too. With a [`Pki`] the server runs as kubeadm runs
//! etcd: `https://` client and peer URLs with client certificates required on both, and every
//! call made here to see whether it serves dials over TLS with the `Pki`'s client certificate.
//!
//! Invariants: at most one process per `LocalServer` runs at a time; it is killed and reaped
//! when the `LocalServer` is dropped (also on panic and on an error path), and the temporary
//! directory holding the data dir and the log is removed then; `start` returns only once the
//! server answered a Range, or fails with the tail of the server's log. Every restart appends
//! to the same log file, so its tail shows the last run.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use ballast_proto::etcdserverpb::RangeRequest;
use bytes::Bytes;
use tempfile::TempDir;

use crate::conn::{Endpoints, Pool};
use crate::tls::{ClientTls, Pki};

const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How to stop a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGTERM: the server may shut down cleanly.
    Term,
    /// SIGKILL (`kill -9`): a crash as far as the server's files are concerned.
    Kill,
}

/// What makes a server one member of a cluster rather than a cluster of its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterFlags {
    /// `name=peer-url,...` over every member, this one included.
    pub initial_cluster: String,
    /// `--initial-cluster-token`: the members of one cluster share it.
    pub token: String,
}

/// A server (a single node, or one member of a cluster), running or stopped.
pub struct LocalServer {
    child: Option<Child>,
    binary: PathBuf,
    name: String,
    extra_args: Vec<String>,
    cluster: Option<ClusterFlags>,
    /// The certificates it serves with and the client side of them (`None`: plain http).
    tls: Option<(Arc<Pki>, ClientTls)>,
    /// `http://127.0.0.1:<port>` (`https://` with TLS).
    pub client_url: String,
    peer_url: String,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    _dir: TempDir,
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
    Ok(l.local_addr()?.port())
}

impl LocalServer {
    /// Starts `binary` (e.g. `etcd` from PATH or a Ballast binary) named `name`, and waits
    /// until it serves.
    pub async fn start(binary: &Path, name: &str) -> Result<LocalServer> {
        Self::start_with(binary, name, &[], None, None).await
    }

    /// Like [`LocalServer::start`], with `extra_args` after the cluster (and TLS) flags, the
    /// temporary directory created under `parent` (the system's temp dir when `None`), and
    /// serving TLS with `tls`'s certificates when given.
    pub async fn start_with(
        binary: &Path,
        name: &str,
        extra_args: &[String],
        parent: Option<&Path>,
        tls: Option<Arc<Pki>>,
    ) -> Result<LocalServer> {
        let (client_port, peer_port) = loop {
            let (c, p) = (free_port()?, free_port()?);
            if c != p {
                break (c, p);
            }
        };
        let mut server = LocalServer::new_stopped(
            binary,
            name,
            extra_args,
            parent,
            client_port,
            peer_port,
            None,
        )?;
        if let Some(pki) = tls {
            server = server.with_tls(pki)?;
        }
        server.spawn()?;
        server.wait_ready(READY_TIMEOUT).await?;
        Ok(server)
    }

    /// A server on the given ports with a fresh temporary directory (under `parent`, or the
    /// system's temp dir), not started yet: [`LocalServer::spawn`] starts it. With `cluster`
    /// it is a member of that cluster, else a single node.
    pub fn new_stopped(
        binary: &Path,
        name: &str,
        extra_args: &[String],
        parent: Option<&Path>,
        client_port: u16,
        peer_port: u16,
        cluster: Option<ClusterFlags>,
    ) -> Result<LocalServer> {
        let mut builder = tempfile::Builder::new();
        let prefix = format!("ballast-bench-{name}-");
        builder.prefix(&prefix);
        let dir = match parent {
            Some(p) => builder
                .tempdir_in(p)
                .with_context(|| format!("creating a temp dir in {}", p.display()))?,
            None => builder.tempdir()?,
        };
        Ok(LocalServer {
            child: None,
            binary: binary.to_path_buf(),
            name: name.to_string(),
            extra_args: extra_args.to_vec(),
            cluster,
            tls: None,
            client_url: format!("http://127.0.0.1:{client_port}"),
            peer_url: format!("http://127.0.0.1:{peer_port}"),
            data_dir: dir.path().join("data"),
            log_path: dir.path().join("server.log"),
            _dir: dir,
        })
    }

    /// Serves with `pki`'s certificates: `https://` client and peer URLs, kubeadm's TLS flags
    /// (before the extra arguments), and client certificates required. Call before
    /// [`LocalServer::spawn`].
    pub fn with_tls(mut self, pki: Arc<Pki>) -> Result<LocalServer> {
        let client = pki.client_tls()?;
        for url in [&mut self.client_url, &mut self.peer_url] {
            if let Some(rest) = url.strip_prefix("http://") {
                *url = format!("https://{rest}");
            }
        }
        self.tls = Some((pki, client));
        Ok(self)
    }

    /// The client URL with the TLS to dial it with.
    pub fn endpoints(&self) -> Endpoints {
        Endpoints {
            urls: vec![self.client_url.clone()],
            tls: self.client_tls().cloned(),
        }
    }

    /// The client side of the certificates it serves with (`None` for plain http).
    pub fn client_tls(&self) -> Option<&ClientTls> {
        self.tls.as_ref().map(|(_, client)| client)
    }

    /// The member name (`--name`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `http://127.0.0.1:<peer port>`.
    pub fn peer_url(&self) -> &str {
        &self.peer_url
    }

    /// The command-line arguments the server is started with: etcd's flags for its name, data
    /// dir and URLs, the cluster flags, then the extra arguments.
    pub fn args(&self) -> Vec<String> {
        let data_dir = self.data_dir.to_string_lossy();
        let fixed: [&str; 12] = [
            "--name",
            &self.name,
            "--data-dir",
            &data_dir,
            "--listen-client-urls",
            &self.client_url,
            "--advertise-client-urls",
            &self.client_url,
            "--listen-peer-urls",
            &self.peer_url,
            "--initial-advertise-peer-urls",
            &self.peer_url,
        ];
        let mut args: Vec<String> = fixed.iter().map(|s| s.to_string()).collect();
        match &self.cluster {
            None => {
                args.push("--initial-cluster".into());
                args.push(format!("{}={}", self.name, self.peer_url));
            }
            Some(c) => {
                for (flag, value) in [
                    ("--initial-cluster", c.initial_cluster.as_str()),
                    ("--initial-cluster-state", "new"),
                    ("--initial-cluster-token", c.token.as_str()),
                ] {
                    args.push(flag.into());
                    args.push(value.into());
                }
            }
        }
        if let Some((pki, _)) = &self.tls {
            args.extend(pki.server_args());
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }

    /// Starts the process (again) on the same data dir and ports, without waiting for it to
    /// serve; returns the instant just before the spawn, the origin of restart timings.
    pub fn spawn(&mut self) -> Result<Instant> {
        if self.is_running()? {
            bail!("{} is already running", self.name);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let mut cmd = Command::new(&self.binary);
        cmd.args(self.args())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let t0 = Instant::now();
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        self.child = Some(child);
        Ok(t0)
    }

    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> Result<bool> {
        match &mut self.child {
            None => Ok(false),
            Some(c) => Ok(c.try_wait()?.is_none()),
        }
    }

    /// The process's exit status once it has exited (reaping it), `None` while it runs.
    pub fn exited(&mut self) -> Result<Option<ExitStatus>> {
        match &mut self.child {
            None => Ok(None),
            Some(c) => Ok(c.try_wait()?),
        }
    }

    /// Stops the process with `signal` and waits until it has exited. After SIGTERM it waits
    /// up to `grace`, then sends SIGKILL; returns how long the stop took and whether SIGKILL
    /// was needed after a SIGTERM.
    pub async fn stop(&mut self, signal: StopSignal, grace: Duration) -> Result<(Duration, bool)> {
        let Some(child) = self.child.as_mut() else {
            bail!("{} is not running", self.name);
        };
        let t0 = Instant::now();
        let mut forced = false;
        match signal {
            StopSignal::Kill => {
                child.kill().context("sending SIGKILL")?;
                child.wait()?;
            }
            StopSignal::Term => {
                send_sigterm(child.id())?;
                let deadline = t0 + grace;
                loop {
                    if child.try_wait()?.is_some() {
                        break;
                    }
                    if Instant::now() >= deadline {
                        forced = true;
                        child.kill().context("sending SIGKILL after SIGTERM")?;
                        child.wait()?;
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
        let took = t0.elapsed();
        self.child = None;
        Ok((took, forced))
    }

    /// Waits until the server answers a Range, at most `timeout`.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited()? {
                return Err(anyhow!(
                    "server exited with {status}; log:\n{}",
                    self.log_tail()
                ));
            }
            if self.answers().await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(anyhow!(
                    "server not ready after {timeout:?}; log:\n{}",
                    self.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn answers(&self) -> bool {
        let Ok(pool) = Pool::connect_to(&self.endpoints(), 1).await else {
            return false;
        };
        let req = RangeRequest {
            key: Bytes::from_static(b"health"),
            ..Default::default()
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(2), pool.kv(0).range(req)).await,
            Ok(Ok(_))
        )
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

/// SIGTERM through the `kill` utility: the crate denies unsafe code, and `libc::kill` is an
/// unsafe call (std's `Child::kill` only sends SIGKILL).
fn send_sigterm(pid: u32) -> Result<()> {
    let status = Command::new("kill")
        .args(["-s", "TERM", &pid.to_string()])
        .status()
        .context("running kill -s TERM")?;
    if !status.success() {
        bail!("kill -s TERM {pid} failed with {status}");
    }
    Ok(())
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value_of<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
        let i = args.iter().position(|a| a == flag)?;
        args.get(i + 1).map(String::as_str)
    }

    #[test]
    fn a_single_node_names_only_itself_and_passes_no_cluster_state() {
        let s = LocalServer::new_stopped(
            Path::new("etcd"),
            "bench-a",
            &["--snapshot-count=100".to_string()],
            None,
            4001,
            4002,
            None,
        )
        .unwrap();
        let args = s.args();
        assert_eq!(
            value_of(&args, "--initial-cluster"),
            Some("bench-a=http://127.0.0.1:4002")
        );
        assert_eq!(
            value_of(&args, "--listen-client-urls"),
            Some("http://127.0.0.1:4001")
        );
        assert_eq!(value_of(&args, "--initial-cluster-state"), None);
        assert_eq!(value_of(&args, "--initial-cluster-token"), None);
        assert_eq!(
            args.last().unwrap(),
            "--snapshot-count=100",
            "extra args last"
        );
        assert!(s.data_dir.starts_with(s._dir.path()));
        assert!(s.pid().is_none(), "not started");
    }

    #[test]
    fn a_member_passes_the_cluster_list_state_and_token() {
        let cluster = ClusterFlags {
            initial_cluster: "m0=http://127.0.0.1:1,m1=http://127.0.0.1:2".into(),
            token: "tok".into(),
        };
        let s = LocalServer::new_stopped(
            Path::new("ballast"),
            "m1",
            &[],
            None,
            3,
            2,
            Some(cluster.clone()),
        )
        .unwrap();
        let args = s.args();
        assert_eq!(
            value_of(&args, "--initial-cluster"),
            Some(cluster.initial_cluster.as_str())
        );
        assert_eq!(value_of(&args, "--initial-cluster-state"), Some("new"));
        assert_eq!(value_of(&args, "--initial-cluster-token"), Some("tok"));
        assert_eq!(
            value_of(&args, "--initial-advertise-peer-urls"),
            Some("http://127.0.0.1:2")
        );
        assert_eq!(s.peer_url(), "http://127.0.0.1:2");
        assert_eq!(s.name(), "m1");
    }

    #[test]
    fn with_tls_serves_https_with_kubeadms_flags_before_the_extra_args() {
        let pki = Arc::new(Pki::generate().unwrap());
        let s = LocalServer::new_stopped(
            Path::new("etcd"),
            "secure",
            &["--snapshot-count=100".to_string()],
            None,
            4001,
            4002,
            None,
        )
        .unwrap()
        .with_tls(pki.clone())
        .unwrap();
        let args = s.args();
        assert_eq!(
            value_of(&args, "--listen-client-urls"),
            Some("https://127.0.0.1:4001")
        );
        assert_eq!(
            value_of(&args, "--initial-advertise-peer-urls"),
            Some("https://127.0.0.1:4002")
        );
        assert_eq!(
            value_of(&args, "--initial-cluster"),
            Some("secure=https://127.0.0.1:4002")
        );
        let tls_at = args.iter().position(|a| a == "--cert-file").unwrap();
        assert_eq!(&args[tls_at..args.len() - 1], pki.server_args());
        assert_eq!(args.last().unwrap(), "--snapshot-count=100");
        let e = s.endpoints();
        assert_eq!(e.urls, ["https://127.0.0.1:4001"]);
        assert_eq!(e.tls, Some(pki.client_tls().unwrap()));
    }

    #[test]
    fn the_temp_dir_goes_with_the_server() {
        let s = LocalServer::new_stopped(Path::new("etcd"), "gone", &[], None, 1, 2, None).unwrap();
        let dir = s._dir.path().to_path_buf();
        assert!(dir.is_dir());
        drop(s);
        assert!(!dir.exists());
    }
}
