#!/usr/bin/env bash
# Relay benchmark: postern vs Postfix on this machine (see bench/relay.py).
# Usage: bench/relay.sh [--messages N] [--submit-messages N] [--runs R] [--size BYTES]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins
command -v smtp-sink >/dev/null || {
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix
}
exec python3 bench/relay.py "$@"
