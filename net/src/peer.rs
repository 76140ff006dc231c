//! The peer transport between the nodes of a cluster (design.md §3): one TCP connection (TLS
//! over TCP for `https://` peer URLs, `tls.rs`) per ordered pair of nodes, multiplexing every shard's messages (Raft RPCs and requests a follower
//! forwards to a leader, [`PeerKind`]). Shards hand messages to the [`PeerHub`] as
//! [`Outbound`]s over one channel; the hub dials the peer named by the message's address (its
//! peer URL, as the Raft membership holds it), writes the message as a frame with a request id,
//! and hands the answer back on the message's oneshot. The listener side ([`serve`]) reads
//! frames, gives each to its shard (`ShardHandle::peer_message`) and writes the answers back,
//! in whatever order they complete.
//!
//! Wire format (integers little-endian; `len` counts the bytes after itself):
//! ```text
//! hello    = len:u32 magic:"BLSTPEER" version:u8 cluster_id:u64 member_id:u64
//!            name:str client_urls:u32 str*          (each side sends one first)
//! request  = len:u32 id:u64 kind:u8 shard:u32 body
//! answer   = len:u32 id:u64 status:u8 body          (status 0: the shard's encoded answer;
//!                                                     1: refused, body is the reason, UTF-8)
//! str      = n:u32 bytes[n]
//! ```
//!
//! Invariants:
//! - A message is answered exactly once: with the peer's answer, or `Unreachable` (it was
//!   never written to a connection), `Lost` (written, then the connection failed), or
//!   `Timeout` (its deadline passed first). Only `Unreachable` guarantees the peer never saw it.
//! - A connection serves one cluster: a hello with another cluster id is refused and the
//!   connection closed (a member of another cluster never gets its messages).
//! - Every queue and frame is bounded ([`OUTBOUND_QUEUE_MAX`], [`FRAME_MAX`]); a peer that
//!   stops reading backs up only its own connection's queue, and then its messages fail.
//! - Messages reach the peer in the order a shard sent them to the same address.
//! - Every request and answer frame counts, with its length prefix, in the peer's
//!   `etcd_network_peer_*` byte counters ([`metrics`]); hellos do not (they name the peer).
//!   A message answered `Unreachable`, and a failed write, is a send failure; a failed read
//!   other than the peer closing the connection between frames is a receive failure.
//! - Each outgoing connection times a round trip every [`PING_INTERVAL`]: a request of kind
//!   [`KIND_PING`] that the listener answers itself (an older member refuses it as unknown,
//!   which is a round trip as well). One ping waits at a time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use ballast_consensus::{Outbound, PeerFailure, PeerKind, ShardHandle};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use crate::tls::PeerTls;

pub mod metrics;
use metrics::{PeerCounters, PeerMetrics};

/// Messages waiting for one peer's connection at most; more fail at once as `Unreachable`.
pub const OUTBOUND_QUEUE_MAX: usize = 8192;
/// The largest frame either side accepts (a batch of entries of maximum-size requests).
pub const FRAME_MAX: usize = 256 << 20;
/// How long dialing a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How often a connection looks for answers whose deadline passed.
const DEADLINE_SWEEP: Duration = Duration::from_millis(20);
const MAGIC: &[u8; 8] = b"BLSTPEER";
const VERSION: u8 = 1;
const STATUS_OK: u8 = 0;
const STATUS_REFUSED: u8 = 1;
/// The request kind the listener answers itself, at once, with an empty body: a round trip
/// for `etcd_network_peer_round_trip_time_seconds`. No [`PeerKind`] uses it.
pub const KIND_PING: u8 = 0;
/// How often an outgoing connection times a round trip (the first after one interval).
pub const PING_INTERVAL: Duration = Duration::from_secs(1);
/// Bytes of a request frame before its body: length, id, kind, shard.
const REQUEST_HEAD: usize = 4 + 13;
/// Bytes of an answer frame before its body: length, id, status.
const ANSWER_HEAD: usize = 4 + 9;

