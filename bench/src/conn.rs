//! gRPC connections to an endpoint list: `--conns` channels spread round-robin over the
//! endpoints, and typed etcd clients handed out round-robin over the channels.
//!
//! Invariants: every channel is connected before a run starts (a wrong endpoint fails fast);
//! at least one channel exists; clients accept messages of any size (a list page of 10 KiB
//! values exceeds tonic's 4 MiB default).

use std::time::Duration;

use anyhow::{bail, Context, Result};
use ballast_proto::etcdserverpb::{
    kv_client::KvClient, lease_client::LeaseClient, maintenance_client::MaintenanceClient,
    watch_client::WatchClient,
};
use tonic::transport::{Channel, Endpoint};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const MESSAGE_BYTES_MAX: usize = 256 * 1024 * 1024;

/// A set of connected channels.
#[derive(Clone, Debug)]
pub struct Pool {
    channels: Vec<Channel>,
    endpoints: Vec<String>,
}

/// `127.0.0.1:2379` → `http://127.0.0.1:2379`; URLs with a scheme are kept.
pub fn normalize_endpoint(endpoint: &str) -> String {
    let e = endpoint.trim();
    if e.contains("://") {
        e.to_string()
    } else {
        format!("http://{e}")
    }
}

/// Splits a comma-separated endpoint list.
pub fn parse_endpoints(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(normalize_endpoint)
        .collect()
}

impl Pool {
    /// Opens `conns` channels over `endpoints`.
    pub async fn connect(endpoints: &[String], conns: usize) -> Result<Pool> {
        if endpoints.is_empty() {
            bail!("no endpoints given");
        }
        let conns = conns.max(1);
        let mut channels = Vec::with_capacity(conns);
        for i in 0..conns {
            let url = normalize_endpoint(&endpoints[i % endpoints.len()]);
            let channel = Endpoint::from_shared(url.clone())
                .with_context(|| format!("bad endpoint {url}"))?
                .tcp_nodelay(true)
                .connect_timeout(CONNECT_TIMEOUT)
                .connect()
                .await
                .with_context(|| format!("connecting to {url}"))?;
            channels.push(channel);
        }
        let endpoints = endpoints.iter().map(|e| normalize_endpoint(e)).collect();
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
    }
}
