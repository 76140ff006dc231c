//! gRPC server metrics as etcd exposes them (go-grpc-prometheus): `grpc_server_started_total`,
//! `grpc_server_handled_total`, `grpc_server_msg_received_total`, `grpc_server_msg_sent_total`,
//! labelled `grpc_type`, `grpc_service`, `grpc_method` (and `grpc_code` on handled).
//!
//! A layer on the gRPC router ([`layer`]) counts each call: started when the request arrives;
//! messages received and sent as the gRPC frames pass through the request and response bodies
//! (a unary call that fails sends none, as in etcd); handled once, with the `grpc-status` the
//! call ended with (in the response headers of a trailers-only answer, else in the trailers;
//! a stream the client dropped before its trailers counts as `Canceled`).
//!
//! The same layer counts the bytes of the messages (without gRPC's 5-byte prefixes) in
//! `etcd_network_client_grpc_received_bytes_total` and `etcd_network_client_grpc_sent_bytes_total`,
//! as etcd's gRPC codec counts what it unmarshals and marshals, as the bytes pass.
//!
//! Invariants: no lock on the request path. The counters are a fixed table of atomics, one row
//! per method, built once; the path-to-row map is read-only after that. Methods etcd
//! registers are shown from the start with zeros, as etcd pre-registers them; the lock and
//! election methods (which etcd registers after its metrics, so shows only once called) are
//! shown once started. A path not in the table is not counted.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Buf;
use http_body::{Body as HttpBody, Frame, SizeHint};

/// gRPC status codes by number, with the names go-grpc-prometheus writes.
pub const CODES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

const CANCELED: usize = 1;
const UNKNOWN: usize = 2;

/// One served method: service, method, `grpc_type`, and whether etcd shows it from the start.
struct Method {
    service: &'static str,
    method: &'static str,
    kind: &'static str,
    preset: bool,
}

const fn m(service: &'static str, method: &'static str, kind: &'static str) -> Method {
    Method {
        service,
        method,
        kind,
        preset: true,
    }
}

const fn late(service: &'static str, method: &'static str, kind: &'static str) -> Method {
    Method {
        service,
        method,
        kind,
        preset: false,
    }
}

const UNARY: &str = "unary";
const KV: &str = "etcdserverpb.KV";
const LEASE: &str = "etcdserverpb.Lease";
const CLUSTER: &str = "etcdserverpb.Cluster";
const MAINTENANCE: &str = "etcdserverpb.Maintenance";
const AUTH: &str = "etcdserverpb.Auth";
const LOCK: &str = "v3lockpb.Lock";
const ELECTION: &str = "v3electionpb.Election";

/// The gRPC methods Ballast serves (`server.rs` `routes`).
const METHODS: [Method; 46] = [
    m(KV, "Range", UNARY),
    m(KV, "Put", UNARY),
    m(KV, "DeleteRange", UNARY),
    m(KV, "Txn", UNARY),
    m(KV, "Compact", UNARY),
    m("etcdserverpb.Watch", "Watch", "bidi_stream"),
    m(LEASE, "LeaseGrant", UNARY),
    m(LEASE, "LeaseRevoke", UNARY),
    m(LEASE, "LeaseKeepAlive", "bidi_stream"),
    m(LEASE, "LeaseTimeToLive", UNARY),
    m(LEASE, "LeaseLeases", UNARY),
    m(CLUSTER, "MemberAdd", UNARY),
    m(CLUSTER, "MemberRemove", UNARY),
    m(CLUSTER, "MemberUpdate", UNARY),
    m(CLUSTER, "MemberList", UNARY),
    m(CLUSTER, "MemberPromote", UNARY),
    m(MAINTENANCE, "Alarm", UNARY),
    m(MAINTENANCE, "Status", UNARY),
    m(MAINTENANCE, "Defragment", UNARY),
    m(MAINTENANCE, "Hash", UNARY),
    m(MAINTENANCE, "HashKV", UNARY),
    m(MAINTENANCE, "Snapshot", "server_stream"),
    m(MAINTENANCE, "MoveLeader", UNARY),
    m(AUTH, "AuthEnable", UNARY),
    m(AUTH, "AuthDisable", UNARY),
    m(AUTH, "Authenticate", UNARY),
    m(AUTH, "UserAdd", UNARY),
    m(AUTH, "UserGet", UNARY),
    m(AUTH, "UserList", UNARY),
    m(AUTH, "UserDelete", UNARY),
    m(AUTH, "UserChangePassword", UNARY),
    m(AUTH, "UserGrantRole", UNARY),
    m(AUTH, "UserRevokeRole", UNARY),
    m(AUTH, "RoleAdd", UNARY),
    m(AUTH, "RoleGet", UNARY),
    m(AUTH, "RoleList", UNARY),
    m(AUTH, "RoleDelete", UNARY),
    m(AUTH, "RoleGrantPermission", UNARY),
    m(AUTH, "RoleRevokePermission", UNARY),
    late(LOCK, "Lock", UNARY),
    late(LOCK, "Unlock", UNARY),
    late(ELECTION, "Campaign", UNARY),
    late(ELECTION, "Proclaim", UNARY),
    late(ELECTION, "Leader", UNARY),
    late(ELECTION, "Observe", "server_stream"),
    late(ELECTION, "Resign", UNARY),
];