/// What a node says of itself when a connection opens.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hello {
    pub cluster_id: u64,
    pub member_id: u64,
    pub name: String,
    pub client_urls: Vec<String>,
}

impl Hello {
    fn encode(&self) -> Bytes {
        let mut b = BytesMut::new();
        b.put_slice(MAGIC);
        b.put_u8(VERSION);
        b.put_u64_le(self.cluster_id);
        b.put_u64_le(self.member_id);
        put_str(&mut b, &self.name);
        b.put_u32_le(self.client_urls.len() as u32);
        for url in &self.client_urls {
            put_str(&mut b, url);
        }
        b.freeze()
    }

    fn decode(mut b: Bytes) -> anyhow::Result<Hello> {
        if b.len() < MAGIC.len() + 1 || &b[..MAGIC.len()] != MAGIC {
            bail!("not a ballast peer (bad hello)");
        }
        b.advance(MAGIC.len());
        let version = b.get_u8();
        if version != VERSION {
            bail!("peer protocol version {version}, this node speaks {VERSION}");
        }
        let cluster_id = take_u64(&mut b)?;
        let member_id = take_u64(&mut b)?;
        let name = take_str(&mut b)?;
        let n = take_u32(&mut b)? as usize;
        let mut client_urls = Vec::new();
        for _ in 0..n {
            client_urls.push(take_str(&mut b)?);
        }
        if b.has_remaining() {
            bail!("trailing bytes after the hello");
        }
        Ok(Hello {
            cluster_id,
            member_id,
            name,
            client_urls,
        })
    }
}

fn put_str(b: &mut BytesMut, s: &str) {
    b.put_u32_le(s.len() as u32);
    b.put_slice(s.as_bytes());
}

fn take_u32(b: &mut Bytes) -> anyhow::Result<u32> {
    if b.remaining() < 4 {
        bail!("truncated frame");
    }
    Ok(b.get_u32_le())
}

fn take_u64(b: &mut Bytes) -> anyhow::Result<u64> {
    if b.remaining() < 8 {
        bail!("truncated frame");
    }
    Ok(b.get_u64_le())
}

fn take_str(b: &mut Bytes) -> anyhow::Result<String> {
    let n = take_u32(b)? as usize;
    if b.remaining() < n {
        bail!("truncated frame");
    }
    String::from_utf8(b.split_to(n).to_vec()).context("a string that is not UTF-8")
}

async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Bytes> {
    let len = r.read_u32_le().await? as usize;
    if len > FRAME_MAX {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes (at most {FRAME_MAX})"),
        ));
    }
    let mut buf = vec![0; len];
    r.read_exact(&mut buf).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            // Only an end between frames is the peer closing the connection.
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the connection closed inside a frame",
            )
        } else {
            e
        }
    })?;
    Ok(Bytes::from(buf))
}

async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, parts: &[&[u8]]) -> std::io::Result<()> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let len = u32::try_from(len)
        .ok()
        .filter(|l| *l as usize <= FRAME_MAX)
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("a frame of {len} bytes (at most {FRAME_MAX})"),
            )
        })?;
    w.write_u32_le(len).await?;
    for p in parts {
        w.write_all(p).await?;
    }
    Ok(())
}

/// A peer URL to dial: `http://host:port` or `https://host:port`.
struct Target {
    host: String,
    /// `host:port`, for `TcpStream::connect`.
    addr: String,
    tls: bool,
}

impl Target {
    fn parse(url: &str) -> Result<Target, String> {
        let (rest, tls) = if let Some(rest) = url.strip_prefix("http://") {
            (rest, false)
        } else if let Some(rest) = url.strip_prefix("https://") {
            (rest, true)
        } else {
            return Err(format!(
                "peer URL {url:?}: the scheme must be http or https"
            ));
        };
        let addr = rest.trim_end_matches('/').to_owned();
        let host = addr
            .rsplit_once(':')
            .map_or(addr.as_str(), |(h, _)| h)
            .to_owned();
        Ok(Target { host, addr, tls })
    }
}

/// A connection to or from a peer: TCP, or TLS over TCP.
pub trait PeerIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> PeerIo for T {}

