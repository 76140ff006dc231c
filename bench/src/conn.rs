//! gRPC connections to an endpoint list: `--conns` channels spread round-robin over the
//! endpoints, and typed etcd clients handed out round-robin over the channels.
//!
//! Invariants: every channel is connected before a run starts (a wrong endpoint fails fast);
//! at least one channel exists; clients accept messages of any size (a list page of 10 KiB
//! values exceeds tonic's 4 MiB default). `https://` endpoints are dialled over TLS with the
//! pool's [`ClientTls`] (and refused without one); a scheme-less endpoint is `https://` when
//! TLS is given, `http://` otherwise, as etcdctl reads its `--endpoints`.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use ballast_proto::etcdserverpb::{
    kv_client::KvClient, lease_client::LeaseClient, maintenance_client::MaintenanceClient,
    watch_client::WatchClient,
};
use tonic::transport::{Channel, Endpoint};

use crate::tls::ClientTls;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const MESSAGE_BYTES_MAX: usize = 256 * 1024 * 1024;

/// A set of connected channels.
#[derive(Clone, Debug)]
pub struct Pool {
    channels: Vec<Channel>,
    endpoints: Vec<String>,
}

/// Endpoints and the TLS to dial their `https://` URLs with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Endpoints {
    /// URLs with their scheme.
    pub urls: Vec<String>,
    pub tls: Option<ClientTls>,
}

impl Endpoints {
    /// Plain endpoints (scheme-less ones become `http://`).
    pub fn plain(urls: &[String]) -> Endpoints {
        Endpoints {
            urls: urls.iter().map(|u| normalize_endpoint(u)).collect(),
            tls: None,
        }
    }

    /// A comma-separated list; scheme-less entries become `https://` when `tls` is given.
    pub fn parse(list: &str, tls: Option<ClientTls>) -> Endpoints {
        Endpoints {
            urls: parse_endpoints_with(list, tls.is_some()),
            tls,
        }
    }

    /// One of them, with the same TLS.
    pub fn one(&self, i: usize) -> Endpoints {
        Endpoints {
            urls: vec![self.urls[i].clone()],
            tls: self.tls.clone(),
        }
    }
}

/// `127.0.0.1:2379` → `http://127.0.0.1:2379`; URLs with a scheme are kept.
pub fn normalize_endpoint(endpoint: &str) -> String {
    normalize_endpoint_with(endpoint, false)
}

/// `127.0.0.1:2379` → `https://127.0.0.1:2379` when `tls`, else `http://`; URLs with a scheme
/// are kept.
pub fn normalize_endpoint_with(endpoint: &str, tls: bool) -> String {
    let e = endpoint.trim();
    if e.contains("://") {
        e.to_string()
    } else if tls {
        format!("https://{e}")
    } else {
        format!("http://{e}")
    }
}

/// Splits a comma-separated endpoint list (scheme-less entries become `http://`).
pub fn parse_endpoints(list: &str) -> Vec<String> {
    parse_endpoints_with(list, false)
}

/// Splits a comma-separated endpoint list; scheme-less entries become `https://` when `tls`.
pub fn parse_endpoints_with(list: &str, tls: bool) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|e| normalize_endpoint_with(e, tls))
        .collect()
}

impl Pool {
    /// Opens `conns` channels over plain `endpoints`.
    pub async fn connect(endpoints: &[String], conns: usize) -> Result<Pool> {
        Pool::connect_to(&Endpoints::plain(endpoints), conns).await
    }

    /// Opens `conns` channels over `endpoints`, the `https://` ones over TLS.
    pub async fn connect_to(endpoints: &Endpoints, conns: usize) -> Result<Pool> {
        if endpoints.urls.is_empty() {
            bail!("no endpoints given");
        }
        let conns = conns.max(1);
        let mut channels = Vec::with_capacity(conns);
        for i in 0..conns {
            let url = normalize_endpoint(&endpoints.urls[i % endpoints.urls.len()]);
            let mut endpoint = Endpoint::from_shared(url.clone())
                .with_context(|| format!("bad endpoint {url}"))?
                .tcp_nodelay(true)
                .connect_timeout(CONNECT_TIMEOUT);
            if url.starts_with("https://") {
                let Some(tls) = &endpoints.tls else {
                    bail!("{url} needs TLS: give --cacert (and --cert/--key)");
                };
                endpoint = endpoint
                    .tls_config(tls.config())
                    .with_context(|| format!("TLS for {url}"))?;
            }
            let channel = endpoint
                .connect()
                .await
                .with_context(|| format!("connecting to {url}"))?;
            channels.push(channel);
        }
        let endpoints = endpoints
            .urls
            .iter()
            .map(|e| normalize_endpoint(e))
            .collect();
        Ok(Pool {
            channels,
            endpoints,
        })
    }

    /// Number of channels.
    pub fn conns(&self) -> usize {
        self.channels.len()
    }

    /// The endpoints, normalized.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    fn channel(&self, i: usize) -> Channel {
        self.channels[i % self.channels.len()].clone()
    }

    /// A KV client on channel `i % conns`.
    pub fn kv(&self, i: usize) -> KvClient<Channel> {
        KvClient::new(self.channel(i))
            .max_decoding_message_size(MESSAGE_BYTES_MAX)
            .max_encoding_message_size(MESSAGE_BYTES_MAX)
    }

    /// A Watch client on channel `i % conns`.
    pub fn watch(&self, i: usize) -> WatchClient<Channel> {
        WatchClient::new(self.channel(i))
            .max_decoding_message_size(MESSAGE_BYTES_MAX)
            .max_encoding_message_size(MESSAGE_BYTES_MAX)
    }

    /// A Lease client on channel `i % conns`.
    pub fn lease(&self, i: usize) -> LeaseClient<Channel> {
        LeaseClient::new(self.channel(i))
    }

    /// A Maintenance client on channel `i % conns` (Status: who leads).
    pub fn maintenance(&self, i: usize) -> MaintenanceClient<Channel> {
        MaintenanceClient::new(self.channel(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_normalized() {
        assert_eq!(
            parse_endpoints("127.0.0.1:2379, http://h:1 ,,https://x:2"),
            vec!["http://127.0.0.1:2379", "http://h:1", "https://x:2"]
        );
        assert_eq!(
            parse_endpoints_with("127.0.0.1:2379,http://h:1", true),
            vec!["https://127.0.0.1:2379", "http://h:1"],
            "etcdctl: TLS flags make a bare host:port https"
        );
    }

    #[tokio::test]
    async fn an_https_endpoint_without_tls_is_refused_before_dialling() {
        let err = Pool::connect(&["https://127.0.0.1:1".to_string()], 1)
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("needs TLS"), "{err:#}");
    }
}
