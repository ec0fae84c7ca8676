#!/usr/bin/env bash
# mailq benchmark: postern vs Postfix with the same queue (see bench/mailq.py).
# Usage: bench/mailq.sh [--messages N] [--runs R] [--keep]
# Run as root (it drops the page cache and runs a separate Postfix instance).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --bins
command -v postqueue >/dev/null || {
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix
}
exec python3 bench/mailq.py "$@"
