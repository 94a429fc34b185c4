"""Local Google Cloud Storage and Azure Blob Storage emulators for tests.

``scripts/gcs.sh`` (fake-gcs-server, built with Go) and ``scripts/azure.sh`` (Azurite, from npm) install what they
need under ``.cache/services/`` and start the emulators on free ports, so a run never touches one started by hand.

Pytest fixtures (session scope; loaded for every test by ``pytest_plugins`` in tests/conftest.py):

* ``gcs_endpoint``: ``"http://127.0.0.1:PORT"``, the value for ``STORAGE_EMULATOR_HOST``; reach it without credentials
  (``google.cloud.storage.Client.create_anonymous_client()``, Beam's ``--no_auth``).
* ``azure_connection_string``: the connection string of Azurite's account ``devstoreaccount1`` (Beam's
  ``--azure_connection_string``; paths ``azfs://devstoreaccount1/CONTAINER/...``).

An emulator that cannot start fails the test with the script's error; it is never skipped. Without pytest, call
``start_gcs``/``stop_gcs`` and ``start_azurite``/``stop_azurite``; these raise ``ServiceError``.
"""

from __future__ import annotations

import pytest

from tests.services import ROOT, START_TIMEOUT_S, STOP_TIMEOUT_S, _run, _start_or_fail, free_port

__all__ = [
    "AZURE_SH",
    "GCS_SH",
    "azure_connection_string",
    "gcs_endpoint",
    "start_azurite",
    "start_gcs",
    "stop_azurite",
    "stop_gcs",
]

GCS_SH = ROOT / "scripts" / "gcs.sh"
AZURE_SH = ROOT / "scripts" / "azure.sh"


def start_gcs(port: int, owner_pid: int | None = None) -> str:
    """Starts (or finds running) fake-gcs-server, building it when missing; returns its endpoint.

    Args:
        port: The TCP port on 127.0.0.1.
        owner_pid: When this process exits without ``stop_gcs`` (a killed test run), the server is stopped.
    """
    env = {"GCS_PORT": str(port), "GCS_OWNER_PID": "" if owner_pid is None else str(owner_pid)}
    return _run(GCS_SH, ["start"], env, START_TIMEOUT_S)


def stop_gcs(port: int, keep_data: bool = False) -> None:
    """Stops the server on ``port`` (its buckets live in its memory) and removes its log unless ``keep_data``."""
    _run(GCS_SH, ["stop"], {"GCS_PORT": str(port), "KEEP_DATA": "1" if keep_data else "0"}, STOP_TIMEOUT_S)


def start_azurite(port: int, owner_pid: int | None = None) -> str:
    """Starts (or finds running) Azurite's Blob service, installing it when missing; returns its connection string.

    Args:
        port: The TCP port on 127.0.0.1.
        owner_pid: When this process exits without ``stop_azurite`` (a killed test run), the server is stopped and
            its data removed.
    """
    env = {"AZURE_PORT": str(port), "AZURE_OWNER_PID": "" if owner_pid is None else str(owner_pid)}
    _run(AZURE_SH, ["start"], env, START_TIMEOUT_S)
    return _run(AZURE_SH, ["connection-string"], env, STOP_TIMEOUT_S)


def stop_azurite(port: int, keep_data: bool = False) -> None:
    """Stops Azurite on ``port`` and removes its data unless ``keep_data``."""
    _run(AZURE_SH, ["stop"], {"AZURE_PORT": str(port), "KEEP_DATA": "1" if keep_data else "0"}, STOP_TIMEOUT_S)


@pytest.fixture(scope="session")
def gcs_endpoint():
    """A GCS emulator on a free port for the whole session; its endpoint (for ``STORAGE_EMULATOR_HOST``)."""
    port = free_port()
    endpoint = _start_or_fail("the GCS emulator (scripts/gcs.sh start)", start_gcs, stop_gcs, port)
    yield endpoint
    stop_gcs(port)


@pytest.fixture(scope="session")
def azure_connection_string():
    """Azurite's Blob service on a free port for the whole session; its account's connection string."""
    port = free_port()
    conn = _start_or_fail("Azurite (scripts/azure.sh start)", start_azurite, stop_azurite, port)
    yield conn
    stop_azurite(port)
