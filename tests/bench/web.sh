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

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
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
say() { echo "== $*" >&2; }
if [ -z "$bin_dir" ]; then
    say "building (release)"
    (cd "$repo" && cargo build --release -q -p registry-server -p registry-client)
    bin_dir="$repo/target/release"
fi
server_bin="$bin_dir/registry-server"
registry_bin="$bin_dir/registry"
work="$(mktemp -d "${TMPDIR:-/tmp}/registry-web-bench.XXXXXX")"
server_pid=""
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

"$registry_bin" keygen --out "$work/admin.pem" >/dev/null
"$server_bin" --data-dir "$work/data" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
    --admin-key "$work/admin.pub.pem" --log-format json >"$work/server.log" 2>&1 &
server_pid=$!
grpc="" http=""
for _ in $(seq 1 3000); do
    grpc="$( (grep '"listening for gRPC"' "$work/server.log" || true) | grep -o '"addr":"[0-9.:]*"' | sed 's/"addr":"//; s/"//' || true)"
    http="$( (grep '"serving the web face' "$work/server.log" || true) | grep -o '"local":"[0-9.:]*"' | sed 's/"local":"//; s/"//' || true)"
    [ -n "$grpc" ] && [ -n "$http" ] && break
    sleep 0.02
done
[ -n "$grpc" ] && [ -n "$http" ] || { cat "$work/server.log" >&2; exit 1; }

say "a fleet of $keys keys"
"$registry_bin" --server "http://$grpc" --json bench prepare --keys "$keys" \
    --admin-key "$work/admin.pem" >/dev/null

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
