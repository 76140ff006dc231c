//! A member that was down while the others wrote past its log catches up through a snapshot:
//! three `ballast` processes run with a small `--snapshot-count`, a follower of shard 0 is
//! killed (`kill -9`), the two others take enough writes in every shard that each shard's
//! leader snapshots and purges its log past the follower's last entry (openraft keeps 1,000
//! entries behind a snapshot), and the follower is started again on its data dir. Then:
//! - every acknowledged write (before and during its absence) is on it, read serializably (its
//!   own state), with its value and its `mod_revision`;
//! - HashKV at one revision is equal on all three members;
//! - its log since the restart says it received a snapshot in every shard (the consensus
//!   crate logs "snapshot received" on the receiver, "snapshot sent" on the sender).
//!
//! The follower stays down until the others' logs show openraft purged past its end in every
//! shard: a leader postpones a purge while entries it covers are being sent to the follower
//! and tries again when a send fails, so right after a burst of writes the leader may still
//! hold them (measured: up to about 2 s after the writes).
//!
//! It prints how long the restart and the catch-up took, how many writes, and what the
//! senders logged of each snapshot (bytes, milliseconds).
//!
//! Invariants: every wait is bounded (the whole test by [`TEST_TIMEOUT`]); the servers are
//! killed and their temp dirs removed when the test ends, also when it fails. Keys live under
//! `/registry/<resource>/catch-up/`, one resource per shard (the preset placement of
//! [`ballast_conformance::partition`]), so every shard has to catch up.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ballast_conformance::partition::{shard_of, KUBE_RESOURCES, REGISTRY_PREFIX};
use ballast_conformance::{Kind, Server};
use ballast_proto::etcdserverpb::{
    kv_client::KvClient, maintenance_client::MaintenanceClient, HashKvRequest, PutRequest,
    RangeRequest,
};
use bytes::Bytes;
use futures::StreamExt;
use tonic::transport::Channel;

const TEST_TIMEOUT: Duration = Duration::from_secs(240);
/// `--snapshot-count`: openraft snapshots every this many entries.
const SNAPSHOT_COUNT: u64 = 100;
/// Entries openraft keeps in the log behind its latest snapshot (its
/// `max_in_snapshot_log_to_keep` default, which the server does not change).
const KEPT_BEHIND_SNAPSHOT: u64 = 1_000;
/// Writes per shard before the kill (the follower has them).
const BEFORE_PER_SHARD: usize = 300;
/// Writes per shard while the follower is down: past the entries kept behind a snapshot and
/// the snapshot interval, with room for the follower's log being a little ahead of its
/// applied state when it was killed.
const DURING_PER_SHARD: usize = 2 * (KEPT_BEHIND_SNAPSHOT + SNAPSHOT_COUNT) as usize;
/// Writes in flight at once.
const WRITERS: usize = 8;
/// Bytes of each value.
const VALUE_BYTES: usize = 200;
/// One write's bound (then its outcome is unknown; it is not counted as acknowledged).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the restarted member may take to hold every acknowledged write.
const CATCH_UP_MAX: Duration = Duration::from_secs(60);
/// How long after the writes the leaders may take to purge their logs past the killed
/// follower's end.
const PURGE_MAX: Duration = Duration::from_secs(30);
/// How long a member that applied a revision may refuse HashKV at it (as not yet applied).
const HASH_KV_MAX: Duration = Duration::from_secs(5);

/// The key prefix of each shard's writes: a resource the preset places in that shard.
fn shard_prefixes(shards: usize) -> Vec<String> {
    (0..shards)
        .map(|s| {
            let resource = KUBE_RESOURCES
                .iter()
                .find(|r| shard_of(format!("{REGISTRY_PREFIX}{r}/x").as_bytes(), shards) == s)
                .unwrap_or_else(|| panic!("no preset resource lives in shard {s} of {shards}"));
            format!("{REGISTRY_PREFIX}{resource}/catch-up/")
        })
        .collect()
}

fn value_of(key: &str) -> Bytes {
    let mut v = format!("{key}=").into_bytes();
    v.resize(VALUE_BYTES, b'v');
    v.into()
}

/// A write some member acknowledged.
#[derive(Debug, Clone)]
struct Acked {
    key: String,
    revision: i64,
}

