//! A three-member Ballast cluster (three processes on 127.0.0.1 ports): members know each
//! other, writes through every endpoint land everywhere, and after `kill -9` of the leader
//! under load a new leader takes over, no acknowledged write is lost, and the killed member
//! restarts and catches up. Membership changes while writing: a learner is added, joins,
//! catches up and is promoted, an original member is removed (and stops itself); etcd's
//! errors for refused changes. In both, the writers' requests (puts of fresh keys, puts and
//! linearizable gets of
//! a few hot keys, through every endpoint they use) are recorded, timed-out or ambiguously
//! failed ones as unknown outcomes, and the history must be linearizable
//! ([`ballast_conformance::linearizability`]); a violation fails with the checker's report,
//! the smallest history that breaks it. And a revision written through one member can be read
//! at (a Range over every shard, HashKV) through every member; a follower serves linearizable
//! reads itself (after the leader's read index) and they see every acknowledged write.
//!
//! Invariants: every wait is bounded (the scenario by [`TEST_TIMEOUT`], the check after it by
//! its budget); the servers are killed and their temp dirs removed when the test ends, also
//! when it fails. Keys live under `/cluster-test/`, outside `/registry/` (shard 0 with any
//! shard count, one revision counter, as the checker's model has).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ballast_conformance::linearizability::{
    assert_linearizable_figures, Budget, Outcome, Recorder,
};
use ballast_conformance::{Kind, Server};
use ballast_proto::etcdserverpb::{
    kv_client::KvClient, HashKvRequest, MemberAddRequest, MemberListRequest, MemberPromoteRequest,
    MemberRemoveRequest, PutRequest, RangeRequest,
};
use tonic::transport::Channel;

const TEST_TIMEOUT: Duration = Duration::from_secs(150);
/// Election timeout the members run with (etcd's default).
const ELECTION: Duration = Duration::from_millis(1000);
/// How long a new leader may take after the old one is killed: between one and two election
/// timeouts after the last heartbeat (as etcd), plus a Pre-Vote and a vote round, with room for
/// a loaded 2-core machine.
const FAILOVER_MAX: Duration = Duration::from_secs(4);

fn key(s: &str) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(format!("/cluster-test/{s}").as_bytes())
}

async fn put(kv: &mut KvClient<Channel>, k: &str, v: &str) -> Result<i64, tonic::Status> {
    let r = kv
        .put(PutRequest {
            key: key(k),
            value: bytes::Bytes::copy_from_slice(v.as_bytes()),
            ..Default::default()
        })
        .await?;
    Ok(r.into_inner().header.map_or(0, |h| h.revision))
}

/// Every key under `/cluster-test/<prefix>` with its value, read linearizably or not.
async fn keys(
    kv: &mut KvClient<Channel>,
    prefix: &str,
    serializable: bool,
) -> Result<BTreeSet<(String, String)>, tonic::Status> {
    let start = key(prefix);
    let mut end = start.to_vec();
    *end.last_mut().unwrap() += 1;
    let r = kv
        .range(RangeRequest {
            key: start,
            range_end: end.into(),
            serializable,
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(r.kvs
        .into_iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                String::from_utf8_lossy(&kv.value).into_owned(),
            )
        })
        .collect())
}

async fn leader_of(server: &Server) -> u64 {
    server.status().await.expect("status").leader
}

/// The member id `server` answers with.
async fn member_id(server: &Server) -> u64 {
    server.member_and_leader().await.expect("status").0
}

/// A put a writer saw acknowledged: its key, whether the key was fresh (written once, so it
/// must stay), when it was sent and when it was answered.
struct Acked {
    key: String,
    fresh: bool,
    sent: Instant,
    answered: Instant,
}

/// Keys every writer reads and overwrites: few, so that a stale read or a lost write shows in
/// the history.
const HOT_KEYS: u64 = 3;
/// A writer's bound on one request; past it the request's outcome is unknown.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

