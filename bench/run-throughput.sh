#!/usr/bin/env bash
# run-throughput.sh: figure 3, throughput. For each target in turn (direct,
# llmtap with capture on, nginx) finds the highest open-loop rate with p99 < 10 ms,
# no errors and >= 97 % of the offered rate achieved. Target: llmtap >= 15,000
# req/s. Knobs: STEP=6s CONNECTIONS=64 START=2000 P99_MS=10
source "$(dirname "$0")/common.sh"
STEP=${STEP:-6s}; CONNECTIONS=${CONNECTIONS:-64}; START=${START:-2000}; P99_MS=${P99_MS:-10}
build
machine
start_all --body-size 1024
targets_for "${API:-openai}"
OUT=${OUT:-$WORK/throughput.json}
wait_quiet
log "load avg $(cut -d' ' -f1-3 /proc/loadavg)"
set -x
"$BIN/loadgen" max-rate "${TARGET_ARGS[@]}" --start-rate "$START" --duration "$STEP" --warmup 1s \
    --connections "$CONNECTIONS" --body-size 1024 --p99-limit-ms "$P99_MS" --steps 5 --json-out "$OUT"
{ set +x; } 2>/dev/null
python3 "$ROOT/bench/summarize.py" throughput "$OUT"

capture_report
