#!/usr/bin/env bash
# Single-bit flips across every file of a stopped registry's data directory (one flip per fresh
# copy); each start is classified as refused with a message, harmless (same log, same answers)
# or silently different, and panics are counted apart. Exit status 1 on any silent difference
# or panic.
#   tests/faults/tamper.sh [FLIPS] [extra `faults tamper` flags, e.g. --registrations 8000]
set -euo pipefail
cd "$(dirname "$0")/../.."
flips="${1:-1000}"
shift || true
cargo build --release -q -p registry-server --bin registry-server -p registry-tests --bin faults
REGISTRY_SERVER_BIN="$PWD/target/release/registry-server" \
  exec target/release/faults tamper --flips "$flips" "$@"
