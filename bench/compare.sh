#!/usr/bin/env bash
# Side-by-side run: latchkey's /me and login beside the peer stores, all on this machine in one
# session, so that ratios are meaningful (absolute numbers here are noisy).
#
#   bench/compare.sh PEERS_DIR [DURATION]
#
# PEERS_DIR is a writable copy of the shared peers folder, already set up as its README says
# (npm ci, both cargo builds, ./seed.sh; Redis on 127.0.0.1:6379 for the Redis variants). The
# peers are started here and stopped at the end. latchkey runs with its defaults (pool, workers,
# logging) on 1,000 sessions. Output: one line per measurement, then ratios (latchkey's /me as
# the mean of its two runs).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
peers="$(cd "${1:?usage: bench/compare.sh PEERS_DIR [DURATION]}" && pwd)"
dur="${2:-20s}"
out="$(mktemp)"
trap '"$peers/stop_servers.sh" >/dev/null 2>&1 || true; rm -f "$out"' EXIT

# latchkey runs before and after the peers (A B A): this machine's speed drifts over minutes,
# and the ratios use the mean of the two latchkey runs.
"$here/run.sh" -B -s 1000 -u 1000 -d "$dur" -c "16 64" -V | tee -a "$out"

"$peers/start_servers.sh" >&2
measure() { # label command...
  local line
  line="$("${@:2}" 2>/dev/null | grep -E 'rps=|tps=' | tail -1)" || line="FAILED"
  echo "$1 $line" | tee -a "$out"
}
for c in 16 64; do
  measure "express c=$c" "$peers/bench.sh" -c "$c" -d "$dur" http://127.0.0.1:8000 "$peers/cookies/express.txt"
  measure "axum c=$c" "$peers/bench.sh" -c "$c" -d "$dur" http://127.0.0.1:8002 "$peers/cookies/axum.txt"
  measure "express-redis c=$c" "$peers/bench.sh" -c "$c" -d "$dur" http://127.0.0.1:8004 "$peers/cookies/express-redis.txt"
  measure "axum-redis c=$c" "$peers/bench.sh" -c "$c" -d "$dur" http://127.0.0.1:8005 "$peers/cookies/axum-redis.txt"
  measure "rocket-hello c=$c" "$peers/bench.sh" -c "$c" -d "$dur" http://127.0.0.1:8001 "$peers/cookies/express.txt"
  measure "pgbench-pk_join c=$c" "$peers/pgbench/run_pgbench.sh" pk_join "$c"
done
measure "express login c=16" "$peers/bench.sh" -m login -c 16 -d "$dur" http://127.0.0.1:8000
measure "axum login c=16" "$peers/bench.sh" -m login -c 16 -d "$dur" http://127.0.0.1:8002
"$peers/stop_servers.sh" >/dev/null 2>&1 || true

"$here/run.sh" -B -s 1000 -u 1000 -d "$dur" -c "16 64" -V -l -f | tee -a "$out"

rps() { grep -E "^$1" "$out" | sed -nE 's/.*(rps|tps)=([0-9.]+).*/\2/p' | head -1; }
mean() { grep -E "$1" "$out" | sed -nE 's/.*rps=([0-9]+).*/\1/p' | awk '{ s += $1; n++ } END { if (n) printf "%.0f", s / n }'; }
echo "--- ratios (latchkey /me on PostgreSQL ÷ peer)"
for c in 16 64; do
  ours="$(mean "^me backend=postgres .* c=$c ")"
  for peer in express axum express-redis axum-redis rocket-hello pgbench-pk_join; do
    theirs="$(rps "$peer c=$c")"
    [ -n "$ours" ] && [ -n "$theirs" ] && awk -v a="$ours" -v b="$theirs" -v p="$peer" -v c="$c" \
      'BEGIN { printf "c=%s vs %-16s %.2fx\n", c, p, a / b }'
  done
  verify="$(mean "^verify backend=postgres .* c=$c ")"
  [ -n "$ours" ] && [ -n "$verify" ] && awk -v a="$verify" -v b="$ours" -v c="$c" \
    'BEGIN { printf "c=%s verify ÷ me         %.2fx\n", c, a / b }'
done
