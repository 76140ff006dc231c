//! The peer transport: the hello, every failure a message can meet (unreachable, another
//! cluster, a silent peer, a connection lost after sending), and three in-process nodes whose
//! in-memory shards form one Raft group over real connections on 127.0.0.1: they elect a
//! leader, replicate, and followers forward writes and linearizable reads to it.

use std::collections::BTreeMap;
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
    let hub = PeerHub::new(me);
    let (tx, rx) = flume::bounded(64);
    tokio::spawn(hub.clone().run(rx));
    (hub, tx)
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
    let other = PeerHub::new(hello(2, 9));
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

/// One in-process node: its hub, its peer listener, and one in-memory shard in the group.
struct Node {
    id: u64,
    shard: ShardHandle,
    hub: Arc<PeerHub>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
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
    let hub = PeerHub::new(hello(42, id));
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
    let config = ShardConfig {
        node_id: id,
        heartbeat_interval: Duration::from_millis(50),
        election_timeout: Duration::from_millis(300),
        cluster: Some(ClusterConfig {
            peers: tx,
            members,
            bootstrap: true,
        }),
        ..ShardConfig::default()
    };
    let shard = tokio::task::spawn_blocking(move || {
        ShardHandle::spawn(&format!("node-{id}"), config).unwrap().0
    })
    .await
    .unwrap();
    let _ = slot.set(vec![shard.clone()]);
    Node {
        id,
        shard,
        hub,
        tasks,
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
