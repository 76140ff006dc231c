//! Starts N members of one server kind (the reference etcd, or Ballast, which takes the same
//! flags) as one cluster on 127.0.0.1: every member on its own free client and peer port, with
//! its own data dir and log in its own temporary directory, all bootstrapped together with
//! `--initial-cluster m0=<peer url>,m1=...`, `--initial-cluster-state new` and a shared
//! `--initial-cluster-token`. One member is exactly `LocalServer`'s single node. With a
//! [`Pki`] every member serves TLS on its client and peer URLs as kubeadm runs etcd, members
//! reach each other over `https://` peer URLs, and the readiness calls made here dial with the
//! `Pki`'s client certificate.
//!
//! Invariants: `start` returns only once every member answered a Range, all members agree on
//! one leader through `Maintenance.Status` (`crate::leader`), and a Put succeeded through every
//! member (so a follower's forwarding works too); otherwise it fails with the members' log
//! tails. Each member is a `LocalServer`, so every process is killed and reaped and every temp
//! dir removed when the cluster is dropped, also on an error path half-way through a start. A
//! start whose member exited (e.g. a port taken between choosing and binding it) is retried on
//! fresh ports, at most `START_ATTEMPTS` times.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use ballast_proto::etcdserverpb::PutRequest;
use bytes::Bytes;

use crate::conn::{Endpoints, Pool};
use crate::leader::{self, leader_index, LeaderError};
use crate::local_server::{free_port, ClusterFlags, LocalServer};
use crate::tls::Pki;

/// Bound on the members answering, electing a leader and taking a write.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on one Status or Put while waiting.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Starts tried on fresh ports when a member exits during start-up.
const START_ATTEMPTS: usize = 3;
/// The key written through every member before measuring.
const READY_KEY: &[u8] = b"ballast-bench/cluster-ready";

/// A running cluster of `LocalServer` members.
pub struct LocalCluster {
    members: Vec<LocalServer>,
    leader: usize,
}

/// How to start a cluster.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    pub binary: PathBuf,
    /// Members are named `<name>-0`, `<name>-1`, ...; the cluster token is `<name>-token`.
    pub name: String,
    pub members: usize,
    /// Flags after the cluster flags, for every member.
    pub extra_args: Vec<String>,
    /// Where the temporary directories go (the system's temp dir when `None`).
    pub parent: Option<PathBuf>,
    /// Serve TLS with these certificates (client and peer URLs), `None` for plain http.
    pub tls: Option<Arc<Pki>>,
}