type PeerReader = BufReader<tokio::io::ReadHalf<Box<dyn PeerIo>>>;
type PeerWriter = tokio::io::WriteHalf<Box<dyn PeerIo>>;

/// Dials `url`, with TLS when it is `https://` (then `tls` must hold a connector).
async fn open(url: &str, tls: &PeerTls) -> Result<Box<dyn PeerIo>, String> {
    let target = Target::parse(url)?;
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&target.addr))
        .await
        .map_err(|_| format!("connecting took over {CONNECT_TIMEOUT:?}"))?
        .map_err(|e| format!("connecting: {e}"))?;
    let _ = stream.set_nodelay(true);
    if !target.tls {
        return Ok(Box::new(stream));
    }
    let Some(connector) = &tls.connector else {
        return Err(format!(
            "peer URL {url}: this member has no peer certificate to dial https:// peers \
             (--peer-cert-file, --peer-key-file)"
        ));
    };
    let name = crate::tls::server_name(&target.host)?;
    let stream = tokio::time::timeout(
        crate::tls::HANDSHAKE_TIMEOUT,
        connector.connect(name, stream),
    )
    .await
    .map_err(|_| "the TLS handshake did not finish".to_owned())?
    .map_err(|e| format!("TLS handshake: {e}"))?;
    Ok(Box::new(stream))
}

/// A node's side of the peer transport: its identity, its connections to peers, and what it
/// learned of them.
pub struct PeerHub {
    me: Hello,
    /// Each peer address's connection queue, with the connection's serial number.
    conns: Mutex<HashMap<String, (u64, mpsc::Sender<Outbound>)>>,
    serial: std::sync::atomic::AtomicU64,
    /// What peers said of themselves, by member id.
    known: Mutex<HashMap<u64, Hello>>,
    /// How connections to and from `https://` peers are made.
    tls: PeerTls,
    /// Bytes, failures and round trips per peer, for `/metrics`.
    pub metrics: PeerMetrics,
}

impl PeerHub {
    pub fn new(me: Hello, tls: PeerTls) -> Arc<PeerHub> {
        Arc::new(PeerHub {
            me,
            conns: Mutex::new(HashMap::new()),
            serial: std::sync::atomic::AtomicU64::new(0),
            known: Mutex::new(HashMap::new()),
            tls,
            metrics: PeerMetrics::default(),
        })
    }

    /// What member `id` said of itself, once it has connected or been connected to.
    pub fn peer(&self, id: u64) -> Option<Hello> {
        self.known.lock().expect("peer table").get(&id).cloned()
    }

    fn learned(&self, hello: Hello) {
        self.known
            .lock()
            .expect("peer table")
            .insert(hello.member_id, hello);
    }

    /// Closes every outgoing connection (messages they hold fail); new messages dial anew.
    pub fn disconnect(&self) {
        self.conns.lock().expect("peer connections").clear();
    }

