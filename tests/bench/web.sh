#!/usr/bin/env bash
# The web face's figures (issue #28's targets), in one run on this machine:
#
#   1. validity lookups at 64 clients: `registry bench check` over gRPC and `check-http` over the
#      JSON API, alternately, three runs each (the same fleet, the same questions);
#   2. tiles: `registry bench tiles` (random full tiles and entry bundles) from the registry's
#      own listener.
#
#   tests/bench/web.sh [--keys N] [--duration SECS] [--bin-dir DIR]
#
# Prints a Markdown table on stdout; progress on stderr. Speed is reported, never asserted.
set -euo pipefail

keys=100000
duration=10
bin_dir=""
while [ $# -gt 0 ]; do
    case "$1" in
        --keys) keys="$2"; shift ;;
        --duration) duration="$2"; shift ;;
        --bin-dir) bin_dir="$2"; shift ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
repo="$bench_repo"
bench_binaries "$bin_dir"
bench_start "$work/data"
bench_fleet "$keys"

json_num() { grep -o "\"$2\": *[0-9.e+-]*" "$1" | head -1 | sed 's/.*: *//'; }
rate() {
    "$registry_bin" --server "http://$grpc" --json bench "$1" --keys "$keys" --duration "$duration" \
        --concurrency 64 --http "http://$http" >"$work/run.json"
    local errors
    errors="$(json_num "$work/run.json" errors)"
    [ "$errors" = 0 ] || { echo "$1: $errors errors: $(cat "$work/run.json")" >&2; exit 1; }
    json_num "$work/run.json" items_per_sec | awk '{ printf "%.0f", $1 }'
}
p50() { json_num "$work/run.json" p50_us; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

say "validity lookups, gRPC and JSON, alternately"
grpc_rates=() http_rates=()
for _ in 1 2 3; do
    grpc_rates+=("$(rate check)")
    http_rates+=("$(rate check-http)")
done
g="$(median "${grpc_rates[@]}")"
h="$(median "${http_rates[@]}")"

say "tiles"
tile_rates=()
for _ in 1 2 3; do tile_rates+=("$(rate tiles)"); done
tiles_p50="$(p50)"

cat <<TABLE
Web face on $(nproc) cores, $keys keys, $(date -u +%Y-%m-%d), commit $(cd "$repo" && git rev-parse --short HEAD).

| what | figure | next to |
|---|---|---|
| validity lookups over the JSON API, 64 clients | $h checks/s (runs: ${http_rates[*]}) | gRPC \`bench check\`: $g (runs: ${grpc_rates[*]}); ratio $(awk -v a="$h" -v b="$g" 'BEGIN { printf "%.2f", a / b }'); target ≥ 0.8 |
| tiles and entry bundles from the registry's listener, 64 clients | $(median "${tile_rates[@]}") requests/s (runs: ${tile_rates[*]}), median latency ${tiles_p50} µs | target ≥ 10,000/s |
TABLE
