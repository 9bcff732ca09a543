#!/usr/bin/env bash
# common.sh: shared helpers sourced by the bench/run-*.sh figure scripts:
# builds the release binaries, starts mock-provider, llmtap and nginx on free
# local ports, and stops everything it started on exit.
#
# Environment knobs: LLMTAP=0 skips llmtap (harness-only runs); NGINX=0 skips
# nginx; OTEL=1 adds a second llmtap with OpenTelemetry export on (target
# "llmtap_otel"), exporting to a second mock-provider acting as the OTLP sink;
# CAPTURE=off runs llmtap with capture mostly bypassed (for attribution
# only; the targets are about capture on); LLMTAP_TOML='...' appends TOML to
# llmtap's config (e.g. $'[store]\nflush_every_ms = 1000' to try a setting); KEEP=1 keeps the temporary work directory; NO_BUILD=1 skips cargo;
# PRIO=nice|rt|none (default nice): after the build, the benchmark processes run either at
# SCHED_FIFO priority 10 (rt; used for the low-CPU latency/stream figures so other
# users' compilers cannot delay wake-ups) or at nice -20 (nice, NICE=...; used for the CPU-
# saturating throughput figure, so other users are not starved).
# WARNING: with PRIO=rt a process that busy-waits starves the whole machine, this
# script included (llmtap at main f0b688a spun at 190 % CPU under SCHED_FIFO and
# never started listening; the run had to be killed by hand). Use rt only while
# watching, on builds known to start under it.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN="$ROOT/target/release"
WORK=$(mktemp -d /tmp/llmtap-bench.XXXXXX)
PIDS=()
LLMTAP=${LLMTAP:-1}
NGINX=${NGINX:-1}

cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    if [[ "${KEEP:-0}" != 1 ]]; then rm -rf "$WORK"; else echo "kept $WORK" >&2; fi
}
trap cleanup EXIT

log() { echo "== $*" >&2; }

build() {
    [[ "${NO_BUILD:-0}" == 1 ]] && return 0
    local pkgs=(-p llmtap-bench)
    [[ "$LLMTAP" == 1 ]] && pkgs+=(-p llmtap)
    (cd "$ROOT" && cargo build --release "${pkgs[@]}" >&2)
}

# Raise this shell's priority so every process it starts (mock, llmtap, nginx,
# loadgen) inherits it; compilers run by other users then disturb less.
prioritise() {
    case "${PRIO:-nice}" in
    rt) chrt -f -p 10 $$ >/dev/null 2>&1 || echo "note: chrt failed; normal priority" >&2 ;;
    nice) renice -n "${NICE:--20}" -p $$ >/dev/null 2>&1 || echo "note: renice failed; normal priority" >&2 ;;
    *) ;;
    esac
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() { # wait_port PORT PID
    local i
    for i in $(seq 1 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        kill -0 "$2" 2>/dev/null || { echo "process $2 exited before listening on $1" >&2; return 1; }
        sleep 0.05
    done
    echo "timed out waiting for port $1" >&2
    return 1
}

machine() {
    echo "machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(free -g | awk '/Mem:/{print $2}') GiB RAM, $(uname -sr), load avg $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "priority: PRIO=${PRIO:-nice} (rt = SCHED_FIFO 10, nice = nice ${NICE:--20}); other users' load is not controlled"
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)  git: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
}

# start_mock [mock-provider flags...] -> MOCK_ADDR, MOCK_PID
start_mock() {
    "$BIN/mock-provider" --listen 127.0.0.1:0 "$@" >"$WORK/mock.out" 2>"$WORK/mock.err" &
    MOCK_PID=$!
    PIDS+=("$MOCK_PID")
    local i
    for i in $(seq 1 100); do
        MOCK_ADDR=$(head -n1 "$WORK/mock.out" 2>/dev/null || true)
        [[ -n "$MOCK_ADDR" ]] && break
        sleep 0.05
    done
    [[ -n "$MOCK_ADDR" ]] || { cat "$WORK/mock.err" >&2; return 1; }
    DIRECT_OPENAI="http://$MOCK_ADDR/v1/chat/completions"
    DIRECT_ANTHROPIC="http://$MOCK_ADDR/v1/messages"
    log "mock-provider pid $MOCK_PID on $MOCK_ADDR"
}

