//! The peer transport: the hello, every failure a message can meet (unreachable, another
//! cluster, a silent peer, a connection lost after sending), TLS between members (only
//! certificates the cluster's CA signed, and the allowed CN, get through), and three in-process nodes whose
//! in-memory shards form one Raft group over real connections on 127.0.0.1: they elect a
//! leader, replicate, followers forward writes to it and serve linearizable reads themselves
//! after its read index (forwarding them to a leader that does not know the read index, as an
//! older member would not). A member that
//! joins after the leader purged its log catches up through a snapshot (in memory, and on
//! disk with a restart after the install) and then answers exactly as the leader.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use ballast_consensus::{
    ClusterConfig, Reply, Request, Response, ShardConfig, ShardError, ShardHandle, ShardId,
};
use ballast_engine::{PutRequest, RangeRequest};

use super::*;

fn hello(cluster_id: u64, member_id: u64) -> Hello {
    Hello {
        cluster_id,
        member_id,
        name: format!("n{member_id}"),
        client_urls: vec![format!("http://127.0.0.1:{}", 2379 + member_id)],
    }
}

#[test]
fn hello_round_trips_and_refuses_garbage() {
    let h = hello(7, 3);
    let bytes = h.encode();
    assert_eq!(Hello::decode(bytes.clone()).unwrap(), h);
    for len in 0..bytes.len() {
        assert!(Hello::decode(bytes.slice(..len)).is_err(), "prefix {len}");
    }
    let mut longer = BytesMut::from(&bytes[..]);
    longer.put_u8(0);
    assert!(Hello::decode(longer.freeze()).is_err());
    assert!(Hello::decode(Bytes::from_static(b"GET / HTTP/1.1\r\n")).is_err());
}

async fn send(
    tx: &flume::Sender<Outbound>,
    addr: &str,
    kind: PeerKind,
    body: Bytes,
    timeout: Duration,
) -> Result<Bytes, PeerFailure> {
    let (reply, answer) = oneshot::channel();
    tx.send_async(Outbound {
        addr: addr.to_owned(),
        shard: ShardId(0),
        kind,
        body,
        timeout,
        reply,
    })
    .await
    .unwrap();
    tokio::time::timeout(timeout + Duration::from_secs(5), answer)
        .await
        .expect("every message is answered")
        .unwrap()
}

fn hub_with_channel(me: Hello) -> (Arc<PeerHub>, flume::Sender<Outbound>) {
    hub_with_tls(me, PeerTls::default())
}

#[tokio::test]
async fn unreachable_peer_and_another_cluster_are_told_apart() {
    let (_hub, tx) = hub_with_channel(hello(1, 1));
    // Nobody listens on a port just released.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("http://127.0.0.1:{port}");
    let failure = send(
        &tx,
        &addr,
        PeerKind::Vote,
        Bytes::new(),
        Duration::from_secs(1),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(failure, PeerFailure::Unreachable { .. }),
        "{failure}"
    );
    // A node of cluster 2 does not take cluster 1's messages.
    let other = PeerHub::new(hello(2, 9), PeerTls::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve(
        listener,
        other,
        ShardSlot::default(),
        std::future::pending(),
    ));
    let failure = send(
        &tx,
        &addr,
        PeerKind::Vote,
        Bytes::new(),
        Duration::from_secs(1),
    )
    .await
    .unwrap_err();
    match failure {
        PeerFailure::Unreachable { why, .. } => assert!(why.contains("cluster 2"), "{why}"),
        other => panic!("{other}"),
    }
}

/// A fake peer: says hello as a member of cluster 1, reads one request, then either keeps
/// silent or closes the connection.
async fn fake_peer(close_after_request: bool) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (r, mut w) = stream.into_split();
        let mut r = BufReader::new(r);
        read_frame(&mut r).await.unwrap();
        write_frame(&mut w, &[&hello(1, 5).encode()]).await.unwrap();
        w.flush().await.unwrap();
        read_frame(&mut r).await.unwrap();
        if close_after_request {
            drop((r, w));
        } else {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
    });
    addr
}

/// Peer TLS as `flags` (etcd's `--peer-*` flags) configure it, listening on `https://`.
fn peer_tls(flags: &[String]) -> PeerTls {
    let mut args: Vec<String> = std::iter::once("ballast")
        .chain(crate::tls::tests::HTTPS_PEER)
        .map(str::to_owned)
        .collect();
    args.extend(flags.iter().cloned());
    let cl = crate::flags::parse(args).unwrap();
    let protocol = crate::tls::Protocol::from_config(&cl.config, &cl.flags).unwrap();
    let data = tempfile::tempdir().unwrap();
    PeerTls::from_config(&cl.config, &cl.flags, &protocol, data.path()).unwrap()
}

fn member_flags(pki: &crate::tls::tests::Pki, cn: &str, ca: &Path) -> Vec<String> {
    let issued = pki.issue(cn, &["127.0.0.1"]);
    [
        "--peer-cert-file",
        issued.cert.to_str().unwrap(),
        "--peer-key-file",
        issued.key.to_str().unwrap(),
        "--peer-trusted-ca-file",
        ca.to_str().unwrap(),
        "--peer-client-cert-auth",
    ]
    .iter()
    .map(|a| (*a).to_owned())
    .collect()
}

/// A hub of cluster 1 with `tls`, serving on an `https://` URL it returns (with no shards:
/// whatever reaches it is refused with "shards are starting", which proves it arrived).
async fn tls_listener(id: u64, tls: PeerTls) -> String {
    let hub = PeerHub::new(hello(1, id), tls);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("https://{}", listener.local_addr().unwrap());
    tokio::spawn(serve(
        listener,
        hub,
        ShardSlot::default(),
        std::future::pending(),
    ));
    addr
}

