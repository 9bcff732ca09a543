#!/usr/bin/env bash
# cpu-threads.sh: where llmtap's CPU goes, by thread, at a fixed request rate.
# Drives llmtap alone (non-streaming, ~1 KB) and prints user/system CPU seconds
# per llmtap thread from /proc/PID/task/*/stat, plus CPU per request.
# Knobs: RATE=500 DURATION=20s STREAM=0|1
source "$(dirname "$0")/common.sh"
RATE=${RATE:-500}; DURATION=${DURATION:-20s}; NGINX=0
build
machine
start_all
threads() {
    local t
    for t in /proc/"$LLMTAP_PID"/task/*; do
        # comm may contain spaces; fields after ')' : utime is 12th, stime 13th.
        awk -v tid="${t##*/}" -v comm="$(cat "$t/comm")" \
            '{sub(/.*\) /, ""); print tid, comm, $12, $13}' "$t/stat"
    done
}
threads >"$WORK/before"
args=(--url "$LLMTAP_OPENAI" --names llmtap --rate "$RATE" --duration "$DURATION" --warmup 0.5s
    --connections 32 --cpu-pid "llmtap=$LLMTAP_PID" --cpu-pid "mock=$MOCK_PID")
[[ "${STREAM:-0}" == 1 ]] && args+=(--stream --connections 200)
"$BIN/loadgen" run "${args[@]}" | grep -E "CPU|µs|ok  errors|llmtap  "
threads >"$WORK/after"
echo "llmtap CPU by thread over the run (seconds; 10 ms ticks):"
join <(sort "$WORK/before") <(sort "$WORK/after") | awk '
    { u = ($6 - $3) / 100; s = ($7 - $4) / 100; if (u + s > 0) printf "  %-8s %-18s user %6.2f  sys %6.2f\n", $1, $2, u, s; tu += u; ts += s }
    END { printf "  total                       user %6.2f  sys %6.2f\n", tu, ts }'
capture_report
