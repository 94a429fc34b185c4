"""The events pipeline on azfs:// input and output, against a local Azure Blob Storage emulator (Azurite).

scripts/azure.sh installs and starts the emulator; if it cannot, the tests fail (they are never skipped).
"""

from __future__ import annotations

import pytest

from tests.e2e.helpers import cli, datagen
from tests.integration.object_store_runs import ROWS, Store, missing_bucket_fails, run_matches_local_run, upload

ACCOUNT = "devstoreaccount1"


@pytest.fixture(scope="module")
def blobs(azure_connection_string):
    from azure.storage.blob import BlobServiceClient

    client = BlobServiceClient.from_connection_string(azure_connection_string)
    yield client
    client.close()


def _store(blobs, conn: str, container: str) -> Store:
    c = blobs.get_container_client(container)
    return Store(
        scheme_root=f"azfs://{ACCOUNT}/{container}",
        put=lambda key, data: c.upload_blob(key, data, overwrite=True),
        get=lambda key: c.download_blob(key).readall(),
        keys=lambda prefix: sorted(b.name for b in c.list_blobs(name_starts_with=prefix or None)),
        # Beam also reads AZURE_STORAGE_CONNECTION_STRING; the flag is what the README shows.
        flags=[f"--azure_connection_string={conn}"],
    )


@pytest.fixture(scope="module", params=("jsonl", "parquet"))
def events(request, tmp_path_factory, blobs, azure_connection_string):
    """One dirty data set in a fresh container, and the same files' outputs from a local run."""
    fmt = request.param
    base = tmp_path_factory.mktemp(f"azure-{fmt}")
    data = datagen(base / "in", fmt, rows=ROWS, dirty=0.2, files=2)
    container = f"events-{fmt}"
    blobs.create_container(container)
    store = _store(blobs, azure_connection_string, container)
    upload(store, data)
    local = base / "local"
    proc = cli("--pipeline=events", f"--input={data}/*.{fmt}", f"--output={local}")
    assert proc.returncode == 0, proc.stderr
    return fmt, store, local


def test_azure_run_matches_local_run(events):
    fmt, store, local = events
    run_matches_local_run(store, fmt, local)


def test_azure_missing_container_is_one_error_line(tmp_path, blobs, azure_connection_string):
    blobs.create_container("present")
    store = _store(blobs, azure_connection_string, "present")
    upload(store, datagen(tmp_path / "in", "jsonl", rows=10, dirty=0.0))
    missing_bucket_fails(store, f"azfs://{ACCOUNT}/no-such-container", "jsonl", "ContainerNotFound")
