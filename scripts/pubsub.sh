#!/usr/bin/env bash
# A local Google Cloud Pub/Sub server (Google's in-memory fake, pstest) for the tests and demos.
#
#   scripts/pubsub.sh install|start|stop|status|endpoint
#
# install   builds scripts/pubsub_emulator (a small Go main around cloud.google.com/go/pubsub/v2/pstest,
#           pinned by its go.mod/go.sum) with the Go module proxy into .cache/services/pubsub/<hash>/;
#           ~3 min with empty Go caches on 2 cores; nothing to do once built (the hash covers the sources).
# start     installs when needed, starts it on 127.0.0.1:PUBSUB_PORT; the last stdout line is the endpoint,
#           the value for PUBSUB_EMULATOR_HOST.
# stop      stops it (topics, subscriptions and messages live in its memory and go with it); removes its log
#           unless KEEP_DATA=1.
# endpoint  prints the endpoint (host:port).
#
# Clients: google-cloud-pubsub with PUBSUB_EMULATOR_HOST=<endpoint> (no credentials); create topics and
# subscriptions through the API.
#
# Environment: PUBSUB_PORT (default 8085), PUBSUB_ADMIN_PORT (when set, GET http://127.0.0.1:PORT/messages there
# lists each message's deliveries and acknowledgements, for tests), PUBSUB_START_TIMEOUT (s, default 30), KEEP_DATA,
# PUBSUB_OWNER_PID
# (stop the server once that process has exited: for test sessions killed before their teardown). The pid file
# and log are .cache/services/pubsub/run/PORT.{pid,log}, per port.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=lib/daemon.sh
source "$ROOT/scripts/lib/daemon.sh"

HOST=127.0.0.1
PORT=${PUBSUB_PORT:-8085}
START_TIMEOUT=${PUBSUB_START_TIMEOUT:-30}
SRC=$ROOT/scripts/pubsub_emulator
BASE=$ROOT/.cache/services/pubsub
RUN=$BASE/run
PIDFILE=$RUN/$PORT.pid
LOG=$RUN/$PORT.log

die() {
    echo "pubsub.sh: $*" >&2
    exit 1
}

ADMIN_PORT=${PUBSUB_ADMIN_PORT:-0}
[[ $PORT =~ ^[0-9]+$ ]] && ((PORT > 0 && PORT < 65536)) || die "PUBSUB_PORT must be a TCP port, got '$PORT'"
[[ $ADMIN_PORT =~ ^[0-9]+$ ]] && ((ADMIN_PORT < 65536)) || die "PUBSUB_ADMIN_PORT must be a TCP port, got '$ADMIN_PORT'"

# The build is named by its sources: an edited main.go or a new pin builds a new binary.
HASH=$(cat "$SRC/go.mod" "$SRC/go.sum" "$SRC/main.go" | sha256sum | cut -c1-12)
BIN=$BASE/$HASH/pubsub-emulator

install() {
    if [[ -x $BIN ]]; then
        echo "Pub/Sub emulator already built: ${BIN#"$ROOT"/}"
        return 0
    fi
    command -v go >/dev/null || die "the Pub/Sub emulator is not built and building it needs Go (>= 1.26) on PATH"
    mkdir -p "$BASE"
    local tmp
    tmp=$(mktemp -d "$BASE/install.XXXXXX")
    echo "building the Pub/Sub emulator (pstest) with go build (a few minutes the first time)" >&2
    if ! (cd "$SRC" && go build -trimpath -o "$tmp/pubsub-emulator" .) >&2; then
        rm -rf "$tmp"
        die "go build of scripts/pubsub_emulator failed"
    fi
    # Moved into place whole, so an interrupted build leaves no binary that looks installed.
    mkdir -p "$(dirname "$BIN")"
    mv "$tmp/pubsub-emulator" "$BIN"
    rm -rf "$tmp"
    echo "Pub/Sub emulator built: ${BIN#"$ROOT"/}"
}

listening() { (: <"/dev/tcp/$HOST/${1:-$PORT}") 2>/dev/null; }
pid() { cat "$PIDFILE" 2>/dev/null || true; }
alive() {
    local p
    p=$(pid)
    [[ -n $p ]] && kill -0 "$p" 2>/dev/null && grep -qa 'pubsub-emulator' "/proc/$p/cmdline" 2>/dev/null
}

start() {
    if alive && listening; then
        echo "Pub/Sub emulator already running on $HOST:$PORT (pid $(pid))"
        echo "$HOST:$PORT"
        return 0
    fi
    rm -f "$PIDFILE"
    listening && die "port $PORT on $HOST is taken by another process; set PUBSUB_PORT"
    ((ADMIN_PORT == 0)) || ! listening "$ADMIN_PORT" ||
        die "port $ADMIN_PORT on $HOST is taken by another process; set PUBSUB_ADMIN_PORT"
    [[ -x $BIN ]] || install >&2
    mkdir -p "$RUN"
    # Standard streams away from the caller's pipes, so a caller capturing output is not kept waiting.
    nohup "$BIN" -host "$HOST" -port "$PORT" -admin-port "$ADMIN_PORT" </dev/null >"$LOG" 2>&1 &
    local server=$!
    echo "$server" >"$PIDFILE"
    local deadline=$((SECONDS + START_TIMEOUT))
    while ((SECONDS < deadline)); do
        if ! kill -0 "$server" 2>/dev/null; then
            rm -f "$PIDFILE"
            die "the Pub/Sub emulator exited while starting; last lines of $LOG:
$(tail -n 20 "$LOG")"
        fi
        # The gRPC listener opens once the server is ready to serve.
        if listening && { ((ADMIN_PORT == 0)) || listening "$ADMIN_PORT"; }; then
            [[ -n ${PUBSUB_OWNER_PID:-} ]] && watch_owner "$PUBSUB_OWNER_PID" "$server"
            echo "Pub/Sub emulator running on $HOST:$PORT (pid $server, log ${LOG#"$ROOT"/})"
            echo "$HOST:$PORT"
            return 0
        fi
        sleep 0.1
    done
    kill "$server" 2>/dev/null || true
    rm -f "$PIDFILE"
    die "the Pub/Sub emulator did not listen on $HOST:$PORT within ${START_TIMEOUT}s; see $LOG"
}

# In the background: once OWNER has exited while the server (pid SERVER) still runs, `stop` it.
watch_owner() { daemon_watch_owner PUBSUB_OWNER_PID "$1" "$2" "$ROOT/scripts/pubsub.sh" PUBSUB_PORT="$PORT"; }

stop() {
    local p
    p=$(pid)
    if [[ -z $p ]]; then
        echo "Pub/Sub emulator on port $PORT is not running"
        return 0
    fi
    daemon_kill "$p"
    rm -f "$PIDFILE"
    if [[ ${KEEP_DATA:-0} == 1 ]]; then
        echo "Pub/Sub emulator on port $PORT stopped; log kept in ${LOG#"$ROOT"/}"
    else
        rm -f "$LOG"
        echo "Pub/Sub emulator on port $PORT stopped"
    fi
}

status() {
    if alive && listening; then
        echo "Pub/Sub emulator running on $HOST:$PORT (pid $(pid))"
        return 0
    fi
    echo "Pub/Sub emulator on port $PORT is not running"
    return 1
}

case "${1:-}" in
    install | start | stop | status) "$1" ;;
    endpoint) echo "$HOST:$PORT" ;;
    *) die "usage: scripts/pubsub.sh install|start|stop|status|endpoint  (env: PUBSUB_PORT, PUBSUB_OWNER_PID)" ;;
esac