/// Picks one counter of a [`Row`].
type Field = fn(&Row) -> &AtomicU64;

#[derive(Default)]
struct Row {
    started: AtomicU64,
    received: AtomicU64,
    sent: AtomicU64,
    handled: [AtomicU64; CODES.len()],
}

/// The counters of every method, shared by the gRPC layer and `/metrics`.
pub struct GrpcMetrics {
    rows: Vec<Row>,
    by_path: HashMap<String, usize>,
    /// Message bytes from clients and to them, every method together.
    received_bytes: AtomicU64,
    sent_bytes: AtomicU64,
}

impl Default for GrpcMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl GrpcMetrics {
    pub fn new() -> GrpcMetrics {
        let by_path = METHODS
            .iter()
            .enumerate()
            .map(|(i, m)| (format!("/{}/{}", m.service, m.method), i))
            .collect();
        GrpcMetrics {
            rows: METHODS.iter().map(|_| Row::default()).collect(),
            by_path,
            received_bytes: AtomicU64::new(0),
            sent_bytes: AtomicU64::new(0),
        }
    }

    fn row(&self, path: &str) -> Option<usize> {
        self.by_path.get(path).copied()
    }

    fn handled(&self, row: usize, code: usize) {
        self.rows[row].handled[code.min(CODES.len() - 1)].fetch_add(1, Ordering::Relaxed);
    }

    /// etcd's two client byte counters, with etcd 3.4.23's help texts.
    pub fn bytes_exposition(&self) -> String {
        let mut out = String::new();
        for (name, help, n) in [
            (
                "etcd_network_client_grpc_received_bytes_total",
                "The total number of bytes received from grpc clients.",
                &self.received_bytes,
            ),
            (
                "etcd_network_client_grpc_sent_bytes_total",
                "The total number of bytes sent to grpc clients.",
                &self.sent_bytes,
            ),
        ] {
            let n = n.load(Ordering::Relaxed);
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {n}\n"
            ));
        }
        out
    }

    /// The four families in Prometheus text, with go-grpc-prometheus's help texts.
    pub fn exposition(&self) -> String {
        let mut out = String::new();
        let shown: Vec<(&Method, &Row)> = METHODS
            .iter()
            .zip(&self.rows)
            .filter(|(m, r)| m.preset || r.started.load(Ordering::Relaxed) > 0)
            .collect();
        let labels = |m: &Method| {
            format!(
                "grpc_method=\"{}\",grpc_service=\"{}\",grpc_type=\"{}\"",
                m.method, m.service, m.kind
            )
        };
        let families: [(&str, &str, Field); 3] = [
            (
                "grpc_server_started_total",
                "Total number of RPCs started on the server.",
                |r| &r.started,
            ),
            (
                "grpc_server_msg_received_total",
                "Total number of RPC stream messages received on the server.",
                |r| &r.received,
            ),
            (
                "grpc_server_msg_sent_total",
                "Total number of gRPC stream messages sent by the server.",
                |r| &r.sent,
            ),
        ];
        for (name, help, field) in families {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n"));
            for (m, r) in &shown {
                let value = field(r).load(Ordering::Relaxed);
                out.push_str(&format!("{name}{{{}}} {value}\n", labels(m)));
            }
        }
        let name = "grpc_server_handled_total";
        out.push_str(&format!(
            "# HELP {name} Total number of RPCs completed on the server, regardless of success \
             or failure.\n# TYPE {name} counter\n"
        ));
        for (m, r) in &shown {
            for (code, n) in CODES.iter().zip(&r.handled) {
                let value = n.load(Ordering::Relaxed);
                out.push_str(&format!(
                    "{name}{{grpc_code=\"{code}\",{}}} {value}\n",
                    labels(m)
                ));
            }
        }
        out
    }
}

