#!/usr/bin/env bash
# A registry that already holds a fleet, as an operator runs it (issue #29): start-up time,
# the time to read the key records into memory, the empty RPC (gRPC's own cost) and lookups
# with their p99, registrations, and the server's resident set after each workload and at its
# peak during the mixed one (reset just before it, as run.sh does).
#
#   tests/bench/peak.sh --from DATA --keys N [--bin-dir DIR] [--duration SECS] [--in-place]
#
# DATA is a data directory holding the bench fleet of N keys (e.g. kept from
# `registry bench prepare`), copied first so it stays as it was; --in-place runs on DATA
# itself (too large to copy; the register workload adds keys to it). Prints one line on
# stdout; progress on stderr.
set -euo pipefail
from="" keys="" bin_dir="" duration=8 in_place=""
while [ $# -gt 0 ]; do
    case "$1" in
        --from) from="$2"; shift ;;
        --keys) keys="$2"; shift ;;
        --bin-dir) bin_dir="$2"; shift ;;
        --duration) duration="$2"; shift ;;
        --in-place) in_place=1 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
[ -d "$from" ] && [ -n "$keys" ] || { sed -n '2,12p' "$0" >&2; exit 2; }
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
json_num() { grep -o "\"$2\": *[0-9.e+-]*" "$1" | head -1 | sed 's/.*: *//'; }
bench_binaries "$bin_dir"
data="$from"
if [ -z "$in_place" ]; then
    say "copying $from"
    cp -a "$from" "$work/data"
    data="$work/data"
fi
sync
started=$(date +%s.%N)
bench_start "$data"
startup=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
say "waiting for the key records to be read into memory"
fill=""
for _ in $(seq 1 6000); do
    fill="$( (grep '"key records cached in memory"' "$work/server.log" || true) | (grep -o '"seconds":[0-9.]*' || true) | cut -d: -f2)"
    [ -n "$fill" ] && break
    kill -0 "$server_pid" 2>/dev/null || { tail -5 "$work/server.log" >&2; exit 1; }
    sleep 0.1
done
after_fill=$(awk '/VmRSS/ { print $2 }' "/proc/$server_pid/status")
out=""
for w in empty check register mixed; do
    [ "$w" = mixed ] && { echo 5 >"/proc/$server_pid/clear_refs" 2>/dev/null || true; }
    say "$w"
    "$registry_bin" --server "http://$grpc" --json bench "$w" --keys "$keys" --duration "$duration" \
        --admin-key "$work/admin.pem" >"$work/r.json"
    out="$out $w=$(json_num "$work/r.json" items_per_sec | awk '{printf "%.0f", $1}')/s"
    case "$w" in empty|check) out="$out p99=$(json_num "$work/r.json" p99_us | awk '{printf "%.0f", $1}')us" ;; esac
    out="$out (then $(($(awk '/VmRSS/ { print $2 }' "/proc/$server_pid/status") / 1024)) MiB)"
done
peak=$(awk '/VmHWM/ { print $2 }' "/proc/$server_pid/status")
rss=$(awk '/VmRSS/ { print $2 }' "/proc/$server_pid/status")
bench_stop
echo "keys=$keys start-up=${startup}s fill=${fill}s resident-after-fill=$((after_fill / 1024)) MiB$out peak-mixed=$((peak / 1024)) MiB resident-after=$((rss / 1024)) MiB"
