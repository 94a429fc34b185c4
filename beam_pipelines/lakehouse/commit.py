"""Committing a run's staged layer rows into its Delta tables, at publish time.

The pipeline stages each layer's rows as parquet under ``<staging>/_lakehouse/<step>/`` (see
``spec/steps/lakehouse.py``); nothing touches a table while the run may still fail its audit.
Publishing then commits them, one Delta commit per table, from a journal entry (a plain dict,
written into ``_publishing.json`` with the rest of the publish):

    {"step", "layer", "table", "staged", "partition_by", "key", "newer",   # from the spec
     "run_id", "files", "rows", "txn"}                                    # added by ``prepare``

``prepare`` lists the staged files and plans the commit's application-transaction version (the
table's last one + 1); ``complete`` commits unless the table already holds that version, so a
publish cut off between two commits is completed by the next holder of the output without
committing anything twice.

- bronze: appended (records as received, with ``ingest_date`` and ``run_id``): the staged files
  committed as written where they hold the table's columns (``bronze_files``), else read and
  written again with the columns added;
- silver: MERGEd on the record key (``dt``, the event day, added; ``tables.merge``, computed in
  Arrow by ``arrow_merge`` where it applies);
- gold: the windows this run computed replaced (``dt``, the window's day, added).

With a cold tier (``tiers.py``), silver's records whose key the cold table holds are MERGEd
there (one commit, before the hot table's, skipped when the cold table holds the entry's
transaction), and gold's windows are deleted from the cold table before the hot table's
replace-where, so a key or a window is never in both tiers.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from deltalake.exceptions import DeltaError

from beam_pipelines.lakehouse import bronze_files, tables, tiers
from transforms.sinks.files import join_path

__all__ = ["LAYERS", "complete", "prepare", "results"]

LAYERS = ("bronze", "silver", "gold")
INGEST_DATE = "ingest_date"
DAY = "dt"
WINDOW = "window_start"  # what identifies a window of an aggregate (WindowedAggregate's first column)


def _files(root: str) -> list[str]:
    try:
        matched = FileSystems.match([join_path(root, "**")])[0].metadata_list
    except Exception:  # noqa: BLE001 - a missing prefix matches nothing on some filesystems
        return []
    return sorted(m.path[len(root.rstrip("/")) + 1 :] for m in matched if m.path.endswith(".parquet"))


def _rows(path: str) -> int:
    with FileSystems.open(path) as fh:
        return pq.ParquetFile(fh).metadata.num_rows


def _staged_schema(entry: dict, files: list[str]) -> pa.Schema:
    with FileSystems.open(join_path(entry["staged"], files[0])) as fh:
        return pq.ParquetFile(fh).schema_arrow


def prepare(entries: list[dict], run_id: str) -> list[dict]:
    """The journal entries of ``entries``: each with the staged files, their rows and the
    commit's planned transaction version. Raises OSError, before anything is committed, when a
    table cannot take its rows (another partitioning, a column of another type)."""
    prepared = []
    for entry in entries:
        entry = {**entry, "run_id": run_id}
        files = _files(entry["staged"])
        try:
            table = tables.open_table(entry["table"])
            if table is not None and files:
                _check_fits(entry, table, files)
            txn = tables.txn_version(table) + 1
        except (DeltaError, pa.ArrowException) as e:
            raise OSError(f"table {entry['table']}: {_first_line(e)}") from e
        rows = sum(_rows(join_path(entry["staged"], f)) for f in files)
        prepared.append({**entry, "files": files, "rows": rows, "txn": txn})
    return prepared


def _plain(t: pa.DataType) -> pa.DataType:
    return pa.string() if t in (pa.large_string(), pa.string_view()) else t


def _check_fits(entry: dict, table, files: list[str]) -> None:
    partitions = table.metadata().partition_columns
    if partitions != [partition_column(entry)]:
        raise OSError(f"table {entry['table']} is partitioned by {', '.join(partitions) or 'nothing'}, not by "
                      f"{partition_column(entry)}: is it another layer's table?")  # fmt: skip
    rows = _with_layer_columns(_staged_schema(entry, files).empty_table(), entry)
    held = pa.schema(table.schema().to_arrow())
    for f in rows.schema:
        if f.name in held.names and _plain(held.field(f.name).type) != _plain(f.type):
            raise OSError(f"table {entry['table']} holds column {f.name} as {held.field(f.name).type}, this run's "
                          f"rows have {f.type}: changing a column's type needs a migration of the table")  # fmt: skip


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def partition_column(entry: dict) -> str:
    return INGEST_DATE if entry["layer"] == "bronze" else DAY


def _with_layer_columns(batch, entry: dict):
    """``batch`` (a record batch or table) with the columns its layer adds."""
    if entry["layer"] == "bronze":
        day = pc.cast(batch.column("ingest_time"), pa.date32())
        if "run_id" in batch.schema.names:  # staged by a launched run (WriteReceived with its id)
            return type(batch).from_arrays([*batch.columns, day], [*batch.schema.names, INGEST_DATE])
        run = pa.repeat(pa.scalar(entry["run_id"], pa.string()), batch.num_rows)
        return type(batch).from_arrays([*batch.columns, day, run], [*batch.schema.names, INGEST_DATE, "run_id"])
    day = pc.cast(batch.column(entry["partition_by"]), pa.date32())  # UTC: the columns are UTC timestamps
    return type(batch).from_arrays([*batch.columns, day], [*batch.schema.names, DAY])


def _reader(entry: dict) -> pa.RecordBatchReader:
    """The staged rows with the layer's columns added, read a batch at a time."""
    paths = [join_path(entry["staged"], f) for f in entry["files"]]
    schema = _staged_schema(entry, entry["files"])
    out_schema = _with_layer_columns(schema.empty_table(), entry).schema

    def batches():
        for path in paths:
            with FileSystems.open(path) as fh:
                for batch in pq.ParquetFile(fh).iter_batches(batch_size=65_536):
                    yield _with_layer_columns(batch.cast(schema), entry)

    return pa.RecordBatchReader.from_batches(out_schema, batches())


