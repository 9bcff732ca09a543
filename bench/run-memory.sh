#!/usr/bin/env bash
# run-memory.sh: figure 5, resident memory of llmtap while it relays 1,000
# concurrent slow streams (the mock sends one SSE event every 50 ms). RSS is read
# from /proc/PID/status (VmRSS) before and during the hold; nginx is measured
# the same way in a second pass for scale. Target: llmtap < 200 MB.
# Knobs: STREAMS=1000 HOLD=20s EVENT_DELAY_MS=50
source "$(dirname "$0")/common.sh"
STREAMS=${STREAMS:-1000}; HOLD=${HOLD:-20s}; EVENT_DELAY_MS=${EVENT_DELAY_MS:-50}
build
machine
start_all
OUT=${OUT:-$WORK/memory}
if [[ "$LLMTAP" == 1 ]]; then
    # Warm llmtap up a little first so the idle figure includes its steady-state pools.
    "$BIN/loadgen" run --url "$LLMTAP_OPENAI" --rate 200 --duration 2s --warmup 1s --connections 8 >/dev/null
    set -x
    "$BIN/loadgen" slow-streams --url "$LLMTAP_OPENAI" --streams "$STREAMS" --hold "$HOLD" \
        --events 100000 --event-delay-ms "$EVENT_DELAY_MS" --pid "llmtap=$LLMTAP_PID" --pid "mock=$MOCK_PID" \
        --json-out "$OUT-llmtap.json"
    { set +x; } 2>/dev/null
    python3 "$ROOT/bench/summarize.py" memory "$OUT-llmtap.json" llmtap
fi
if [[ "$NGINX" == 1 ]]; then
    set -x
    "$BIN/loadgen" slow-streams --url "$NGINX_OPENAI" --streams "$STREAMS" --hold "$HOLD" \
        --events 100000 --event-delay-ms "$EVENT_DELAY_MS" --pid "nginx-master=$NGINX_PID" \
        $(pgrep -P "$NGINX_PID" | sed 's/^/--pid nginx-worker=/') --json-out "$OUT-nginx.json"
    { set +x; } 2>/dev/null
fi

capture_report