/// The middleware: counts the call, and wraps both bodies to count their messages and see the
/// call's status.
pub async fn layer(State(metrics): State<Arc<GrpcMetrics>>, req: Request, next: Next) -> Response {
    let Some(row) = metrics.row(req.uri().path()) else {
        return next.run(req).await;
    };
    metrics.rows[row].started.fetch_add(1, Ordering::Relaxed);
    let req = req.map(|body| {
        Body::new(Counted {
            inner: body,
            frames: FrameCounter::default(),
            metrics: metrics.clone(),
            row,
            side: Side::Received,
        })
    });
    let response = next.run(req).await;
    if let Some(code) = status_of(response.headers()) {
        // Trailers-only: the call ended before any message.
        metrics.handled(row, code);
        return response;
    }
    response.map(|body| {
        Body::new(Counted {
            inner: body,
            frames: FrameCounter::default(),
            metrics,
            row,
            side: Side::Sent { handled: false },
        })
    })
}

fn status_of(headers: &axum::http::HeaderMap) -> Option<usize> {
    let value = headers.get("grpc-status")?;
    Some(
        value
            .to_str()
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|&c| c < CODES.len())
            .unwrap_or(UNKNOWN),
    )
}

/// Counts gRPC messages in a body's bytes: each is a 5-byte prefix (compressed flag, 4-byte
/// big-endian length) and that many bytes, and may be split over any number of chunks.
#[derive(Default)]
struct FrameCounter {
    prefix: [u8; 5],
    prefix_len: usize,
    remaining: u64,
}

impl FrameCounter {
    /// Messages whose prefix is complete in `chunk`, and the bytes of message bodies in it.
    fn feed(&mut self, mut chunk: &[u8]) -> (u64, u64) {
        let mut messages = 0;
        let mut body_bytes = 0;
        while !chunk.is_empty() {
            if self.remaining > 0 {
                let skip = usize::try_from(self.remaining)
                    .unwrap_or(usize::MAX)
                    .min(chunk.len());
                self.remaining -= skip as u64;
                body_bytes += skip as u64;
                chunk = &chunk[skip..];
                continue;
            }
            let take = (5 - self.prefix_len).min(chunk.len());
            self.prefix[self.prefix_len..self.prefix_len + take].copy_from_slice(&chunk[..take]);
            self.prefix_len += take;
            chunk = &chunk[take..];
            if self.prefix_len == 5 {
                messages += 1;
                self.prefix_len = 0;
                let len = [
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ];
                self.remaining = u64::from(u32::from_be_bytes(len));
            }
        }
        (messages, body_bytes)
    }
}

enum Side {
    Received,
    Sent { handled: bool },
}

/// A request or response body that counts the messages passing through it.
struct Counted {
    inner: Body,
    frames: FrameCounter,
    metrics: Arc<GrpcMetrics>,
    row: usize,
    side: Side,
}

