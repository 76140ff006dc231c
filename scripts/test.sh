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
# Every server the tests start runs 2 shards (BALLAST_SHARDS is the server's --shards
# variable, inherited by the servers the tests start), then the black-box tests again on one
# shard, where revisions are exactly etcd's.
BALLAST_SHARDS=2 run_tests --workspace
BALLAST_SHARDS=1 run_tests -p ballast-conformance
