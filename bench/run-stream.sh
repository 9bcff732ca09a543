#!/usr/bin/env bash
# run-stream.sh: figure 2, streaming overhead. The mock streams 200 SSE events
# 5 ms apart; direct, llmtap and nginx requests are interleaved in one open-loop
# run. Reports time-to-first-byte and time-to-last-byte added at p99
# (target <= 0.5 ms). Knobs: RATE=40 (per target) DURATION=30s CONNECTIONS=160
# EVENTS=200 DELAY_MS=5 API=openai|anthropic PRIO=rt (see common.sh)
PRIO=${PRIO:-rt}
source "$(dirname "$0")/common.sh"
RATE=${RATE:-40}; DURATION=${DURATION:-30s}; CONNECTIONS=${CONNECTIONS:-160}; API=${API:-openai}
EVENTS=${EVENTS:-200}; DELAY_MS=${DELAY_MS:-5}
build
machine
start_all --events "$EVENTS" --event-delay-ms "$DELAY_MS"
targets_for "$API"
OUT=${OUT:-$WORK/stream.json}
set -x
"$BIN/loadgen" run --stream "${TARGET_ARGS[@]}" --rate "$RATE" --duration "$DURATION" --warmup 3s \
    --connections "$CONNECTIONS" --body-size 1024 --json-out "$OUT"
{ set +x; } 2>/dev/null
python3 "$ROOT/bench/summarize.py" stream "$OUT"

capture_report
