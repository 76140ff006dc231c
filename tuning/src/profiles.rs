//! Capacity profiles `small`, `medium`, `large`, `xlarge`: the load and machine of each size in
//! etcd's hardware guide (clients, requests/s, data size, Kubernetes nodes; vCPUs and memory
//! of its example machines), and the Ballast settings chosen for it.
//!
//! Invariants (checked by the tests below): every profile's settings pass
//! `Settings::validate`; election ≥ 10 × heartbeat; quota ≥ 2 × the profile's data size;
//! page cache ≤ a quarter of the profile's memory and ≥ its data size; a profile is never
//! smaller than the one before it in any capacity setting.

use serde::Serialize;

use crate::settings::{CompactionMode, PartitionRule, Settings};
use crate::units::{GIB, MIB};

/// One size of deployment. Plain data; `settings()` gives what Ballast runs with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Profile {
    pub name: &'static str,
    /// The guide's load bound, as the guide words it.
    pub load: &'static str,
    /// Concurrent clients the profile is sized for (the guide's bound; xlarge: its floor).
    pub clients: u32,
    /// Requests per second the profile is sized for (same convention).
    pub requests_per_s: u32,
    /// Data size the profile is sized for (xlarge: a design point above the guide's 1 GB).
    pub data_bytes: u64,
    /// Kubernetes cluster size the guide gives as an example.
    pub kubernetes_nodes: u32,
    /// vCPUs of the guide's example machine.
    pub cores: u32,
    /// Memory of the guide's example machine.
    pub memory_bytes: u64,
    settings: Settings,
}

const MB: u64 = 1000 * 1000;

impl Profile {
    /// All profiles, smallest first.
    pub fn all() -> Vec<Profile> {
        vec![small(), medium(), large(), xlarge()]
    }

    /// The profile called `name` (case-insensitive), if any.
    pub fn by_name(name: &str) -> Option<Profile> {
        Profile::all()
            .into_iter()
            .find(|p| p.name.eq_ignore_ascii_case(name.trim()))
    }

    /// The profile names, smallest first.
    pub fn names() -> Vec<&'static str> {
        Profile::all().into_iter().map(|p| p.name).collect()
    }

    /// The settings this profile runs with.
    pub fn settings(&self) -> Settings {
        self.settings.clone()
    }

    /// The smallest profile sized for at least `nodes` Kubernetes nodes (xlarge past them all).
    pub fn for_kubernetes_nodes(nodes: u32) -> Profile {
        Profile::all()
            .into_iter()
            .find(|p| nodes <= p.kubernetes_nodes)
            .unwrap_or_else(xlarge)
    }

    /// The smallest profile sized for at least `rps` requests per second.
    pub fn for_requests_per_s(rps: u32) -> Profile {
        Profile::all()
            .into_iter()
            .find(|p| rps <= p.requests_per_s)
            .unwrap_or_else(xlarge)
    }

    /// The smallest profile sized for at least `bytes` of data.
    pub fn for_data_bytes(bytes: u64) -> Profile {
        Profile::all()
            .into_iter()
            .find(|p| bytes <= p.data_bytes)
            .unwrap_or_else(xlarge)
    }
}

fn small() -> Profile {
    Profile {
        name: "small",
        load: "< 100 clients, < 200 req/s, <= 100 MB",
        clients: 100,
        requests_per_s: 200,
        data_bytes: 100 * MB,
        kubernetes_nodes: 50,
        cores: 2,
        memory_bytes: 8 * GIB,
        settings: Settings {
            shards: 2,
            partition: Vec::new(),
            page_cache_bytes: 512 * MIB,
            // Few writes: checkpoint often so the WAL stays short and restart replays little.
            snapshot_count: 10_000,
            checkpoint_dirty_bytes: 32 * MIB,
            checkpoint_interval_ms: 30_000,
            heartbeat_interval_ms: 100,
            election_timeout_ms: 1000,
            quota_backend_bytes: 2 * GIB,
            max_request_bytes: 1_572_864,
            max_txn_ops: 128,
            group_commit_max_batch: 64,
            group_commit_max_bytes: 4 * MIB,
            watch_event_buffer: 1024,
            watch_stream_buffer: 128,
            auto_compaction_mode: CompactionMode::Periodic,
            auto_compaction_retention: "1h".to_string(),
        },
    }
}

fn medium() -> Profile {
    Profile {
        name: "medium",
        load: "< 500 clients, < 1,000 req/s, <= 500 MB",
        clients: 500,
        requests_per_s: 1000,
        data_bytes: 500 * MB,
        kubernetes_nodes: 250,
        cores: 4,
        memory_bytes: 16 * GIB,
        settings: Settings {
            shards: 4,
            partition: Vec::new(),
            page_cache_bytes: 2 * GIB,
            snapshot_count: 50_000,
            checkpoint_dirty_bytes: 128 * MIB,
            checkpoint_interval_ms: 30_000,
            heartbeat_interval_ms: 100,
            election_timeout_ms: 1000,
            quota_backend_bytes: 4 * GIB,
            max_request_bytes: 1_572_864,
            max_txn_ops: 128,
            group_commit_max_batch: 256,
            group_commit_max_bytes: 8 * MIB,
            watch_event_buffer: 4096,
            watch_stream_buffer: 256,
            auto_compaction_mode: CompactionMode::Periodic,
            auto_compaction_retention: "1h".to_string(),
        },
    }
}

