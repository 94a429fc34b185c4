#!/usr/bin/env bash
# The PyFlink peer of the streaming benchmark (benchmarks/stream_peers/pyflink.py): its virtualenv and the
# connector jars its Flink SQL job loads.
#
#   scripts/pyflink.sh [setup|python|jars]
#
# setup   (default) creates .cache/peers/pyflink/venv/ with uv from benchmarks/stream_peers/requirements-pyflink.txt
#         (once per version of that file) and fetches the Kafka SQL connector, the JDBC connector with its
#         PostgreSQL dialect and the PostgreSQL driver from Maven Central into .cache/peers/pyflink/jars/ (once);
#         prints the interpreter's path, then the jars' directory.
# python  prints the interpreter's path; jars prints the jars' directory (each setting up first when needed).
#
# apache-flink pins its own apache-beam, pandas, numpy and pyarrow, so it cannot share .venv. The connectors must
# match Flink's minor version: 2.0 is the newest with both a Kafka SQL and a JDBC connector published.
# Needs uv (.venv/bin/uv after 'make venv', or on PATH), Java 11 or 17, and mvn.
# Environment: UV, PYTHON_VERSION (default 3.11).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

REQS=benchmarks/stream_peers/requirements-pyflink.txt
BASE=$ROOT/.cache/peers/pyflink
VENV=$BASE/venv
JARS=$BASE/jars
COORDS=(
    org.apache.flink:flink-sql-connector-kafka:4.0.1-2.0
    org.apache.flink:flink-connector-jdbc-core:4.0.0-2.0
    org.apache.flink:flink-connector-jdbc-postgres:4.0.0-2.0
    org.postgresql:postgresql:42.7.8
)
UV=${UV:-}
[[ -n $UV ]] || { [[ -x .venv/bin/uv ]] && UV=.venv/bin/uv; } || UV=$(command -v uv || true)

die() {
    echo "pyflink.sh: $*" >&2
    exit 1
}

venv() {
    local stamp=$VENV/.requirements
    if [[ -f $stamp ]] && cmp -s "$stamp" "$REQS"; then
        return
    fi
    [[ -n $UV ]] || die "uv not found: run 'make venv' first (it installs uv into .venv), or put uv on PATH"
    echo "pyflink.sh: creating ${VENV#"$ROOT"/} from $REQS" >&2
    rm -rf "$VENV"
    "$UV" venv -q --python "${PYTHON_VERSION:-3.11}" "$VENV" >&2 || die "uv could not create $VENV"
    "$UV" pip install -q --compile-bytecode --python "$VENV/bin/python" -r "$REQS" >&2 || die "uv could not install $REQS"
    cp "$REQS" "$stamp"
}

jars() {
    local want=${COORDS[*]} tmp coords artifact version
    if [[ -f $JARS/.coords ]] && [[ $(cat "$JARS/.coords") == "$want" ]]; then
        return
    fi
    command -v mvn >/dev/null || die "mvn not found (Maven fetches the connector jars; Debian: apt-get install maven)"
    command -v java >/dev/null || die "java not found (Flink runs on Java 11 or 17; Debian: apt-get install default-jdk-headless)"
    tmp=$(mktemp -d "$BASE/.jars-XXXXXX")
    for coords in "${COORDS[@]}"; do
        echo "pyflink.sh: fetching $coords" >&2
        # -U: Maven otherwise remembers a refused artifact for a day and does not ask again.
        if ! mvn -B -q -U dependency:copy -Dartifact="$coords:jar" -Dtransitive=false -DoutputDirectory="$tmp" \
            >"$BASE/fetch.log" 2>&1; then
            rm -rf "$tmp"
            die "Maven could not fetch $coords; see ${BASE#"$ROOT"/}/fetch.log"
        fi
        IFS=: read -r _ artifact version <<<"$coords"
        [[ -f $tmp/$artifact-$version.jar ]] || die "Maven fetched no $artifact-$version.jar"
    done
    echo "$want" >"$tmp/.coords"
    rm -rf "$JARS"
    mv "$tmp" "$JARS"
}

setup() {
    mkdir -p "$BASE"
    # Two runs at once set up once.
    exec 9>"$BASE/.lock"
    flock 9
    venv
    jars
}

case ${1:-setup} in
setup)
    setup
    echo "$VENV/bin/python"
    echo "$JARS"
    ;;
python)
    setup
    echo "$VENV/bin/python"
    ;;
jars)
    setup
    echo "$JARS"
    ;;
*) die "usage: scripts/pyflink.sh [setup|python|jars]" ;;
esac
