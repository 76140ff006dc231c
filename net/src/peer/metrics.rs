//! etcd's peer network metrics, counted by the peer transport (`peer.rs`):
//! `etcd_network_peer_sent_bytes_total{To}`, `etcd_network_peer_received_bytes_total{From}`,
//! `etcd_network_peer_sent_failures_total{To}`, `etcd_network_peer_received_failures_total{From}`
//! and the histogram `etcd_network_peer_round_trip_time_seconds{To}`, each labelled with the
//! peer's member id in lowercase hex without leading zeros, as etcd writes member ids; and
//! `etcd_network_active_peers{Local,Remote}` (1 while this member's connection to the peer is
//! up) and `etcd_network_disconnected_peers_total{Local,Remote}` (such connections that ended).
//!
//! Invariants: no lock on the data path. Each peer's counters are one [`PeerCounters`] of
//! relaxed atomics; a connection looks its peer's up once, when the hello names the peer, and
//! adds to them from then on. The table of peers is locked only to find or create a peer's
//! counters (once per connection, and when a message to an address fails before any
//! connection to it came up) and to write the page. A series is shown once it is non-zero
//! and a family once it has a series, as etcd's labelled counters appear only once touched.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Finite round-trip buckets; one more counts what exceeds the last bound.
pub const RTT_BUCKETS: usize = 16;

/// etcd's round-trip bucket bounds: 0.1 ms doubling up to 3.2768 s.
pub const RTT_BOUNDS_SECONDS: [f64; RTT_BUCKETS] = [
    0.0001, 0.0002, 0.0004, 0.0008, 0.0016, 0.0032, 0.0064, 0.0128, 0.0256, 0.0512, 0.1024, 0.2048,
    0.4096, 0.8192, 1.6384, 3.2768,
];

/// The same bounds in nanoseconds, which observations compare against.
const RTT_BOUNDS_NS: [u64; RTT_BUCKETS] = {
    let mut out = [0u64; RTT_BUCKETS];
    let mut i = 0;
    while i < RTT_BUCKETS {
        out[i] = 100_000 << i;
        i += 1;
    }
    out
};
const _: () = assert!(RTT_BOUNDS_NS[RTT_BUCKETS - 1] == 3_276_800_000);

/// What this member exchanged with one peer, over every connection to and from it.
#[derive(Default)]
pub struct PeerCounters {
    sent_bytes: AtomicU64,
    received_bytes: AtomicU64,
    sent_failures: AtomicU64,
    received_failures: AtomicU64,
    /// Round trips per bucket (not cumulative), the last above 3.2768 s.
    rtt_buckets: [AtomicU64; RTT_BUCKETS + 1],
    rtt_sum_ns: AtomicU64,
    /// This member's connections to the peer that are up, and those that ended.
    connections_up: AtomicU64,
    disconnects: AtomicU64,
}

