#!/usr/bin/env bash
# A local Google Cloud Storage emulator (fake-gcs-server) for the tests and for trying gs:// paths by hand.
#
#   scripts/gcs.sh install|start|stop|status|endpoint
#
# install   builds fake-gcs-server v$FAKE_GCS_VERSION with `go install` into .cache/services/gcs/v$VERSION/
#           (Go >= 1.26 from the Go module proxy; 2-5 min with empty Go caches on 2 cores; nothing to do once built).
# start     installs when needed, starts it in memory (nothing on disk) on 127.0.0.1:GCS_PORT over plain HTTP;
#           the last stdout line is the endpoint, the value for STORAGE_EMULATOR_HOST.
# stop      stops it (its buckets go with it) and removes its log unless KEEP_DATA=1.
# endpoint  prints the endpoint.
#
# Clients: google-cloud-storage and Beam's gs:// with STORAGE_EMULATOR_HOST=<endpoint> and no credentials
# (Beam: pass --no_auth, or it first looks for Google credentials for ~30 s). Create buckets through the API.
#
# Environment: GCS_PORT (default 4443), GCS_START_TIMEOUT (s, default 30), KEEP_DATA, GCS_OWNER_PID (stop the server once
# that process has exited: for test sessions killed before their teardown). The pid file and log are
# .cache/services/gcs/run/PORT.{pid,log}, per port, so a test on a free port leaves a server started by hand alone.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=lib/daemon.sh
source "$ROOT/scripts/lib/daemon.sh"

VERSION=${FAKE_GCS_VERSION:-1.56.1}
HOST=127.0.0.1
PORT=${GCS_PORT:-4443}
START_TIMEOUT=${GCS_START_TIMEOUT:-30}
BASE=$ROOT/.cache/services/gcs
BIN=$BASE/v$VERSION/fake-gcs-server
RUN=$BASE/run
PIDFILE=$RUN/$PORT.pid
LOG=$RUN/$PORT.log
URL=http://$HOST:$PORT

die() {
    echo "gcs.sh: $*" >&2
    exit 1
}

[[ $PORT =~ ^[0-9]+$ ]] && ((PORT > 0 && PORT < 65536)) || die "GCS_PORT must be a TCP port, got '$PORT'"

install() {
    if [[ -x $BIN ]]; then
        echo "fake-gcs-server v$VERSION already installed: $BIN"
        return 0
    fi
    command -v go >/dev/null || die "fake-gcs-server is not installed and building it needs Go (>= 1.24) on PATH"
    local tmp
    mkdir -p "$BASE"
    tmp=$(mktemp -d "$BASE/install.XXXXXX")
    echo "building fake-gcs-server v$VERSION with go install (a few minutes the first time)" >&2
    if ! GOBIN=$tmp go install "github.com/fsouza/fake-gcs-server@v$VERSION" >&2; then
        rm -rf "$tmp"
        die "go install github.com/fsouza/fake-gcs-server@v$VERSION failed"
    fi
    # Moved into place whole, so an interrupted build leaves no binary that looks installed.
    mkdir -p "$(dirname "$BIN")"
    mv "$tmp/fake-gcs-server" "$BIN"
    rm -rf "$tmp"
    echo "fake-gcs-server v$VERSION installed: $BIN"
}

# Any HTTP answer to the bucket list means the server is up.
answers() { curl -s -o /dev/null --max-time 2 "$URL/storage/v1/b"; }
listening() { (: <"/dev/tcp/$HOST/$PORT") 2>/dev/null; }
pid() { cat "$PIDFILE" 2>/dev/null || true; }
alive() {
    local p
    p=$(pid)
    [[ -n $p ]] && kill -0 "$p" 2>/dev/null
}

start() {
    command -v curl >/dev/null || die "curl is needed to check the server"
    if alive && answers; then
        echo "GCS emulator already running on $URL (pid $(pid))"
        echo "$URL"
        return 0
    fi
    rm -f "$PIDFILE"
    listening && die "port $PORT on $HOST is taken by another process; set GCS_PORT"
    [[ -x $BIN ]] || install >&2
    mkdir -p "$RUN"
    # Standard streams away from the caller's pipes, so a caller capturing output is not kept waiting.
    nohup "$BIN" -scheme http -host "$HOST" -port "$PORT" -backend memory \
        -public-host "$HOST:$PORT" -external-url "$URL" -log-level warn </dev/null >"$LOG" 2>&1 &
    echo $! >"$PIDFILE"
    local deadline=$((SECONDS + START_TIMEOUT))
    while ((SECONDS < deadline)); do
        if ! alive; then
            rm -f "$PIDFILE"
            die "fake-gcs-server exited while starting; last lines of $LOG:
$(tail -n 20 "$LOG")"
        fi
        if answers; then
            [[ -n ${GCS_OWNER_PID:-} ]] && watch_owner "$GCS_OWNER_PID" "$(pid)"
            echo "GCS emulator (fake-gcs-server v$VERSION) running on $URL (pid $(pid), log $LOG)"
            echo "$URL"
            return 0
        fi
        sleep 0.2
    done
    kill "$(pid)" 2>/dev/null || true
    rm -f "$PIDFILE"
    die "fake-gcs-server did not answer on $URL within ${START_TIMEOUT}s; see $LOG"
}

# In the background: once OWNER has exited while the server (pid SERVER) still runs, `stop` it.
watch_owner() { daemon_watch_owner GCS_OWNER_PID "$1" "$2" "$ROOT/scripts/gcs.sh" GCS_PORT="$PORT"; }

stop() {
    local p
    p=$(pid)
    if [[ -z $p ]]; then
        echo "GCS emulator on port $PORT is not running"
        return 0
    fi
    daemon_kill "$p"
    rm -f "$PIDFILE"
    if [[ ${KEEP_DATA:-0} == 1 ]]; then
        echo "GCS emulator on port $PORT stopped; log kept in $LOG"
    else
        rm -f "$LOG"
        echo "GCS emulator on port $PORT stopped"
    fi
}

status() {
    if alive && answers; then
        echo "GCS emulator running on $URL (pid $(pid))"
        return 0
    fi
    echo "GCS emulator on port $PORT is not running"
    return 1
}

case "${1:-}" in
    install | start | stop | status) "$1" ;;
    endpoint) echo "$URL" ;;
    *) die "usage: scripts/gcs.sh install|start|stop|status|endpoint  (env: GCS_PORT, GCS_OWNER_PID)" ;;
esac
