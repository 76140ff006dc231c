//! The workspace's dependencies point one way (design: net → consensus → engine, net → tuning →
//! bench, bench → proto). This test reads `cargo metadata` and fails on any edge between
//! Ballast crates that is not in the allowed list, so a shortcut across layers cannot land.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// Every allowed edge between workspace crates (normal and dev dependencies alike).
const ALLOWED: &[(&str, &[&str])] = &[
    ("ballast-engine", &[]),
    ("ballast-engine-glommio", &["ballast-engine"]),
    (
        "ballast-consensus",
        &["ballast-engine", "ballast-engine-glommio"],
    ),
    ("ballast-proto", &[]),
    ("ballast-bench", &["ballast-proto"]),
    ("ballast-tuning", &["ballast-bench"]),
    (
        "ballast-net",
        &[
            "ballast-consensus",
            "ballast-engine",
            "ballast-proto",
            "ballast-tuning",
        ],
    ),
    ("ballast-conformance", &["ballast-proto"]),
];

#[test]
fn workspace_dependencies_point_one_way() {
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages = meta["packages"].as_array().unwrap();
    let ours: BTreeSet<&str> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    let allowed: BTreeMap<&str, BTreeSet<&str>> = ALLOWED
        .iter()
        .map(|(k, v)| (*k, v.iter().copied().collect()))
        .collect();
    let mut violations = Vec::new();
    for p in packages {
        let name = p["name"].as_str().unwrap();
        let Some(ok) = allowed.get(name) else {
            violations.push(format!("{name}: a workspace crate missing from ALLOWED"));
            continue;
        };
        for dep in p["dependencies"].as_array().unwrap() {
            let dep = dep["name"].as_str().unwrap();
            if ours.contains(dep) && !ok.contains(dep) {
                violations.push(format!("{name} -> {dep}"));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "forbidden dependency edges: {violations:?}"
    );
    // The list is not vacuous: the crates it names exist.
    for name in allowed.keys() {
        assert!(
            ours.contains(name),
            "ALLOWED names {name}, which is not in the workspace"
        );
    }
}
