//! Text output of `ballast-tune`: the profiles table, a config file (YAML) and a flag list for
//! a set of settings, and the advisor's table.
//!
//! Invariant: `settings_yaml` and `settings_flags` print every key of `SETTINGS_KEYS` in the
//! form `ConfigFile` parses back to the same `Settings` (tested through the public parser).

use crate::advisor::Advice;
use crate::profiles::Profile;
use crate::settings::{Settings, SETTINGS_KEYS};
use crate::units::human_bytes;

/// Left-aligned columns separated by two spaces; the first row is the header.
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; cols];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(c);
            } else {
                line.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// One row per profile, its name first.
pub fn profiles_table(profiles: &[Profile]) -> String {
    let mut rows = vec![[
        "NAME",
        "LOAD",
        "K8S-NODES",
        "CORES",
        "MEMORY",
        "SHARDS",
        "PAGE-CACHE",
        "QUOTA",
        "SNAPSHOT-COUNT",
        "HEARTBEAT/ELECTION",
        "GC-BATCH",
        "WATCH-BUF",
        "COMPACTION",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect::<Vec<_>>()];
    for p in profiles {
        let s = p.settings();
        rows.push(vec![
            p.name.to_string(),
            p.load.to_string(),
            format!("~{}", p.kubernetes_nodes),
            p.cores.to_string(),
            human_bytes(p.memory_bytes),
            s.shards.to_string(),
            human_bytes(s.page_cache_bytes),
            human_bytes(s.quota_backend_bytes),
            s.snapshot_count.to_string(),
            format!("{}/{} ms", s.heartbeat_interval_ms, s.election_timeout_ms),
            s.group_commit_max_batch.to_string(),
            s.watch_event_buffer.to_string(),
            format!(
                "{} {}",
                s.auto_compaction_mode.as_str(),
                s.auto_compaction_retention
            ),
        ]);
    }
    table(&rows)
}

fn yaml_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn yaml_value(key: &str, value: &str) -> String {
    match key {
        "partition" | "auto-compaction-retention" | "auto-compaction-mode" => yaml_quote(value),
        _ => value.to_string(),
    }
}

/// A config file stating `profile` and every tunable. `why` gives an extra comment per key.
pub fn settings_yaml(
    header: &str,
    profile: Option<&str>,
    s: &Settings,
    why: impl Fn(&str) -> Option<String>,
) -> String {
    let mut out = String::new();
    for line in header.lines() {
        out.push_str(&format!("# {line}\n"));
    }
    if let Some(p) = profile {
        out.push_str("\n# Base profile: keys below override it; flags override this file.\n");
        out.push_str(&format!("profile: {p}\n"));
    }
    for (key, doc) in SETTINGS_KEYS {
        let value = s.value_of(key).unwrap_or_default();
        out.push_str(&format!("\n# {doc}\n"));
        if let Some(w) = why(key) {
            out.push_str(&format!("# Why: {w}\n"));
        }
        out.push_str(&format!("{key}: {}\n", yaml_value(key, &value)));
    }
    out
}

/// `--key=value`, one per line (so `ballast $(ballast-tune show large --format flags)` works).
pub fn settings_flags(profile: Option<&str>, s: &Settings) -> String {
    let mut out = String::new();
    if let Some(p) = profile {
        out.push_str(&format!("--profile={p}\n"));
    }
    for (key, _) in SETTINGS_KEYS {
        out.push_str(&format!(
            "--{key}={}\n",
            s.value_of(key).unwrap_or_default()
        ));
    }
    out
}

/// The advisor's measurements, its table of settings with reasons, and its warnings.
pub fn advice_table(a: &Advice) -> String {
    let m = &a.measurements;
    let mut out = String::new();
    out.push_str(&format!(
        "machine: {} cores, {} memory; data dir holds {}\n",
        m.machine.cores,
        human_bytes(m.machine.memory_bytes),
        human_bytes(m.data_bytes)
    ));
    match &m.disk {
        Some(d) => out.push_str(&format!(
            "disk: {} writes of {} B, each followed by fdatasync: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({})\n",
            d.samples,
            d.block_bytes,
            d.fdatasync_us_p50 as f64 / 1000.0,
            d.fdatasync_us_p99 as f64 / 1000.0,
            d.fdatasync_us_max as f64 / 1000.0,
            d.probe
        )),
        None => out.push_str("disk: not measured\n"),
    }
    for p in &m.peers {
        match (p.rtt_us_p50, p.rtt_us_max) {
            (Some(p50), Some(max)) => out.push_str(&format!(
                "peer {}: RTT p50 {:.2} ms, max {:.2} ms over {} connects ({} failed)\n",
                p.peer,
                p50 as f64 / 1000.0,
                max as f64 / 1000.0,
                p.samples,
                p.failures
            )),
            _ => out.push_str(&format!(
                "peer {}: unreachable ({})\n",
                p.peer,
                p.error.as_deref().unwrap_or("no answer")
            )),
        }
    }
    out.push('\n');
    let mut rows = vec![vec![
        "SETTING".to_string(),
        "VALUE".to_string(),
        "WHY".to_string(),
    ]];
    for r in &a.reasons {
        let shown = match r.key {
            k if k.ends_with("-bytes") => r
                .value
                .parse::<u64>()
                .map(|b| format!("{} ({})", r.value, human_bytes(b)))
                .unwrap_or_else(|_| r.value.clone()),
            _ if r.value.is_empty() => "(none)".to_string(),
            _ => r.value.clone(),
        };
        rows.push(vec![r.key.to_string(), shown, r.why.clone()]);
    }
    out.push_str(&table(&rows));
    if !a.warnings.is_empty() {
        out.push('\n');
        for w in &a.warnings {
            out.push_str(&format!("WARNING: {w}\n"));
        }
    }
    out
}

/// The advice as a config file, each key with its reason as a comment.
pub fn advice_yaml(a: &Advice) -> String {
    let mut header = String::from("Ballast configuration recommended by `ballast-tune advise`.\n");
    for w in &a.warnings {
        header.push_str(&format!("WARNING: {w}\n"));
    }
    settings_yaml(&header, Some(a.profile), &a.settings, |key| {
        a.reasons
            .iter()
            .find(|r| r.key == key)
            .map(|r| r.why.clone())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{from_yaml_str, resolve, ConfigFile};

    #[test]
    fn yaml_and_flags_parse_back_to_the_same_settings() {
        for p in Profile::all() {
            let s = p.settings();
            let yaml = settings_yaml("test", Some(p.name), &s, |_| Some("because".into()));
            let cf = from_yaml_str(&yaml).unwrap();
            assert!(cf.unknown_keys.is_empty(), "{:?}", cf.unknown_keys);
            assert_eq!(resolve(&[&cf]).unwrap().settings, s, "yaml of {}", p.name);

            // Without the profile key: every value stands on its own.
            let yaml = settings_yaml("test", None, &s, |_| None);
            let cf = from_yaml_str(&yaml).unwrap();
            assert_eq!(
                resolve(&[&cf]).unwrap().settings,
                s,
                "bare yaml of {}",
                p.name
            );

            let mut flags = ConfigFile::default();
            for line in settings_flags(Some(p.name), &s).lines() {
                let (k, v) = line.trim_start_matches("--").split_once('=').unwrap();
                flags.set(k, v).unwrap();
            }
            assert_eq!(
                resolve(&[&flags]).unwrap().settings,
                s,
                "flags of {}",
                p.name
            );
        }
    }

    #[test]
    fn profiles_table_has_one_row_per_profile_name_first() {
        let t = profiles_table(&Profile::all());
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 5);
        assert!(lines[0].starts_with("NAME"));
        for (line, p) in lines[1..].iter().zip(Profile::all()) {
            assert!(line.starts_with(p.name), "{line}");
        }
    }
}
