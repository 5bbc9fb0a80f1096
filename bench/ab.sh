#!/usr/bin/env bash
# Interleaved A/B of server binaries or settings on one already-seeded PostgreSQL database, with
# the CPU each request costs (server alone, and the whole machine), so that changes can be
# compared in one sitting on a noisy machine.
#
#   bench/ab.sh [-d DURATION] [-c CONNS] [-r ROUNDS] [-p POOL] [-l] [-n] NAME=BINARY[:ENV=VALUE,...] ...
#     e.g. bench/ab.sh -r 3 before=/tmp/latchkey-old after=target/release/latchkey
#          bench/ab.sh w4=target/release/latchkey:ROCKET_WORKERS=4 w6=target/release/latchkey:ROCKET_WORKERS=6
#          bench/ab.sh small=target/release/latchkey big=target/release/latchkey:DATABASE_URL=postgres://…/other
#     -l  run a login flood (c=16) beside the /me measurement
#     -n  run a `nice -n 10` busy loop beside the /me measurement (a CPU hog of lower priority)
#
# Needs the database bench/run.sh leaves behind (latchkey_bench, 10,000 cookies derivable).
# Prints per run: `NAME c=16 rps=… p50_ms=… p99_ms=… errors=0 server_us/req=… machine_us/req=…`.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dur=8s conns=16 rounds=1 pool=$(( 4 * $(nproc) )) flood=0 hog=0
while getopts "d:c:r:p:ln" o; do
  case "$o" in
    d) dur=$OPTARG ;; c) conns=$OPTARG ;; r) rounds=$OPTARG ;; p) pool=$OPTARG ;;
    l) flood=1 ;; n) hog=1 ;; *) sed -n 2,15p "$0" >&2; exit 64 ;;
  esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || { sed -n 2,15p "$0" >&2; exit 64; }
pg="${BENCH_PG:-postgres://postgres@127.0.0.1:5432}"
url="$pg/latchkey_bench?sslmode=disable"
port="${BENCH_PORT:-8712}"
base="http://127.0.0.1:$port"
work="$(mktemp -d)"
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT
psql "$url" -Atc "SELECT '__Host-session=' || rtrim(translate(encode(sha256(('bench-' || i)::bytea), 'base64'), '+/', '-_'), '=')
                  FROM generate_series(1, 10000) AS i" > "$work/cookies.txt"
busy() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }   # user nice system irq softirq
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
secs="${dur%s}"

for _ in $(seq 1 "$rounds"); do
  for spec in "$@"; do
    name="${spec%%=*}" rest="${spec#*=}"
    bin="${rest%%:*}" extra=""
    [ "$rest" != "$bin" ] && extra="${rest#*:}"
    # shellcheck disable=SC2086
    # The spec's own settings come last, so they can override these (even DATABASE_URL).
    env DATABASE_URL="$url" ROCKET_PORT="$port" ROCKET_POOL_SIZE="$pool" \
      ROCKET_LOG_LEVEL=off RUST_LOG=warn ${extra//,/ } "$bin" > "$work/server.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do curl -fs "$base/api/health" >/dev/null 2>&1 && break; sleep 0.1; done
    wrk -t1 -c "$conns" -d 3s -s "$here/wrk.lua" "$base/api/auth/me" -- me "$work/cookies.txt" >/dev/null
    side=""
    if [ "$flood" = 1 ]; then
      wrk -t1 -c 16 -d "$(( secs + 3 ))s" -s "$here/wrk.lua" "$base/api/auth/login" -- login 10000 >/dev/null &
      side=$!; sleep 1
    elif [ "$hog" = 1 ]; then
      nice -n 10 timeout "$(( secs + 2 ))" sh -c 'while :; do :; done' &
      side=$!
    fi
    s0=$(ticks "$pid") m0=$(busy)
    line="$(wrk -t1 -c "$conns" -d "$dur" --timeout 10s -s "$here/wrk.lua" "$base/api/auth/me" -- me "$work/cookies.txt" | grep '^rps=')"
    s1=$(ticks "$pid") m1=$(busy)
    [ -n "$side" ] && wait "$side" 2>/dev/null || true
    rps="$(sed -nE 's/^rps=([0-9]+).*/\1/p' <<<"$line")"
    awk -v name="$name" -v c="$conns" -v line="$line" -v s=$((s1 - s0)) -v m=$((m1 - m0)) -v rps="$rps" -v secs="$secs" \
      'BEGIN { n = rps * secs; printf "%s c=%s %s server_us/req=%.1f machine_us/req=%.1f\n", name, c, line, s * 10000 / n, m * 10000 / n }'
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
  done
done
