"""Staging and publishing of a run's outputs, and checks on what was published.

A run writes under ``<output>/_staging/<run_id>/``; only a finished run is published, by
replacing each output directory whole, so no file of an earlier run is left beside the new
ones and a failed run leaves the previous outputs as they were.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import shutil
import threading
import uuid

import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from beam_pipelines import object_stores
from transforms import faults
from transforms.sinks.files import join_path

log = logging.getLogger(__name__)

OUTPUTS = ("curated", "aggregates", "dlq", "_state", "_run")
# Replaced only by a run that staged it: a source's saved cursor stays through runs (and
# redrives) that do not read that source.
KEPT_IF_NOT_STAGED = ("_state",)
JOURNAL = "_publishing.json"  # present only while a publish is under way (or was cut off)


def is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def _local(path: str) -> str:
    return path[len("file://") :] if path.startswith("file://") else path


# The launcher's own directories under an output, besides the spec's sink paths.
OWN_DIRS = ("_staging", "_run", "_state", "_audit", "_erasure", "_lineage", "_history", "_profiles")


def escaping(output: str, paths) -> list[tuple[str, str]]:
    """``(path, where it leads)`` of each of ``paths`` (relative to the local ``output``) that a
    symbolic link under the output resolves to outside it: a run writing there would write
    outside the output."""
    root = os.path.realpath(_local(output))
    out = []
    for rel in dict.fromkeys(p.rstrip("/") for p in paths if p):
        real = os.path.realpath(os.path.join(root, rel))
        if os.path.commonpath([root, real]) != root:
            out.append((rel, real))
    return out


def check_output_paths(output: str, plan) -> None:
    """UsageError when a path a run writes under a local ``output`` (a sink's, a table's, a local
    cold tier's, the launcher's own) leads outside it through a symbolic link."""
    from beam_pipelines.errors import UsageError

    if "\x00" in output:
        raise UsageError(f"--output={output!r} holds a NUL byte")
    if not is_local(output):
        return
    paths = [*OWN_DIRS]
    for n in plan.sinks:
        paths.append(n.step.config.get("path"))
        cold = n.step.config.get("cold") or {}
        if cold and not cold["location"].startswith("s3://"):
            paths.append(cold["location"])
    for rel, real in escaping(output, [p for p in paths if isinstance(p, str)]):
        raise UsageError(f"--output={output}: {rel} leads to {real} through a symbolic link, outside the output "
                         "(a run writes only under its output)")  # fmt: skip


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


class NotPublished(OSError):
    """A publish failed before its commit point: nothing moved, the previous outputs stand."""


class PublishCutOff(OSError):
    """A publish failed after its commit point: the next holder of the output completes it."""


def _files_under_pattern(pattern: str) -> list[str]:
    try:
        return [m.path for m in FileSystems.match([pattern])[0].metadata_list]
    except Exception:  # noqa: BLE001 - a missing prefix matches nothing on some filesystems
        return []


def publish(staging: str, output: str, tables: list[dict] = ()) -> threading.Thread | None:
    """Moves each staged output directory into place, replacing the previous one whole, then
    commits the staged rows of ``tables`` (lakehouse journal entries, see
    ``lakehouse.table_entries``) into their Delta tables, one commit each.

    Crash-safe: the list of what is to move and commit is written to ``<output>/_publishing.json``
    first (the commit point) and removed last. A run killed in between leaves the journal, and the
    next holder of the output's lease completes the publish from it (``complete_cut_off``), so
    the outputs end as this run's, never as a mix of two runs, and no table commit is made twice
    (each carries a transaction version the table records).

    On a local filesystem what is left of the staging directory (the shuffle's scratch files,
    gigabytes on a large run) is removed by the returned thread, so the caller can go on with
    the report meanwhile; join it before exiting.
    """
    journal = {"run_id": posixpath.basename(staging.rstrip("/")), "staging": staging, "outputs": {}}
    for name in OUTPUTS:
        src = join_path(staging, name)
        if is_local(output):
            if not os.path.exists(_local(src)):
                if name in KEPT_IF_NOT_STAGED:
                    continue
                os.makedirs(_local(src))  # an empty output replaces the previous one too
            journal["outputs"][name] = None
        else:
            files = _files_under(src)
            if name in KEPT_IF_NOT_STAGED and not files:
                continue
            journal["outputs"][name] = [f[len(src) :] for f in files]
    if tables:
        journal["tables"] = list(tables)
    try:
        _write_journal(output, journal)
    except OSError as e:  # e.g. a full disk: the journal is not there, so nothing was published
        raise NotPublished(f"nothing published: {object_stores.plain_error(e)}") from e
    try:
        _complete(output, journal)
    except OSError as e:
        raise PublishCutOff(
            f"the publish of run {journal['run_id']} was cut off ({object_stores.plain_error(e)}); "
            f"the next run on {output}, or `python -m beam_pipelines.clean --output={output}`, completes it"
        ) from e
    if is_local(output):
        stage = _local(staging)
        cleanup = threading.Thread(target=_remove_staging, args=(stage, _local(output)), name="remove-staging")
        cleanup.start()
        return cleanup
    discard(staging)  # what is left: scratch files of the shuffle
    return None


def _journal_path(output: str) -> str:
    return join_path(output, JOURNAL)


def _write_journal(output: str, journal: dict) -> None:
    data = json.dumps(journal, indent=1, sort_keys=True).encode()
    path = _journal_path(output)
    if is_local(output):
        tmp = _local(path) + ".tmp"
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, _local(path))  # whole or absent: the commit point
        except OSError:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
    else:
        with FileSystems.create(path, mime_type="application/json") as fh:  # an object put is atomic
            fh.write(data)


def _read_journal(output: str) -> dict | None:
    path = _journal_path(output)
    if is_local(output):
        try:
            with open(_local(path), "rb") as fh:
                return json.loads(fh.read())
        except FileNotFoundError:
            return None
    # A glob lists by prefix, and finds nothing without an error on every store (exists()
    # raises on a missing blob on azfs).
    if path not in _files_under_pattern(path[:-1] + "*"):
        return None
    with FileSystems.open(path) as fh:
        return json.loads(fh.read())


def _complete(output: str, journal: dict) -> None:
    """Moves what the journal lists into place and commits its tables; each step is skipped
    when already done, so a publish cut off anywhere is completed by running this again."""
    staging = journal["staging"]
    for i, (name, files) in enumerate(journal["outputs"].items()):
        src, dst = join_path(staging, name), join_path(output, name)
        if is_local(output):
            src, dst = _local(src), _local(dst)
            old = os.path.join(_local(output), "_staging", f"replaced-{journal['run_id']}-{name}")
            if os.path.exists(src):
                if os.path.exists(dst):
                    os.replace(dst, old)
                os.replace(src, dst)
            if os.path.exists(old):
                shutil.rmtree(old)
        else:
            targets = {dst + rel for rel in files}
            stale = [f for f in _files_under(dst) if f not in targets]
            if stale:
                object_stores.delete(stale)
            sources = _files_under(src)
            if sources:
                object_stores.move(sources, [dst + s[len(src) :] for s in sources])
        if i == 0:
            faults.at("publish")
    if journal.get("tables"):
        from beam_pipelines.lakehouse import commit

        for entry in journal["tables"]:
            commit.complete(entry)
            faults.at("lakehouse:" + entry["layer"])
    if is_local(output):
        os.remove(_local(_journal_path(output)))
    else:
        object_stores.delete([_journal_path(output)])


def complete_cut_off(output: str) -> str | None:
    """Completes a publish that a crash cut off (see ``publish``); returns that run's id, or
    None when there was none. Only the holder of the output's lease may call it."""
    journal = _read_journal(output)
    if journal is None:
        return None
    _complete(output, journal)
    log.warning("completed the publish of run %s, which was cut off before all its outputs were in place",
                journal["run_id"])  # fmt: skip
    return journal["run_id"]


def cut_off(output: str) -> str | None:
    """The id of a run whose publish was cut off, without completing it (for ``--dry_run``)."""
    journal = _read_journal(output)
    return journal["run_id"] if journal else None


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
    if gone and is_local(output):
        try:
            os.rmdir(_local(join_path(output, "_staging")))  # only when nothing else is in it
        except OSError:
            pass
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
