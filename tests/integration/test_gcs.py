"""The events pipeline on gs:// input and output, against a local GCS emulator (fake-gcs-server).

scripts/gcs.sh builds and starts the emulator; if it cannot, the tests fail (they are never skipped).
"""

from __future__ import annotations

import os
from unittest import mock

import pytest

from tests.e2e.helpers import cli, datagen
from tests.integration.object_store_runs import ROWS, Store, missing_bucket_fails, run_matches_local_run, upload


@pytest.fixture(scope="module")
def gcs(gcs_endpoint):
    """An anonymous google-cloud-storage client of the emulator."""
    from google.cloud import storage

    # The client reads the emulator's address when it is made; the test session's environment stays as it was.
    with mock.patch.dict(os.environ, {"STORAGE_EMULATOR_HOST": gcs_endpoint}):
        return storage.Client.create_anonymous_client()


def _store(gcs, gcs_endpoint: str, bucket: str) -> Store:
    b = gcs.bucket(bucket)
    return Store(
        scheme_root=f"gs://{bucket}",
        put=lambda key, data: b.blob(key).upload_from_string(data),
        get=lambda key: b.blob(key).download_as_bytes(),
        keys=lambda prefix: sorted(o.name for o in gcs.list_blobs(bucket, prefix=prefix)),
        # --no_auth: no credential lookup (Beam would retry for ~30 s before going on anonymously).
        flags=["--no_auth"],
        env={"STORAGE_EMULATOR_HOST": gcs_endpoint},
    )


@pytest.fixture(scope="module", params=("jsonl", "parquet"))
def events(request, tmp_path_factory, gcs, gcs_endpoint):
    """One dirty data set in a fresh bucket, and the same files' outputs from a local run."""
    fmt = request.param
    base = tmp_path_factory.mktemp(f"gcs-{fmt}")
    data = datagen(base / "in", fmt, rows=ROWS, dirty=0.2, files=2)
    bucket = f"events-{fmt}"
    gcs.create_bucket(bucket)
    store = _store(gcs, gcs_endpoint, bucket)
    upload(store, data)
    local = base / "local"
    proc = cli("--pipeline=events", f"--input={data}/*.{fmt}", f"--output={local}")
    assert proc.returncode == 0, proc.stderr
    return fmt, store, local


def test_gcs_run_matches_local_run(events):
    fmt, store, local = events
    run_matches_local_run(store, fmt, local)


def test_gcs_missing_bucket_is_one_error_line(tmp_path, gcs, gcs_endpoint):
    gcs.create_bucket("present")
    store = _store(gcs, gcs_endpoint, "present")
    upload(store, datagen(tmp_path / "in", "jsonl", rows=10, dirty=0.0))
    missing_bucket_fails(store, "gs://no-such-bucket", "jsonl", "Not Found")
