//! etcd's gRPC interceptors: what a member refuses before a request reaches its service, by
//! what the member is now (its [`Role`]) and what the request asks.
//!
//! - **A learner** serves only Status and serializable Ranges (the KV service checks the
//!   latter, it needs the request's body): every other call, and every stream, is refused with
//!   Unavailable "etcdserver: rpc not supported for learner", so clients go to a voter.
//! - **Require-leader requests**: a client sets the gRPC metadata `hasleader: true`
//!   (clientv3's `WithRequireLeader`, which kube-apiserver puts on its watches) so that a
//!   member cut off from its cluster does not keep it waiting on a stream that will never
//!   carry anything, and it moves to another member. Such a request, unary or a stream's
//!   start, is refused with Unavailable "etcdserver: no leader" while this member has no live
//!   leader (`ballast_consensus::Anchor::has_leader`: shard 0 does not hear from its leader,
//!   or leads without a quorum answering); such a stream already open (a watch, a lease
//!   keep-alive) ends with that status once the member has found no leader at
//!   [`NO_LEADER_CHECKS`] checks in a row, one per election timeout
//!   ([`watch_for_no_leader`]). A request without the metadata is served as before.
//!
//! Invariants: only gRPC requests pass through here (the layer sits on the gRPC routes); the
//! learner check comes first, as in etcd; a stream is ended by its response body, which then
//! drops the service's stream as a client's disconnect does, so the service's own clean-up
//! runs.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use ballast_consensus::Anchor;
use bytes::Bytes;
use http_body::Frame;
use tokio::sync::watch;

/// The metadata key and value of a require-leader request (etcd's `hasleader: true`).
pub const METADATA_KEY: &str = "hasleader";
const METADATA_VALUE: &str = "true";

/// Checks in a row without a leader, one per election timeout, before require-leader streams
/// are ended (etcd's count: it prefers refusing new requests to reconnecting open streams).
pub const NO_LEADER_CHECKS: u32 = 3;

/// What this member is now, as the checks read it.
pub trait Role: Send + Sync {
    /// Whether it has a live leader.
    fn has_leader(&self) -> bool;
    /// Whether it is a learner (a member that replicates without voting).
    fn is_learner(&self) -> bool;
}

/// The member's own answers, from shard 0's replica here.
impl Role for Anchor {
    fn has_leader(&self) -> bool {
        Anchor::has_leader(self)
    }

    fn is_learner(&self) -> bool {
        Anchor::is_learner(self)
    }
}

/// The calls a learner serves (a Range only when serializable, which the KV service checks).
const LEARNER_SERVES: [&str; 2] = ["/etcdserverpb.Maintenance/Status", "/etcdserverpb.KV/Range"];

/// What the layer needs: the member's role, and the count of times open require-leader
/// streams were ended (each new count ends the streams open before it).
#[derive(Clone)]
pub struct Gate {
    role: Arc<dyn Role>,
    endings: watch::Receiver<u64>,
}

impl Gate {
    pub fn new(role: Arc<dyn Role>, endings: watch::Receiver<u64>) -> Gate {
        Gate { role, endings }
    }
}

fn no_leader() -> tonic::Status {
    crate::status::no_leader()
}

/// The layer over the gRPC routes (`axum::middleware::from_fn_with_state`).
pub async fn gate(State(gate): State<Gate>, request: Request, next: Next) -> Response {
    if gate.role.is_learner() && !LEARNER_SERVES.contains(&request.uri().path()) {
        return crate::status::not_supported_for_learner().into_http();
    }
    let wants_leader = request
        .headers()
        .get(METADATA_KEY)
        .is_some_and(|v| v == METADATA_VALUE);
    if !wants_leader {
        return next.run(request).await;
    }
    if !gate.role.has_leader() {
        return no_leader().into_http();
    }
    let mut endings = gate.endings.clone();
    let seen = *endings.borrow_and_update();
    let ended = Box::pin(async move {
        // A closed channel (the server stopping) ends nothing.
        if endings.wait_for(|n| *n > seen).await.is_err() {
            std::future::pending::<()>().await;
        }
    });
    next.run(request).await.map(|body| {
        Body::new(UntilNoLeader {
            inner: body,
            ended,
            finished: false,
        })
    })
}

/// A response body that ends with etcd's "no leader" status when the streams are ended.
struct UntilNoLeader {
    inner: Body,
    ended: Pin<Box<dyn Future<Output = ()> + Send>>,
    finished: bool,
}

impl http_body::Body for UntilNoLeader {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if self.finished {
            return Poll::Ready(None);
        }
        if self.ended.as_mut().poll(cx).is_ready() {
            self.finished = true;
            return Poll::Ready(Some(Ok(Frame::trailers(no_leader_trailers()))));
        }
        let frame = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None | Some(Err(_))) = &frame {
            self.finished = true;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.finished
    }

    fn size_hint(&self) -> http_body::SizeHint {
        if self.finished {
            http_body::SizeHint::with_exact(0)
        } else {
            http_body::SizeHint::default()
        }
    }
}

/// The trailers of a gRPC stream ended with Unavailable "etcdserver: no leader".
fn no_leader_trailers() -> HeaderMap {
    let mut trailers = HeaderMap::new();
    no_leader()
        .add_header(&mut trailers)
        .expect("a status of printable ASCII");
    trailers
}

/// Checks for a leader once per `election_timeout` until `stop`; after [`NO_LEADER_CHECKS`]
/// checks in a row found none, and at every check after while none is found, ends the
/// require-leader streams open then.
pub async fn watch_for_no_leader(
    role: Arc<dyn Role>,
    election_timeout: Duration,
    endings: watch::Sender<u64>,
    stop: impl Future<Output = ()>,
) {
    let mut stop = std::pin::pin!(stop);
    let mut without = 0u32;
    loop {
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(election_timeout) => {}
        }
        if role.has_leader() {
            without = 0;
            continue;
        }
        without = without.saturating_add(1);
        if without >= NO_LEADER_CHECKS {
            tracing::warn!(
                checks = without,
                "no leader: ending the streams that require one"
            );
            endings.send_modify(|n| *n += 1);
        }
    }
}

#[cfg(test)]
mod tests;
