//! `/metrics`: the etcd metric names operators' alerts and dashboards read (the etcd-mixin),
//! side by side with etcd 3.4.23.
//!
//! `work_moves_the_same_metrics_as_etcd`: etcd and Ballast each get the same work (three puts,
//! a range, a txn with a compare and a put, a delete, and a LeaseRevoke of an unknown lease,
//! which fails with NotFound). Then, for every family of [`FAMILIES`] etcd shows, Ballast shows
//! it with the same TYPE and the same label names; the mvcc counters and every gRPC series
//! moved by the same amounts on both (etcd's counting rules, e.g. the txn's compare counts as
//! a range); the WAL fsync histogram grew on both, on Ballast by at least one and at most the
//! number of requests (fsyncs are not comparable: group commit); the committed and applied
//! proposal figures grew on both, and nothing is pending once the answers are in.
//!
//! `peer_and_client_network_metrics_move_as_etcds`: a 3-member cluster of each, the same puts
//! through each leader. On both, the etcd network families exist with the same TYPE and label
//! names; the leader's bytes sent to each follower grew by at least the values it replicated,
//! labelled with the followers' member ids as Status names them; the client gRPC bytes
//! received moved by exactly the same amount on both (the same request messages); `/health`
//! counts its answers; a round trip to each follower is timed; and once a follower is killed,
//! the leader counts send failures to it.
//!
//! Invariants: every wait is bounded; the servers are killed and their directories removed
//! when the test ends, also when it fails.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use ballast_conformance::{Kind, Server};
use ballast_proto::etcdserverpb::{
    compare, request_op, Compare, DeleteRangeRequest, LeaseRevokeRequest, PutRequest, RangeRequest,
    RequestOp, TxnRequest,
};

/// The families this conformance covers.
const FAMILIES: [&str; 22] = [
    "etcd_disk_wal_fsync_duration_seconds",
    "etcd_disk_backend_commit_duration_seconds",
    "etcd_server_leader_changes_seen_total",
    "etcd_server_proposals_committed_total",
    "etcd_server_proposals_applied_total",
    "etcd_server_proposals_pending",
    "etcd_server_proposals_failed_total",
    "etcd_mvcc_put_total",
    "etcd_mvcc_delete_total",
    "etcd_mvcc_range_total",
    "etcd_mvcc_txn_total",
    "grpc_server_started_total",
    "grpc_server_handled_total",
    "grpc_server_msg_received_total",
    "grpc_server_msg_sent_total",
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_max_fds",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
    "process_virtual_memory_bytes",
    "process_virtual_memory_max_bytes",
];

/// Requests the work makes.
const REQUESTS: f64 = 7.0;

/// One `/metrics` page: each family's TYPE, and each sample (name and sorted labels) with its
/// value.
struct Page {
    types: BTreeMap<String, String>,
    samples: BTreeMap<String, f64>,
    /// Per family, the label names its samples carry (`le` included for buckets).
    label_names: BTreeMap<String, BTreeSet<String>>,
}

impl Page {
    fn parse(text: &str) -> Result<Page> {
        let mut types = BTreeMap::new();
        let mut samples = BTreeMap::new();
        let mut label_names: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').context("TYPE line")?;
                types.insert(name.to_string(), kind.to_string());
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').context("sample line")?;
            let value: f64 = value.parse().with_context(|| format!("value in {line}"))?;
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, labels.trim_end_matches('}')),
                None => (series, ""),
            };
            let mut pairs: Vec<&str> = labels.split(',').filter(|p| !p.is_empty()).collect();
            pairs.sort_unstable();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| types.contains_key(*f)))
                .unwrap_or(name);
            let names = label_names.entry(family.to_string()).or_default();
            for p in &pairs {
                names.insert(p.split_once('=').context("label")?.0.to_string());
            }
            samples.insert(format!("{name}{{{}}}", pairs.join(",")), value);
        }
        Ok(Page {
            types,
            samples,
            label_names,
        })
    }

    fn value(&self, series: &str) -> f64 {
        self.samples.get(series).copied().unwrap_or(0.0)
    }
}

