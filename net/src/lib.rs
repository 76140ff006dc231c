//! ballast-net: the etcd v3 server.