def _table(entry: dict) -> pa.Table:
    """The staged rows with the layer's columns added, read whole (each file's columns decoded on
    Arrow's threads: faster than batch by batch when the rows are merged whole anyway)."""
    schema = _staged_schema(entry, entry["files"])
    parts = []
    for f in entry["files"]:
        with FileSystems.open(join_path(entry["staged"], f)) as fh:
            parts.append(pq.ParquetFile(fh).read().cast(schema))
    return _with_layer_columns(pa.concat_tables(parts), entry)


def _missing(entry: dict) -> list[str]:
    there = set(_files(entry["staged"]))
    return [f for f in entry["files"] if f not in there]


def complete(entry: dict) -> bool:
    """Commits ``entry`` unless its table already holds it (its transaction version); returns
    whether it committed now. An entry without rows commits nothing. Raises OSError when the
    commit fails (nothing of it is in the table then: a Delta commit is atomic)."""
    try:
        table = tables.open_table(entry["table"])
        if tables.txn_version(table) >= entry["txn"] or not entry["files"]:
            return False
        lost = _missing(entry)
        if lost:
            raise OSError(f"the staged rows of table {entry['table']} are gone ({join_path(entry['staged'], lost[0])})")
        _commit(entry, table)
    except (DeltaError, pa.ArrowException) as e:
        raise OSError(f"table {entry['table']}: {_first_line(e)}") from e
    return True


def _commit(entry: dict, table) -> None:
    layer, run_id, txn = entry["layer"], entry["run_id"], entry["txn"]
    if layer == "bronze":
        props = tables.commit_properties(run_id, txn, step=entry["step"], layer=layer, added=str(entry["rows"]))
        staged = [join_path(entry["staged"], f) for f in entry["files"]]
        if not bronze_files.commit(entry, table, props, staged):
            tables.append(table or entry["table"], _reader(entry), [INGEST_DATE], props)
    elif layer == "silver":
        reader, to_cold = _table(entry), {}
        if entry.get("cold"):
            data = reader
            reader = _merge_cold(entry, data)
            to_cold = {"cold_rows": str(data.num_rows - reader.num_rows)}  # the summary adds them to the source
        props = tables.commit_properties(run_id, txn, step=entry["step"], layer=layer, **to_cold)
        if table is None:
            tables.append(entry["table"], reader, [DAY], props)
        else:
            newer = tuple(entry["newer"]) if entry.get("newer") else None
            tables.merge(table, reader, entry["key"], newer, props)
    else:
        data = _reader(entry).read_all()
        windows = len(tables.windows_of(data, WINDOW))
        props = tables.commit_properties(run_id, txn, step=entry["step"], layer=layer, windows=str(windows))
        if entry.get("cold"):
            _drop_cold_windows(entry, data)
        tables.replace_windows(entry["table"], data, WINDOW, DAY, props)


