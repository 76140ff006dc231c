//! Reads the JSON files `report` accepts: one workload result, an array of results, or a
//! `compare` output (its two merged sides are used).
//!
//! Invariant: results come out in file order, then in order within a file.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use serde_json::Value;

use crate::result::BenchResult;

/// Results found in `text`.
pub fn parse_results(text: &str) -> Result<Vec<BenchResult>> {
    let v: Value = serde_json::from_str(text).context("not JSON")?;
    match v {
        Value::Array(items) => items
            .into_iter()
            .map(|i| serde_json::from_value(i).context("array item is not a result"))
            .collect(),
        Value::Object(ref o) if o.contains_key("a") && o.contains_key("b") => Ok(vec![
            serde_json::from_value(o["a"].clone()).context("compare side a")?,
            serde_json::from_value(o["b"].clone()).context("compare side b")?,
        ]),
        Value::Object(_) => Ok(vec![
            serde_json::from_value(v).context("object is not a result")?
        ]),
        _ => Err(anyhow!(
            "expected a result object, an array of them, or a compare output"
        )),
    }
}

/// Results of every file in `paths`.
pub fn load_results(paths: &[impl AsRef<Path>]) -> Result<Vec<BenchResult>> {
    let mut out = Vec::new();
    for p in paths {
        let p = p.as_ref();
        let text =
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        out.extend(parse_results(&text).with_context(|| format!("in {}", p.display()))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_three_shapes() {
        let r = BenchResult {
            workload: "put".into(),
            qps: 5.0,
            ..Default::default()
        };
        let one = serde_json::to_string(&r).unwrap();
        assert_eq!(parse_results(&one).unwrap().len(), 1);
        assert_eq!(
            parse_results(&format!("[{one},{one},{one}]"))
                .unwrap()
                .len(),
            3
        );
        let cmp = format!("{{\"a\":{one},\"b\":{one},\"ratios\":{{}},\"runs\":[]}}");
        assert_eq!(parse_results(&cmp).unwrap().len(), 2);
        assert!(parse_results("42").is_err());
    }
}
