#!/usr/bin/env bash
# Installs what building and testing Ballast needs and the machine may lack: protoc (build),
# the reference etcd and etcdctl 3.4 (differential and end-to-end tests), fio (disk check
# comparison), the rustfmt/clippy components, and the third-party etcd clients that
# conformance/tests/clients.rs runs (a Python virtualenv and npm packages, pinned, in the
# git-ignored conformance/clients/.deps and conformance/clients/js/node_modules). Idempotent:
# installs only what is missing or changed.
set -euo pipefail

need=()
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
command -v fio >/dev/null 2>&1 || need+=(fio)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)

if [ ${#need[@]} -gt 0 ]; then
    echo "install-deps: installing ${need[*]}" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

if command -v rustup >/dev/null 2>&1; then
    for comp in rustfmt clippy; do
        rustup component list --installed 2>/dev/null | grep -q "^$comp" || rustup component add "$comp" >&2
    done
fi

# The clients of conformance/tests/clients.rs. Each install is recorded by a copy of the file it
# installed from; a changed pin file reinstalls from scratch.
clients="$(cd "$(dirname "$0")/../conformance/clients" && pwd)"
venv="$clients/.deps/venv"
if ! cmp -s "$clients/python/requirements.txt" "$venv/installed-requirements.txt"; then
    echo "install-deps: installing the Python etcd clients into $venv" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$clients/python/requirements.txt" >&2
    cp "$clients/python/requirements.txt" "$venv/installed-requirements.txt"
fi
modules="$clients/js/node_modules"
if ! cmp -s "$clients/js/package-lock.json" "$modules/installed-package-lock.json"; then
    echo "install-deps: installing the npm etcd client into $modules" >&2
    (cd "$clients/js" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
    cp "$clients/js/package-lock.json" "$modules/installed-package-lock.json"
fi
