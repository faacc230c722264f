#!/usr/bin/env bash
# kill -9 at random moments (start-up included) under concurrent writers; after every restart
# each registration acknowledged before the kill must be answered VALID with its key, and the
# whole log is exported and verified at the end. Exit status 1 if anything was lost.
#   tests/faults/kill.sh [CYCLES] [extra `faults kill` flags, e.g. --writers 16 --dir /tmp/k]
set -euo pipefail
cd "$(dirname "$0")/../.."
cycles="${1:-1000}"
shift || true
cargo build --release -q -p registry-server --bin registry-server -p registry-tests --bin faults
REGISTRY_SERVER_BIN="$PWD/target/release/registry-server" \
  exec target/release/faults kill --cycles "$cycles" "$@"
