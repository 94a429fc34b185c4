"""Deleting and moving published files on object stores, and GCS without credentials.

``FileSystems.rename``/``delete`` on ``gs://`` send GCS batch requests (up to 100 operations in
one multipart call). Publishing here moves and deletes one object per request instead, a few at
a time: the same operations (``copyTo`` and ``DELETE`` on each object), with each object's error
reported on its own, and the same path on real GCS as on a local GCS emulator, whose batch
endpoint answers nothing to parts without a ``Content-ID`` header (which the google-cloud-storage
client does not send). Other filesystems (local, ``s3://``, ``azfs://``) keep Beam's own calls.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions

__all__ = ["delete", "move", "use_options"]

# Requests in flight at once: publishing waits on round trips, not on this process's CPU.
_CONCURRENT_REQUESTS = 16
# S3's retry budget unless the environment sets one (botocore reads these variables, in this
# process and in the workers it forks): throttling (503 SlowDown), 500s and reset connections
# on a share of requests made botocore's default of 3 attempts give up in the fault tests; 8
# attempts with its standard backoff (random, doubling, at most 20 s a wait) rode them out.
S3_RETRIES = {"AWS_RETRY_MODE": "standard", "AWS_MAX_ATTEMPTS": "8"}


def use_options(options: PipelineOptions) -> None:
    """Applies the flags the object stores need beyond ``FileSystems.set_options``.

    ``--no_auth`` (Beam's flag, which Beam itself applies only to submitting Dataflow jobs) also
    makes this process reach ``gs://`` anonymously: without it Beam looks for Google default
    credentials and, finding none, retries for about 30 s before going on anonymously. Meant for a
    local GCS emulator (``STORAGE_EMULATOR_HOST``) or public buckets; processes forked from this
    one (the direct runner's workers) inherit it.

    Also sets S3's retry budget (``S3_RETRIES``) where the environment sets none.
    """
    for name, value in S3_RETRIES.items():
        os.environ.setdefault(name, value)
    if not options.view_as(GoogleCloudOptions).no_auth:
        return
    from apache_beam.internal.gcp import auth

    # Beam keeps the credentials it found in this cache for the whole process; recording "none
    # found" is what its own lookup does when it gives up, and makes GcsIO use an anonymous client.
    with auth._Credentials._credentials_lock:
        auth._Credentials._credentials = None
        auth._Credentials._credentials_init = True


def _is_gcs(paths: list[str]) -> bool:
    return bool(paths) and paths[0].startswith("gs://")


def _each(items: list, op, path: str) -> None:
    """Runs ``op(client, item)`` on every item, one GCS client per thread; after all have run,
    raises OSError naming how many failed and the first error. ``path``: any of the items' paths."""
    local = threading.local()

    def run(item):
        if not hasattr(local, "gcs"):
            # The filesystem FileSystems set up for gs:// (with this run's options) makes the client.
            local.gcs = FileSystems.get_filesystem(path)._gcsIO()
        op(local.gcs, item)

    with ThreadPoolExecutor(max_workers=min(_CONCURRENT_REQUESTS, len(items))) as pool:
        futures = [pool.submit(run, item) for item in items]
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        raise OSError(f"{len(errors)} of {len(items)} object operation(s) failed; first: {errors[0]}") from errors[0]


def delete(paths: list[str]) -> None:
    """Deletes the files at ``paths`` (all on one filesystem)."""
    if not _is_gcs(paths):
        FileSystems.delete(paths)
        return
    _each(paths, lambda gcs, path: gcs.delete(path), paths[0])


def move(sources: list[str], targets: list[str]) -> None:
    """Moves each source file to its target (all on one filesystem): copy, then delete the source."""
    if len(sources) != len(targets):
        raise ValueError(f"{len(sources)} sources but {len(targets)} targets")
    if not _is_gcs(sources):
        FileSystems.rename(sources, targets)
        return

    def copy_then_delete(gcs, pair):
        gcs.copy(*pair)
        gcs.delete(pair[0])

    _each(list(zip(sources, targets)), copy_then_delete, sources[0])


def s3_get(client, bucket: str, key: str) -> tuple[bytes, str] | None:
    """An S3 object's bytes and ETag (for a conditional put after it), or None when there is none."""
    from botocore.exceptions import ClientError

    try:
        got = client.get_object(Bucket=bucket, Key=key)
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise
    return got["Body"].read(), got["ETag"]


def plain_error(e: BaseException) -> str:
    """One line saying what went wrong, from any filesystem's error: the innermost error of a
    Beam ``BeamIOError``, an Azure error's message and code, a failed GCS upload's HTTP status."""
    details = getattr(e, "exception_details", None)
    if isinstance(details, dict) and details:
        inner = next(iter(details.values()))
        if isinstance(inner, BaseException):
            return plain_error(inner)
    response = getattr(e, "response", None)
    code = getattr(e, "error_code", None)  # Azure: ContainerNotFound, AuthorizationFailure, ...
    if code is not None:
        return f"{_first_line(getattr(e, 'message', None) or str(e))} ({code})"
    status = getattr(response, "status_code", None)
    if isinstance(status, int) and e.args and str(e.args[0]).startswith("Request failed"):
        # google-resumable-media puts the status in its args, the server's words in the body.
        body = _first_line(getattr(response, "text", "") or "")
        with contextlib.suppress(ValueError, KeyError, AttributeError, TypeError):
            body = json.loads(body)["error"]["message"]  # GCS's JSON error body
        return f"HTTP {status}" + (f": {body}" if body else "")
    return _first_line(str(e)) or type(e).__name__


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")