#[tokio::test]
async fn peers_speak_tls_only_with_certificates_their_ca_signed() {
    let pki = crate::tls::tests::Pki::new("peer ca");
    let ca = pki.ca_file();
    let server = tls_listener(2, peer_tls(&member_flags(&pki, "m2", &ca))).await;
    let vote = |tx: flume::Sender<Outbound>, addr: String| async move {
        send(
            &tx,
            &addr,
            PeerKind::Vote,
            Bytes::new(),
            Duration::from_secs(2),
        )
        .await
    };

    // A member with a certificate of the cluster's CA gets through.
    let (_a, a) = hub_with_tls(hello(1, 1), peer_tls(&member_flags(&pki, "m1", &ca)));
    match vote(a.clone(), server.clone()).await {
        Err(PeerFailure::Refused { why, .. }) => {
            assert!(why.contains("shards are starting"), "{why}")
        }
        other => panic!("{other:?}"),
    }
    // One whose certificate another CA signed does not (it trusts the server's CA, so the
    // refusal is the server's).
    let stranger_ca = crate::tls::tests::Pki::new("stranger ca");
    let (_c, c) = hub_with_tls(
        hello(1, 3),
        peer_tls(&member_flags(&stranger_ca, "m3", &ca)),
    );
    let failure = vote(c, server.clone()).await.unwrap_err();
    assert!(!matches!(failure, PeerFailure::Refused { .. }), "{failure}");
    // A member without a peer certificate cannot dial https:// at all.
    let (_d, d) = hub_with_channel(hello(1, 4));
    match vote(d, server.clone()).await {
        Err(PeerFailure::Unreachable { why, .. }) => {
            assert!(why.contains("no peer certificate"), "{why}")
        }
        other => panic!("{other:?}"),
    }
    // `--peer-cert-allowed-cn` turns away the CA's other certificates.
    let mut only_m5 = member_flags(&pki, "m2b", &ca);
    only_m5.extend(["--peer-cert-allowed-cn".to_owned(), "m5".to_owned()]);
    let picky = tls_listener(6, peer_tls(&only_m5)).await;
    let failure = vote(a.clone(), picky.clone()).await.unwrap_err();
    assert!(!matches!(failure, PeerFailure::Refused { .. }), "{failure}");
    let (_e, e) = hub_with_tls(hello(1, 5), peer_tls(&member_flags(&pki, "m5", &ca)));
    match vote(e, picky).await {
        Err(PeerFailure::Refused { why, .. }) => {
            assert!(why.contains("shards are starting"), "{why}")
        }
        other => panic!("{other:?}"),
    }
}

fn hub_with_tls(me: Hello, tls: PeerTls) -> (Arc<PeerHub>, flume::Sender<Outbound>) {
    let hub = PeerHub::new(me, tls);
    let (tx, rx) = flume::bounded(64);
    tokio::spawn(hub.clone().run(rx));
    (hub, tx)
}

#[tokio::test]
async fn a_silent_peer_times_out_and_a_lost_connection_says_so() {
    let (hub, tx) = hub_with_channel(hello(1, 1));
    let silent = fake_peer(false).await;
    let failure = send(
        &tx,
        &silent,
        PeerKind::Vote,
        Bytes::new(),
        Duration::from_millis(200),
    )
    .await
    .unwrap_err();
    assert!(matches!(failure, PeerFailure::Timeout { .. }), "{failure}");
    // The hello taught the hub who the peer is.
    assert_eq!(hub.peer(5).map(|h| h.name), Some("n5".to_owned()));
    let closing = fake_peer(true).await;
    let failure = send(
        &tx,
        &closing,
        PeerKind::Vote,
        Bytes::new(),
        Duration::from_secs(5),
    )
    .await
    .unwrap_err();
    assert!(matches!(failure, PeerFailure::Lost { .. }), "{failure}");
}

