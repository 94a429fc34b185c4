"""ReadFiles: a file pattern on any Beam filesystem -> raw record batches (Arrow tables).

Files are read in chunks so a large file never has to fit in memory. Text formats yield
``raw`` (binary, one record each) and ``source`` columns; parquet yields its typed row
groups with ``_source`` (parsing keeps each row as its original record, see
``records.record_struct``); avro yields each record as JSON text, so it is parsed like jsonl.
"""

from __future__ import annotations

import csv
import io
import sys

import apache_beam as beam
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressedFile
from apache_beam.io.filesystems import FileSystems

from transforms.colscan import string_buffers

__all__ = ["BOM", "ReadFiles", "csv_header_metadata", "csv_header_names", "format_from_path", "is_hidden"]

_EXTENSIONS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv",
               ".avro": "avro", ".parquet": "parquet", ".pq": "parquet"}  # fmt: skip
_COMPRESSED = (".gz", ".bz2", ".zst", ".deflate")
BOM = b"\xef\xbb\xbf"  # UTF-8's byte order mark: where a file starts with it, it is not data


def _basename(path: str) -> str:
    return path.rstrip("/").replace("\\", "/").rsplit("/", 1)[-1]


def is_hidden(path: str, pattern: str) -> bool:
    """Whether a matched file is bookkeeping, not data (``_SUCCESS``, ``.crc``, a ``.complete``
    marker): by the Hadoop and Spark rule, a name starting with ``.`` or ``_``, unless the
    pattern's own last part starts with that character too (the user asked for such files)."""
    name, wanted = _basename(path), _basename(pattern)
    return name[:1] in ("_", ".") and not wanted.startswith(name[0])


def format_from_path(path: str) -> str | None:
    """The input format implied by a path's extension (``.jsonl.gz`` -> ``jsonl``), or None."""
    name = path.lower()
    for ext in _COMPRESSED:
        if name.endswith(ext):
            name = name[: -len(ext)]
    for ext, fmt in _EXTENSIONS.items():
        if name.endswith(ext):
            return fmt
    return None


def _line_batch(lines: list[bytes] | pa.Array, path: str, metadata: dict | None = None) -> pa.Table:
    schema = pa.schema([("raw", pa.binary()), ("source", pa.string())], metadata=metadata)
    raw = lines if isinstance(lines, pa.Array) else pa.array(lines, pa.binary())
    return pa.Table.from_arrays([raw, pa.repeat(pa.scalar(path, pa.string()), len(raw))], schema=schema)


_BLANK = r"^[\t\n\x0b\x0c\r ]*$"  # what bytes.strip() removes


def _lines_array(data: bytes, keep_blank: bool = False, size: int | None = None) -> pa.Array:
    """The lines of ``data[:size]`` (split on ``\n``, trailing ``\r`` removed) as one binary
    array, split by Arrow rather than by a Python loop; blank lines dropped unless
    ``keep_blank``."""
    size = len(data) if size is None else size
    block = pa.Array.from_buffers(
        pa.binary(), 1, [None, pa.array([0, size], pa.int32()).buffers()[1], pa.py_buffer(data)]
    )
    lines = pc.list_flatten(pc.split_pattern(block, "\n"))
    if data.find(b"\r", 0, size) >= 0:
        cr = pc.match_substring_regex(lines, "\r$")
        if pc.any(cr).as_py():
            lines = pc.replace_with_mask(lines, cr, pc.replace_substring_regex(lines.filter(cr), "\r+$", ""))
    if not keep_blank:
        blank = _blank_lines(lines)
        if blank.any():
            lines = lines.filter(pa.array(~blank))
    return lines


_SPACE = np.zeros(256, dtype=bool)
_SPACE[list(b"\t\n\x0b\x0c\r ")] = True
_SPACE.flags.writeable = False


def _blank_lines(lines: pa.Array) -> np.ndarray:
    """Which lines are empty or whitespace only. A line that starts with another byte is not
    blank: the regex runs only on lines that start with whitespace (rare)."""
    offsets, data = string_buffers(lines)
    empty = offsets[1:] == offsets[:-1]
    if len(data) == 0:
        return empty
    first = data[np.minimum(offsets[:-1], len(data) - 1)]
    spaced = ~empty & _SPACE[first]
    if spaced.any():
        rows = np.flatnonzero(spaced)
        empty[rows] = pc.match_substring_regex(lines.take(pa.array(rows)), _BLANK).to_numpy(zero_copy_only=False)
    return empty


def _iter_lines(fh, chunk_bytes: int, keep_blank: bool = False):
    """Yields lists of lines (without line endings) of a whole binary stream; blank lines are
    dropped unless ``keep_blank``."""
    for data, size in _iter_range_blocks(fh, 0, sys.maxsize, chunk_bytes):
        yield [ln.rstrip(b"\r") for ln in data[:size].split(b"\n") if keep_blank or ln.strip()]


