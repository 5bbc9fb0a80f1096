#!/usr/bin/env bash
# latchkey load benchmark: builds the release binary, creates a fresh database, seeds users and
# sessions (precomputed rows, not Argon2 logins), starts the server on 127.0.0.1 and runs wrk.
#
#   bench/run.sh [-b postgres|sqlite] [-s SESSIONS] [-u USERS] [-d DURATION] [-c "16 64"] [-l] [-f] [-B]
#                [-P] [-F CONNS] [-q LOGIN_QUEUE_MAX] [-V] [-p POOL] [-L RUST_LOG]
#     -b  backend (default postgres)          -s  live sessions in the table (default 100000)
#     -u  accounts (default 10000)            -d  wrk duration per run (default 20s)
#     -c  connection counts for /me           -l  also measure POST /api/auth/login (c=16)
#     -f  also measure /me (c=16) during a login flood (bench/flood.py, -F connections, default 16)
#     -B  skip cargo build
#     -P  PostgreSQL through PgBouncer in transaction mode (started here, as the postgres user,
#         with pg_statement_cache = false)
#     -q  login_queue_max for the server (default: the server's own, 256)
#     -R  flood clients honour Retry-After on a 503 (default: they retry at once)
#     -p  pool_size (default: the server's own default, as a user gets it)
#     -L  RUST_LOG for the server (default: unset, the server's own `info`, access lines included)
#     -V  also measure GET /api/auth/verify (forward auth) at each connection count
#
# LATCHKEY_BIN runs another build (say, the one before a change) instead of target/release.
# Prints one line per measurement:
#   me c=16 rps=… p50_ms=… p99_ms=… errors=0 rss_mb=…
# wrk draws cookies at random from 10,000 sessions. PostgreSQL is reached as
# postgres@127.0.0.1:5432 (override with BENCH_PG); the database latchkey_bench is recreated.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
backend=postgres sessions=100000 users=10000 dur=20s conns="16 64" login=0 flood=0 build=1
bouncer=0 flood_conns=16 queue_max="" polite="" pool="" rust_log="" verify=0
while getopts "b:s:u:d:c:p:L:lfBPF:q:RV" o; do
  case "$o" in
    b) backend=$OPTARG ;; s) sessions=$OPTARG ;; u) users=$OPTARG ;; d) dur=$OPTARG ;;
    c) conns=$OPTARG ;; p) pool=$OPTARG ;; L) rust_log=$OPTARG ;; V) verify=1 ;;
    l) login=1 ;; f) flood=1 ;; B) build=0 ;;
    P) bouncer=1 ;; F) flood_conns=$OPTARG ;; q) queue_max=$OPTARG ;; R) polite=polite ;;
    *) sed -n 2,22p "$0" >&2; exit 64 ;;
  esac
done
command -v wrk >/dev/null || { echo "wrk not found: apt-get install -y wrk" >&2; exit 69; }
pg="${BENCH_PG:-postgres://postgres@127.0.0.1:5432}"
port="${BENCH_PORT:-8711}"
base="http://127.0.0.1:$port"
work="$(mktemp -d)"
cookie_name="__Host-session"   # release profile default
server_pid="" bouncer_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null
  [ -n "$bouncer_pid" ] && kill "$bouncer_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

[ "$build" = 1 ] && (cd "$root" && cargo build --release --quiet)

case "$backend" in
  postgres)
    psql "$pg/postgres" -qc "DROP DATABASE IF EXISTS latchkey_bench WITH (FORCE)" -c "CREATE DATABASE latchkey_bench" >/dev/null
    [ -n "${BENCH_PG_ASYNC:-}" ] && psql "$pg/postgres" -qc "ALTER DATABASE latchkey_bench SET synchronous_commit = off"
    # Plain TCP on loopback, as the peers use (node-postgres and sqlx without TLS); libpq's
    # default sslmode=prefer would encrypt every message to 127.0.0.1 (about 20% of /me's CPU).
    url="$pg/latchkey_bench?sslmode=disable" ;;
  sqlite) url="sqlite://$work/bench.db" ;;
  *) echo "unknown backend $backend" >&2; exit 64 ;;
esac

extra_env=()
[ -n "$queue_max" ] && extra_env+=("ROCKET_LOGIN_QUEUE_MAX=$queue_max")
[ -n "$pool" ] && extra_env+=("ROCKET_POOL_SIZE=$pool")
[ -n "$rust_log" ] && extra_env+=("RUST_LOG=$rust_log")
start_server() {
  (cd "$work" && exec env DATABASE_URL="$url" ROCKET_PORT="$port" "${extra_env[@]}" \
    "${LATCHKEY_BIN:-$root/target/release/latchkey}" > "$work/server.log" 2>&1) &
  server_pid=$!
  for _ in $(seq 1 100); do curl -fs "$base/api/health" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "server did not start" >&2; exit 1
}
start_server

# One real registration gives the Argon2id hash of "password123" that every seeded account shares.
curl -fs -H 'content-type: application/json' \
  -d '{"email":"user0@example.com","name":"User 0","password":"password123"}' "$base/api/auth/register" >/dev/null

