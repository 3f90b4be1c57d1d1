#!/usr/bin/env bash
# The first command: installs what is needed, builds, and runs `lanewatch demo` (a control plane
# on embedded defaults and three simulated agents). Extra arguments go to `lanewatch demo`,
# e.g. `scripts/demo.sh --http-port 9090`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --workspace --bins
exec target/debug/lanewatch demo "$@"
