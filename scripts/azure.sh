#!/usr/bin/env bash
# A local Azure Blob Storage emulator (Azurite) for the tests and for trying azfs:// paths by hand.
#
#   scripts/azure.sh install|start|stop|status|endpoint|connection-string
#
# install            installs Azurite (the version pinned in scripts/azurite/package-lock.json) with `npm ci` into
#                    .cache/services/azurite/ (under 2 min cold; nothing to do while the lock file is unchanged).
# start              installs when needed, starts its Blob service on 127.0.0.1:AZURE_PORT with its data in
#                    .cache/services/azurite/data-PORT/; the last stdout line is the account's blob endpoint.
# stop               stops it and removes its data unless KEEP_DATA=1.
# connection-string  prints the connection string of Azurite's account devstoreaccount1 on this port, for
#                    Beam's --azure_connection_string (or AZURE_STORAGE_CONNECTION_STRING) and azure-storage-blob.
#
# Beam paths: azfs://devstoreaccount1/CONTAINER/path. Create containers through the API.
#
# Environment: AZURE_PORT (default 10000), AZURE_START_TIMEOUT (s, default 60), KEEP_DATA, AZURE_OWNER_PID (stop
# the server, removing its data, once that process has exited: for test sessions killed before their teardown).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=lib/daemon.sh
source "$ROOT/scripts/lib/daemon.sh"

HOST=127.0.0.1
PORT=${AZURE_PORT:-10000}
START_TIMEOUT=${AZURE_START_TIMEOUT:-60}
BASE=$ROOT/.cache/services/azurite
LOCK=$ROOT/scripts/azurite/package-lock.json
BIN=$BASE/node_modules/.bin/azurite-blob
DATA=$BASE/data-$PORT
PIDFILE=$BASE/run/$PORT.pid
LOG=$BASE/run/$PORT.log
ACCOUNT=devstoreaccount1
# Azurite's fixed development account key, the same in every Azurite (published in its documentation): not a secret.
KEY=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==
URL=http://$HOST:$PORT/$ACCOUNT

die() {
    echo "azure.sh: $*" >&2
    exit 1
}

[[ $PORT =~ ^[0-9]+$ ]] && ((PORT > 0 && PORT < 65536)) || die "AZURE_PORT must be a TCP port, got '$PORT'"

connection_string() {
    echo "DefaultEndpointsProtocol=http;AccountName=$ACCOUNT;AccountKey=$KEY;BlobEndpoint=$URL;"
}

# Installed, and from the lock file in the checkout (a changed pin installs again).
installed() { [[ -x $BIN ]] && cmp -s "$LOCK" "$BASE/package-lock.json"; }

install() {
    if installed; then
        echo "Azurite already installed: $BIN ($("$BASE/node_modules/.bin/azurite" --version 2>/dev/null))"
        return 0
    fi
    command -v npm >/dev/null || die "Azurite is not installed and installing it needs Node.js and npm on PATH"
    mkdir -p "$BASE"
    cp "$ROOT/scripts/azurite/package.json" "$LOCK" "$BASE/"
    echo "installing Azurite with npm ci (a few minutes the first time)" >&2
    # Azurite declares node >= 22 but its Blob service runs on the node 20 of Debian; no install scripts are needed.
    # The registry can drop a connection or answer 5xx for a moment: npm ci is tried three times before giving up.
    local try out
    for try in 1 2 3; do
        if out=$(npm ci --prefix "$BASE" --no-audit --no-fund --ignore-scripts --loglevel=error 2>&1); then
            break
        fi
        echo "$out" >&2
        if ((try == 3)); then
            rm -f "$BASE/package-lock.json"
            die "npm ci of Azurite failed 3 times; the last said: $(grep -m 1 -i 'err' <<<"$out" || tail -n 1 <<<"$out")"
        fi
        echo "npm ci of Azurite failed (try $try of 3); trying again in $((try * 10))s" >&2
        sleep $((try * 10))
    done
    [[ -x $BIN ]] || die "npm ci installed no azurite-blob at $BIN"
    echo "Azurite installed: $BIN"
}

# Any HTTP answer from the account (403 without a signature) means the Blob service is up.
answers() { curl -s -o /dev/null --max-time 2 "$URL?comp=list"; }
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
        echo "Azurite already running on $URL (pid $(pid), data $DATA)"
        echo "$URL"
        return 0
    fi
    rm -f "$PIDFILE"
    listening && die "port $PORT on $HOST is taken by another process; set AZURE_PORT"
    installed || install >&2
    mkdir -p "$DATA" "$(dirname "$PIDFILE")"
    # --skipApiVersionCheck: newer azure-storage-blob clients send API versions this Azurite does not know yet;
    # --loose: ignore headers it does not support instead of failing the request.
    nohup "$BIN" --blobHost "$HOST" --blobPort "$PORT" --location "$DATA" --skipApiVersionCheck --loose \
        </dev/null >"$LOG" 2>&1 &
    echo $! >"$PIDFILE"
    local deadline=$((SECONDS + START_TIMEOUT))
    while ((SECONDS < deadline)); do
        if ! alive; then
            rm -f "$PIDFILE"
            die "Azurite exited while starting; last lines of $LOG:
$(tail -n 20 "$LOG")"
        fi
        if answers; then
            [[ -n ${AZURE_OWNER_PID:-} ]] && watch_owner "$AZURE_OWNER_PID" "$(pid)"
            echo "Azurite Blob service running on $URL (pid $(pid), data $DATA, log $LOG)"
            echo "$URL"
            return 0
        fi
        sleep 0.2
    done
    kill "$(pid)" 2>/dev/null || true
    rm -f "$PIDFILE"
    die "Azurite did not answer on $URL within ${START_TIMEOUT}s; see $LOG"
}

# In the background: once OWNER has exited while the server (pid SERVER) still runs, `stop` it.
watch_owner() { daemon_watch_owner AZURE_OWNER_PID "$1" "$2" "$ROOT/scripts/azure.sh" AZURE_PORT="$PORT" KEEP_DATA=0; }

stop() {
    local p was="not running"
    p=$(pid)
    if [[ -n $p ]] && kill -0 "$p" 2>/dev/null; then
        was=running
        daemon_kill "$p"
    fi
    rm -f "$PIDFILE"
    if [[ ${KEEP_DATA:-0} == 1 ]]; then
        echo "Azurite on port $PORT stopped (was $was); data and log kept in $DATA, $LOG"
    else
        rm -rf "$DATA" "$LOG"
        echo "Azurite on port $PORT stopped (was $was); data removed"
    fi
}

status() {
    if alive && answers; then
        echo "Azurite running on $URL (pid $(pid), data $DATA)"
        return 0
    fi
    echo "Azurite on port $PORT is not running"
    return 1
}

case "${1:-}" in
    install | start | stop | status) "$1" ;;
    endpoint) echo "$URL" ;;
    connection-string) connection_string ;;
    *) die "usage: scripts/azure.sh install|start|stop|status|endpoint|connection-string  (env: AZURE_PORT, KEEP_DATA)" ;;
esac
