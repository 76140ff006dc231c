//! `Settings`: the fully resolved tunables of one Ballast server, and `SettingsPatch`, the same
//! fields each optional, as one layer (profile, file, flags) states them.
//!
//! Invariants:
//! - `Settings::default()` is etcd 3.4's defaults for every key etcd has (heartbeat 100 ms,
//!   election 1000 ms, snapshot-count 100000, quota 2 GiB, max-request-bytes 1.5 MiB,
//!   max-txn-ops 128, auto-compaction off) and Ballast's defaults for its own keys.
//! - `SETTINGS_KEYS` lists every tunable key once; `SettingsPatch::set` accepts exactly those
//!   keys and `Settings::value_of` prints each in a form `set` parses back to the same value.
//! - `Settings::validate` is the one place that checks cross-key rules; a `Settings` handed to
//!   the server has passed it.

use serde::Serialize;

use crate::error::ConfigError;
use crate::units::{parse_bool_or_err, parse_bytes, parse_duration_ms, parse_u64, GIB, MIB};

/// etcd's default quota-backend-bytes (2 GiB); a quota of 0 in a file or flag means this.
pub const DEFAULT_QUOTA_BACKEND_BYTES: u64 = 2 * GIB;
/// A negative quota-backend-bytes (etcd: no quota at all) is kept as this value, and printed
/// back as `-1`.
pub const QUOTA_DISABLED: u64 = u64::MAX;
/// etcd's suggested maximum quota; above it `Settings::warnings` says so.
pub const MAX_SUGGESTED_QUOTA_BACKEND_BYTES: u64 = 8 * GIB;
/// etcd refuses election timeouts of 50 s or more.
pub const MAX_ELECTION_TIMEOUT_MS: u64 = 50_000;
/// Upper bound on `shards`; each shard owns a WAL, a page log and a Raft group.
pub const MAX_SHARDS: u32 = 256;
/// Upper bound on `group-commit-max-batch`, so one batch's entry list stays bounded.
pub const MAX_GROUP_COMMIT_BATCH: u32 = 65_536;

/// How revisions are compacted automatically (etcd's `--auto-compaction-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CompactionMode {
    /// Keep `retention` of wall-clock history.
    Periodic,
    /// Keep the last `retention` revisions.
    Revision,
}

impl CompactionMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CompactionMode::Periodic => "periodic",
            CompactionMode::Revision => "revision",
        }
    }
}

/// `auto-compaction-mode` and `auto-compaction-retention` read together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoCompaction {
    Disabled,
    /// Compact away history older than this many milliseconds.
    Periodic {
        retention_ms: u64,
    },
    /// Keep this many revisions of history.
    Revision {
        keep_revisions: u64,
    },
}

/// One `--partition` pin: keys under `prefix` live in shard `shard`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionRule {
    pub prefix: String,
    pub shard: u32,
}

