//! ballast-tuning: capacity profiles (`profiles`), the configuration model shared with the
//! server (`config`, `settings`), and the measured tuning advisor (`advisor`, `probe`,
//! `machine`) behind the `ballast-tune` binary.
//!
//! Invariants: this crate never starts a server and never writes outside the directory a probe
//! is given; `Settings` handed out by `config::resolve`, `Profile::settings` and
//! `advisor::advise` pass `Settings::validate`.
//!
//! How the server uses it:
//! ```
//! use ballast_tuning::config::{self, ConfigFile};
//! // Flags the user gave, by etcd's names (values as text):
//! let mut flags = ConfigFile::default();
//! flags.set("profile", "large").unwrap();
//! flags.set("heartbeat-interval", "150").unwrap();
//! // Lowest precedence first: environment, config file, flags (profile is the base of all).
//! let env = ConfigFile::from_env(std::env::vars()).unwrap();
//! let file = ConfigFile::default(); // or config::from_yaml_file(path)?
//! let cfg = config::resolve(&[&env, &file, &flags]).unwrap();
//! assert_eq!(cfg.settings.heartbeat_interval_ms, 150);
//! assert_eq!(cfg.profile.as_deref(), Some("large"));
//! ```

pub mod advisor;
pub mod config;
pub mod error;
pub mod machine;
pub mod probe;
pub mod profiles;
pub mod render;
pub mod settings;
pub mod units;

pub use advisor::{advise, Advice, Goal, Measurements};
pub use config::{Config, ConfigFile};
pub use error::ConfigError;
pub use profiles::Profile;
pub use settings::Settings;