/// The samples of `text` that start with `series`, the value of the first.
fn sample(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn peer_counters_move_with_frames_round_trips_and_failures() {
    let (hub, tx) = hub_with_channel(hello(1, 1));
    // A peer with no shards: it refuses every message with "shards are starting".
    let peer = PeerHub::new(hello(1, 0x2a), PeerTls::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(serve(listener, peer.clone(), ShardSlot::default(), async {
        let _ = stopped.await;
    }));
    let body = Bytes::from(vec![7u8; 1000]);
    let refused = send(&tx, &addr, PeerKind::Vote, body, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(refused, PeerFailure::Refused { .. }), "{refused}");
    // A request frame: length, id, kind, shard, body; the answer: length, id, status, reason.
    let (request, answer) = (4 + 13 + 1000, 4 + 9 + "shards are starting".len() as u64);
    let mine = hub.metrics.exposition(1);
    assert_eq!(
        sample(&mine, "etcd_network_peer_sent_bytes_total{To=\"2a\"}"),
        Some(request),
        "{mine}"
    );
    assert_eq!(
        sample(&mine, "etcd_network_peer_received_bytes_total{From=\"2a\"}"),
        Some(answer),
        "{mine}"
    );
    let theirs = peer.metrics.exposition(0x2a);
    assert_eq!(
        sample(
            &theirs,
            "etcd_network_peer_received_bytes_total{From=\"1\"}"
        ),
        Some(request),
        "{theirs}"
    );
    assert_eq!(
        sample(&theirs, "etcd_network_peer_sent_bytes_total{To=\"1\"}"),
        Some(answer),
        "{theirs}"
    );
    assert!(!mine.contains("failures"), "{mine}");
    assert!(
        mine.contains("etcd_network_active_peers{Local=\"1\",Remote=\"2a\"} 1\n"),
        "{mine}"
    );

    // The connection times a round trip after PING_INTERVAL; the peer answers it itself.
    let count = "etcd_network_peer_round_trip_time_seconds_count{To=\"2a\"}";
    let deadline = Instant::now() + PING_INTERVAL + Duration::from_secs(5);
    while sample(&hub.metrics.exposition(1), count).is_none() {
        assert!(Instant::now() < deadline, "no round trip timed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let theirs = peer.metrics.exposition(0x2a);
    let received = sample(
        &theirs,
        "etcd_network_peer_received_bytes_total{From=\"1\"}",
    )
    .unwrap();
    assert!(
        received >= request + 4 + 13,
        "the ping reached the peer: {theirs}"
    );

    // The peer goes away: messages to its address fail to send, counted against its id.
    stop.send(()).unwrap();
    serving.await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let failure = send(
            &tx,
            &addr,
            PeerKind::Vote,
            Bytes::new(),
            Duration::from_secs(2),
        )
        .await
        .unwrap_err();
        if matches!(failure, PeerFailure::Unreachable { .. }) {
            break;
        }
        assert!(Instant::now() < deadline, "still reached: {failure}");
    }
    let mine = hub.metrics.exposition(1);
    assert!(
        sample(&mine, "etcd_network_peer_sent_failures_total{To=\"2a\"}").is_some_and(|n| n >= 1),
        "{mine}"
    );
    let disconnected = "etcd_network_disconnected_peers_total{Local=\"1\",Remote=\"2a\"}";
    assert_eq!(sample(&mine, disconnected), Some(1), "{mine}");
    assert!(
        mine.contains("etcd_network_active_peers{Local=\"1\",Remote=\"2a\"} 0\n"),
        "{mine}"
    );
}

/// One in-process node: its hub, its peer listener, and its in-memory shards, each in its
/// shard's group (`shard` is shard 0; `shards` all of them, in order).
struct Node {
    id: u64,
    shard: ShardHandle,
    shards: Vec<ShardHandle>,
    hub: Arc<PeerHub>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for Node {
    /// The node leaves the network: its listener and connections close, its shard can reach
    /// nobody.
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        self.hub.disconnect();
    }
}

async fn start_node(id: u64, listener: TcpListener, members: BTreeMap<u64, String>) -> Node {
    start_node_with(id, listener, members, ShardConfig::default()).await
}

/// [`start_node`] with `base`'s snapshot count and storage.
async fn start_node_with(
    id: u64,
    listener: TcpListener,
    members: BTreeMap<u64, String>,
    base: ShardConfig,
) -> Node {
    start_shards(id, listener, members, base, 1).await
}

/// A node with `count` shards sharing one hub and one anchor (as the server's are).
async fn start_shards(
    id: u64,
    listener: TcpListener,
    members: BTreeMap<u64, String>,
    base: ShardConfig,
    count: u32,
) -> Node {
    let hub = PeerHub::new(hello(42, id), PeerTls::default());
    let (tx, rx) = flume::bounded(OUTBOUND_QUEUE_MAX);
    let slot = ShardSlot::default();
    let tasks = vec![
        tokio::spawn(serve(
            listener,
            hub.clone(),
            slot.clone(),
            std::future::pending(),
        )),
        tokio::spawn(hub.clone().run(rx)),
    ];
    let anchor = Arc::new(ballast_consensus::Anchor::default());
    let mut shards = Vec::new();
    let mut threads = Vec::new();
    for shard_id in 0..count {
        let mut config = ShardConfig {
            node_id: id,
            shard_id: ShardId(shard_id),
            heartbeat_interval: Duration::from_millis(50),
            election_timeout: Duration::from_millis(300),
            cluster: Some(ClusterConfig {
                peers: tx.clone(),
                members: members.clone(),
                bootstrap: true,
            }),
            anchor: anchor.clone(),
            ..base.clone()
        };
        if let (Some(storage), true) = (&mut config.storage, count > 1) {
            storage.dir = storage.dir.join(format!("shard-{shard_id}"));
        }
        let (shard, thread) = tokio::task::spawn_blocking(move || {
            ShardHandle::spawn(&format!("node-{id}-{shard_id}"), config).unwrap()
        })
        .await
        .unwrap();
        shards.push(shard);
        threads.push(thread);
    }
    let _ = slot.set(shards.clone());
    Node {
        id,
        shard: shards[0].clone(),
        shards,
        hub,
        tasks,
        threads,
    }
}

async fn put(shard: &ShardHandle, key: &str, value: &str) -> Result<Reply, ShardError> {
    shard
        .call(Request::Put(PutRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
            ..PutRequest::default()
        }))
        .await
}

async fn get(shard: &ShardHandle, key: &str, serializable: bool) -> Option<(Bytes, i64)> {
    let reply = shard
        .call(Request::Range(RangeRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            serializable,
            ..RangeRequest::default()
        }))
        .await
        .expect("range");
    match reply.response {
        Response::Range(r) => r.kvs.first().map(|kv| (kv.value.clone(), kv.mod_revision)),
        other => panic!("{other:?}"),
    }
}

async fn status(shard: &ShardHandle) -> ballast_consensus::ShardStatus {
    match shard.call(Request::Status).await.unwrap().response {
        Response::Status(s) => s,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_replicate_and_forward() {
    let mut listeners = Vec::new();
    let mut members = BTreeMap::new();
    for id in 1..=3u64 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        members.insert(id, format!("http://{}", l.local_addr().unwrap()));
        listeners.push((id, l));
    }
    let mut nodes = Vec::new();
    for (id, l) in listeners {
        nodes.push(start_node(id, l, members.clone()).await);
    }
    // Every write through every node: followers forward to the leader.
    let mut revisions = Vec::new();
    for round in 0..5 {
        for node in &nodes {
            let reply = tokio::time::timeout(
                Duration::from_secs(20),
                put(&node.shard, &format!("k{}", node.id), &format!("v{round}")),
            )
            .await
            .expect("a write is answered within the request timeout")
            .expect("put");
            revisions.push(reply.revision);
        }
    }
    let mut sorted = revisions.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        15,
        "every write took its own revision: {revisions:?}"
    );
    // One leader, known to all; every member in the membership.
    let statuses = futures::future::join_all(nodes.iter().map(|n| status(&n.shard))).await;
    let leaders: Vec<_> = statuses.iter().filter(|s| s.is_leader).collect();
    assert_eq!(leaders.len(), 1, "{statuses:?}");
    let leader = leaders[0].leader_id;
    for s in &statuses {
        assert_eq!(s.leader_id, leader);
        let ids: Vec<u64> = s.members.iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![1, 2, 3]);
    }
    // Linearizable reads through every node see the last write at once.
    let last = *revisions.iter().max().unwrap();
    for node in &nodes {
        for id in 1..=3 {
            let (value, _) = get(&node.shard, &format!("k{id}"), false)
                .await
                .expect("written");
            assert_eq!(value, Bytes::from_static(b"v4"));
        }
        // A serializable read is local: the follower has applied it by now or soon.
        let mut seen = None;
        for _ in 0..100 {
            seen = get(&node.shard, &format!("k{}", nodes[2].id), true).await;
            if seen.as_ref().is_some_and(|(v, _)| v == "v4") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(seen.map(|(v, _)| v), Some(Bytes::from_static(b"v4")));
        assert!(status(&node.shard).await.revision >= last);
    }
    // With the leader's node gone, the two others elect a new leader and go on.
    let leader_at = nodes.iter().position(|n| n.id == leader).unwrap();
    let gone = nodes.remove(leader_at);
    let gone_shard = gone.shard.clone();
    drop(gone);
    // Its shard still runs but can no longer reach or be reached by anyone. A write sent to
    // it before that was noticed has an unknown outcome ("request timed out"): a client tries
    // again, as etcd's do.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let reply = loop {
        match tokio::time::timeout_at(deadline, put(&nodes[0].shard, "after", "failover"))
            .await
            .expect("answered within the request timeout")
        {
            Err(ShardError::Timeout) => continue,
            answer => break answer.expect("the majority goes on"),
        }
    };
    assert!(reply.revision > last);
    let (value, _) = get(&nodes[1].shard, "after", false).await.unwrap();
    assert_eq!(value, Bytes::from_static(b"failover"));
    let s = status(&nodes[1].shard).await;
    assert_ne!(s.leader_id, leader, "a new leader was elected");
    drop(gone_shard);
}

