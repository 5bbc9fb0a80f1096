#!/usr/bin/env bash
# Cleanup benchmark: fills a fresh PostgreSQL database with EXPIRED (default 1,000,000) expired
# and ACTIVE (default 100,000) live sessions, then times `latchkey-worker --once`, which prints
# the number of statements and the longest one.
#
#   bench/cleanup.sh [-e EXPIRED] [-a ACTIVE] [-n BATCH] [-B]   (-B: skip cargo build)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
expired=1000000 active=100000 batch=10000 build=1
while getopts "e:a:n:B" o; do
  case "$o" in e) expired=$OPTARG ;; a) active=$OPTARG ;; n) batch=$OPTARG ;; B) build=0 ;; *) sed -n 2,7p "$0" >&2; exit 64 ;; esac
done
pg="${BENCH_PG:-postgres://postgres@127.0.0.1:5432}"
url="$pg/latchkey_cleanup_bench"
[ "$build" = 1 ] && (cd "$root" && cargo build --release --quiet)
psql "$pg/postgres" -qc "DROP DATABASE IF EXISTS latchkey_cleanup_bench WITH (FORCE)" -c "CREATE DATABASE latchkey_cleanup_bench" >/dev/null
DATABASE_URL="$url" "$root/target/release/latchkey-worker" migrate
t0=$(date +%s.%N)
psql "$url" -q -v users=10000 -v sessions="$active" -v expired="$expired" -v hash='x' -f "$here/seed_pg.sql"
echo "# seeded $expired expired + $active active sessions in $(echo "$(date +%s.%N) - $t0" | bc) s" >&2
# What /api/admin/session-stats asks, timed on the full table.
psql "$url" -qAt <<'SQL'
\timing on
SELECT count(*) FROM sessions;
SELECT count(*) FROM sessions WHERE expires_at > now() AT TIME ZONE 'UTC';
SELECT count(DISTINCT user_id) FROM sessions WHERE expires_at > now() AT TIME ZONE 'UTC';
SQL
t0=$(date +%s.%N)
DATABASE_URL="$url" ROCKET_CLEANUP_BATCH_SIZE="$batch" RUST_LOG=warn "$root/target/release/latchkey-worker" --once
echo "cleanup expired=$expired active=$active batch=$batch wall_s=$(echo "$(date +%s.%N) - $t0" | bc)"
left="$(psql "$url" -Atc "SELECT count(*) FROM sessions")"
echo "# sessions left: $left (expected $active)"
psql "$pg/postgres" -qc "DROP DATABASE latchkey_cleanup_bench WITH (FORCE)"
