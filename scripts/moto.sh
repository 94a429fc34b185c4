#!/usr/bin/env bash
# moto's server: one local process serving the AWS APIs the tests use (S3, Kinesis, ...). Run through
# scripts/s3.sh and scripts/kinesis.sh, which name the port, the cache directory and the service.
#
#   scripts/moto.sh install|start|stop|status|endpoint
#
# Environment: MOTO_PORT, MOTO_HOST (default 127.0.0.1), MOTO_DIR (pid and log: MOTO_DIR/moto-PORT.{pid,log},
# per port, so a test run on a free port leaves a server started by hand alone), MOTO_WHAT (the service's name in
# messages), MOTO_SCRIPT (the calling script's name in errors), MOTO_START_TIMEOUT (s, default 30),
# MOTO_OWNER_PID (stop the server once that process has exited), PYTHON (an interpreter with moto[server]
# installed; default the project's .venv). Credentials: any key id and secret; region us-east-1.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=lib/daemon.sh
source "$ROOT/scripts/lib/daemon.sh"

HOST=${MOTO_HOST:-127.0.0.1}
PORT=${MOTO_PORT:?MOTO_PORT is required}
PYTHON=${PYTHON:-.venv/bin/python}
DIR=${MOTO_DIR:-.cache/services/moto}
WHAT=${MOTO_WHAT:-moto}
SCRIPT=${MOTO_SCRIPT:-moto.sh}
PIDFILE=$DIR/moto-$PORT.pid
LOG=$DIR/moto-$PORT.log
URL=http://$HOST:$PORT
START_TIMEOUT=${MOTO_START_TIMEOUT:-30}

die() { echo "$SCRIPT: $*" >&2; exit 1; }

[[ $PORT =~ ^[0-9]+$ ]] && ((PORT > 0 && PORT < 65536)) || die "the port must be a TCP port, got '$PORT'"

# True when something answers HTTP on the port (any status: moto answers 200 on /moto-api/).
answers() {
    if command -v curl >/dev/null; then
        curl -s -o /dev/null --max-time 2 "$URL/moto-api/"
    else
        "$PYTHON" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
            "$URL/moto-api/" >/dev/null 2>&1
    fi
}

listening() { (: <"/dev/tcp/$HOST/$PORT") 2>/dev/null; }
pid() { cat "$PIDFILE" 2>/dev/null || true; }
alive() { local p; p=$(pid); [[ -n $p ]] && kill -0 "$p" 2>/dev/null; }

# moto[server] comes with the project's dev requirements: nothing to build, only to check.
install() {
    [[ -x $PYTHON ]] || command -v "$PYTHON" >/dev/null || die "no python at $PYTHON (make venv, or set PYTHON)"
    "$PYTHON" -c 'import moto.server, moto.s3, moto.kinesis' 2>/dev/null \
        || die "moto[server] is not installed for $PYTHON (pip install -r requirements-dev.txt)"
    echo "moto[server] $("$PYTHON" -c 'import moto; print(moto.__version__)') is installed for $PYTHON"
}

start() {
    if alive && answers; then
        echo "$WHAT already running on $URL (pid $(pid))"
        return 0
    fi
    rm -f "$PIDFILE"
    listening && die "port $PORT on $HOST is taken by another process; choose another port"
    install >/dev/null
    mkdir -p "$DIR"
    # stdin/stdout/stderr away from the caller's pipes, so a caller that captures output
    # (pytest's subprocess.run) is not kept waiting for the server to exit.
    nohup "$PYTHON" -m moto.server -H "$HOST" -p "$PORT" </dev/null >"$LOG" 2>&1 &
    echo $! >"$PIDFILE"
    local deadline=$((SECONDS + START_TIMEOUT))
    while ((SECONDS < deadline)); do
        if ! alive; then
            rm -f "$PIDFILE"
            die "moto server exited while starting; last lines of $LOG:
$(tail -n 20 "$LOG")"
        fi
        if answers; then
            [[ -n ${MOTO_OWNER_PID:-} ]] && watch_owner "$MOTO_OWNER_PID" "$(pid)"
            echo "$WHAT running on $URL (pid $(pid), log $LOG)"
            return 0
        fi
        sleep 0.2
    done
    kill "$(pid)" 2>/dev/null || true
    rm -f "$PIDFILE"
    die "moto server did not answer on $URL within ${START_TIMEOUT}s; see $LOG"
}

# In the background: once OWNER has exited while the server (pid SERVER) still runs, `stop` it.
watch_owner() {
    daemon_watch_owner "the owner" "$1" "$2" "$ROOT/scripts/moto.sh" MOTO_PORT="$PORT" MOTO_HOST="$HOST" MOTO_DIR="$DIR" \
        MOTO_WHAT="$WHAT"
}

stop() {
    local p
    p=$(pid)
    if [[ -z $p ]]; then
        echo "$WHAT on port $PORT is not running"
        return 0
    fi
    daemon_kill "$p"
    rm -f "$PIDFILE"
    echo "$WHAT on port $PORT stopped"
}

status() {
    if alive && answers; then
        echo "$WHAT running on $URL (pid $(pid))"
    else
        echo "$WHAT on port $PORT is not running"
        return 1
    fi
}

case "${1:-}" in
    install | start | stop | status) "$1" ;;
    endpoint) echo "$URL" ;;
    *) die "usage: scripts/$SCRIPT install|start|stop|status|endpoint" ;;
esac