fn hot_key(i: u64) -> Vec<u8> {
    format!("/cluster-test/hot/k{i}").into_bytes()
}

/// A writer: one request at a time through one endpoint until `stop`, each recorded in
/// `recorder` as client `id` (an error that may hide an applied write, or a timeout, as an
/// unknown outcome): half puts of fresh keys `load/<name>/<n>`, the rest puts of unique values
/// to the hot keys and linearizable gets of them. Returns the puts acknowledged (the failover
/// is timed from them).
/// Starts a [`writer`] through `server`'s client endpoint.
async fn spawn_writer(
    recorder: &Recorder,
    id: u32,
    server: &Server,
    stop: &Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<Acked>> {
    let channel = server.channel().await.expect("channel");
    let name = server.name().to_owned();
    tokio::spawn(writer(recorder.clone(), id, channel, name, stop.clone()))
}

async fn writer(
    recorder: Recorder,
    id: u32,
    channel: Channel,
    name: String,
    stop: Arc<AtomicBool>,
) -> Vec<Acked> {
    let mut c = recorder
        .client(id, KvClient::new(channel))
        .with_timeout(REQUEST_TIMEOUT);
    // xorshift seeded by the client id: runs differ only by timing.
    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(id + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let mut acked = Vec::new();
    let mut n = 0u32;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let sent = Instant::now();
        let (key, fresh, result) = match rng % 4 {
            0 | 1 => {
                let k = format!("/cluster-test/load/{name}/{n:06}");
                let r = c.put(k.as_bytes(), b"x").await;
                (k, true, r)
            }
            2 => {
                let k = hot_key((rng >> 8) % HOT_KEYS);
                let r = c.put(&k, format!("{name}-{n}").as_bytes()).await;
                (String::from_utf8_lossy(&k).into_owned(), false, r)
            }
            _ => {
                let k = hot_key((rng >> 8) % HOT_KEYS);
                let r = c.get(&k).await;
                (String::from_utf8_lossy(&k).into_owned(), false, r)
            }
        };
        match result {
            Ok(Outcome::Put { .. }) => acked.push(Acked {
                key,
                fresh,
                sent,
                answered: Instant::now(),
            }),
            Ok(_) => {}
            // Recorded as it was (unknown outcome, or left out if it surely did nothing); back
            // off briefly.
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
        n += 1;
    }
    acked
}

/// The store's revision now, as a linearizable read through `kv` reports it, with the hot keys
/// absent (they are written only by writers, whose history starts there).
async fn history_start(kv: &mut KvClient<Channel>) -> Recorder {
    let r = kv
        .range(RangeRequest {
            key: hot_key(0).into(),
            range_end: b"/cluster-test/hot0".to_vec().into(),
            ..Default::default()
        })
        .await
        .expect("linearizable range of the hot keys")
        .into_inner();
    assert!(r.kvs.is_empty(), "the hot keys are not written yet");
    Recorder::new(r.header.expect("header").revision)
}

/// Checks the writers' history for linearizability (bounded by its budget); a violation fails
/// with the checker's report (the smallest history that breaks it), and so does a budget run
/// out. Returns a line of figures.
fn assert_history_linearizable(recorder: &Recorder) -> String {
    let budget = Budget {
        max_states: 2_000_000,
        max_time: Duration::from_secs(20),
    };
    assert_linearizable_figures(&recorder.history(), &budget)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_replicate_and_survive_a_leader_kill() {
    let recorder = tokio::time::timeout(TEST_TIMEOUT, async {
        let election = format!("{}", ELECTION.as_millis());
        let mut servers = Server::start_cluster(
            Kind::Ballast,
            3,
            &[
                "--heartbeat-interval",
                "100",
                "--election-timeout",
                &election,
            ],
        )
        .await
        .expect("starting three members");

        // Every member lists all three, by name once they have talked.
        for s in &servers {
            let mut c = s.clients().await.expect("clients");
            let mut names = Vec::new();
            for _ in 0..100 {
                let members = c
                    .cluster
                    .member_list(MemberListRequest::default())
                    .await
                    .expect("member list")
                    .into_inner()
                    .members;
                names = members.iter().map(|m| m.name.clone()).collect::<Vec<_>>();
                names.sort();
                if names == ["m0", "m1", "m2"] {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert_eq!(names, ["m0", "m1", "m2"], "member list at {}", s.name());
        }

        // Writes through every endpoint, read back through every endpoint.
        let mut kvs = Vec::new();
        for s in &servers {
            kvs.push(KvClient::new(s.channel().await.expect("channel")));
        }
        let mut revisions = BTreeSet::new();
        for i in 0..30 {
            let at = i % 3;
            let rev = put(&mut kvs[at], &format!("rr/{i:02}"), &format!("via-m{at}"))
                .await
                .unwrap_or_else(|e| panic!("put {i} through m{at}: {e}"));
            assert!(revisions.insert(rev), "revision {rev} answered twice");
        }
        for (at, kv) in kvs.iter_mut().enumerate() {
            let got = keys(kv, "rr/", false).await.expect("linearizable range");
            assert_eq!(got.len(), 30, "m{at} sees {got:?}");
            for i in 0..30 {
                let want = (
                    format!("/cluster-test/rr/{i:02}"),
                    format!("via-m{}", i % 3),
                );
                assert!(got.contains(&want), "m{at} lacks {want:?}");
            }
        }

        // All agree on shard 0's leader.
        let leader = leader_of(&servers[0]).await;
        assert_ne!(leader, 0, "a leader is elected");
        for s in &servers {
            assert_eq!(
                leader_of(s).await,
                leader,
                "{} names another leader",
                s.name()
            );
        }
        let mut ids = Vec::new();
        for s in &servers {
            ids.push(member_id(s).await);
        }
        let victim = ids
            .iter()
            .position(|id| *id == leader)
            .expect("the leader is a member");

        // Load through the two others, recorded; kill -9 the leader meanwhile.
        let recorder = history_start(&mut kvs[0]).await;
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        for (i, s) in servers.iter().enumerate() {
            if i != victim {
                writers.push(spawn_writer(&recorder, i as u32, s, &stop).await);
            }
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let killed_at = Instant::now();
        servers[victim].kill9().expect("kill -9 the leader");
        tokio::time::sleep(FAILOVER_MAX + Duration::from_secs(1)).await;
        stop.store(true, Ordering::Relaxed);
        let mut acked = Vec::new();
        for w in writers {
            acked.extend(w.await.expect("writer"));
        }
        let before = acked.iter().filter(|a| a.answered < killed_at).count();
        // Failover: from the kill to the first answer to a write sent after it.
        let first_after = acked
            .iter()
            .filter(|a| a.sent > killed_at)
            .map(|a| a.answered - killed_at)
            .min();
        eprintln!(
            "cluster: {} writes acknowledged ({before} before the kill); the first write sent \
             after the kill of the leader was answered {:?} after it",
            acked.len(),
            first_after
        );
        assert!(before > 0, "writes went through before the kill");
        let first_after = first_after.expect("writes continue after the leader is killed");
        assert!(
            first_after <= FAILOVER_MAX,
            "the first write after the kill took {first_after:?}"
        );
        let new_leader = leader_of(&servers[(victim + 1) % 3]).await;
        assert!(
            new_leader != 0 && new_leader != leader,
            "a new leader ({new_leader:x})"
        );

        // Every acknowledged write of a fresh key is on both survivors.
        let want: BTreeSet<String> = acked
            .iter()
            .filter(|a| a.fresh)
            .map(|a| a.key.clone())
            .collect();
        for (i, kv) in kvs.iter_mut().enumerate() {
            if i == victim {
                continue;
            }
            let got: BTreeSet<String> = keys(kv, "load/", false)
                .await
                .expect("range")
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            let lost: Vec<_> = want.difference(&got).collect();
            assert!(lost.is_empty(), "m{i} lost acknowledged writes: {lost:?}");
        }

        // The killed member restarts with its data and catches up.
        servers[victim]
            .restart()
            .await
            .expect("the killed member restarts");
        let mut kv = KvClient::new(servers[victim].channel().await.expect("channel"));
        let mut got = BTreeSet::new();
        for _ in 0..150 {
            got = keys(&mut kv, "load/", true)
                .await
                .map(|s| s.into_iter().map(|(k, _)| k).collect())
                .unwrap_or_default();
            if want.is_subset(&got) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let missing: Vec<_> = want.difference(&got).collect();
        assert!(
            missing.is_empty(),
            "the restarted member lacks {} acknowledged writes, e.g. {:?}",
            missing.len(),
            missing.iter().take(5).collect::<Vec<_>>()
        );
        // Linearizable reads and a write through the restarted member join the history.
        let mut c = recorder.client(3, kv.clone()).with_timeout(REQUEST_TIMEOUT);
        for i in 0..HOT_KEYS {
            c.get(&hot_key(i))
                .await
                .expect("a linearizable get through the restarted member");
        }
        c.put(&hot_key(0), b"after-restart")
            .await
            .expect("a write through the restarted member");
        c.get(&hot_key(0))
            .await
            .expect("a linearizable get through the restarted member");
        let after = put(&mut kv, "after-restart", "ok")
            .await
            .expect("a write through the restarted member");
        assert!(after > *revisions.iter().max().unwrap());
        recorder
    })
    .await
    .expect("the cluster test finished within its bound");
    eprintln!("cluster: {}", assert_history_linearizable(&recorder));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_a_learner_promote_it_and_remove_a_member_while_writing() {
    let recorder = tokio::time::timeout(TEST_TIMEOUT, async {
        let args = ["--heartbeat-interval", "100", "--election-timeout", "1000"];
        let mut servers = Server::start_cluster(Kind::Ballast, 3, &args)
            .await
            .expect("starting three members");
        let mut cluster = servers[0].clients().await.expect("clients").cluster;

        // etcd's refusals, before anything changes.
        let err = cluster
            .member_remove(MemberRemoveRequest { id: 0x1234 })
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), err.message()),
            (tonic::Code::NotFound, "etcdserver: member not found")
        );
        let me = member_id(&servers[0]).await;
        let err = cluster
            .member_promote(MemberPromoteRequest { id: me })
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), err.message()),
            (
                tonic::Code::FailedPrecondition,
                "etcdserver: can only promote a learner member"
            )
        );
        let err = cluster
            .member_add(MemberAddRequest {
                peer_ur_ls: vec![servers[1].peer_url()],
                is_learner: false,
            })
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), err.message()),
            (
                tonic::Code::FailedPrecondition,
                "etcdserver: Peer URLs already exists"
            )
        );

        // Writers through m0 and m1 for the whole test, recorded.
        let recorder = history_start(&mut KvClient::new(
            servers[0].channel().await.expect("channel"),
        ))
        .await;
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        for (i, s) in servers[..2].iter().enumerate() {
            writers.push(spawn_writer(&recorder, i as u32, s, &stop).await);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;

        // Add m3 as a learner, start it, let it catch up, promote it.
        let mut m3 = Server::new_member(Kind::Ballast, "m3", &args).expect("new member");
        let added = cluster
            .member_add(MemberAddRequest {
                peer_ur_ls: vec![m3.peer_url()],
                is_learner: true,
            })
            .await
            .expect("member add --learner")
            .into_inner();
        let m3_id = added.member.as_ref().expect("the added member").id;
        assert!(added.members.iter().any(|m| m.id == m3_id && m.is_learner));
        assert_eq!(added.members.len(), 4);
        let err = cluster
            .member_add(MemberAddRequest {
                peer_ur_ls: vec!["http://127.0.0.1:1".to_owned()],
                is_learner: true,
            })
            .await
            .unwrap_err();
        assert_eq!(
            err.message(),
            "etcdserver: too many learner members in cluster"
        );
        m3.join(&[&servers[0], &servers[1], &servers[2]])
            .await
            .expect("m3 joins");
        assert_eq!(
            member_id(&m3).await,
            m3_id,
            "m3 knows itself by the id it was added with"
        );
        let mut promoted = None;
        for _ in 0..100 {
            match cluster
                .member_promote(MemberPromoteRequest { id: m3_id })
                .await
            {
                Ok(r) => {
                    promoted = Some(r.into_inner());
                    break;
                }
                Err(e) if e.message().contains("in sync with leader") => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => panic!("member promote: {e}"),
            }
        }
        let promoted = promoted.expect("the learner caught up and was promoted");
        assert!(promoted
            .members
            .iter()
            .any(|m| m.id == m3_id && !m.is_learner));
        // A voter now: a third writer through it.
        writers.push(spawn_writer(&recorder, 3, &m3, &stop).await);

        // Remove m2 (not a writer's endpoint).
        let m2_id = member_id(&servers[2]).await;
        let removed = cluster
            .member_remove(MemberRemoveRequest { id: m2_id })
            .await
            .expect("member remove")
            .into_inner();
        let mut ids: Vec<u64> = removed.members.iter().map(|m| m.id).collect();
        ids.sort_unstable();
        let mut want = vec![
            member_id(&servers[0]).await,
            member_id(&servers[1]).await,
            m3_id,
        ];
        want.sort_unstable();
        assert_eq!(ids, want);
        // The removed member learns it from the others and stops itself, as etcd's does.
        let (status, took) = servers[2]
            .wait_exit(Duration::from_secs(20))
            .expect("the removed member stops by itself");
        assert!(
            status.success(),
            "the removed member exits cleanly: {status}"
        );
        assert!(
            servers[2]
                .log_tail()
                .contains("the member has been permanently removed from the cluster"),
            "it says why"
        );
        eprintln!("membership: the removed member stopped itself {took:?} after its removal");

        // Writes go on with the new membership.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stop.store(true, Ordering::Relaxed);
        let mut acked = Vec::new();
        for w in writers {
            acked.extend(w.await.expect("writer"));
        }
        let want: BTreeSet<String> = acked
            .iter()
            .filter(|a| a.fresh)
            .map(|a| a.key.clone())
            .collect();
        eprintln!(
            "membership: {} writes acknowledged during the changes ({} of fresh keys)",
            acked.len(),
            want.len()
        );
        assert!(!want.is_empty());
        for s in [&servers[0], &servers[1], &m3] {
            let mut kv = KvClient::new(s.channel().await.expect("channel"));
            let got: BTreeSet<String> = keys(&mut kv, "load/", false)
                .await
                .expect("range")
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            let lost: Vec<_> = want.difference(&got).take(5).collect();
            assert!(
                lost.is_empty(),
                "{} lacks acknowledged writes, e.g. {lost:?}",
                s.name()
            );
        }
        recorder
    })
    .await
    .expect("the membership test finished within its bound");
    eprintln!("membership: {}", assert_history_linearizable(&recorder));
}