/// Samples whose series starts with `prefix`, with how much each moved from `before`.
fn deltas(before: &Page, after: &Page, prefix: &str) -> BTreeMap<String, f64> {
    after
        .samples
        .iter()
        .filter(|(series, _)| series.starts_with(prefix))
        .map(|(series, v)| (series.clone(), v - before.value(series)))
        .collect()
}

async fn work(server: &Server) -> Result<()> {
    let mut c = server.clients().await?;
    for i in 0..3 {
        c.kv.put(PutRequest {
            key: format!("metrics/{i}").into_bytes().into(),
            value: bytes::Bytes::from_static(b"v"),
            ..PutRequest::default()
        })
        .await?;
    }
    c.kv.range(RangeRequest {
        key: bytes::Bytes::from_static(b"metrics/0"),
        ..RangeRequest::default()
    })
    .await?;
    c.kv.txn(TxnRequest {
        compare: vec![Compare {
            key: bytes::Bytes::from_static(b"metrics/1"),
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Value as i32,
            target_union: Some(compare::TargetUnion::Value(bytes::Bytes::from_static(b"v"))),
            ..Compare::default()
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: bytes::Bytes::from_static(b"metrics/txn"),
                value: bytes::Bytes::from_static(b"t"),
                ..PutRequest::default()
            })),
        }],
        failure: vec![],
    })
    .await?;
    c.kv.delete_range(DeleteRangeRequest {
        key: bytes::Bytes::from_static(b"metrics/2"),
        ..DeleteRangeRequest::default()
    })
    .await?;
    let refused = c
        .lease
        .lease_revoke(LeaseRevokeRequest { id: 0x7e57 })
        .await
        .expect_err("revoking an unknown lease fails");
    ensure!(
        refused.code() == tonic::Code::NotFound,
        "{} LeaseRevoke: {refused:?}",
        server.kind().label()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_moves_the_same_metrics_as_etcd() -> Result<()> {
    let (etcd, ballast) =
        tokio::try_join!(Server::start(Kind::Etcd), Server::start(Kind::Ballast))?;
    let mut pages = Vec::new();
    for server in [&etcd, &ballast] {
        let before = Page::parse(&server.metrics().await?)?;
        work(server).await?;
        let after = Page::parse(&server.metrics().await?)?;
        pages.push((before, after));
    }
    let [(e0, e1), (b0, b1)] = [&pages[0], &pages[1]].map(|(a, b)| (a, b));

    for family in FAMILIES {
        let Some(kind) = e1.types.get(family) else {
            continue;
        };
        ensure!(
            b1.types.get(family) == Some(kind),
            "{family}: etcd's TYPE {kind}, Ballast's {:?}",
            b1.types.get(family)
        );
        ensure!(
            b1.label_names.get(family) == e1.label_names.get(family),
            "{family}: etcd's labels {:?}, Ballast's {:?}",
            e1.label_names.get(family),
            b1.label_names.get(family)
        );
    }

    // The same counting rules: the same work moves the same counters.
    for prefix in ["etcd_mvcc_", "grpc_server_"] {
        let (de, db) = (deltas(e0, e1, prefix), deltas(b0, b1, prefix));
        for (series, moved) in &de {
            if series.starts_with("etcd_mvcc_db") {
                continue; // sizes, not counts
            }
            if *moved != 0.0 || db.contains_key(series) {
                ensure!(
                    db.get(series) == Some(moved),
                    "{series}: etcd moved {moved}, Ballast {:?}",
                    db.get(series)
                );
            }
        }
    }
    let put_ok = "grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Put\",\
                  grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"}";
    ensure!(b1.value(put_ok) - b0.value(put_ok) == 3.0, "{put_ok}");
    let revoke_not_found = "grpc_server_handled_total{grpc_code=\"NotFound\",\
                            grpc_method=\"LeaseRevoke\",grpc_service=\"etcdserverpb.Lease\",\
                            grpc_type=\"unary\"}";
    ensure!(
        b1.value(revoke_not_found) - b0.value(revoke_not_found) == 1.0,
        "{revoke_not_found}"
    );
    ensure!(b1.value("etcd_mvcc_put_total{}") - b0.value("etcd_mvcc_put_total{}") == 4.0);

    // Disk histograms: real measurements, plausible counts, cumulative buckets.
    let fsyncs = "etcd_disk_wal_fsync_duration_seconds_count{}";
    for (label, before, after) in [("etcd", e0, e1), ("Ballast", b0, b1)] {
        let grew = after.value(fsyncs) - before.value(fsyncs);
        ensure!(grew >= 1.0, "{label}: {fsyncs} grew by {grew}");
        let inf = "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"+Inf\"}";
        ensure!(
            after.value(inf) == after.value(fsyncs),
            "{label}: +Inf bucket"
        );
        ensure!(after.value("etcd_disk_wal_fsync_duration_seconds_sum{}") > 0.0);
        for proposals in [
            "etcd_server_proposals_committed_total{}",
            "etcd_server_proposals_applied_total{}",
        ] {
            ensure!(
                after.value(proposals) > before.value(proposals),
                "{label} {proposals}"
            );
        }
        ensure!(
            after.value("etcd_server_leader_changes_seen_total{}") == 1.0,
            "{label}"
        );
        ensure!(
            after.value("etcd_server_proposals_pending{}") == 0.0,
            "{label}"
        );
    }
    // This process's figures: a member's memory, descriptors and start time.
    ensure!(b1.value("process_resident_memory_bytes{}") > 1e6);
    ensure!(b1.value("process_open_fds{}") >= 3.0);
    ensure!(b1.value("process_max_fds{}") >= b1.value("process_open_fds{}"));
    ensure!(b1.value("process_start_time_seconds{}") > 1.6e9);
    // One fsync per group commit, and a commit holds at least one entry: never more fsyncs
    // than entries written (the requests' and, with several shards, the entries that keep
    // their revisions aligned, written in the background), but for one group commit per
    // shard synced and not yet counted committed when the page was read.
    let grew = b1.value(fsyncs) - b0.value(fsyncs);
    let committed = "etcd_server_proposals_committed_total{}";
    let entries = b1.value(committed) - b0.value(committed);
    let shards = ballast.shard_count().await? as f64;
    ensure!(
        grew <= entries + shards,
        "Ballast: {grew} fsyncs for {entries} entries committed on {shards} shards \
         ({REQUESTS} requests)"
    );
    let mut last = 0.0;
    // etcd's bounds: 1 ms doubling, 14 buckets.
    for bound in (0..14).map(|i| 0.001 * f64::from(1u32 << i)) {
        let series = format!("etcd_disk_wal_fsync_duration_seconds_bucket{{le=\"{bound}\"}}");
        let (n, in_etcd) = (b1.value(&series), e1.samples.contains_key(&series));
        ensure!(in_etcd && b1.samples.contains_key(&series), "{series}");
        ensure!(n >= last, "{series}: buckets are cumulative");
        last = n;
    }
    Ok(())
}

