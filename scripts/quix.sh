#!/usr/bin/env bash
# The Quix Streams peer's virtualenv for the streaming benchmark (benchmarks/stream_peers/quix.py).
#
#   scripts/quix.sh [setup|python]
#
# setup   (default) creates .cache/peers/quix/ with uv from benchmarks/stream_peers/requirements-quix.txt, once per
#         version of that file; the last stdout line is the interpreter's path.
# python  prints the interpreter's path (setting the virtualenv up first when needed).
#
# quixstreams pins confluent-kafka and pydantic below the project's own pins, so it cannot share .venv.
# Environment: UV (default .venv/bin/uv, else uv on PATH), PYTHON_VERSION (default 3.11).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

REQS=benchmarks/stream_peers/requirements-quix.txt
VENV=$ROOT/.cache/peers/quix
UV=${UV:-}
[[ -n $UV ]] || { [[ -x .venv/bin/uv ]] && UV=.venv/bin/uv; } || UV=$(command -v uv || true)

die() {
    echo "quix.sh: $*" >&2
    exit 1
}

setup() {
    local stamp=$VENV/.requirements
    if [[ -f $stamp ]] && cmp -s "$stamp" "$REQS"; then
        return
    fi
    [[ -n $UV ]] || die "uv not found: run 'make venv' first (it installs uv into .venv), or put uv on PATH"
    mkdir -p "$(dirname "$VENV")"
    exec 9>"$VENV.lock"
    flock 9
    if [[ -f $stamp ]] && cmp -s "$stamp" "$REQS"; then
        return
    fi
    echo "quix.sh: creating ${VENV#"$ROOT"/} from $REQS" >&2
    rm -rf "$VENV"
    "$UV" venv -q --python "${PYTHON_VERSION:-3.11}" "$VENV" >&2 || die "uv could not create $VENV"
    "$UV" pip install -q --compile-bytecode --python "$VENV/bin/python" -r "$REQS" >&2 || die "uv could not install $REQS"
    cp "$REQS" "$stamp"
}

case ${1:-setup} in
setup | python)
    setup
    echo "$VENV/bin/python"
    ;;
*) die "usage: scripts/quix.sh [setup|python]" ;;
esac
