//! The advisor: from measurements (disk fdatasync latency, peer RTT, cores, memory, data size)
//! and a goal (Kubernetes nodes or requests/s), recommend settings with one line of reasoning
//! per setting.
//!
//! Rules (docs/tuning.md repeats them; tests in this file check each):
//! - profile: the smallest profile sized for the goal (nodes or req/s), else for the data size.
//! - shards = cores (one shard per core); profile pins to shards past the last are moved to the
//!   last shard, and dropped on one core.
//! - page-cache-bytes = min(max(2 × expected data, 256 MiB), memory / 4), where expected data is
//!   the larger of the data directory's size and the profile's data size.
//! - checkpoint-dirty-bytes = min(profile's, page cache / 4).
//! - quota-backend-bytes = max(profile's, 2 × data size rounded up to a GiB).
//! - heartbeat-interval: with peer RTTs, RTT = the largest per-peer median; heartbeat =
//!   max(profile's, RTT rounded up to 10 ms), capped at 4900 ms. So once RTT passes the
//!   profile's heartbeat the heartbeat is within 1.0–1.5 × RTT (etcd: 0.5–1.5 ×). Without
//!   RTTs it stays at the profile's.
//! - election-timeout = max(profile's, 10 × heartbeat, 10 × RTT), rounded up to 100 ms and
//!   capped at 49900 ms; so it is ≥ 10 × RTT and ≥ 5 × heartbeat.
//! - group-commit-max-batch = max(profile's, next power of two ≥ 2 × target req/s × fdatasync
//!   p99), at most 65536: a batch must absorb what arrives during one slow fsync.
//! - warnings: fdatasync p99 > 10 ms (etcd's limit), > 2 ms for large/xlarge (etcd's advice
//!   for heavy load), memory or cores below the profile's machine, unreachable peers, no disk
//!   measurement, quota above 8 GiB.

use serde::Serialize;

use crate::machine::Machine;
use crate::probe::{DiskMeasurement, PeerRtt};
use crate::profiles::Profile;
use crate::settings::{format_partition, Settings, MAX_GROUP_COMMIT_BATCH};
use crate::units::{human_bytes, GIB, MIB};

/// etcd's hardware guide: fdatasync p99 must stay below 10 ms.
pub const FDATASYNC_P99_LIMIT_US: u64 = 10_000;
/// etcd's advice for heavily loaded clusters: about 2 ms.
pub const FDATASYNC_P99_HEAVY_US: u64 = 2_000;
const MAX_HEARTBEAT_MS: u64 = 4_900;
const MAX_ELECTION_MS: u64 = 49_900;

/// Everything the advisor knows about the deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Measurements {
    pub machine: Machine,
    /// Bytes already in the data directory.
    pub data_bytes: u64,
    /// `None` if the disk was not probed.
    pub disk: Option<DiskMeasurement>,
    /// One entry per peer given; empty for a single node.
    pub peers: Vec<PeerRtt>,
}

/// What the deployment must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Goal {
    /// Size from the data directory alone.
    Unspecified,
    KubernetesNodes(u32),
    RequestsPerSecond(u32),
}

/// One setting's recommendation and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    pub key: &'static str,
    pub value: String,
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Advice {
    /// The profile the recommendation starts from.
    pub profile: &'static str,
    pub settings: Settings,
    /// One per key of `SETTINGS_KEYS`, in that order, plus `profile` first.
    pub reasons: Vec<Reason>,
    pub warnings: Vec<String>,
    pub measurements: Measurements,
}

fn round_up(v: u64, step: u64) -> u64 {
    v.div_ceil(step) * step
}

fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

/// The largest per-peer median RTT in microseconds, over the peers that answered.
pub fn peer_rtt_us(peers: &[PeerRtt]) -> Option<u64> {
    peers.iter().filter_map(|p| p.rtt_us_p50).max()
}

