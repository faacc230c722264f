#!/usr/bin/env bash
# Replication figures (issue #27's targets), in one run on this machine:
#
#   1. copy: a replica started from an empty data directory copies and verifies the primary's
#      log; its rate next to `registry audit verify` of an export of the same log (offline, the
#      same checks);
#   2. keeping up: the replica's lag (entries and seconds, from its /metrics) sampled while
#      `registry bench register` writes to the primary at full rate, asynchronous
#      (sync_replicas = 0) and then semi-synchronous (sync_replicas = 1);
#   3. lookups: `registry bench check` against the replica and the primary, alternately;
#   4. /metrics: how long a scrape of the primary takes with the fleet loaded.
#
#   tests/bench/replica.sh [--keys N] [--duration SECS] [--bin-dir DIR] [--copy-only [--perf]]
#
# --copy-only stops after the copy row, saying how much CPU the primary and the replica used
# during it; --perf also profiles the replica meanwhile (perf record) and prints where its time
# went, by thread and by symbol.
#
# Prints a Markdown table on stdout; progress on stderr. Speed is reported, never asserted.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
keys=100000
duration=10
bin_dir=""
copy_only=0
perf=0
while [ $# -gt 0 ]; do
    case "$1" in
        --copy-only) copy_only=1 ;;
        --perf) perf=1 ;;
        --keys) keys="$2"; shift ;;
        --duration) duration="$2"; shift ;;
        --bin-dir) bin_dir="$2"; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_binaries "$bin_dir"

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
json_num() { grep -o "\"$2\": *[0-9.e+-]*" "$1" | head -1 | sed 's/.*: *//'; }
metric() { curl -fsS "http://$1/metrics" | awk -v m="$2" '$1 == m { print $2 }'; }

# [listen=ADDR] start NAME [ARGS...]: a server on its own data directory and free ports (its
# gRPC one ADDR, if given); sets NAME_grpc and NAME_metrics to its addresses.
start() {
    local name="$1"
    shift
    "$server_bin" --data-dir "$work/$name" --listen "${listen:-127.0.0.1:0}" \
        --metrics-listen 127.0.0.1:0 --log-format json "$@" >"$work/$name.log" 2>&1 &
    pids+=($!)
    local grpc="" metrics=""
    for _ in $(seq 1 3000); do
        grpc="$( (grep '"listening for gRPC"' "$work/$name.log" || true) | tail -1 | grep -o '"addr":"[0-9.:]*"' | sed 's/"addr":"//; s/"//' || true)"
        metrics="$( (grep '"serving metrics at /metrics"' "$work/$name.log" || true) | tail -1 | grep -o '"local":"[0-9.:]*"' | sed 's/"local":"//; s/"//' || true)"
        if [ -n "$grpc" ] && [ -n "$metrics" ] && "$registry_bin" --server "http://$grpc" audit info >/dev/null 2>&1; then
            printf -v "${name}_grpc" '%s' "$grpc"
            printf -v "${name}_metrics" '%s' "$metrics"
            return 0
        fi
        sleep 0.02
    done
    echo "$name did not start:" >&2
    cat "$work/$name.log" >&2
    exit 1
}
size_of() { "$registry_bin" --json --server "http://$1" audit checkpoint | grep -o '"tree_size": *[0-9]*' | grep -o '[0-9]*$'; }

say "primary with $keys keys"
start primary --admin-key "$work/admin.pub.pem"
primary_pid="${pids[-1]}"
"$registry_bin" --server "http://$primary_grpc" --json bench prepare --keys "$keys" \
    --admin-key "$work/admin.pem" >"$work/prepare.json"
size="$(size_of "$primary_grpc")"

say "offline verify of an export ($size entries)"
"$registry_bin" --server "http://$primary_grpc" audit export --out "$work/archive" >/dev/null 2>&1
t0="$(now)"
verify_cpu="$( { TIMEFORMAT='%U %S'; time "$registry_bin" audit verify "$work/archive" \
    --registry-key "$work/primary/registry-key.pub.pem" >/dev/null; } 2>&1 | awk '{ printf "%.2f", $1 + $2 }')"
verify_secs="$(since "$t0")"

say "a replica copies the log from nothing"
cpu_of() { awk '{ print ($14 + $15) / 100 }' "/proc/$1/stat"; }
primary_cpu_before="$(cpu_of "$primary_pid")"
t0="$(now)"
start replica --follow "http://$primary_grpc"
replica_pid="${pids[-1]}"
if [ "$perf" = 1 ]; then
    perf record -F 499 -g -p "$replica_pid" -o "$work/perf.data" 2>/dev/null &
    perf_pid=$!
