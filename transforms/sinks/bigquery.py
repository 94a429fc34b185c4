"""WriteBigQuery: Arrow tables -> a day-partitioned BigQuery table, by load jobs of parquet files.

Two modes, both safe to run again over the same input:

- ``replace_partitions`` (batch): the rows are grouped by the UTC day of ``partition_by`` and each
  day is one load job into ``table$YYYYMMDD`` with WRITE_TRUNCATE, so a run replaces exactly the
  days it has rows for and leaves every other day as it was.
- ``merge``: the rows are loaded into a staging table (``<table>__stage_<token>``, expiring
  after a day if a crash leaves it behind), MERGEd into the table by ``keys``, and the staging
  table dropped. In batch all the input is one load and one MERGE; in streaming each element (a
  window's firing) is. A stored row is replaced only by a row of the same or a later firing
  (``_pane``), so accumulating firings leave each key's newest total whatever order they land in.

The table is created when missing (DAY partitioning on ``partition_by``), and evolves with the
rows: new columns are added NULLABLE by a schema update before the load (the load jobs also say
ALLOW_FIELD_ADDITION and ALLOW_FIELD_RELAXATION); a type change is refused with one error
(``bigquery_schema.evolve``). Rows travel as parquet bytes (no per-row Python); only validated,
quoted names go into SQL text.

Credentials come from the environment (Application Default Credentials:
``GOOGLE_APPLICATION_CREDENTIALS``, ``gcloud auth application-default login``, or a worker's
service account) and are never read or logged here. ``endpoint`` points the client at another
BigQuery API (an emulator, a test server) and then sends no credentials.

Every API call and job is retried on BigQuery's retryable errors (429, 500, 502, 503, 504, the
``backendError``/``rateLimitExceeded``/``internalError`` reasons, dropped connections) with
jittered backoff (``google.api_core.retry``) until ``retry_for_s`` has passed for that write,
then fails with ``BigQueryUnavailable``; other errors fail at once.
A job keeps its id across tries, so a job whose insert was answered by an error but did run is
found again (409) rather than run twice; a job that ran and failed retryably is run again as a
new job.
"""

from __future__ import annotations

import logging
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.windowed_value import PaneInfo

from transforms.records import slices_by
from transforms.sinks.bigquery_schema import (
    LABEL_KEY,
    LABEL_VALUE,
    MODES,
    PANE_COLUMN,
    TableName,
    bigquery_schema,
    check_column,
    evolve,
    file_schema,
    merge_statement,
    partition_id,
)

__all__ = ["BigQuerySinkError", "BigQueryUnavailable", "WriteBigQuery", "retryable"]

_LOG = logging.getLogger(__name__)
_DAY_US = 86_400_000_000
_SPOOL_BYTES = 64 * 1024 * 1024  # a load's parquet file stays in memory up to this, then spills to a temp file
_STAGING_LIFETIME = timedelta(days=1)
_RETRYABLE_REASONS = frozenset(
    {"rateLimitExceeded", "backendError", "internalError", "badGateway", "jobBackendError", "jobInternalError",
     "jobRateLimitExceeded"}
)  # fmt: skip


class BigQuerySinkError(RuntimeError):
    """The table or the rows do not fit this write (partitioning, a missing dataset, keys, nulls)."""


class BigQueryUnavailable(ConnectionError):
    """BigQuery kept answering with retryable errors (or not at all) for the whole retry budget."""


def retryable(exc: BaseException) -> bool:
    """Whether a BigQuery call that raised ``exc`` is worth another try."""
    import requests
    from google.api_core import exceptions as api
    from google.auth import exceptions as auth

    if isinstance(exc, requests.exceptions.SSLError):
        return False
    if isinstance(
        exc,
        (ConnectionError, requests.exceptions.ConnectionError, requests.exceptions.Timeout,
         requests.exceptions.ChunkedEncodingError, auth.TransportError),
    ):  # fmt: skip
        return True
    if isinstance(exc, api.GoogleAPICallError):
        reasons = {e.get("reason") for e in exc.errors or () if isinstance(e, dict)}
        if reasons & _RETRYABLE_REASONS:
            return True
        return isinstance(
            exc, (api.TooManyRequests, api.InternalServerError, api.BadGateway, api.ServiceUnavailable,
                  api.GatewayTimeout)
        )  # fmt: skip
    return False


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


