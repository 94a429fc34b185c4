"""scripts/pubsub.sh and scripts/kinesis.sh (moto's server, shared with scripts/s3.sh through
scripts/moto.sh): start, restart, status, stop, and their errors."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from tests.services import KINESIS_SH, PUBSUB_SH, ROOT, ServiceError, free_port, start_kinesis, start_pubsub

PORT_ENV = {PUBSUB_SH: "PUBSUB_PORT", KINESIS_SH: "KINESIS_PORT"}
SCRIPTS = pytest.mark.parametrize("script", [PUBSUB_SH, KINESIS_SH], ids=["pubsub", "kinesis"])


def _script(script, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(script), *args],
        cwd=ROOT,
        env={**os.environ, "PYTHON": sys.executable, **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
    )


@SCRIPTS
def test_start_restart_status_stop(script):
    port = str(free_port())
    env = {PORT_ENV[script]: port}
    started = _script(script, "start", **env)
    try:
        assert started.returncode == 0, started.stderr
        endpoint = _script(script, "endpoint", **env).stdout.strip()
        assert endpoint in (f"127.0.0.1:{port}", f"http://127.0.0.1:{port}")
        with socket.create_connection(("127.0.0.1", int(port)), timeout=5):
            pass
        again = _script(script, "start", **env)
        assert again.returncode == 0 and "already running" in again.stdout, again.stderr
        assert _script(script, "status", **env).returncode == 0
    finally:
        stopped = _script(script, "stop", **env)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stderr
    assert _script(script, "status", **env).returncode == 1


@pytest.mark.parametrize("script, start", [(PUBSUB_SH, start_pubsub), (KINESIS_SH, start_kinesis)],
                         ids=["pubsub", "kinesis"])  # fmt: skip
def test_a_taken_port_is_one_error_line(script, start):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _script(script, "start", **{PORT_ENV[script]: str(port)})
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 1, proc.stdout
        assert len(lines) == 1 and lines[0].startswith(f"{script.name}: port {port} on 127.0.0.1 is taken"), lines
        with pytest.raises(ServiceError, match=f"port {port} on 127.0.0.1 is taken"):
            start(port)


@SCRIPTS
def test_unknown_command_is_a_usage_line(script):
    proc = _script(script, "frobnicate")
    assert proc.returncode == 1 and "usage:" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_the_pubsub_build_is_named_by_its_sources():
    installed = _script(PUBSUB_SH, "install")
    assert installed.returncode == 0, installed.stderr
    path = installed.stdout.strip().split(": ", 1)[1]
    assert (ROOT / path).is_file() and os.access(ROOT / path, os.X_OK)
    assert _script(PUBSUB_SH, "install").stdout.startswith("Pub/Sub emulator already built")