/// The fully resolved tunables. Plain data: the server reads the fields, and reports them in
/// Status / metrics by serializing this struct.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Settings {
    /// Number of shards; 0 means one per core. Shards beyond the core count share cores.
    pub shards: u32,
    /// Key prefixes pinned to shards, in addition to the default hash placement.
    pub partition: Vec<PartitionRule>,
    /// Bytes of B-tree pages kept in memory, all shards together.
    pub page_cache_bytes: u64,
    /// Applied entries between two checkpoints (etcd: entries between snapshots); the WAL is
    /// purged up to the last checkpoint.
    pub snapshot_count: u64,
    /// A checkpoint also starts when this many bytes of keys and values changed since the last.
    pub checkpoint_dirty_bytes: u64,
    /// A checkpoint also starts when the last one is this old and anything is dirty.
    pub checkpoint_interval_ms: u64,
    /// Raft heartbeat interval.
    pub heartbeat_interval_ms: u64,
    /// Raft election timeout.
    pub election_timeout_ms: u64,
    /// Storage quota; past it writes fail with NOSPACE and the alarm is raised
    /// ([`QUOTA_DISABLED`]: no quota).
    pub quota_backend_bytes: u64,
    /// Largest request a client may send.
    pub max_request_bytes: u64,
    /// Most operations in one transaction.
    pub max_txn_ops: u64,
    /// Most WAL entries written by one write + fdatasync.
    pub group_commit_max_batch: u32,
    /// Most bytes written by one write + fdatasync (one entry larger than this is still written
    /// alone; `validate` keeps this ≥ max_request_bytes so that never splits a request).
    pub group_commit_max_bytes: u64,
    /// Recent events each shard keeps in memory for watchers that fall slightly behind.
    pub watch_event_buffer: u32,
    /// Responses queued per watch stream before the watcher counts as slow.
    pub watch_stream_buffer: u32,
    pub auto_compaction_mode: CompactionMode,
    /// etcd's string form: hours as a bare number or a duration ("1", "30m") in periodic mode,
    /// a revision count in revision mode; "0" disables auto-compaction.
    pub auto_compaction_retention: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            shards: 0,
            partition: Vec::new(),
            page_cache_bytes: 512 * MIB,
            snapshot_count: 100_000,
            checkpoint_dirty_bytes: 8 * MIB,
            checkpoint_interval_ms: 30_000,
            heartbeat_interval_ms: 100,
            election_timeout_ms: 1000,
            quota_backend_bytes: DEFAULT_QUOTA_BACKEND_BYTES,
            max_request_bytes: 1024 * 1024 + 512 * 1024,
            max_txn_ops: 128,
            group_commit_max_batch: 256,
            group_commit_max_bytes: 4 * MIB,
            watch_event_buffer: 4096,
            watch_stream_buffer: 128,
            auto_compaction_mode: CompactionMode::Periodic,
            auto_compaction_retention: "0".to_string(),
        }
    }
}

/// Every tunable key, in the order `ballast-tune show` prints them, with a one-line meaning.
pub const SETTINGS_KEYS: &[(&str, &str)] = &[
    (
        "shards",
        "Number of shards (0: one per core); shards beyond the core count share cores.",
    ),
    (
        "partition",
        "Key prefixes pinned to shards, PREFIX=SHARD,... (others: default placement).",
    ),
    (
        "page-cache-bytes",
        "Bytes of B-tree pages kept in memory, all shards together.",
    ),
    (
        "snapshot-count",
        "Applied entries between checkpoints; the WAL is purged up to the last one.",
    ),
    (
        "checkpoint-dirty-bytes",
        "A checkpoint also starts when this many bytes of keys and values changed since the last.",
    ),
    (
        "checkpoint-interval-ms",
        "A checkpoint also starts when the last one is this old (milliseconds).",
    ),
    (
        "heartbeat-interval",
        "Time (in milliseconds) of a heartbeat interval.",
    ),
    (
        "election-timeout",
        "Time (in milliseconds) for an election to timeout.",
    ),
    (
        "quota-backend-bytes",
        "Raise the NOSPACE alarm when the data exceeds this many bytes (0: 2 GiB).",
    ),
    (
        "max-request-bytes",
        "Largest client request accepted, in bytes.",
    ),
    ("max-txn-ops", "Most operations allowed in one transaction."),
    (
        "group-commit-max-batch",
        "Most WAL entries made durable by one write + fdatasync.",
    ),
    (
        "group-commit-max-bytes",
        "Most bytes made durable by one write + fdatasync.",
    ),
    (
        "watch-event-buffer",
        "Recent events each shard keeps in memory for watchers that fall behind.",
    ),
    (
        "watch-stream-buffer",
        "Responses queued per watch stream before the watcher counts as slow.",
    ),
    (
        "auto-compaction-mode",
        "Auto-compaction mode: 'periodic' (by time) or 'revision' (by count).",
    ),
    (
        "auto-compaction-retention",
        "History kept by auto-compaction: hours or a duration (periodic), revisions (revision); '0' disables.",
    ),
];