/// A revision written through one member can be read at through every member, as in etcd:
/// a write through a follower of shard 0 (forwarded to the leader) is acknowledged at revision
/// R; then a linearizable Range of the whole keyspace at R (every shard) answers through every
/// member at once, and HashKV at R (served from the member's own state) answers within a few
/// seconds on every member, equal on all three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_member_reads_at_a_revision_written_through_another() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let args = ["--heartbeat-interval", "100", "--election-timeout", "1000"];
        let servers = Server::start_cluster(Kind::Ballast, 3, &args)
            .await
            .expect("starting three members");
        let leader = leader_of(&servers[0]).await;
        let mut via = None;
        for (i, s) in servers.iter().enumerate() {
            if member_id(s).await != leader {
                via = Some(i);
                break;
            }
        }
        let via = via.expect("a follower of shard 0");
        let mut kv = KvClient::new(servers[via].channel().await.expect("channel"));
        let at = put(&mut kv, "via-follower", "x")
            .await
            .expect("a write through a follower");

        let mut hashes = Vec::new();
        let mut problems = Vec::new();
        for (i, s) in servers.iter().enumerate() {
            let mut c = s.clients().await.expect("clients");
            let all =
                c.kv.range(RangeRequest {
                    key: b"\0".to_vec().into(),
                    range_end: b"\0".to_vec().into(),
                    revision: at,
                    count_only: true,
                    ..Default::default()
                })
                .await;
            match all {
                Ok(r) if r.get_ref().count >= 1 => {}
                Ok(r) => problems.push(format!(
                    "m{i}: a linearizable Range of every key at {at} counts {}",
                    r.get_ref().count
                )),
                Err(e) => problems.push(format!(
                    "m{i}: a linearizable Range of every key at {at}: {:?} {}",
                    e.code(),
                    e.message()
                )),
            }
            let asked = Instant::now();
            let mut first_error = None;
            let hash = loop {
                match c.maintenance.hash_kv(HashKvRequest { revision: at }).await {
                    Ok(r) => break Some(r.into_inner().hash),
                    Err(e) => {
                        first_error.get_or_insert_with(|| format!("{:?} {}", e.code(), e.message()))
                    }
                };
                if asked.elapsed() > Duration::from_secs(5) {
                    break None;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            match hash {
                Some(h) => hashes.push(h),
                None => problems.push(format!(
                    "m{i}: HashKV at {at} refused for 5 s: {}",
                    first_error.unwrap_or_default()
                )),
            }
        }
        assert!(
            problems.is_empty(),
            "revision {at}, written through m{via} (a follower of shard 0), is not readable \
             through every member:\n{}",
            problems.join("\n")
        );
        assert!(
            hashes.iter().all(|h| *h == hashes[0]),
            "HashKV at {at} differs: {hashes:x?}"
        );
    })
    .await
    .expect("the test finished within its bound");
}

