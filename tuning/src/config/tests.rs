//! Tests of the config model: parsing etcd-style files, errors that name their key, unknown
//! keys, and the profile < file < flags layering.

use super::*;
use crate::settings::CompactionMode;

const ETCD_STYLE: &str = r#"
name: 'node-1'
data-dir: /var/lib/ballast
wal-dir:
snapshot-count: 10000
heartbeat-interval: 100
election-timeout: 1000
quota-backend-bytes: 0
listen-peer-urls: http://127.0.0.1:2380
listen-client-urls: http://127.0.0.1:2379,http://127.0.0.1:22379
max-snapshots: 5
max-wals: 5
cors:
initial-advertise-peer-urls: http://127.0.0.1:2380
advertise-client-urls: http://127.0.0.1:2379
discovery:
discovery-fallback: 'proxy'
initial-cluster: node-1=http://127.0.0.1:2380,node-2=http://127.0.0.1:2381
initial-cluster-token: 'etcd-cluster'
initial-cluster-state: 'new'
strict-reconfig-check: false
enable-pprof: true
proxy: 'off'
client-transport-security:
  cert-file:
  key-file:
  client-cert-auth: false
  trusted-ca-file:
  auto-tls: false
peer-transport-security:
  cert-file: /etc/ballast/peer.crt
  key-file: /etc/ballast/peer.key
  client-cert-auth: true
  trusted-ca-file: /etc/ballast/ca.crt
  auto-tls: false
log-level: debug
logger: zap
log-outputs: [stderr]
force-new-cluster: false
auto-compaction-mode: periodic
auto-compaction-retention: "1"
cipher-suites: [
  TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
  TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
]
max-request-bytes: 2097152
max-txn-ops: 256
listen-metrics-urls: http://127.0.0.1:2381
"#;

#[test]
fn parses_an_etcd_style_config_file() {
    let cf = from_yaml_str(ETCD_STYLE).unwrap();
    assert!(cf.unknown_keys.is_empty(), "{:?}", cf.unknown_keys);
    for k in [
        "cors",
        "discovery",
        "enable-pprof",
        "proxy",
        "logger",
        "log-outputs",
    ] {
        // `cors:` and `discovery:` have no value: they are neither set nor reported.
        let reported = cf.ignored_keys.iter().any(|i| i == k);
        assert_eq!(reported, !matches!(k, "cors" | "discovery"), "{k}");
    }
    let c = resolve(&[&cf]).unwrap();
    assert_eq!(c.name, "node-1");
    assert_eq!(c.data_dir, "/var/lib/ballast");
    assert_eq!(c.wal_dir, None);
    assert_eq!(
        c.listen_client_urls,
        vec!["http://127.0.0.1:2379", "http://127.0.0.1:22379"]
    );
    assert_eq!(c.listen_metrics_urls, vec!["http://127.0.0.1:2381"]);
    assert_eq!(c.initial_cluster_state, ClusterState::New);
    assert!(!c.strict_reconfig_check);
    assert!(!c.client_transport_security.enabled());
    assert!(c.peer_transport_security.enabled());
    assert!(c.peer_transport_security.client_cert_auth);
    assert_eq!(
        c.peer_transport_security.trusted_ca_file.as_deref(),
        Some("/etc/ballast/ca.crt")
    );
    assert_eq!(c.cipher_suites.len(), 2);
    assert_eq!(c.log_level, "debug");
    assert_eq!(c.settings.snapshot_count, 10_000);
    // etcd: quota 0 means the default quota.
    assert_eq!(c.settings.quota_backend_bytes, 2 * 1024 * 1024 * 1024);
    assert_eq!(c.settings.max_request_bytes, 2_097_152);
    assert_eq!(c.settings.max_txn_ops, 256);
    assert_eq!(
        c.settings.auto_compaction().unwrap(),
        crate::settings::AutoCompaction::Periodic {
            retention_ms: 3_600_000
        }
    );
    assert!(c.profile.is_none());
}