impl HttpBody for Counted {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            let row = &this.metrics.rows[this.row];
            if let Some(data) = frame.data_ref() {
                let (n, bytes) = this.frames.feed(data.chunk());
                let (counter, byte_counter) = match this.side {
                    Side::Received => (&row.received, &this.metrics.received_bytes),
                    Side::Sent { .. } => (&row.sent, &this.metrics.sent_bytes),
                };
                if n > 0 {
                    counter.fetch_add(n, Ordering::Relaxed);
                }
                if bytes > 0 {
                    byte_counter.fetch_add(bytes, Ordering::Relaxed);
                }
            } else if let (Some(trailers), Side::Sent { handled }) =
                (frame.trailers_ref(), &mut this.side)
            {
                if !*handled {
                    *handled = true;
                    let code = status_of(trailers).unwrap_or(UNKNOWN);
                    this.metrics.handled(this.row, code);
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        // A response dropped before its trailers: the client went away mid-call.
        if let Side::Sent { handled: false } = self.side {
            self.metrics.handled(self.row, CANCELED);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_counted_across_any_split_of_the_bytes() {
        let mut bytes = Vec::new();
        for body in [&b"abc"[..], b"", &[7u8; 300]] {
            bytes.push(0);
            bytes.extend_from_slice(&(body.len() as u32).to_be_bytes());
            bytes.extend_from_slice(body);
        }
        for split in 1..bytes.len() {
            let mut c = FrameCounter::default();
            let (n, body) = bytes
                .chunks(split)
                .map(|chunk| c.feed(chunk))
                .fold((0, 0), |(n, b), (m, c)| (n + m, b + c));
            assert_eq!((n, body), (3, 303), "chunks of {split}");
            assert_eq!((c.prefix_len, c.remaining), (0, 0));
        }
    }

    #[test]
    fn exposition_has_etcds_families_labels_and_every_code_for_etcds_methods() {
        let g = GrpcMetrics::new();
        let put = g.row("/etcdserverpb.KV/Put").expect("put");
        g.rows[put].started.fetch_add(3, Ordering::Relaxed);
        g.rows[put].received.fetch_add(3, Ordering::Relaxed);
        g.rows[put].sent.fetch_add(2, Ordering::Relaxed);
        g.handled(put, 0);
        g.handled(put, 0);
        g.handled(put, 9);
        let text = g.exposition();
        let labels = "grpc_method=\"Put\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"";
        for line in [
            "# TYPE grpc_server_started_total counter".to_string(),
            "# TYPE grpc_server_handled_total counter".to_string(),
            "# TYPE grpc_server_msg_received_total counter".to_string(),
            "# TYPE grpc_server_msg_sent_total counter".to_string(),
            format!("grpc_server_started_total{{{labels}}} 3"),
            format!("grpc_server_msg_received_total{{{labels}}} 3"),
            format!("grpc_server_msg_sent_total{{{labels}}} 2"),
            format!("grpc_server_handled_total{{grpc_code=\"OK\",{labels}}} 2"),
            format!("grpc_server_handled_total{{grpc_code=\"FailedPrecondition\",{labels}}} 1"),
            format!("grpc_server_handled_total{{grpc_code=\"Unauthenticated\",{labels}}} 0"),
            "grpc_server_started_total{grpc_method=\"Watch\",grpc_service=\"etcdserverpb.Watch\",\
             grpc_type=\"bidi_stream\"} 0"
                .to_string(),
        ] {
            assert!(text.lines().any(|l| l == line), "{line}");
        }
        // etcd's 39 methods (health aside), each with 17 codes; lock and election not yet.
        let handled = text
            .lines()
            .filter(|l| l.starts_with("grpc_server_handled_total{"))
            .count();
        assert_eq!(handled, 39 * 17);
        assert!(!text.contains("v3lockpb"));
        let lock = g.row("/v3lockpb.Lock/Lock").expect("lock");
        g.rows[lock].started.fetch_add(1, Ordering::Relaxed);
        assert!(g.exposition().contains(
            "grpc_server_started_total{grpc_method=\"Lock\",grpc_service=\"v3lockpb.Lock\",\
             grpc_type=\"unary\"} 1\n"
        ));
    }
}
