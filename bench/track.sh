#!/usr/bin/env bash
# Message tracking benchmark: a million tracked deliveries in the queue
# index, then `postern log` by recipient, sender, ID, status, time range
# and --summary (see tests/examples/track_bench.rs).
# Usage: bench/track.sh [--deliveries N] [--runs R]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --bins
exec cargo run --release -q -p postern-tests --example track_bench -- "$@"
