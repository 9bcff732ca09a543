#!/usr/bin/env bash
# ab.sh: A/B two llmtap builds (or one build under two environments) in ONE
# open-loop run, interleaved with direct-to-mock and nginx, so a change's effect
# on added latency is a same-run difference. Prints each run's latency table.
# Knobs: A_BIN B_BIN (llmtap binaries; default the release build) A_ENV B_ENV
# ("NAME=value" set for that instance only) RATE=10 DURATION=20s REPEAT=3
# Example: A_BIN=/tmp/llmtap-before B_BIN=target/release/llmtap bench/ab.sh
source "$(dirname "$0")/common.sh"
RATE=${RATE:-10}; DURATION=${DURATION:-20s}; LLMTAP=0
A_BIN=${A_BIN:-$BIN/llmtap}; B_BIN=${B_BIN:-$BIN/llmtap}
build
machine
start_all --body-size 1024
( [[ -n "${A_ENV:-}" ]] && export "${A_ENV?}"; LLMTAP_BIN=$A_BIN launch_llmtap A ""; echo "$L_OPENAI" >"$WORK/a.url"; wait ) &
( [[ -n "${B_ENV:-}" ]] && export "${B_ENV?}"; LLMTAP_BIN=$B_BIN launch_llmtap B ""; echo "$L_OPENAI" >"$WORK/b.url"; wait ) &
for _ in $(seq 1 100); do [[ -s "$WORK/a.url" && -s "$WORK/b.url" ]] && break; sleep 0.1; done
args=(--url "$DIRECT_OPENAI" --compare "$(cat "$WORK/a.url")" --compare "$(cat "$WORK/b.url")")
names=direct,A,B
if [[ "$NGINX" == 1 ]]; then args+=(--compare "$NGINX_OPENAI"); names+=,nginx; fi
for i in $(seq 1 "${REPEAT:-3}"); do
    wait_quiet
    log "run $i/${REPEAT:-3}: A=$A_BIN ${A_ENV:-} B=$B_BIN ${B_ENV:-}"
    "$BIN/loadgen" run "${args[@]}" --names "$names" --rate "$RATE" --duration "$DURATION" \
        --warmup 2s --connections 4 --body-size 1024 | sed -n '/latency, from intended/,/service time/p' | grep -v "^service"
done
pkill -f "$WORK/A.toml" || true
pkill -f "$WORK/B.toml" || true
