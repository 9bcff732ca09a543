#!/usr/bin/env bash
# run-latency.sh: figure 1, latency added by llmtap at a fixed 500 req/s,
# non-streaming, ~1 KB request and response. Requests to direct-to-mock,
# through llmtap and through nginx are interleaved in ONE open-loop run, so the
# figures are same-run differences. Targets: llmtap-direct p50 <= 0.15 ms,
# p99 <= 0.5 ms. The run is repeated REPEAT times and the median difference is
# reported. Knobs: RATE=500 DURATION=30s CONNECTIONS=32 REPEAT=3 API=openai|anthropic
# PRIO=nice (PRIO=rt is opt-in, see common.sh)
PRIO=${PRIO:-nice}
source "$(dirname "$0")/common.sh"
RATE=${RATE:-500}; DURATION=${DURATION:-30s}; CONNECTIONS=${CONNECTIONS:-32}; API=${API:-openai}
build
machine
start_all --body-size 1024
targets_for "$API"
cpu_args
OUT=${OUT:-$WORK/latency}
FILES=()
for i in $(seq 1 "${REPEAT:-3}"); do
    wait_quiet
    log "run $i/${REPEAT:-3}, load avg $(cut -d' ' -f1-3 /proc/loadavg)"
    set -x
    "$BIN/loadgen" run "${TARGET_ARGS[@]}" --rate "$RATE" --duration "$DURATION" --warmup 3s \
        --connections "$CONNECTIONS" --body-size 1024 "${CPU_ARGS[@]}" --json-out "$OUT-$i.json"
    { set +x; } 2>/dev/null
    FILES+=("$OUT-$i.json")
done
python3 "$ROOT/bench/summarize.py" latency "${FILES[@]}"

capture_report
