//! The server's configuration: `ConfigFile`, one layer as a YAML file (etcd's `--config-file`
//! keys plus Ballast's own), a set of flags or `ETCD_*` variables states it; and `Config`, the
//! resolved result of layering profile < file < flags.
//!
//! Invariants:
//! - Every field of `ConfigFile` is optional: absent means "this layer does not say".
//! - A value that does not parse is refused with `ConfigError::InvalidValue` naming its key.
//! - Keys are etcd's names. Unknown keys are kept in `unknown_keys` and not refused, because
//!   etcd 3.4 ignores unknown keys in its config file (checked with etcd 3.4.23: a file with
//!   `bogus-key: 12` starts); `ConfigFile::deny_unknown` refuses them for callers that want to.
//!   etcd keys that Ballast accepts but that change nothing (proxy, discovery, pprof, ...) are
//!   listed in `ignored_keys` so the server can say so.
//! - `resolve` starts from the profile named by the last layer that names one (or etcd's
//!   defaults), applies each layer in order, then runs `Settings::validate` and the server-key
//!   checks; a `Config` that exists passed them.
//!
//! Difference from etcd: etcd 3.4 ignores all flags when `--config-file` is given; Ballast lets
//! flags override the file, as issue 7 asks.

use std::path::Path;

use serde::Serialize;
use serde_norway::Value;

use crate::error::ConfigError;
use crate::profiles::Profile;
use crate::settings::{format_partition, parse_bool, Settings, SettingsPatch};
use crate::units::parse_u64;

/// `initial-cluster-state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterState {
    New,
    Existing,
}

/// One `*-transport-security` block as a layer states it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct TlsPatch {
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub client_cert_auth: Option<bool>,
    pub trusted_ca_file: Option<String>,
    pub auto_tls: Option<bool>,
}

/// One resolved `*-transport-security` block.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TlsConfig {
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub client_cert_auth: bool,
    pub trusted_ca_file: Option<String>,
    pub auto_tls: bool,
}

impl TlsConfig {
    /// Whether this side serves TLS at all.
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some() || self.auto_tls
    }
}

/// Keys of the TLS blocks, as they appear inside the block in YAML.
const TLS_KEYS: &[&str] = &[
    "cert-file",
    "key-file",
    "client-cert-auth",
    "trusted-ca-file",
    "auto-tls",
];

/// etcd 3.4 config-file keys that Ballast accepts and does not act on.
pub const ETCD_KEYS_WITHOUT_EFFECT: &[&str] = &[
    "enable-v2",
    "enable-pprof",
    "proxy",
    "proxy-failure-wait",
    "proxy-refresh-interval",
    "proxy-dial-timeout",
    "proxy-write-timeout",
    "proxy-read-timeout",
    "discovery",
    "discovery-fallback",
    "discovery-proxy",
    "discovery-srv",
    "cors",
    "host-whitelist",
    "logger",
    "log-outputs",
    "log-package-levels",
    "debug",
    "self-signed-cert-validity",
    "tls-min-version",
    "tls-max-version",
    "pre-vote",
    "initial-election-tick-advance",
    "backend-batch-interval",
    "backend-batch-limit",
    "backend-bbolt-freelist-type",
    "grpc-keepalive-min-time",
    "grpc-keepalive-interval",
    "grpc-keepalive-timeout",
    "enable-v2v3",
];

/// One configuration layer. Every field is `None` unless the layer states it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ConfigFile {
    /// Ballast: the profile whose settings are the base layer.
    pub profile: Option<String>,
    pub name: Option<String>,
    pub data_dir: Option<String>,
    pub wal_dir: Option<String>,
    pub listen_client_urls: Option<Vec<String>>,
    pub advertise_client_urls: Option<Vec<String>>,
    pub listen_peer_urls: Option<Vec<String>>,
    pub initial_advertise_peer_urls: Option<Vec<String>>,
    pub listen_metrics_urls: Option<Vec<String>>,
    pub initial_cluster: Option<String>,
    pub initial_cluster_state: Option<ClusterState>,
    pub initial_cluster_token: Option<String>,
    pub client_transport_security: Option<TlsPatch>,
    pub peer_transport_security: Option<TlsPatch>,
    pub cipher_suites: Option<Vec<String>>,
    pub auth_token: Option<String>,
    pub log_level: Option<String>,
    pub metrics: Option<String>,
    pub enable_grpc_gateway: Option<bool>,
    pub force_new_cluster: Option<bool>,
    pub strict_reconfig_check: Option<bool>,
    pub max_snapshots: Option<u64>,
    pub max_wals: Option<u64>,
    /// The tunables (etcd's and Ballast's).
    #[serde(flatten)]
    pub settings: SettingsPatch,
    /// etcd keys present in this layer that Ballast accepts without effect.
    #[serde(skip)]
    pub ignored_keys: Vec<String>,
    /// Keys present in this layer that neither etcd nor Ballast knows.
    #[serde(skip)]
    pub unknown_keys: Vec<String>,
}