def _cold_table(entry: dict):
    return tables.open_table(entry["cold"], tiers.storage_options(entry["cold"]))


def _merge_cold(entry: dict, data: pa.Table) -> pa.Table:
    """MERGEs the rows of ``data`` whose key the cold tier holds into it; returns the others."""
    cold = _cold_table(entry)
    if cold is None or not data.num_rows:
        return data
    key = entry["key"]
    held = tiers.query(cold, f"SELECT {tables.quote(key)} FROM t").column(0)
    there = pc.is_in(data.column(key), value_set=pc.unique(held)) if len(held) else None
    if there is None or not pc.any(there).as_py():
        return data
    if tables.txn_version(cold) < entry["txn"]:
        props = tables.commit_properties(entry["run_id"], entry["txn"], step=entry["step"], layer="silver", tier="cold")
        newer = tuple(entry["newer"]) if entry.get("newer") else None
        tables.merge(cold, data.filter(there), key, newer, props, level=entry.get("cold_level"), insert=False)
    return data.filter(pc.invert(there))


def _drop_cold_windows(entry: dict, data: pa.Table) -> None:
    """Deletes ``data``'s windows from the cold tier (the hot table's replace-where then holds them)."""
    cold = _cold_table(entry)
    if cold is None or not data.num_rows:
        return
    days = pc.unique(data.column(DAY)).to_pylist()
    where = (f"{tables.quote(DAY)} IN ({', '.join(tables.sql_string(d.isoformat()) for d in days)}) AND "
             f"{tables.quote(WINDOW)} IN ({', '.join(tables.sql_timestamp(w) for w in tables.windows_of(data, WINDOW))})")  # fmt: skip
    cold.delete(where, commit_properties=tables.commit_properties(entry["run_id"], step=entry["step"], tier="cold"))


def results(entries: list[dict]) -> list[dict]:
    """What each table holds after the publish of ``entries``: its version and rows, and what
    this run's commit did (from the table's log; ``commit`` None when the run changed nothing,
    e.g. a MERGE of rows the table already held)."""
    out = []
    for entry in entries:
        table = tables.open_table(entry["table"])
        row = {"step": entry["step"], "layer": entry["layer"], "table": entry["table"], "staged_rows": entry["rows"]}
        if table is None:
            out.append({**row, "version": None, "rows": 0, "commit": None})
            continue
        mine = next((h for h in table.history(10) if h.get(tables.RUN_ID_KEY) == entry["run_id"]), None)
        commit = None
        if mine is not None:
            m = mine.get("operationMetrics", {})
            merged = f"{tables.APP_ID}.merge.operation" in mine  # a MERGE computed in Arrow (arrow_merge)
            commit = {"version": mine["version"], "operation": "MERGE" if merged else mine["operation"]}
            if merged:
                commit.update({k: int(mine[f"{tables.APP_ID}.merge.{k}"]) for k in ("source", "inserted", "updated")})
            elif mine["operation"] == "MERGE":
                commit.update(source=m.get("num_source_rows", 0), inserted=m.get("num_target_rows_inserted", 0),
                              updated=m.get("num_target_rows_updated", 0))  # fmt: skip
            else:
                added = m.get("num_added_rows", int(mine.get(f"{tables.APP_ID}.added", 0)))  # bronze_files: no metrics
                commit.update(added=added, files_removed=m.get("num_removed_files", 0))
            if f"{tables.APP_ID}.windows" in mine:
                commit["windows"] = int(mine[f"{tables.APP_ID}.windows"])
            if f"{tables.APP_ID}.cold_rows" in mine:  # the run's records whose keys the cold tier holds
                commit["cold"] = int(mine[f"{tables.APP_ID}.cold_rows"])
                commit["source"] = commit.get("source", commit.get("added", 0)) + commit["cold"]
        out.append({**row, "version": table.version(), "rows": table.count(), "commit": commit})
    return out
