#!/usr/bin/env bash
# profile-callgrind.sh: runs llmtap under valgrind's callgrind while loadgen
# drives it at a modest fixed rate, then prints the top functions by inclusive
# and self cost (instructions). Used because `perf stat -e instructions` is not
# supported on the benchmark VM. Knobs: RATE=200 DURATION=20s STREAM=0|1
# OUT=file (callgrind output is kept there).
source "$(dirname "$0")/common.sh"
RATE=${RATE:-200}; DURATION=${DURATION:-20s}; STREAM=${STREAM:-0}
command -v valgrind >/dev/null || apt-get install -y valgrind >&2
build
machine
start_mock
BIN_REAL="$BIN/llmtap"
BIN="$WORK/wrap"; mkdir -p "$BIN"
OUT=${OUT:-$WORK/callgrind.out}
cat >"$BIN/llmtap" <<WRAP
#!/bin/sh
exec valgrind --tool=callgrind --callgrind-out-file=$OUT --dump-instr=no "$BIN_REAL" "\$@"
WRAP
chmod +x "$BIN/llmtap"
start_llmtap
BIN="$ROOT/target/release"
sleep 2
args=(--url "$LLMTAP_OPENAI" --names llmtap --rate "$RATE" --duration "$DURATION" --warmup 2s --connections 16 --timeout 60s)
[[ "$STREAM" == 1 ]] && args+=(--stream --connections 64)
"$BIN/loadgen" run "${args[@]}"
capture_report
kill -INT "$LLMTAP_PID"; wait "$LLMTAP_PID" 2>/dev/null || true
echo "== inclusive cost (top 45)"
callgrind_annotate --inclusive=yes "$OUT" 2>/dev/null | head -60
echo "== self cost (top 45)"
callgrind_annotate "$OUT" 2>/dev/null | head -60
