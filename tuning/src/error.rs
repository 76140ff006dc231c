//! Errors of the config model: reading a config file, parsing one value, and checking that a
//! resolved set of settings hangs together.
//!
//! Invariant: every error about a value names the key it came from, spelled as in the YAML file
//! and on the command line (`heartbeat-interval`, `client-transport-security.cert-file`), so an
//! operator can find the line to fix.

use std::path::PathBuf;

/// Why a config file, flag or environment variable was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The text is not YAML, or its top level is not a mapping of keys to values.
    #[error("config file{where_} is not valid YAML: {message}")]
    Syntax { where_: String, message: String },
    /// One key has a value of the wrong type or out of range.
    #[error("invalid value {value:?} for `{key}`: {reason}")]
    InvalidValue {
        key: String,
        value: String,
        reason: String,
    },
    /// Keys that neither etcd nor Ballast knows (only in strict mode; otherwise a warning).
    #[error("unknown config key(s): {}", keys.join(", "))]
    UnknownKeys { keys: Vec<String> },
    /// `profile` names no profile.
    #[error("unknown profile {name:?} for `profile` (known: small, medium, large, xlarge)")]
    UnknownProfile { name: String },
    /// Two settings that are each valid contradict each other (e.g. an election timeout shorter
    /// than five heartbeats). `key` is the one to change.
    #[error("`{key}`: {reason}")]
    Inconsistent { key: &'static str, reason: String },
}

impl ConfigError {
    /// The config key this error is about, if it is about one key.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::InvalidValue { key, .. } => Some(key),
            ConfigError::Inconsistent { key, .. } => Some(key),
            ConfigError::UnknownProfile { .. } => Some("profile"),
            _ => None,
        }
    }

    pub(crate) fn invalid(key: &str, value: &str, reason: impl Into<String>) -> Self {
        ConfigError::InvalidValue {
            key: key.to_string(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}