impl Settings {
    /// The value of one key of `SETTINGS_KEYS`, printed as a flag value; `None` for other keys.
    pub fn value_of(&self, key: &str) -> Option<String> {
        let v = match key {
            "shards" => self.shards.to_string(),
            "partition" => format_partition(&self.partition),
            "page-cache-bytes" => self.page_cache_bytes.to_string(),
            "snapshot-count" => self.snapshot_count.to_string(),
            "checkpoint-dirty-bytes" => self.checkpoint_dirty_bytes.to_string(),
            "checkpoint-interval-ms" => self.checkpoint_interval_ms.to_string(),
            "heartbeat-interval" => self.heartbeat_interval_ms.to_string(),
            "election-timeout" => self.election_timeout_ms.to_string(),
            "quota-backend-bytes" if self.quota_backend_bytes == QUOTA_DISABLED => "-1".into(),
            "quota-backend-bytes" => self.quota_backend_bytes.to_string(),
            "max-request-bytes" => self.max_request_bytes.to_string(),
            "max-txn-ops" => self.max_txn_ops.to_string(),
            "group-commit-max-batch" => self.group_commit_max_batch.to_string(),
            "group-commit-max-bytes" => self.group_commit_max_bytes.to_string(),
            "watch-event-buffer" => self.watch_event_buffer.to_string(),
            "watch-stream-buffer" => self.watch_stream_buffer.to_string(),
            "auto-compaction-mode" => self.auto_compaction_mode.as_str().to_string(),
            "auto-compaction-retention" => self.auto_compaction_retention.clone(),
            _ => return None,
        };
        Some(v)
    }

    /// The number of shards to run on a machine with `cores` cores.
    pub fn effective_shards(&self, cores: u32) -> u32 {
        if self.shards == 0 {
            cores.max(1)
        } else {
            self.shards
        }
    }

    /// Auto-compaction as a typed value. Only fails on settings that did not pass `validate`.
    pub fn auto_compaction(&self) -> Result<AutoCompaction, ConfigError> {
        parse_auto_compaction(self.auto_compaction_mode, &self.auto_compaction_retention)
    }

    /// Check every cross-key rule. The error names the key to change.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let inconsistent =
            |key: &'static str, reason: String| ConfigError::Inconsistent { key, reason };
        if self.heartbeat_interval_ms == 0 {
            return Err(inconsistent(
                "heartbeat-interval",
                "must be at least 1 ms".into(),
            ));
        }
        if self.election_timeout_ms < 5 * self.heartbeat_interval_ms {
            return Err(inconsistent(
                "election-timeout",
                format!(
                    "{} ms must be at least 5 times heartbeat-interval ({} ms)",
                    self.election_timeout_ms, self.heartbeat_interval_ms
                ),
            ));
        }
        if self.election_timeout_ms >= MAX_ELECTION_TIMEOUT_MS {
            return Err(inconsistent(
                "election-timeout",
                format!(
                    "{} ms is too long; it must be less than {MAX_ELECTION_TIMEOUT_MS} ms",
                    self.election_timeout_ms
                ),
            ));
        }
        if self.shards > MAX_SHARDS {
            return Err(inconsistent(
                "shards",
                format!("{} is more than the maximum of {MAX_SHARDS}", self.shards),
            ));
        }
        for rule in &self.partition {
            if self.shards != 0 && rule.shard >= self.shards {
                return Err(inconsistent(
                    "partition",
                    format!(
                        "prefix {:?} is pinned to shard {}, but shards is {} (shards are numbered from 0)",
                        rule.prefix, rule.shard, self.shards
                    ),
                ));
            }
        }
        let nonzero: [(&'static str, u64); 8] = [
            ("snapshot-count", self.snapshot_count),
            ("checkpoint-interval-ms", self.checkpoint_interval_ms),
            ("quota-backend-bytes", self.quota_backend_bytes),
            ("max-request-bytes", self.max_request_bytes),
            ("max-txn-ops", self.max_txn_ops),
            (
                "group-commit-max-batch",
                u64::from(self.group_commit_max_batch),
            ),
            ("watch-event-buffer", u64::from(self.watch_event_buffer)),
            ("watch-stream-buffer", u64::from(self.watch_stream_buffer)),
        ];
        for (key, value) in nonzero {
            if value == 0 {
                return Err(inconsistent(key, "must be greater than 0".into()));
            }
        }
        if self.group_commit_max_batch > MAX_GROUP_COMMIT_BATCH {
            return Err(inconsistent(
                "group-commit-max-batch",
                format!(
                    "{} is more than the maximum of {MAX_GROUP_COMMIT_BATCH}",
                    self.group_commit_max_batch
                ),
            ));
        }
        if self.page_cache_bytes < 16 * MIB {
            return Err(inconsistent(
                "page-cache-bytes",
                format!("{} is below the minimum of 16 MiB", self.page_cache_bytes),
            ));
        }
        if self.checkpoint_dirty_bytes < MIB || self.checkpoint_dirty_bytes > self.page_cache_bytes
        {
            // Dirty pages stay pinned in the cache until a checkpoint writes them out, so the
            // threshold must fit in the cache with room to spare.
            return Err(inconsistent(
                "checkpoint-dirty-bytes",
                format!(
                    "{} must be between 1 MiB and page-cache-bytes ({})",
                    self.checkpoint_dirty_bytes, self.page_cache_bytes
                ),
            ));
        }
        if self.group_commit_max_bytes < self.max_request_bytes {
            return Err(inconsistent(
                "group-commit-max-bytes",
                format!(
                    "{} must be at least max-request-bytes ({}) so any accepted request fits one batch",
                    self.group_commit_max_bytes, self.max_request_bytes
                ),
            ));
        }
        self.auto_compaction()?;
        Ok(())
    }

