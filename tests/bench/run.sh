#!/usr/bin/env bash
# The whole benchmark table in one command: builds in release mode, starts a registry on a
# temporary data directory, runs every workload three times next to the ceilings measured in
# the same run (bare sled, empty RPC, crypto) and next to PostgreSQL, and writes BENCHMARKS.md.
#
#   tests/bench/run.sh [--quick] [--keys N] [--duration SECS] [--out FILE] [--bin-dir DIR]
#                      [--no-postgres]
#
# --quick runs everything at toy size (2,000 keys, 1 s per run) in under two minutes; CI runs
# it (registry-client/tests/bench_harness.rs) so the harness never rots. It asserts nothing
# about speed. --bin-dir uses already built binaries instead of building.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
quick=0
keys=1000000
duration=10
out="$repo/BENCHMARKS.md"
bin_dir=""
postgres=1
concurrency=64
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1 ;;
        --keys) keys="$2"; shift ;;
        --duration) duration="$2"; shift ;;
        --out) out="$2"; shift ;;
        --bin-dir) bin_dir="$2"; shift ;;
        --no-postgres) postgres=0 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
if [ "$quick" = 1 ]; then
    keys=2000
    duration=1
fi
repeats=3

say() { echo "== $*" >&2; }

# The machine's CPU counters now: "steal total" in clock ticks (proc(5); empty where unreadable).
cpu_ticks() { awk '/^cpu / { t = 0; for (i = 2; i <= 9; i++) t += $i; print $9, t; exit }' /proc/stat 2>/dev/null || true; }
# Per cent of the time between two cpu_ticks readings that the hypervisor stole, or "n/a".
steal_between() {
    awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " ");
        if (y[2] > x[2]) printf "%.1f %%", 100 * (y[1] - x[1]) / (y[2] - x[2]); else print "n/a" }'
}
ticks_at_start="$(cpu_ticks)"

# What is measured, read before anything is built or written: the report itself (written at
# the end into the repository) must not count as an uncommitted change.
commit="$(cd "$repo" && git rev-parse --short HEAD 2>/dev/null || echo unknown)"
(cd "$repo" && git diff --quiet HEAD -- . ':(exclude)BENCHMARKS.md' 2>/dev/null) ||
    commit="$commit (with uncommitted changes)"

if [ -z "$bin_dir" ]; then
    say "building (release)"
    (cd "$repo" && cargo build --release -q -p registry-server -p registry-client)
    bin_dir="$repo/target/release"
fi
bin_dir="$(cd "$bin_dir" && pwd)"
server_bin="$bin_dir/registry-server"
registry_bin="$bin_dir/registry"
for b in "$server_bin" "$registry_bin"; do
    [ -x "$b" ] || { echo "missing binary $b (build it, or pass --bin-dir)" >&2; exit 2; }
done

work="$(mktemp -d "${TMPDIR:-/tmp}/registry-bench.XXXXXX")"
server_pid=""
pg_data=""
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    [ -n "$pg_data" ] && runuser_pg pg_ctl -D "$pg_data" -m immediate stop >/dev/null 2>&1
    rm -rf "$work"
    return 0
}
trap cleanup EXIT

# --- helpers -----------------------------------------------------------------------------------

# The value of a numeric JSON field in a file: json_num FILE FIELD
json_num() { grep -o "\"$2\": *[0-9.e+-]*" "$1" | head -1 | sed 's/.*: *//'; }

# Median and spread of numbers on stdin: "median min max".
stats() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) { print "nan nan nan"; exit }
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; print m, v[1], v[NR] }'; }

# Human formatting: fmt NUMBER -> 12,345 (or 1.23 for small values)
fmt() { awk -v x="$1" 'BEGIN { if (x == "nan" || x == "") { print "n/a"; exit }
    if (x < 10) { printf "%.2f\n", x; exit }
    s = sprintf("%.0f", x); n = length(s); o = "";
    for (i = 1; i <= n; i++) { o = o substr(s, i, 1); if ((n - i) % 3 == 0 && i < n) o = o "," }
    print o }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == "nan" || a == "nan" || b + 0 == 0) print "n/a"; else printf "%.2f\n", a / b }'; }