/// Shard 0's value of one per-shard counter in `server`'s `/metrics` (the test keys live in
/// shard 0; other shards may serve forwarded requests of their own, e.g. the `Advance` that
/// keeps their revisions aligned).
async fn shard0_counter(server: &Server, name: &str) -> u64 {
    let metrics = server.metrics().await.expect("/metrics");
    let prefix = format!("{name}{{shard=\"0\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no {prefix} in /metrics:\n{metrics}"))
}

/// A follower serves a linearizable read itself, after the leader's read index, as etcd's
/// followers do (Raft thesis §6.4), and still sees every write acknowledged before the read
/// began: rounds of a put through the leader or through the other follower, each followed at
/// once by a linearizable get through the reading follower, which must return that put's value
/// at its revision. The reads count in the follower's `ballast_shard_follower_reads_total`,
/// and the leader's `ballast_shard_forwarded_served_total` (shard 0's, where the keys live)
/// grows only by the forwarded puts:
/// a follower that forwarded its reads fails the test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_serves_linearizable_reads_itself_and_sees_every_acknowledged_write() {
    const ROUNDS: u64 = 200;
    tokio::time::timeout(TEST_TIMEOUT, async {
        let args = ["--heartbeat-interval", "100", "--election-timeout", "1000"];
        let servers = Server::start_cluster(Kind::Ballast, 3, &args)
            .await
            .expect("starting three members");
        let leader_id = leader_of(&servers[0]).await;
        let mut leader = None;
        let mut followers = Vec::new();
        for (i, s) in servers.iter().enumerate() {
            if member_id(s).await == leader_id {
                leader = Some(i);
            } else {
                followers.push(i);
            }
        }
        let leader = leader.expect("shard 0's leader is a member");
        let (reader, other) = (followers[0], followers[1]);
        let mut via_leader = KvClient::new(servers[leader].channel().await.expect("channel"));
        let mut via_other = KvClient::new(servers[other].channel().await.expect("channel"));
        let mut read = KvClient::new(servers[reader].channel().await.expect("channel"));

        let reads_before =
            shard0_counter(&servers[reader], "ballast_shard_follower_reads_total").await;
        let forwarded_before =
            shard0_counter(&servers[leader], "ballast_shard_forwarded_served_total").await;
        let started = Instant::now();
        let mut through_other = 0;
        for round in 0..ROUNDS {
            let value = format!("v{round}");
            let at = if round % 2 == 0 {
                put(&mut via_leader, "follower-read", &value).await
            } else {
                through_other += 1;
                put(&mut via_other, "follower-read", &value).await
            }
            .expect("put");
            let r = read
                .range(RangeRequest {
                    key: key("follower-read"),
                    ..Default::default()
                })
                .await
                .expect("a linearizable get through a follower")
                .into_inner();
            let seen = r.kvs.first().map(|kv| (kv.value.to_vec(), kv.mod_revision));
            assert_eq!(
                seen,
                Some((value.clone().into_bytes(), at)),
                "round {round}: the follower m{reader} missed the put acknowledged at {at}"
            );
            assert!(r.header.expect("header").revision >= at);
        }
        let elapsed = started.elapsed();
        let reads = shard0_counter(&servers[reader], "ballast_shard_follower_reads_total").await
            - reads_before;
        let forwarded = shard0_counter(&servers[leader], "ballast_shard_forwarded_served_total")
            .await
            - forwarded_before;
        assert_eq!(
            leader_of(&servers[0]).await,
            leader_id,
            "the leader stayed put"
        );
        assert!(
            reads >= ROUNDS,
            "m{reader} served {reads} of {ROUNDS} linearizable reads itself"
        );
        assert!(
            forwarded <= through_other,
            "the leader served {forwarded} forwarded requests, more than the {through_other} \
             puts forwarded to it: the follower's reads were forwarded"
        );
        eprintln!(
            "{ROUNDS} put-then-read rounds in {elapsed:.1?}: m{reader} served {reads} reads by \
             read index, the leader m{leader} served {forwarded} forwarded requests"
        );
    })
    .await
    .expect("the test finished within its bound");
}

