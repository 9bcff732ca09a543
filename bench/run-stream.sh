#!/usr/bin/env bash
# run-stream.sh: figure 2, streaming overhead. The mock streams 200 SSE events
# 5 ms apart; direct, llmtap and nginx requests are interleaved in one open-loop
# run (repeated REPEAT=3 times; medians reported). Reports time-to-first-byte and time-to-last-byte added at p99
# (target <= 0.5 ms). The mock stamps its first and last events with an SSE
# comment `: sent_us=...`, so "last byte added" is the same-run difference of the
# last event's transit time, exact to the microsecond (TTLB itself is ~1.25 s and
# dominated by the mock's timer jitter). Knobs: RATE=40 (per target) DURATION=30s CONNECTIONS=160
# EVENTS=200 DELAY_MS=5 API=openai|anthropic PRIO=nice (rt is opt-in, see common.sh)
PRIO=${PRIO:-nice}
source "$(dirname "$0")/common.sh"
RATE=${RATE:-40}; DURATION=${DURATION:-30s}; CONNECTIONS=${CONNECTIONS:-160}; API=${API:-openai}
EVENTS=${EVENTS:-200}; DELAY_MS=${DELAY_MS:-5}
build
machine
start_all --events "$EVENTS" --event-delay-ms "$DELAY_MS"
targets_for "$API"
cpu_args
OUT=${OUT:-$WORK/stream}
FILES=()
for i in $(seq 1 "${REPEAT:-3}"); do
    wait_quiet
    log "run $i/${REPEAT:-3}, load avg $(cut -d' ' -f1-3 /proc/loadavg)"
    set -x
    "$BIN/loadgen" run --stream "${TARGET_ARGS[@]}" --rate "$RATE" --duration "$DURATION" --warmup 3s \
        --connections "$CONNECTIONS" --body-size 1024 "${CPU_ARGS[@]}" --json-out "$OUT-$i.json"
    { set +x; } 2>/dev/null
    FILES+=("$OUT-$i.json")
done
python3 "$ROOT/bench/summarize.py" stream "${FILES[@]}"

capture_report