class _Budget:
    """One write's retry budget: every call in it is retried until ``seconds`` have passed."""

    def __init__(self, seconds: float, first_wait_s: float, clock=time.monotonic):
        self.seconds, self._first_wait, self._clock = seconds, first_wait_s, clock
        self._deadline = clock() + seconds

    def run(self, what: str, fn):
        """``fn()``, retried on retryable errors within the budget."""
        from google.api_core.exceptions import RetryError
        from google.api_core.retry import Retry

        failures = 0

        def failed(exc):
            nonlocal failures
            failures += 1
            _LOG.warning("%s failed (try %d): %s", what, failures, _first_line(exc))

        left = max(0.0, self._deadline - self._clock())
        retry = Retry(
            predicate=retryable, initial=self._first_wait, maximum=10.0, multiplier=2.0, timeout=left, on_error=failed
        )
        try:
            return retry(fn)()
        except RetryError as e:
            cause = e.cause if e.cause is not None else e
            raise BigQueryUnavailable(
                f"{what}: BigQuery kept failing for {self.seconds:.0f}s ({failures} tries): {_first_line(cause)}"
            ) from cause


def _wall_clock() -> datetime:
    return datetime.now(timezone.utc)


class _BigQueryFn(beam.DoFn):
    """What both modes share: the client, the table made to fit the rows, jobs run within a budget."""

    def __init__(self, sink: WriteBigQuery):
        self._target, self._schema = sink._target, sink._schema
        self._partition_by, self._keys = sink._partition_by, sink._keys
        self._required, self._location, self._endpoint = sink._required, sink._location, sink._endpoint
        self._labels, self._retry_for_s, self._first_wait_s = sink._labels, sink._retry_for_s, sink._first_wait_s
        self._clock = sink._clock
        self._client = None

    def setup(self):
        from google.auth.exceptions import DefaultCredentialsError
        from google.cloud import bigquery

        self._rows = beam.metrics.Metrics.counter("bigquery", "rows_written")
        self._jobs = beam.metrics.Metrics.counter("bigquery", "jobs")
        self._added = beam.metrics.Metrics.counter("bigquery", "columns_added")
        self._table_schema = None  # the table's columns once made to fit the rows (per worker)
        kw = {}
        if self._endpoint:
            from google.auth.credentials import AnonymousCredentials

            kw = {"credentials": AnonymousCredentials(), "client_options": {"api_endpoint": self._endpoint}}
        try:
            self._client = bigquery.Client(project=self._target.project, location=self._location, **kw)
        except DefaultCredentialsError as e:
            raise BigQuerySinkError(
                "no Google credentials found: set GOOGLE_APPLICATION_CREDENTIALS, run `gcloud auth "
                "application-default login`, or run where a service account is attached"
            ) from e

    def teardown(self):
        if self._client is not None:
            self._client.close()
            self._client = None

    def _budget(self) -> _Budget:
        return _Budget(self._retry_for_s, self._first_wait_s)

    def _wanted(self) -> list:
        """The table schema the rows need (merges add the firing column)."""
        fields = bigquery_schema(self._schema, self._required)
        if self._keys:
            from google.cloud.bigquery import SchemaField

            fields.append(SchemaField(PANE_COLUMN, "INT64", mode="NULLABLE"))
        return fields

    def _prepare(self, budget: _Budget) -> tuple:
        if self._table_schema is None:
            self._table_schema = budget.run(f"prepare table {self._target.path}", self._fit_table)
        return self._table_schema

    def _fit_table(self) -> tuple:
        """Creates the table, or checks its partitioning and evolves its schema to the rows'."""
        from google.api_core.exceptions import Conflict, NotFound, PreconditionFailed

        path, wanted = self._target.path, self._wanted()
        for _ in range(8):  # other workers may create or update the table meanwhile: read it again
            try:
                table = self._client.get_table(path, retry=None)
            except NotFound:
                try:
                    table = self._client.create_table(self._new_table(wanted), retry=None)
                except Conflict:
                    continue
                except NotFound as e:
                    raise BigQuerySinkError(
                        f"cannot create {path}: dataset {self._target.project}.{self._target.dataset} does not "
                        f"exist (the sink creates tables, not datasets): {_first_line(e)}"
                    ) from e
                _LOG.info("created table %s (%d columns, DAY partitions on %s)", path, len(wanted),
                          self._partition_by)  # fmt: skip
                return tuple(table.schema)
            self._check_partitioning(table)
            evolution = evolve(path, list(table.schema), wanted)
            if not evolution.changed:
                return evolution.schema
            table.schema = list(evolution.schema)
            try:
                self._client.update_table(table, ["schema"], retry=None)
            except PreconditionFailed:  # changed since read (its etag): read it again
                continue
            _LOG.info("table %s: added columns %s, relaxed to NULLABLE %s", path, list(evolution.added),
                      list(evolution.relaxed))  # fmt: skip
            self._added.inc(len(evolution.added))
            return evolution.schema
        raise BigQuerySinkError(f"table {path} kept changing while its schema was being updated")

    def _new_table(self, fields):
        from google.cloud import bigquery

        table = bigquery.Table(self._target.path, schema=fields)
        table.time_partitioning = bigquery.TimePartitioning(type_="DAY", field=self._partition_by)
        table.labels = dict(self._labels)
        return table

    def _check_partitioning(self, table) -> None:
        tp = table.time_partitioning
        if tp is None or tp.type_ != "DAY" or (tp.field or "").lower() != self._partition_by.lower():
            have = (
                "not time-partitioned" if tp is None else f"partitioned by {tp.type_} on {tp.field or '_PARTITIONTIME'}"
            )
            raise BigQuerySinkError(
                f"table {self._target.path} is {have}; this sink writes DAY partitions on {self._partition_by}: "
                "write to another table or recreate it"
            )

    def _job(self, budget: _Budget, what: str, kind: str, start):
        """Runs the job ``start(job_id)`` inserts, within the budget; returns it done."""
        from google.api_core.exceptions import Conflict, GoogleAPICallError
        from google.cloud.bigquery import QueryJob

        state = {"id": self._job_id(kind), "job": None}

        def attempt():
            job = state["job"]
            if job is None:
                try:
                    job = start(state["id"])
                except Conflict:  # an earlier try was inserted after all: wait for that job
                    job = self._client.get_job(state["id"], location=self._location, retry=None)
                state["job"] = job
            try:  # waits for the job; raises its error if it failed
                if isinstance(job, QueryJob):
                    job.result(retry=None, job_retry=None, max_results=0)
                else:
                    job.result(retry=None)
            except GoogleAPICallError:
                if job.error_result is not None:  # the job ran and failed: another try is a new job
                    state.update(id=self._job_id(kind), job=None)
                raise
            return job

        job = budget.run(what, attempt)
        self._jobs.inc()
        return job

    def _job_id(self, kind: str) -> str:
        return f"beam_pipelines_{kind}_{self._target.table[:200]}_{uuid.uuid4().hex}"

    def _load(self, budget: _Budget, fh, size: int, destination: str, create: str = "CREATE_NEVER"):
        from google.cloud import bigquery

        config = bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.PARQUET,
            write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
            create_disposition=create,
            decimal_target_types=["NUMERIC", "BIGNUMERIC"],
            labels=dict(self._labels),
        )
        if "$" in destination:  # a partition of the table: it may take the rows' new columns
            config.time_partitioning = bigquery.TimePartitioning(type_="DAY", field=self._partition_by)
            config.schema_update_options = [
                bigquery.SchemaUpdateOption.ALLOW_FIELD_ADDITION,
                bigquery.SchemaUpdateOption.ALLOW_FIELD_RELAXATION,
            ]

        def start(job_id):
            return self._client.load_table_from_file(
                fh, destination, rewind=True, size=size, num_retries=0, job_id=job_id, location=self._location,
                job_config=config,
            )  # fmt: skip

        return self._job(budget, f"load into {destination}", "load", start)

    def _parquet(self, tables, schema: pa.Schema, pane: int | None = None):
        """The tables as one parquet file (spooled): ``(file, rows, bytes, key columns)``."""
        fh = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES, mode="r+b")  # the client uploads "rb"-like files only
        keys, rows, writer = [], 0, None
        try:
            for table in tables:
                if table.num_rows == 0:
                    continue
                table = self._conform(table, schema, pane)
                writer = writer or pq.ParquetWriter(fh, schema, compression="snappy")
                writer.write_table(table)
                rows += table.num_rows
                if self._keys:
                    keys.append(table.select(list(self._keys)))
        finally:
            if writer is not None:
                writer.close()
        return fh, rows, fh.tell(), keys

    def _conform(self, table: pa.Table, schema: pa.Schema, pane: int | None) -> pa.Table:
        if pane is not None:
            table = table.append_column(PANE_COLUMN, pa.array(np.full(table.num_rows, pane, np.int64)))
        table = table.select(schema.names)
        nulls = [f.name for f in schema if not f.nullable and table.column(f.name).null_count]
        if nulls:
            raise BigQuerySinkError(
                f"{self._target.path}: columns {nulls} are REQUIRED in the table (required fields of the "
                "contract) but some rows have no value there"
            )
        return table.cast(schema)


