"""Shared file writing for sinks: tables keyed by relative path -> one file per path.

Output names come from content (partition value, bucket), never from a worker or a clock,
and rows are sorted before writing, so the same input writes the same bytes.
"""

from __future__ import annotations

import posixpath
import uuid

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindow, TimestampedValue
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from transforms import faults
from transforms.records import as_array

__all__ = ["WriteBundles", "WriteKeyedTables", "join_path", "spill", "spill_parts", "unspill"]


def join_path(root: str, *parts: str) -> str:
    """Joins path parts on any Beam filesystem (``/`` separators inside the parts too)."""
    if "://" in root:
        return posixpath.join(root.rstrip("/"), *parts)
    return FileSystems.join(root, *parts)


_DICTIONARY_SAMPLE = 8192


def dictionary_columns(table: pa.Table) -> list[str]:
    """Columns worth dictionary-encoding in parquet: those with few distinct values (at most
    one in 8) among the first rows. Encoding ids, emails or raw text as dictionaries costs
    more CPU than the whole rest of the write and gives larger files."""
    sample = table.slice(0, _DICTIONARY_SAMPLE)
    names = []
    for name, col in zip(sample.column_names, sample.columns):
        try:
            few = pc.count_distinct(col, mode="all").as_py() * 8 <= sample.num_rows
        except pa.ArrowNotImplementedError:  # nested types: keep Arrow's default
            few = True
        if few:
            names.append(name)
    return names


def statistics_columns(table: pa.Table, dictionary: list[str], sorted_by: tuple[str, ...] = ()) -> list[str]:
    """Columns whose min/max statistics can prune reads: all but strings of many distinct values
    (ids, emails, JSON text), whose row groups all span nearly the whole range, unless the
    rows are sorted by them. Those statistics were ~25% of a curated file's write time."""
    names = []
    for field in table.schema:
        text = pa.types.is_string(field.type) or pa.types.is_large_string(field.type) or pa.types.is_binary(field.type)
        if not text or field.name in dictionary or field.name in sorted_by:
            names.append(field.name)
    return names


def write_parquet(table: pa.Table, path: str, sorted_by: tuple[str, ...] = ()) -> None:
    """One zstd parquet file; ``sorted_by`` names the columns the rows are sorted by."""
    dictionary = dictionary_columns(table)
    with FileSystems.create(path, mime_type="application/octet-stream") as fh:
        pq.write_table(
            table,
            fh,
            compression="zstd",
            use_dictionary=dictionary,
            write_statistics=statistics_columns(table, dictionary, sorted_by),
        )


# Local scratch is written uncompressed and read back by mapping it: LZ4 would cost more CPU
# than the page cache saves (5M events: ~1.5 s of 19 s, scratch 1.0 GB vs 1.9 GB at its peak).
# Remote scratch (s3://, gs://, ...) is compressed: there the bytes cost more than the CPU.
_LOCAL_SPILL = pa.ipc.IpcWriteOptions()
_REMOTE_SPILL = pa.ipc.IpcWriteOptions(compression="lz4")


def _is_local(path: str) -> bool:
    return "://" not in path


def spill(table: pa.Table, directory: str) -> str:
    """Writes a table to a new Arrow stream file under ``directory``; returns its path."""
    path = join_path(directory, uuid.uuid4().hex + ".arrows")
    options = _LOCAL_SPILL if _is_local(path) else _REMOTE_SPILL
    with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
        with pa.ipc.new_stream(fh, table.schema, options=options) as writer:
            writer.write_table(table)
    return path


def spill_parts(parts: list[tuple[int, pa.Table]], directory: str) -> list[tuple[int, str]]:
    """Writes the keyed parts of one table (one schema); returns ``(key, reference)`` pairs
    that :func:`unspill` reads back.

    Local scratch gets one Arrow file per call, each part its own record batches, and a
    reference names the file and the batches: creating a file here costs ~0.5 ms, and one
    per partition per table was 1.1 s of a 5M-row run. Remote scratch keeps a file per part,
    so a merge downloads only its own partition.
    """
    if not _is_local(directory):
        return [(key, spill(part, join_path(directory, f"p={key:05d}"))) for key, part in parts]
    if not parts:
        return []
    path = join_path(directory, uuid.uuid4().hex + ".arrow")
    refs, at = [], 0
    with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
        with pa.ipc.new_file(fh, parts[0][1].schema, options=_LOCAL_SPILL) as writer:
            for key, part in parts:
                batches = part.to_batches()
                for batch in batches:
                    writer.write_batch(batch)
                refs.append((key, f"{path}#{at}:{at + len(batches)}"))
                at += len(batches)
    return refs


