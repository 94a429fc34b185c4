"""Silver's MERGE computed in Arrow and committed as Delta file actions (copy-on-write).

``tables.merge`` has the rule: an incoming row replaces the stored row of its key when it is not
older by ``newer`` and differs from it; a key the table lacks is inserted. delta-rs' MERGE joins
every incoming key against the whole table in DataFusion and takes several times as long as
reading and writing the files (``benchmarks/lakehouse.py``). Here the same rule is applied with
Arrow compute:

1. the files whose key statistics (min, max) can hold an incoming key are the candidates;
2. their key (and ``newer``) columns are looked up in the incoming keys (a hash lookup: the
   incoming keys are unique), which gives the matched rows and the keys to insert;
3. the candidate files holding a matched row not older than the stored one are read whole, and a
   match is an update when any column differs (SQL ``IS DISTINCT FROM``);
4. the files holding an update are rewritten without their updated rows; those rows' new versions
   and the inserted rows are written as new files of their day partitions;
5. one commit removes the rewritten files and adds the new ones, with the caller's application
   transaction and metadata (and the MERGE's counts, which delta-rs keeps in operationMetrics).

The commit is made against the table version read (no automatic rebase): when another writer
committed in between, the new files are deleted and the merge is computed again on the new
version. ``applies`` says when this path can be taken (a local table without table features,
partitioned by ``dt`` only, holding exactly the incoming columns, of flat types, and incoming keys
unique and non-null); otherwise ``tables.merge`` uses delta-rs' MERGE, whose result is the same
(``tests/unit/test_lakehouse_arrow_merge.py`` runs both on the same inputs).
"""

from __future__ import annotations

import bisect
import json
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from urllib.parse import unquote, urlparse

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

__all__ = ["APP_ID", "RepeatedKeys", "applies", "file_stats", "local_root", "merge", "table_schema"]

APP_ID = "beam_pipelines"  # tables.APP_ID (not imported: tables imports this module)
DAY = "dt"
_CONFLICT_TRIES = 10
_FEW_FILES = 16  # candidate files below which the incoming keys are not sorted to rule some out
_FILE_ROWS = 1_000_000  # rows per written file: large files, and more than one to write at once
_STRING_STATS = 32  # string statistics longer than this are left out, as delta-rs truncates them
_NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"
_FLAT = (pa.types.is_integer, pa.types.is_floating, pa.types.is_decimal, pa.types.is_boolean, pa.types.is_string,
         pa.types.is_large_string, pa.types.is_string_view, pa.types.is_binary, pa.types.is_large_binary,
         pa.types.is_binary_view, pa.types.is_timestamp, pa.types.is_date)  # fmt: skip
_VIEWS = {pa.string_view(): pa.string(), pa.large_string(): pa.string(), pa.binary_view(): pa.binary(),
          pa.large_binary(): pa.binary()}  # fmt: skip


def local_root(table) -> str | None:
    uri = table.table_uri
    if uri.startswith("file://"):
        return unquote(urlparse(uri).path)
    return uri if uri.startswith("/") else None


def table_schema(table) -> pa.Schema:
    held = pa.schema(table.schema().to_arrow())
    return pa.schema([f.with_type(_VIEWS.get(f.type, f.type)) for f in held])


def applies(table, data: pa.Table, key: str) -> bool:
    """Whether ``merge`` can MERGE ``data`` into ``table`` (see the module docstring)."""
    protocol = table.protocol()
    if local_root(table) is None or protocol.reader_features or protocol.writer_features:
        return False
    if protocol.min_reader_version > 1 or protocol.min_writer_version > 2:
        return False
    if table.metadata().partition_columns != [DAY] or table.metadata().configuration.get("delta.appendOnly") == "true":
        return False
    held = table_schema(table)
    if set(held.names) != set(data.schema.names):
        return False
    for f in data.schema:
        t = _VIEWS.get(f.type, f.type)
        if t != held.field(f.name).type or not any(is_(t) for is_ in _FLAT):
            return False
    return data.column(key).null_count == 0


class RepeatedKeys(ValueError):
    """``data`` holds a key more than once (found while planning, before anything is written)."""