def _iter_range_lines(fh, start: int, end: int, chunk_bytes: int):
    """Yields binary arrays of the non-blank lines of the byte range [start, end): the lines
    that *start* in it, so ranges that tile a file read every line exactly once."""
    for data, size in _iter_range_blocks(fh, start, end, chunk_bytes):
        yield _lines_array(data, size=size)


def _rereads(fh) -> bool:
    """Whether a stream can go back a few bytes cheaply: a compressed one would start over."""
    return fh.seekable() and not isinstance(fh, CompressedFile)


def _iter_range_blocks(fh, start: int, end: int, chunk_bytes: int):
    """Yields ``(data, size)``: blocks of whole lines (``\n``-separated, without the last line's
    ending) of the lines that start in the byte range [start, end), as ``data[:size]``.

    Each block is the bytes as read, not a copy: the next read starts at the line the block
    left unfinished (where the stream can go back), rather than that line's bytes being
    joined to the next block.
    """
    if start > 0:
        fh.seek(start - 1)
        pos = start - 1 + len(fh.readline())  # the line under way belongs to the range before
    else:
        pos = 0
    reread = _rereads(fh)
    tail = b""
    while pos < end:
        block = fh.read(chunk_bytes)
        if pos == 0 and not tail and block.startswith(BOM):
            block, pos = block[3:], 3
            if not block:
                continue
        if not block:
            if tail:
                yield tail, len(tail)
            return
        data = tail + block if tail else block
        cut = data.rfind(b"\n")
        if cut < 0:
            tail = data
            continue
        if pos + cut >= end:
            # The range ends in this block: keep the lines that start before `end`.
            yield data, data.find(b"\n", end - pos - 1)
            return
        pos += cut + 1
        if reread and cut + 1 < len(data):
            fh.seek(pos)
            tail = b""
        else:
            tail = data[cut + 1 :]
        yield data, cut


def _in_quotes_after(line: bytes, in_quotes: bool) -> bool:
    """Whether a quoted CSV field is still open at the end of ``line`` (RFC 4180: a quote opens
    a field only at its start, and ``""`` inside one is a literal quote)."""
    at_field_start = not in_quotes
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if in_quotes:
            if c == 0x22:
                if i + 1 < n and line[i + 1] == 0x22:
                    i += 2
                    continue
                in_quotes = False
        elif c == 0x22 and at_field_start:
            in_quotes = True
        at_field_start = c == 0x2C and not in_quotes
        i += 1
    return in_quotes


def _iter_csv_rows(fh, chunk_bytes: int):
    """Yields (header, rows): CSV records, joined across lines while a quoted field is open.
    Blank lines between records are skipped; inside a quoted field they are data."""
    header = None
    pending: list[bytes] = []
    in_quotes = False
    for lines in _iter_lines(fh, chunk_bytes, keep_blank=True):
        rows = []
        for line in lines:
            if not in_quotes and not line.strip():
                continue
            if header is None:
                header = line
                continue
            pending.append(line)
            if b'"' in line or in_quotes:
                in_quotes = _in_quotes_after(line, in_quotes)
            if not in_quotes:
                rows.append(b"\n".join(pending))
                pending = []
        if rows:
            yield header, rows
    if pending:
        yield header, [b"\n".join(pending)]


def csv_header_names(header: bytes) -> list[str]:
    """The column names of a CSV header line (a leading BOM marks the file, not the first name).

    Raises:
        csv.Error: The line is not one CSV record (a stray carriage return, ...).
    """
    names = next(csv.reader([header.removeprefix(BOM).decode("utf-8", "replace")]))
    return [n.strip() for n in names]


def csv_header_metadata(header: bytes) -> dict:
    """The batch metadata ``ParseRecords`` reads a CSV header from: its column names as JSON,
    or why the header is unusable (then every row of the file is a dead letter)."""
    try:
        return {b"csv_header": orjson.dumps(csv_header_names(header))}
    except csv.Error as e:
        return {b"csv_header_error": f"the file's CSV header is not valid: {e}".encode()}