def unspill(refs: list[str]) -> list[pa.Table]:
    """Reads spilled tables back (paths from :func:`spill`, references from
    :func:`spill_parts`). Files stay until the run's scratch directory is removed, so a
    retried bundle finds them again."""
    tables = []
    for ref in refs:
        path, _, batches = ref.partition("#")
        if batches:
            first, stop = (int(x) for x in batches.split(":"))
            # Zero-copy: the buffers are the mapped file; the mapping outlives the closed file.
            with pa.memory_map(path) as source:
                reader = pa.ipc.open_file(source)
                tables.append(pa.Table.from_batches([reader.get_batch(i) for i in range(first, stop)], reader.schema))
        elif _is_local(path):
            with pa.memory_map(path) as source:
                tables.append(pa.ipc.open_stream(source).read_all())
        else:
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
                tables.append(pa.ipc.open_stream(fh).read_all())
    return tables


SPILL_FLUSH_ROWS = 250_000  # rows a worker holds before its tables are spilled together


class _SpillFn(beam.DoFn):
    """Spills the tables of a bundle together (see :func:`spill_parts`): one file per
    ``flush_rows`` rows or change of schema, not one per table."""

    def __init__(self, spill_dir: str, flush_rows: int = SPILL_FLUSH_ROWS):
        self._spill_dir, self._flush_rows = spill_dir, flush_rows

    def start_bundle(self):
        self._held, self._rows = [], 0

    def process(self, element, timestamp=beam.DoFn.TimestampParam):
        relpath, table = element
        if self._held and table.schema != self._held[0][1].schema:
            yield from self._flush(windowed=False)
        self._held.append((relpath, table, timestamp))
        self._rows += table.num_rows
        if self._rows >= self._flush_rows:
            yield from self._flush(windowed=False)

    def finish_bundle(self):
        yield from self._flush(windowed=True)

    def _flush(self, windowed: bool):
        held, self._held, self._rows = self._held, [], 0
        refs = spill_parts([(i, table) for i, (_, table, _) in enumerate(held)], self._spill_dir)
        for (relpath, _, ts), (_, ref) in zip(held, refs):
            # finish_bundle has no input element: its outputs name their (global) window.
            yield (
                WindowedValue((relpath, ref), ts, [GlobalWindow()])
                if windowed
                else TimestampedValue((relpath, ref), ts)
            )


class _WriteFn(beam.DoFn):
    def __init__(self, root: str, sort_by: tuple[str, ...], encode):
        self._root, self._sort_by, self._encode = root, sort_by, encode

    def process(self, element):
        relpath, parts = element
        parts = list(parts)
        tables = [p for p in parts if not isinstance(p, str)] + unspill([p for p in parts if isinstance(p, str)])
        table = pa.concat_tables(tables, promote_options="permissive")
        if self._sort_by:
            # The sort keys in one chunk each (Arrow's sort merges chunk by chunk, at up to twice
            # the cost), then one take across the chunks: no copy of the whole table first.
            keys = pa.table({c: as_array(table.column(c)) for c in self._sort_by})
            table = table.take(pc.sort_indices(keys, [(c, "ascending") for c in self._sort_by]))
        else:
            table = table.combine_chunks()  # the same bytes whichever way the rows were chunked
        path = join_path(self._root, relpath)
        self._encode(table, path)
        faults.at("write:" + self._root.rstrip("/").rsplit("/", 1)[-1])
        beam.metrics.Metrics.counter("write", "files").inc()
        yield {"path": path, "rows": table.num_rows}


