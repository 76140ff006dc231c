//! ballast-net: the `ballast` server. etcd's v3 gRPC services over tonic, the HTTP endpoints,
//! the command line, and the hop from the async edge to the shard.

#![forbid(unsafe_code)]

pub mod auth;
pub mod authority;
pub(crate) mod bolt;
pub mod compactor;
pub mod context;
pub mod convert;
pub mod flags;
pub mod gateway;
pub mod grpc_metrics;
pub mod http;
pub mod interceptor;
pub mod jwt;
pub mod partition;
pub mod peer;
pub mod process_metrics;
pub mod quota;
pub mod restore;
pub mod router;
pub mod server;
pub mod services;
pub mod snapshot;
pub mod status;
pub mod tls;
pub mod transport_status;