class _ReadFileFn(beam.DoFn):
    def __init__(self, fmt: str, chunk_bytes: int):
        self._fmt = fmt
        self._chunk_bytes = chunk_bytes

    def setup(self):
        self._files = beam.metrics.Metrics.counter("read", "files")

    def process(self, split: tuple[str, int, int]):
        path, start, end = split
        self._files.inc()
        with FileSystems.open(path) as fh:
            if self._fmt == "jsonl":
                for lines in _iter_range_lines(fh, start, end if end >= 0 else sys.maxsize, self._chunk_bytes):
                    if len(lines):
                        yield _line_batch(lines, path)
            elif self._fmt == "csv":
                for header, rows in _iter_csv_rows(fh, self._chunk_bytes):
                    yield _line_batch(rows, path, csv_header_metadata(header))
            elif self._fmt == "avro":
                yield from self._read_avro(fh, path)
            else:
                yield from self._read_parquet(fh, path, start, end)

    def _read_avro(self, fh, path: str):
        import fastavro

        batch: list[bytes] = []
        size = 0
        for record in fastavro.reader(fh):
            line = orjson.dumps(record, default=_avro_default)
            batch.append(line)
            size += len(line)
            if size >= self._chunk_bytes:
                yield _line_batch(batch, path)
                batch, size = [], 0
        if batch:
            yield _line_batch(batch, path)

    def _read_parquet(self, fh, path: str, first_group: int, end_group: int):
        # Random access is needed for the footer; remote streams are buffered first.
        source = fh if fh.seekable() else io.BytesIO(fh.read())
        pf = pq.ParquetFile(source)
        rows = max(1024, self._chunk_bytes // 100)
        groups = range(first_group, end_group if end_group >= 0 else pf.num_row_groups)
        if not groups:
            return
        for batch in pf.iter_batches(batch_size=rows, row_groups=list(groups)):
            table = pa.Table.from_batches([batch])
            table = table.append_column("_source", pa.repeat(pa.scalar(path, pa.string()), table.num_rows))
            yield table


class _SplitFn(beam.DoFn):
    """File -> (path, start, end) work items: byte ranges of uncompressed jsonl, row-group
    ranges of parquet, whole files (end -1) otherwise; spread over workers, they let one big
    file use every core."""

    def __init__(self, fmt: str, split_bytes: int, pattern: str):
        self._fmt, self._split_bytes, self._pattern = fmt, split_bytes, pattern

    def process(self, meta):
        path, size = meta.path, meta.size_in_bytes
        if is_hidden(path, self._pattern):
            return
        compressed = path.lower().endswith(_COMPRESSED)
        if self._fmt == "jsonl" and not compressed and size > self._split_bytes:
            for start in range(0, size, self._split_bytes):
                yield path, start, min(size, start + self._split_bytes)
        elif self._fmt == "parquet":
            with FileSystems.open(path) as fh:
                source = fh if fh.seekable() else io.BytesIO(fh.read())
                meta_pq = pq.ParquetFile(source).metadata
            group_bytes = [meta_pq.row_group(g).total_byte_size for g in range(meta_pq.num_row_groups)]
            start, acc = 0, 0
            for g, b in enumerate(group_bytes):
                acc += b
                if acc >= self._split_bytes:
                    yield path, start, g + 1
                    start, acc = g + 1, 0
            if start < len(group_bytes) or not group_bytes:
                yield path, start, len(group_bytes)
        else:
            yield path, 0, -1


def _avro_default(value):
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", errors="backslashreplace")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


class ReadFiles(beam.PTransform):
    """Reads every file matching a pattern into raw record batches.

    Args:
        pattern: A file pattern on any Beam filesystem (local, s3://, gs://, azfs://). Files
            named ``_*`` or ``.*`` (``_SUCCESS``, ``.crc``, markers) are not data and are
            skipped, unless the pattern's last part itself starts with ``_`` or ``.``.
        fmt: ``jsonl``, ``csv``, ``avro`` or ``parquet``.
        chunk_bytes: Target bytes per batch for text formats (parquet batches hold about
            ``chunk_bytes / 100`` rows).
        split_bytes: Work-item size: uncompressed jsonl files are read as byte ranges of this
            size and parquet files as runs of row groups, so one large file is read in parallel.
            Small items also keep workers evenly loaded: the runner hands them out round-robin.
    """

    def __init__(
        self, pattern: str, fmt: str, chunk_bytes: int = 8 << 20, split_bytes: int = 8 << 20, label: str | None = None
    ):
        super().__init__(label)
        if split_bytes < 1024:
            raise ValueError("split_bytes must be at least 1024")
        self._split_bytes = split_bytes
        if fmt not in ("jsonl", "csv", "avro", "parquet"):
            raise ValueError(f"unknown input format {fmt!r}")
        if chunk_bytes < 1024:
            raise ValueError("chunk_bytes must be at least 1024")
        self._pattern = pattern
        self._fmt = fmt
        self._chunk_bytes = chunk_bytes

    def expand(self, pbegin):
        return (
            pbegin
            | "Match" >> fileio.MatchFiles(self._pattern)
            | "Split"
            >> beam.ParDo(_SplitFn(self._fmt, self._split_bytes, self._pattern)).with_output_types(
                beam.typehints.Tuple[str, int, int]
            )
            | "Spread" >> beam.Reshuffle()
            | "Read" >> beam.ParDo(_ReadFileFn(self._fmt, self._chunk_bytes)).with_output_types(pa.Table)
        )