class _ByDayFn(beam.DoFn):
    def __init__(self, columns: tuple[str, ...], partition_by: str):
        self._columns, self._partition_by = columns, partition_by

    def process(self, table: pa.Table):
        if table.num_rows == 0:
            return
        table = table.select(list(self._columns))
        days = _days(table.column(self._partition_by))
        if days is None:
            raise BigQuerySinkError(
                f"column {self._partition_by} is null in some rows: a row without a day has no partition to "
                "replace (partition by a column that always has a value)"
            )
        for day, rows in slices_by(table, days):
            yield partition_id(day), rows


def _days(column) -> np.ndarray | None:
    """UTC day numbers of a timestamp or date column (None when it holds a null)."""
    if column.null_count:
        return None
    if pa.types.is_timestamp(column.type):
        micros = pc.cast(pc.cast(column, pa.timestamp("us", tz="UTC")), pa.int64()).to_numpy(zero_copy_only=False)
        return np.floor_divide(micros, _DAY_US)
    return pc.cast(pc.cast(column, pa.date32()), pa.int32()).to_numpy(zero_copy_only=False).astype(np.int64)


class _LoadPartitionFn(_BigQueryFn):
    def process(self, element):
        day, tables = element
        budget = self._budget()
        table_schema = self._prepare(budget)
        schema = file_schema(self._schema, table_schema)
        fh, rows, size, _ = self._parquet(tables, schema)
        with fh:
            if rows == 0:
                return
            destination = self._target.partition(day)
            job = self._load(budget, fh, size, destination)
        self._rows.inc(rows)
        yield {"table": destination, "mode": "replace_partitions", "rows": rows, "bytes": size, "job_id": job.job_id}