/// `per_shard` puts of fresh keys `<prefix><phase>/<n>` in every shard, sent round-robin
/// through `kvs`, [`WRITERS`] at a time. Returns the acknowledged ones and how many failed or
/// timed out (unknown outcomes, left out).
async fn write_phase(
    kvs: &[KvClient<Channel>],
    prefixes: &[String],
    phase: &str,
    per_shard: usize,
) -> (Vec<Acked>, usize) {
    let jobs: Vec<(usize, String)> = (0..per_shard)
        .flat_map(|n| {
            prefixes
                .iter()
                .map(move |p| format!("{p}{phase}/{n:05}"))
                .collect::<Vec<_>>()
        })
        .enumerate()
        .collect();
    let results: Vec<Result<Acked, String>> = futures::stream::iter(jobs)
        .map(|(i, key)| {
            let mut kv = kvs[i % kvs.len()].clone();
            async move {
                let put = kv.put(PutRequest {
                    key: Bytes::from(key.clone().into_bytes()),
                    value: value_of(&key),
                    ..Default::default()
                });
                match tokio::time::timeout(REQUEST_TIMEOUT, put).await {
                    Ok(Ok(r)) => Ok(Acked {
                        key,
                        revision: r.into_inner().header.expect("header").revision,
                    }),
                    Ok(Err(e)) => Err(format!("{key}: {:?} {}", e.code(), e.message())),
                    Err(_) => Err(format!("{key}: timed out")),
                }
            }
        })
        .buffer_unordered(WRITERS)
        .collect()
        .await;
    let mut acked = Vec::new();
    let mut failed = Vec::new();
    for r in results {
        match r {
            Ok(a) => acked.push(a),
            Err(e) => failed.push(e),
        }
    }
    if !failed.is_empty() {
        eprintln!(
            "catch-up: {} writes of phase {phase} failed or timed out, e.g. {:?}",
            failed.len(),
            &failed[..failed.len().min(3)]
        );
    }
    (acked, failed.len())
}

/// The acknowledged writes `kv`'s member does not hold (by a serializable read of each
/// shard's prefix): absent, or with another value or `mod_revision`.
async fn missing_on(
    kv: &mut KvClient<Channel>,
    prefixes: &[String],
    acked: &[Acked],
) -> Result<Vec<String>, tonic::Status> {
    let mut held = BTreeMap::new();
    for p in prefixes {
        let mut end = p.clone().into_bytes();
        *end.last_mut().expect("a non-empty prefix") += 1;
        let r = kv
            .range(RangeRequest {
                key: Bytes::from(p.clone().into_bytes()),
                range_end: end.into(),
                serializable: true,
                ..Default::default()
            })
            .await?
            .into_inner();
        for kv in r.kvs {
            held.insert(kv.key.to_vec(), (kv.value, kv.mod_revision));
        }
    }
    Ok(acked
        .iter()
        .filter(|a| {
            held.get(a.key.as_bytes())
                .is_none_or(|(v, rev)| *v != value_of(&a.key) || *rev != a.revision)
        })
        .map(|a| {
            format!(
                "{} at {}: {:?}",
                a.key,
                a.revision,
                held.get(a.key.as_bytes()).map(|(_, rev)| rev)
            )
        })
        .collect())
}

/// `(member id, shard 0's leader)` as `server` reports them.
async fn status(server: &Server) -> (u64, u64) {
    server.member_and_leader().await.expect("status")
}

/// The highest `ballast_shard_applied_index` of `server`'s shards (its `/metrics`).
async fn applied_index_max(server: &Server) -> u64 {
    let metrics = server.metrics().await.expect("/metrics");
    metrics
        .lines()
        .filter(|l| l.starts_with("ballast_shard_applied_index{"))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .max()
        .unwrap_or_else(|| panic!("no ballast_shard_applied_index in /metrics:\n{metrics}"))
}

/// The log index of a `term.index` log id as openraft prints it (`None`: 0).
fn log_index(id: &str) -> u64 {
    id.rsplit('.')
        .next()
        .and_then(|i| i.parse().ok())
        .unwrap_or(0)
}

/// How many of openraft's purges in `log` ("purge log, last_purged: T.A, purge_upto: T.B", one
/// line per purge, of any shard) crossed log index `index`: `A < index <= B`. A shard's purges
/// only move forward, so each shard of a member crosses it once.
fn purges_across(log: &str, index: u64) -> usize {
    lines_with(log, "purge log, last_purged: ")
        .into_iter()
        .filter_map(|l| {
            let rest = l.split("last_purged: ").nth(1)?;
            let (last, upto) = rest.split_once(", purge_upto: ")?;
            let upto = upto.split_whitespace().next()?;
            Some((log_index(last), log_index(upto)))
        })
        .filter(|(last, upto)| *last < index && index <= *upto)
        .count()
}

