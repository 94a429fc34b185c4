"""Staging and publishing of a run's outputs, and checks on what was published.

A run writes under ``<output>/_staging/<run_id>/``; only a finished run is published, by
replacing each output directory whole, so no file of an earlier run is left beside the new
ones and a failed run leaves the previous outputs as they were.
"""

from __future__ import annotations

import os
import shutil
import threading
import uuid

import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from beam_pipelines import object_stores
from transforms.sinks.files import join_path

OUTPUTS = ("curated", "aggregates", "dlq", "_state", "_run")
# Replaced only by a run that staged it: a source's saved cursor stays through runs (and
# redrives) that do not read that source.
KEPT_IF_NOT_STAGED = ("_state",)


def is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def _local(path: str) -> str:
    return path[len("file://") :] if path.startswith("file://") else path


def new_run_id(clock) -> str:
    """A run id from the injected clock plus randomness (sorts by start time)."""
    return clock().strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]


def staging_dir(output: str, run_id: str) -> str:
    return join_path(output, "_staging", run_id)


def check_writable(output: str) -> None:
    """Raises OSError with a plain message when ``output`` cannot be written."""
    probe = join_path(output, "_staging", ".write-probe-" + uuid.uuid4().hex[:8])
    try:
        if is_local(output):
            os.makedirs(os.path.dirname(_local(probe)), exist_ok=True)
        with FileSystems.create(probe) as fh:
            fh.write(b"ok")
        object_stores.delete([probe])
    except Exception as e:  # any filesystem's error means the same thing to the user
        raise OSError(f"output {output!r} is not writable: {object_stores.plain_error(e)}") from e


def _files_under(root: str) -> list[str]:
    pattern = join_path(root, "**")
    try:
        result = FileSystems.match([pattern])[0]
    except Exception:  # noqa: BLE001 - a missing prefix matches nothing on some filesystems
        return []
    return sorted(m.path for m in result.metadata_list)


def publish(staging: str, output: str) -> threading.Thread | None:
    """Moves each staged output directory into place, replacing the previous one whole.

    On a local filesystem what is left of the staging directory (the shuffle's scratch files,
    gigabytes on a large run) is removed by the returned thread, so the caller can go on with
    the report meanwhile; join it before exiting.
    """
    if is_local(output):
        out, stage = _local(output), _local(staging)
        for name in OUTPUTS:
            src, dst = os.path.join(stage, name), os.path.join(out, name)
            old = os.path.join(out, "_staging", "replaced-" + os.path.basename(stage) + "-" + name)
            if not os.path.exists(src):
                if name in KEPT_IF_NOT_STAGED:
                    continue
                os.makedirs(src)
            if os.path.exists(dst):
                os.replace(dst, old)
            os.replace(src, dst)
            if os.path.exists(old):
                shutil.rmtree(old)
        cleanup = threading.Thread(target=_remove_staging, args=(stage, out), name="remove-staging")
        cleanup.start()
        return cleanup
    for name in OUTPUTS:
        dst = join_path(output, name)
        if name in KEPT_IF_NOT_STAGED and not _files_under(join_path(staging, name)):
            continue
        stale = _files_under(dst)
        if stale:
            object_stores.delete(stale)
        src_root = join_path(staging, name)
        sources = _files_under(src_root)
        if sources:
            targets = [dst + s[len(src_root) :] for s in sources]
            object_stores.move(sources, targets)
    discard(staging)  # what is left: scratch files of the shuffle
    return None


def _remove_staging(stage: str, out: str) -> None:
    shutil.rmtree(stage, ignore_errors=True)
    try:
        os.rmdir(os.path.join(out, "_staging"))
    except OSError:
        pass


def discard(staging: str) -> None:
    """Removes a failed run's staging directory."""
    if is_local(staging):
        path = _local(staging)
        if os.path.isfile(path):
            os.remove(path)
        shutil.rmtree(path, ignore_errors=True)
    else:
        files = _files_under(staging)
        if files:
            object_stores.delete(files)


def staging_runs(output: str) -> dict[str, int]:
    """Each entry of ``<output>/_staging/`` (a run's scratch, or a replaced output left by a
    publish that was cut off) -> its bytes."""
    root = join_path(output, "_staging")
    if is_local(output):
        local = _local(root)
        if not os.path.isdir(local):
            return {}
        sizes = {}
        for name in sorted(os.listdir(local)):
            path = os.path.join(local, name)
            sizes[name] = os.path.getsize(path) if os.path.isfile(path) else _tree_bytes(path)
        return sizes
    sizes: dict[str, int] = {}
    try:
        found = FileSystems.match([join_path(root, "**")])[0].metadata_list
    except Exception:  # noqa: BLE001 - a missing prefix matches nothing on some filesystems
        return {}
    for m in found:
        name = m.path[len(root) :].lstrip("/").split("/", 1)[0]
        sizes[name] = sizes.get(name, 0) + m.size_in_bytes
    return dict(sorted(sizes.items()))


def _tree_bytes(path: str) -> int:
    total = 0
    for top, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(top, f)).st_size
            except FileNotFoundError:  # removed meanwhile
                pass
    return total


def remove_abandoned(output: str, live: str) -> dict[str, int]:
    """Removes every entry of ``<output>/_staging/`` except run ``live``'s; returns what went (name -> bytes).

    Only the holder of the output's lease may call it: one run writes an output at a time, so
    every other run's staging belongs to a run that is dead (or fenced off from publishing).
    """
    gone = {name: size for name, size in staging_runs(output).items() if name != live}
    for name in gone:
        discard(join_path(output, "_staging", name))
    return gone


def count_published(output: str) -> dict:
    """Rows actually present in the published files (parquet footers, JSON lines)."""
    counts = {"curated_files": 0, "curated_rows": 0, "aggregate_rows": 0, "dead_letter_rows": 0}
    for path in _files_under(join_path(output, "curated")):
        if path.endswith(".parquet"):
            with FileSystems.open(path) as fh:
                counts["curated_rows"] += pq.ParquetFile(fh).metadata.num_rows
            counts["curated_files"] += 1
    for path in _files_under(join_path(output, "aggregates")):
        if path.endswith(".parquet"):
            with FileSystems.open(path) as fh:
                counts["aggregate_rows"] += pq.ParquetFile(fh).metadata.num_rows
    for path in _files_under(join_path(output, "dlq")):
        if path.endswith(".jsonl"):
            with FileSystems.open(path) as fh:
                counts["dead_letter_rows"] += sum(1 for line in fh if line.strip())
    return counts
