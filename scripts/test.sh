#!/usr/bin/env bash
# The whole gate: formatting, clippy with warnings denied, and every test of the workspace
# (unit tests, the etcdctl end-to-end tests and the differential test against the reference etcd).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The black-box tests (conformance/) start the server binary; build it first.
cargo build --locked -p ballast-net --bin ballast
run_tests() {
    if command -v cargo-nextest >/dev/null 2>&1; then
        cargo nextest run --locked --no-fail-fast "$@"
    else
        cargo test --locked --no-fail-fast "$@"
    fi
}
run_tests --workspace --exclude ballast-conformance
# The black-box tests twice: every server they start runs 2 shards, then 1, where revisions are
# exactly etcd's (BALLAST_SHARDS is the server's --shards variable, which the servers the tests
# start inherit; it is not set for the unit tests above, which parse flags in process).
BALLAST_SHARDS=2 run_tests -p ballast-conformance
BALLAST_SHARDS=1 run_tests -p ballast-conformance
