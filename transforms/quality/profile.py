"""ProfileColumns: per-column profiles of table PCollections, per run in batch and per window in streaming.

Every batch updates exact counters and Apache DataSketches (HLL for distinct counts, KLL for
quantiles and histograms, frequent strings for top values) without per-row Python; a CombineFn
merges the states, and its accumulator coder writes each sketch with the sketch's own
``serialize()`` (the library's objects do not pickle). What each vectorised shortcut costs in
accuracy is documented in :mod:`transforms.quality.sketches` and :mod:`transforms.quality.hll`.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterable, Sequence

import apache_beam as beam
import datasketches as ds
import numpy as np
import pyarrow as pa
from apache_beam.transforms import window as beam_window
from apache_beam.utils.windowed_value import WindowedValue

from transforms.quality.hll import LG_K_RANGE
from transforms.quality.sketches import BOOLEAN, NUMERIC, STRING, TIMESTAMP, ColumnSketch, normalised
from transforms.records import iso_text

__all__ = ["ProfileColumns", "profile_tables"]

_LEN = struct.Struct("<I")


class _Config:
    """Validated profile settings, shared by the composite, the CombineFn and :func:`profile_tables`."""

    def __init__(self, columns, top_k, quantiles, histogram_bins, lg_k):
        if columns is not None:
            if isinstance(columns, str) or not all(isinstance(c, str) and c for c in columns):
                raise ValueError("columns must be a sequence of non-empty column names")
            if len(set(columns)) != len(columns):
                raise ValueError("columns must not repeat a name")
            columns = tuple(columns)
        if not _is_int(top_k) or not 0 < top_k <= 1_000:
            raise ValueError(f"top_k must be an integer in [1, 1000], got {top_k!r}")
        if not _is_int(histogram_bins) or not 1 <= histogram_bins <= 10_000:
            raise ValueError(f"histogram_bins must be an integer in [1, 10000], got {histogram_bins!r}")
        if not _is_int(lg_k) or not LG_K_RANGE[0] <= lg_k <= LG_K_RANGE[1]:
            raise ValueError(f"lg_k must be an integer in {list(LG_K_RANGE)} (the HLL sketch's range), got {lg_k!r}")
        if isinstance(quantiles, (str, bytes)) or not quantiles:
            raise ValueError("quantiles must be a non-empty sequence of fractions in (0, 1)")
        for q in quantiles:
            if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0 < q < 1:
                raise ValueError(f"quantiles must lie in (0, 1), got {q!r}")
        qs = tuple(sorted(set(float(q) for q in quantiles)))
        keys = [_quantile_key(q) for q in qs]
        if len(set(keys)) != len(keys):
            raise ValueError(f"quantiles {qs} give clashing names {keys}")
        self.columns, self.top_k, self.bins, self.lg_k = columns, top_k, histogram_bins, lg_k
        self.quantiles = dict(zip(keys, qs))
        # A map of 64 * top_k counters (at least 1024): error under 0.35% of the rows per column.
        self.freq_lg_k = max(10, math.ceil(math.log2(top_k)) + 6)


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _quantile_key(q: float) -> str:
    pct = q * 100
    return f"p{round(pct):02d}" if abs(pct - round(pct)) < 1e-9 else f"p{pct:.10g}"


class _Profile:
    """The accumulator: rows seen and one :class:`ColumnSketch` per column seen."""

    def __init__(self, rows: int = 0, columns: dict | None = None):
        self.rows = rows
        self.columns: dict[str, ColumnSketch] = columns or {}

    def add(self, table: pa.Table, cfg: _Config) -> None:
        self.rows += table.num_rows
        names = cfg.columns or [n for n in table.column_names if not n.startswith("_")]
        for name in names:
            if name not in table.column_names:
                continue  # rows without the column count as its nulls (nulls = rows - count)
            column = table.column(name)
            col = self.columns.get(name)
            if col is None:
                col = self.columns[name] = ColumnSketch.for_type(column.type, cfg.lg_k, cfg.freq_lg_k)
            elif not col.accepts(column.type):
                raise TypeError(f"column {name!r} is {column.type} in one table and {col.type_name} in another")
            col.update(normalised(column))

    def merge(self, other: _Profile) -> None:
        self.rows += other.rows
        for name, col in other.columns.items():
            if name in self.columns:
                self.columns[name].merge(col)
            else:
                self.columns[name] = col


class _ProfileCoder(beam.coders.Coder):
    """Accumulators as a JSON header of plain fields followed by each sketch's own serialisation."""

    def encode(self, acc: _Profile) -> bytes:
        header, blobs = [], []
        for name, col in acc.columns.items():
            meta, parts = col.to_parts()
            header.append([name, meta, [len(b) for b in parts]])
            blobs.extend(parts)
        # json (not orjson): min/max may be +-Infinity, which it round-trips.
        head = json.dumps({"rows": acc.rows, "columns": header}).encode()
        return b"".join([_LEN.pack(len(head)), head, *blobs])

    def decode(self, encoded: bytes) -> _Profile:
        (size,) = _LEN.unpack_from(encoded)
        head = json.loads(encoded[_LEN.size : _LEN.size + size])
        pos = _LEN.size + size
        columns = {}
        for name, meta, lengths in head["columns"]:
            parts = []
            for n in lengths:
                parts.append(encoded[pos : pos + n])
                pos += n
            columns[name] = ColumnSketch.from_parts(meta, parts)
        return _Profile(head["rows"], columns)

    def is_deterministic(self) -> bool:
        return False