    /// Delivers the shards' messages until every sender of `rx` is gone.
    pub async fn run(self: Arc<Self>, rx: flume::Receiver<Outbound>) {
        while let Ok(msg) = rx.recv_async().await {
            let tx = self.connection(&msg.addr);
            match tx.try_send(msg) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(msg)) => {
                    let why = format!("{OUTBOUND_QUEUE_MAX} messages already wait for it");
                    let counters = self.metrics.at(&msg.addr);
                    unreachable(msg, &why, counters.as_deref());
                }
                Err(mpsc::error::TrySendError::Closed(msg)) => {
                    // The connection ended between lookup and send: the next one dials anew.
                    let tx = self.connection(&msg.addr);
                    if let Err(e) = tx.try_send(msg) {
                        let msg = match e {
                            mpsc::error::TrySendError::Full(m)
                            | mpsc::error::TrySendError::Closed(m) => m,
                        };
                        let counters = self.metrics.at(&msg.addr);
                        unreachable(msg, "its connection closed", counters.as_deref());
                    }
                }
            }
        }
    }

    /// The queue of the connection to `addr`, dialing a new one when there is none.
    fn connection(self: &Arc<Self>, addr: &str) -> mpsc::Sender<Outbound> {
        let mut conns = self.conns.lock().expect("peer connections");
        if let Some((_, tx)) = conns.get(addr) {
            if !tx.is_closed() {
                return tx.clone();
            }
        }
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE_MAX);
        let serial = self
            .serial
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        conns.insert(addr.to_owned(), (serial, tx.clone()));
        tokio::spawn(self.clone().connect(addr.to_owned(), rx, serial));
        tx
    }

    /// One connection to `addr`: dials, says hello, then writes messages and matches answers
    /// until either side fails; then every message it holds is answered with the failure.
    async fn connect(self: Arc<Self>, addr: String, mut rx: mpsc::Receiver<Outbound>, serial: u64) {
        let failure = match self.dial(&addr).await {
            Ok((reader, writer, counters)) => {
                let mut conn = Connection {
                    addr: addr.clone(),
                    pending: HashMap::new(),
                    next_id: 1,
                    counters,
                    ping: None,
                };
                conn.counters.connected();
                let why = conn.run(&mut rx, reader, writer).await;
                conn.counters.disconnected();
                why
            }
            Err(why) => why,
        };
        tracing::debug!(%addr, %failure, "peer connection ended");
        // Forget this connection (unless a newer one replaced it), then fail what is queued:
        // it was never written.
        {
            let mut conns = self.conns.lock().expect("peer connections");
            if conns.get(&addr).is_some_and(|(s, _)| *s == serial) {
                conns.remove(&addr);
            }
        }
        rx.close();
        let counters = self.metrics.at(&addr);
        while let Ok(msg) = rx.try_recv() {
            unreachable(msg, &failure, counters.as_deref());
        }
    }

    async fn dial(
        &self,
        addr: &str,
    ) -> Result<(PeerReader, PeerWriter, Arc<PeerCounters>), String> {
        let stream = open(addr, &self.tls).await?;
        let (reader, mut writer) = tokio::io::split(stream);
        let mut reader = BufReader::new(reader);
        let hello = self.me.encode();
        write_frame(&mut writer, &[&hello])
            .await
            .map_err(|e| format!("saying hello: {e}"))?;
        let theirs = tokio::time::timeout(CONNECT_TIMEOUT, read_frame(&mut reader))
            .await
            .map_err(|_| "no hello back".to_owned())?
            .map_err(|e| format!("reading the hello: {e}"))?;
        let theirs = Hello::decode(theirs).map_err(|e| e.to_string())?;
        if theirs.cluster_id != self.me.cluster_id {
            return Err(format!(
                "it belongs to cluster {:x}, this node to {:x}",
                theirs.cluster_id, self.me.cluster_id
            ));
        }
        let counters = self.metrics.dialed(addr, theirs.member_id);
        self.learned(theirs);
        Ok((reader, writer, counters))
    }
}

/// Answers a message that was never written as `Unreachable`: a send failure to the member last
/// seen at its address.
fn unreachable(msg: Outbound, why: &str, counters: Option<&PeerCounters>) {
    if let Some(c) = counters {
        c.send_failed();
    }
    let _ = msg.reply.send(Err(PeerFailure::Unreachable {
        addr: msg.addr,
        why: why.to_owned(),
    }));
}

/// An answer read from a connection.
struct Answer {
    id: u64,
    status: u8,
    body: Bytes,
}

/// A message written and not yet answered: where its answer goes, when it was written, and
/// how long it may wait.
type Waiting = (
    oneshot::Sender<Result<Bytes, PeerFailure>>,
    Instant,
    Duration,
);

/// The writing side of one outgoing connection and the messages awaiting answers.
struct Connection {
    addr: String,
    pending: HashMap<u64, Waiting>,
    next_id: u64,
    /// The peer's counters (the member its hello named).
    counters: Arc<PeerCounters>,
    /// The ping waiting for its answer: its request id and when it was written.
    ping: Option<(u64, Instant)>,
}