def merge(table, data: pa.Table, key: str, newer: tuple[str, str] | None, props, level: int | None,
          insert: bool) -> dict:  # fmt: skip
    """MERGEs ``data`` into ``table`` (for which ``applies`` holds) by ``tables.merge``'s rule, in
    one commit carrying ``props``; returns the MERGE's counts, named as delta-rs names them.
    Retries on a concurrent commit; raises deltalake's CommitFailedError when every try met one,
    and RepeatedKeys, with nothing written, when ``data`` holds a key twice."""
    from deltalake.exceptions import CommitFailedError

    data = data.cast(table_schema(table)).combine_chunks()
    for attempt in range(_CONFLICT_TRIES):
        plan = _plan(table, data, key, newer, insert)
        if plan["commit"] is None:
            return plan["metrics"]
        written = _write(table, plan["commit"], level)
        plan["metrics"]["num_target_files_added"] = len(written)
        try:
            _commit(table, plan, written, props)
            table.update_incremental()  # the caller's table object at the new version, as after delta-rs' MERGE
            return plan["metrics"]
        except CommitFailedError:
            root = local_root(table)
            for add in written:
                os.remove(os.path.join(root, add.path))
            if attempt == _CONFLICT_TRIES - 1:
                raise
            time.sleep(0.1 * (attempt + 1))
            table.update_incremental()
    raise AssertionError("unreachable")


def _files(table) -> pa.Table:
    return pa.table(table.get_add_actions(flatten=True))


def _candidates(files: pa.Table, keys: pa.Array, key: str) -> list[int]:
    """The files whose key range can hold one of ``keys`` (all of them when a file has no statistics)."""
    lo_col, hi_col = f"min.{key}", f"max.{key}"
    exact = pa.types.is_integer(keys.type) or pa.types.is_string(keys.type)  # others' statistics are rounded
    if not exact or lo_col not in files.column_names or hi_col not in files.column_names:
        return list(range(files.num_rows))
    first, last = (v.as_py() for v in pc.min_max(keys).values())
    out = []
    for i, (lo, hi) in enumerate(zip(files.column(lo_col).to_pylist(), files.column(hi_col).to_pylist())):
        unknown = lo is None or hi is None or isinstance(lo, str) and len(lo) >= _STRING_STATS
        if unknown or not (hi < first or last < lo):
            out.append(i)
    if len(out) <= _FEW_FILES:  # reading their key columns costs less than sorting the keys to rule some out
        return out
    ordered = pc.sort_indices(keys)
    sorted_keys = keys.take(ordered)
    n = len(sorted_keys)

    class _View:  # bisect over the Arrow array without converting it
        def __len__(self):
            return n

        def __getitem__(self, i):
            return sorted_keys[i].as_py()

    view = _View()
    lows, highs = files.column(lo_col).to_pylist(), files.column(hi_col).to_pylist()
    kept = []
    for i in out:
        lo, hi = lows[i], highs[i]
        if lo is None or hi is None or isinstance(lo, str) and len(lo) >= _STRING_STATS:
            kept.append(i)
            continue
        at = bisect.bisect_left(view, lo)
        if at < n and view[at] <= hi:
            kept.append(i)
    return kept


def _read(root: str, path: str, columns: list[str] | None, schema: pa.Schema) -> pa.Table:
    """A data file's ``columns`` (all: None) as ``schema`` has them; a column added to the table
    after the file was written is null in its rows."""
    f = pq.ParquetFile(os.path.join(root, unquote(path)))
    there = set(f.schema_arrow.names)
    wanted = schema.names if columns is None else columns
    got = f.read(columns=[c for c in wanted if c in there])
    out = [got.column(c).cast(schema.field(c).type) if c in there else pa.nulls(got.num_rows, schema.field(c).type)
           for c in wanted]  # fmt: skip
    return pa.Table.from_arrays(out, schema=pa.schema([schema.field(c) for c in wanted]))


def _distinct(a: pa.ChunkedArray, b: pa.ChunkedArray) -> pa.ChunkedArray:
    """SQL ``a IS DISTINCT FROM b``, element-wise (two NaNs are not distinct, as in DataFusion)."""
    both = pc.and_(pc.is_valid(a), pc.is_valid(b))
    ne = pc.not_equal(a, b)
    if pa.types.is_floating(a.type):
        ne = pc.and_(ne, pc.invert(pc.and_(pc.is_nan(a), pc.is_nan(b))))
    return pc.if_else(both, ne, pc.xor(pc.is_null(a), pc.is_null(b)))


