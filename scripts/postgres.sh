#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests and demos, from Debian's packages.
#
#   scripts/postgres.sh install|start|stop|status|dsn
#
# install  apt-get installs PostgreSQL when initdb/pg_ctl are on neither PATH nor /usr/lib/postgresql/*/bin.
# start    installs when needed, creates the cluster on the first start of a port (superuser role bp, trust auth,
#          fsync off), starts it, creates database bp; the last stdout line is the DSN
#          postgresql://bp@127.0.0.1:PORT/bp.
# stop     stops it (fast, then immediate, then KILL) and removes its data dir unless KEEP_DATA=1.
# dsn      prints the DSN.
#
# Environment: PG_PORT (default 5433, leaving 5432 to a system cluster), PG_START_TIMEOUT and PG_STOP_TIMEOUT (s,
# default 60 and 30), KEEP_DATA, PG_OWNER_PID (stop the server, removing its data, once that process has exited:
# for test sessions that may be killed before their teardown). The server listens on 127.0.0.1 only, and on a socket in DATA/run.
#
# Data dir: .cache/services/postgres/data-PORT/. PostgreSQL refuses to run as root, so as root the server runs as
# the `postgres` system user (created when missing), which must be able to reach the data dir; when it cannot
# traverse the checkout (e.g. one under /root), or the socket path would be too long for a Unix socket, the data
# dir is /tmp/beam-pipelines-postgres-USER-PORT/ instead (USER: who runs this script). `status` names it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

HOST=127.0.0.1
PORT=${PG_PORT:-5433}
DB=bp
ROLE=bp
START_TIMEOUT=${PG_START_TIMEOUT:-60}
STOP_TIMEOUT=${PG_STOP_TIMEOUT:-30}
BASE=$ROOT/.cache/services/postgres
DSN=postgresql://$ROLE@$HOST:$PORT/$DB
# The system user the server runs as when this script runs as root.
RUN_AS=postgres

die() {
    echo "postgres.sh: $*" >&2
    exit 1
}

[[ $PORT =~ ^[0-9]+$ ]] && ((PORT > 0 && PORT < 65536)) || die "PG_PORT must be a TCP port, got '$PORT'"

# The directory with initdb and pg_ctl (and psql, createdb of the same version), or nothing.
find_bin() {
    local p d
    if p=$(command -v pg_ctl) && command -v initdb >/dev/null; then
        dirname "$(readlink -f "$p")"
        return 0
    fi
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [[ -x $d/initdb && -x $d/pg_ctl ]]; then
            echo "$d"
            return 0
        fi
    done
}

install() {
    local bin
    bin=$(find_bin)
    if [[ -n $bin ]]; then
        echo "PostgreSQL already installed: $("$bin/pg_ctl" --version) in $bin"
        return 0
    fi
    ((EUID == 0)) || die "PostgreSQL is not installed and installing it needs root: apt-get install postgresql"
    command -v apt-get >/dev/null || die "PostgreSQL is not installed and there is no apt-get to install it"
    export DEBIAN_FRONTEND=noninteractive
    local apt=(apt-get -q -o DPkg::Lock::Timeout=300)
    echo "installing PostgreSQL with apt-get" >&2
    # A fresh machine has no package lists, an old one may have stale lists: then update and try again.
    if ! apt-cache show postgresql >/dev/null 2>&1 ||
        ! "${apt[@]}" install -y --no-install-recommends postgresql >&2; then
        "${apt[@]}" update >&2 || die "apt-get update failed"
        "${apt[@]}" install -y --no-install-recommends postgresql >&2 || die "apt-get install postgresql failed"
    fi
    bin=$(find_bin)
    [[ -n $bin ]] || die "apt-get installed postgresql but no initdb/pg_ctl was found"
    echo "PostgreSQL installed: $("$bin/pg_ctl" --version) in $bin"
}

ensure_user() {
    ((EUID == 0)) || return 0
    id -u "$RUN_AS" >/dev/null 2>&1 && return 0
    useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$RUN_AS" ||
        die "cannot create the system user $RUN_AS"
}

# Runs a server command as the server's user: postgres when we are root, else ourselves.
as_server() {
    if ((EUID == 0)); then
        runuser -u "$RUN_AS" -- "$@"
    else
        "$@"
    fi
}