/// The lines of `log` that contain `what`.
fn lines_with<'a>(log: &'a str, what: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(what)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_behind_the_purged_log_catches_up_through_a_snapshot() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let snapshot_count = SNAPSHOT_COUNT.to_string();
        let mut servers = Server::start_cluster(
            Kind::Ballast,
            3,
            &[
                "--heartbeat-interval",
                "100",
                "--election-timeout",
                "1000",
                "--snapshot-count",
                &snapshot_count,
            ],
        )
        .await
        .expect("starting three members");
        let shards = servers[0].shard_count().await.expect("shard count");
        let prefixes = shard_prefixes(shards);
        let mut kvs = Vec::new();
        for s in &servers {
            kvs.push(KvClient::new(s.channel().await.expect("channel")));
        }

        let (mut acked, mut failed) =
            write_phase(&kvs, &prefixes, "before", BEFORE_PER_SHARD).await;

        // A follower of shard 0 goes down.
        let mut ids = Vec::new();
        let mut leader = 0;
        for s in &servers {
            let (id, l) = status(s).await;
            ids.push(id);
            leader = l;
        }
        let leader_at = ids
            .iter()
            .position(|id| *id == leader)
            .unwrap_or_else(|| panic!("shard 0's leader {leader:x} is a member ({ids:x?})"));
        let victim = (leader_at + 1) % 3;
        // Its log ends at most a few entries past what it applied (nothing is written now).
        let victim_index = applied_index_max(&servers[victim]).await + SNAPSHOT_COUNT;
        servers[victim].kill9().expect("kill -9 the follower");
        let live: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
        let live_kvs: Vec<_> = live.iter().map(|i| kvs[*i].clone()).collect();

        // The others write far past its log.
        let started = Instant::now();
        let (during, during_failed) =
            write_phase(&live_kvs, &prefixes, "during", DURING_PER_SHARD).await;
        let write_time = started.elapsed();
        let during_count = during.len();
        acked.extend(during);
        failed += during_failed;

        // Each shard's leader purges its log past the follower's end (openraft postpones a
        // purge while it is sending those entries to the follower, and tries again when a
        // send fails): wait until, in every shard, both members have purged past it.
        let purge_wait = Instant::now();
        let purged = loop {
            let crossed: usize = live
                .iter()
                .map(|i| purges_across(&servers[*i].log_since_restart(), victim_index))
                .sum();
            if crossed >= live.len() * shards || purge_wait.elapsed() > PURGE_MAX {
                break crossed;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let purge_wait = purge_wait.elapsed();
        assert!(
            purged >= live.len() * shards,
            "after {DURING_PER_SHARD} writes per shard and {PURGE_MAX:?}, the two live members \
             purged their logs past index {victim_index} (the killed m{victim}'s end) {purged} \
             times, not once per shard ({shards}) each"
        );

        // It comes back and catches up.
        let restarted = Instant::now();
        servers[victim]
            .restart()
            .await
            .expect("the killed member restarts");
        let ready = restarted.elapsed();
        let mut victim_kv = KvClient::new(servers[victim].channel().await.expect("channel"));
        let missing = loop {
            let missing = missing_on(&mut victim_kv, &prefixes, &acked)
                .await
                .map_err(|e| e.to_string());
            if matches!(&missing, Ok(m) if m.is_empty()) || restarted.elapsed() > CATCH_UP_MAX {
                break missing;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let caught_up = restarted.elapsed();
        match missing {
            Ok(m) => assert!(
                m.is_empty(),
                "the restarted m{victim} lacks {} of {} acknowledged writes {CATCH_UP_MAX:?} \
                 after its restart, e.g. {:?}",
                m.len(),
                acked.len(),
                &m[..m.len().min(5)]
            ),
            Err(e) => panic!("the restarted m{victim} refused a serializable read: {e}"),
        }

        // It serves writes again.
        let last = kvs[victim]
            .put(PutRequest {
                key: Bytes::from(format!("{}final", prefixes[0]).into_bytes()),
                value: Bytes::from_static(b"after the catch-up"),
                ..Default::default()
            })
            .await
            .expect("a write through the restarted member")
            .into_inner()
            .header
            .expect("header")
            .revision;

        // It caught up through a snapshot, in every shard.
        let received: Vec<String> =
            lines_with(&servers[victim].log_since_restart(), "snapshot received")
                .into_iter()
                .map(str::to_owned)
                .collect();
        let mut sent = Vec::new();
        for i in &live {
            sent.extend(
                lines_with(&servers[*i].log_since_restart(), "snapshot sent")
                    .into_iter()
                    .map(|l| format!("m{i}: {l}")),
            );
        }
        eprintln!(
            "catch-up: {shards} shard(s); {} writes acknowledged ({during_count} while m{victim} \
             was down, written in {write_time:.1?}; {failed} failed or timed out), {} bytes \
             each; the leaders purged past its end (index {victim_index}) {purge_wait:.1?} \
             after the writes; m{victim} answered {ready:.1?} after its restart and held every \
             acknowledged write after {caught_up:.1?}\n\
             catch-up: m{victim} received {} snapshot(s):\n  {}\ncatch-up: the others \
             sent:\n  {}",
            acked.len(),
            VALUE_BYTES,
            received.len(),
            received.join("\n  "),
            sent.join("\n  ")
        );
        assert!(
            received.len() >= shards,
            "m{victim} caught up, but its log shows {} snapshot(s) received for {shards} \
             shard(s): the leaders did not purge their logs past it, or it caught up otherwise",
            received.len()
        );

        // All three hash the same at one revision: the highest any write was acknowledged at.
        // Each has applied it (the writes were acknowledged by a quorum, the restarted one
        // holds them all, the others are live voters), so each must answer within a few
        // seconds, as an etcd member that applied the revision does.
        let at = acked
            .iter()
            .map(|a| a.revision)
            .max()
            .unwrap_or(0)
            .max(last);
        let mut hashes = Vec::new();
        for (i, s) in servers.iter().enumerate() {
            let mut m = MaintenanceClient::new(s.channel().await.expect("channel"));
            let asked = Instant::now();
            let mut refusals = Vec::new();
            let hash = loop {
                let r = tokio::time::timeout(
                    Duration::from_secs(5),
                    m.hash_kv(HashKvRequest { revision: at }),
                )
                .await;
                match r {
                    Ok(Ok(r)) => break Some(r.into_inner().hash),
                    Ok(Err(e)) => refusals.push(format!("{:?} {}", e.code(), e.message())),
                    Err(_) => refusals.push("timed out".to_owned()),
                }
                if asked.elapsed() > HASH_KV_MAX {
                    break None;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            if !refusals.is_empty() {
                eprintln!(
                    "catch-up: m{i} refused HashKV at {at} {} time(s) over {:.1?} (first: {}), \
                     then {}",
                    refusals.len(),
                    asked.elapsed(),
                    refusals[0],
                    if hash.is_some() {
                        "answered"
                    } else {
                        "gave up"
                    }
                );
            }
            let Some(hash) = hash else {
                // Tell a member that has not applied `at` from one that has but refuses: its
                // own state, read serializably in every shard, and HashKV once more after.
                let mut kv = KvClient::new(s.channel().await.expect("channel"));
                let mut own = Vec::new();
                for p in &prefixes {
                    let r = kv
                        .range(RangeRequest {
                            key: Bytes::from(p.clone().into_bytes()),
                            serializable: true,
                            count_only: true,
                            ..Default::default()
                        })
                        .await
                        .map(|r| r.into_inner().header.map_or(0, |h| h.revision));
                    own.push(r.map_err(|e| e.message().to_owned()));
                }
                let again = m
                    .hash_kv(HashKvRequest { revision: at })
                    .await
                    .map(|r| format!("{:x}", r.into_inner().hash))
                    .map_err(|e| e.message().to_owned());
                panic!(
                    "m{i} refused HashKV at revision {at} for {HASH_KV_MAX:?} ({} refusals, \
                     first: {}); its serializable reads per shard answer at revisions {own:?}; \
                     HashKV at {at} right after them: {again:?} (the restarted member is \
                     m{victim})",
                    refusals.len(),
                    refusals[0]
                );
            };
            hashes.push(hash);
        }
        assert!(
            hashes.iter().all(|h| *h == hashes[0]),
            "HashKV at revision {at} differs: {hashes:x?} (the restarted member is m{victim})"
        );
        eprintln!(
            "catch-up: HashKV at revision {at} equal on all three ({:x})",
            hashes[0]
        );
    })
    .await
    .expect("the catch-up test finished within its bound");
}
