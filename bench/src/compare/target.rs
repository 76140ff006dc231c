//! What one side of a comparison talks to: a server `compare` starts (`etcd`, `ballast`) or an
//! endpoint list given by the user.
//!
//! Invariant: a started server lives exactly as long as its `Side`, then is stopped.

use std::path::Path;

use anyhow::{anyhow, Result};

use crate::conn::parse_endpoints;
use crate::local_server::LocalServer;

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

/// A side ready to be measured.
pub struct Side {
    pub label: String,
    pub endpoints: Vec<String>,
    server: Option<LocalServer>,
}

impl Side {
    /// The pid of the server this side started, `None` for a user's endpoints.
    pub fn server_pid(&self) -> Option<u32> {
        self.server.as_ref().and_then(LocalServer::pid)
    }
}

/// Starts the server a spec asks for, if any.
pub async fn prepare(
    spec: &TargetSpec,
    etcd_bin: &Path,
    ballast_bin: Option<&Path>,
    name: &str,
) -> Result<Side> {
    let label = spec.label();
    let server = match spec {
        TargetSpec::Etcd => Some(LocalServer::start(etcd_bin, name).await?),
        TargetSpec::Ballast => {
            let bin = ballast_bin.ok_or_else(|| anyhow!("`ballast` needs --ballast-bin PATH"))?;
            Some(LocalServer::start(bin, name).await?)
        }
        TargetSpec::Endpoints(_) => None,
    };
    let endpoints = match (spec, &server) {
        (TargetSpec::Endpoints(e), _) => e.clone(),
        (_, Some(s)) => vec![s.client_url.clone()],
        (_, None) => unreachable!("a started spec has a server"),
    };
    Ok(Side {
        label,
        endpoints,
        server,
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
}