/// `m0=http://127.0.0.1:p0,m1=...` from `(name, peer url)` pairs, in member order.
pub fn initial_cluster(members: &[(String, String)]) -> String {
    members
        .iter()
        .map(|(name, peer_url)| format!("{name}={peer_url}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// `n` pairwise distinct ports from `next` (which may repeat itself: the kernel can hand out a
/// port just released again), asking it at most `n * 16` times.
pub fn distinct_ports(n: usize, mut next: impl FnMut() -> Result<u16>) -> Result<Vec<u16>> {
    let mut ports = Vec::with_capacity(n);
    for _ in 0..n.saturating_mul(16) {
        if ports.len() == n {
            break;
        }
        let p = next()?;
        if !ports.contains(&p) {
            ports.push(p);
        }
    }
    if ports.len() < n {
        bail!("found only {} distinct free ports of {n}", ports.len());
    }
    Ok(ports)
}

impl LocalCluster {
    /// Starts the cluster `spec` describes and waits until it has a leader and takes writes.
    pub async fn start(spec: &ClusterSpec) -> Result<LocalCluster> {
        if spec.members == 0 {
            bail!("a cluster needs at least one member");
        }
        let mut last_err = None;
        for _ in 0..START_ATTEMPTS {
            let mut members = spawn_members(spec).await?;
            match wait_ready(&mut members).await {
                Ok(leader) => return Ok(LocalCluster { members, leader }),
                Err(e) => {
                    let any_exited = members
                        .iter_mut()
                        .any(|m| matches!(m.exited(), Ok(Some(_))));
                    if !any_exited {
                        return Err(e);
                    }
                    last_err = Some(e);
                    // Dropping `members` kills the rest and removes their directories.
                }
            }
        }
        Err(last_err.expect("at least one attempt"))
            .with_context(|| format!("{START_ATTEMPTS} starts of {} failed", spec.name))
    }

    /// The members' client URLs, in member order.
    pub fn client_urls(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// The members' client URLs, in member order, with the TLS to dial them with.
    pub fn endpoints(&self) -> Endpoints {
        Endpoints {
            urls: self.client_urls(),
            tls: self.members[0].client_tls().cloned(),
        }
    }

    /// The running members' process ids.
    pub fn pids(&self) -> Vec<u32> {
        self.members.iter().filter_map(LocalServer::pid).collect()
    }

    /// The index of the member that led when the start finished.
    pub fn leader(&self) -> usize {
        self.leader
    }

    /// The members.
    pub fn members(&self) -> &[LocalServer] {
        &self.members
    }

    /// Asks the members again who leads now (e.g. after a run, to tell whether the leader
    /// changed while it ran).
    pub async fn current_leader(&self) -> Result<usize, LeaderError> {
        leader_index(&leader::statuses(&self.endpoints(), CALL_TIMEOUT).await)
    }
}

async fn spawn_members(spec: &ClusterSpec) -> Result<Vec<LocalServer>> {
    let parent = spec.parent.as_deref();
    if spec.members == 1 {
        // A single node, started exactly as `compare` always started one.
        let server = LocalServer::start_with(
            &spec.binary,
            &spec.name,
            &spec.extra_args,
            parent,
            spec.tls.clone(),
        )
        .await?;
        return Ok(vec![server]);
    }
    let ports = distinct_ports(2 * spec.members, free_port)?;
    let names: Vec<String> = (0..spec.members)
        .map(|i| format!("{}-{i}", spec.name))
        .collect();
    let scheme = if spec.tls.is_some() { "https" } else { "http" };
    let pairs: Vec<(String, String)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let peer_url = format!("{scheme}://127.0.0.1:{}", ports[2 * i + 1]);
            (n.clone(), peer_url)
        })
        .collect();
    let flags = ClusterFlags {
        initial_cluster: initial_cluster(&pairs),
        token: format!("{}-token", spec.name),
    };
    let mut members = Vec::with_capacity(spec.members);
    for (i, name) in names.iter().enumerate() {
        let mut m = LocalServer::new_stopped(
            &spec.binary,
            name,
            &spec.extra_args,
            parent,
            ports[2 * i],
            ports[2 * i + 1],
            Some(flags.clone()),
        )?;
        if let Some(pki) = &spec.tls {
            m = m.with_tls(pki.clone())?;
        }
        m.spawn()?;
        members.push(m);
    }
    Ok(members)
}

/// Waits until every member answers a Range, they agree on a leader, and a Put goes through
/// each; returns the leader's index.
async fn wait_ready(members: &mut [LocalServer]) -> Result<usize> {
    let deadline = Instant::now() + READY_TIMEOUT;
    for m in members.iter_mut() {
        let left = deadline.saturating_duration_since(Instant::now());
        m.wait_ready(left)
            .await
            .with_context(|| format!("member {} did not start", m.name()))?;
    }
    let endpoints = Endpoints {
        urls: members.iter().map(|m| m.client_url.clone()).collect(),
        tls: members[0].client_tls().cloned(),
    };
    loop {
        for m in members.iter_mut() {
            if let Some(status) = m.exited()? {
                bail!(
                    "member {} exited with {status}; log:\n{}",
                    m.name(),
                    m.log_tail()
                );
            }
        }
        let last = match leader_index(&leader::statuses(&endpoints, CALL_TIMEOUT).await) {
            Ok(leader) => match put_through_each(&endpoints).await {
                Ok(()) => return Ok(leader),
                Err(e) => format!("{e:#}"),
            },
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            let logs: Vec<String> = members
                .iter()
                .map(|m| format!("--- {} ---\n{}", m.name(), m.log_tail()))
                .collect();
            return Err(anyhow!(
                "cluster not ready after {READY_TIMEOUT:?}: {last}\n{}",
                logs.join("\n")
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn put_through_each(endpoints: &Endpoints) -> Result<()> {
    for (i, url) in endpoints.urls.iter().enumerate() {
        let pool = Pool::connect_to(&endpoints.one(i), 1).await?;
        let req = PutRequest {
            key: Bytes::from_static(READY_KEY),
            value: Bytes::from(url.clone()),
            ..Default::default()
        };
        tokio::time::timeout(CALL_TIMEOUT, pool.kv(0).put(req))
            .await
            .map_err(|_| anyhow!("a Put through {url} timed out"))?
            .with_context(|| format!("a Put through {url}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_initial_cluster_lists_every_member_in_order() {
        let pairs = vec![
            ("b-0".to_string(), "http://127.0.0.1:5001".to_string()),
            ("b-1".to_string(), "http://127.0.0.1:5003".to_string()),
            ("b-2".to_string(), "http://127.0.0.1:5005".to_string()),
        ];
        assert_eq!(
            initial_cluster(&pairs),
            "b-0=http://127.0.0.1:5001,b-1=http://127.0.0.1:5003,b-2=http://127.0.0.1:5005"
        );
        assert_eq!(initial_cluster(&pairs[..1]), "b-0=http://127.0.0.1:5001");
    }

    #[test]
    fn ports_are_distinct_even_when_the_source_repeats() {
        let mut seq = [7, 7, 8, 7, 9, 8, 10].into_iter();
        let ports = distinct_ports(4, || Ok(seq.next().unwrap())).unwrap();
        assert_eq!(ports, [7, 8, 9, 10]);
        let mut calls = 0;
        let err = distinct_ports(2, || {
            calls += 1;
            Ok(1)
        });
        assert!(err.is_err(), "a source stuck on one port gives up");
        assert_eq!(calls, 32, "after a bounded number of tries");
        assert!(distinct_ports(1, || Err(anyhow!("no sockets"))).is_err());
    }
}
