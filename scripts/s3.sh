#!/usr/bin/env bash
# A local S3-compatible server (moto) for the integration tests and for trying s3:// paths by hand.
#
#   scripts/s3.sh start|stop|status
#
# S3_PORT (default 5055) and S3_HOST (default 127.0.0.1) choose where it listens; PYTHON is an
# interpreter with moto[server] installed (default: the project's .venv). The pid file and log
# are .cache/s3/moto-PORT.{pid,log}, per port, so a test run on a free port leaves a server
# started by hand alone. Credentials: any key id and secret; region us-east-1.
set -euo pipefail
cd "$(dirname "$0")/.."

HOST=${S3_HOST:-127.0.0.1}
PORT=${S3_PORT:-5055}
PYTHON=${PYTHON:-.venv/bin/python}
DIR=.cache/s3
PIDFILE=$DIR/moto-$PORT.pid
LOG=$DIR/moto-$PORT.log
URL=http://$HOST:$PORT
START_TIMEOUT=${S3_START_TIMEOUT:-30}

die() { echo "s3.sh: $*" >&2; exit 1; }

# True when something answers HTTP on the port (any status: moto answers 200 on /moto-api/).
answers() {
    if command -v curl >/dev/null; then
        curl -s -o /dev/null --max-time 2 "$URL/moto-api/"
    else
        "$PYTHON" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
            "$URL/moto-api/" >/dev/null 2>&1
    fi
}

pid() { cat "$PIDFILE" 2>/dev/null || true; }
alive() { local p; p=$(pid); [[ -n $p ]] && kill -0 "$p" 2>/dev/null; }

start() {
    if alive && answers; then
        echo "S3 (moto) already running on $URL (pid $(pid))"
        return 0
    fi
    rm -f "$PIDFILE"
    answers && die "port $PORT on $HOST is already taken by another process; set S3_PORT"
    [[ -x $PYTHON ]] || command -v "$PYTHON" >/dev/null || die "no python at $PYTHON (make venv, or set PYTHON)"
    "$PYTHON" -c 'import moto.server' 2>/dev/null \
        || die "moto[server] is not installed for $PYTHON (pip install -r requirements-dev.txt)"
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
            echo "S3 (moto) running on $URL (pid $(pid), log $LOG)"
            return 0
        fi
        sleep 0.2
    done
    kill "$(pid)" 2>/dev/null || true
    rm -f "$PIDFILE"
    die "moto server did not answer on $URL within ${START_TIMEOUT}s; see $LOG"
}

stop() {
    local p
    p=$(pid)
    if [[ -z $p ]]; then
        echo "S3 (moto) on port $PORT is not running"
        return 0
    fi
    if kill -0 "$p" 2>/dev/null; then
        kill "$p"
        for _ in $(seq 50); do
            kill -0 "$p" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$p" 2>/dev/null && kill -9 "$p"
    fi
    rm -f "$PIDFILE"
    echo "S3 (moto) on port $PORT stopped"
}

status() {
    if alive && answers; then
        echo "S3 (moto) running on $URL (pid $(pid))"
    else
        echo "S3 (moto) on port $PORT is not running"
        return 1
    fi
}

case "${1:-}" in
    start | stop | status) "$1" ;;
    *) die "usage: scripts/s3.sh start|stop|status  (env: S3_PORT, S3_HOST, PYTHON)" ;;
esac
