#!/usr/bin/env bash
# The second command: installs what is needed (idempotently), makes sure PostgreSQL runs, builds
# every binary and runs every test with cargo-nextest. `.ci/run` calls this with CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
scripts/setup.sh
scripts/ensure-postgres.sh
export LANEWATCH_WEED="$PWD/.tools/bin/weed"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo build --workspace --bins --tests
built=$(date +%s)
profile=default
if [[ "${CI:-}" == "true" ]]; then profile=ci; fi
cargo nextest run --workspace --profile "$profile" "$@"
end=$(date +%s)
echo "[test] build $((built - start))s, tests $((end - built))s"
