"""A data subject's rows out of the Delta tables, and the snapshots that still hold them.

``python -m beam_pipelines.erase`` (``beam_pipelines/erase.py``) calls these per table:

- ``subject_predicate`` / ``raw_predicate``: silver's rows are the subject's by its column's
  value; bronze's (and a dead letter's) by the value as a whole word of the record's text as
  received (``record``), so a record that failed to parse is found too.
- ``delete``: one Delta DELETE per table; it rewrites only the files holding a matched row.
- ``recompute_windows``: the gold windows the subject's silver rows fell in, aggregated again
  from silver (both tiers) after the delete, with the pipeline's own aggregate code, and put in
  place of the old ones in one replace-where commit (a window left empty goes).
- ``expire``: every file no longer in the current version removed (vacuum, no retention), a
  checkpoint written, and the log entries before it deleted: the earlier versions, their files,
  and the DELETE's own log entry (its predicate names the value) are gone, so no time travel
  reaches the subject's rows.

Crypto-shredding is not used: bronze is partitioned by ingest day and the DELETE rewrites only
the files that hold the subject's records (see ``benchmarks/erase.py`` for its cost against a
full rewrite), so every layer is rewritten.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.compute as pc

from beam_pipelines.lakehouse import commit, tables, tiers

__all__ = ["delete", "expire", "raw_predicate", "recompute_windows", "subject_predicate", "word_pattern"]

_WORD = "A-Za-z0-9_-"  # characters that continue an identifier: a value inside a longer one is not it


def word_pattern(value: str) -> str:
    """A regular expression (Rust and Python syntax) matching ``value`` as a whole word."""
    # Only ASCII punctuation is escaped: Rust's regex refuses an escaped letter outside ASCII
    # (``\€``), and no character outside ASCII is special in either syntax.
    escaped = "".join("\\" + c if c.isascii() and not c.isalnum() else c for c in value)
    return f"(^|[^{_WORD}]){escaped}($|[^{_WORD}])"


def subject_predicate(column: str, value: str) -> str:
    return f"{tables.quote(column)} = {tables.sql_string(value)}"


def raw_predicate(values: list[str], column: str = "record") -> str:
    return " OR ".join(f"regexp_like({tables.quote(column)}, {tables.sql_string(word_pattern(v))})" for v in values)


def delete(uri: str, predicate: str, erasure_id: str) -> dict | None:
    """Deletes the rows of ``predicate`` from the table at ``uri`` (None: no table there)."""
    table = tables.open_table(uri, tiers.storage_options(uri))
    if table is None:
        return None
    before = table.version()
    metrics = table.delete(predicate, commit_properties=tables.commit_properties(erasure_id, maintenance="erasure"))
    return {"table": uri, "version_before": before, "rows_deleted": metrics.get("num_deleted_rows", 0) or 0,
            "files_rewritten": metrics.get("num_removed_files", 0) or 0}  # fmt: skip


def windows_of_rows(rows: pa.Table, time_column: str, size_us: int) -> list[int]:
    """The starts (epoch microseconds) of the fixed windows ``rows``' ``time_column`` falls in."""
    from transforms.partials import window_starts

    if not rows.num_rows:
        return []
    return sorted({int(w) for w in window_starts(rows.column(time_column).drop_null(), size_us)})


def aggregate_windows(rows: pa.Table, spec, windows: list[int]) -> pa.Table | None:
    """The aggregate of ``rows`` for each window of ``windows`` (fixed windows of ``spec``, an
    ``AggregateSpec``), as WindowedAggregate computes it; None when no row falls in them."""
    from transforms.partials import group_states, partial_aggregate, result_table, window_starts

    size = spec.size_us
    starts = window_starts(rows.column(spec.time), size) if rows.num_rows else None
    out = []
    for w in windows:
        part = rows.filter(pa.array(starts == w)) if starts is not None else rows
        if not part.num_rows:
            continue
        finals = group_states(partial_aggregate(part, spec), spec, list(spec.keys), "partials", "finals")
        n = finals.num_rows
        out.append(result_table(finals, spec, pa.array([w] * n, pa.int64()), pa.array([w + size] * n, pa.int64())))
    return pa.concat_tables(out) if out else None