beam.coders.registry.register_coder(_Profile, _ProfileCoder)


class _ProfileFn(beam.CombineFn):
    def __init__(self, cfg: _Config):
        self._cfg = cfg

    def create_accumulator(self) -> _Profile:
        return _Profile()

    def add_input(self, acc: _Profile, table: pa.Table) -> _Profile:
        acc.add(table, self._cfg)
        return acc

    def merge_accumulators(self, accs: Iterable[_Profile]) -> _Profile:
        accs = iter(accs)
        out = next(accs)
        for acc in accs:
            out.merge(acc)
        return out

    def extract_output(self, acc: _Profile) -> dict:
        return _summarise(acc, self._cfg)

    def get_accumulator_coder(self) -> _ProfileCoder:
        return _ProfileCoder()


class _SketchFn(beam.DoFn):
    """A bundle's tables -> one accumulator per window, so only sketches cross the shuffle (a
    triggered window combine on a portable runner is not lifted: without this every row would).
    One accumulator for the bundle, not one per table: a fresh sketch is fed every distinct value
    of its first tables, a warm one only the values that can still change it."""

    def __init__(self, cfg: _Config):
        self._cfg = cfg

    def start_bundle(self):
        self._open: dict = {}

    def process(self, table: pa.Table, window=beam.DoFn.WindowParam):
        if table.num_rows:
            acc = self._open.get(window)
            if acc is None:
                acc = self._open[window] = _Profile()
            acc.add(table, self._cfg)

    def finish_bundle(self):
        open_, self._open = self._open, {}
        for window, acc in open_.items():
            yield WindowedValue(acc, window.max_timestamp(), (window,))


class _MergeProfilesFn(_ProfileFn):
    def add_input(self, acc: _Profile, profile: _Profile) -> _Profile:
        acc.merge(profile)
        return acc


def _summarise(acc: _Profile, cfg: _Config) -> dict:
    """The JSON-serialisable profile of an accumulator."""
    names = cfg.columns or list(acc.columns)
    return {"rows": acc.rows, "columns": {n: _column_summary(acc.columns.get(n), acc.rows, cfg) for n in names}}


def _column_summary(col: ColumnSketch | None, rows: int, cfg: _Config) -> dict:
    count = col.count if col is not None else 0
    out = {
        "type": col.type_name if col is not None else None, "count": count, "nulls": rows - count,
        "null_rate": (rows - count) / rows if rows else None, "distinct_approx": None, "min": None, "max": None,
        "mean": None, "stddev": None, "quantiles": None, "histogram": None, "top_values": None,
    }  # fmt: skip
    if col is None or col.distinct is None:
        return out
    out["distinct_approx"] = min(int(round(col.distinct.estimate())), count)
    if col.kind in (NUMERIC, TIMESTAMP):
        out.update(_numeric_summary(col, cfg))
    elif col.kind == STRING:
        out.update(min=col.lo, max=col.hi, min_length=col.min_len, max_length=col.max_len)
    if col.freq is not None:
        out["top_values"] = _top_values(col, cfg.top_k)
    return out


def _numeric_summary(col: ColumnSketch, cfg: _Config) -> dict:
    out: dict = {"nans": col.nans} if col.kind == NUMERIC and not col.integer else {}
    if col.kll.is_empty():
        return out
    lo, hi, (_, mean, _), stddev = col.lo, col.hi, col.moments, col.stddev()
    values = list(col.kll.get_quantiles(list(cfg.quantiles.values())))
    edges, counts = _histogram(col.kll, lo, hi, cfg.bins)
    if col.kind == TIMESTAMP:
        text = _iso([lo, hi, mean, *values, *edges], _timestamp_tz(col.type_name))
        lo, hi, mean, values, edges = text[0], text[1], text[2], text[3 : 3 + len(values)], text[3 + len(values) :]
        stddev = stddev / 1e6  # seconds
    elif col.integer:
        values = [int(v) for v in values]
    return {
        **out, "min": lo, "max": hi, "mean": mean, "stddev": stddev,
        "quantiles": dict(zip(cfg.quantiles, values)), "histogram": {"edges": edges, "counts": counts},
    }  # fmt: skip


def _histogram(kll, lo: float, hi: float, bins: int) -> tuple[list[float], list[int]]:
    """Equal-width bins over the exact [min, max], counts from the KLL CDF (the last bin holds max)."""
    n = kll.n
    edges = np.linspace(lo, hi, bins + 1)
    if bins == 1 or lo == hi:
        return edges.tolist(), [n] + [0] * (bins - 1)
    inner, where = np.unique(edges[1:-1], return_inverse=True)
    cdf = np.asarray(kll.get_cdf(inner.tolist()))[:-1]
    cumulative = np.concatenate([[0], np.rint(cdf[where] * n), [n]]).astype(np.int64)
    return edges.tolist(), np.diff(cumulative).tolist()


