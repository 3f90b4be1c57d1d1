#!/usr/bin/env bash
# The first command: installs what is needed, builds, and runs `lanewatch demo` (a control plane
# on embedded defaults and three simulated agents). Extra arguments go to `lanewatch demo`,
# e.g. `scripts/demo.sh --http-port 9090`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The very build scripts/test.sh makes (binaries and tests, one feature set): the demo runs the
# binaries the tests ran, and after the test command nothing is rebuilt. `--bins` alone would
# resolve other features (dev-dependencies turn some on) and rebuild most of the graph.
cargo build --workspace --bins --tests
exec target/debug/lanewatch demo "$@"
