#!/usr/bin/env bash
# Where a registry's bytes go (issue #29): loads a fleet of keys into a fresh registry, stops
# it cleanly, and runs `registry-server usage` on its data directory: the memory each structure
# takes as the server loads it, the live data by kind of record, and the files on disk, each
# also per key.
#
#   tests/bench/usage.sh [--keys N] [--bin-dir DIR] [--json]
#
# Prints the report on stdout; progress on stderr.
set -euo pipefail
keys=100000
bin_dir=""
json=""
while [ $# -gt 0 ]; do
    case "$1" in
        --keys) keys="$2"; shift ;;
        --bin-dir) bin_dir="$2"; shift ;;
        --json) json="--json" ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_binaries "$bin_dir"
bench_start "$work/data"
bench_fleet "$keys"
say "stopping the registry"
bench_stop
say "measuring"
"$server_bin" --data-dir "$work/data" usage $json