    /// `validate`, plus the checks that need the machine: with `shards: 0` (one per core) the
    /// partition pins must name shards that exist on `cores` cores. The server calls this.
    pub fn validate_for_cores(&self, cores: u32) -> Result<(), ConfigError> {
        self.validate()?;
        let shards = self.effective_shards(cores);
        if let Some(rule) = self.partition.iter().find(|r| r.shard >= shards) {
            return Err(ConfigError::Inconsistent {
                key: "partition",
                reason: format!(
                    "prefix {:?} is pinned to shard {}, but this machine runs {shards} shards",
                    rule.prefix, rule.shard
                ),
            });
        }
        Ok(())
    }

    /// Legal but doubtful choices, one sentence each (the server logs them at startup).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.quota_backend_bytes > MAX_SUGGESTED_QUOTA_BACKEND_BYTES
            && self.quota_backend_bytes != QUOTA_DISABLED
        {
            out.push(format!(
                "quota-backend-bytes {} exceeds the suggested maximum of 8 GiB",
                self.quota_backend_bytes
            ));
        }
        if self.election_timeout_ms < 10 * self.heartbeat_interval_ms {
            out.push(format!(
                "election-timeout {} ms is under 10 heartbeats ({} ms each): one delayed heartbeat burst can start an election",
                self.election_timeout_ms, self.heartbeat_interval_ms
            ));
        }
        out
    }
}

/// `PREFIX=SHARD,PREFIX=SHARD`; empty for no rules.
pub fn format_partition(rules: &[PartitionRule]) -> String {
    rules
        .iter()
        .map(|r| format!("{}={}", r.prefix, r.shard))
        .collect::<Vec<_>>()
        .join(",")
}

/// Parse `PREFIX=SHARD,...` (the flag form of `partition`). A prefix may not contain `,`;
/// the shard number is after the last `=`.
pub fn parse_partition(key: &str, text: &str) -> Result<Vec<PartitionRule>, ConfigError> {
    let mut rules: Vec<PartitionRule> = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((prefix, shard)) = item.rsplit_once('=') else {
            return Err(ConfigError::invalid(key, item, "expected PREFIX=SHARD"));
        };
        if prefix.is_empty() {
            return Err(ConfigError::invalid(key, item, "the prefix is empty"));
        }
        let shard: u32 = shard
            .trim()
            .parse()
            .map_err(|_| ConfigError::invalid(key, item, "the shard after '=' is not a number"))?;
        if rules.iter().any(|r| r.prefix == prefix) {
            return Err(ConfigError::invalid(
                key,
                item,
                "the prefix is pinned twice",
            ));
        }
        rules.push(PartitionRule {
            prefix: prefix.to_string(),
            shard,
        });
    }
    Ok(rules)
}

