"""Shared file writing for sinks: tables keyed by relative path -> one file per path.

Output names come from content (partition value, bucket), never from a worker or a clock,
and rows are sorted before writing, so the same input writes the same bytes.
"""

from __future__ import annotations

import posixpath

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

__all__ = ["WriteKeyedTables", "join_path"]


def join_path(root: str, *parts: str) -> str:
    """Joins path parts on any Beam filesystem (``/`` separators inside the parts too)."""
    if "://" in root:
        return posixpath.join(root.rstrip("/"), *parts)
    return FileSystems.join(root, *parts)


def write_parquet(table: pa.Table, path: str) -> None:
    with FileSystems.create(path, mime_type="application/octet-stream") as fh:
        pq.write_table(table, fh, compression="zstd")


class _WriteFn(beam.DoFn):
    def __init__(self, root: str, sort_by: tuple[str, ...], encode):
        self._root, self._sort_by, self._encode = root, sort_by, encode

    def process(self, element):
        relpath, tables = element
        table = pa.concat_tables(list(tables), promote_options="permissive").combine_chunks()
        if self._sort_by:
            table = table.sort_by([(c, "ascending") for c in self._sort_by])
        path = join_path(self._root, relpath)
        self._encode(table, path)
        beam.metrics.Metrics.counter("write", "files").inc()
        yield {"path": path, "rows": table.num_rows}


class WriteKeyedTables(beam.PTransform):
    """Writes ``(relative path, table)`` pairs: all tables of one path become one file.

    Args:
        root: Directory (any Beam filesystem) the relative paths are under.
        sort_by: Columns that order the rows of each file (makes output deterministic).
        encode: ``encode(table, path)`` writes one file (e.g. :func:`write_parquet`).

    Returns a PCollection of ``{"path", "rows"}`` dicts, one per file written.
    """

    def __init__(self, root: str, sort_by: tuple[str, ...], encode=write_parquet, label: str | None = None):
        super().__init__(label)
        if not root:
            raise ValueError("root is required")
        self._root, self._sort_by, self._encode = root, tuple(sort_by), encode

    def expand(self, keyed):
        return (
            keyed
            | "GlobalWindow" >> beam.WindowInto(beam.window.GlobalWindows())
            | "GroupByFile" >> beam.GroupByKey().with_input_types(beam.typehints.KV[str, pa.Table])
            | "WriteFiles" >> beam.ParDo(_WriteFn(self._root, self._sort_by, self._encode))
        )
