#!/usr/bin/env bash
# Installs everything the tests start (runner, servers, emulators, Airflow, a browser) before pytest runs.
#
#   scripts/test_services.sh
#
# Done once, before the test workers start, so that parallel workers never install the same thing at the
# same time, and so that the installs overlap each other: the two apt-get installs run one after the other
# (dpkg has one lock), the rest in parallel with them. Each install is a no-op when its cache is there.
# One line per item with its time; on a failure the item's log (.cache/test-services/ITEM.log) is named
# and the exit status is 1, so `make test` fails rather than letting the tests skip.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
LOGS=$ROOT/.cache/test-services
mkdir -p "$LOGS"
export PYTHON

# item NAME COMMAND...: runs COMMAND in the background with its output in NAME.log, then writes NAME.rc.
item() {
    local name=$1
    shift
    (
        start=$SECONDS
        rc=0
        "$@" >"$LOGS/$name.log" 2>&1 </dev/null || rc=$?
        echo "$rc $((SECONDS - start))" >"$LOGS/$name.rc"
    ) &
}

apt_items() {
    bash scripts/postgres.sh install && bash scripts/chromium.sh
}

rm -f "$LOGS"/*.rc
item apt apt_items
item prism "$PYTHON" -m beam_pipelines.artifacts fetch --prism
item kafka bash scripts/kafka.sh fetch
item gcs bash scripts/gcs.sh install
item pubsub bash scripts/pubsub.sh install
item kinesis bash scripts/kinesis.sh install
item azurite bash scripts/azure.sh install
item airflow bash scripts/airflow.sh install
wait

failed=0
for rc in "$LOGS"/*.rc; do
    name=$(basename "$rc" .rc)
    read -r code took <"$rc"
    if [[ $code == 0 ]]; then
        echo "test services: $name ready (${took}s)"
    else
        echo "test services: $name failed (exit $code); see ${LOGS#"$ROOT"/}/$name.log: $(tail -n 1 "$LOGS/$name.log")" >&2
        failed=1
    fi
done
exit $failed
