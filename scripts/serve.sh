#!/usr/bin/env bash
# Starts a single-node Ballast server on 127.0.0.1:2379 with data in ./default.ballast.
# Extra arguments are passed to `ballast` (it takes etcd's flags; see `ballast --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
exec cargo run --release --quiet -p ballast-net --bin ballast -- "$@"