# start_llmtap -> LLMTAP_PID, LLMTAP_OPENAI, LLMTAP_ANTHROPIC (needs MOCK_ADDR)
start_llmtap() {
    launch_llmtap llmtap "${LLMTAP_TOML:-}"
    LLMTAP_PID=$L_PID LLMTAP_API=$L_API LLMTAP_OPENAI=$L_OPENAI LLMTAP_ANTHROPIC=$L_ANTHROPIC
}

# start_llmtap_otel -> OTEL_PID, OTEL_OPENAI, OTEL_ANTHROPIC: a second llmtap
# exporting every call to an OTLP sink (a second mock-provider).
start_llmtap_otel() {
    "$BIN/mock-provider" --listen 127.0.0.1:0 >"$WORK/sink.out" 2>"$WORK/sink.err" &
    local sink_pid=$! sink="" i
    PIDS+=("$sink_pid")
    for i in $(seq 1 100); do
        sink=$(head -n1 "$WORK/sink.out" 2>/dev/null || true)
        [[ -n "$sink" ]] && break
        sleep 0.05
    done
    [[ -n "$sink" ]] || { cat "$WORK/sink.err" >&2; return 1; }
    launch_llmtap llmtap-otel "$(printf '\n[otel]\nendpoint = "http://%s"\nmetrics_interval_ms = 10000\n' "$sink")"
    OTEL_PID=$L_PID OTEL_API=$L_API OTEL_OPENAI=$L_OPENAI OTEL_ANTHROPIC=$L_ANTHROPIC
    log "OTLP sink (mock-provider) pid $sink_pid on $sink"
}

# launch_llmtap NAME EXTRA_TOML -> L_PID, L_API, L_OPENAI, L_ANTHROPIC
launch_llmtap() {
    local name=$1 extra=$2 port api
    port=$(free_port)
    api=$(free_port)
    mkdir -p "$WORK/$name-data"
    cat >"$WORK/$name.toml" <<TOML
# llmtap config written by bench/common.sh for one benchmark run.
[server]
listen = "127.0.0.1:$port"
api_listen = "127.0.0.1:$api"

[providers.mock]
kind = "openai"
base_url = "http://$MOCK_ADDR"

[providers.mockanthropic]
kind = "anthropic"
base_url = "http://$MOCK_ADDR"
TOML
    if [[ "${CAPTURE:-on}" == off ]]; then
        # Mostly proxy path: with backlog = 1 (0 is rejected) and on_backlog =
        # "pass", a call is captured only when the writer queue is empty; the
        # rest are forwarded uncaptured (llmtap_passed_uncaptured_total).
        printf '\n[store]\nbacklog = 1\non_backlog = "pass"\n' >>"$WORK/$name.toml"
    fi
    printf '%s\n' "$extra" >>"$WORK/$name.toml"
    RUST_LOG=${RUST_LOG:-warn} "${LLMTAP_BIN:-$BIN/llmtap}" serve --config "$WORK/$name.toml" --data-dir "$WORK/$name-data" \
        >"$WORK/$name.out" 2>"$WORK/$name.err" &
    L_PID=$!
    PIDS+=("$L_PID")
    wait_port "$port" "$L_PID" || { tail -20 "$WORK/$name.err" >&2; return 1; }
    L_API="http://127.0.0.1:$api"
    L_OPENAI="http://127.0.0.1:$port/mock/v1/chat/completions"
    L_ANTHROPIC="http://127.0.0.1:$port/mockanthropic/v1/messages"
    log "$name pid $L_PID on 127.0.0.1:$port (api $api), data in $WORK/$name-data"
}

# start_nginx -> NGINX_PID, NGINX_OPENAI, NGINX_ANTHROPIC (needs MOCK_ADDR)
start_nginx() {
    command -v nginx >/dev/null || apt-get install -y nginx >&2
    local port prefix="$WORK/nginx"
    port=$(free_port)
    mkdir -p "$prefix"
    sed -e "s|@PORT@|$port|g" -e "s|@UPSTREAM@|$MOCK_ADDR|g" -e "s|@PREFIX@|$prefix|g" \
        "$ROOT/bench/nginx.conf.in" >"$prefix/nginx.conf"
    nginx -p "$prefix" -c "$prefix/nginx.conf" -e "$prefix/error.log" 2>"$WORK/nginx.err" &
    NGINX_PID=$!
    PIDS+=("$NGINX_PID")
    wait_port "$port" "$NGINX_PID" || { cat "$WORK/nginx.err" "$prefix/error.log" >&2; return 1; }
    NGINX_OPENAI="http://127.0.0.1:$port/mock/v1/chat/completions"
    NGINX_ANTHROPIC="http://127.0.0.1:$port/mockanthropic/v1/messages"
    log "nginx pid $NGINX_PID on 127.0.0.1:$port"
}

