"""scripts/gcs.sh and scripts/azure.sh: start, restart, status, stop, and their errors."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from tests.object_stores import AZURE_SH, GCS_SH, start_azurite, start_gcs
from tests.services import ROOT, ServiceError, free_port

PORT_ENV = {GCS_SH: "GCS_PORT", AZURE_SH: "AZURE_PORT"}


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


@pytest.mark.parametrize("script", [GCS_SH, AZURE_SH], ids=["gcs", "azure"])
def test_start_restart_status_stop(script):
    env = {PORT_ENV[script]: str(free_port())}
    started = _script(script, "start", **env)
    try:
        assert started.returncode == 0, started.stderr
        endpoint = started.stdout.strip().splitlines()[-1]
        assert endpoint == _script(script, "endpoint", **env).stdout.strip()
        assert endpoint.startswith(f"http://127.0.0.1:{env[PORT_ENV[script]]}")
        again = _script(script, "start", **env)
        assert again.returncode == 0 and "already running" in again.stdout, again.stderr
        assert again.stdout.strip().splitlines()[-1] == endpoint
        assert _script(script, "status", **env).returncode == 0
    finally:
        stopped = _script(script, "stop", **env)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stderr
    assert _script(script, "status", **env).returncode == 1


@pytest.mark.parametrize("script, start", [(GCS_SH, start_gcs), (AZURE_SH, start_azurite)], ids=["gcs", "azure"])
def test_a_taken_port_is_one_error_line(script, start):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _script(script, "start", **{PORT_ENV[script]: str(port)})
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 1, proc.stdout
        assert len(lines) == 1 and lines[0].startswith(f"{script.name}: port {port} on 127.0.0.1 is taken"), lines
        # What a fixture reports when it cannot start (and then fails the test).
        with pytest.raises(ServiceError, match=f"port {port} on 127.0.0.1 is taken"):
            start(port)


@pytest.mark.parametrize("script", [GCS_SH, AZURE_SH], ids=["gcs", "azure"])
def test_unknown_command_is_a_usage_line(script):
    proc = _script(script, "frobnicate")
    assert proc.returncode == 1 and "usage:" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_azure_connection_string_names_the_port():
    port = str(free_port())
    conn = _script(AZURE_SH, "connection-string", AZURE_PORT=port).stdout.strip()
    assert conn.startswith("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=")
    assert conn.endswith(f";BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")