/// Read and parse a YAML config file. Unknown keys are recorded, not refused (as etcd does).
pub fn from_yaml_file(path: impl AsRef<Path>) -> Result<ConfigFile, ConfigError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_yaml(&text, &format!(" {}", path.display()))
}

/// Parse YAML config text.
pub fn from_yaml_str(text: &str) -> Result<ConfigFile, ConfigError> {
    parse_yaml(text, "")
}

fn parse_yaml(text: &str, where_: &str) -> Result<ConfigFile, ConfigError> {
    let syntax = |message: String| ConfigError::Syntax {
        where_: where_.to_string(),
        message,
    };
    let doc: Value = serde_norway::from_str(text).map_err(|e| syntax(e.to_string()))?;
    let mut cf = ConfigFile::default();
    let map = match doc {
        Value::Null => return Ok(cf),
        Value::Mapping(m) => m,
        _ => {
            return Err(syntax(
                "the top level must be a mapping of keys to values".into(),
            ))
        }
    };
    for (k, v) in map {
        let Some(key) = k.as_str() else {
            return Err(syntax(format!("key {k:?} is not a string")));
        };
        match key {
            "client-transport-security" | "peer-transport-security" => {
                let patch = parse_tls_block(key, v, &mut cf.unknown_keys)?;
                if key == "client-transport-security" {
                    cf.client_transport_security = patch;
                } else {
                    cf.peer_transport_security = patch;
                }
            }
            _ => {
                let Some(text) = value_text(key, &v)? else {
                    // `key:` with no value: etcd treats it as unset. Still record unknown keys.
                    if !is_known_key(key) {
                        cf.unknown_keys.push(key.to_string());
                    }
                    continue;
                };
                if !cf.try_set(key, &text)? {
                    cf.unknown_keys.push(key.to_string());
                }
            }
        }
    }
    Ok(cf)
}

fn is_known_key(key: &str) -> bool {
    ConfigFile::keys().iter().any(|k| k == key)
        || ETCD_KEYS_WITHOUT_EFFECT.contains(&key)
        || key.starts_with("experimental-")
}

/// The text form of one YAML value, as a flag would give it: scalars as written, a list as
/// comma-separated items, a mapping (only for `partition`) as `K=V,...`. `None` for null.
fn value_text(key: &str, v: &Value) -> Result<Option<String>, ConfigError> {
    fn scalar(key: &str, v: &Value) -> Result<String, ConfigError> {
        match v {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            other => Err(ConfigError::invalid(
                key,
                &format!("{other:?}"),
                "expected a single value",
            )),
        }
    }
    match v {
        Value::Null => Ok(None),
        Value::Sequence(items) => {
            let parts = items
                .iter()
                .map(|i| scalar(key, i))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some(parts.join(",")))
        }
        Value::Mapping(m) if key == "partition" => {
            let mut parts = Vec::new();
            for (pk, pv) in m {
                parts.push(format!("{}={}", scalar(key, pk)?, scalar(key, pv)?));
            }
            Ok(Some(parts.join(",")))
        }
        Value::Mapping(_) => Err(ConfigError::invalid(
            key,
            "{...}",
            "expected a single value, not a mapping",
        )),
        other => scalar(key, other).map(Some),
    }
}

