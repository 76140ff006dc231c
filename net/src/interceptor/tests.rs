use std::sync::atomic::{AtomicBool, Ordering};

use axum::routing::get;
use futures::StreamExt as _;
use http_body::Body as _;
use tower::ServiceExt;

use super::*;

/// A member whose role the test switches.
#[derive(Default)]
struct Switches {
    leader: AtomicBool,
    learner: AtomicBool,
}

impl Role for Switches {
    fn has_leader(&self) -> bool {
        self.leader.load(Ordering::SeqCst)
    }

    fn is_learner(&self) -> bool {
        self.learner.load(Ordering::SeqCst)
    }
}

fn switch(leader: bool) -> Arc<Switches> {
    let role = Switches::default();
    role.leader.store(leader, Ordering::SeqCst);
    Arc::new(role)
}

/// A router whose one route streams one chunk, then nothing more (an open watch), and whose
/// every other path answers "served", behind the gate.
fn app(gate_state: Gate) -> axum::Router {
    axum::Router::new()
        .route(
            "/stream",
            get(|| async {
                let chunks =
                    futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"event"))])
                        .chain(futures::stream::pending());
                Body::from_stream(chunks)
            }),
        )
        .fallback(|| async { "served" })
        .layer(axum::middleware::from_fn_with_state(gate_state, gate))
}

fn request(require_leader: bool) -> Request {
    call("/stream", require_leader)
}

fn call(path: &str, require_leader: bool) -> Request {
    let mut builder = axum::http::Request::builder().uri(path);
    if require_leader {
        builder = builder.header(METADATA_KEY, "true");
    }
    builder.body(Body::empty()).expect("request")
}

/// The headers or trailers carry etcd's Unavailable "etcdserver: no leader".
fn assert_no_leader(headers: &HeaderMap) {
    assert_unavailable(headers, "etcdserver: no leader");
}

fn assert_unavailable(headers: &HeaderMap, message: &str) {
    let status = tonic::Status::from_header_map(headers).expect("a gRPC status");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(status.message(), message);
}

async fn next_frame(body: &mut Body) -> Option<Frame<Bytes>> {
    let frame = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx));
    tokio::time::timeout(Duration::from_secs(5), frame)
        .await
        .expect("a frame in time")
        .map(|f| f.expect("no body error"))
}

#[tokio::test]
async fn without_a_leader_only_require_leader_requests_are_refused() {
    let role = switch(false);
    let (_tx, rx) = watch::channel(0);
    let refused = app(Gate::new(role.clone(), rx.clone()))
        .oneshot(request(true))
        .await
        .expect("answer");
    assert_no_leader(refused.headers());

    let served = app(Gate::new(role, rx))
        .oneshot(request(false))
        .await
        .expect("answer");
    assert!(served.headers().get("grpc-status").is_none());
    let mut body = served.into_body();
    let first = next_frame(&mut body).await.expect("a frame");
    assert_eq!(
        first.into_data().expect("data"),
        Bytes::from_static(b"event")
    );
}

#[tokio::test]
async fn an_open_require_leader_stream_ends_with_no_leader_when_streams_are_ended() {
    let role = switch(true);
    let (tx, rx) = watch::channel(0);
    let required = app(Gate::new(role.clone(), rx.clone()))
        .oneshot(request(true))
        .await
        .expect("answer");
    let plain = app(Gate::new(role, rx))
        .oneshot(request(false))
        .await
        .expect("answer");
    let mut required = required.into_body();
    let mut plain = plain.into_body();
    assert!(next_frame(&mut required).await.expect("frame").is_data());
    assert!(next_frame(&mut plain).await.expect("frame").is_data());

    tx.send_modify(|n| *n += 1);
    let trailers = next_frame(&mut required)
        .await
        .expect("a frame")
        .into_trailers()
        .expect("trailers");
    assert_no_leader(&trailers);
    assert!(next_frame(&mut required).await.is_none(), "ended");
    assert!(required.is_end_stream());
    // The stream without the metadata stays open.
    let still = std::future::poll_fn(|cx| Pin::new(&mut plain).poll_frame(cx));
    assert!(tokio::time::timeout(Duration::from_millis(50), still)
        .await
        .is_err());
}

#[tokio::test(start_paused = true)]
async fn streams_are_ended_after_three_checks_in_a_row_without_a_leader() {
    let election = Duration::from_secs(1);
    let role = switch(true);
    let flag = |on: bool| role.leader.store(on, Ordering::SeqCst);
    let (tx, rx) = watch::channel(0u64);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let watcher = tokio::spawn(watch_for_no_leader(
        role.clone(),
        election,
        tx,
        async move {
            let _ = stop_rx.await;
        },
    ));
    let endings = || *rx.borrow();
    // Checks at 1 s, 2 s, 3 s, ...; half a second past each one is after it.
    let start = tokio::time::Instant::now();
    let after_check = |n: u32| tokio::time::sleep_until(start + election * n + election / 2);
    after_check(2).await;
    flag(false);
    // No leader at the checks of 3 s and 4 s: not yet.
    after_check(4).await;
    assert_eq!(endings(), 0);
    // The third check in a row ends the streams, and so does every one after while none.
    after_check(5).await;
    assert_eq!(endings(), 1);
    after_check(6).await;
    assert_eq!(endings(), 2);
    // A leader found resets the count.
    flag(true);
    after_check(7).await;
    flag(false);
    after_check(9).await;
    assert_eq!(endings(), 2);
    after_check(10).await;
    assert_eq!(endings(), 3);
    stop_tx.send(()).expect("watcher running");
    watcher.await.expect("watcher stops");
}

#[tokio::test]
async fn a_learner_serves_status_and_ranges_only() {
    let role = switch(true);
    role.learner.store(true, Ordering::SeqCst);
    let (_tx, rx) = watch::channel(0);
    let answer = |path: &'static str| {
        let gate_state = Gate::new(role.clone(), rx.clone());
        async move {
            app(gate_state)
                .oneshot(call(path, false))
                .await
                .expect("answer")
        }
    };
    for path in LEARNER_SERVES {
        let served = answer(path).await;
        assert!(served.headers().get("grpc-status").is_none(), "{path}");
    }
    for path in [
        "/etcdserverpb.KV/Put",
        "/etcdserverpb.KV/Txn",
        "/etcdserverpb.Watch/Watch",
        "/etcdserverpb.Lease/LeaseKeepAlive",
        "/etcdserverpb.Cluster/MemberList",
        "/stream",
    ] {
        let refused = answer(path).await;
        assert_unavailable(
            refused.headers(),
            "etcdserver: rpc not supported for learner",
        );
    }
    // Once a voter, everything is served.
    role.learner.store(false, Ordering::SeqCst);
    let served = answer("/etcdserverpb.KV/Put").await;
    assert!(served.headers().get("grpc-status").is_none());
}