#[test]
fn empty_file_gives_etcd_defaults() {
    let c = resolve(&[&from_yaml_str("").unwrap()]).unwrap();
    assert_eq!(c.settings, Settings::default());
    assert_eq!(c.name, "default");
    assert_eq!(c.data_dir, "default.ballast");
    assert_eq!(c.listen_client_urls, vec!["http://127.0.0.1:2379"]);
    assert_eq!(c.initial_cluster, "default=http://127.0.0.1:2380");
    assert_eq!(c.initial_cluster_token, "etcd-cluster");
}

fn err_key(yaml: &str) -> String {
    let e = match from_yaml_str(yaml) {
        Err(e) => e,
        Ok(cf) => resolve(&[&cf]).expect_err(yaml),
    };
    let key = e
        .key()
        .unwrap_or_else(|| panic!("{yaml}: error names no key: {e}"));
    assert!(e.to_string().contains(key), "message {e} lacks key {key}");
    key.to_string()
}

#[test]
fn invalid_values_name_their_key() {
    let cases = [
        ("heartbeat-interval: abc", "heartbeat-interval"),
        ("heartbeat-interval: -5", "heartbeat-interval"),
        ("election-timeout: 1.5", "election-timeout"),
        ("snapshot-count: [1, 2]", "snapshot-count"),
        ("quota-backend-bytes: lots", "quota-backend-bytes"),
        ("listen-client-urls: 127.0.0.1:2379", "listen-client-urls"),
        (
            "advertise-client-urls: http://127.0.0.1",
            "advertise-client-urls",
        ),
        ("listen-peer-urls: ftp://127.0.0.1:2380", "listen-peer-urls"),
        ("initial-cluster: a", "initial-cluster"),
        ("initial-cluster-state: maybe", "initial-cluster-state"),
        ("auto-compaction-mode: hourly", "auto-compaction-mode"),
        (
            "auto-compaction-retention: soon",
            "auto-compaction-retention",
        ),
        (
            "auto-compaction-mode: revision\nauto-compaction-retention: 1h",
            "auto-compaction-retention",
        ),
        ("shards: many", "shards"),
        ("partition: /registry/events/", "partition"),
        ("profile: huge", "profile"),
        ("force-new-cluster: perhaps", "force-new-cluster"),
        ("metrics: all", "metrics"),
        (
            "client-transport-security:\n  client-cert-auth: sometimes",
            "client-transport-security.client-cert-auth",
        ),
        // Valid alone, inconsistent together:
        (
            "heartbeat-interval: 300\nelection-timeout: 1000",
            "election-timeout",
        ),
        ("max-request-bytes: 10MiB", "group-commit-max-bytes"),
        ("shards: 2\npartition: {/registry/events/: 2}", "partition"),
        (
            "listen-client-urls: https://127.0.0.1:2379",
            "client-transport-security",
        ),
        (
            "peer-transport-security:\n  cert-file: /x.crt",
            "peer-transport-security.key-file",
        ),
    ];
    for (yaml, key) in cases {
        assert_eq!(err_key(yaml), key, "for {yaml:?}");
    }
}

#[test]
fn not_yaml_or_not_a_mapping_is_a_syntax_error() {
    assert!(matches!(
        from_yaml_str("name: [unclosed"),
        Err(ConfigError::Syntax { .. })
    ));
    assert!(matches!(
        from_yaml_str("- a\n- b"),
        Err(ConfigError::Syntax { .. })
    ));
}