/// A one-member cluster grows as kubeadm grows its stacked etcd: the first control-plane node
/// runs etcd alone (`--initial-cluster` naming only itself); each control-plane node that joins
/// adds its member through MemberAdd on the running ones (a voter, or a learner promoted once
/// it caught up) and starts it with `--initial-cluster-state existing`. Then the original
/// member is killed and the other two still take writes (a real quorum), and restarted with
/// its original one-member flags it catches up. The same steps against etcd 3.4.23 and
/// Ballast.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_member_grows_into_three_as_kubeadm_adds_control_planes() {
    for kind in [Kind::Etcd, Kind::Ballast] {
        tokio::time::timeout(TEST_TIMEOUT, grow_a_lone_member(kind))
            .await
            .unwrap_or_else(|_| panic!("{}: growing a lone member took too long", kind.label()));
    }
}

async fn grow_a_lone_member(kind: Kind) {
    let label = kind.label();
    let token = [
        "--initial-cluster-token",
        ballast_conformance::server::CLUSTER_TOKEN,
    ];
    let mut first = Server::start_with_args(kind, &token)
        .await
        .unwrap_or_else(|e| panic!("{label}: starting the lone member: {e:#}"));
    let mut kv0 = KvClient::new(first.channel().await.expect("channel"));
    put(&mut kv0, "grow/a", "before").await.expect("put alone");
    let mut cluster = first.clients().await.expect("clients").cluster;
    let first_id = member_id(&first).await;

    // The second control plane: a voter. Until it runs the quorum is 2 of 2, as with etcd.
    let mut m1 = Server::new_member(kind, "m1", &[]).expect("new member");
    let added = cluster
        .member_add(MemberAddRequest {
            peer_ur_ls: vec![m1.peer_url()],
            is_learner: false,
        })
        .await
        .unwrap_or_else(|e| panic!("{label}: member add on a lone member: {e}"))
        .into_inner();
    assert_eq!(added.members.len(), 2, "{label}: {added:?}");
    let m1_id = added.member.as_ref().expect("the added member").id;
    m1.join(&[&first])
        .await
        .unwrap_or_else(|e| panic!("{label}: m1 joins: {e:#}"));
    assert_eq!(member_id(&m1).await, m1_id, "{label}: m1 knows its id");

    // The third: a learner first (kubeadm's newer flow), promoted once in sync.
    // etcd refuses a change until every started member has been connected for a while
    // (its strict reconfiguration check, "unhealthy cluster"); kubeadm asks again.
    let mut m2 = Server::new_member(kind, "m2", &[]).expect("new member");
    let mut added = None;
    for _ in 0..100 {
        match cluster
            .member_add(MemberAddRequest {
                peer_ur_ls: vec![m2.peer_url()],
                is_learner: true,
            })
            .await
        {
            Ok(r) => {
                added = Some(r.into_inner());
                break;
            }
            Err(e) if e.message() == "etcdserver: unhealthy cluster" => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => panic!("{label}: member add --learner: {e}"),
        }
    }
    let added = added.unwrap_or_else(|| panic!("{label}: member add --learner: still unhealthy"));
    let m2_id = added.member.as_ref().expect("the added member").id;
    m2.join(&[&first, &m1])
        .await
        .unwrap_or_else(|e| panic!("{label}: m2 joins: {e:#}"));
    let mut promoted = false;
    for _ in 0..100 {
        match cluster
            .member_promote(MemberPromoteRequest { id: m2_id })
            .await
        {
            Ok(_) => {
                promoted = true;
                break;
            }
            Err(e) if e.message().contains("in sync with leader") => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("{label}: member promote: {e}"),
        }
    }
    assert!(promoted, "{label}: the learner caught up and was promoted");

    // Every member lists the same three voters and reads what the lone member wrote.
    let want: BTreeSet<u64> = [first_id, m1_id, m2_id].into();
    for s in [&first, &m1, &m2] {
        let mut c = s.clients().await.expect("clients").cluster;
        let listed = c
            .member_list(MemberListRequest::default())
            .await
            .expect("member list")
            .into_inner()
            .members;
        let ids: BTreeSet<u64> = listed.iter().map(|m| m.id).collect();
        assert_eq!(ids, want, "{label}: {} lists {listed:?}", s.name());
        assert!(listed.iter().all(|m| !m.is_learner), "{label}: {listed:?}");
        let mut kv = KvClient::new(s.channel().await.expect("channel"));
        assert_eq!(
            keys(&mut kv, "grow/", false).await.expect("range"),
            BTreeSet::from([(
                String::from_utf8_lossy(&key("grow/a")).into_owned(),
                "before".to_owned()
            )]),
            "{label}: {} has the lone member's write",
            s.name()
        );
    }

    // A real quorum: without the original member the others take writes.
    first.kill9().expect("kill the original member");
    let mut kv1 = KvClient::new(m1.channel().await.expect("channel"));
    let deadline = Instant::now() + FAILOVER_MAX + Duration::from_secs(6);
    loop {
        match put(&mut kv1, "grow/b", "without the first").await {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                eprintln!("{label}: put without the first member: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{label}: two of three members take no writes: {e}"),
        }
    }
    // Restarted with its one-member flags, the original member is a member of the three and
    // catches up.
    first
        .restart()
        .await
        .unwrap_or_else(|e| panic!("{label}: restarting the original member: {e:#}"));
    let mut kv0 = KvClient::new(first.channel().await.expect("channel"));
    let got = keys(&mut kv0, "grow/", false).await.expect("range");
    assert_eq!(
        got.len(),
        2,
        "{label}: the restarted member caught up: {got:?}"
    );
    eprintln!("{label}: a lone member grew into three");
}