/// Recommend settings for `m` and `goal`. Pure: the same inputs give the same advice.
pub fn advise(m: &Measurements, goal: Goal) -> Advice {
    let mut reasons = Vec::new();
    let mut warnings = Vec::new();
    let mut why = |key: &'static str, value: String, text: String| {
        reasons.push(Reason {
            key,
            value,
            why: text,
        })
    };

    // --- profile
    let profile = match goal {
        Goal::KubernetesNodes(n) => Profile::for_kubernetes_nodes(n),
        Goal::RequestsPerSecond(r) => Profile::for_requests_per_s(r),
        Goal::Unspecified => Profile::for_data_bytes(m.data_bytes),
    };
    let base = profile.settings();
    let mut s = base.clone();
    why(
        "profile",
        profile.name.to_string(),
        match goal {
            Goal::KubernetesNodes(n) => format!(
                "smallest profile sized for {n} Kubernetes nodes (it is sized for {})",
                profile.kubernetes_nodes
            ),
            Goal::RequestsPerSecond(r) => format!(
                "smallest profile sized for {r} req/s (it is sized for {})",
                profile.requests_per_s
            ),
            Goal::Unspecified => format!(
                "no --nodes or --rps: smallest profile sized for the {} in the data dir",
                human_bytes(m.data_bytes)
            ),
        },
    );
    let target_rps = match goal {
        Goal::RequestsPerSecond(r) => u64::from(r),
        _ => u64::from(profile.requests_per_s),
    };

    // --- shards and partition
    let cores = m.machine.cores.max(1);
    s.shards = cores;
    why(
        "shards",
        s.shards.to_string(),
        format!(
            "one shard per core ({cores} cores); each shard runs on its own pinned core without locks{}",
            if cores < profile.cores {
                format!(" (the {} profile assumes {})", profile.name, profile.cores)
            } else {
                String::new()
            }
        ),
    );
    let mut pins = base.partition.clone();
    if cores == 1 {
        pins.clear();
    } else {
        for p in &mut pins {
            p.shard = p.shard.min(cores - 1);
        }
    }
    let moved = pins != base.partition;
    s.partition = pins;
    why(
        "partition",
        format_partition(&s.partition),
        if s.partition.is_empty() && base.partition.is_empty() {
            "no pins: every prefix is placed by the default hash".to_string()
        } else if s.partition.is_empty() {
            "profile pins dropped: one core leaves nothing to isolate".to_string()
        } else if moved {
            "profile pins moved to the last shard, which this machine has".to_string()
        } else {
            format!(
                "from the {} profile: isolates the busiest prefix",
                profile.name
            )
        },
    );

    // --- memory: page cache and checkpoints
    let expected_data = m.data_bytes.max(profile.data_bytes);
    let want_cache = (2 * expected_data).max(256 * MIB);
    // The setting bounds two caches (the page cache and the store's cache of key indexes and
    // records), so an eighth of memory keeps both within about a quarter.
    let cap_cache = m.machine.memory_bytes / 8;
    s.page_cache_bytes = round_up(want_cache.min(cap_cache), MIB).max(16 * MIB);
    why(
        "page-cache-bytes",
        s.page_cache_bytes.to_string(),
        if want_cache <= cap_cache {
            format!(
                "2 x expected data ({}), at least 256 MiB: the whole data set stays in memory with room to grow",
                human_bytes(expected_data)
            )
        } else {
            format!(
                "capped at an eighth of memory ({} of {}): it bounds the page cache and the store's cache, about a quarter of memory together; the rest is for watchers, requests and the OS",
                human_bytes(cap_cache),
                human_bytes(m.machine.memory_bytes)
            )
        },
    );
    if expected_data > s.page_cache_bytes {
        warnings.push(format!(
            "expected data ({}) exceeds the page cache ({}): cold pages will be read from disk",
            human_bytes(expected_data),
            human_bytes(s.page_cache_bytes)
        ));
    }
    if m.machine.memory_bytes < profile.memory_bytes {
        warnings.push(format!(
            "memory {} is below the {} profile's {}",
            human_bytes(m.machine.memory_bytes),
            profile.name,
            human_bytes(profile.memory_bytes)
        ));
    }
    if cores < profile.cores {
        warnings.push(format!(
            "{cores} cores is below the {} profile's {}: expect lower throughput than the profile is sized for",
            profile.name, profile.cores
        ));
    }
    s.checkpoint_dirty_bytes = base
        .checkpoint_dirty_bytes
        .min(s.page_cache_bytes / 4)
        .max(MIB);
    why(
        "checkpoint-dirty-bytes",
        s.checkpoint_dirty_bytes.to_string(),
        "the profile's, at most a quarter of the page cache: dirty pages stay cached until a checkpoint writes them"
            .to_string(),
    );
    why(
        "snapshot-count",
        s.snapshot_count.to_string(),
        format!(
            "from the {} profile: more entries between checkpoints means fewer checkpoints but a longer WAL to replay and keep",
            profile.name
        ),
    );
    why(
        "checkpoint-interval-ms",
        s.checkpoint_interval_ms.to_string(),
        "from the profile: bounds how old unflushed pages get when writes are few".to_string(),
    );

    // --- network: heartbeat and election
    let rtt_us = peer_rtt_us(&m.peers);
    for p in m.peers.iter().filter(|p| p.samples == 0) {
        warnings.push(format!(
            "peer {} did not answer ({}): its RTT is not taken into account",
            p.peer,
            p.error.as_deref().unwrap_or("no connection")
        ));
    }
    let rtt_ms = rtt_us.map(|us| us.div_ceil(1000));
    match rtt_ms {
        Some(rtt) => {
            let hb = base.heartbeat_interval_ms.max(round_up(rtt.max(1), 10));
            s.heartbeat_interval_ms = hb.min(MAX_HEARTBEAT_MS);
            why(
                "heartbeat-interval",
                s.heartbeat_interval_ms.to_string(),
                if hb == base.heartbeat_interval_ms {
                    format!(
                        "peer RTT {} is below the profile's {} ms, which is kept: faster heartbeats only add traffic",
                        ms(rtt_us.unwrap_or(0)),
                        base.heartbeat_interval_ms
                    )
                } else {
                    format!(
                        "about the largest peer RTT ({}): etcd advises 0.5-1.5 x RTT",
                        ms(rtt_us.unwrap_or(0))
                    )
                },
            );
            if hb > MAX_HEARTBEAT_MS {
                warnings.push(format!(
                    "peer RTT {} is too high for Raft: heartbeat capped at {MAX_HEARTBEAT_MS} ms",
                    ms(rtt_us.unwrap_or(0))
                ));
            }
        }
        None => why(
            "heartbeat-interval",
            s.heartbeat_interval_ms.to_string(),
            if m.peers.is_empty() {
                "no --peers: the profile's value (etcd's default 100 ms unless the profile says otherwise)".to_string()
            } else {
                "no peer answered: the profile's value".to_string()
            },
        ),
    }
    let hb = s.heartbeat_interval_ms;
    let election = base
        .election_timeout_ms
        .max(10 * hb)
        .max(10 * rtt_ms.unwrap_or(0));
    s.election_timeout_ms = round_up(election, 100).min(MAX_ELECTION_MS);
    why(
        "election-timeout",
        s.election_timeout_ms.to_string(),
        format!(
            "at least 10 x heartbeat ({hb} ms){}: one late heartbeat must not start an election",
            match rtt_ms {
                Some(r) => format!(" and 10 x peer RTT ({r} ms)"),
                None => String::new(),
            }
        ),
    );
    if election > MAX_ELECTION_MS {
        warnings.push(format!(
            "an election timeout of {election} ms would be needed; capped at {MAX_ELECTION_MS} ms (etcd refuses 50 s or more)"
        ));
    }

    // --- storage limits
    let quota_for_data = round_up(2 * m.data_bytes, GIB);
    s.quota_backend_bytes = base.quota_backend_bytes.max(quota_for_data);
    why(
        "quota-backend-bytes",
        s.quota_backend_bytes.to_string(),
        if quota_for_data > base.quota_backend_bytes {
            format!(
                "2 x the {} already stored, rounded up to a GiB: room to grow before NOSPACE",
                human_bytes(m.data_bytes)
            )
        } else {
            format!(
                "the {} profile's; at least 2 x the {} stored",
                profile.name,
                human_bytes(m.data_bytes)
            )
        },
    );
    why(
        "max-request-bytes",
        s.max_request_bytes.to_string(),
        "etcd's default 1.5 MiB: Kubernetes objects stay below it, larger requests stall the log"
            .to_string(),
    );
    why(
        "max-txn-ops",
        s.max_txn_ops.to_string(),
        "etcd's default: bounds the work one request can put on a shard".to_string(),
    );

    // --- disk: group commit and the fsync warning
    match &m.disk {
        Some(d) => {
            let arrivals = (2 * target_rps * d.fdatasync_us_p99).div_ceil(1_000_000);
            let wanted = arrivals.max(1).next_power_of_two();
            let batch = u64::from(base.group_commit_max_batch)
                .max(wanted)
                .min(u64::from(MAX_GROUP_COMMIT_BATCH));
            s.group_commit_max_batch = batch as u32;
            why(
                "group-commit-max-batch",
                s.group_commit_max_batch.to_string(),
                format!(
                    "absorbs 2 x the writes arriving during one fdatasync at p99 ({} x {target_rps} req/s = {} entries), at least the profile's {}",
                    ms(d.fdatasync_us_p99),
                    (target_rps * d.fdatasync_us_p99).div_ceil(1_000_000),
                    base.group_commit_max_batch
                ),
            );
            if d.fdatasync_us_p99 > FDATASYNC_P99_LIMIT_US {
                warnings.push(format!(
                    "fdatasync p99 is {}, above etcd's 10 ms limit: writes will be slow and a busy leader may miss heartbeats; put the data dir on a local SSD or NVMe",
                    ms(d.fdatasync_us_p99)
                ));
            } else if d.fdatasync_us_p99 > FDATASYNC_P99_HEAVY_US
                && matches!(profile.name, "large" | "xlarge")
            {
                warnings.push(format!(
                    "fdatasync p99 is {}: fine for light load, but etcd advises about 2 ms for the {} profile's load",
                    ms(d.fdatasync_us_p99),
                    profile.name
                ));
            }
        }
        None => {
            why(
                "group-commit-max-batch",
                s.group_commit_max_batch.to_string(),
                "disk not measured: the profile's".to_string(),
            );
            warnings.push("disk not measured: fdatasync latency unknown".to_string());
        }
    }
    why(
        "group-commit-max-bytes",
        s.group_commit_max_bytes.to_string(),
        "the profile's; never below max-request-bytes, so any request fits one batch".to_string(),
    );

    // --- watches and compaction
    why(
        "watch-event-buffer",
        s.watch_event_buffer.to_string(),
        format!(
            "from the {} profile: more buffered events let watchers lag longer before catching up from the index",
            profile.name
        ),
    );
    why(
        "watch-stream-buffer",
        s.watch_stream_buffer.to_string(),
        "from the profile: a longer queue tolerates slower clients before they are cancelled"
            .to_string(),
    );
    why(
        "auto-compaction-mode",
        s.auto_compaction_mode.as_str().to_string(),
        "from the profile".to_string(),
    );
    why(
        "auto-compaction-retention",
        s.auto_compaction_retention.clone(),
        "from the profile: history kept for watchers and reads at old revisions".to_string(),
    );
    warnings.extend(s.warnings());
    debug_assert!(
        s.validate().is_ok(),
        "advice must be valid: {:?}",
        s.validate()
    );

    Advice {
        profile: profile.name,
        settings: s,
        reasons,
        warnings,
        measurements: m.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::SETTINGS_KEYS;

    fn machine(cores: u32, gib: u64) -> Machine {
        Machine {
            cores,
            memory_bytes: gib * GIB,
        }
    }

    fn disk(p99_us: u64) -> DiskMeasurement {
        DiskMeasurement {
            samples: 1000,
            block_bytes: 2300,
            fdatasync_us_p50: p99_us / 2,
            fdatasync_us_p99: p99_us,
            fdatasync_us_max: p99_us * 2,
            probe: "synthetic".into(),
        }
    }

    fn peer(rtt_us: u64) -> PeerRtt {
        PeerRtt {
            peer: "127.0.0.1:2380".into(),
            samples: 5,
            failures: 0,
            rtt_us_p50: Some(rtt_us),
            rtt_us_max: Some(rtt_us + 100),
            error: None,
        }
    }

    fn reason<'a>(a: &'a Advice, key: &str) -> &'a Reason {
        a.reasons.iter().find(|r| r.key == key).unwrap()
    }

    #[test]
    fn fast_nvme_on_a_lan() {
        let m = Measurements {
            machine: machine(8, 32),
            data_bytes: 300 * MIB,
            disk: Some(disk(150)),
            peers: vec![peer(250), peer(400)],
        };
        let a = advise(&m, Goal::KubernetesNodes(1000));
        assert_eq!(a.profile, "large");
        let s = &a.settings;
        assert_eq!(s.shards, 8);
        assert_eq!(s.heartbeat_interval_ms, 100, "sub-ms RTT keeps the default");
        assert_eq!(s.election_timeout_ms, 1000);
        assert!(
            a.warnings.iter().all(|w| !w.contains("fdatasync")),
            "{:?}",
            a.warnings
        );
        // 2 x 10,000 req/s x 0.15 ms = 3 entries: the profile's batch stays.
        assert_eq!(
            s.group_commit_max_batch,
            Profile::by_name("large")
                .unwrap()
                .settings()
                .group_commit_max_batch
        );
        // 2 x 1 GB expected data = 2 GB, under an eighth of 32 GiB.
        assert_eq!(s.page_cache_bytes, round_up(2 * 1000 * 1000 * 1000, MIB));
        s.validate().unwrap();
    }

    #[test]
    fn slow_network_disk_warns_and_widens_batches() {
        let m = Measurements {
            machine: machine(4, 16),
            data_bytes: 100 * MIB,
            disk: Some(disk(25_000)),
            peers: vec![],
        };
        let a = advise(&m, Goal::RequestsPerSecond(5000));
        assert_eq!(a.profile, "large");
        assert!(
            a.warnings
                .iter()
                .any(|w| w.contains("fdatasync p99") && w.contains("10 ms")),
            "{:?}",
            a.warnings
        );
        // 2 x 5000 req/s x 25 ms = 250 entries -> 256, but large's 1024 is larger.
        assert_eq!(a.settings.group_commit_max_batch, 1024);
        let a = advise(&m, Goal::RequestsPerSecond(50_000));
        // 2 x 50,000 x 25 ms = 2500 -> 4096 (> xlarge's 4096? equal): power of two at least.
        assert!(a.settings.group_commit_max_batch >= 2500);
        assert!(a.settings.group_commit_max_batch.is_power_of_two());
        // Just under the limit: no 10 ms warning.
        let m2 = Measurements {
            disk: Some(disk(9_000)),
            ..m.clone()
        };
        let a = advise(&m2, Goal::KubernetesNodes(50));
        assert!(
            a.warnings.iter().all(|w| !w.contains("10 ms")),
            "{:?}",
            a.warnings
        );
    }

    #[test]
    fn high_rtt_sets_heartbeat_and_election_by_the_rules() {
        for rtt_ms in [120u64, 250, 800] {
            let m = Measurements {
                machine: machine(2, 8),
                data_bytes: 0,
                disk: Some(disk(500)),
                peers: vec![peer(rtt_ms * 1000), peer(rtt_ms * 500)],
            };
            let a = advise(&m, Goal::Unspecified);
            let s = &a.settings;
            let hb = s.heartbeat_interval_ms as f64;
            assert!(
                hb >= 0.5 * rtt_ms as f64 && hb <= 1.5 * rtt_ms as f64,
                "rtt {rtt_ms}: heartbeat {hb}"
            );
            assert!(s.election_timeout_ms >= 10 * rtt_ms, "rtt {rtt_ms}");
            assert!(s.election_timeout_ms >= 5 * s.heartbeat_interval_ms);
            assert!(reason(&a, "heartbeat-interval").why.contains("RTT"));
            s.validate().unwrap();
        }
    }

    #[test]
    fn extreme_rtt_is_capped_with_a_warning() {
        let m = Measurements {
            machine: machine(2, 8),
            data_bytes: 0,
            disk: None,
            peers: vec![peer(9_000_000)],
        };
        let a = advise(&m, Goal::Unspecified);
        assert_eq!(a.settings.heartbeat_interval_ms, MAX_HEARTBEAT_MS);
        assert_eq!(a.settings.election_timeout_ms, MAX_ELECTION_MS);
        assert!(a.warnings.iter().any(|w| w.contains("too high for Raft")));
        a.settings.validate().unwrap();
    }

    #[test]
    fn shards_follow_cores_and_pins_are_kept_in_range() {
        let mut m = Measurements {
            machine: machine(2, 64),
            data_bytes: 0,
            disk: None,
            peers: vec![],
        };
        let a = advise(&m, Goal::KubernetesNodes(3000));
        assert_eq!(a.profile, "xlarge");
        assert_eq!(a.settings.shards, 2);
        assert_eq!(a.settings.partition[0].shard, 1);
        assert!(a.warnings.iter().any(|w| w.contains("cores")));
        a.settings.validate().unwrap();
        m.machine.cores = 1;
        let a = advise(&m, Goal::KubernetesNodes(3000));
        assert_eq!(a.settings.shards, 1);
        assert!(a.settings.partition.is_empty());
        a.settings.validate().unwrap();
    }

    #[test]
    fn cache_from_memory_and_data_and_quota_from_data() {
        // Little memory: the cache is capped at an eighth of it, with a warning.
        let m = Measurements {
            machine: machine(2, 2),
            data_bytes: 3 * GIB,
            disk: None,
            peers: vec![],
        };
        let a = advise(&m, Goal::Unspecified);
        assert_eq!(a.settings.page_cache_bytes, GIB / 4);
        assert!(a.warnings.iter().any(|w| w.contains("cold pages")));
        // 2 x 3 GiB = 6 GiB > xlarge's... no: profile for 3 GiB is xlarge with 8 GiB quota.
        assert!(a.settings.quota_backend_bytes >= 2 * m.data_bytes);
        assert!(a.settings.checkpoint_dirty_bytes <= a.settings.page_cache_bytes / 4);
        // A lot of data: quota grows past the profile's to 2 x data, with the 8 GiB warning.
        let big = Measurements {
            data_bytes: 6 * GIB,
            machine: machine(16, 64),
            ..m.clone()
        };
        let a = advise(&big, Goal::Unspecified);
        assert_eq!(a.settings.quota_backend_bytes, 12 * GIB);
        assert!(a.warnings.iter().any(|w| w.contains("8 GiB")));
        // Plenty of memory, little data: 256 MiB floor.
        let small = Measurements {
            data_bytes: 0,
            machine: machine(2, 64),
            ..m
        };
        let a = advise(&small, Goal::Unspecified);
        assert_eq!(a.profile, "small");
        assert_eq!(a.settings.page_cache_bytes, 256 * MIB);
    }

    #[test]
    fn one_reason_per_setting() {
        let m = Measurements {
            machine: machine(2, 8),
            data_bytes: 0,
            disk: Some(disk(100)),
            peers: vec![],
        };
        let a = advise(&m, Goal::Unspecified);
        assert_eq!(a.reasons[0].key, "profile");
        let keys: Vec<&str> = a.reasons.iter().skip(1).map(|r| r.key).collect();
        for (k, _) in SETTINGS_KEYS {
            assert_eq!(keys.iter().filter(|x| *x == k).count(), 1, "{k}");
        }
        assert_eq!(keys.len(), SETTINGS_KEYS.len());
        for r in &a.reasons[1..] {
            assert_eq!(
                Some(r.value.clone()),
                a.settings.value_of(r.key),
                "{}",
                r.key
            );
        }
    }
}