fn parse_tls_block(
    block: &str,
    v: Value,
    unknown: &mut Vec<String>,
) -> Result<Option<TlsPatch>, ConfigError> {
    let map = match v {
        Value::Null => return Ok(None),
        Value::Mapping(m) => m,
        _ => {
            return Err(ConfigError::invalid(
                block,
                "(not a mapping)",
                "expected a block with cert-file, key-file, client-cert-auth, trusted-ca-file, auto-tls",
            ))
        }
    };
    let mut patch = TlsPatch::default();
    for (k, v) in map {
        let inner = k.as_str().unwrap_or_default().to_string();
        let full = format!("{block}.{inner}");
        if !TLS_KEYS.contains(&inner.as_str()) {
            unknown.push(full);
            continue;
        }
        let Some(text) = value_text(&full, &v)? else {
            continue;
        };
        set_tls(&mut patch, &inner, &full, &text)?;
    }
    Ok(Some(patch))
}

fn set_tls(patch: &mut TlsPatch, inner: &str, full: &str, text: &str) -> Result<(), ConfigError> {
    let path = |t: &str| (!t.trim().is_empty()).then(|| t.trim().to_string());
    match inner {
        "cert-file" => patch.cert_file = path(text),
        "key-file" => patch.key_file = path(text),
        "trusted-ca-file" => patch.trusted_ca_file = path(text),
        "client-cert-auth" => patch.client_cert_auth = Some(parse_bool(full, text)?),
        "auto-tls" => patch.auto_tls = Some(parse_bool(full, text)?),
        _ => unreachable!("caller checks TLS_KEYS"),
    }
    Ok(())
}

/// Check one URL of a URL-list key: `scheme://host:port` with scheme http, https, unix or
/// unixs, and a numeric port for http(s).
fn check_url(key: &str, url: &str) -> Result<(), ConfigError> {
    let bad = |why: &str| ConfigError::invalid(key, url, why.to_string());
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(bad("expected a URL such as http://127.0.0.1:2379"));
    };
    match scheme {
        "http" | "https" => {
            let authority = rest.split('/').next().unwrap_or_default();
            let Some((host, port)) = authority.rsplit_once(':') else {
                return Err(bad("the URL has no port"));
            };
            if host.is_empty() {
                return Err(bad("the URL has no host"));
            }
            port.parse::<u16>()
                .map_err(|_| bad("the port is not a number from 0 to 65535"))?;
            Ok(())
        }
        "unix" | "unixs" => {
            if rest.is_empty() {
                return Err(bad("the unix socket path is empty"));
            }
            Ok(())
        }
        _ => Err(bad("the scheme must be http, https, unix or unixs")),
    }
}

fn parse_urls(key: &str, text: &str) -> Result<Vec<String>, ConfigError> {
    let urls: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    for u in &urls {
        check_url(key, u)?;
    }
    Ok(urls)
}

/// `NAME=URL,NAME=URL`; a name may appear several times (one entry per peer URL).
fn parse_initial_cluster(key: &str, text: &str) -> Result<String, ConfigError> {
    let mut parts = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((name, url)) = item.split_once('=') else {
            return Err(ConfigError::invalid(key, item, "expected NAME=URL"));
        };
        if name.trim().is_empty() {
            return Err(ConfigError::invalid(key, item, "the member name is empty"));
        }
        check_url(key, url.trim())?;
        parts.push(format!("{}={}", name.trim(), url.trim()));
    }
    Ok(parts.join(","))
}

fn non_empty(key: &str, text: &str) -> Result<String, ConfigError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(ConfigError::invalid(key, t, "must not be empty"));
    }
    Ok(t.to_string())
}

