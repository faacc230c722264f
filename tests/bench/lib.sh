# Shared by the benchmark scripts (source it): release binaries, a registry on a temporary data
# directory on loopback, a fleet of keys, and the cleanup when the script ends.
#
#   bench_binaries [BIN_DIR]          sets server_bin, registry_bin (builds release without DIR)
#   bench_start DATA_DIR [ARGS...]    starts registry-server; sets server_pid, grpc, http
#   bench_fleet KEYS                  registers KEYS keys through `registry bench prepare`
#   bench_stop                        stops the server cleanly (SIGTERM: a snapshot is written)
#
# `work` is a temporary directory removed at exit, with the server.

bench_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/registry-bench.XXXXXX")"
server_pid=""
bench_cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap bench_cleanup EXIT

say() { echo "== $*" >&2; }

bench_binaries() {
    local dir="${1:-}"
    if [ -z "$dir" ]; then
        say "building (release)"
        (cd "$bench_repo" && cargo build --release -q -p registry-server -p registry-client)
        dir="$bench_repo/target/release"
    fi
    server_bin="$dir/registry-server"
    registry_bin="$dir/registry"
    [ -f "$work/admin.pem" ] || "$registry_bin" keygen --out "$work/admin.pem" >/dev/null
}

bench_start() {
    local data="$1"
    shift
    : >"$work/server.log"
    "$server_bin" --data-dir "$data" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
        --admin-key "$work/admin.pub.pem" --log-format json "$@" >"$work/server.log" 2>&1 &
    server_pid=$!
    grpc="" http=""
    for _ in $(seq 1 3000); do
        grpc="$( (grep '"listening for gRPC"' "$work/server.log" || true) | grep -o '"addr":"[0-9.:]*"' | sed 's/"addr":"//; s/"//' || true)"
        http="$( (grep '"serving the web face' "$work/server.log" || true) | grep -o '"local":"[0-9.:]*"' | sed 's/"local":"//; s/"//' || true)"
        [ -n "$grpc" ] && [ -n "$http" ] && return 0
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.02
    done
    cat "$work/server.log" >&2
    return 1
}

bench_fleet() {
    say "a fleet of $1 keys"
    "$registry_bin" --server "http://$grpc" --json bench prepare --keys "$1" \
        --admin-key "$work/admin.pem" >/dev/null
}

bench_stop() {
    kill -TERM "$server_pid"
    wait "$server_pid" || true
    server_pid=""
}
