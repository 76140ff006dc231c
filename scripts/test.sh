#!/usr/bin/env bash
# The whole gate: formatting, clippy with warnings denied, and every test of the workspace
# (unit tests, the etcdctl end-to-end tests and the differential test against the reference etcd).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

# Every run below selects from one build of the whole workspace: the same package set each
# time, so dependencies are compiled with one feature set, once (a per-package selection
# unifies features differently and compiles much of the tree again, in time and disk).
# That build also puts the server binary the black-box tests (conformance/) start at
# target/debug/ballast, since ballast-net's own integration tests need it.
if command -v cargo-nextest >/dev/null 2>&1; then
    cargo nextest run --locked --workspace --no-run
    run=(cargo nextest run --locked --workspace --no-fail-fast)
    unit=(-E 'not package(ballast-conformance)')
    black_box=(-E 'package(ballast-conformance)')
else
    cargo test --locked --workspace --no-run
    run=(cargo test --locked --no-fail-fast)
    unit=(--workspace --exclude ballast-conformance)
    black_box=(-p ballast-conformance)
fi
target_dir="${CARGO_TARGET_DIR:-target}"
if [ ! -x "$target_dir/debug/ballast" ]; then
    echo "test.sh: the workspace build left no $target_dir/debug/ballast" >&2
    exit 1
fi

"${run[@]}" "${unit[@]}"
# The black-box tests twice: every server they start runs 2 shards, then 1, where revisions are
# exactly etcd's (BALLAST_SHARDS is the server's --shards variable, which the servers the tests
# start inherit; it is not set for the unit tests above, which parse flags in process).
BALLAST_SHARDS=2 "${run[@]}" "${black_box[@]}"
BALLAST_SHARDS=1 "${run[@]}" "${black_box[@]}"
