//! A network partition of a three-member Ballast cluster, each member in its own network
//! namespace ([`ballast_conformance::netns`]): clients write and read through all three, shard
//! 0's leader is cut off, and then
//! - (a) the minority side serves no linearizable read or write: `etcdctl put` and a
//!   linearizable `etcdctl get` run inside the isolated namespace against its member fail;
//! - (b) the majority elects a new leader and goes on: writes through the two others are
//!   answered within [`MAJORITY_MAX`] of the cut;
//! - (c) after the partition heals all three converge: every acknowledged write is on every
//!   member at its revision, the keys are the same everywhere, and HashKV at one revision is
//!   equal on all three;
//! - the clients' history (recorded across the whole run, requests that failed ambiguously or
//!   timed out as unknown outcomes) is linearizable; a violation fails the test with the
//!   checker's report (the shrunk failing history).
//!
//! And a follower cut off instead of the leader serves no linearizable read (it cannot get the
//! leader's read index: etcd's "request timed out"), serializable ones from its own state, and
//! after the heal its linearizable reads see what the majority wrote meanwhile.
//!
//! Invariants: needs root (it creates namespaces, veths and a bridge, all removed in `Drop`,
//! also on panic); every wait is bounded, the scenario by [`TEST_TIMEOUT`], the check by its
//! budget. Keys live under `/partition-test/`, outside `/registry/` (shard 0 with any shard
//! count), so one shard's leader and revisions are what the test sees.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ballast_conformance::linearizability::{
    assert_linearizable_figures, Budget, Call, ClientId, Outcome, Recorder,
};
use ballast_conformance::netns::{NsCluster, NsMember};
use ballast_proto::etcdserverpb::{
    kv_client::KvClient, maintenance_client::MaintenanceClient, HashKvRequest, PutRequest,
    RangeRequest, StatusRequest,
};
use bytes::Bytes;
use futures::StreamExt;
use tonic::transport::Channel;

/// Bound on the scenario (start, load, partition, heal, convergence); the linearizability check
/// after it has its own budget.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Election timeout the members run with (etcd's default).
const ELECTION: Duration = Duration::from_millis(1000);
/// How long after the cut the majority may take to answer a write: the followers notice the
/// silence after one to two election timeouts, then a (pre-)vote round, with room for a loaded
/// 2-core machine.
const MAJORITY_MAX: Duration = Duration::from_secs(5);
/// Load before the cut, the partition's length, and load after the heal.
const BEFORE_CUT: Duration = Duration::from_secs(2);
const PARTITION: Duration = Duration::from_secs(7);
const AFTER_HEAL: Duration = Duration::from_secs(4);
/// How long the members may take to agree after the heal.
const CONVERGE_MAX: Duration = Duration::from_secs(15);
/// A client's per-request timeout (then an unknown outcome).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between a client's requests: keeps the history a few thousand ops, which the checker
/// finishes in seconds.
const THINK: Duration = Duration::from_millis(8);
/// The contended keys (few, so clients collide and stale reads would show).
const KEYS: usize = 4;

fn key(i: usize) -> Vec<u8> {
    format!("/partition-test/k{i}").into_bytes()
}

/// A put some client saw acknowledged.
#[derive(Debug, Clone)]
struct Acked {
    member: usize,
    key: Vec<u8>,
    value: Vec<u8>,
    revision: i64,
    sent: Instant,
    answered: Instant,
}

