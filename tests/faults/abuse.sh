#!/usr/bin/env bash
# The abuse benchmark (issue #26): oversized batches, slow streams, idle connections and a
# bad-signature flood, each against a release registry-server while a legitimate client measures
# lookups, registrations and health; prints peak RSS, open file descriptors, RSS after the
# attack, and the legitimate client's throughput and p99 against the figures without an attack.
#   tests/faults/abuse.sh [extra `abuse` flags, e.g. --seconds 20 --only slow-streams --tls --json]
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p registry-server --bin registry-server -p registry-tests --bin abuse
exec target/release/abuse --server-bin "$PWD/target/release/registry-server" "$@"
