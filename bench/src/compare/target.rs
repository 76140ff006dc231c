//! What one side of a comparison talks to: a server `compare` starts (`etcd`, `ballast`; a single
//! node or a cluster of `--members`) or an endpoint list given by the user, and which of its
//! members the clients' connections go to (`--target`).
//!
//! Invariants: started servers live exactly as long as their `Side`, then are stopped (every
//! member); a side's endpoint list is never empty. With `--target all` a started cluster is
//! listed leader first, then the followers in member order, so the connections (handed out
//! round-robin over the list, as etcd's benchmark tool hands out its `--endpoints`) fall the
//! same way whichever member won the election: one connection is the leader's, 16 over 3
//! members are 6 / 5 / 5 with the 6 on the leader. A user's list is kept in the user's order.
//! A started side serves TLS when `--tls` gave a certificate set, and its endpoints carry the
//! client side of it; a user's endpoints carry the workload's `--cacert/--cert/--key`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};

use crate::cli::TargetArg;
use crate::conn::{parse_endpoints, Endpoints};
use crate::leader::{self, leader_index};
use crate::local_cluster::{ClusterSpec, LocalCluster};
use crate::tls::{ClientTls, Pki};

/// How a side is given on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetSpec {
    /// Start the reference etcd from PATH (or `--etcd-bin`).
    Etcd,
    /// Start the Ballast binary given by `--ballast-bin`.
    Ballast,
    /// Use running servers.
    Endpoints(Vec<String>),
}

impl TargetSpec {
    /// `etcd`, `ballast`, or a comma-separated endpoint list.
    pub fn parse(s: &str) -> Result<TargetSpec> {
        match s.trim() {
            "etcd" => Ok(TargetSpec::Etcd),
            "ballast" => Ok(TargetSpec::Ballast),
            other => {
                let eps = parse_endpoints(other);
                if eps.is_empty() {
                    Err(anyhow!("no endpoints in {s:?}"))
                } else {
                    Ok(TargetSpec::Endpoints(eps))
                }
            }
        }
    }

    /// A short label for tables and reports.
    pub fn label(&self) -> String {
        match self {
            TargetSpec::Etcd => "etcd".into(),
            TargetSpec::Ballast => "ballast".into(),
            TargetSpec::Endpoints(e) => e.join(","),
        }
    }
}

/// How `compare` starts servers and picks endpoints, the same for both sides.
#[derive(Clone, Debug)]
pub struct SideOptions {
    pub etcd_bin: PathBuf,
    pub ballast_bin: Option<PathBuf>,
    /// Members per started server.
    pub members: usize,
    pub target: TargetArg,
    pub etcd_args: Vec<String>,
    pub ballast_args: Vec<String>,
    /// Certificates the started servers serve TLS with (`None`: plain http).
    pub tls: Option<Arc<Pki>>,
    /// TLS for a user's endpoints (the workload's --cacert/--cert/--key).
    pub user_tls: Option<ClientTls>,
}

/// A side ready to be measured.
pub struct Side {
    pub label: String,
    /// Where the clients connect, in the order connections are handed out, and with which TLS.
    pub endpoints: Endpoints,
    cluster: Option<LocalCluster>,
}

impl Side {
    /// The pids of the server processes this side started (every member), empty for a user's
    /// endpoints.
    pub fn server_pids(&self) -> Vec<u32> {
        self.cluster
            .as_ref()
            .map(LocalCluster::pids)
            .unwrap_or_default()
    }

    /// For a started cluster whose leader is no longer the one measured from: a sentence
    /// saying so (the endpoints chosen by role no longer hold that role).
    pub async fn leader_change(&self) -> Option<String> {
        let cluster = self.cluster.as_ref()?;
        let was = cluster.leader();
        match cluster.current_leader().await {
            Ok(now) if now == was => None,
            Ok(now) => Some(format!(
                "{}: the leader moved from member {was} to member {now} during the run",
                self.label
            )),
            Err(e) => Some(format!("{}: after the run, {e}", self.label)),
        }
    }
}

/// The endpoints the clients use out of a cluster's client URLs (in member order) whose
/// member `leader` leads. `leader_first` lists the leader first for `all` (a started cluster);
/// otherwise `all` keeps the given order.
pub fn choose_endpoints(
    urls: &[String],
    leader: usize,
    target: TargetArg,
    leader_first: bool,
) -> Result<Vec<String>> {
    if leader >= urls.len() {
        bail!("leader index {leader} out of {} members", urls.len());
    }
    Ok(match target {
        TargetArg::All if leader_first => std::iter::once(leader)
            .chain((0..urls.len()).filter(|&i| i != leader))
            .map(|i| urls[i].clone())
            .collect(),
        TargetArg::All => urls.to_vec(),
        TargetArg::Leader => vec![urls[leader].clone()],
        TargetArg::Follower => {
            let f = (0..urls.len())
                .find(|&i| i != leader)
                .ok_or_else(|| anyhow!("--target follower needs more than one member"))?;
            vec![urls[f].clone()]
        }
    })
}