class _MergeFn(_BigQueryFn):
    def process(self, element, pane_info=beam.DoFn.PaneInfoParam):
        if isinstance(element, pa.Table):  # streaming: each firing as it comes
            tables = [element]
            pane = pane_info.index if isinstance(pane_info, PaneInfo) else 0
        else:  # batch: the whole input, grouped under one key
            tables, pane = element[1], 0
        yield from self._merge(tables, pane)

    def _merge(self, tables, pane: int):
        from google.cloud import bigquery

        budget = self._budget()
        table_schema = self._prepare(budget)
        names = {n.lower() for n in (*self._schema.names, PANE_COLUMN)}
        staged_fields = [f for f in table_schema if f.name.lower() in names]
        schema = file_schema(self._schema.append(pa.field(PANE_COLUMN, pa.int64())), staged_fields)
        fh, rows, size, keys = self._parquet(tables, schema, pane)
        with fh:
            if rows == 0:
                return
            keys = pa.concat_tables(keys)
            self._check_unique(keys)
            staging = self._target.staging(uuid.uuid4().hex)
            try:
                table = bigquery.Table(staging.path, schema=staged_fields)
                table.expires = self._clock() + _STAGING_LIFETIME
                table.labels = dict(self._labels)
                budget.run(
                    f"create {staging.path}", lambda: self._client.create_table(table, exists_ok=True, retry=None)
                )
                self._load(budget, fh, size, staging.path)
                sql, params = self._statement(staging, keys)
                config = bigquery.QueryJobConfig(query_parameters=params, labels=dict(self._labels))

                def start(job_id):
                    return self._client.query(
                        sql, job_config=config, job_id=job_id, location=self._location, retry=None, job_retry=None
                    )

                job = self._job(budget, f"MERGE into {self._target.path}", "merge", start)
            finally:
                self._drop(staging)
        self._rows.inc(rows)
        yield {
            "table": self._target.path, "mode": "merge", "rows": rows, "bytes": size, "pane": pane,
            "job_id": job.job_id, "rows_affected": job.num_dml_affected_rows,
        }  # fmt: skip

    def _check_unique(self, keys: pa.Table) -> None:
        counts = keys.group_by(list(self._keys)).aggregate([([], "count_all")])
        repeated = counts.filter(pc.greater(counts["count_all"], 1))
        if repeated.num_rows:
            raise BigQuerySinkError(
                f"MERGE into {self._target.path}: {repeated.num_rows} keys {list(self._keys)} occur more than once "
                f"in the rows of one write (e.g. {repeated.slice(0, 1).drop_columns(['count_all']).to_pylist()[0]}); "
                "a MERGE takes one row per key"
            )

    def _statement(self, staging: TableName, keys: pa.Table):
        from google.cloud import bigquery

        partition, params = None, []
        if self._partition_by in self._keys and keys.column(self._partition_by).null_count == 0:
            column = keys.column(self._partition_by)
            kind = "TIMESTAMP" if pa.types.is_timestamp(column.type) else "DATE"
            bounds = pc.min_max(column)
            partition = self._partition_by
            params = [
                bigquery.ScalarQueryParameter("partition_lo", kind, bounds["min"].as_py()),
                bigquery.ScalarQueryParameter("partition_hi", kind, bounds["max"].as_py()),
            ]
        return merge_statement(self._target, staging, self._schema.names, self._keys, partition), params

    def _drop(self, staging: TableName) -> None:
        from google.api_core.exceptions import GoogleAPICallError

        budget = _Budget(min(60.0, self._retry_for_s), self._first_wait_s)
        try:
            budget.run(
                f"drop {staging.path}", lambda: self._client.delete_table(staging.path, not_found_ok=True, retry=None)
            )
        except (BigQueryUnavailable, GoogleAPICallError) as e:
            # The rows are in the table (or the write fails anyway); the staging table expires in a day.
            _LOG.warning("staging table %s not dropped (it expires in a day): %s", staging.path, _first_line(e))


