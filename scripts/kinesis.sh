#!/usr/bin/env bash
# A local AWS Kinesis Data Streams server (moto's server mode) for the tests and demos.
#
#   scripts/kinesis.sh install|start|stop|status|endpoint
#
# install   checks that moto[server] (requirements-dev.txt) is installed: there is nothing to build.
# start     starts it on 127.0.0.1:KINESIS_PORT; `endpoint` prints its URL, the endpoint_url of boto3's
#           kinesis client (any key id and secret, region us-east-1). Streams live in its memory.
# stop      stops it (its streams go with it).
#
# Environment: KINESIS_PORT (default 4567), KINESIS_START_TIMEOUT (s, default 30), KINESIS_OWNER_PID (stop the
# server once that process has exited), PYTHON. Pid file and log: .cache/services/kinesis/moto-PORT.{pid,log}.
# scripts/moto.sh does the work (the same server answers S3: scripts/s3.sh).
set -euo pipefail
MOTO_PORT=${KINESIS_PORT:-4567} MOTO_HOST=127.0.0.1 MOTO_DIR=.cache/services/kinesis MOTO_WHAT="Kinesis (moto)" \
    MOTO_SCRIPT=kinesis.sh MOTO_START_TIMEOUT=${KINESIS_START_TIMEOUT:-30} MOTO_OWNER_PID=${KINESIS_OWNER_PID:-} \
    exec bash "$(dirname "$0")/moto.sh" "$@"
