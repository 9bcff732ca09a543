#!/usr/bin/env bash
# run-postgres.sh: the PostgreSQL write figures of BENCHMARKS.md (issue 17).
#
#   bench/run-postgres.sh [CALLS] [BODY_BYTES]      # defaults: 50000 calls of 1 KB
#
# Starts a throwaway PostgreSQL (bench/postgres.sh), then, in one run: the writer
# alone on sled (figure 4, for comparison), one instance's writer on PostgreSQL,
# and three instances' writers at once on the same database (three processes, each
# its own capture log, writer and pool; distinct call text). Each writer takes its
# calls through the whole capture path (log, parse, price, store), as
# `llmtap dev writer-bench` does. Prints calls/s and bytes per call.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/llmtap}
CALLS=${1:-50000}
BODY=${2:-1024}
WORK=$(mktemp -d /tmp/llmtap-pgbench.XXXXXX)
chmod 755 "$WORK" # the server runs as `postgres`
PG="$WORK/pg"
trap '"$ROOT/bench/postgres.sh" stop "$PG" || true; rm -rf "$WORK"' EXIT

url=$("$ROOT/bench/postgres.sh" start "$PG" 55433)
config() { printf '[store]\nurl = "%s"\n' "$url" >"$WORK/$1.toml"; echo "$WORK/$1.toml"; }
psql_() { psql "$url" -qtAc "$1"; }

echo "== sled, one writer"
"$BIN" dev writer-bench --data-dir "$WORK/sled" --calls "$CALLS" --body-bytes "$BODY" | head -2

echo "== PostgreSQL, one instance"
"$BIN" dev writer-bench --data-dir "$WORK/one" --calls "$CALLS" --body-bytes "$BODY" \
    --config "$(config one)" | head -2
echo "database size after one instance: $(psql_ "SELECT pg_database_size(current_database())") B"

psql_ "TRUNCATE calls, call_content, chunks, blobs, invocations, invocation_models, sessions, rollups, ratelimits, ratelimit_points, call_facet_days"
echo "== PostgreSQL, three instances at once ($CALLS calls each)"
start=$(date +%s.%N)
for i in 0 1 2; do
    "$BIN" dev writer-bench --data-dir "$WORK/three-$i" --calls "$CALLS" --body-bytes "$BODY" \
        --first-call $((i * CALLS)) --config "$(config "three-$i")" >"$WORK/three-$i.out" &
done
wait
end=$(date +%s.%N)
for i in 0 1 2; do echo "instance $i: $(sed -n 2p "$WORK/three-$i.out")"; done
stored=$(psql_ "SELECT count(*) FROM calls")
echo "three instances: $stored calls stored in $(echo "$end - $start" | bc) s wall = $(echo "$stored / ($end - $start)" | bc) calls/s together"
