#!/usr/bin/env bash
# log-bound.sh: how many bytes the capture log holds under steady traffic and after
# it stops (issue 39: applied calls leave the log within seconds). llmtap alone in
# front of the mock, ~1 KB OpenAI calls at RATE for DURATION, the journal's segment
# bytes sampled every 2 s, then QUIET seconds without traffic. Not a timing figure:
# the bytes depend on the rate and the writer keeping up, not on the machine's load.
# Knobs: RATE=200 DURATION=30s QUIET=6 LLMTAP_BIN=path/to/llmtap (default: this tree's)
source "$(dirname "$0")/common.sh"
RATE=${RATE:-200}; DURATION=${DURATION:-30s}; QUIET=${QUIET:-6}
NGINX=0
build
machine
start_mock --body-size 1024
start_llmtap
journal="$WORK/llmtap-data/journal"
segments() { find "$journal" -name '*.log' -printf '%s\n' | awk '{s+=$1} END {print s+0}'; }
"$BIN/loadgen" run --url "$LLMTAP_OPENAI" --rate "$RATE" --duration "$DURATION" --warmup 0s \
    --connections 8 --body-size 1024 >"$WORK/loadgen.out" 2>&1 &
load=$!
start=$(date +%s)
while kill -0 "$load" 2>/dev/null; do
    echo "t=$(( $(date +%s) - start ))s under load: capture log $(segments) B in $(find "$journal" -name '*.log' | wc -l) segment(s)"
    sleep 2
done
wait "$load" || true
grep -E "ok|error" "$WORK/loadgen.out" | head -3
for i in $(seq 1 "$QUIET"); do
    sleep 1
    echo "quiet +${i}s: capture log $(segments) B"
done
echo "data_dir: $(du -sb "$WORK/llmtap-data" | cut -f1) B, of which capture log $(du -sb "$journal" | cut -f1) B"
