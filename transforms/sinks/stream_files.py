"""WriteTableFiles: each table element straight to files, for unbounded input.

Batch sinks group the whole input into one file per partition; a stream cannot wait for the
end. Here every element is written as it comes, split by UTC date (``dt=YYYY-MM-DD/``) and
event-time window, into a file named by a hash of its rows' identity column: the same rows
always get the same name, so a replayed element overwrites its own file instead of adding a
copy. Files appear atomically (written under a temporary name, then renamed).
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime, timedelta, timezone

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystems import FileSystems

from transforms.sinks.files import join_path

__all__ = ["WriteTableFiles"]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_DAY_US = 86_400_000_000


def content_name(ids: pa.Array) -> str:
    """A stable 16-hex-digit name for a set of row identities (order does not matter)."""
    text = pc.fill_null(ids.cast(pa.large_string()), "")
    ordered = pc.take(text, pc.sort_indices(text))
    digest = hashlib.sha1()
    for buf in ordered.buffers()[1:]:  # offsets and UTF-8 bytes, both fresh from take()
        if buf is not None:
            digest.update(memoryview(buf))
    return digest.hexdigest()[:16]


class _WriteFn(beam.DoFn):
    def __init__(self, root, encode, suffix, id_column, sort_by, date_field, window_us):
        self._root, self._encode, self._suffix = root, encode, suffix
        self._id, self._sort_by = id_column, sort_by
        self._date, self._window_us = date_field, window_us

    def setup(self):
        self._files = beam.metrics.Metrics.counter("write", "stream_files")

    def process(self, table: pa.Table):
        if table.num_rows == 0:
            return
        if self._date is None:
            groups = np.zeros(table.num_rows, dtype=np.int64)
        else:
            micros = table.column(self._date).cast(pa.int64()).to_numpy(zero_copy_only=False)
            groups = micros - np.mod(micros, self._window_us)
        for start in np.unique(groups):
            part = table.filter(pa.array(groups == start))
            if self._sort_by:
                part = part.sort_by([(c, "ascending") for c in self._sort_by])
            name = content_name(part.column(self._id).combine_chunks())
            if self._date is None:
                folder, filename = self._root, f"part-{name}{self._suffix}"
            else:
                when = _EPOCH + timedelta(microseconds=int(start))
                folder = join_path(self._root, f"dt={when:%Y-%m-%d}")
                filename = f"part-w{when:%H%M}-{name}{self._suffix}"
            path = join_path(folder, filename)
            tmp = join_path(folder, f".tmp-{uuid.uuid4().hex}{self._suffix}")
            self._encode(part, tmp)
            if FileSystems.exists(path):
                FileSystems.delete([path])
            FileSystems.rename([tmp], [path])
            self._files.inc()
            yield {"path": path, "rows": part.num_rows}


class WriteTableFiles(beam.PTransform):
    """Writes every table element as it arrives, one file per (date, window) it spans.

    Args:
        root: Output directory on any Beam filesystem.
        encode: ``encode(table, path)`` writes one file (e.g. ``write_parquet``).
        suffix: File name suffix (``.parquet``, ``.jsonl``).
        id_column: Column identifying a row (e.g. ``event_id``, ``source``); file names hash it.
        sort_by: Row order inside each file.
        date_field: timestamp column naming the ``dt=`` partition and the window in the file
            name; None writes flat files.
        window_seconds: Event-time window size used in file names.

    Returns a PCollection of ``{"path", "rows"}`` dicts, one per file written.
    """

    def __init__(self, root: str, encode, suffix: str, id_column: str, sort_by: tuple[str, ...] = (),
                 date_field: str | None = None, window_seconds: int = 3600, label: str | None = None):  # fmt: skip
        super().__init__(label)
        if not root or not id_column:
            raise ValueError("root and id_column are required")
        if window_seconds <= 0 or 86_400 % window_seconds:
            raise ValueError("window_seconds must divide a day")
        self._fn = _WriteFn(root, encode, suffix, id_column, tuple(sort_by), date_field, window_seconds * 1_000_000)

    def expand(self, tables):
        return tables | "Write" >> beam.ParDo(self._fn).with_input_types(pa.Table).with_output_types(dict)