#[test]
fn unknown_keys_are_kept_as_warnings_like_etcd_and_refused_on_request() {
    let cf = from_yaml_str(
        "bogus-key: 12\nheartbeat-interval: 100\nclient-transport-security:\n  cert-fil: /x\n",
    )
    .unwrap();
    assert_eq!(
        cf.unknown_keys,
        vec!["bogus-key", "client-transport-security.cert-fil"]
    );
    let c = resolve(&[&cf]).unwrap();
    assert_eq!(c.unknown_keys.len(), 2);
    assert!(c
        .startup_report()
        .iter()
        .any(|l| l.contains("unknown config key `bogus-key`")));
    let e = cf.deny_unknown().unwrap_err();
    assert!(e.to_string().contains("bogus-key"), "{e}");
    assert!(e.to_string().contains("cert-fil"), "{e}");
    // A flag with an unknown name is refused at once.
    let mut flags = ConfigFile::default();
    let e = flags.set("heartbeat-intreval", "100").unwrap_err();
    assert!(e.to_string().contains("heartbeat-intreval"), "{e}");
}

#[test]
fn layering_profile_then_file_then_flags() {
    let large = Profile::by_name("large").unwrap().settings();
    let file = from_yaml_str(
        "profile: large\nsnapshot-count: 12345\nheartbeat-interval: 200\nelection-timeout: 2000\n",
    )
    .unwrap();
    let mut flags = ConfigFile::default();
    flags.set("heartbeat-interval", "250").unwrap();
    flags.set("election-timeout", "2500").unwrap();

    let c = resolve(&[&file]).unwrap();
    assert_eq!(c.profile.as_deref(), Some("large"));
    assert_eq!(c.settings.snapshot_count, 12_345, "file over profile");
    assert_eq!(c.settings.heartbeat_interval_ms, 200);
    assert_eq!(
        c.settings.page_cache_bytes, large.page_cache_bytes,
        "profile kept"
    );

    let c = resolve(&[&file, &flags]).unwrap();
    assert_eq!(c.settings.heartbeat_interval_ms, 250, "flags over file");
    assert_eq!(c.settings.election_timeout_ms, 2500);
    assert_eq!(c.settings.snapshot_count, 12_345, "file kept under flags");
    assert_eq!(c.settings.shards, large.shards);

    // A profile flag replaces the file's profile as the base; the file's values stay on top.
    let mut flags = ConfigFile::default();
    flags.set("profile", "small").unwrap();
    let c = resolve(&[&file, &flags]).unwrap();
    let small = Profile::by_name("small").unwrap().settings();
    assert_eq!(c.profile.as_deref(), Some("small"));
    assert_eq!(c.settings.page_cache_bytes, small.page_cache_bytes);
    assert_eq!(c.settings.snapshot_count, 12_345);
}

#[test]
fn load_applies_profile_then_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ballast.yml");
    std::fs::write(&path, "profile: medium\nshards: 3\nname: n1\n").unwrap();
    let c = load(None, Some(&path)).unwrap();
    assert_eq!(c.profile.as_deref(), Some("medium"));
    assert_eq!(c.settings.shards, 3);
    let c = load(Some("small"), Some(&path)).unwrap();
    assert_eq!(
        c.profile.as_deref(),
        Some("small"),
        "the profile argument wins"
    );
    assert_eq!(c.settings.shards, 3, "file over profile");
    let small = Profile::by_name("small").unwrap().settings();
    assert_eq!(c.settings.page_cache_bytes, small.page_cache_bytes);
    // xlarge pins events to shard 15, which 3 shards do not have: refused, naming the key.
    let e = load(Some("xlarge"), Some(&path)).unwrap_err();
    assert_eq!(e.key(), Some("partition"), "{e}");
    let c = load(Some("large"), None).unwrap();
    assert_eq!(c.settings, Profile::by_name("large").unwrap().settings());
    let e = load(Some("galactic"), None).unwrap_err();
    assert_eq!(e.key(), Some("profile"));
    let e = load(None, Some(&dir.path().join("missing.yml"))).unwrap_err();
    assert!(matches!(e, ConfigError::Io { .. }));
}