def _plan(table, data: pa.Table, key: str, newer, insert: bool) -> dict:
    root, schema = local_root(table), table_schema(table)
    files = _files(table)
    candidates = _candidates(files, data.column(key), key) if files.num_rows else []
    paths = files.column("path").to_pylist()
    stored_cols = [key] + ([newer[0]] if newer and newer[0] != key else [])
    file_schema = pa.schema([f for f in schema if f.name != DAY])
    parts, origin = [], []
    for i in candidates:
        t = _read(root, paths[i], stored_cols, file_schema)
        parts.append(t)
        origin.append(np.full(t.num_rows, i, dtype=np.int64))
    if parts:
        stored = pa.concat_tables(parts)
        origin = np.concatenate(origin)
    else:
        stored = file_schema.empty_table().select(stored_cols)
        origin = np.zeros(0, dtype=np.int64)
    # Each stored row's incoming row (-1: none), by Acero's hash join (threaded; null keys match nothing).
    pairs = pa.table({"k": stored.column(key), "i": np.arange(stored.num_rows)}).join(
        pa.table({"k": data.column(key), "j": np.arange(data.num_rows)}), "k", join_type="inner", use_threads=True)  # fmt: skip
    at_np = np.full(stored.num_rows, -1, dtype=np.int64)
    at_np[pairs.column("i").to_numpy()] = pairs.column("j").to_numpy()
    matched = at_np >= 0
    if np.count_nonzero(matched) != pairs.num_rows:  # a stored key met twice
        raise RepeatedKeys(key)
    held = np.zeros(data.num_rows, dtype=bool)
    held[at_np[matched]] = True
    may_update = matched
    if newer is not None:
        column, keep = newer
        theirs = pc.take(data.column(column).combine_chunks(), pa.array(np.where(matched, at_np, 0)))
        ours = stored.column(column).combine_chunks()
        ok = pc.greater_equal(theirs, ours) if keep == "last" else pc.less_equal(theirs, ours)
        may_update = matched & pc.fill_null(ok, False).to_numpy(zero_copy_only=False)
    # Offsets of each candidate file's rows in ``stored``.
    starts = {}
    pos = 0
    for i, t in zip(candidates, parts):
        starts[i] = (pos, pos + t.num_rows)
        pos += t.num_rows
    touched = sorted({int(i) for i in np.unique(origin[may_update])})
    rewritten, kept, updated = [], [], []
    for i in touched:
        lo, hi = starts[i]
        rows = _read(root, paths[i], None, file_schema)
        mask = may_update[lo:hi]
        idx = np.flatnonzero(mask)
        src = at_np[lo:hi][idx]
        mine = rows.take(pa.array(idx))
        theirs = data.take(pa.array(src))
        pv = _partition_value(files, i)
        mine = mine.append_column(DAY, pa.array([pv] * len(idx), schema.field(DAY).type))
        differs = np.zeros(len(idx), dtype=bool)
        for c in data.column_names:
            differs |= np.asarray(_distinct(mine.column(c), theirs.column(c)).to_numpy(zero_copy_only=False))
        if not differs.any():
            continue
        keep_rows = np.ones(rows.num_rows, dtype=bool)
        keep_rows[idx[differs]] = False
        rest = rows.filter(pa.array(keep_rows))
        rewritten.append(i)
        kept.append(rest.append_column(DAY, pa.array([pv] * rest.num_rows, schema.field(DAY).type)))
        updated.append(theirs.filter(pa.array(differs)))
    inserted = data.filter(pa.array(~held)) if insert else data.slice(0, 0)
    # Keys held are unique in ``data`` (above); the new ones are checked here, a smaller set.
    if inserted.num_rows > 1 and pa.table({"k": inserted.column(key)}).group_by("k").aggregate([]).num_rows != (
        inserted.num_rows
    ):
        raise RepeatedKeys(key)
    metrics = {
        "num_source_rows": data.num_rows,
        "num_target_rows_inserted": inserted.num_rows,
        "num_target_rows_updated": sum(u.num_rows for u in updated),
        "num_target_rows_deleted": 0,
        "num_target_rows_copied": sum(k.num_rows for k in kept),
        "num_target_files_removed": len(rewritten),
    }
    if not metrics["num_target_rows_updated"] and not inserted.num_rows:
        return {"metrics": {**metrics, "num_target_files_added": 0}, "commit": None}
    new = pa.concat_tables([*kept, *(u.select(schema.names) for u in updated), inserted.select(schema.names)])
    removes = [(paths[i], int(files.column("size_bytes")[i].as_py()), _partition_value(files, i)) for i in rewritten]
    return {"metrics": metrics, "commit": {"rows": new.select(schema.names), "removes": removes}}