fi
# The copy ends when the replica first says it is fresh (it checks every 250 ms); its log's
# timestamp says when. Polling the replica every few milliseconds would steal the CPU it copies
# with, so this looks twice a second.
ready_line() { grep '"replica readiness (fresh answers) changed"' "$work/replica.log" | grep '"ready":true' | head -1; }
until [ -n "$(ready_line)" ]; do sleep 0.5; done
[ "$(size_of "$replica_grpc")" = "$size" ] || { echo "the replica said it was fresh before it held $size entries" >&2; exit 1; }
ready_at="$(ready_line | grep -o '"timestamp":"[^"]*"' | sed 's/"timestamp":"//; s/"$//')"
copy_secs="$(awk -v a="$t0" -v b="$(date -d "$ready_at" +%s.%N)" 'BEGIN { printf "%.2f", b - a }')"
rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", n / s }'; }
if [ "$copy_only" = 1 ]; then
    primary_cpu="$(awk -v a="$primary_cpu_before" -v b="$(cpu_of "$primary_pid")" 'BEGIN { printf "%.2f", b - a }')"
    echo "CPU seconds during the copy: primary $primary_cpu, replica $(cpu_of "$replica_pid"); audit verify used $verify_cpu"
    if [ "$perf" = 1 ]; then
        kill -INT "$perf_pid"; wait "$perf_pid" || true
        echo "replica samples by thread:"
        perf report -i "$work/perf.data" --no-children -g none --sort comm 2>/dev/null | grep -v '^#' | grep -v '^$' | head -12 || true
        echo "replica samples by symbol:"
        perf report -i "$work/perf.data" --no-children -g none --sort comm,symbol 2>/dev/null | grep -v '^#' | grep -v '^$' | head -30 | cut -c1-120 || true
    fi
    echo "copy $(rate "$size" "$copy_secs") entries/s ($copy_secs s); audit verify $(rate "$size" "$verify_secs") entries/s ($verify_secs s)"
    exit 0
fi

# keep_up SYNC: the replica's largest lag while the primary takes registrations for $duration s.
keep_up() {
    local out="$work/lag-$1.txt"
    : >"$out"
    "$registry_bin" --server "http://$primary_grpc" --json bench register --keys "$keys" \
        --duration "$duration" --concurrency 64 >"$work/register-$1.json" &
    local bench=$!
    while kill -0 "$bench" 2>/dev/null; do
        echo "$(metric "$replica_metrics" registry_replica_lag_entries) $(metric "$replica_metrics" registry_replica_lag_seconds)" >>"$out"
        sleep 0.5
    done
    wait "$bench"
    register_rate="$(json_num "$work/register-$1.json" items_per_sec | awk '{ printf "%.0f", $1 }')"
    max_entries="$(awk 'BEGIN { m = 0 } $1 > m { m = $1 } END { print m }' "$out")"
    max_seconds="$(awk 'BEGIN { m = 0 } $2 > m { m = $2 } END { print m }' "$out")"
    local final
    for _ in $(seq 1 100); do
        final="$(metric "$replica_metrics" registry_replica_lag_entries)"
        [ "$final" = 0 ] && break
        sleep 0.1
    done
    echo "| writes at full rate, sync_replicas = $1 | $register_rate registrations/s | largest lag $max_entries entries, $max_seconds s; $final entries behind 10 s after |"
}

say "keeping up (asynchronous)"
row_async="$(keep_up 0)"
say "keeping up (semi-synchronous): the primary restarts with sync_replicas = 1"
kill "$primary_pid"; wait "$primary_pid" 2>/dev/null || true
listen="$primary_grpc" start primary --admin-key "$work/admin.pub.pem" --sync-replicas 1
primary_pid="${pids[-1]}"
until [ "$(metric "$replica_metrics" registry_replica_connected)" = 1 ]; do sleep 0.1; done
row_sync="$(keep_up 1)"

say "lookups: replica and primary, alternately"
check_rate() {
    "$registry_bin" --server "http://$1" --json bench check --keys "$keys" \
        --duration "$duration" --concurrency 64 >"$work/check.json"
    json_num "$work/check.json" items_per_sec | awk '{ printf "%.0f", $1 }'
}
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
# check_row WHAT: three runs on the replica and three on the primary, taking turns; prints the
# table row.
check_row() {
    local replica_rates=() primary_rates=() r p
    for _ in 1 2 3; do
        replica_rates+=("$(check_rate "$replica_grpc")")
        primary_rates+=("$(check_rate "$primary_grpc")")
    done
    r="$(median "${replica_rates[@]}")"
    p="$(median "${primary_rates[@]}")"
    echo "| \`bench check\` on the replica$1 | $r checks/s (runs: ${replica_rates[*]}) | on the primary: $p (runs: ${primary_rates[*]}); ratio $(awk -v a="$r" -v b="$p" 'BEGIN { printf "%.2f", a / b }') |"
}
row_check="$(check_row "")"

say "lookups again after the replica restarts (its projections then come from its snapshot)"
kill "$replica_pid"; wait "$replica_pid" 2>/dev/null || true
listen="$replica_grpc" start replica --follow "http://$primary_grpc"
replica_pid="${pids[-1]}"
until [ "$(metric "$replica_metrics" registry_replica_connected)" = 1 ]; do sleep 0.1; done
until grep -q '"key records cached in memory"' "$work/replica.log"; do sleep 0.2; done
row_restarted="$(check_row " after its restart")"

say "/metrics scrape latency"
scrapes=()
for _ in $(seq 1 20); do
    scrapes+=("$(curl -fsS -o /dev/null -w '%{time_total}' http://$primary_metrics/metrics)")
done
scrape_median="$(median "${scrapes[@]}")"
scrape_max="$(printf '%s\n' "${scrapes[@]}" | sort -g | tail -1)"

cat <<EOF
Replication on $(nproc) cores, $keys keys ($size entries), $(date -u +%Y-%m-%d), commit $(cd "$repo" && git rev-parse --short HEAD).

| what | figure | next to |
|---|---|---|
| a replica copies and verifies the log from nothing | $(rate "$size" "$copy_secs") entries/s ($copy_secs s) | offline \`audit verify\`: $(rate "$size" "$verify_secs") entries/s ($verify_secs s) |
$row_async
$row_sync
$row_check
$row_restarted
| \`GET /metrics\` on the primary | median $(awk -v s="$scrape_median" 'BEGIN { printf "%.1f", s * 1000 }') ms, largest $(awk -v s="$scrape_max" 'BEGIN { printf "%.1f", s * 1000 }') ms (20 scrapes) | target < 50 ms |
EOF