/// A label for tables: the spec's, with the member count and the target when they are not
/// the single-node defaults, and ` tls` for a started server that serves TLS.
pub fn side_label(spec: &TargetSpec, members: usize, target: TargetArg, tls: bool) -> String {
    let mut label = spec.label();
    if members > 1 && !matches!(spec, TargetSpec::Endpoints(_)) {
        label.push_str(&format!(" x{members}"));
    }
    match target {
        TargetArg::All if members > 1 && !matches!(spec, TargetSpec::Endpoints(_)) => {
            label.push_str(" all")
        }
        TargetArg::All => {}
        TargetArg::Leader => label.push_str(" leader"),
        TargetArg::Follower => label.push_str(" follower"),
    }
    if tls && !matches!(spec, TargetSpec::Endpoints(_)) {
        label.push_str(" tls");
    }
    label
}

/// Starts the servers a spec asks for, if any, and picks the endpoints.
pub async fn prepare(spec: &TargetSpec, opts: &SideOptions, name: &str) -> Result<Side> {
    let label = side_label(spec, opts.members, opts.target, opts.tls.is_some());
    let (binary, extra_args) = match spec {
        TargetSpec::Etcd => (opts.etcd_bin.clone(), opts.etcd_args.clone()),
        TargetSpec::Ballast => (
            opts.ballast_bin
                .clone()
                .ok_or_else(|| anyhow!("`ballast` needs --ballast-bin PATH"))?,
            opts.ballast_args.clone(),
        ),
        TargetSpec::Endpoints(given) => {
            let given = Endpoints {
                urls: given.clone(),
                tls: opts.user_tls.clone(),
            };
            let urls = match opts.target {
                TargetArg::All => given.urls.clone(),
                target => {
                    let statuses = leader::statuses(&given, Duration::from_secs(5)).await;
                    let leader = leader_index(&statuses)
                        .map_err(|e| anyhow!("finding the leader among {:?}: {e}", given.urls))?;
                    choose_endpoints(&given.urls, leader, target, false)?
                }
            };
            let endpoints = Endpoints {
                urls,
                tls: given.tls,
            };
            return Ok(Side {
                label,
                endpoints,
                cluster: None,
            });
        }
    };
    let cluster = LocalCluster::start(&ClusterSpec {
        binary,
        name: name.to_string(),
        members: opts.members.max(1),
        extra_args,
        parent: None,
        tls: opts.tls.clone(),
    })
    .await?;
    let endpoints = Endpoints {
        urls: choose_endpoints(&cluster.client_urls(), cluster.leader(), opts.target, true)?,
        tls: cluster.endpoints().tls,
    };
    Ok(Side {
        label,
        endpoints,
        cluster: Some(cluster),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        assert_eq!(TargetSpec::parse("etcd").unwrap(), TargetSpec::Etcd);
        assert_eq!(TargetSpec::parse("ballast").unwrap(), TargetSpec::Ballast);
        assert_eq!(
            TargetSpec::parse("127.0.0.1:1,127.0.0.1:2").unwrap(),
            TargetSpec::Endpoints(vec![
                "http://127.0.0.1:1".into(),
                "http://127.0.0.1:2".into()
            ])
        );
        assert!(TargetSpec::parse(" , ").is_err());
    }

    fn urls() -> Vec<String> {
        (0..3).map(|i| format!("http://127.0.0.1:{i}")).collect()
    }

    #[test]
    fn all_lists_a_started_clusters_leader_first() {
        let u = urls();
        assert_eq!(
            choose_endpoints(&u, 1, TargetArg::All, true).unwrap(),
            [u[1].clone(), u[0].clone(), u[2].clone()]
        );
        assert_eq!(
            choose_endpoints(&u, 2, TargetArg::All, true).unwrap(),
            [u[2].clone(), u[0].clone(), u[1].clone()]
        );
        assert_eq!(
            choose_endpoints(&u, 1, TargetArg::All, false).unwrap(),
            u,
            "a user's list stays in the user's order"
        );
    }

    #[test]
    fn leader_and_follower_pick_one_member() {
        let u = urls();
        assert_eq!(
            choose_endpoints(&u, 2, TargetArg::Leader, true).unwrap(),
            [u[2].clone()]
        );
        assert_eq!(
            choose_endpoints(&u, 0, TargetArg::Follower, true).unwrap(),
            [u[1].clone()]
        );
        assert_eq!(
            choose_endpoints(&u, 1, TargetArg::Follower, false).unwrap(),
            [u[0].clone()]
        );
        assert!(choose_endpoints(&u[..1], 0, TargetArg::Follower, true).is_err());
        assert!(choose_endpoints(&u, 3, TargetArg::Leader, true).is_err());
    }

    #[test]
    fn labels_say_members_and_target() {
        assert_eq!(
            side_label(&TargetSpec::Etcd, 1, TargetArg::All, false),
            "etcd"
        );
        assert_eq!(
            side_label(&TargetSpec::Ballast, 3, TargetArg::All, false),
            "ballast x3 all"
        );
        assert_eq!(
            side_label(&TargetSpec::Etcd, 3, TargetArg::Leader, false),
            "etcd x3 leader"
        );
        let eps = TargetSpec::Endpoints(vec!["http://h:1".into()]);
        assert_eq!(side_label(&eps, 3, TargetArg::All, false), "http://h:1");
        assert_eq!(
            side_label(&eps, 3, TargetArg::Follower, false),
            "http://h:1 follower"
        );
        assert_eq!(
            side_label(&TargetSpec::Ballast, 3, TargetArg::All, true),
            "ballast x3 all tls"
        );
        assert_eq!(
            side_label(&eps, 1, TargetArg::All, true),
            "http://h:1",
            "a user's endpoints say their scheme themselves"
        );
    }
}