def _partition_value(files: pa.Table, i: int):
    return files.column(f"partition.{DAY}")[i].as_py()


def _stat(v, t: pa.DataType, upper: bool):
    """A statistics value as the Delta log holds it (JSON); None to leave it out."""
    if v is None:
        return None
    if pa.types.is_timestamp(t):  # milliseconds, rounded outwards so the range still holds every value
        v = v.astimezone(timezone.utc) if v.tzinfo else v
        ms = v.replace(microsecond=v.microsecond // 1000 * 1000)
        if upper and ms != v:
            ms += timedelta(milliseconds=1)
        return ms.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms.microsecond // 1000:03d}Z"
    if pa.types.is_date(t):
        return v.isoformat()
    if isinstance(v, Decimal):
        return float(v)
    if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
        return None
    if isinstance(v, str):
        if len(v) <= _STRING_STATS:
            return v
        return None if upper else v[:_STRING_STATS]
    if isinstance(v, (bytes, datetime)):
        return None
    return v


def file_stats(rows: pa.Table, extra_nulls: dict | None = None) -> str:
    """The Delta statistics (JSON) of a file holding ``rows`` (and columns ``extra_nulls``, whose
    null counts are given: no minimum or maximum)."""
    lows, highs, nulls = {}, {}, dict(extra_nulls or {})
    for f in rows.schema:
        col = rows.column(f.name)
        nulls[f.name] = col.null_count
        if col.null_count == len(col) or pa.types.is_binary(f.type):
            continue
        mm = pc.min_max(col)
        lo, hi = _stat(mm["min"].as_py(), f.type, False), _stat(mm["max"].as_py(), f.type, True)
        if lo is not None and hi is not None:
            lows[f.name], highs[f.name] = lo, hi
    return json.dumps({"numRecords": rows.num_rows, "minValues": lows, "maxValues": highs, "nullCount": nulls})


def _write(table, commit: dict, level: int | None) -> list:
    """Writes the commit's rows as parquet files under their day partitions; returns their add actions."""
    from deltalake.transaction import AddAction

    root, rows = local_root(table), commit["rows"]
    days = pc.unique(rows.column(DAY))
    jobs = []
    for day in days.to_pylist():
        part = rows.filter(pc.is_null(rows.column(DAY)) if day is None else pc.equal(rows.column(DAY), day))
        part = part.drop_columns([DAY])
        value = None if day is None else day.isoformat()
        for start in range(0, part.num_rows, _FILE_ROWS):
            jobs.append((value, part.slice(start, _FILE_ROWS)))

    def write(job):
        value, chunk = job
        rel = f"{DAY}={_NULL_PARTITION if value is None else value}/part-{uuid.uuid4()}-c000.zstd.parquet"
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        pq.write_table(chunk, path, compression="zstd", compression_level=level or 1)
        return AddAction(rel, os.path.getsize(path), {DAY: value}, int(time.time() * 1000), True, file_stats(chunk))

    with ThreadPoolExecutor(max_workers=max(1, min(len(jobs), os.cpu_count() or 1))) as pool:
        return list(pool.map(write, jobs))


def _commit(table, plan: dict, added: list, props) -> None:
    from deltalake import CommitProperties
    from deltalake.transaction import RemoveAction

    now = int(time.time() * 1000)
    removes = [RemoveAction(path, True, now, size, {DAY: None if pv is None else pv.isoformat()})
               for path, size, pv in plan["commit"]["removes"]]  # fmt: skip
    m = plan["metrics"]
    counts = {"operation": "MERGE", "source": m["num_source_rows"], "inserted": m["num_target_rows_inserted"],
              "updated": m["num_target_rows_updated"]}  # fmt: skip
    custom = dict(props.custom_metadata or {}) if props is not None else {}
    custom.update({f"{APP_ID}.merge.{k}": str(v) for k, v in counts.items()})
    commit = CommitProperties(custom_metadata=custom, max_commit_retries=0,
                              app_transactions=props.app_transactions if props is not None else None)  # fmt: skip
    table.create_write_transaction([*removes, *added], "append", table.schema(), partition_by=[DAY],
                                   commit_properties=commit)  # fmt: skip