pub fn parse_compaction_mode(key: &str, text: &str) -> Result<CompactionMode, ConfigError> {
    match text.trim() {
        "periodic" => Ok(CompactionMode::Periodic),
        "revision" => Ok(CompactionMode::Revision),
        other => Err(ConfigError::invalid(
            key,
            other,
            "expected 'periodic' or 'revision'",
        )),
    }
}

/// etcd's reading of `auto-compaction-retention`: in periodic mode a bare number is hours
/// ("1" = 1 h, "0.5" is refused as etcd does) and otherwise a duration ("30m", "1h30m");
/// in revision mode a count of revisions. "0" or "" disables.
pub fn parse_auto_compaction(
    mode: CompactionMode,
    retention: &str,
) -> Result<AutoCompaction, ConfigError> {
    const KEY: &str = "auto-compaction-retention";
    let text = retention.trim();
    if text.is_empty() || text == "0" {
        return Ok(AutoCompaction::Disabled);
    }
    match mode {
        CompactionMode::Revision => {
            let keep = text.parse::<u64>().map_err(|_| {
                ConfigError::invalid(
                    KEY,
                    text,
                    "in revision mode, expected a number of revisions",
                )
            })?;
            Ok(AutoCompaction::Revision {
                keep_revisions: keep,
            })
        }
        CompactionMode::Periodic => {
            let retention_ms = match text.parse::<u64>() {
                Ok(hours) => hours.saturating_mul(3_600_000),
                Err(_) => parse_duration_ms(KEY, text)?,
            };
            if retention_ms == 0 {
                return Ok(AutoCompaction::Disabled);
            }
            Ok(AutoCompaction::Periodic { retention_ms })
        }
    }
}

/// One layer's view of the tunables: each field set only if the layer states it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct SettingsPatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shards: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<Vec<PartitionRule>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_cache_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_dirty_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_interval_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub election_timeout: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota_backend_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_request_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_txn_ops: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_commit_max_batch: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_commit_max_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watch_event_buffer: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watch_stream_buffer: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_compaction_mode: Option<CompactionMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_compaction_retention: Option<String>,
}

fn parse_u32(key: &str, text: &str) -> Result<u32, ConfigError> {
    let v = parse_u64(key, text)?;
    u32::try_from(v).map_err(|_| ConfigError::invalid(key, text, "too large"))
}

