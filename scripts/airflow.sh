#!/usr/bin/env bash
# A real Apache Airflow 3 for the pipelines' DAGs, in its own virtualenv (Airflow's pins clash with Beam's).
#
#   scripts/airflow.sh install|link|run ARGS...|python ARGS...|start|stop|status|url
#
# install  creates .cache/airflow-venv (uv; apache-airflow==3.3.2 with scripts/airflow/constraints.txt) and installs
#          this project into it without dependencies (the DAG factory reads specs with PyYAML; Beam is not needed).
# link     writes one DAG file per spec of $BP_SPECS into $AIRFLOW_HOME/dags (python -m beam_pipelines.orchestrate link).
# run      `airflow ARGS...` in this environment, after install, link and `airflow db migrate` when needed.
# python   Airflow's interpreter with this environment (after install and link): python ARGS...
# start    `airflow standalone` (API server, scheduler, DAG processor, triggerer; LocalExecutor) in the background;
#          waits until every component is healthy; the last stdout line is the API's base URL.
# stop     stops it (TERM to its process group, then KILL).
# url      prints the base URL.
#
# Environment: AIRFLOW_HOME (default .cache/airflow/home; SQLite database, logs, dags/ in it), BP_SPECS (the spec
# folder, default beam_pipelines/pipelines), AIRFLOW_PORT (default 28080), AIRFLOW_START_TIMEOUT (s, default 240),
# AIRFLOW_OWNER_PID (stop once that process has exited: for test sessions killed before their teardown).
# Settings of the DAGs are Airflow variables, here taken from the environment: AIRFLOW_VAR_BEAM_PIPELINES_LAKE,
# ..._DATA, ..._RUNNER, ..._PYTHON, ..._ALERT_WEBHOOK (README: Orchestration).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

VERSION=3.3.2
VENV=$ROOT/.cache/airflow-venv
CONSTRAINTS=$ROOT/scripts/airflow/constraints.txt
export AIRFLOW_HOME=${AIRFLOW_HOME:-$ROOT/.cache/airflow/home}
# `airflow standalone` starts its components as `airflow ...` from PATH.
export PATH=$VENV/bin:$PATH
SPECS=${BP_SPECS:-$ROOT/beam_pipelines/pipelines}
PORT=${AIRFLOW_PORT:-28080}
START_TIMEOUT=${AIRFLOW_START_TIMEOUT:-240}
PIDFILE=$AIRFLOW_HOME/standalone.pid
LOG=$AIRFLOW_HOME/standalone.log

die() {
    echo "airflow.sh: $*" >&2
    exit 1
}

[[ $PORT =~ ^[0-9]+$ ]] && ((PORT > 0 && PORT < 65536)) || die "AIRFLOW_PORT must be a TCP port, got '$PORT'"

# Airflow's settings for this project: SQLite in AIRFLOW_HOME, no examples, the linked DAG files, short parse loops.
export AIRFLOW__CORE__DAGS_FOLDER=$AIRFLOW_HOME/dags
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=sqlite:///$AIRFLOW_HOME/airflow.db
export AIRFLOW__CORE__EXECUTOR=${AIRFLOW__CORE__EXECUTOR:-LocalExecutor}
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS:-True}
export AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT=${AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT:-60}
export AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL=${AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL:-5}
export AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL=${AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL:-5}
export AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC=${AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC:-2}
export AIRFLOW__API__PORT=$PORT
export AIRFLOW__API__BASE_URL=http://127.0.0.1:$PORT
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://127.0.0.1:$PORT/execution/
export AIRFLOW__LOGGING__BASE_LOG_FOLDER=$AIRFLOW_HOME/logs
export DO_NOT_TRACK=1 SCARF_ANALYTICS=false AIRFLOW__USAGE_DATA_COLLECTION__ENABLED=False
# The project's interpreter runs the pipelines (the DAG's tasks start it; see beam_pipelines/orchestrate).
export AIRFLOW_VAR_BEAM_PIPELINES_PYTHON=${AIRFLOW_VAR_BEAM_PIPELINES_PYTHON:-$ROOT/.venv/bin/python}

uv_bin() {
    if [[ -x $ROOT/.venv/bin/uv ]]; then
        echo "$ROOT/.venv/bin/uv"
    elif command -v uv >/dev/null; then
        command -v uv
    else
        die "uv not found: run make venv first (it installs uv into .venv)"
    fi
}

