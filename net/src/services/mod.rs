//! The etcd v3 gRPC services, one file each. Handlers validate (etcd's API-layer checks),
//! convert to the engine's types, call the shard, and convert back with a filled header.

pub mod auth;
pub mod cluster;
pub mod concurrency;
pub mod election;
pub mod kv;
pub mod lease;
pub mod lock;
pub mod maintenance;
pub mod watch;
pub mod watch_merge;
