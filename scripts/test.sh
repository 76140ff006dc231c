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
if command -v cargo-nextest >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast
else
    cargo test --workspace --locked --no-fail-fast
fi