def _timestamp_tz(type_name: str) -> str | None:
    return type_name.split("tz=", 1)[1].rstrip("]") if "tz=" in type_name else None


def _iso(micros: list[float], tz: str | None) -> list[str]:
    ints = pa.array([int(round(v)) for v in micros], pa.int64())
    return iso_text(ints.cast(pa.timestamp("us", tz=tz))).to_pylist()


def _top_values(col: ColumnSketch, top_k: int) -> list[dict]:
    items = col.freq.get_frequent_items(ds.frequent_items_error_type.NO_FALSE_NEGATIVES)
    # Merged sketches over-estimate rare values (estimate = lower bound + the merge's error): an
    # uncertain count is shown only if the value surely occurs at least twice, so a column of
    # distinct ids has no top values instead of a list of made-up counts.
    items = [item for item in items if item[2] >= 2 or item[1] == item[2]]
    items.sort(key=lambda item: (-item[1], item[0]))
    if col.kind == BOOLEAN:
        convert = "true".__eq__
    elif col.kind == NUMERIC:
        convert = int
    else:
        convert = str
    return [{"value": convert(key), "count": int(estimate)} for key, estimate, *_ in items[:top_k]]


def profile_tables(
    tables: Iterable[pa.Table],
    columns: Sequence[str] | None = None,
    top_k: int = 10,
    quantiles: Sequence[float] = (0.01, 0.25, 0.5, 0.75, 0.99),
    histogram_bins: int = 20,
    lg_k: int = 12,
) -> dict:
    """Profiles tables in this process, exactly as :class:`ProfileColumns` does in a pipeline.

    Args:
        tables: The batches to profile.
        columns: Columns to profile; by default every column not starting with ``_``.
        top_k: How many most frequent values to report.
        quantiles: Fractions in (0, 1) to report quantiles at.
        histogram_bins: Equal-width histogram bins between min and max.
        lg_k: log2 of the HLL sketch's registers (7..21; 12 gives about 1.6% error).
    """
    cfg = _Config(columns, top_k, quantiles, histogram_bins, lg_k)
    acc = _Profile()
    for table in tables:
        acc.add(table, cfg)
    return _summarise(acc, cfg)


class _WithWindowFn(beam.DoFn):
    def process(self, profile: dict, window=beam.DoFn.WindowParam):
        bounds = None
        if isinstance(window, beam_window.IntervalWindow):
            micros = [window.start.micros, window.end.micros]
            bounds = dict(zip(("start", "end"), _iso(micros, "UTC")))
        yield {**profile, "window": bounds}


class ProfileColumns(beam.PTransform):
    """Column profiles of a PCollection of ``pa.Table``: one dict per window (the global window in batch).

    Per column: ``type``, ``count`` (non-null values), ``nulls``, ``null_rate``,
    ``distinct_approx`` (HLL), exact ``min``/``max``/``mean``/``stddev`` (population),
    ``quantiles`` and an equal-width ``histogram`` (KLL) for numeric and timestamp columns,
    ``top_values`` (frequent strings; not for floats and timestamps), ``min_length``/``max_length``
    for strings and ``nans`` for floats (NaN is left out of the numeric fields). Timestamps are
    ISO-8601 text (``Z`` when zone-aware) in min/max/mean/quantiles/edges; their stddev is in
    seconds. Each dict also has ``window``: ``{"start", "end"}`` as ISO text, or null in the
    global window. Columns never seen are reported with type null and every row as a null.

    Args:
        columns: Columns to profile; by default every column not starting with ``_``.
        top_k: How many most frequent values to report per column.
        quantiles: Fractions in (0, 1) to report quantiles at (keys ``p01``, ``p50``, ...).
        histogram_bins: Equal-width histogram bins between min and max.
        lg_k: log2 of the HLL sketch's registers (7..21; 12 gives about 1.6% relative error).
        label: Optional label of this transform.
    """

    def __init__(
        self,
        columns: Sequence[str] | None = None,
        top_k: int = 10,
        quantiles: Sequence[float] = (0.01, 0.25, 0.5, 0.75, 0.99),
        histogram_bins: int = 20,
        lg_k: int = 12,
        label: str | None = None,
    ):
        super().__init__(label)
        self._cfg = _Config(columns, top_k, quantiles, histogram_bins, lg_k)

    def expand(self, tables):
        return (
            tables
            | "Sketch" >> beam.ParDo(_SketchFn(self._cfg)).with_input_types(pa.Table).with_output_types(_Profile)
            | "Combine"
            >> beam.CombineGlobally(_MergeProfilesFn(self._cfg))
            .without_defaults()
            .with_input_types(_Profile)
            .with_output_types(dict)
            | "WithWindow" >> beam.ParDo(_WithWindowFn()).with_output_types(dict)
        )
