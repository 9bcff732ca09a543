#!/usr/bin/env bash
# postgres.sh: starts a throwaway PostgreSQL for the PostgreSQL figures of
# BENCHMARKS.md and prints its URL; `bench/postgres.sh stop DIR` stops it.
#
#   url=$(bench/postgres.sh start /tmp/llmtap-pg 55432)
#
# initdb in DIR (as the `postgres` user when run as root), the server on
# 127.0.0.1:PORT with the settings below, one database `llmtap`. Settings are the
# defaults but for memory sized to this 24 GiB machine; durability stays on
# (fsync, synchronous_commit), as a user's server would have it.
set -euo pipefail
cmd=${1:?usage: postgres.sh start|stop DIR [PORT]}
dir=${2:?data directory}
port=${3:-55432}
bindir=$(dirname "$(readlink -f "$(command -v initdb || ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")")
as_pg() { if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }
case "$cmd" in
start)
    mkdir -p "$dir"
    [[ $(id -u) == 0 ]] && chown postgres "$dir"
    if [[ ! -f "$dir/PG_VERSION" ]]; then
        as_pg "$bindir/initdb" -D "$dir" -U postgres --auth=trust >/dev/null
        cat >>"$dir/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
shared_buffers = 2GB
effective_cache_size = 8GB
work_mem = 32MB
maintenance_work_mem = 512MB
max_wal_size = 8GB
CONF
    fi
    as_pg "$bindir/pg_ctl" -D "$dir" -l "$dir/server.log" -w start >/dev/null
    as_pg "$bindir/psql" -h 127.0.0.1 -p "$port" -U postgres -qtc \
        "SELECT 1 FROM pg_database WHERE datname = 'llmtap'" | grep -q 1 ||
        as_pg "$bindir/createdb" -h 127.0.0.1 -p "$port" -U postgres llmtap
    echo "postgres://postgres@127.0.0.1:$port/llmtap?sslmode=disable"
    ;;
stop)
    as_pg "$bindir/pg_ctl" -D "$dir" -m fast -w stop >/dev/null
    ;;
esac