/// One client bound to one member: random puts (unique values) and linearizable gets on the
/// contended keys until `stop`, one at a time, recorded.
async fn client(
    recorder: Recorder,
    id: u32,
    member: usize,
    channel: Channel,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<Acked>>>,
) -> (u64, u64, Vec<String>) {
    let mut c = recorder
        .client(id, KvClient::new(channel))
        .with_timeout(REQUEST_TIMEOUT);
    // xorshift, seeded by the client id: the runs differ only by timing.
    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(id + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (mut ok, mut failed) = (0u64, 0u64);
    // The errors seen, at most a few, with when (since the client started).
    let started = Instant::now();
    let mut errors = Vec::new();
    let deadline = Instant::now() + TEST_TIMEOUT;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let r = next();
        let k = key((r % KEYS as u64) as usize);
        let result = if (r >> 8) % 2 == 0 {
            let value = format!("c{id}-{n}").into_bytes();
            let sent = Instant::now();
            let result = c.put(&k, &value).await;
            if let Ok(Outcome::Put { revision, .. }) = &result {
                acked.lock().unwrap().push(Acked {
                    member,
                    key: k,
                    value,
                    revision: *revision,
                    sent,
                    answered: Instant::now(),
                });
            }
            result.map(|_| ())
        } else {
            c.get(&k).await.map(|_| ())
        };
        match result {
            Ok(()) => ok += 1,
            Err(e) => {
                failed += 1;
                if errors.len() < 4 {
                    errors.push(format!(
                        "{:.1?}: {:?} {}",
                        started.elapsed(),
                        e.code(),
                        e.message()
                    ));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        n += 1;
        tokio::time::sleep(THINK).await;
    }
    (ok, failed, errors)
}

async fn status(member: &NsMember) -> anyhow::Result<(u64, u64)> {
    let mut m = MaintenanceClient::new(member.channel().await?);
    let r = tokio::time::timeout(Duration::from_secs(3), m.status(StatusRequest {}))
        .await??
        .into_inner();
    Ok((r.header.map_or(0, |h| h.member_id), r.leader))
}

/// `etcdctl` run inside member `i`'s namespace against that member.
async fn etcdctl_in(
    cluster: &NsCluster,
    i: usize,
    args: &[&str],
) -> ballast_conformance::process::Run {
    let endpoint = format!("--endpoints={}", cluster.members[i].client_url());
    let mut full = vec![
        endpoint.as_str(),
        "--dial-timeout=2s",
        "--command-timeout=3s",
    ];
    full.extend_from_slice(args);
    cluster
        .exec_in(i, "etcdctl", &full, Duration::from_secs(10))
        .await
        .expect("running etcdctl in the namespace")
}

/// A one-line summary of a failed command's output: etcdctl's `Error:` line, else the first
/// line that mentions an error.
fn error_text(r: &ballast_conformance::process::Run) -> String {
    let text = format!("{}\n{}", r.stderr.trim(), r.stdout.trim());
    let line = text
        .lines()
        .find(|l| l.starts_with("Error:"))
        .or_else(|| text.lines().find(|l| l.to_lowercase().contains("error")))
        .unwrap_or(text.trim());
    format!("exit {:?} after {:.1?}: {}", r.code, r.elapsed, line.trim())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minority_refuses_majority_continues_and_all_converge_after_heal() {
    let election = ELECTION.as_millis().to_string();
    let cluster = NsCluster::start(
        3,
        &[
            "--heartbeat-interval",
            "100",
            "--election-timeout",
            &election,
        ],
    )
    .await
    .expect("starting three members in network namespaces");

    let scenario = tokio::time::timeout(TEST_TIMEOUT, scenario(&cluster)).await;
    let (recorder, figures) = scenario.expect("the partition scenario finished within its bound");

    // Linearizability of everything the clients saw.
    eprintln!("partition: {figures}");
    let budget = Budget {
        max_states: 2_000_000,
        max_time: Duration::from_secs(20),
    };
    let checked = assert_linearizable_figures(&recorder.history(), &budget);
    eprintln!("partition: {checked}");
    drop(cluster);
}

/// The scenario; returns the recorder and the figures to print.
async fn scenario(cluster: &NsCluster) -> (Recorder, String) {
    let n = cluster.members.len();
    let mut kvs = Vec::new();
    for m in &cluster.members {
        kvs.push(KvClient::new(m.channel().await.expect("channel")));
    }

    // The store's revision before the clients start; their keys are absent.
    let start = kvs[0]
        .range(RangeRequest {
            key: key(0).into(),
            ..Default::default()
        })
        .await
        .expect("linearizable range before the load")
        .into_inner();
    assert!(start.kvs.is_empty(), "a fresh cluster has no test keys");
    let recorder = Recorder::new(start.header.expect("header").revision);

    // Clients in the root namespace, one per member, through the bridge.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut clients = Vec::new();
    for (i, m) in cluster.members.iter().enumerate() {
        let ch = m.channel().await.expect("channel");
        clients.push(tokio::spawn(client(
            recorder.clone(),
            i as u32,
            i,
            ch,
            stop.clone(),
            acked.clone(),
        )));
    }
    tokio::time::sleep(BEFORE_CUT).await;

    // Shard 0's leader, as every member names it, and which member it is.
    let (ids, leader) = agreed_leader(cluster).await;
    let victim = ids
        .iter()
        .position(|id| *id == leader)
        .unwrap_or_else(|| panic!("the leader {leader:x} is a member ({ids:x?})"));
    let majority: Vec<usize> = (0..n).filter(|i| *i != victim).collect();

    // The cut.
    let cut = Instant::now();
    cluster.isolate(victim).expect("isolating the leader");
    let acked_before_cut = acked
        .lock()
        .unwrap()
        .iter()
        .filter(|a| a.answered < cut)
        .count();

    // (a) The minority: a put through the isolated member must fail. It may still be applied
    // in principle (a timed-out put is ambiguous in etcd's API), so it is filed as unknown.
    let minority_key = key(0);
    let minority_value = "minority-put";
    let invoke = recorder.now();
    let put = etcdctl_in(
        cluster,
        victim,
        &[
            "put",
            std::str::from_utf8(&minority_key).unwrap(),
            minority_value,
        ],
    )
    .await;
    recorder.record(
        ClientId(100),
        Call::Put {
            key: Bytes::from(minority_key.clone()),
            value: Bytes::from_static(minority_value.as_bytes()),
            prev_kv: false,
        },
        invoke,
        &Err(tonic::Status::unavailable(
            "etcdctl put in the minority failed",
        )),
    );
    assert!(
        !put.success(),
        "the isolated member acknowledged a put: {}{}",
        put.stdout,
        put.stderr
    );
    let minority_put_error = error_text(&put);

    // (b) The majority: the first write sent after the cut through one of the two others.
    let mut first_majority_write = None;
    while cut.elapsed() < PARTITION {
        first_majority_write = acked
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.sent > cut && majority.contains(&a.member))
            .map(|a| a.answered - cut)
            .min();
        if first_majority_write.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first_majority_write =
        first_majority_write.expect("the majority answers writes during the partition");
    assert!(
        first_majority_write <= MAJORITY_MAX,
        "the first majority write after the cut took {first_majority_write:?}"
    );
    let mut new_leader = 0;
    for _ in 0..50 {
        new_leader = status(&cluster.members[majority[0]])
            .await
            .map_or(0, |(_, l)| l);
        if new_leader != 0 && new_leader != leader {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        new_leader != 0 && new_leader != leader && ids.contains(&new_leader),
        "the majority elected a new leader (old {leader:x}, now {new_leader:x})"
    );

    // (a) again, now that the majority has moved on: a linearizable get through the isolated
    // member must fail (a stale answer would also be caught by the checker, but it must not
    // answer at all); a serializable one may answer from its stale state.
    let get = etcdctl_in(
        cluster,
        victim,
        &["get", std::str::from_utf8(&key(1)).unwrap()],
    )
    .await;
    assert!(
        !get.success(),
        "the isolated member answered a linearizable get: {}{}",
        get.stdout,
        get.stderr
    );
    let minority_get_error = error_text(&get);
    let serializable = etcdctl_in(
        cluster,
        victim,
        &[
            "get",
            "--consistency=s",
            std::str::from_utf8(&key(1)).unwrap(),
        ],
    )
    .await;

    // Hold the partition, then heal.
    if let Some(left) = PARTITION.checked_sub(cut.elapsed()) {
        tokio::time::sleep(left).await;
    }
    let healed = Instant::now();
    cluster.heal(victim).expect("healing the partition");
    let acked_during = acked
        .lock()
        .unwrap()
        .iter()
        .filter(|a| a.answered >= cut && a.answered < healed)
        .count();
    tokio::time::sleep(AFTER_HEAL).await;
    stop.store(true, Ordering::Relaxed);
    let mut client_figures = Vec::new();
    for c in clients {
        client_figures.push(c.await.expect("client task"));
    }
    let acked: Vec<Acked> = acked.lock().unwrap().clone();
    let victim_after_heal = acked
        .iter()
        .filter(|a| a.member == victim && a.sent > healed)
        .map(|a| a.answered - healed)
        .min();

    // (c) Convergence: a last write through the old leader (retried until it is back), then
    // every member must have it, every acknowledged put at its revision, the same keys and the
    // same HashKV.
    let converge_deadline = Instant::now() + CONVERGE_MAX;
    let mut last = None;
    let mut last_err = String::new();
    while Instant::now() < converge_deadline {
        let put = tokio::time::timeout(
            REQUEST_TIMEOUT,
            kvs[victim].put(PutRequest {
                key: Bytes::from_static(b"/partition-test/final"),
                value: Bytes::from_static(b"healed"),
                ..Default::default()
            }),
        )
        .await;
        match put {
            Ok(Ok(r)) => {
                last = Some(r.into_inner().header.expect("header").revision);
                break;
            }
            Ok(Err(e)) => last_err = e.to_string(),
            Err(_) => last_err = "timed out".to_owned(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let last = last.unwrap_or_else(|| {
        panic!("the old leader takes writes again after the heal; last error: {last_err}")
    });
    for (i, kv) in kvs.iter_mut().enumerate() {
        loop {
            let r = kv
                .range(RangeRequest {
                    key: Bytes::from_static(b"/partition-test/final"),
                    serializable: true,
                    ..Default::default()
                })
                .await;
            if matches!(&r, Ok(r) if r.get_ref().header.as_ref().is_some_and(|h| h.revision >= last))
            {
                break;
            }
            assert!(
                Instant::now() < converge_deadline,
                "m{i} did not reach revision {last} within {CONVERGE_MAX:?} of the heal: {r:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let converged = healed.elapsed();

    for (i, kv) in kvs.iter().enumerate() {
        let missing: Vec<String> = futures::stream::iter(acked.iter().cloned())
            .map(|a| {
                let mut kv = kv.clone();
                async move {
                    let r = kv
                        .range(RangeRequest {
                            key: a.key.clone().into(),
                            revision: a.revision,
                            serializable: true,
                            ..Default::default()
                        })
                        .await;
                    let found =
                        match &r {
                            Ok(r) => r.get_ref().kvs.first().is_some_and(|kv| {
                                kv.value == a.value && kv.mod_revision == a.revision
                            }),
                            Err(_) => false,
                        };
                    (!found).then(|| {
                        format!(
                            "{}={} at {} (acked by m{}): {:?}",
                            String::from_utf8_lossy(&a.key),
                            String::from_utf8_lossy(&a.value),
                            a.revision,
                            a.member,
                            r.map(|r| r.into_inner().kvs)
                        )
                    })
                }
            })
            .buffer_unordered(16)
            .filter_map(|m| async move { m })
            .collect()
            .await;
        assert!(
            missing.is_empty(),
            "m{i} lacks {} acknowledged writes, e.g. {:?}",
            missing.len(),
            missing.iter().take(5).collect::<Vec<_>>()
        );
    }
    let mut states = Vec::new();
    for kv in kvs.iter_mut() {
        let r = kv
            .range(RangeRequest {
                key: Bytes::from_static(b"/partition-test/"),
                range_end: Bytes::from_static(b"/partition-test0"),
                revision: last,
                serializable: true,
                ..Default::default()
            })
            .await
            .expect("range of the test keys at the last revision")
            .into_inner();
        states.push(
            r.kvs
                .into_iter()
                .map(|kv| {
                    (
                        kv.key,
                        kv.value,
                        kv.create_revision,
                        kv.mod_revision,
                        kv.version,
                    )
                })
                .collect::<Vec<_>>(),
        );
    }
    for (i, s) in states.iter().enumerate().skip(1) {
        assert_eq!(
            s, &states[0],
            "m{i} and m0 hold different keys at revision {last}"
        );
    }
    // Every member has answered a Range at or past `last`, so each must answer HashKV at
    // `last` (etcd does). A refusal fails the test; it is retried for a few seconds first only
    // to say whether it was transient.
    let mut hashes = Vec::new();
    let mut refusals = Vec::new();
    for (i, m) in cluster.members.iter().enumerate() {
        let mut c = MaintenanceClient::new(m.channel().await.expect("channel"));
        let asked = Instant::now();
        let mut first_error = None;
        let hash = loop {
            let r = tokio::time::timeout(
                Duration::from_secs(5),
                c.hash_kv(HashKvRequest { revision: last }),
            )
            .await
            .expect("HashKV timed out");
            match r {
                Ok(r) => break Some(r.into_inner().hash),
                Err(e) => {
                    first_error.get_or_insert_with(|| format!("{:?} {}", e.code(), e.message()));
                    if asked.elapsed() > Duration::from_secs(5) {
                        break None;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        if let Some(e) = first_error {
            refusals.push(format!(
                "m{i}{} refused HashKV at revision {last}: {e}; {}",
                if i == victim { " (the old leader)" } else { "" },
                match hash {
                    Some(_) => format!("answered on a retry after {:.1?}", asked.elapsed()),
                    None => "still refused after 5 s".to_owned(),
                }
            ));
        }
        hashes.push(hash.unwrap_or_default());
    }
    assert!(
        refusals.is_empty(),
        "members that had answered a Range at revision >= {last} refused HashKV at it:\n{}",
        refusals.join("\n")
    );
    assert!(
        hashes.iter().all(|h| *h == hashes[0]),
        "HashKV at revision {last} differs: {hashes:x?}"
    );
    // Whether the minority's put survived (it must not have: it was never committed), for the
    // figures; the checker accepts either, since its outcome is unknown.
    let minority_put_applied = states[0]
        .iter()
        .any(|(_, v, ..)| &v[..] == minority_value.as_bytes());

    let figures = format!(
        "{} writes acked ({acked_before_cut} before the cut, {acked_during} during the \
         partition, the rest after the heal); clients (ok, failed, first errors) per member {client_figures:?}; \
         leader m{victim} ({leader:x}) isolated; first majority write answered {:?} after the \
         cut; new leader {new_leader:x}; minority put: {minority_put_error}; minority \
         linearizable get: {minority_get_error}; minority serializable get: exit {:?} ({} bytes \
         of output); old leader's first write sent after the heal answered after {:?}; all \
         converged {:?} after the heal at revision {last}; HashKV {:x}; minority put applied: \
         {minority_put_applied}",
        acked.len(),
        first_majority_write,
        serializable.code,
        serializable.stdout.len(),
        victim_after_heal,
        converged,
        hashes[0]
    );
    (recorder, figures)
}

/// Bound on the isolated-follower scenario.
const FOLLOWER_TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A follower cut off from its leader serves no linearizable read: it cannot get the leader's
/// read index, so it answers `etcdctl get` run inside its namespace with etcd's "request timed
/// out" after the request timeout (5 s plus two election timeouts), never with a stale answer
/// (etcdctl retries it until its own command timeout, logging each attempt's error),
/// while a serializable get there answers from the follower's own state (the value from before
/// the cut). The majority goes on writing; after the heal the follower's linearizable reads
/// see what it wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_follower_serves_no_linearizable_read_but_serializable_ones() {
    let election = ELECTION.as_millis().to_string();
    let cluster = NsCluster::start(
        3,
        &[
            "--heartbeat-interval",
            "100",
            "--election-timeout",
            &election,
        ],
    )
    .await
    .expect("starting three members in network namespaces");
    let figures = tokio::time::timeout(FOLLOWER_TEST_TIMEOUT, isolated_follower(&cluster))
        .await
        .expect("the isolated-follower scenario finished within its bound");
    eprintln!("isolated follower: {figures}");
    drop(cluster);
}

async fn isolated_follower(cluster: &NsCluster) -> String {
    let key = "/partition-test/follower";
    let (ids, leader) = agreed_leader(cluster).await;
    let at = ids.iter().position(|id| *id == leader).expect("the leader");
    let victim = (0..ids.len()).find(|i| *i != at).expect("a follower");
    let mut kv = KvClient::new(cluster.members[at].channel().await.expect("channel"));
    let put = |value: &'static str| PutRequest {
        key: Bytes::from_static(key.as_bytes()),
        value: Bytes::from_static(value.as_bytes()),
        ..Default::default()
    };
    kv.put(put("before")).await.expect("put before the cut");
    // Linearizable through the follower before the cut: served there after a read index.
    let get = etcdctl_in(cluster, victim, &["get", key, "--print-value-only"]).await;
    assert!(
        get.success() && get.stdout.trim() == "before",
        "a linearizable get through the follower: {}{}",
        get.stdout,
        get.stderr
    );

    cluster.isolate(victim).expect("isolating the follower");
    kv.put(put("during"))
        .await
        .expect("the leader and the other follower go on writing");
    let endpoint = format!("--endpoints={}", cluster.members[victim].client_url());
    let linearizable = cluster
        .exec_in(
            victim,
            "etcdctl",
            &[
                endpoint.as_str(),
                "--dial-timeout=2s",
                "--command-timeout=20s",
                "get",
                key,
            ],
            Duration::from_secs(25),
        )
        .await
        .expect("running etcdctl in the namespace");
    let linearizable_error = error_text(&linearizable);
    assert!(
        !linearizable.success(),
        "the isolated follower answered a linearizable get: {}",
        linearizable.stdout
    );
    // etcdctl retries a read the server answered Unavailable until its command timeout, and
    // logs each attempt's error: the server's own answer is in those lines.
    let attempts = linearizable
        .stderr
        .lines()
        .filter(|l| l.contains("etcdserver: request timed out"))
        .count();
    assert!(
        attempts >= 1,
        "the isolated follower answered etcd's \"request timed out\": {linearizable_error}\n{}",
        linearizable.stderr
    );
    let serializable = etcdctl_in(
        cluster,
        victim,
        &["get", "--consistency=s", key, "--print-value-only"],
    )
    .await;
    assert!(
        serializable.success() && serializable.stdout.trim() == "before",
        "a serializable get through the isolated follower answers from its own state: {}{}",
        serializable.stdout,
        serializable.stderr
    );

    cluster.heal(victim).expect("healing the partition");
    let healed = Instant::now();
    let mut last = String::new();
    while healed.elapsed() < Duration::from_secs(20) {
        let get = etcdctl_in(cluster, victim, &["get", key, "--print-value-only"]).await;
        if get.success() && get.stdout.trim() == "during" {
            return format!(
                "m{victim} isolated; its linearizable get: {linearizable_error}, after \
                 {attempts} attempts answered \"request timed out\"; its serializable \
                 get answered {:?}; after the heal its linearizable get saw the majority's write \
                 {:.1?} after the heal",
                serializable.stdout.trim(),
                healed.elapsed()
            );
        }
        last = format!("{}{}", get.stdout, get.stderr);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("after the heal the follower's linearizable get never saw the majority's write: {last}");
}

/// The members' ids and the shard-0 leader they all name, waiting up to 10 s for them to
/// agree: a member reports a leader once its appends arrive (leader 0 until then, as etcd's),
/// and on a loaded machine one may not have heard from it yet when the cluster is ready.
async fn agreed_leader(cluster: &NsCluster) -> (Vec<u64>, u64) {
    let agreed_by = Instant::now() + Duration::from_secs(10);
    loop {
        let mut ids = Vec::new();
        let mut leaders = Vec::new();
        for m in &cluster.members {
            let (id, leader) = status(m).await.expect("status");
            ids.push(id);
            leaders.push(leader);
        }
        let agreed = leaders[0] != 0 && leaders.iter().all(|l| *l == leaders[0]);
        if agreed {
            return (ids, leaders[0]);
        }
        assert!(
            Instant::now() < agreed_by,
            "the members agree on an elected leader within 10 s: {leaders:x?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