impl SettingsPatch {
    /// Set one key of `SETTINGS_KEYS` from its text form. `Ok(false)` if `key` is not a
    /// tunable (the caller tries its other keys); an error names the key.
    pub fn set(&mut self, key: &str, text: &str) -> Result<bool, ConfigError> {
        match key {
            "shards" => self.shards = Some(parse_u32(key, text)?),
            "partition" => self.partition = Some(parse_partition(key, text)?),
            "page-cache-bytes" => self.page_cache_bytes = Some(parse_bytes(key, text)?),
            "snapshot-count" => self.snapshot_count = Some(parse_u64(key, text)?),
            "checkpoint-dirty-bytes" => self.checkpoint_dirty_bytes = Some(parse_bytes(key, text)?),
            "checkpoint-interval-ms" => self.checkpoint_interval_ms = Some(parse_u64(key, text)?),
            "heartbeat-interval" => self.heartbeat_interval = Some(parse_u64(key, text)?),
            "election-timeout" => self.election_timeout = Some(parse_u64(key, text)?),
            "quota-backend-bytes" => self.quota_backend_bytes = Some(parse_quota(key, text)?),
            "max-request-bytes" => self.max_request_bytes = Some(parse_bytes(key, text)?),
            "max-txn-ops" => self.max_txn_ops = Some(parse_u64(key, text)?),
            "group-commit-max-batch" => self.group_commit_max_batch = Some(parse_u32(key, text)?),
            "group-commit-max-bytes" => self.group_commit_max_bytes = Some(parse_bytes(key, text)?),
            "watch-event-buffer" => self.watch_event_buffer = Some(parse_u32(key, text)?),
            "watch-stream-buffer" => self.watch_stream_buffer = Some(parse_u32(key, text)?),
            "auto-compaction-mode" => {
                self.auto_compaction_mode = Some(parse_compaction_mode(key, text)?)
            }
            "auto-compaction-retention" => {
                // Checked against the mode once both layers are merged (`Settings::validate`),
                // but a value that fits neither mode is refused here already.
                let t = text.trim();
                if parse_auto_compaction(CompactionMode::Periodic, t).is_err()
                    && parse_auto_compaction(CompactionMode::Revision, t).is_err()
                {
                    return Err(ConfigError::invalid(
                        key,
                        t,
                        "expected hours, a duration such as '30m', or a revision count",
                    ));
                }
                self.auto_compaction_retention = Some(t.to_string())
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Overwrite the fields of `s` that this layer states.
    pub fn apply_to(&self, s: &mut Settings) {
        fn put<T: Clone>(dst: &mut T, src: &Option<T>) {
            if let Some(v) = src {
                *dst = v.clone();
            }
        }
        put(&mut s.shards, &self.shards);
        put(&mut s.partition, &self.partition);
        put(&mut s.page_cache_bytes, &self.page_cache_bytes);
        put(&mut s.snapshot_count, &self.snapshot_count);
        put(&mut s.checkpoint_dirty_bytes, &self.checkpoint_dirty_bytes);
        put(&mut s.checkpoint_interval_ms, &self.checkpoint_interval_ms);
        put(&mut s.heartbeat_interval_ms, &self.heartbeat_interval);
        put(&mut s.election_timeout_ms, &self.election_timeout);
        // etcd: a quota of 0 means the default quota.
        match self.quota_backend_bytes {
            Some(0) => s.quota_backend_bytes = DEFAULT_QUOTA_BACKEND_BYTES,
            Some(q) => s.quota_backend_bytes = q,
            None => {}
        }
        put(&mut s.max_request_bytes, &self.max_request_bytes);
        put(&mut s.max_txn_ops, &self.max_txn_ops);
        put(&mut s.group_commit_max_batch, &self.group_commit_max_batch);
        put(&mut s.group_commit_max_bytes, &self.group_commit_max_bytes);
        put(&mut s.watch_event_buffer, &self.watch_event_buffer);
        put(&mut s.watch_stream_buffer, &self.watch_stream_buffer);
        put(&mut s.auto_compaction_mode, &self.auto_compaction_mode);
        put(
            &mut s.auto_compaction_retention,
            &self.auto_compaction_retention,
        );
    }

    /// Every field set to the value in `s` (a layer that states everything).
    pub fn from_settings(s: &Settings) -> Self {
        let mut p = SettingsPatch::default();
        for (key, _) in SETTINGS_KEYS {
            let text = s.value_of(key).unwrap_or_default();
            // The text came from `value_of`, which prints what `set` reads.
            let known = p.set(key, &text);
            debug_assert!(matches!(known, Ok(true)), "{key}: {known:?}");
        }
        p
    }
}

/// A quota: a byte count, or a negative whole number, which etcd reads as "no quota"
/// ([`QUOTA_DISABLED`]).
fn parse_quota(key: &str, text: &str) -> Result<u64, ConfigError> {
    match text.trim().strip_prefix('-') {
        Some(magnitude) => parse_u64(key, magnitude)
            .ok()
            .filter(|n| *n > 0)
            .map(|_| QUOTA_DISABLED)
            .ok_or_else(|| {
                ConfigError::invalid(key, text.trim(), "expected a number of bytes, or -1")
            }),
        None => parse_bytes(key, text),
    }
}

/// Whether `text` is a yes/no flag value; used for boolean server keys.
pub fn parse_bool(key: &str, text: &str) -> Result<bool, ConfigError> {
    parse_bool_or_err(key, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_etcds() {
        let s = Settings::default();
        assert_eq!(s.heartbeat_interval_ms, 100);
        assert_eq!(s.election_timeout_ms, 1000);
        assert_eq!(s.snapshot_count, 100_000);
        assert_eq!(s.quota_backend_bytes, 2 * 1024 * 1024 * 1024);
        assert_eq!(s.max_request_bytes, 1_572_864);
        // etcd: 0 is the default quota, a negative quota none.
        let mut p = SettingsPatch::default();
        assert!(p.set("quota-backend-bytes", "0").unwrap());
        let mut q = Settings::default();
        p.apply_to(&mut q);
        assert_eq!(q.quota_backend_bytes, DEFAULT_QUOTA_BACKEND_BYTES);
        p.set("quota-backend-bytes", "-5").unwrap();
        p.apply_to(&mut q);
        assert_eq!(q.quota_backend_bytes, QUOTA_DISABLED);
        assert_eq!(q.value_of("quota-backend-bytes").as_deref(), Some("-1"));
        assert!(q.warnings().is_empty());
        assert!(p.set("quota-backend-bytes", "-").is_err());
        assert!(p.set("quota-backend-bytes", "-0").is_err());
        assert_eq!(s.max_txn_ops, 128);
        assert_eq!(s.auto_compaction().unwrap(), AutoCompaction::Disabled);
        s.validate().unwrap();
    }

    #[test]
    fn every_key_prints_and_parses_back() {
        let mut s = Settings {
            shards: 3,
            partition: vec![PartitionRule {
                prefix: "/registry/events/".into(),
                shard: 2,
            }],
            auto_compaction_mode: CompactionMode::Revision,
            auto_compaction_retention: "1000".into(),
            ..Settings::default()
        };
        s.page_cache_bytes = 300 * MIB;
        let patch = SettingsPatch::from_settings(&s);
        let mut back = Settings::default();
        patch.apply_to(&mut back);
        assert_eq!(back, s);
        for (key, _) in SETTINGS_KEYS {
            assert!(s.value_of(key).is_some(), "{key} has no value_of");
        }
    }

    #[test]
    fn election_shorter_than_five_heartbeats_is_refused_naming_the_key() {
        let s = Settings {
            heartbeat_interval_ms: 100,
            election_timeout_ms: 400,
            ..Settings::default()
        };
        let e = s.validate().unwrap_err();
        assert_eq!(e.key(), Some("election-timeout"));
        assert!(e.to_string().contains("election-timeout"), "{e}");
    }

    #[test]
    fn retention_reads_like_etcd() {
        use CompactionMode::*;
        assert_eq!(
            parse_auto_compaction(Periodic, "1").unwrap(),
            AutoCompaction::Periodic {
                retention_ms: 3_600_000
            }
        );
        assert_eq!(
            parse_auto_compaction(Periodic, "30m").unwrap(),
            AutoCompaction::Periodic {
                retention_ms: 1_800_000
            }
        );
        assert_eq!(
            parse_auto_compaction(Revision, "5000").unwrap(),
            AutoCompaction::Revision {
                keep_revisions: 5000
            }
        );
        assert!(parse_auto_compaction(Revision, "30m").is_err());
        assert!(parse_auto_compaction(Periodic, "soon").is_err());
    }

    #[test]
    fn partition_pins_parse_and_are_checked_against_shards() {
        let rules =
            parse_partition("partition", "/registry/events/=1, /registry/leases/=0").unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].shard, 1);
        assert!(parse_partition("partition", "/a/").is_err());
        assert!(parse_partition("partition", "/a/=1,/a/=2").is_err());
        let s = Settings {
            shards: 1,
            partition: rules.clone(),
            ..Settings::default()
        };
        assert_eq!(s.validate().unwrap_err().key(), Some("partition"));
        // One shard per core: the pins are checked once the core count is known.
        let s = Settings {
            shards: 0,
            partition: rules,
            ..Settings::default()
        };
        s.validate().unwrap();
        s.validate_for_cores(2).unwrap();
        let e = s.validate_for_cores(1).unwrap_err();
        assert_eq!(e.key(), Some("partition"));
    }
}