impl Connection {
    /// Runs until the connection fails; returns why. Pending answers are failed as `Lost`.
    async fn run(
        &mut self,
        rx: &mut mpsc::Receiver<Outbound>,
        reader: PeerReader,
        writer: PeerWriter,
    ) -> String {
        let (answers_tx, mut answers) = mpsc::channel::<Result<Answer, String>>(1024);
        let read_task = tokio::spawn(read_answers(reader, answers_tx, self.counters.clone()));
        let mut writer = BufWriter::new(writer);
        let mut sweep = tokio::time::interval(DEADLINE_SWEEP);
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + PING_INTERVAL, PING_INTERVAL);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let why = loop {
            tokio::select! {
                msg = rx.recv() => {
                    let Some(msg) = msg else { break "the node is stopping".to_owned() };
                    if let Err(e) = self.write(&mut writer, msg).await {
                        break format!("writing: {e}");
                    }
                    // Write everything already queued, then flush once.
                    let mut failed = None;
                    while let Ok(msg) = rx.try_recv() {
                        if let Err(e) = self.write(&mut writer, msg).await {
                            failed = Some(format!("writing: {e}"));
                            break;
                        }
                    }
                    if let Some(why) = failed {
                        break why;
                    }
                    if let Err(e) = writer.flush().await {
                        self.counters.send_failed();
                        break format!("writing: {e}");
                    }
                }
                _ = ping.tick(), if self.ping.is_none() => {
                    if let Err(e) = self.write_ping(&mut writer).await {
                        self.counters.send_failed();
                        break format!("writing: {e}");
                    }
                }
                answer = answers.recv() => match answer {
                    Some(Ok(a)) => self.answered(a),
                    Some(Err(why)) => break why,
                    None => break "the reader stopped".to_owned(),
                },
                _ = sweep.tick() => self.expire(),
            }
        };
        read_task.abort();
        for (_, (reply, _, _)) in self.pending.drain() {
            let _ = reply.send(Err(PeerFailure::Lost {
                addr: self.addr.clone(),
                why: why.clone(),
            }));
        }
        why
    }

    async fn write(
        &mut self,
        writer: &mut BufWriter<PeerWriter>,
        msg: Outbound,
    ) -> std::io::Result<()> {
        let now = Instant::now();
        let id = self.next_id;
        self.next_id += 1;
        let mut head = [0u8; 13];
        head[..8].copy_from_slice(&id.to_le_bytes());
        head[8] = msg.kind as u8;
        head[9..].copy_from_slice(&msg.shard.0.to_le_bytes());
        self.pending.insert(id, (msg.reply, now, msg.timeout));
        let written = write_frame(writer, &[&head, &msg.body]).await;
        match &written {
            Ok(()) => self.counters.sent(REQUEST_HEAD + msg.body.len()),
            Err(_) => self.counters.send_failed(),
        }
        written
    }

    /// Writes and flushes a ping (shard 0, empty body), timed from here to its answer.
    async fn write_ping(&mut self, writer: &mut BufWriter<PeerWriter>) -> std::io::Result<()> {
        let id = self.next_id;
        self.next_id += 1;
        let mut head = [0u8; 13];
        head[..8].copy_from_slice(&id.to_le_bytes());
        head[8] = KIND_PING;
        write_frame(writer, &[&head]).await?;
        writer.flush().await?;
        self.counters.sent(REQUEST_HEAD);
        self.ping = Some((id, Instant::now()));
        Ok(())
    }

    fn answered(&mut self, a: Answer) {
        if let Some((id, sent)) = self.ping {
            if id == a.id {
                // Answered or refused as unknown (an older member): a round trip either way.
                self.counters.round_trip(sent.elapsed());
                self.ping = None;
                return;
            }
        }
        let Some((reply, _, _)) = self.pending.remove(&a.id) else {
            return; // its deadline passed and it was answered already
        };
        let result = if a.status == STATUS_OK {
            Ok(a.body)
        } else {
            Err(PeerFailure::Refused {
                addr: self.addr.clone(),
                why: String::from_utf8_lossy(&a.body).into_owned(),
            })
        };
        let _ = reply.send(result);
    }

    fn expire(&mut self) {
        let now = Instant::now();
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, (reply, sent, timeout))| reply.is_closed() || now - *sent >= *timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some((reply, _, after)) = self.pending.remove(&id) {
                let _ = reply.send(Err(PeerFailure::Timeout {
                    addr: self.addr.clone(),
                    after,
                }));
            }
        }
    }
}