install() {
    local stamp=$VENV/.installed-$VERSION uv sum
    sum=$(cat "$CONSTRAINTS" "$ROOT/setup.py" | sha256sum | cut -c1-16)
    if [[ -f $stamp && $(cat "$stamp") == "$sum" ]]; then
        return 0
    fi
    uv=$(uv_bin)
    echo "installing apache-airflow==$VERSION into $VENV" >&2
    [[ -x $VENV/bin/python ]] || "$uv" venv -q --python python3.11 "$VENV" >&2 || "$uv" venv -q "$VENV" >&2 ||
        die "cannot create $VENV"
    "$uv" pip install -q --compile-bytecode --python "$VENV/bin/python" -c "$CONSTRAINTS" "apache-airflow==$VERSION" >&2 ||
        die "pip install apache-airflow==$VERSION failed"
    # The DAG factory and its spec reader; no dependencies, so nothing of Beam's reaches Airflow's environment.
    "$uv" pip install -q --python "$VENV/bin/python" --no-deps -e "$ROOT" >&2 || die "installing beam-pipelines failed"
    echo "$sum" >"$stamp"
}

link() {
    mkdir -p "$AIRFLOW_HOME/dags"
    "$VENV/bin/python" -m beam_pipelines.orchestrate link "$SPECS" "$AIRFLOW_HOME/dags" >/dev/null ||
        die "linking the specs of $SPECS failed"
}

migrate() {
    mkdir -p "$AIRFLOW_HOME"
    "$VENV/bin/airflow" db migrate >"$AIRFLOW_HOME/migrate.log" 2>&1 ||
        die "airflow db migrate failed (see $AIRFLOW_HOME/migrate.log)"
}

url() { echo "http://127.0.0.1:$PORT"; }

running() { [[ -f $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

healthy() {
    "$VENV/bin/python" - "$(url)" <<'EOF'
import json, sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1] + "/api/v2/monitor/health", timeout=5) as r:
        health = json.load(r)
except Exception:
    sys.exit(1)
parts = ("metadatabase", "scheduler", "dag_processor", "triggerer")
sys.exit(0 if all((health.get(p) or {}).get("status") == "healthy" for p in parts) else 1)
EOF
}

start() {
    install
    if running; then
        healthy && { url; return 0; }
    fi
    link
    migrate
    setsid "$VENV/bin/airflow" standalone >"$LOG" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
    if [[ -n ${AIRFLOW_OWNER_PID:-} ]]; then
        local owner=$AIRFLOW_OWNER_PID pid
        pid=$(cat "$PIDFILE")
        # Stops Airflow once the owner has exited (a test run that was killed).
        (while kill -0 "$owner" 2>/dev/null && kill -0 "$pid" 2>/dev/null; do sleep 2; done
            kill -TERM -- "-$pid" 2>/dev/null || true) >/dev/null 2>&1 </dev/null &
        disown
    fi
    local waited=0
    until healthy; do
        running || die "airflow standalone exited (see $LOG): $(tail -n 3 "$LOG" | tr '\n' ' ')"
        ((waited >= START_TIMEOUT)) && die "airflow not healthy after ${START_TIMEOUT}s (see $LOG)"
        sleep 2
        waited=$((waited + 2))
    done
    url
}

stop() {
    running || { rm -f "$PIDFILE"; return 0; }
    local pid
    pid=$(cat "$PIDFILE")
    kill -TERM -- "-$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 1
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$PIDFILE"
}

cmd=${1:-}
shift || true
case $cmd in
    install) install ;;
    link) install && link ;;
    run)
        install
        link
        [[ -f $AIRFLOW_HOME/airflow.db ]] || migrate
        exec "$VENV/bin/airflow" "$@"
        ;;
    python)
        install
        link
        exec "$VENV/bin/python" "$@"
        ;;
    start) start ;;
    stop) stop ;;
    status) if running && healthy; then echo "healthy at $(url)"; else echo "not running"; exit 1; fi ;;
    url) url ;;
    *) die "usage: scripts/airflow.sh install|link|run ARGS...|python ARGS...|start|stop|status|url" ;;
esac