rows=()
# row NAME "median min max" UNIT CEILING_NAME CEILING_VALUE TARGET
row() {
    local name="$1" m lo hi unit="$3" cname="$4" cval="$5" target="$6"
    read -r m lo hi <<<"$2"
    local spread="$(fmt "$lo")–$(fmt "$hi")"
    local r="n/a" shown=""
    if [ -n "$cval" ]; then
        r="$(ratio "$m" "$cval")"
        shown="$(fmt "$cval")"
    fi
    rows+=("| $name | $(fmt "$m") $unit | $spread | ${cname:-–} $shown | $r | ${target:-–} |")
}

start_server() {
    "$server_bin" --data-dir "$work/data" --listen 127.0.0.1:0 --admin-key "$work/admin.pub.pem" \
        --log-format json --log-level info >"$work/server.log" 2>&1 &
    server_pid=$!
    local t0 addr=""
    t0=$(date +%s.%N)
    for _ in $(seq 1 3000); do
        addr="$( (grep -o '"addr":"[0-9.:]*"' "$work/server.log" 2>/dev/null || true) | tail -1 | sed 's/"addr":"//; s/"//')"
        if [ -n "$addr" ] && "$registry_bin" --server "http://$addr" audit info >/dev/null 2>&1; then
            break
        fi
        kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
        sleep 0.01
    done
    if [ -z "$addr" ]; then
        echo "the registry did not answer within 30 s:" >&2
        cat "$work/server.log" >&2
        exit 1
    fi
    server_url="http://$addr"
    startup_secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
}

stop_server() {
    kill -TERM "$server_pid"
    wait "$server_pid" || true
    server_pid=""
}