t0=$(date +%s.%N)
if [ "$backend" = postgres ]; then
  hash="$(psql "$url" -Atc "SELECT password_hash FROM users WHERE email = 'user0@example.com'")"
  bulk=$(( sessions >= 1000000 ))
  # Millions of rows load much faster without the indexes; they are rebuilt right after.
  [ "$bulk" = 1 ] && psql "$url" -qc "ALTER TABLE sessions DROP CONSTRAINT sessions_token_hash_key" \
    -c "DROP INDEX sessions_user_id_idx" -c "DROP INDEX sessions_expires_at_idx"
  psql "$url" -q -v users="$users" -v sessions="$sessions" -v expired=0 -v hash="$hash" -f "$here/seed_pg.sql"
  [ "$bulk" = 1 ] && psql "$url" -qc "ALTER TABLE sessions ADD CONSTRAINT sessions_token_hash_key UNIQUE (token_hash)" \
    -c "CREATE INDEX sessions_user_id_idx ON sessions (user_id)" -c "CREATE INDEX sessions_expires_at_idx ON sessions (expires_at)" \
    -c "ANALYZE sessions"
  psql "$url" -Atc "SELECT '$cookie_name=' || rtrim(translate(encode(sha256(('bench-' || i)::bytea), 'base64'), '+/', '-_'), '=')
                    FROM generate_series(1, LEAST(10000, $sessions)) AS i" > "$work/cookies.txt"
else
  hash="$(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute(\"SELECT password_hash FROM users WHERE email='user0@example.com'\").fetchone()[0])" "$work/bench.db")"
  python3 "$here/seed_sqlite.py" "$work/bench.db" "$users" "$sessions" "$hash" "$cookie_name" "$work/cookies.txt" 10000
fi
echo "# seeded $sessions sessions for $users users on $backend in $(echo "$(date +%s.%N) - $t0" | bc) s" >&2

if [ "$bouncer" = 1 ]; then
  # PgBouncer in transaction mode in front of the same database, as hosted poolers run it;
  # the server restarts through it.
  [ "$backend" = postgres ] || { echo "-P needs -b postgres" >&2; exit 64; }
  command -v pgbouncer >/dev/null || { echo "pgbouncer not found: apt-get install -y pgbouncer" >&2; exit 69; }
  chown postgres "$work"
  bport=$(( port + 1 ))
  printf '"postgres" ""\n' > "$work/users.txt"
  cat > "$work/pgbouncer.ini" <<INI
[databases]
* = host=127.0.0.1 port=5432
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $bport
unix_socket_dir =
auth_type = trust
auth_file = $work/users.txt
pool_mode = transaction
default_pool_size = ${pool:-16}
max_client_conn = 1000
ignore_startup_parameters = extra_float_digits
logfile = $work/pgbouncer.log
INI
  runuser -u postgres -- pgbouncer "$work/pgbouncer.ini" & bouncer_pid=$!
  for _ in $(seq 1 50); do (echo > "/dev/tcp/127.0.0.1/$bport") 2>/dev/null && break; sleep 0.1; done
  kill "$server_pid"; wait "$server_pid" 2>/dev/null || true
  url="postgres://postgres@127.0.0.1:$bport/latchkey_bench"
  extra_env+=("ROCKET_PG_STATEMENT_CACHE=false")
  start_server
fi
via=$([ "$bouncer" = 1 ] && echo pgbouncer || echo direct)

rss_mb() { awk '/VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$server_pid/status"; }
peak_mb() { awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$server_pid/status"; }
wrk_run() { # CONNS DURATION URL MODE ARG
  wrk -t1 -c "$1" -d "$2" --timeout 10s -s "$here/wrk.lua" "$3" -- "$4" "$5" | grep '^rps='
}

for c in $conns; do
  wrk_run "$c" 5s "$base/api/auth/me" me "$work/cookies.txt" >/dev/null   # warm-up
  line="$(wrk_run "$c" "$dur" "$base/api/auth/me" me "$work/cookies.txt")"
  echo "me backend=$backend via=$via sessions=$sessions pool=${pool:-default} c=$c $line rss_mb=$(rss_mb) peak_rss_mb=$(peak_mb)"
  if [ "$verify" = 1 ]; then
    line="$(wrk_run "$c" "$dur" "$base/api/auth/verify" me "$work/cookies.txt")"
    echo "verify backend=$backend via=$via sessions=$sessions pool=${pool:-default} c=$c $line rss_mb=$(rss_mb) peak_rss_mb=$(peak_mb)"
  fi
done

if [ "$login" = 1 ]; then
  line="$(wrk_run 16 "$dur" "$base/api/auth/login" login "$users")"
  echo "login backend=$backend c=16 $line rss_mb=$(rss_mb) peak_rss_mb=$(peak_mb)"
fi

if [ "$flood" = 1 ]; then
  # The flood comes from one address here (a real one comes from many): lift the per-IP
  # budget, which would otherwise turn most of it into 429s.
  kill "$server_pid"; wait "$server_pid" 2>/dev/null || true
  extra_env+=("ROCKET_IP_MAX_FAILURES=1000000")
  start_server
  python3 "$here/flood.py" "$base" "$users" "$flood_conns" "${dur%s}" $polite > "$work/flood.txt" &
  flood_pid=$!
  sleep 1
  line="$(wrk_run 16 "$(( ${dur%s} - 2 ))s" "$base/api/auth/me" me "$work/cookies.txt")"
  wait "$flood_pid"
  echo "me-during-login-flood backend=$backend queue_max=${queue_max:-256} c=16 $line $(cat "$work/flood.txt") peak_rss_mb=$(peak_mb)"
fi