impl ConfigFile {
    /// Every key `set` accepts: the YAML top-level keys (without the two TLS blocks) and the
    /// flag names of the TLS settings (`cert-file`, `peer-cert-file`, ...).
    pub fn keys() -> Vec<String> {
        let mut keys: Vec<String> = [
            "profile",
            "name",
            "data-dir",
            "wal-dir",
            "listen-client-urls",
            "advertise-client-urls",
            "listen-peer-urls",
            "initial-advertise-peer-urls",
            "listen-metrics-urls",
            "initial-cluster",
            "initial-cluster-state",
            "initial-cluster-token",
            "cipher-suites",
            "auth-token",
            "log-level",
            "metrics",
            "enable-grpc-gateway",
            "force-new-cluster",
            "strict-reconfig-check",
            "max-snapshots",
            "max-wals",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for k in TLS_KEYS {
            keys.push(k.to_string());
            keys.push(format!("peer-{k}"));
        }
        keys.extend(
            crate::settings::SETTINGS_KEYS
                .iter()
                .map(|(k, _)| k.to_string()),
        );
        keys
    }

    /// Set one key from its text form, as a flag `--KEY=TEXT` or `ETCD_KEY=TEXT` gives it.
    /// TLS settings use etcd's flag names (`cert-file`, `peer-trusted-ca-file`, ...).
    /// A key this layer does not know is an error here (unlike in a file).
    pub fn set(&mut self, key: &str, text: &str) -> Result<(), ConfigError> {
        if self.try_set(key, text)? {
            Ok(())
        } else {
            Err(ConfigError::UnknownKeys {
                keys: vec![key.to_string()],
            })
        }
    }

    /// `Ok(false)` for a key that is neither etcd's nor Ballast's.
    fn try_set(&mut self, key: &str, text: &str) -> Result<bool, ConfigError> {
        if self.settings.set(key, text)? {
            return Ok(true);
        }
        let t = text.trim();
        match key {
            "profile" => {
                let p = Profile::by_name(t).ok_or_else(|| ConfigError::UnknownProfile {
                    name: t.to_string(),
                })?;
                self.profile = Some(p.name.to_string());
            }
            "name" => self.name = Some(non_empty(key, t)?),
            "data-dir" => self.data_dir = Some(non_empty(key, t)?),
            "wal-dir" => self.wal_dir = (!t.is_empty()).then(|| t.to_string()),
            "listen-client-urls" => self.listen_client_urls = Some(parse_urls(key, t)?),
            "advertise-client-urls" => self.advertise_client_urls = Some(parse_urls(key, t)?),
            "listen-peer-urls" => self.listen_peer_urls = Some(parse_urls(key, t)?),
            "initial-advertise-peer-urls" => {
                self.initial_advertise_peer_urls = Some(parse_urls(key, t)?)
            }
            "listen-metrics-urls" => self.listen_metrics_urls = Some(parse_urls(key, t)?),
            "initial-cluster" => self.initial_cluster = Some(parse_initial_cluster(key, t)?),
            "initial-cluster-state" => {
                self.initial_cluster_state = Some(match t {
                    "new" => ClusterState::New,
                    "existing" => ClusterState::Existing,
                    _ => return Err(ConfigError::invalid(key, t, "expected 'new' or 'existing'")),
                })
            }
            "initial-cluster-token" => self.initial_cluster_token = Some(non_empty(key, t)?),
            "cipher-suites" => {
                self.cipher_suites = Some(
                    t.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect(),
                )
            }
            "auth-token" => self.auth_token = Some(non_empty(key, t)?),
            "log-level" => {
                let levels = ["debug", "info", "warn", "error", "panic", "fatal"];
                if !levels.contains(&t) {
                    return Err(ConfigError::invalid(
                        key,
                        t,
                        "expected debug, info, warn, error, panic or fatal",
                    ));
                }
                self.log_level = Some(t.to_string())
            }
            "metrics" => {
                if t != "basic" && t != "extensive" {
                    return Err(ConfigError::invalid(
                        key,
                        t,
                        "expected 'basic' or 'extensive'",
                    ));
                }
                self.metrics = Some(t.to_string())
            }
            "enable-grpc-gateway" => self.enable_grpc_gateway = Some(parse_bool(key, t)?),
            "force-new-cluster" => self.force_new_cluster = Some(parse_bool(key, t)?),
            "strict-reconfig-check" => self.strict_reconfig_check = Some(parse_bool(key, t)?),
            "max-snapshots" => self.max_snapshots = Some(parse_u64(key, t)?),
            "max-wals" => self.max_wals = Some(parse_u64(key, t)?),
            _ => {
                if let Some(inner) = key.strip_prefix("peer-").filter(|k| TLS_KEYS.contains(k)) {
                    let patch = self
                        .peer_transport_security
                        .get_or_insert_with(Default::default);
                    set_tls(patch, inner, key, t)?;
                } else if TLS_KEYS.contains(&key) {
                    let patch = self
                        .client_transport_security
                        .get_or_insert_with(Default::default);
                    set_tls(patch, key, key, t)?;
                } else if ETCD_KEYS_WITHOUT_EFFECT.contains(&key)
                    || key.starts_with("experimental-")
                {
                    self.ignored_keys.push(key.to_string());
                } else {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// Refuse the layer if it had keys neither etcd nor Ballast knows.
    pub fn deny_unknown(&self) -> Result<(), ConfigError> {
        if self.unknown_keys.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::UnknownKeys {
                keys: self.unknown_keys.clone(),
            })
        }
    }

    /// A layer from environment variables: `ETCD_HEARTBEAT_INTERVAL=200` sets
    /// `heartbeat-interval` (etcd's convention: drop `ETCD_`, lower-case, `_` → `-`);
    /// `BALLAST_SHARDS=4` works the same for any key. `ETCDCTL_*` and other variables are
    /// skipped; unknown `ETCD_*` names land in `unknown_keys` (etcd warns about them).
    pub fn from_env<I, K, V>(vars: I) -> Result<ConfigFile, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut cf = ConfigFile::default();
        for (name, value) in vars {
            let name = name.as_ref();
            let Some(rest) = name
                .strip_prefix("ETCD_")
                .or_else(|| name.strip_prefix("BALLAST_"))
            else {
                continue;
            };
            let key = rest.to_ascii_lowercase().replace('_', "-");
            if !cf.try_set(&key, value.as_ref())? {
                cf.unknown_keys.push(name.to_string());
            }
        }
        Ok(cf)
    }

    /// A layer that states every tunable of `settings` and names `profile` (what
    /// `ballast-tune show` and `advise` print).
    pub fn from_settings(profile: Option<&str>, settings: &Settings) -> ConfigFile {
        ConfigFile {
            profile: profile.map(str::to_string),
            settings: SettingsPatch::from_settings(settings),
            ..ConfigFile::default()
        }
    }
}

/// The resolved server configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Config {
    /// The profile the settings started from, if any.
    pub profile: Option<String>,
    pub name: String,
    pub data_dir: String,
    pub wal_dir: Option<String>,
    pub listen_client_urls: Vec<String>,
    pub advertise_client_urls: Vec<String>,
    pub listen_peer_urls: Vec<String>,
    pub initial_advertise_peer_urls: Vec<String>,
    pub listen_metrics_urls: Vec<String>,
    pub initial_cluster: String,
    pub initial_cluster_state: ClusterState,
    pub initial_cluster_token: String,
    pub client_transport_security: TlsConfig,
    pub peer_transport_security: TlsConfig,
    pub cipher_suites: Vec<String>,
    pub auth_token: String,
    pub log_level: String,
    pub metrics: String,
    pub enable_grpc_gateway: bool,
    pub force_new_cluster: bool,
    pub strict_reconfig_check: bool,
    pub max_snapshots: u64,
    pub max_wals: u64,
    pub settings: Settings,
    /// etcd keys given in some layer that have no effect in Ballast.
    pub ignored_keys: Vec<String>,
    /// Keys given in some layer that neither etcd nor Ballast knows.
    pub unknown_keys: Vec<String>,
}

fn last<'a, T: 'a>(
    layers: &[&'a ConfigFile],
    f: impl Fn(&'a ConfigFile) -> Option<&'a T>,
) -> Option<&'a T> {
    layers.iter().rev().find_map(|l| f(l))
}

fn resolve_tls(
    layers: &[&ConfigFile],
    pick: impl Fn(&ConfigFile) -> Option<&TlsPatch>,
) -> TlsConfig {
    let mut out = TlsConfig::default();
    for l in layers {
        if let Some(p) = pick(l) {
            if p.cert_file.is_some() {
                out.cert_file = p.cert_file.clone();
            }
            if p.key_file.is_some() {
                out.key_file = p.key_file.clone();
            }
            if p.trusted_ca_file.is_some() {
                out.trusted_ca_file = p.trusted_ca_file.clone();
            }
            if let Some(b) = p.client_cert_auth {
                out.client_cert_auth = b;
            }
            if let Some(b) = p.auto_tls {
                out.auto_tls = b;
            }
        }
    }
    out
}

/// A side's `https://` URLs need its certificate (or auto-tls). For a listen URL the reason is
/// etcd's own message (`listen_refusal`), as etcd stops with it.
fn check_tls(
    side: &'static str,
    key_key: &'static str,
    tls: &TlsConfig,
    listen: &[String],
    advertise: &[String],
    listen_refusal: fn(&str) -> String,
) -> Result<(), ConfigError> {
    if tls.cert_file.is_some() != tls.key_file.is_some() {
        return Err(ConfigError::Inconsistent {
            key: key_key,
            reason: "cert-file and key-file must be given together".into(),
        });
    }
    let secure = |u: &&String| u.starts_with("https://") || u.starts_with("unixs://");
    if tls.enabled() {
        return Ok(());
    }
    if let Some(u) = listen.iter().find(secure) {
        return Err(ConfigError::Inconsistent {
            key: side,
            reason: listen_refusal(u),
        });
    }
    if let Some(u) = advertise.iter().find(secure) {
        return Err(ConfigError::Inconsistent {
            key: side,
            reason: format!("{u} needs TLS: give cert-file and key-file, or auto-tls"),
        });
    }
    Ok(())
}

/// Layer `layers` (lowest precedence first) over the profile the last of them names, or over
/// etcd's defaults. The server calls `resolve(&[&file, &flags])`.
pub fn resolve(layers: &[&ConfigFile]) -> Result<Config, ConfigError> {
    let profile = match last(layers, |l| l.profile.as_ref()) {
        Some(name) => Some(
            Profile::by_name(name)
                .ok_or_else(|| ConfigError::UnknownProfile { name: name.clone() })?,
        ),
        None => None,
    };
    let mut settings = profile.as_ref().map(Profile::settings).unwrap_or_default();
    for l in layers {
        l.settings.apply_to(&mut settings);
    }
    settings.validate()?;

    let name = last(layers, |l| l.name.as_ref())
        .cloned()
        .unwrap_or_else(|| "default".to_string());
    let urls = |f: fn(&ConfigFile) -> Option<&Vec<String>>, default: &str| {
        last(layers, f)
            .cloned()
            .unwrap_or_else(|| vec![default.to_string()])
    };
    let initial_advertise_peer_urls = urls(
        |l| l.initial_advertise_peer_urls.as_ref(),
        "http://127.0.0.1:2380",
    );
    let initial_cluster = last(layers, |l| l.initial_cluster.as_ref())
        .cloned()
        .unwrap_or_else(|| {
            initial_advertise_peer_urls
                .iter()
                .map(|u| format!("{name}={u}"))
                .collect::<Vec<_>>()
                .join(",")
        });
    let config = Config {
        profile: profile.map(|p| p.name.to_string()),
        data_dir: last(layers, |l| l.data_dir.as_ref())
            .cloned()
            .unwrap_or_else(|| format!("{name}.ballast")),
        wal_dir: last(layers, |l| l.wal_dir.as_ref()).cloned(),
        listen_client_urls: urls(|l| l.listen_client_urls.as_ref(), "http://127.0.0.1:2379"),
        advertise_client_urls: urls(
            |l| l.advertise_client_urls.as_ref(),
            "http://127.0.0.1:2379",
        ),
        listen_peer_urls: urls(|l| l.listen_peer_urls.as_ref(), "http://127.0.0.1:2380"),
        initial_advertise_peer_urls,
        listen_metrics_urls: last(layers, |l| l.listen_metrics_urls.as_ref())
            .cloned()
            .unwrap_or_default(),
        initial_cluster,
        initial_cluster_state: last(layers, |l| l.initial_cluster_state.as_ref())
            .copied()
            .unwrap_or(ClusterState::New),
        initial_cluster_token: last(layers, |l| l.initial_cluster_token.as_ref())
            .cloned()
            .unwrap_or_else(|| "etcd-cluster".to_string()),
        client_transport_security: resolve_tls(layers, |l| l.client_transport_security.as_ref()),
        peer_transport_security: resolve_tls(layers, |l| l.peer_transport_security.as_ref()),
        cipher_suites: last(layers, |l| l.cipher_suites.as_ref())
            .cloned()
            .unwrap_or_default(),
        auth_token: last(layers, |l| l.auth_token.as_ref())
            .cloned()
            .unwrap_or_else(|| "simple".to_string()),
        log_level: last(layers, |l| l.log_level.as_ref())
            .cloned()
            .unwrap_or_else(|| "info".to_string()),
        metrics: last(layers, |l| l.metrics.as_ref())
            .cloned()
            .unwrap_or_else(|| "basic".to_string()),
        enable_grpc_gateway: last(layers, |l| l.enable_grpc_gateway.as_ref())
            .copied()
            .unwrap_or(true),
        force_new_cluster: last(layers, |l| l.force_new_cluster.as_ref())
            .copied()
            .unwrap_or(false),
        strict_reconfig_check: last(layers, |l| l.strict_reconfig_check.as_ref())
            .copied()
            .unwrap_or(true),
        max_snapshots: last(layers, |l| l.max_snapshots.as_ref())
            .copied()
            .unwrap_or(5),
        max_wals: last(layers, |l| l.max_wals.as_ref()).copied().unwrap_or(5),
        settings,
        ignored_keys: layers.iter().flat_map(|l| l.ignored_keys.clone()).collect(),
        unknown_keys: layers.iter().flat_map(|l| l.unknown_keys.clone()).collect(),
        name,
    };
    check_tls(
        "client-transport-security",
        "client-transport-security.key-file",
        &config.client_transport_security,
        &config.listen_client_urls,
        &config.advertise_client_urls,
        |u| {
            format!(
                "TLS key/cert (--cert-file, --key-file) must be provided for client url {u} \
                 with HTTPS scheme"
            )
        },
    )?;
    check_tls(
        "peer-transport-security",
        "peer-transport-security.key-file",
        &config.peer_transport_security,
        &config.listen_peer_urls,
        &config.initial_advertise_peer_urls,
        listener_refusal,
    )?;
    // `https://` metrics URLs are served with the client certificate, as etcd's are.
    check_tls(
        "client-transport-security",
        "client-transport-security.key-file",
        &config.client_transport_security,
        &config.listen_metrics_urls,
        &[],
        listener_refusal,
    )?;
    Ok(config)
}

/// etcd's refusal of an `https://` peer or metrics URL without a certificate.
fn listener_refusal(url: &str) -> String {
    let addr = url.split_once("://").map_or(url, |(_, rest)| rest);
    format!(
        "cannot listen on TLS for {}: KeyFile and CertFile are not presented",
        addr.trim_end_matches('/')
    )
}

/// Apply `profile` (if given), then the YAML file at `file` (if given): the profile argument
/// acts like the `--profile` flag, so it wins over a `profile:` key in the file. The server
/// layers its flags on top with `resolve(&[&file, &flags])` instead, when it has flags.
pub fn load(profile: Option<&str>, file: Option<&Path>) -> Result<Config, ConfigError> {
    let file_layer = match file {
        Some(path) => from_yaml_file(path)?,
        None => ConfigFile::default(),
    };
    let mut flag_layer = ConfigFile::default();
    if let Some(name) = profile {
        flag_layer.set("profile", name)?;
    }
    resolve(&[&file_layer, &flag_layer])
}

impl Config {
    /// Startup lines for the server's log: the profile and every tunable, then warnings.
    pub fn startup_report(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "profile: {}",
            self.profile.as_deref().unwrap_or("(none: etcd defaults)")
        )];
        for (key, _) in crate::settings::SETTINGS_KEYS {
            if let Some(v) = self.settings.value_of(key) {
                lines.push(format!("{key}: {v}"));
            }
        }
        for w in self.settings.warnings() {
            lines.push(format!("warning: {w}"));
        }
        for k in &self.ignored_keys {
            lines.push(format!(
                "warning: config key `{k}` is accepted for etcd compatibility and has no effect"
            ));
        }
        for k in &self.unknown_keys {
            lines.push(format!("warning: unknown config key `{k}` ignored"));
        }
        lines
    }

    /// `partition` in its flag form (for Status and logs).
    pub fn partition_text(&self) -> String {
        format_partition(&self.settings.partition)
    }
}

#[cfg(test)]
mod tests;