def _keyed(table: pa.Table):
    return 0, table


class WriteBigQuery(beam.PTransform):
    """Writes tables into a day-partitioned BigQuery table (see the module doc for the modes).

    Args:
        project: The table's Google Cloud project (jobs run and are billed there).
        dataset: An existing dataset.
        table: The table (created when missing; its schema evolves with the rows').
        schema: Arrow schema of the rows written (columns starting with ``_`` are not written).
        partition_by: A timestamp or date column: the table is partitioned by its UTC day.
        mode: ``replace_partitions`` (batch only) or ``merge`` (needs ``keys``).
        keys: ``merge``: the columns that identify a row.
        required: Columns created REQUIRED (required fields of the record contract); the
            others are NULLABLE. A table made with fewer required columns is left as it is.
        streaming: ``merge``: True merges each element (a window's firing) as it comes; False
            merges the whole input once.
        location: BigQuery location of the dataset (``US``, ``EU``, ``europe-west1``...).
            Default: the client's (found from the dataset).
        endpoint: Another BigQuery API's root URL (an emulator, a test server); requests then
            carry no credentials. Default: Google's, with Application Default Credentials.
        labels: Labels set on the table and on every job (lower-case keys and values).
        retry_for_s: How long one write (a partition's load; a merge's staging load and MERGE)
            retries BigQuery's retryable errors before failing with ``BigQueryUnavailable``.
        first_wait_s: The longest first wait between tries; each wait is drawn at random up to a
            bound that doubles from this to 10 s (google.api_core's jittered backoff), and the
            tries stop when the next wait would end past the budget.
        clock: Returns the time (timezone-aware) from which a staging table's expiry is set.

    Returns a PCollection of dicts, one per load (``replace_partitions``: ``table`` with its
    partition decorator, ``rows``, ``bytes``, ``job_id``) or merge (also ``pane`` and
    ``rows_affected``).
    """

    def __init__(
        self,
        project: str,
        dataset: str,
        table: str,
        schema: pa.Schema,
        partition_by: str,
        mode: str = "replace_partitions",
        keys: tuple[str, ...] = (),
        required: tuple[str, ...] = (),
        streaming: bool = False,
        location: str | None = None,
        endpoint: str | None = None,
        labels: dict | None = None,
        retry_for_s: float = 300.0,
        first_wait_s: float = 0.5,
        clock=_wall_clock,
        label: str | None = None,
    ):
        import re

        super().__init__(label)
        self._target = TableName(project, dataset, table)
        self._schema = pa.schema([f for f in schema if not f.name.startswith("_")])
        if not self._schema.names:
            raise ValueError("the schema has no columns to write")
        bigquery_schema(self._schema, required)  # every column named and typed for BigQuery, or ValueError
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if partition_by not in self._schema.names:
            raise ValueError(f"partition_by {partition_by!r} is not a written column of the schema")
        kind = self._schema.field(partition_by).type
        if not (pa.types.is_timestamp(kind) or pa.types.is_date(kind)):
            raise ValueError(f"partition_by {partition_by!r} must be a timestamp or date column, not {kind}")
        keys = tuple(check_column(k) for k in keys)
        if mode == "merge":
            missing = [k for k in keys if k not in self._schema.names]
            if not keys or missing:
                raise ValueError(f"merge needs keys, columns of the schema (missing: {missing or 'keys'})")
        elif keys:
            raise ValueError("keys apply to mode merge; replace_partitions replaces whole days")
        if mode == "replace_partitions" and streaming:
            raise ValueError("a streaming write merges by keys: a window's firing holds part of a day")
        if endpoint is not None and not re.match(r"^https?://[^\s/]+(/\S*)?$", endpoint):
            raise ValueError(f"endpoint must be an http(s) URL, got {endpoint!r}")
        labels = dict(labels or {})
        for k, v in labels.items():
            if not (re.fullmatch(LABEL_KEY, str(k)) and re.fullmatch(LABEL_VALUE, str(v))):
                raise ValueError(f"label {k}={v} must match {LABEL_KEY} = {LABEL_VALUE}")
        if not retry_for_s > 0 or not first_wait_s > 0:
            raise ValueError(f"retry_for_s and first_wait_s must be > 0, got {retry_for_s}, {first_wait_s}")
        self._partition_by, self._mode, self._keys, self._streaming = partition_by, mode, keys, streaming
        self._required = tuple(r for r in required if r in self._schema.names)
        self._location, self._endpoint, self._labels = location, endpoint, labels
        self._retry_for_s, self._first_wait_s, self._clock = float(retry_for_s), float(first_wait_s), clock

    def expand(self, tables):
        if not self._streaming:
            # Elements may come windowed (an aggregate's, one window each): a day's load must hold the
            # whole day, and a batch merge the whole input, so they are gathered across windows.
            tables = tables | "AllWindows" >> beam.WindowInto(GlobalWindows())
        if self._mode == "replace_partitions":
            days = _ByDayFn(tuple(self._schema.names), self._partition_by)
            return (
                tables
                | "ByDay"
                >> beam.ParDo(days).with_input_types(pa.Table).with_output_types(beam.typehints.KV[str, pa.Table])
                | "GroupDays" >> beam.GroupByKey()
                | "LoadDays" >> beam.ParDo(_LoadPartitionFn(self)).with_output_types(dict)
            )
        if not self._streaming:
            tables = (
                tables
                | "KeyAll"
                >> beam.Map(_keyed).with_input_types(pa.Table).with_output_types(beam.typehints.KV[int, pa.Table])
                | "GroupAll" >> beam.GroupByKey()
            )
        return tables | "Merge" >> beam.ParDo(_MergeFn(self)).with_output_types(dict)