#[test]
fn profile_pins_that_no_longer_fit_are_refused() {
    let file = from_yaml_str("profile: xlarge\nshards: 4\n").unwrap();
    let e = resolve(&[&file]).unwrap_err();
    assert_eq!(e.key(), Some("partition"), "{e}");
    let file = from_yaml_str("profile: xlarge\nshards: 4\npartition: ''\n").unwrap();
    let c = resolve(&[&file]).unwrap();
    assert!(c.settings.partition.is_empty());
}

#[test]
fn environment_variables_follow_etcds_naming() {
    let env = [
        ("ETCD_HEARTBEAT_INTERVAL", "200"),
        ("ETCD_ELECTION_TIMEOUT", "2000"),
        ("ETCD_LISTEN_CLIENT_URLS", "http://127.0.0.1:3379"),
        ("ETCD_PEER_CERT_FILE", "/p.crt"),
        ("ETCD_PEER_KEY_FILE", "/p.key"),
        ("BALLAST_SHARDS", "3"),
        ("ETCDCTL_API", "3"),
        ("PATH", "/usr/bin"),
        ("ETCD_NOT_A_THING", "1"),
    ];
    let cf = ConfigFile::from_env(env).unwrap();
    assert_eq!(cf.unknown_keys, vec!["ETCD_NOT_A_THING"]);
    let c = resolve(&[&cf]).unwrap();
    assert_eq!(c.settings.heartbeat_interval_ms, 200);
    assert_eq!(c.settings.shards, 3);
    assert_eq!(c.listen_client_urls, vec!["http://127.0.0.1:3379"]);
    assert_eq!(
        c.peer_transport_security.cert_file.as_deref(),
        Some("/p.crt")
    );
    let e = ConfigFile::from_env([("ETCD_MAX_TXN_OPS", "lots")]).unwrap_err();
    assert_eq!(e.key(), Some("max-txn-ops"));
}

#[test]
fn partition_as_mapping_or_string_and_compaction_mode() {
    let a =
        from_yaml_str("shards: 4\npartition:\n  /registry/events/: 3\n  /registry/leases/: 2\n")
            .unwrap();
    let b =
        from_yaml_str("shards: 4\npartition: /registry/events/=3,/registry/leases/=2\n").unwrap();
    assert_eq!(a.settings, b.settings);
    let c = resolve(&[&a]).unwrap();
    assert_eq!(
        c.partition_text(),
        "/registry/events/=3,/registry/leases/=2"
    );
    let r =
        from_yaml_str("auto-compaction-mode: revision\nauto-compaction-retention: 1000\n").unwrap();
    let c = resolve(&[&r]).unwrap();
    assert_eq!(c.settings.auto_compaction_mode, CompactionMode::Revision);
}

#[test]
fn every_key_is_accepted_by_set() {
    // Each key with a value of its type; none may come back as unknown.
    for key in ConfigFile::keys() {
        let value = match key.as_str() {
            "profile" => "small",
            k if k.ends_with("-urls") => "http://127.0.0.1:2379",
            "initial-cluster" => "a=http://127.0.0.1:2380",
            "initial-cluster-state" => "existing",
            "log-level" => "warn",
            "metrics" => "extensive",
            "partition" => "/x/=0",
            "auto-compaction-mode" => "revision",
            k if k.ends_with("-auth")
                || k.ends_with("-tls")
                || k.starts_with("enable-")
                || k.starts_with("force-")
                || k.starts_with("strict-") =>
            {
                "true"
            }
            k if k.ends_with("-file")
                || k.ends_with("-dir")
                || matches!(
                    k,
                    "name" | "auth-token" | "initial-cluster-token" | "cipher-suites"
                ) =>
            {
                "x"
            }
            _ => "7",
        };
        let mut cf = ConfigFile::default();
        cf.set(&key, value)
            .unwrap_or_else(|e| panic!("{key}={value}: {e}"));
        assert_ne!(cf, ConfigFile::default(), "{key} changed nothing");
    }
}