/// Binds one listener per member id on 127.0.0.1.
async fn bind_members(ids: &[u64]) -> (BTreeMap<u64, String>, Vec<(u64, TcpListener)>) {
    let mut listeners = Vec::new();
    let mut members = BTreeMap::new();
    for &id in ids {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        members.insert(id, format!("http://{}", l.local_addr().unwrap()));
        listeners.push((id, l));
    }
    (members, listeners)
}

/// Stops a node and waits (bounded) for its shard threads to end, so its files are closed.
async fn stop_node(mut node: Node) {
    let threads = std::mem::take(&mut node.threads);
    drop(node);
    for thread in threads {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !thread.is_finished() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the shard thread stops once its handles are gone"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        thread
            .join()
            .expect("the shard thread ends without a panic");
    }
}

/// Writes through `shard` (forwarded to the leader when it is a follower): `rounds` batches of
/// 100 concurrent puts over 300 keys, a lease with keys, deletes and a compaction, so the
/// state has history, tombstones, a compact revision and leases. Returns the writes made.
async fn write_history(shard: &ShardHandle, rounds: usize) -> usize {
    let mut writes = 0;
    let (lease, _) = match shard
        .call(Request::LeaseGrant { id: 0, ttl: 600 })
        .await
        .expect("grant")
        .response
    {
        Response::LeaseGrant { id, ttl } => (id, ttl),
        other => panic!("{other:?}"),
    };
    for round in 0..rounds {
        let puts = (0..100).map(|i| {
            let n = round * 100 + i;
            let lease = if n % 7 == 0 { lease } else { 0 };
            shard.call(Request::Put(PutRequest {
                key: Bytes::from(format!("/registry/pods/k{:03}", n % 300)),
                value: Bytes::from(format!("v{n}-{}", "x".repeat(n % 200))),
                lease,
                ..PutRequest::default()
            }))
        });
        for reply in futures::future::join_all(puts).await {
            reply.expect("put");
            writes += 1;
        }
        if round % 4 == 3 {
            shard
                .call(Request::DeleteRange(ballast_engine::DeleteRangeRequest {
                    key: Bytes::from(format!("/registry/pods/k{:02}", round % 30)),
                    range_end: Bytes::from(format!("/registry/pods/k{:02}", round % 30 + 1)),
                    ..Default::default()
                }))
                .await
                .expect("delete");
            writes += 1;
        }
        if round == rounds / 2 {
            let revision = status(shard).await.revision - 50;
            shard
                .call(Request::Compact { revision })
                .await
                .expect("compact");
            writes += 1;
        }
    }
    writes
}

