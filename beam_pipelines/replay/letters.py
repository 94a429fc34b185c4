"""Dead letters as Arrow tables: read back from their JSON-lines files, selected by reason and
field, and turned back into the raw record batches a pipeline's Parse step takes.

A letter's ``raw`` is its record's original text: a JSON line (for parquet and avro inputs, the
row as a JSON object) or a CSV row, whose header is the first line of the letter's ``source``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
from apache_beam.io.filesystems import FileSystems

from transforms.ingest.files import csv_header_names, format_from_path
from transforms.records import DEAD_LETTER_SCHEMA

__all__ = [
    "UNJUDGED",
    "LetterError",
    "Selection",
    "csv_header",
    "letters_format",
    "parse_letters",
    "raw_batches",
    "read_letter_file",
    "replayable",
]

# Reasons a batch run cannot judge again: whether a record is late depends on the stream it came in.
UNJUDGED = ("late",)
# How a record's bytes that were not UTF-8 appear in its letter's text (Python's backslashreplace).
_ESCAPED_BYTE = r"\\x[89a-f][0-9a-f]"
_READ_SCHEMA = pa.schema([pa.field(f.name, f.type) for f in DEAD_LETTER_SCHEMA])
_BLOCK = 1 << 20
_MAX_BLOCK = (1 << 31) - 1


class LetterError(ValueError):
    """A dead-letter file that cannot be read back (the message names it)."""


def parse_letters(data: bytes, path: str = "<letters>") -> pa.Table:
    """The dead letters of one JSON-lines file's bytes, as a DEAD_LETTER_SCHEMA table.

    Raises:
        LetterError: a line is not a JSON object of the dead-letter fields, or lacks stage or reason.
    """
    if not data.strip():
        return DEAD_LETTER_SCHEMA.empty_table()
    try:
        # One block per file: a letter's record text may be far longer than Arrow's default block.
        table = pj.read_json(
            pa.BufferReader(data),
            read_options=pj.ReadOptions(block_size=min(max(_BLOCK, len(data) + 1), _MAX_BLOCK)),
            parse_options=pj.ParseOptions(explicit_schema=_READ_SCHEMA, unexpected_field_behavior="error"),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise LetterError(f"{path} is not dead-letter JSON lines: {e}") from None
    table = table.select(_READ_SCHEMA.names)
    for name in ("stage", "reason"):
        missing = table.column(name).null_count
        if missing:
            raise LetterError(f"{path}: {missing} line(s) without {name!r}: not dead letters")
    return table.cast(DEAD_LETTER_SCHEMA)


def read_letter_file(path: str) -> pa.Table:
    """The dead letters of one file on any Beam filesystem (see :func:`parse_letters`)."""
    with FileSystems.open(path) as fh:
        return parse_letters(fh.read(), path)


def replayable(letters: pa.Table) -> np.ndarray:
    """Which letters' ``raw`` is their record as it was read. Not: a letter without raw, and a
    parse-stage letter whose text shows bytes that were not UTF-8 as ``\\xNN`` escapes (its
    original bytes are gone; replaying the escaped text would read something else)."""
    raw = letters.column("raw")
    escaped = pc.and_(pc.equal(letters.column("stage"), "parse"), pc.match_substring_regex(raw, _ESCAPED_BYTE))
    ok = pc.and_(pc.is_valid(raw), pc.invert(pc.fill_null(escaped, False)))
    return pc.fill_null(ok, False).to_numpy(zero_copy_only=False)


@dataclass(frozen=True)
class Selection:
    """Which dead letters a redrive replays: those matching every given filter.

    Args:
        reasons: Letters with one of these reasons; empty: any reason but the unjudged (late).
        fields: Letters naming one of these fields; empty: any field.
    """

    reasons: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()

    def __post_init__(self):
        for kind, values in (("reason", self.reasons), ("field", self.fields)):
            if any(not v for v in values):
                raise ValueError(f"--{kind} needs a value")
        unjudged = sorted(set(self.reasons) & set(UNJUDGED))
        if unjudged:
            raise ValueError(
                f"--reason={unjudged[0]} cannot be redriven: a batch run cannot judge whether a record is late"
            )

    def matches(self, letters: pa.Table) -> np.ndarray:
        """Which rows of a DEAD_LETTER_SCHEMA table match the filters."""
        reason = letters.column("reason")
        if self.reasons:
            keep = pc.is_in(reason, value_set=pa.array(self.reasons, pa.string()))
        else:
            keep = pc.invert(pc.is_in(reason, value_set=pa.array(UNJUDGED, pa.string())))
        if self.fields:
            keep = pc.and_(keep, pc.is_in(letters.column("field"), value_set=pa.array(self.fields, pa.string())))
        return pc.fill_null(keep, False).to_numpy(zero_copy_only=False)

    def mask(self, letters: pa.Table) -> np.ndarray:
        """Which rows are replayed: those matching the filters whose record text is replayable."""
        return self.matches(letters) & replayable(letters)

    def unmatched(self, letters: pa.Table) -> dict:
        """Filter values no letter has at all (they select nothing): ``{"reason": [...], "field": [...]}``."""
        out = {}
        for kind, values in (("reason", self.reasons), ("field", self.fields)):
            present = pc.is_in(pa.array(values, pa.string()), value_set=pc.unique(letters.column(kind)))
            absent = [v for v, hit in zip(values, present.to_pylist()) if not hit]
            if absent:
                out[kind] = absent
        return out

    def describe(self) -> dict:
        return {"reason": list(self.reasons), "field": list(self.fields)}


def letters_format(sources: pa.Array | pa.ChunkedArray) -> str:
    """The Parse format of letters from these sources: ``csv`` when they came from CSV files,
    else ``jsonl`` (JSON lines, and the JSON objects of parquet and avro rows).

    Raises:
        LetterError: CSV rows and other records are mixed.
    """
    names = [s for s in pc.unique(sources).to_pylist() if s is not None]
    csv_sources = [s for s in names if format_from_path(s) == "csv"]
    if csv_sources and len(csv_sources) != len(names):
        other = next(s for s in names if s not in csv_sources)
        raise LetterError(f"dead letters hold CSV rows ({csv_sources[0]}) and other records ({other}): one format only")
    return "csv" if csv_sources else "jsonl"


def csv_header(path: str) -> list[str]:
    """The column names of a CSV file: its first non-blank line (read as ``ReadFiles`` does)."""
    with FileSystems.open(path) as fh:
        while True:
            line = fh.readline()
            if not line:
                raise LetterError(f"CSV source {path} has no header line")
            if line.strip():
                try:
                    return csv_header_names(line.rstrip(b"\r\n"))
                except csv.Error as e:
                    raise LetterError(f"CSV source {path} has a header that is not valid: {e}") from None


def raw_batches(letters: pa.Table, fmt: str, headers: dict | None = None, rows: int = 65_536) -> list[pa.Table]:
    """Raw batches (``raw`` binary, ``source``; see ``ReadFiles``) of the letters' record text.

    Args:
        letters: Selected letters (DEAD_LETTER_SCHEMA, raw not null).
        fmt: ``jsonl`` or ``csv`` (see :func:`letters_format`).
        headers: For csv: source -> its column names (CSV batches carry them per source).
        rows: Most rows per batch.
    """
    if letters.num_rows == 0:
        return []
    if fmt != "csv":
        return _sliced(_batch(letters), rows)
    out = []
    sources = letters.column("source")
    for source in sorted(pc.unique(sources).to_pylist()):
        of_source = letters.filter(pc.equal(sources, source))
        meta = {b"csv_header": orjson.dumps(headers[source])}
        out += _sliced(_batch(of_source, meta), rows)
    return out


def _batch(letters: pa.Table, metadata: dict | None = None) -> pa.Table:
    schema = pa.schema([("raw", pa.binary()), ("source", pa.string())], metadata=metadata)
    raw = letters.column("raw").cast(pa.binary())
    return pa.Table.from_arrays([raw, letters.column("source")], schema=schema)


def _sliced(table: pa.Table, rows: int) -> list[pa.Table]:
    return [table.slice(i, rows).combine_chunks() for i in range(0, table.num_rows, rows)]