impl PeerCounters {
    /// `n` bytes written to the peer.
    pub fn sent(&self, n: usize) {
        self.sent_bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// `n` bytes read from the peer.
    pub fn received(&self, n: usize) {
        self.received_bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// A message that could not be sent to the peer, or a write to it that failed.
    pub fn send_failed(&self) {
        self.sent_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// A read from the peer that failed other than by the peer closing the connection.
    pub fn receive_failed(&self) {
        self.received_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection to the peer came up (its hello answered).
    pub fn connected(&self) {
        self.connections_up.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection that [`PeerCounters::connected`] ended.
    pub fn disconnected(&self) {
        self.connections_up.fetch_sub(1, Ordering::Relaxed);
        self.disconnects.fetch_add(1, Ordering::Relaxed);
    }

    /// One timed round trip to the peer.
    pub fn round_trip(&self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        // Prometheus buckets are `le`: a value equal to a bound falls in that bound's bucket.
        let i = RTT_BOUNDS_NS.partition_point(|&bound| bound < ns);
        self.rtt_buckets[i].fetch_add(1, Ordering::Relaxed);
        self.rtt_sum_ns.fetch_add(ns, Ordering::Relaxed);
    }
}

/// Every peer's counters, by member id.
#[derive(Default)]
pub struct PeerMetrics {
    peers: Mutex<BTreeMap<u64, Arc<PeerCounters>>>,
    /// Which member answered at each peer URL this member dialed, so that a message to an
    /// address that can no longer be reached counts against that member.
    members_at: Mutex<HashMap<String, u64>>,
}

impl PeerMetrics {
    /// Member `id`'s counters, created on first use.
    pub fn of(&self, id: u64) -> Arc<PeerCounters> {
        self.peers
            .lock()
            .expect("peer metrics")
            .entry(id)
            .or_default()
            .clone()
    }

    /// Member `id` answered at peer URL `addr`: its counters.
    pub fn dialed(&self, addr: &str, id: u64) -> Arc<PeerCounters> {
        self.members_at
            .lock()
            .expect("peer addresses")
            .insert(addr.to_owned(), id);
        self.of(id)
    }

    /// The counters of the member last seen at `addr`; none when no connection to it ever came
    /// up (then nothing says which member it is).
    pub fn at(&self, addr: &str) -> Option<Arc<PeerCounters>> {
        let id = *self.members_at.lock().expect("peer addresses").get(addr)?;
        Some(self.of(id))
    }

    /// The families in Prometheus text, with etcd 3.4.23's help texts; `local` is this
    /// member's id.
    pub fn exposition(&self, local: u64) -> String {
        let peers: Vec<(u64, Arc<PeerCounters>)> = self
            .peers
            .lock()
            .expect("peer metrics")
            .iter()
            .map(|(id, c)| (*id, c.clone()))
            .collect();
        let mut out = String::new();
        connection_families(&mut out, &peers, local);
        let received = [
            Counter {
                name: "etcd_network_peer_received_bytes_total",
                help: "The total number of bytes received from peers.",
                label: "From",
                field: |c| &c.received_bytes,
            },
            Counter {
                name: "etcd_network_peer_received_failures_total",
                help: "The total number of receive failures from peers.",
                label: "From",
                field: |c| &c.received_failures,
            },
        ];
        for family in &received {
            counter_family(&mut out, &peers, family);
        }
        rtt_family(&mut out, &peers);
        let sent = [
            Counter {
                name: "etcd_network_peer_sent_bytes_total",
                help: "The total number of bytes sent to peers.",
                label: "To",
                field: |c| &c.sent_bytes,
            },
            Counter {
                name: "etcd_network_peer_sent_failures_total",
                help: "The total number of send failures from peers.",
                label: "To",
                field: |c| &c.sent_failures,
            },
        ];
        for family in &sent {
            counter_family(&mut out, &peers, family);
        }
        out
    }
}

/// `etcd_network_active_peers` and `etcd_network_disconnected_peers_total`: a sample per peer
/// this member ever connected to (the gauge 1 while a connection is up; two at once, one
/// replacing another, still count 1), and per peer whose connection ever ended.
fn connection_families(out: &mut String, peers: &[(u64, Arc<PeerCounters>)], local: u64) {
    let mut active = String::new();
    let mut disconnected = String::new();
    for (id, c) in peers {
        let up = c.connections_up.load(Ordering::Relaxed).min(1);
        let ended = c.disconnects.load(Ordering::Relaxed);
        let labels = format!("Local=\"{local:x}\",Remote=\"{id:x}\"");
        if up > 0 || ended > 0 {
            let _ = writeln!(active, "etcd_network_active_peers{{{labels}}} {up}");
        }
        if ended > 0 {
            let _ = writeln!(
                disconnected,
                "etcd_network_disconnected_peers_total{{{labels}}} {ended}"
            );
        }
    }
    if !active.is_empty() {
        let name = "etcd_network_active_peers";
        let _ = write!(
            out,
            "# HELP {name} The current number of active peer connections.\n\
             # TYPE {name} gauge\n{active}"
        );
    }
    if !disconnected.is_empty() {
        let name = "etcd_network_disconnected_peers_total";
        let _ = write!(
            out,
            "# HELP {name} The total number of disconnected peers.\n\
             # TYPE {name} counter\n{disconnected}"
        );
    }
}

/// A labelled counter family: its name, help text, label name and the counter it shows.
struct Counter {
    name: &'static str,
    help: &'static str,
    label: &'static str,
    field: fn(&PeerCounters) -> &AtomicU64,
}

/// One labelled counter: a sample per peer whose count is not zero.
fn counter_family(out: &mut String, peers: &[(u64, Arc<PeerCounters>)], family: &Counter) {
    let Counter {
        name,
        help,
        label,
        field,
    } = family;
    let mut samples = String::new();
    for (id, c) in peers {
        let n = field(c).load(Ordering::Relaxed);
        if n > 0 {
            let _ = writeln!(samples, "{name}{{{label}=\"{id:x}\"}} {n}");
        }
    }
    if !samples.is_empty() {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{samples}"
        );
    }
}

/// The round-trip histogram: cumulative `le` buckets, `+Inf`, sum and count per peer timed.
fn rtt_family(out: &mut String, peers: &[(u64, Arc<PeerCounters>)]) {
    let name = "etcd_network_peer_round_trip_time_seconds";
    let mut samples = String::new();
    for (id, c) in peers {
        let buckets: Vec<u64> = c
            .rtt_buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        // The count is the buckets' total, so the page agrees with itself mid-update.
        let count: u64 = buckets.iter().sum();
        if count == 0 {
            continue;
        }
        let mut cumulative = 0;
        for (bound, n) in RTT_BOUNDS_SECONDS.iter().zip(&buckets) {
            cumulative += n;
            let _ = writeln!(
                samples,
                "{name}_bucket{{To=\"{id:x}\",le=\"{bound}\"}} {cumulative}"
            );
        }
        let sum = c.rtt_sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = write!(
            samples,
            "{name}_bucket{{To=\"{id:x}\",le=\"+Inf\"}} {count}\n\
             {name}_sum{{To=\"{id:x}\"}} {sum}\n{name}_count{{To=\"{id:x}\"}} {count}\n"
        );
    }
    if !samples.is_empty() {
        let _ = write!(
            out,
            "# HELP {name} Round-Trip-Time histogram between peers\n\
             # TYPE {name} histogram\n{samples}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_appear_once_touched_labelled_with_the_member_id_in_hex() {
        let m = PeerMetrics::default();
        assert_eq!(m.exposition(1), "");
        assert!(m.at("http://127.0.0.1:1").is_none());
        let a = m.dialed("http://127.0.0.1:1", 0x0e44_70d3_6d12_a02b);
        a.sent(100);
        a.sent(20);
        a.received(7);
        m.of(0x2364_305c_fa3e_aef5).received(3);
        m.at("http://127.0.0.1:1").expect("dialed").send_failed();
        let text = m.exposition(1);
        for line in [
            "# TYPE etcd_network_peer_sent_bytes_total counter",
            "etcd_network_peer_sent_bytes_total{To=\"e4470d36d12a02b\"} 120",
            "etcd_network_peer_received_bytes_total{From=\"e4470d36d12a02b\"} 7",
            "etcd_network_peer_received_bytes_total{From=\"2364305cfa3eaef5\"} 3",
            "# HELP etcd_network_peer_sent_failures_total The total number of send failures \
             from peers.",
            "etcd_network_peer_sent_failures_total{To=\"e4470d36d12a02b\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
        // Untouched series and families are not shown.
        assert!(!text.contains("sent_bytes_total{To=\"2364305cfa3eaef5\"}"));
        assert!(!text.contains("received_failures"));
        assert!(!text.contains("round_trip"));
        assert!(!text.contains("active_peers"));
    }

    #[test]
    fn a_connection_up_is_an_active_peer_and_its_end_a_disconnection() {
        let m = PeerMetrics::default();
        let c = m.of(0xb);
        c.connected();
        let text = m.exposition(0xa);
        assert!(text.contains("etcd_network_active_peers{Local=\"a\",Remote=\"b\"} 1\n"));
        assert!(!text.contains("disconnected"), "{text}");
        // A new connection comes up before the old one ends: still one active peer.
        c.connected();
        c.disconnected();
        let text = m.exposition(0xa);
        assert!(text.contains("etcd_network_active_peers{Local=\"a\",Remote=\"b\"} 1\n"));
        c.disconnected();
        let text = m.exposition(0xa);
        assert!(text.contains("etcd_network_active_peers{Local=\"a\",Remote=\"b\"} 0\n"));
        assert!(text.contains(
            "# TYPE etcd_network_disconnected_peers_total counter\n\
             etcd_network_disconnected_peers_total{Local=\"a\",Remote=\"b\"} 2\n"
        ));
    }

    #[test]
    fn round_trips_fill_etcds_buckets_cumulatively() {
        let m = PeerMetrics::default();
        let c = m.of(0xab);
        c.round_trip(Duration::from_micros(100)); // on the first bound: in it
        c.round_trip(Duration::from_micros(150));
        c.round_trip(Duration::from_millis(3));
        c.round_trip(Duration::from_secs(5));
        let text = m.exposition(1);
        let name = "etcd_network_peer_round_trip_time_seconds";
        assert!(text.contains(&format!("# TYPE {name} histogram\n")));
        let buckets: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with(&format!("{name}_bucket")))
            .collect();
        assert_eq!(buckets.len(), RTT_BUCKETS + 1);
        for (le, n) in [
            ("0.0001", 1),
            ("0.0002", 2),
            ("0.0016", 2),
            ("0.0032", 3),
            ("3.2768", 3),
            ("+Inf", 4),
        ] {
            let line = format!("{name}_bucket{{To=\"ab\",le=\"{le}\"}} {n}");
            assert!(buckets.contains(&line.as_str()), "{line}\n{text}");
        }
        assert!(text.contains(&format!("{name}_count{{To=\"ab\"}} 4\n")));
        assert!(text.contains(&format!("{name}_sum{{To=\"ab\"}} 5.00325\n")));
    }
}