class WriteKeyedTables(beam.PTransform):
    """Writes ``(relative path, table)`` pairs: all tables of one path become one file.

    Args:
        root: Directory (any Beam filesystem) the relative paths are under.
        sort_by: Columns that order the rows of each file (makes output deterministic).
        encode: ``encode(table, path)`` writes one file (e.g. :func:`write_parquet`).
        spill_dir: If set, tables are written there and only their paths are shuffled (see
            ``Deduplicate``): memory stays flat on runners that hold shuffles in memory.

    Returns a PCollection of ``{"path", "rows"}`` dicts, one per file written.
    """

    def __init__(
        self,
        root: str,
        sort_by: tuple[str, ...],
        encode=write_parquet,
        spill_dir: str | None = None,
        label: str | None = None,
    ):
        super().__init__(label)
        if not root:
            raise ValueError("root is required")
        self._root, self._sort_by, self._encode = root, tuple(sort_by), encode
        self._spill_dir = spill_dir

    def expand(self, keyed):
        keyed = keyed | "GlobalWindow" >> beam.WindowInto(beam.window.GlobalWindows())
        value_type = pa.Table
        if self._spill_dir is not None:
            keyed = keyed | "Spill" >> beam.ParDo(_SpillFn(self._spill_dir)).with_output_types(
                beam.typehints.KV[str, str]
            )
            value_type = str
        return (
            keyed
            | "GroupByFile" >> beam.GroupByKey().with_input_types(beam.typehints.KV[str, value_type])
            | "WriteFiles" >> beam.ParDo(_WriteFn(self._root, self._sort_by, self._encode)).with_output_types(dict)
        )


class _WriteBundleFn(beam.DoFn):
    """Writes the tables of a bundle into one parquet file under ``scratch`` as they come; outputs
    its path and rows when the bundle finishes. A retried bundle's earlier file stays in scratch:
    only the outputs of the bundle that succeeded are moved into place (``_SettleFn``)."""

    def __init__(self, scratch: str, columns: tuple[str, ...] | None):
        self._scratch, self._columns = scratch, columns

    def start_bundle(self):
        self._fh = self._writer = None
        self._rows = 0

    def process(self, rows: pa.Table):
        if not rows.num_rows:
            return
        if self._columns:
            rows = rows.select(list(self._columns))
        if self._writer is None:
            dictionary = dictionary_columns(rows)
            self._path = join_path(self._scratch, f"{uuid.uuid4().hex}.parquet")
            self._fh = FileSystems.create(self._path, mime_type="application/octet-stream")
            self._writer = pq.ParquetWriter(self._fh, rows.schema, compression="zstd", use_dictionary=dictionary,
                                            write_statistics=statistics_columns(rows, dictionary))  # fmt: skip
        self._writer.write_table(rows)
        self._rows += rows.num_rows

    def finish_bundle(self):
        if self._writer is None:
            return
        self._writer.close()
        self._fh.close()
        yield WindowedValue({"path": self._path, "rows": self._rows}, MIN_TIMESTAMP, [GlobalWindow()])


class _SettleFn(beam.DoFn):
    def __init__(self, root: str):
        self._root = root

    def setup(self):
        try:
            FileSystems.mkdirs(self._root)  # a local rename needs the directory; object stores have none
        except OSError:  # there already (or nothing to make)
            pass

    def process(self, written: dict):
        path = join_path(self._root, f"part-{posixpath.basename(written['path'])}")
        FileSystems.rename([written["path"]], [path])
        beam.metrics.Metrics.counter("write", "files").inc()
        yield {"path": path, "rows": written["rows"]}


class WriteBundles(beam.PTransform):
    """Writes tables as parquet files under ``root``, one per bundle, with no shuffle: for rows
    that need no grouping into files (a sort, a partitioning). Each file is written under
    ``scratch_dir`` and moved into ``root`` once its bundle has succeeded, so a retried bundle
    leaves nothing in ``root``.

    Args:
        root: Output directory on any Beam filesystem.
        scratch_dir: Directory on ``root``'s filesystem, outside ``root``, the files are written in first.
        columns: Columns to write, in order (None writes all).

    Returns a PCollection of ``{"path", "rows"}`` dicts, one per file written.
    """

    def __init__(self, root: str, scratch_dir: str, columns=None, label: str | None = None):
        super().__init__(label)
        if not root or not scratch_dir:
            raise ValueError("root and scratch_dir are required")
        self._root, self._scratch, self._columns = root, scratch_dir, tuple(columns) if columns else None

    def expand(self, tables):
        written = tables | "Write" >> beam.ParDo(_WriteBundleFn(self._scratch, self._columns)).with_input_types(
            pa.Table
        ).with_output_types(dict)
        # The shuffle keeps only the outputs of bundles that succeeded.
        return (
            written
            | "Settle" >> beam.Reshuffle()
            | "Move" >> beam.ParDo(_SettleFn(self._root)).with_input_types(dict).with_output_types(dict)
        )