fn large() -> Profile {
    Profile {
        name: "large",
        load: "< 1,500 clients, < 10,000 req/s, <= 1 GB",
        clients: 1500,
        requests_per_s: 10_000,
        data_bytes: 1000 * MB,
        kubernetes_nodes: 1000,
        cores: 8,
        memory_bytes: 32 * GIB,
        settings: Settings {
            shards: 8,
            partition: Vec::new(),
            page_cache_bytes: 4 * GIB,
            snapshot_count: 100_000,
            checkpoint_dirty_bytes: 256 * MIB,
            checkpoint_interval_ms: 30_000,
            heartbeat_interval_ms: 100,
            election_timeout_ms: 1000,
            quota_backend_bytes: 8 * GIB,
            max_request_bytes: 1_572_864,
            max_txn_ops: 128,
            group_commit_max_batch: 1024,
            group_commit_max_bytes: 16 * MIB,
            watch_event_buffer: 16_384,
            watch_stream_buffer: 512,
            // At thousands of writes per second an hour of history is millions of revisions.
            auto_compaction_mode: CompactionMode::Periodic,
            auto_compaction_retention: "30m".to_string(),
        },
    }
}

fn xlarge() -> Profile {
    Profile {
        name: "xlarge",
        load: "> 1,500 clients, > 10,000 req/s, > 1 GB",
        clients: 5000,
        requests_per_s: 50_000,
        data_bytes: 4000 * MB,
        kubernetes_nodes: 3000,
        cores: 16,
        memory_bytes: 64 * GIB,
        settings: Settings {
            shards: 16,
            // Kubernetes events are the largest write stream and are rarely read back:
            // give them the last shard so their churn does not delay other resources' writes.
            partition: vec![PartitionRule {
                prefix: "/registry/events/".to_string(),
                shard: 15,
            }],
            page_cache_bytes: 8 * GIB,
            snapshot_count: 200_000,
            checkpoint_dirty_bytes: GIB,
            checkpoint_interval_ms: 15_000,
            // A leader of 16 busy shards sends heartbeats behind large batches on the shared
            // peer stream; 1.5x the default keeps a full batch from looking like a failure.
            heartbeat_interval_ms: 150,
            election_timeout_ms: 1500,
            quota_backend_bytes: 8 * GIB,
            max_request_bytes: 1_572_864,
            max_txn_ops: 128,
            group_commit_max_batch: 4096,
            group_commit_max_bytes: 32 * MIB,
            watch_event_buffer: 65_536,
            watch_stream_buffer: 1024,
            // Bound history by count, so its memory does not grow with the write rate.
            auto_compaction_mode: CompactionMode::Revision,
            auto_compaction_retention: "10000000".to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_profile_is_self_consistent() {
        for p in Profile::all() {
            let s = p.settings();
            s.validate()
                .unwrap_or_else(|e| panic!("profile {}: {e}", p.name));
            assert!(
                s.election_timeout_ms >= 5 * s.heartbeat_interval_ms,
                "{}: election < 5x heartbeat",
                p.name
            );
            assert!(
                s.election_timeout_ms >= 10 * s.heartbeat_interval_ms,
                "{}: election < 10x heartbeat",
                p.name
            );
            assert!(
                s.quota_backend_bytes >= p.data_bytes,
                "{}: quota < data",
                p.name
            );
            assert!(
                s.quota_backend_bytes >= 2 * p.data_bytes,
                "{}: quota leaves no room to grow",
                p.name
            );
            assert!(
                s.page_cache_bytes <= p.memory_bytes,
                "{}: cache > memory",
                p.name
            );
            assert!(
                s.page_cache_bytes <= p.memory_bytes / 8,
                "{}: cache > memory/8",
                p.name
            );
            assert!(
                s.page_cache_bytes >= p.data_bytes,
                "{}: cache < data",
                p.name
            );
            assert!(s.warnings().is_empty(), "{}: {:?}", p.name, s.warnings());
            assert_eq!(s.effective_shards(p.cores), p.cores, "{}", p.name);
        }
    }

    #[test]
    fn profiles_grow_monotonically() {
        let all = Profile::all();
        for w in all.windows(2) {
            let (a, b) = (w[0].settings(), w[1].settings());
            assert!(b.shards >= a.shards, "{} -> {}", w[0].name, w[1].name);
            assert!(b.page_cache_bytes >= a.page_cache_bytes);
            assert!(b.quota_backend_bytes >= a.quota_backend_bytes);
            assert!(b.group_commit_max_batch >= a.group_commit_max_batch);
            assert!(b.watch_event_buffer >= a.watch_event_buffer);
            assert!(w[1].requests_per_s > w[0].requests_per_s);
            assert!(w[1].kubernetes_nodes > w[0].kubernetes_nodes);
            assert!(w[1].data_bytes > w[0].data_bytes);
        }
    }

    #[test]
    fn lookup_by_name_and_by_load() {
        assert_eq!(Profile::by_name("large").unwrap().name, "large");
        assert_eq!(Profile::by_name("XLarge").unwrap().name, "xlarge");
        assert!(Profile::by_name("huge").is_none());
        assert_eq!(Profile::for_kubernetes_nodes(50).name, "small");
        assert_eq!(Profile::for_kubernetes_nodes(51).name, "medium");
        assert_eq!(Profile::for_kubernetes_nodes(3000).name, "xlarge");
        assert_eq!(Profile::for_kubernetes_nodes(100_000).name, "xlarge");
        assert_eq!(Profile::for_requests_per_s(5000).name, "large");
        assert_eq!(Profile::for_data_bytes(0).name, "small");
    }
}