async fn read_answers(
    mut reader: PeerReader,
    tx: mpsc::Sender<Result<Answer, String>>,
    counters: Arc<PeerCounters>,
) {
    loop {
        let answer = match read_frame(&mut reader).await {
            Ok(mut frame) => {
                counters.received(4 + frame.len());
                if frame.len() < 9 {
                    Err("a truncated answer".to_owned())
                } else {
                    let id = frame.get_u64_le();
                    let status = frame.get_u8();
                    Ok(Answer {
                        id,
                        status,
                        body: frame,
                    })
                }
            }
            Err(e) => {
                if e.kind() != std::io::ErrorKind::UnexpectedEof {
                    counters.receive_failed();
                }
                Err(format!("reading: {e}"))
            }
        };
        let failed = answer.is_err();
        if tx.send(answer).await.is_err() || failed {
            return;
        }
    }
}

/// The id of the cluster the members at `peers` (peer URLs) belong to, asked of them with a
/// hello whose cluster id is 0: how a member joining a running cluster learns it (etcd asks its
/// peers the same). Tries each peer in turn until one answers or `within` passes.
pub async fn discover_cluster_id(
    me: &Hello,
    peers: &[String],
    tls: &PeerTls,
    within: Duration,
) -> anyhow::Result<u64> {
    let deadline = Instant::now() + within;
    let asking = Hello {
        cluster_id: 0,
        ..me.clone()
    };
    let mut last = String::from("no peer to ask");
    loop {
        for url in peers {
            match ask_cluster_id(&asking, url, tls).await {
                Ok(id) if id != 0 => return Ok(id),
                Ok(_) => last = format!("{url} does not know its cluster yet"),
                Err(e) => last = format!("{url}: {e:#}"),
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "no member of the cluster answered within {within:?} (asked {}); last: {last}",
                peers.join(",")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn ask_cluster_id(asking: &Hello, url: &str, tls: &PeerTls) -> anyhow::Result<u64> {
    let mut stream = open(url, tls).await.map_err(anyhow::Error::msg)?;
    write_frame(&mut stream, &[&asking.encode()]).await?;
    stream.flush().await?;
    let theirs = tokio::time::timeout(CONNECT_TIMEOUT, read_frame(&mut stream))
        .await
        .context("no hello back")??;
    Ok(Hello::decode(theirs)?.cluster_id)
}

/// The shards a node serves peers for; set once they have started (messages that arrive
/// earlier are refused, and the sender retries).
pub type ShardSlot = Arc<OnceLock<Vec<ShardHandle>>>;

/// Accepts peer connections on `listener` until `stop` resolves.
pub async fn serve(
    listener: TcpListener,
    hub: Arc<PeerHub>,
    shards: ShardSlot,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    // Connections end with the listener (dropping the set aborts them).
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, from)) => {
                    let _ = stream.set_nodelay(true);
                    let hub = hub.clone();
                    let shards = shards.clone();
                    conns.spawn(async move {
                        let stream = match accept_tls(stream, &hub.tls).await {
                            Ok(s) => s,
                            Err(why) => {
                                tracing::info!(%from, %why, "rejected peer connection");
                                return;
                            }
                        };
                        if let Err(err) = serve_connection(stream, hub, shards).await {
                            tracing::debug!(%from, %err, "peer connection closed");
                        }
                    });
                }
                Err(err) => {
                    tracing::warn!(%err, "accepting a peer connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            () = &mut stop => return,
        }
    }
}

/// An accepted connection, after its TLS handshake and the allowed-CN/hostname check when the
/// node serves its peers over TLS.
async fn accept_tls(stream: TcpStream, tls: &PeerTls) -> Result<Box<dyn PeerIo>, String> {
    let Some(acceptor) = &tls.acceptor else {
        return Ok(Box::new(stream));
    };
    let stream = tokio::time::timeout(crate::tls::HANDSHAKE_TIMEOUT, acceptor.accept(stream))
        .await
        .map_err(|_| "the TLS handshake did not finish".to_owned())?
        .map_err(|e| format!("TLS handshake: {e}"))?;
    tls.check_peer(stream.get_ref().1.peer_certificates())?;
    Ok(Box::new(stream))
}

/// One incoming connection: hello, then each request frame handed to its shard concurrently,
/// answers written back as they complete.
async fn serve_connection(
    stream: Box<dyn PeerIo>,
    hub: Arc<PeerHub>,
    shards: ShardSlot,
) -> anyhow::Result<()> {
    let (reader, writer) = tokio::io::split(stream);
    let mut reader = BufReader::new(reader);
    let mut writer = BufWriter::new(writer);
    let theirs = tokio::time::timeout(CONNECT_TIMEOUT, read_frame(&mut reader))
        .await
        .context("no hello")??;
    let theirs = Hello::decode(theirs)?;
    write_frame(&mut writer, &[&hub.me.encode()]).await?;
    writer.flush().await?;
    if theirs.cluster_id == 0 {
        // A member joining with `--initial-cluster-state existing` asking which cluster this
        // is ([`discover_cluster_id`]): the hello answered it.
        return Ok(());
    }
    if theirs.cluster_id != hub.me.cluster_id {
        bail!(
            "refused member {:x} of cluster {:x} (this node is in cluster {:x})",
            theirs.member_id,
            theirs.cluster_id,
            hub.me.cluster_id
        );
    }
    let counters = hub.metrics.of(theirs.member_id);
    hub.learned(theirs);
    let (answers_tx, mut answers) = mpsc::channel::<(u64, u8, Bytes)>(OUTBOUND_QUEUE_MAX);
    let sent = counters.clone();
    let write_task = tokio::spawn(async move {
        let written = async {
            while let Some((id, status, body)) = answers.recv().await {
                let mut head = [0u8; 9];
                head[..8].copy_from_slice(&id.to_le_bytes());
                head[8] = status;
                write_frame(&mut writer, &[&head, &body]).await?;
                sent.sent(ANSWER_HEAD + body.len());
                if answers.is_empty() {
                    writer.flush().await?;
                }
            }
            Ok::<_, std::io::Error>(())
        }
        .await;
        if written.is_err() {
            sent.send_failed();
        }
        written
    });
    let result = loop {
        let mut frame = match read_frame(&mut reader).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break Ok(()),
            Err(e) => {
                counters.receive_failed();
                break Err(e.into());
            }
        };
        counters.received(4 + frame.len());
        if frame.len() < 13 {
            break Err(anyhow::anyhow!("a truncated request"));
        }
        let id = frame.get_u64_le();
        let kind = frame.get_u8();
        let shard = frame.get_u32_le() as usize;
        if kind == KIND_PING {
            // Answered here, behind the answers already waiting: the round trip includes them.
            if answers_tx
                .send((id, STATUS_OK, Bytes::new()))
                .await
                .is_err()
            {
                break Ok(());
            }
            continue;
        }
        let answers = answers_tx.clone();
        let shards = shards.clone();
        tokio::spawn(async move {
            let answer = match (
                PeerKind::from_u8(kind),
                shards.get().and_then(|s| s.get(shard)),
            ) {
                (None, _) => Err(format!("unknown message kind {kind}")),
                (_, None) if shards.get().is_none() => Err("shards are starting".to_owned()),
                (_, None) => Err(format!("no shard {shard} on this node")),
                (Some(kind), Some(handle)) => handle.peer_message(kind, frame).await,
            };
            let (status, body) = match answer {
                Ok(body) => (STATUS_OK, body),
                Err(why) => (STATUS_REFUSED, Bytes::from(why)),
            };
            let _ = answers.send((id, status, body)).await;
        });
    };
    drop(answers_tx);
    let _ = write_task.await;
    result
}

#[cfg(test)]
mod tests;
