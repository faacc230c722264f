#!/usr/bin/env bash
# A against B in one sitting (issue #29's way of measuring a change): for each run, a fresh
# registry of KEYS keys, then `registry bench` register, check and mixed for SECS each, the
# server's resident set after them, and `registry-server usage`'s key records and indexes.
#
#   tests/bench/compare.sh [--keys N] [--duration SECS] RUN...
#
# A RUN is a directory of release binaries, optionally with settings for the server after
# colons: `target/release`, `/tmp/before:REGISTRY_CACHE_MIB=512`. Give each build twice,
# interleaved, to see the spread. Prints one line per run on stdout; progress on stderr.
set -euo pipefail
keys=100000
duration=8
runs=()
while [ $# -gt 0 ]; do
    case "$1" in
        --keys) keys="$2"; shift ;;
        --duration) duration="$2"; shift ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) runs+=("$1") ;;
    esac
    shift
done
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
json_num() { grep -o "\"$2\": *[0-9.e+-]*" "$1" | head -1 | sed 's/.*: *//'; }
for run in "${runs[@]}"; do
    IFS=: read -r dir settings <<<"$run"
    bench_binaries "$dir"
    rm -rf "$work/data"
    names=()
    for kv in ${settings//:/ }; do
        export "${kv?}"
        names+=("${kv%%=*}")
    done
    bench_start "$work/data"
    bench_fleet "$keys"
    out=""
    for w in register check mixed; do
        "$registry_bin" --server "http://$grpc" --json bench "$w" --keys "$keys" --duration "$duration" \
            --admin-key "$work/admin.pem" >"$work/r.json"
        out="$out $w=$(json_num "$work/r.json" items_per_sec | awk '{printf "%.0f", $1}')/s"
    done
    rss=$(awk '/VmRSS/ { print $2 }' "/proc/$server_pid/status")
    bench_stop
    cache=$("$server_bin" --data-dir "$work/data" usage \
        | awk '/decoded key records|identifier indexes/ { printf "%s=%s B/key ", ($1 == "decoded" ? "records" : "indexes"), $(NF-1) }')
    echo "$run$out resident=$((rss / 1024)) MiB $cache"
    for name in "${names[@]}"; do unset "$name"; done
done