def _us(w: int) -> datetime:
    return datetime.fromtimestamp(w / 1e6, tz=timezone.utc)


def windows_predicate(windows: list[int]) -> str:
    days = sorted({_us(w).date().isoformat() for w in windows})
    return (f"{tables.quote(commit.DAY)} IN ({', '.join(tables.sql_string(d) for d in days)}) AND "
            f"{tables.quote(commit.WINDOW)} IN ({', '.join(tables.sql_timestamp(_us(w)) for w in windows)})")  # fmt: skip


def recompute_windows(gold: str, cold: str | None, silver_rows: pa.Table, spec, windows: list[int],
                      erasure_id: str) -> dict:  # fmt: skip
    """Replaces gold's ``windows`` by the aggregate of ``silver_rows`` (silver after the delete,
    both tiers, the rows of those windows) in one commit; the windows leave the cold tier."""
    from deltalake import write_deltalake

    table = tables.open_table(gold, tiers.storage_options(gold))
    if table is None or not windows:
        return {"table": gold, "windows": 0}
    held = pa.schema(table.schema().to_arrow())
    where = windows_predicate(windows)
    before = len(tiers.query(table, f"SELECT {tables.quote(commit.WINDOW)} FROM t WHERE {where}"))
    result = aggregate_windows(silver_rows, spec, windows)
    if result is None:
        data = held.empty_table()
    else:
        day = pc.cast(result.column(commit.WINDOW), pa.date32())
        data = result.append_column(commit.DAY, day).select(held.names).cast(held)
    if cold:
        cold_table = tables.open_table(cold, tiers.storage_options(cold))
        if cold_table is not None:
            cold_table.delete(where, commit_properties=tables.commit_properties(erasure_id, maintenance="erasure"))
    props = tables.commit_properties(erasure_id, maintenance="erasure", windows=str(len(windows)))
    write_deltalake(table, data, mode="overwrite", predicate=where, partition_by=[commit.DAY],
                    writer_properties=tables.writer_properties(), commit_properties=props)  # fmt: skip
    return {"table": gold, "windows": len(windows), "rows_before": before, "rows_after": data.num_rows,
            "window_starts": [_us(w).isoformat() for w in windows]}  # fmt: skip


_LOG_FILE = re.compile(r"^(\d{20})\.(json|checkpoint\.parquet|checkpoint\.\d+\.\d+\.parquet|crc)$")


def expire(uri: str, erasure_id: str) -> dict:
    """Removes every earlier version of the table at ``uri``: files not in the current version
    (vacuum without retention, orphans too), then the log entries before a new checkpoint."""
    import pyarrow.fs as pafs

    options = tiers.storage_options(uri)
    table = tables.open_table(uri, options)
    if table is None:
        return {"table": uri}
    removed = table.vacuum(retention_hours=0, dry_run=False, enforce_retention_duration=False, full=True,
                           commit_properties=tables.commit_properties(erasure_id, maintenance="erasure"))  # fmt: skip
    table.update_incremental()
    table.create_checkpoint()
    checkpoint = table.version()
    log = uri.rstrip("/") + "/_delta_log"
    fs, root = pafs.FileSystem.from_uri(log if tiers.is_remote(uri) else os.path.abspath(log))
    gone = 0
    for info in fs.get_file_info(pafs.FileSelector(root, allow_not_found=True)):
        m = _LOG_FILE.match(info.base_name)
        if m and int(m.group(1)) < checkpoint:
            fs.delete_file(info.path)
            gone += 1
    return {"table": uri, "files_vacuumed": len(removed), "log_entries_removed": gone, "version_after": checkpoint}
