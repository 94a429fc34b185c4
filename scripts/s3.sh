#!/usr/bin/env bash
# A local S3-compatible server (moto) for the integration tests and for trying s3:// paths by hand.
#
#   scripts/s3.sh start|stop|status|endpoint
#
# S3_PORT (default 5055) and S3_HOST (default 127.0.0.1) choose where it listens; PYTHON is an
# interpreter with moto[server] installed (default: the project's .venv). The pid file and log
# are .cache/s3/moto-PORT.{pid,log}, per port, so a test run on a free port leaves a server
# started by hand alone. Credentials: any key id and secret; region us-east-1. scripts/moto.sh
# does the work (the same server also answers Kinesis: scripts/kinesis.sh).
set -euo pipefail
MOTO_PORT=${S3_PORT:-5055} MOTO_HOST=${S3_HOST:-127.0.0.1} MOTO_DIR=.cache/s3 MOTO_WHAT="S3 (moto)" \
    MOTO_SCRIPT=s3.sh MOTO_START_TIMEOUT=${S3_START_TIMEOUT:-30} exec bash "$(dirname "$0")/moto.sh" "$@"
