//! Runs fio with etcd's recommended job (`--rw=write --ioengine=sync --fdatasync=1 --size=22m
//! --bs=2300`) in a directory and reads its fdatasync latency from fio's JSON output, so the
//! built-in probe can be printed beside the tool operators already trust.
//!
//! Invariants: fio's file is removed afterwards; a report is returned only when fio counted
//! at least one sync and gave the 50/90/99/99.9 percentiles.

use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

/// fio's view of the same check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FioReport {
    pub syncs: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// Why fio could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FioError {
    #[error("running fio: {0}")]
    Spawn(std::io::Error),
    #[error("fio failed: {0}")]
    Failed(String),
    #[error("unexpected fio output: {0}")]
    Parse(String),
}

const JOB_NAME: &str = "ballast-fio";

/// Runs fio's etcd job in `dir` with `size` bytes (e.g. `"22m"`) of `block_size`-byte writes.
pub fn run_fio(dir: &Path, size: &str, block_size: usize) -> Result<FioReport, FioError> {
    let out = Command::new("fio")
        .args([
            "--rw=write",
            "--ioengine=sync",
            "--fdatasync=1",
            "--output-format=json",
        ])
        .arg(format!("--directory={}", dir.display()))
        .arg(format!("--size={size}"))
        .arg(format!("--bs={block_size}"))
        .arg(format!("--name={JOB_NAME}"))
        .output()
        .map_err(FioError::Spawn)?;
    let _ = std::fs::remove_file(dir.join(format!("{JOB_NAME}.0.0")));
    if !out.status.success() {
        return Err(FioError::Failed(
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ));
    }
    parse_fio_json(&String::from_utf8_lossy(&out.stdout))
}

/// Reads the sync latency of the first job of fio's JSON output.
pub fn parse_fio_json(text: &str) -> Result<FioReport, FioError> {
    // fio may print notices before the JSON document.
    let start = text
        .find('{')
        .ok_or_else(|| FioError::Parse("no JSON object".into()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text[start..]).map_err(|e| FioError::Parse(e.to_string()))?;
    let lat = &v["jobs"][0]["sync"]["lat_ns"];
    let pct = |key: &str| -> Result<f64, FioError> {
        lat["percentile"][key]
            .as_f64()
            .map(|ns| ns / 1e6)
            .ok_or_else(|| FioError::Parse(format!("no sync percentile {key}")))
    };
    let syncs = lat["N"]
        .as_u64()
        .ok_or_else(|| FioError::Parse("no sync count".into()))?;
    if syncs == 0 {
        return Err(FioError::Parse("fio counted no syncs".into()));
    }
    Ok(FioReport {
        syncs,
        p50_ms: pct("50.000000")?,
        p90_ms: pct("90.000000")?,
        p99_ms: pct("99.000000")?,
        p999_ms: pct("99.900000")?,
        max_ms: lat["max"].as_f64().unwrap_or(0.0) / 1e6,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fio_sync_latency() {
        let text = r#"note: something
        {"jobs":[{"sync":{"total_ios":3,"lat_ns":{"min":1,"max":5000000,"N":455,
        "percentile":{"50.000000":154624,"90.000000":872448,"99.000000":4046848,"99.900000":5275648}}}}]}"#;
        let r = parse_fio_json(text).expect("parses");
        assert_eq!(r.syncs, 455);
        assert!((r.p50_ms - 0.154624).abs() < 1e-9);
        assert!((r.p99_ms - 4.046848).abs() < 1e-9);
        assert!((r.max_ms - 5.0).abs() < 1e-9);
        assert!(parse_fio_json("{\"jobs\":[]}").is_err());
    }
}
