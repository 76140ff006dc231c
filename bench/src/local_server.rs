//! Starts an etcd-compatible server (the reference etcd, or Ballast, which takes etcd's flags)
//! as a single-node cluster on free 127.0.0.1 ports with a fresh data directory, and stops it.
//!
//! Invariants: the process is killed and reaped when the `LocalServer` is dropped (also on
//! panic), and its temporary data directory removed; `start` returns only once the server
//! answered a Range, or fails with the tail of the server's log.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use ballast_proto::etcdserverpb::RangeRequest;
use bytes::Bytes;
use tempfile::TempDir;

use crate::conn::Pool;

const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running single-node server.
pub struct LocalServer {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub client_url: String,
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
        let dir = tempfile::Builder::new()
            .prefix("ballast-bench-")
            .tempdir()?;
        let data_dir = dir.path().join("data");
        let log_path = dir.path().join("server.log");
        let client_url = format!("http://127.0.0.1:{}", free_port()?);
        let peer_url = format!("http://127.0.0.1:{}", free_port()?);
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new(binary)
            .arg("--name")
            .arg(name)
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--listen-client-urls")
            .arg(&client_url)
            .arg("--advertise-client-urls")
            .arg(&client_url)
            .arg("--listen-peer-urls")
            .arg(&peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer_url)
            .arg("--initial-cluster")
            .arg(format!("{name}={peer_url}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut server = LocalServer {
            child,
            client_url,
            log_path,
            _dir: dir,
        };
        server.wait_ready().await?;
        Ok(server)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
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
                    "server not ready after {READY_TIMEOUT:?}; log:\n{}",
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

impl Drop for LocalServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