/// Waits until `node` has applied what `leader` had applied when called (at most 60 s).
async fn wait_caught_up(node: &ShardHandle, leader: &ShardHandle) {
    let want = status(leader).await.applied_index;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let s = status(node).await;
        if s.applied_index >= want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "caught up: applied {} of {want} ({s:?})",
            s.applied_index
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a replica answers locally that must be the leader's: hash_kv and hash of the whole
/// state, the revision, the compact revision, the lease table, a range at an old revision.
async fn fingerprint(shard: &ShardHandle) -> String {
    let call = |r: Request| async move { shard.call(r).await.map(|r| r.response) };
    let hash_kv = call(Request::HashKv { revision: 0 }).await;
    let hash = call(Request::Hash).await;
    let leases = call(Request::LeaseLeases).await;
    let Ok(Response::HashKv(h)) = &hash_kv else {
        panic!("{hash_kv:?}")
    };
    let old = call(Request::Range(RangeRequest {
        key: Bytes::from_static(b"\0"),
        range_end: Bytes::from_static(b"\0"),
        revision: h.compact_revision + 1,
        serializable: true,
        ..RangeRequest::default()
    }))
    .await;
    let old = match old {
        Ok(Response::Range(r)) => (r.count, r.kvs.len(), r.kvs.last().cloned()),
        other => panic!("{other:?}"),
    };
    format!("{hash_kv:?} {hash:?} {leases:?} {old:?}")
}

/// The leader among `nodes` (every node agrees on it).
async fn leader_of(nodes: &[&Node]) -> ShardHandle {
    for n in nodes {
        if status(&n.shard).await.is_leader {
            return n.shard.clone();
        }
    }
    panic!("no leader among the running nodes");
}

/// Node 3 joins after nodes 1 and 2 wrote far past what the leader's log keeps (a snapshot
/// every 50 entries, openraft keeps 1,000 behind it): it must catch up through a snapshot and
/// then answer as the leader does. With `dir`, every shard is durable and node 3 is restarted
/// after the install. Prints the figures.
async fn catch_up_through_a_snapshot(dir: Option<&std::path::Path>) {
    let (members, mut listeners) = bind_members(&[1, 2, 3]).await;
    let third = listeners.pop().unwrap();
    let base = |id: u64| ShardConfig {
        snapshot_count: 50,
        storage: dir
            .map(|d| ballast_consensus::durable::ShardStorage::new(d.join(format!("n{id}")))),
        ..ShardConfig::default()
    };
    let mut nodes = Vec::new();
    for (id, l) in listeners {
        nodes.push(start_node_with(id, l, members.clone(), base(id)).await);
    }
    let started = std::time::Instant::now();
    let writes = write_history(&nodes[0].shard, 16).await;
    let wrote_ms = started.elapsed().as_millis();
    let leader = leader_of(&[&nodes[0], &nodes[1]]).await;
    let before = status(&leader).await;
    assert!(
        before.applied_index > 1_200,
        "the log passed what a snapshot keeps: {}",
        before.applied_index
    );
    // Node 3 starts empty; the leader's log no longer holds its start.
    let started = std::time::Instant::now();
    let (id, l) = third;
    let mut joined = start_node_with(id, l, members.clone(), base(id)).await;
    wait_caught_up(&joined.shard, &leader).await;
    let caught_up_ms = started.elapsed().as_millis();
    let s = status(&joined.shard).await;
    assert!(
        s.entries_applied < writes as u64,
        "node 3 applied {} entries of {writes} writes: it installed a snapshot",
        s.entries_applied
    );
    assert_eq!(fingerprint(&joined.shard).await, fingerprint(&leader).await);
    println!(
        "snapshot catch-up ({}): {writes} writes in {wrote_ms} ms, leader at index {} revision \
         {}; node 3 caught up in {caught_up_ms} ms applying {} entries",
        if dir.is_some() {
            "durable"
        } else {
            "in memory"
        },
        before.applied_index,
        before.revision,
        s.entries_applied
    );
    // It replicates normally afterwards.
    let reply = put(&leader, "/after", "snapshot").await.expect("put");
    for _ in 0..500 {
        if status(&joined.shard).await.revision >= reply.revision {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        get(&joined.shard, "/after", true).await.map(|(v, _)| v),
        Some(Bytes::from_static(b"snapshot"))
    );
    if dir.is_some() {
        // A restart recovers the installed state from its page log and log.
        let addr = members[&3].trim_start_matches("http://").to_owned();
        stop_node(joined).await;
        let more = write_history(&leader, 2).await;
        assert!(more > 0);
        let l = TcpListener::bind(&addr)
            .await
            .expect("the port is free again");
        let started = std::time::Instant::now();
        joined = start_node_with(3, l, members.clone(), base(3)).await;
        wait_caught_up(&joined.shard, &leader).await;
        assert_eq!(fingerprint(&joined.shard).await, fingerprint(&leader).await);
        println!(
            "durable node 3 restarted after the install and caught up in {} ms",
            started.elapsed().as_millis()
        );
    }
    stop_node(joined).await;
    drop(leader);
    for n in nodes {
        stop_node(n).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_behind_the_purged_log_catches_up_through_a_snapshot() {
    catch_up_through_a_snapshot(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_member_installs_a_snapshot_and_recovers_it_after_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    catch_up_through_a_snapshot(Some(dir.path())).await;
}

/// Each shard's leader as its replicas agree on it (`None` while they do not, or none leads).
async fn agreed_leaders(nodes: &[Node], shards: usize) -> Vec<Option<u64>> {
    let mut leaders = Vec::new();
    for shard in 0..shards {
        let statuses =
            futures::future::join_all(nodes.iter().map(|n| status(&n.shards[shard]))).await;
        let leading: Vec<u64> = statuses
            .iter()
            .filter(|s| s.is_leader)
            .map(|s| s.leader_id)
            .collect();
        let agreed = statuses
            .iter()
            .all(|s| Some(s.leader_id) == leading.first().copied());
        leaders.push(if leading.len() == 1 && agreed {
            Some(leading[0])
        } else {
            None
        });
    }
    leaders
}

/// Waits (bounded) until the shards' leaders sit where the placement rule puts them around
/// shard 0's leader; returns them.
async fn wait_placed(nodes: &[Node], shards: usize, voters: &[u64]) -> Vec<u64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let leaders = agreed_leaders(nodes, shards).await;
        if let Some(anchor) = leaders[0] {
            let want: Vec<Option<u64>> = (0..shards)
                .map(|i| {
                    ballast_consensus::placement::preferred_leader(
                        voters,
                        anchor,
                        ShardId(i as u32),
                    )
                })
                .collect();
            if leaders == want {
                return leaders.into_iter().flatten().collect();
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "leaders not placed within 30 s: {leaders:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_leaders_spread_over_the_nodes_and_follow_a_moved_leader() {
    const SHARDS: usize = 3;
    let (members, listeners) = bind_members(&[1, 2, 3]).await;
    let mut nodes = Vec::new();
    for (id, l) in listeners {
        let node = start_shards(
            id,
            l,
            members.clone(),
            ShardConfig::default(),
            SHARDS as u32,
        );
        nodes.push(node.await);
    }
    let voters = [1, 2, 3];
    // Three shards over three nodes: each node leads one.
    let started = tokio::time::Instant::now();
    let leaders = wait_placed(&nodes, SHARDS, &voters).await;
    let mut distinct = leaders.clone();
    distinct.sort_unstable();
    assert_eq!(distinct, voters, "one shard led by each node");
    eprintln!("leaders {leaders:?} placed after {:?}", started.elapsed());

    // MoveLeader: only shard 0's leader moves it, only to a voter.
    let node_of = |id: u64| nodes.iter().find(|n| n.id == id).expect("a node");
    let old = leaders[0];
    let follower = voters.into_iter().find(|&v| v != old).expect("a follower");
    assert_eq!(
        node_of(follower).shard.move_leader(old).await,
        Err(ballast_consensus::TransferError::NotLeader)
    );
    assert_eq!(
        node_of(old).shard.move_leader(99).await,
        Err(ballast_consensus::TransferError::BadTransferee)
    );
    assert_eq!(
        node_of(old).shard.move_leader(old).await,
        Ok(()),
        "to itself"
    );
    let moved = tokio::time::Instant::now();
    node_of(old)
        .shard
        .move_leader(follower)
        .await
        .expect("leadership moves to a live voter");
    eprintln!("shard 0 moved to {follower} in {:?}", moved.elapsed());
    let leaders = wait_placed(&nodes, SHARDS, &voters).await;
    assert_eq!(leaders[0], follower);
    eprintln!(
        "leaders {leaders:?} placed {:?} after the move",
        moved.elapsed()
    );

    // Writes to every shard through every node still land, once each.
    let mut revisions = Vec::new();
    for node in &nodes {
        for shard in &node.shards {
            let reply = tokio::time::timeout(
                Duration::from_secs(20),
                put(shard, &format!("k{}", node.id), "v"),
            )
            .await
            .expect("answered within the request timeout")
            .expect("put");
            revisions.push(reply.revision);
        }
    }
    assert_eq!(revisions.len(), SHARDS * nodes.len());
    for node in nodes {
        stop_node(node).await;
    }
}

/// Three single-shard nodes, once a put through the first one (which waits for a leader, up
/// to 20 s) is answered.
async fn three_nodes_with_a_leader() -> Vec<Node> {
    let (members, listeners) = bind_members(&[1, 2, 3]).await;
    let mut nodes = Vec::new();
    for (id, l) in listeners {
        nodes.push(start_node(id, l, members.clone()).await);
    }
    tokio::time::timeout(Duration::from_secs(20), put(&nodes[0].shard, "k", "v"))
        .await
        .expect("a leader within 20 s")
        .expect("put");
    nodes
}

/// A linearizable read or a write that reaches a leader while it hands its leadership over is
/// served by the new leader, as etcd's requests wait for a leader, instead of failing with
/// "not leader" (reads and writes keep going through the old leader during three moves).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_and_writes_go_on_through_leader_moves() {
    let nodes = three_nodes_with_a_leader().await;
    let mut moves = 0;
    let mut requests = 0usize;
    let mut failures = Vec::new();
    for round in 0..3 {
        let mut from = None;
        for node in &nodes {
            if status(&node.shard).await.is_leader {
                from = Some((node.id, node.shard.clone()));
            }
        }
        let (from, leader) = from.expect("a leader");
        let to = [1, 2, 3]
            .into_iter()
            .find(|&id| id != from)
            .expect("another voter");
        // Reads through the leader being moved away from, before, during and after the move.
        let reader = {
            let shard = leader.clone();
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                for i in 0..200 {
                    let request = if i % 2 == 0 {
                        Request::Range(RangeRequest {
                            key: Bytes::from_static(b"k"),
                            ..RangeRequest::default()
                        })
                    } else {
                        Request::Put(PutRequest {
                            key: Bytes::from_static(b"k"),
                            value: Bytes::from(format!("{round}-{i}")),
                            ..PutRequest::default()
                        })
                    };
                    let answer =
                        tokio::time::timeout(Duration::from_secs(10), shard.call(request)).await;
                    outcomes.push(match answer {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err("no answer in 10 s".to_owned()),
                    });
                }
                outcomes
            })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        match leader.move_leader(to).await {
            Ok(()) => moves += 1,
            Err(e) => eprintln!("round {round}: move to {to} refused: {e}"),
        }
        for outcome in reader.await.expect("reader") {
            requests += 1;
            if let Err(e) = outcome {
                failures.push(format!("round {round}: {e}"));
            }
        }
    }
    eprintln!("{requests} reads and writes across {moves} leader moves");
    assert!(moves >= 2, "the leadership moved only {moves} times");
    assert!(failures.is_empty(), "requests failed: {failures:?}");
    for node in nodes {
        stop_node(node).await;
    }
}

/// A membership change that reaches a leader while it hands its leadership over is made by
/// the new leader (openraft refuses it before appending anything, as it refuses a write), not
/// failed with "no leader"; and a new leader that does not know yet that its predecessor's
/// last change committed makes the change once it does, instead of refusing it as "in
/// progress". Each round starts a leader move and, a moment later, a change through the leader
/// being moved away from — a learner added, then removed — and every change must be made once,
/// as asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_go_on_through_leader_moves() {
    use ballast_consensus::MembershipChange;
    let nodes = three_nodes_with_a_leader().await;
    let mut moves = 0;
    let mut failures = Vec::new();
    for round in 0..12u64 {
        let learner = 100 + round;
        let change = if round % 2 == 0 {
            MembershipChange::Add {
                id: learner,
                addr: format!("http://127.0.0.1:{}", 1000 + round),
                learner: true,
            }
        } else {
            MembershipChange::Remove { id: learner - 1 }
        };
        let (leader, to) = leader_and_target(&nodes).await;
        // The move is asked first; the change follows after 0-1.65 ms, so it meets the
        // transfer at different points.
        let delay = Duration::from_micros(150 * round);
        let (moved, changed) = tokio::join!(leader.move_leader(to), async {
            tokio::time::sleep(delay).await;
            tokio::time::timeout(
                Duration::from_secs(10),
                leader.call(Request::Membership(change.clone())),
            )
            .await
        });
        match moved {
            Ok(()) => moves += 1,
            Err(e) => eprintln!("round {round}: move to {to} refused: {e}"),
        }
        match answered_members(changed) {
            Ok(members) => {
                let listed = members.iter().any(|m| m.id == learner - round % 2);
                if listed != (round % 2 == 0) {
                    failures.push(format!("round {round}: {change:?} answered {members:?}"));
                }
            }
            Err(other) => failures.push(format!("round {round}: {change:?}: {other}")),
        }
    }
    eprintln!("12 membership changes across {moves} leader moves");
    assert!(failures.is_empty(), "changes failed: {failures:#?}");
    assert!(moves >= 6, "the leadership moved only {moves} times");
    for node in nodes {
        stop_node(node).await;
    }
}

/// A voter added through a leader that hands its leadership over while the addition runs ends
/// up a voter: when the move lands between the two steps (the learner added, then made a
/// voter), the new leader makes the second step instead of refusing the whole addition as
/// "Peer URLs already exists". Each round asks for a voter (a member that never runs: the three
/// running ones stay a quorum of four), then a moment later a move away from the leader asked;
/// the addition must answer with the member voting, and is undone before the next round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voter_added_through_a_leader_move_votes() {
    use ballast_consensus::MembershipChange;
    let nodes = three_nodes_with_a_leader().await;
    let mut moves = 0;
    let mut failures = Vec::new();
    for round in 0..16u64 {
        let voter = 200 + round;
        let add = MembershipChange::Add {
            id: voter,
            addr: format!("http://127.0.0.1:{}", 2000 + round),
            learner: false,
        };
        let (leader, to) = leader_and_target(&nodes).await;
        // The addition is asked first; the move follows after 0-3 ms, so it meets the
        // addition's first step, its second, or neither.
        let delay = Duration::from_micros(200 * round);
        let (changed, moved) = tokio::join!(
            tokio::time::timeout(
                Duration::from_secs(10),
                leader.call(Request::Membership(add.clone())),
            ),
            async {
                tokio::time::sleep(delay).await;
                leader.move_leader(to).await
            }
        );
        match moved {
            Ok(()) => moves += 1,
            Err(e) => eprintln!("round {round}: move to {to} refused: {e}"),
        }
        match answered_members(changed) {
            Ok(members) => {
                if !members.iter().any(|m| m.id == voter && !m.is_learner) {
                    failures.push(format!("round {round}: {add:?} answered {members:?}"));
                }
            }
            Err(other) => failures.push(format!("round {round}: {add:?}: {other}")),
        }
        let (_, leader) = current_leader(&nodes).await;
        let removed = tokio::time::timeout(
            Duration::from_secs(10),
            leader.call(Request::Membership(MembershipChange::Remove { id: voter })),
        )
        .await;
        if !matches!(removed, Ok(Ok(_))) {
            failures.push(format!("round {round}: removing {voter}: {removed:?}"));
        }
    }
    eprintln!("16 voters added across {moves} leader moves");
    assert!(failures.is_empty(), "additions failed: {failures:#?}");
    assert!(moves >= 8, "the leadership moved only {moves} times");
    for node in nodes {
        stop_node(node).await;
    }
}

/// The handle of shard 0's leader and another of the three voters to move its leadership to.
async fn leader_and_target(nodes: &[Node]) -> (ShardHandle, u64) {
    let (from, leader) = current_leader(nodes).await;
    let to = [1, 2, 3]
        .into_iter()
        .find(|&id| id != from)
        .expect("another voter");
    (leader, to)
}

/// The members a membership change answered with (asked under a 10 s timeout), or what it
/// answered instead.
fn answered_members(
    changed: Result<Result<Reply, ShardError>, tokio::time::error::Elapsed>,
) -> Result<Vec<ballast_consensus::RaftMember>, String> {
    match changed {
        Ok(Ok(Reply {
            response: Response::Members(members),
            ..
        })) => Ok(members),
        Ok(other) => Err(format!("{other:?}")),
        Err(_) => Err("no answer in 10 s".to_owned()),
    }
}

/// The node whose shard 0 leads, and its handle; waits (up to 10 s) while an election or a
/// move leaves none.
async fn current_leader(nodes: &[Node]) -> (u64, ShardHandle) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        for node in nodes {
            if status(&node.shard).await.is_leader {
                return (node.id, node.shard.clone());
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no leader for 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The statuses of every node's shard 0, in node order.
async fn statuses(nodes: &[Node]) -> Vec<ballast_consensus::ShardStatus> {
    futures::future::join_all(nodes.iter().map(|n| status(&n.shard))).await
}

/// Puts `key = v<round>` through the leader, then at once reads it linearizably through every
/// follower (a Range and a read-only Txn), for `rounds` rounds: each read must see the put the
/// leader just acknowledged. Returns the leader's index in `nodes`.
async fn write_then_read_through_followers(nodes: &[Node], key: &str, rounds: usize) -> usize {
    let leader = statuses(nodes)
        .await
        .iter()
        .position(|s| s.is_leader)
        .expect("a leader");
    for round in 0..rounds {
        let value = format!("v{round}");
        let reply = put(&nodes[leader].shard, key, &value).await.expect("put");
        for (i, node) in nodes.iter().enumerate() {
            if i == leader {
                continue;
            }
            let seen = get(&node.shard, key, false).await;
            assert_eq!(
                seen,
                Some((Bytes::from(value.clone()), reply.revision)),
                "round {round}: node {} read back the put the leader acknowledged",
                node.id
            );
            let txn = node
                .shard
                .call(Request::Txn(ballast_engine::TxnRequest {
                    success: vec![ballast_engine::RequestOp::Range(RangeRequest {
                        key: Bytes::copy_from_slice(key.as_bytes()),
                        ..RangeRequest::default()
                    })],
                    ..ballast_engine::TxnRequest::default()
                }))
                .await
                .expect("read-only txn");
            let Response::Txn(t) = txn.response else {
                panic!("{:?}", txn.response)
            };
            let Some(ballast_engine::ResponseOp::Range(r)) = t.responses.first() else {
                panic!("{t:?}")
            };
            assert_eq!(
                r.kvs.first().map(|kv| (kv.value.clone(), kv.mod_revision)),
                Some((Bytes::from(value.clone()), reply.revision)),
                "round {round}: node {}'s read-only txn",
                node.id
            );
        }
    }
    leader
}

/// A follower serves a linearizable read from its own store after the leader's read index
/// (`PeerKind::ReadIndex`), instead of forwarding it: every read sees the write the leader
/// acknowledged just before it, the followers count the reads as theirs, and the leader serves
/// no forwarded request meanwhile (it only answers read indexes). Concurrent reads share
/// read-index questions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_serve_linearizable_reads_after_the_leaders_read_index() {
    const ROUNDS: usize = 100;
    let nodes = three_nodes_with_a_leader().await;
    let before = statuses(&nodes).await;
    let leader = write_then_read_through_followers(&nodes, "read-index", ROUNDS).await;
    let after = statuses(&nodes).await;
    assert!(
        after[leader].is_leader,
        "the leader stayed put during the test"
    );
    let delta =
        |i: usize, f: fn(&ballast_consensus::ShardStatus) -> u64| f(&after[i]) - f(&before[i]);
    for (i, node) in nodes.iter().enumerate() {
        if i == leader {
            continue;
        }
        assert_eq!(
            delta(i, |s| s.served.follower_reads),
            2 * ROUNDS as u64,
            "node {}: every linearizable read was served by the follower itself",
            node.id
        );
    }
    assert_eq!(
        delta(leader, |s| s.served.forwarded_served),
        0,
        "the leader served no forwarded request"
    );
    assert!(
        delta(leader, |s| s.served.read_indexes_answered) >= 4 * ROUNDS as u64,
        "the leader answered a read index per follower read"
    );
    // Concurrent reads through one follower share read-index questions (one per round trip),
    // and each still sees the last acknowledged write.
    const CONCURRENT: usize = 200;
    let follower = (0..nodes.len()).find(|i| *i != leader).unwrap();
    let last = put(&nodes[leader].shard, "read-index", "last")
        .await
        .expect("put");
    let before = statuses(&nodes).await;
    let reads = futures::future::join_all(
        (0..CONCURRENT).map(|_| get(&nodes[follower].shard, "read-index", false)),
    )
    .await;
    for seen in reads {
        assert_eq!(seen, Some((Bytes::from_static(b"last"), last.revision)));
    }
    let after = statuses(&nodes).await;
    let served = after[follower].served.follower_reads - before[follower].served.follower_reads;
    let asked =
        after[leader].served.read_indexes_answered - before[leader].served.read_indexes_answered;
    eprintln!("{CONCURRENT} concurrent follower reads took {asked} read indexes");
    assert_eq!(served, CONCURRENT as u64);
    assert!(
        asked * 4 <= CONCURRENT as u64,
        "{CONCURRENT} concurrent reads asked the leader {asked} times"
    );
    for node in nodes {
        stop_node(node).await;
    }
}

/// Relays peer connections from `listener` to `to`, renaming every `ReadIndex` message to a
/// kind no member knows: what a follower meets when its leader runs an older version.
async fn relay_refusing_read_index(listener: TcpListener, to: String) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            return;
        };
        let to = to.clone();
        tokio::spawn(async move {
            let Ok(outbound) = TcpStream::connect(&to).await else {
                return;
            };
            let _ = (inbound.set_nodelay(true), outbound.set_nodelay(true));
            let (in_r, mut in_w) = inbound.into_split();
            let (mut out_r, mut out_w) = outbound.into_split();
            let back = tokio::spawn(async move {
                let _ = tokio::io::copy(&mut out_r, &mut in_w).await;
            });
            let mut in_r = BufReader::new(in_r);
            // The hello, then requests: `id:u64 kind:u8 shard:u32 body`.
            let mut hello = true;
            while let Ok(frame) = read_frame(&mut in_r).await {
                let mut frame = frame.to_vec();
                if !hello && frame.len() > 8 && frame[8] == PeerKind::ReadIndex as u8 {
                    frame[8] = 0xee;
                }
                hello = false;
                if write_frame(&mut out_w, &[&frame]).await.is_err() {
                    break;
                }
            }
            back.abort();
        });
    }
}