# [conc=N] [tag=NAME] bench WORKLOAD FIELD [ARGS...]: runs the workload $repeats times, prints
# "median min max" of FIELD and keeps each JSON report as $work/NAME-<run>.json (NAME defaults to
# the workload).
bench() {
    local workload="$1" field="$2" name="${tag:-$1}"
    shift 2
    local i
    for i in $(seq 1 "$repeats"); do
        # A failed run must stop the harness (the exit fails the pipeline, hence the caller's
        # assignment): a median over the runs that happened to work would be a wrong figure.
        if ! "$registry_bin" --server "$server_url" --json bench "$workload" --keys "$keys" \
            --duration "$duration" --concurrency "${conc:-$concurrency}" "$@" >"$work/last.json"; then
            echo "$workload run $i failed: $(cat "$work/last.json")" >&2
            exit 1
        fi
        local errors
        errors="$(json_num "$work/last.json" errors)"
        if [ "${errors:-0}" != "0" ]; then
            echo "$workload: $errors errors: $(grep -o '"first_error": *"[^"]*"' "$work/last.json")" >&2
        fi
        cp "$work/last.json" "$work/$name-$i.json"
        json_num "$work/last.json" "$field"
    done | stats
}
# The median of another field over the runs of the last bench call: field_median WORKLOAD FIELD
field_median() { for i in $(seq 1 "$repeats"); do json_num "$work/$1-$i.json" "$2"; done | stats | cut -d' ' -f1; }

# --- the registry ------------------------------------------------------------------------------

cores=$(nproc)
"$registry_bin" keygen --out "$work/admin.pem" >/dev/null
say "starting the registry"
start_server
say "loading a fleet of $keys keys (bulk path)"
"$registry_bin" --server "$server_url" --json bench prepare --keys "$keys" --admin-key "$work/admin.pem" >"$work/prepare.json"
load_secs="$(json_num "$work/prepare.json" seconds)"

say "restart: start-up time with $keys keys"
stop_server
# A start checks the entries appended since the last check (hash chain, Merkle nodes); the
# running server checks what became durable every verify_interval_secs, so the first start
# after the load only checks its last seconds. Later starts only open the store and load the map.
start_server
first_start="$startup_secs"
start_times=()
for i in $(seq 1 "$repeats"); do
    stop_server
    start_server
    start_times+=("$startup_secs")
done
startup="$(printf '%s\n' "${start_times[@]}" | stats)"
# The server answers at once; it reads the key records into memory in the background (lookups
# read sled meanwhile). The workloads start once that is done, so none of them measures the fill.
cache_fill="nan"
for _ in $(seq 1 6000); do
    line="$(grep '"key records cached in memory"' "$work/server.log" | tail -1 || true)"
    if [ -n "$line" ]; then
        cache_fill="$(printf '%s' "$line" | grep -o '"seconds":[0-9.]*' | cut -d: -f2)"
        break
    fi
    if grep -q '"reading the key projections into memory failed"' "$work/server.log" \
        || ! kill -0 "$server_pid" 2>/dev/null; then
        echo "the key records were not read into memory:" >&2
        tail -5 "$work/server.log" >&2
        break
    fi
    sleep 0.1
done

say "empty RPC (the cost of gRPC)"
empty="$(bench empty items_per_sec)"
say "check"
check="$(bench check items_per_sec)"
check_p99="$(field_median check p99_us)"
check_p50="$(field_median check p50_us)"
empty_p99="$(field_median empty p99_us)"
say "check, basic view"
check_basic="$(tag=check-basic bench check items_per_sec --view basic)"
say "check-batch"
batch="$(bench check-batch items_per_sec)"
say "check-batch, basic view"
batch_basic="$(tag=check-batch-basic bench check-batch items_per_sec --view basic)"
say "verify-ocmf"
ocmf_single="$(bench verify-ocmf items_per_sec)"
ocmf_batch="$(conc=$cores tag=verify-ocmf-500 bench verify-ocmf items_per_sec --batch 500)"
say "register"
register="$(bench register items_per_sec)"
register_p99="$(field_median register p99_us)"
mean_commit="$(field_median register mean_group_commit)"
say "mixed (peak RSS measured from here)"
echo 5 >"/proc/$server_pid/clear_refs" 2>/dev/null || true
mixed="$(bench mixed items_per_sec)"
rss_kib="$(awk '/VmHWM/ { print $2 }' "/proc/$server_pid/status")"
stop_server
data_bytes="$(du -sb "$work/data" | cut -f1)"
say "where the bytes go (registry-server usage)"
"$server_bin" --data-dir "$work/data" usage >"$work/usage.txt"

say "rebuild of the projections"
rebuild_rates=()
for i in $(seq 1 "$repeats"); do
    "$server_bin" --data-dir "$work/data" --log-format json rebuild >"$work/rebuild.log" 2>&1
    rebuild_rates+=("$(grep -o '"per_second":[0-9]*' "$work/rebuild.log" | tail -1 | cut -d: -f2)")
done
rebuild="$(printf '%s\n' "${rebuild_rates[@]}" | stats)"
rebuild_entries="$(grep -o '"entries":[0-9]*' "$work/rebuild.log" | tail -1 | cut -d: -f2)"

# --- ceilings ----------------------------------------------------------------------------------

say "ceilings: bare sled, crypto, openssl"
commit_batch=$(awk -v m="$mean_commit" 'BEGIN { b = int(m + 0.5); print (b < 1) ? 1 : b }')
sled1="$(for i in $(seq 1 "$repeats"); do "$server_bin" storage-ceiling --dir "$work" --batch "$commit_batch" \
    --keys-per-entry 1 --seconds "$duration" --json | json_num /dev/stdin entries_per_sec; done | stats)"
sled6="$(for i in $(seq 1 "$repeats"); do "$server_bin" storage-ceiling --dir "$work" --batch "$commit_batch" \
    --keys-per-entry 6 --seconds "$duration" --json | json_num /dev/stdin entries_per_sec; done | stats)"
for i in $(seq 1 "$repeats"); do
    "$registry_bin" --json bench crypto --duration "$duration" >"$work/crypto-$i.json"
done
crypto() { for i in $(seq 1 "$repeats"); do json_num "$work/crypto-$i.json" "$1"; done | stats; }
ring="$(crypto p256_verify_ring_per_sec)"
rustcrypto="$(crypto p256_verify_rustcrypto_per_sec)"
checkpoint_sign="$(crypto checkpoint_sign_per_sec)"
sha="$(crypto sha256_bytes_per_sec | awk '{ printf "%f %f %f\n", $1 / 1e6, $2 / 1e6, $3 / 1e6 }')"
openssl_verify="nan nan nan"
if command -v openssl >/dev/null; then
    openssl_verify="$(for i in $(seq 1 "$repeats"); do (openssl speed -seconds "$duration" ecdsap256 2>/dev/null || true) \
        | awk '/ecdsa \(nistp256\)/ { print $NF }'; done | stats)"
fi

# --- PostgreSQL --------------------------------------------------------------------------------

pg_note=""
pg_register="nan nan nan"
pg_check="nan nan nan"
pg_batch="nan nan nan"
runuser_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
if [ "$postgres" = 1 ]; then
    pg_bin=""
    for d in /usr/lib/postgresql/*/bin; do [ -x "$d/pg_ctl" ] && pg_bin="$d"; done
    if [ -z "$pg_bin" ] && [ "$quick" = 0 ] && command -v apt-get >/dev/null; then
        say "installing PostgreSQL from the distribution's packages"
        (apt-get install -y postgresql >/dev/null 2>&1 || { apt-get update >/dev/null 2>&1 && apt-get install -y postgresql >/dev/null 2>&1; }) || true
        for d in /usr/lib/postgresql/*/bin; do [ -x "$d/pg_ctl" ] && pg_bin="$d"; done
    fi
    if [ -z "$pg_bin" ]; then
        pg_note="PostgreSQL is not installed here (and --quick does not install it): skipped."
    else
        say "PostgreSQL: init, load $keys keys, pgbench"
        export PATH="$pg_bin:$PATH"
        pg_data="$work/pg"
        mkdir -p "$pg_data"
        [ "$(id -u)" = 0 ] && chown postgres "$work" "$pg_data"
        chmod 755 "$work"
        pg_port=$((20000 + RANDOM % 20000))
        runuser_pg initdb -D "$pg_data" -A trust -U bench >/dev/null
        runuser_pg pg_ctl -D "$pg_data" -l "$pg_data/server.log" -w -o \
            "-c listen_addresses=127.0.0.1 -p $pg_port -k $pg_data -c max_connections=200 -c shared_buffers=1GB" start >/dev/null
        pg() { psql -h 127.0.0.1 -p "$pg_port" -U bench -d postgres -q -v ON_ERROR_STOP=1 "$@"; }
        pg -f "$here/postgres/schema.sql" >/dev/null
        pg -v keys="$keys" -f "$here/postgres/load.sql" >/dev/null
        pgb() {
            # A failed pgbench run leaves its figure out (reported as n/a), not the whole table.
            (pgbench -h 127.0.0.1 -p "$pg_port" -U bench -n -M prepared -c "$concurrency" -j "$cores" \
                -T "$(awk -v d="$duration" 'BEGIN { print (d < 1) ? 1 : int(d + 0.5) }')" -D keys="$keys" "$@" postgres 2>/dev/null || true) \
                | awk '/^tps/ { print $3 }'
        }
        pg_check="$(for i in $(seq 1 "$repeats"); do pgb -f "$here/postgres/check.pgbench"; done | stats)"
        pg_register="$(for i in $(seq 1 "$repeats"); do pgb -f "$here/postgres/register.pgbench"; done | stats)"
        # One query of 1,000 questions per transaction: queries/s is 1,000 × its tps.
        pg_batch="$(for i in $(seq 1 "$repeats"); do pgb -f "$here/postgres/check-batch.pgbench"; done \
            | awk '{ print $1 * 1000 }' | stats)"
        pg_version="$(psql --version | awk '{ print $3 }')"
        pg_note="PostgreSQL $pg_version on loopback, default durability (fsync, synchronous_commit on), shared_buffers 1 GB, pgbench -M prepared -c $concurrency -j $cores."
        runuser_pg pg_ctl -D "$pg_data" -m fast stop >/dev/null
        pg_data=""
    fi
fi

# --- the table ---------------------------------------------------------------------------------

# The names the bench calls above kept their reports under, in the order of the tables.
workloads="empty check check-basic check-batch check-batch-basic verify-ocmf verify-ocmf-500 register mixed"

med() { echo "$1" | cut -d' ' -f1; }
ring_all=$(awk -v r="$(med "$ring")" -v c="$cores" 'BEGIN { print r * c }')
row "Durable signed registrations, $concurrency clients" "$register" "/s" "bare sled, batch $commit_batch, 1 key/entry (entries/s ÷ 2)" \
    "$(awk -v s="$(med "$sled1")" 'BEGIN { print s / 2 }')" "≥ 5,000/s"
row "… same, against bare sled with 6 keys/entry" "$register" "/s" "bare sled, batch $commit_batch, 6 keys/entry (÷ 2)" \
    "$(awk -v s="$(med "$sled6")" 'BEGIN { print s / 2 }')" ""
row "Validity lookups by EVSE ID, $concurrency clients, $keys keys" "$check" "/s" "empty RPC" "$(med "$empty")" "≥ 50,000/s, ≥ 0.8 × empty RPC"
row "… same, basic view (no key material, no binding)" "$check_basic" "/s" "empty RPC" "$(med "$empty")" ""
row "Batch validity (1,000 per call)" "$batch" "queries/s" "" "" "≥ 1,000,000/s"
row "… same, basic view" "$batch_basic" "queries/s" "" "" ""
row "OCMF validation, batches of 500" "$ocmf_batch" "records/s" "ring verify × $cores cores" "$ring_all" "≥ 0.8 × raw verify"
row "OCMF validation, one record per call" "$ocmf_single" "records/s" "ring verify × $cores cores" "$ring_all" ""
row "Mixed (1 % register, 99 % check)" "$mixed" "ops/s" "" "" ""
row "Empty unary RPC (grpc.health Check)" "$empty" "calls/s" "" "" "ceiling"
row "Projection rebuild ($rebuild_entries entries)" "$rebuild" "events/s" "" "" "≥ 500,000/s"
row "PostgreSQL: durable registrations (pgbench)" "$pg_register" "/s" "" "" ""
row "PostgreSQL: validity lookups (pgbench)" "$pg_check" "/s" "" "" ""
row "PostgreSQL: batch validity, 1,000 per query (unnest, pgbench)" "$pg_batch" "queries/s" "" "" ""

{
    echo "# Benchmarks"
    echo
    echo "Written by \`tests/bench/run.sh$( [ "$quick" = 1 ] && echo ' --quick')\`; do not edit by hand."
    echo
    echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "- commit: $commit"
    echo "- machine: $cores cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -sr)"
    echo "- size: $keys keys, $duration s per run, $concurrency concurrent clients; each figure is the median of $repeats runs, with the spread (min–max)"
    echo "- the load generator (\`registry bench\`) runs on the same machine as the server and takes CPU from it"
    echo
    echo "| figure | median | spread | compared to | ratio | target |"
    echo "| --- | --- | --- | --- | --- | --- |"
    printf '%s\n' "${rows[@]}"
    echo
    echo "## Latency (median of the runs' percentiles)"
    echo
    echo "| workload | p50 | p99 | p99.9 |"
    echo "| --- | --- | --- | --- |"
    for w in $workloads; do
        echo "| $w | $(ratio "$(field_median "$w" p50_us)" 1000) ms | $(ratio "$(field_median "$w" p99_us)" 1000) ms | $(ratio "$(field_median "$w" p999_us)" 1000) ms |"
    done
    echo
    echo "## CPU steal during each run"
    echo
    echo "The share of the machine's CPU time the hypervisor gave to other guests while the run lasted (\`/proc/stat\`). A run with much steal measured a smaller machine; the medians above include every run. Over the whole script: $(steal_between "$ticks_at_start" "$(cpu_ticks)")."
    echo
    echo "| workload |$(for i in $(seq 1 "$repeats"); do printf ' run %s |' "$i"; done)"
    echo "| --- |$(for i in $(seq 1 "$repeats"); do printf ' --- |'; done)"
    for w in $workloads; do
        printf '| %s |' "$w"
        for i in $(seq 1 "$repeats"); do
            v="$(json_num "$work/$w-$i.json" cpu_steal_pct || true)"
            if [ -n "$v" ]; then printf ' %.1f %% |' "$v"; else printf ' n/a |'; fi
        done
        echo
    done
    echo
    echo "## Ceilings measured in the same run"
    echo
    echo "| ceiling | median | spread |"
    echo "| --- | --- | --- |"
    for c in "bare sled, batch $commit_batch, 1 key/entry (entries/s)|$sled1" \
             "bare sled, batch $commit_batch, 6 keys/entry (entries/s)|$sled6" \
             "ECDSA P-256 verify, ring, one core (/s)|$ring" \
             "ECDSA P-256 verify, p256 crate, one core (/s)|$rustcrypto" \
             "openssl speed ecdsap256 verify, one core (/s)|$openssl_verify" \
             "signed checkpoint notes (ring, ECDSA P-256), one core (/s)|$checkpoint_sign" \
             "SHA-256, one core (MB/s)|$sha" \
             "empty unary RPC, $concurrency clients (/s)|$empty"; do
        name="${c%%|*}"; v="${c#*|}"; read -r m lo hi <<<"$v"
        echo "| $name | $(fmt "$m") | $(fmt "$lo")–$(fmt "$hi") |"
    done
    echo
    echo "## Scale"
    echo
    echo "- fleet loaded through the bulk path: $keys keys in $(fmt "$load_secs") s ($(fmt "$(ratio "$keys" "$load_secs")") keys/s, each a signed registration plus its confirmation)"
    read -r sm slo shi <<<"$startup"
    echo "- server start-up with $keys keys (until it answers): median $(fmt "$sm") s (spread $(fmt "$slo")–$(fmt "$shi") s); target ≤ 2 s. The first start after the load took $(fmt "$first_start") s: it checks the hash chain and Merkle nodes of the entries the running server had not checked yet (it checks new entries every verify_interval_secs, 10 s by default)"
    echo "- key records read into memory after that start (in the background; lookups read the undecoded projection records meanwhile): $(fmt "$cache_fill") s"
    echo "- database on disk: $(fmt "$(awk -v b="$data_bytes" 'BEGIN { print b / 1048576 }')") MiB after the runs, $(fmt "$(ratio "$data_bytes" "$keys")") bytes per fleet key (includes the registrations of the write workloads)"
    echo "- peak RSS of the server during the mixed workload: $(fmt "$(awk -v k="$rss_kib" 'BEGIN { print k / 1024 }')") MiB"
    echo "- latency of lookups at $concurrency clients: p50 $(ratio "$check_p50" 1000) ms, p99 $(ratio "$check_p99" 1000) ms (empty RPC p99 $(ratio "$empty_p99" 1000) ms); target p99 ≤ 2 ms"
    echo
    echo "## Where the bytes go"
    echo
    echo "\`registry-server usage\` on the data directory after the runs (the server stopped): the memory each"
    echo "structure adds as the server loads it, the live data by kind of record, the files."
    echo
    echo '```text'
    cat "$work/usage.txt"
    echo '```'
    echo
    echo "## Against PostgreSQL"
    echo
    echo "${pg_note}"
    if [ "$(med "$pg_register")" != "nan" ]; then
        echo
        echo "- durable writes: registry ÷ PostgreSQL = $(ratio "$(med "$register")" "$(med "$pg_register")") (the registry also verifies an ECDSA signature per command and appends a second entry, the confirmation); target ≥ 3"
        echo "- bulk validity lookups, like with like (1,000 questions per gRPC call against 1,000 per SQL query, both $concurrency clients): registry ÷ PostgreSQL = $(ratio "$(med "$batch")" "$(med "$pg_batch")"); basic view $(ratio "$(med "$batch_basic")" "$(med "$pg_batch")"); target ≥ 3"
        echo "- single validity lookups: registry ÷ PostgreSQL = $(ratio "$(med "$check")" "$(med "$pg_check")"), for reference. One question per call measures the transport more than the lookup: each gRPC call is an HTTP/2 stream with its own headers, framing and protobuf encoding through tokio and hyper, while pgbench is a C client speaking PostgreSQL's lean wire protocol, and both clients take their CPU from the same two cores as the servers (the empty RPC row above is the ceiling for one call)."
    fi
} >"$out"
say "wrote $out"
