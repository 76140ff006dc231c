//! Starts an etcd-compatible server (the reference etcd, or Ballast, which takes etcd's flags)
//! as a single-node cluster on free 127.0.0.1 ports with a fresh data directory, stops it
//! (SIGTERM or SIGKILL), and starts it again on the same data directory and ports.
//!
//! Invariants: at most one process per `LocalServer` runs at a time; it is killed and reaped
//! when the `LocalServer` is dropped (also on panic and on an error path), and the temporary
//! directory holding the data dir and the log is removed then; `start` returns only once the
//! server answered a Range, or fails with the tail of the server's log. Every restart appends
//! to the same log file, so its tail shows the last run.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use ballast_proto::etcdserverpb::RangeRequest;
use bytes::Bytes;
use tempfile::TempDir;

use crate::conn::Pool;

const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How to stop a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGTERM: the server may shut down cleanly.
    Term,
    /// SIGKILL (`kill -9`): a crash as far as the server's files are concerned.
    Kill,
}

/// A single-node server, running or stopped.
pub struct LocalServer {
    child: Option<Child>,
    binary: PathBuf,
    name: String,
    extra_args: Vec<String>,
    /// `http://127.0.0.1:<port>`.
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
        Self::start_with(binary, name, &[], None).await
    }

    /// Like [`LocalServer::start`], with `extra_args` after the cluster flags and the temporary
    /// directory created under `parent` (the system's temp dir when `None`).
    pub async fn start_with(
        binary: &Path,
        name: &str,
        extra_args: &[String],
        parent: Option<&Path>,
    ) -> Result<LocalServer> {
        let mut builder = tempfile::Builder::new();
        builder.prefix("ballast-bench-");
        let dir = match parent {
            Some(p) => builder
                .tempdir_in(p)
                .with_context(|| format!("creating a temp dir in {}", p.display()))?,
            None => builder.tempdir()?,
        };
        let mut server = LocalServer {
            child: None,
            binary: binary.to_path_buf(),
            name: name.to_string(),
            extra_args: extra_args.to_vec(),
            client_url: format!("http://127.0.0.1:{}", free_port()?),
            peer_url: format!("http://127.0.0.1:{}", free_port()?),
            data_dir: dir.path().join("data"),
            log_path: dir.path().join("server.log"),
            _dir: dir,
        };
        server.spawn()?;
        server.wait_ready(READY_TIMEOUT).await?;
        Ok(server)
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
        cmd.arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen-client-urls")
            .arg(&self.client_url)
            .arg("--advertise-client-urls")
            .arg(&self.client_url)
            .arg("--listen-peer-urls")
            .arg(&self.peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&self.peer_url)
            .arg("--initial-cluster")
            .arg(format!("{}={}", self.name, self.peer_url))
            .args(&self.extra_args)
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
        let Ok(pool) = Pool::connect(std::slice::from_ref(&self.client_url), 1).await else {
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