# Collects --url/--compare/--names for loadgen from the started targets.
# targets_for openai|anthropic -> TARGET_ARGS array
targets_for() {
    local api=$1 names=direct
    local d l n
    if [[ "$api" == anthropic ]]; then d=$DIRECT_ANTHROPIC; else d=$DIRECT_OPENAI; fi
    TARGET_ARGS=(--url "$d")
    if [[ "$LLMTAP" == 1 ]]; then
        if [[ "$api" == anthropic ]]; then l=$LLMTAP_ANTHROPIC; else l=$LLMTAP_OPENAI; fi
        TARGET_ARGS+=(--compare "$l"); names+=,llmtap
    fi
    if [[ "${OTEL:-0}" == 1 ]]; then
        if [[ "$api" == anthropic ]]; then l=$OTEL_ANTHROPIC; else l=$OTEL_OPENAI; fi
        TARGET_ARGS+=(--compare "$l"); names+=,llmtap_otel
    fi
    if [[ "$NGINX" == 1 ]]; then
        if [[ "$api" == anthropic ]]; then n=$NGINX_ANTHROPIC; else n=$NGINX_OPENAI; fi
        TARGET_ARGS+=(--compare "$n"); names+=,nginx
    fi
    TARGET_ARGS+=(--names "$names")
}

# --cpu-pid arguments for loadgen: CPU per request of mock, llmtap and nginx.
cpu_args() {
    CPU_ARGS=(--cpu-pid "mock=$MOCK_PID")
    [[ "$LLMTAP" == 1 ]] && CPU_ARGS+=(--cpu-pid "llmtap=$LLMTAP_PID")
    [[ "${OTEL:-0}" == 1 ]] && CPU_ARGS+=(--cpu-pid "llmtap_otel=$OTEL_PID")
    if [[ "$NGINX" == 1 ]]; then
        local p
        CPU_ARGS+=(--cpu-pid "nginx=$NGINX_PID")
        for p in $(pgrep -P "$NGINX_PID"); do CPU_ARGS+=(--cpu-pid "nginx=$p"); done
    fi
    return 0
}

# Waits (up to QUIET_WAIT seconds, default 300) for the 1-minute load average
# to drop below QUIET_LOAD (default 2.0), as other users share the machine.
wait_quiet() {
    local limit=${QUIET_LOAD:-2.0} waited=0
    while awk -v l="$limit" '{exit !($1 >= l)}' /proc/loadavg; do
        if ((waited >= ${QUIET_WAIT:-300})); then
            log "load still $(cut -d' ' -f1 /proc/loadavg) after ${waited}s; measuring anyway"
            return 0
        fi
        sleep 5
        waited=$((waited + 5))
    done
    ((waited > 0)) && log "waited ${waited}s for load < $limit"
    return 0
}

start_all() { # start_all [mock flags...]
    prioritise
    start_mock "$@"
    [[ "$LLMTAP" == 1 ]] && start_llmtap
    [[ "${OTEL:-0}" == 1 ]] && start_llmtap_otel
    [[ "$NGINX" == 1 ]] && start_nginx
    return 0
}

# Prints llmtap's capture counters, to show the figures were taken with capture on.
capture_report() {
    [[ "$LLMTAP" == 1 ]] || return 0
    echo "llmtap capture counters (GET /metrics):"
    curl -s "$LLMTAP_API/metrics" | grep -E '^llmtap_(records_written_total|capture_failures_total|store_errors_total|rejected_backlog_total|passed_uncaptured_total|backlog) ' | sed 's/^/  /'
    echo "  store size: $(du -sh "$WORK/llmtap-data" | cut -f1)"
    if [[ "${OTEL:-0}" == 1 ]]; then
        echo "llmtap_otel export counters (GET /metrics):"
        curl -s "$OTEL_API/metrics" | grep -E '^llmtap_(records_written_total|otel_[a-z_]+) ' | sed 's/^/  /'
    fi
}