/// A follower whose leader refuses `ReadIndex` as an unknown kind (an older member during a
/// rolling upgrade) forwards the read to it, as before: the reads still see every acknowledged
/// write, and the leader serves them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_does_not_know_read_index_gets_the_read_forwarded() {
    const ROUNDS: usize = 20;
    let (real, listeners) = bind_members(&[1, 2, 3]).await;
    // Every member is reached through a relay: the members' addresses are the relays'.
    let mut members = BTreeMap::new();
    let mut relays = Vec::new();
    for (id, addr) in &real {
        let relay = TcpListener::bind("127.0.0.1:0").await.unwrap();
        members.insert(*id, format!("http://{}", relay.local_addr().unwrap()));
        let to = addr.trim_start_matches("http://").to_owned();
        relays.push(tokio::spawn(relay_refusing_read_index(relay, to)));
    }
    let mut nodes = Vec::new();
    for (id, l) in listeners {
        nodes.push(start_node(id, l, members.clone()).await);
    }
    tokio::time::timeout(Duration::from_secs(20), put(&nodes[0].shard, "k", "v"))
        .await
        .expect("a leader within 20 s")
        .expect("put");
    let before = statuses(&nodes).await;
    let leader = write_then_read_through_followers(&nodes, "forwarded", ROUNDS).await;
    let after = statuses(&nodes).await;
    assert!(after[leader].is_leader, "the leader stayed put");
    for (i, (a, b)) in after.iter().zip(&before).enumerate() {
        assert_eq!(
            a.served.follower_reads, b.served.follower_reads,
            "node {}: no read was served by read index",
            nodes[i].id
        );
    }
    assert_eq!(
        after[leader].served.forwarded_served - before[leader].served.forwarded_served,
        4 * ROUNDS as u64,
        "the leader served every follower read, forwarded"
    );
    assert_eq!(
        after[leader].served.read_indexes_answered,
        before[leader].served.read_indexes_answered
    );
    for node in nodes {
        stop_node(node).await;
    }
    for relay in relays {
        relay.abort();
    }
}