/// Puts through the leader in the peer-metrics test, and the bytes of each value.
const PEER_PUTS: usize = 20;
const PEER_VALUE_BYTES: usize = 1024;

/// The etcd network and server families the peer-metrics test compares.
const NETWORK_FAMILIES: [&str; 15] = [
    "etcd_network_active_peers",
    "etcd_network_disconnected_peers_total",
    "etcd_server_is_learner",
    "etcd_debugging_mvcc_db_total_size_in_bytes",
    "etcd_network_peer_sent_bytes_total",
    "etcd_network_peer_received_bytes_total",
    "etcd_network_peer_round_trip_time_seconds",
    "etcd_network_peer_sent_failures_total",
    "etcd_network_client_grpc_sent_bytes_total",
    "etcd_network_client_grpc_received_bytes_total",
    "etcd_server_health_success",
    "etcd_server_health_failures",
    "etcd_server_id",
    "etcd_server_version",
    "etcd_cluster_version",
];

/// A started cluster: its members, the leader's index among them, and every member's id.
struct Cluster {
    servers: Vec<Server>,
    leader: usize,
    ids: Vec<u64>,
}

async fn cluster(kind: Kind) -> Result<Cluster> {
    let servers = Server::start_cluster(kind, 3, &[]).await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut ids = Vec::new();
        let mut leaders = BTreeSet::new();
        for s in &servers {
            let (id, leader) = s.member_and_leader().await?;
            ids.push(id);
            leaders.insert(leader);
        }
        if leaders.len() == 1 && !leaders.contains(&0) {
            let leader_id = *leaders.first().expect("one leader");
            if let Some(leader) = ids.iter().position(|id| *id == leader_id) {
                return Ok(Cluster {
                    servers,
                    leader,
                    ids,
                });
            }
        }
        ensure!(
            Instant::now() < deadline,
            "{}: members disagree on the leader: {leaders:x?}",
            kind.label()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Samples of `family` on `page` whose label `label` is each value, by value.
fn by_label(page: &Page, family: &str, label: &str) -> BTreeMap<String, f64> {
    let prefix = format!("{family}{{{label}=\"");
    page.samples
        .iter()
        .filter_map(|(series, v)| {
            let rest = series.strip_prefix(&prefix)?;
            let (value, rest) = rest.split_once('"')?;
            (rest == "}").then(|| (value.to_owned(), *v))
        })
        .collect()
}

/// The leader's page once `ready` holds of it, polled for at most `within`.
async fn leader_page_once(
    c: &Cluster,
    within: Duration,
    what: &str,
    ready: impl Fn(&Page) -> bool,
) -> Result<Page> {
    let deadline = Instant::now() + within;
    loop {
        let page = Page::parse(&c.servers[c.leader].metrics().await?)?;
        if ready(&page) {
            return Ok(page);
        }
        if Instant::now() >= deadline {
            bail!(
                "{}: {what} not seen within {within:?}",
                c.servers[c.leader].kind().label()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_and_client_network_metrics_move_as_etcds() -> Result<()> {
    let (mut etcd, mut ballast) = tokio::try_join!(cluster(Kind::Etcd), cluster(Kind::Ballast))?;
    let mut grpc_received = Vec::new();
    let mut last_pages = Vec::new();
    for c in [&mut etcd, &mut ballast] {
        let label = c.servers[c.leader].kind().label();
        let leader = &c.servers[c.leader];
        let followers: Vec<String> = (0..3)
            .filter(|i| *i != c.leader)
            .map(|i| format!("{:x}", c.ids[i]))
            .collect();
        let mut kv = leader.clients().await?.kv;
        let before = Page::parse(&leader.metrics().await?)?;
        for i in 0..PEER_PUTS {
            kv.put(PutRequest {
                key: format!("metrics/peer/{i}").into_bytes().into(),
                value: vec![b'x'; PEER_VALUE_BYTES].into(),
                ..PutRequest::default()
            })
            .await?;
        }
        let after = Page::parse(&leader.metrics().await?)?;
        let received = "etcd_network_client_grpc_received_bytes_total{}";
        grpc_received.push(after.value(received) - before.value(received));
        let sent = "etcd_network_client_grpc_sent_bytes_total{}";
        ensure!(after.value(sent) > before.value(sent), "{label}: {sent}");

        // The leader replicated every value to each follower, labelled by its member id.
        let sent_name = "etcd_network_peer_sent_bytes_total";
        let (sent0, sent1) = (
            by_label(&before, sent_name, "To"),
            by_label(&after, sent_name, "To"),
        );
        let at_least = (PEER_PUTS * PEER_VALUE_BYTES) as f64;
        for f in &followers {
            let grew = sent1.get(f).copied().unwrap_or(0.0) - sent0.get(f).copied().unwrap_or(0.0);
            ensure!(
                grew >= at_least,
                "{label}: bytes sent to {f} grew by {grew} (< {at_least}); to: {sent1:?}"
            );
        }
        let peers: BTreeSet<&String> = sent1.keys().collect();
        ensure!(
            peers == followers.iter().collect(),
            "{label}: sent to {peers:?}, followers {followers:?}"
        );
        let received_name = "etcd_network_peer_received_bytes_total";
        let (recv0, recv1) = (
            by_label(&before, received_name, "From"),
            by_label(&after, received_name, "From"),
        );
        for f in &followers {
            let grew = recv1.get(f).copied().unwrap_or(0.0) - recv0.get(f).copied().unwrap_or(0.0);
            ensure!(grew > 0.0, "{label}: nothing received from {f}: {recv1:?}");
        }

        // /health counts its answers.
        let (code, _) = leader.http_get_any("/health").await?;
        ensure!(code == 200, "{label}: /health answered {code}");
        let page = Page::parse(&leader.metrics().await?)?;
        let success = "etcd_server_health_success{}";
        ensure!(
            page.value(success) == after.value(success) + 1.0,
            "{label}: {success}"
        );
        ensure!(
            page.value(&format!(
                "etcd_server_id{{server_id=\"{:x}\"}}",
                c.ids[c.leader]
            )) == 1.0,
            "{label}: etcd_server_id"
        );

        // A round trip to each follower is timed (etcd's prober reports every 30 s).
        leader_page_once(
            c,
            Duration::from_secs(45),
            "a round trip to each follower",
            |p| {
                let rtt = by_label(p, "etcd_network_peer_round_trip_time_seconds_count", "To");
                followers
                    .iter()
                    .all(|f| rtt.get(f).is_some_and(|n| *n >= 1.0))
            },
        )
        .await?;

        // A killed follower: the leader's sends to it fail, and are counted against it.
        let victim = (c.leader + 1) % 3;
        let victim_id = format!("{:x}", c.ids[victim]);
        c.servers[victim].kill9()?;
        let pair = format!("{{Local=\"{:x}\",Remote=\"{victim_id}\"}}", c.ids[c.leader]);
        let (active, disconnected) = (
            format!("etcd_network_active_peers{pair}"),
            format!("etcd_network_disconnected_peers_total{pair}"),
        );
        let what = "send failures and a disconnection";
        let page = leader_page_once(c, Duration::from_secs(20), what, |p| {
            by_label(p, "etcd_network_peer_sent_failures_total", "To")
                .get(&victim_id)
                .is_some_and(|n| *n >= 1.0)
                && p.samples.get(&active) == Some(&0.0)
                && p.value(&disconnected) >= 1.0
        })
        .await?;
        last_pages.push(page);
    }

    ensure!(
        grpc_received[0] == grpc_received[1]
            && grpc_received[0] >= (PEER_PUTS * PEER_VALUE_BYTES) as f64,
        "client gRPC bytes received: etcd {}, Ballast {}",
        grpc_received[0],
        grpc_received[1]
    );
    let (e, b) = (&last_pages[0], &last_pages[1]);
    for family in NETWORK_FAMILIES {
        let kind = e
            .types
            .get(family)
            .with_context(|| format!("etcd shows no {family}"))?;
        ensure!(
            b.types.get(family) == Some(kind),
            "{family}: etcd's TYPE {kind}, Ballast's {:?}",
            b.types.get(family)
        );
        ensure!(
            b.label_names.get(family) == e.label_names.get(family),
            "{family}: etcd's labels {:?}, Ballast's {:?}",
            e.label_names.get(family),
            b.label_names.get(family)
        );
    }
    // etcd's round-trip buckets: 0.1 ms doubling, 16 of them.
    let rtt = "etcd_network_peer_round_trip_time_seconds_bucket";
    let bounds = |p: &Page| -> BTreeSet<String> {
        p.samples
            .keys()
            .filter(|s| s.starts_with(rtt))
            .filter_map(|s| {
                s.split("le=\"")
                    .nth(1)?
                    .split('"')
                    .next()
                    .map(str::to_owned)
            })
            .collect()
    };
    ensure!(
        bounds(e) == bounds(b) && bounds(b).len() == 17,
        "{rtt}: {:?} vs {:?}",
        bounds(e),
        bounds(b)
    );
    Ok(())
}