# The port's data dir: under .cache when the server's user can reach it and the socket path fits, else /tmp.
data_dir() {
    local dir=$BASE/data-$PORT
    local sock=$dir/run/.s.PGSQL.$PORT
    if ((${#sock} < 100)); then
        if ((EUID != 0)); then
            echo "$dir"
            return 0
        fi
        mkdir -p "$BASE"
        if runuser -u "$RUN_AS" -- test -x "$BASE" 2>/dev/null; then
            echo "$dir"
            return 0
        fi
    fi
    echo "/tmp/beam-pipelines-postgres-$(id -un)-$PORT"
}

# Accepting connections on the port (any server, ours or not).
listening() { (: <"/dev/tcp/$HOST/$PORT") 2>/dev/null; }

running() { [[ -f $DATA/postmaster.pid ]] && as_server "$BIN/pg_ctl" status -D "$DATA" >/dev/null 2>&1; }

init_cluster() {
    [[ -f $DATA/PG_VERSION ]] && return 0
    local log
    log=$(dirname "$DATA")/initdb-$PORT.log
    rm -rf "$DATA"
    mkdir -p "$DATA"
    ((EUID == 0)) && chown "$RUN_AS:" "$DATA"
    chmod 700 "$DATA"
    if ! as_server "$BIN/initdb" -D "$DATA" -U "$ROLE" --auth=trust --encoding=UTF8 --locale=C --no-sync \
        >"$log" 2>&1; then
        die "initdb failed; see $log"
    fi
    rm -f "$log"
    as_server mkdir -p "$DATA/run"
    # Settings for a test server: loopback only, no durability (a crash loses only test data), small.
    as_server tee -a "$DATA/postgresql.conf" >/dev/null <<EOF

# scripts/postgres.sh
listen_addresses = '$HOST'
port = $PORT
unix_socket_directories = '$DATA/run'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 100
shared_buffers = 128MB
timezone = 'UTC'
log_timezone = 'UTC'
# Change data capture (ReadPostgresChanges) decodes the WAL through logical replication slots.
wal_level = logical
max_replication_slots = 16
max_wal_senders = 16
EOF
}

psql_() { "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$HOST" -p "$PORT" -U "$ROLE" "$@"; }

ensure_database() {
    local have
    have=$(psql_ -d postgres -tA -c "SELECT 1 FROM pg_database WHERE datname = '$DB'") ||
        die "cannot connect to PostgreSQL on $HOST:$PORT as $ROLE"
    if [[ $have != 1 ]]; then
        psql_ -d postgres -c "CREATE DATABASE $DB" >/dev/null || die "cannot create database $DB"
    fi
}

start() {
    BIN=$(find_bin)
    if [[ -n $BIN ]]; then
        ensure_user
        DATA=$(data_dir)
        if running; then
            ensure_database
            echo "PostgreSQL already running on $HOST:$PORT (data $DATA)"
            echo "$DSN"
            return 0
        fi
    fi
    listening && die "port $PORT on $HOST is taken by another process; set PG_PORT"
    if [[ -z $BIN ]]; then
        install >&2
        BIN=$(find_bin)
        ensure_user
        DATA=$(data_dir)
    fi
    init_cluster
    # pg_ctl's own wait: it returns once the server accepts connections.
    if ! as_server "$BIN/pg_ctl" start -D "$DATA" -l "$DATA/server.log" -w -t "$START_TIMEOUT" >/dev/null 2>&1; then
        die "the server did not start on $HOST:$PORT within ${START_TIMEOUT}s; see $DATA/server.log"
    fi
    ensure_database
    [[ -n ${PG_OWNER_PID:-} ]] && watch_owner "$PG_OWNER_PID" "$(head -n 1 "$DATA/postmaster.pid")"
    echo "PostgreSQL $("$BIN/pg_ctl" --version | sed 's/.*(PostgreSQL) \([^ ]*\).*/\1/') running on $HOST:$PORT (data $DATA)"
    echo "$DSN"
}

# In the background: once OWNER has exited while the server (pid SERVER) still runs, `stop` it.
watch_owner() {
    [[ $1 =~ ^[0-9]+$ ]] || die "PG_OWNER_PID must be a process id, got '$1'"
    PG_PORT=$PORT KEEP_DATA=0 setsid nohup bash -c \
        'while kill -0 "$1" && kill -0 "$2"; do sleep 2; done 2>/dev/null; kill -0 "$2" 2>/dev/null && exec bash "$3" stop' \
        watch "$1" "$2" "$ROOT/scripts/postgres.sh" </dev/null >/dev/null 2>&1 &
}

stop() {
    BIN=$(find_bin)
    DATA=$(data_dir)
    local was="not running"
    if [[ -n $BIN ]] && running; then
        was=running
        if ! as_server "$BIN/pg_ctl" stop -D "$DATA" -m fast -w -t "$STOP_TIMEOUT" >/dev/null 2>&1; then
            as_server "$BIN/pg_ctl" stop -D "$DATA" -m immediate -w -t "$STOP_TIMEOUT" >/dev/null 2>&1 || true
        fi
    fi
    # Last resort: a postmaster that outlived both shutdown modes.
    local pid
    pid=$(head -n 1 "$DATA/postmaster.pid" 2>/dev/null || true)
    if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null &&
        [[ $(cat "/proc/$pid/comm" 2>/dev/null) == postgres* ]]; then
        echo "postgres.sh: the server (pid $pid) did not stop; killing it" >&2
        kill -9 "$pid"
    fi
    if [[ ${KEEP_DATA:-0} == 1 ]]; then
        echo "PostgreSQL on port $PORT stopped (was $was); data kept in $DATA"
    else
        rm -rf "$DATA"
        echo "PostgreSQL on port $PORT stopped (was $was); data removed"
    fi
}

status() {
    BIN=$(find_bin)
    [[ -n $BIN ]] || die "PostgreSQL is not installed (scripts/postgres.sh install)"
    DATA=$(data_dir)
    if running; then
        echo "PostgreSQL running on $HOST:$PORT (data $DATA): $DSN"
        return 0
    fi
    echo "PostgreSQL on port $PORT is not running (data $DATA)"
    return 1
}

case "${1:-}" in
    install | start | stop | status) "$1" ;;
    dsn) echo "$DSN" ;;
    *) die "usage: scripts/postgres.sh install|start|stop|status|dsn  (env: PG_PORT, KEEP_DATA)" ;;
esac
