"""The BigQuery sink up to and through the real client: schemas, names and the MERGE text as pure
functions; then the real ``google-cloud-bigquery`` client against a local stand-in of the REST API
(``tests/bigquery_api.py``): what each load and query job asks for, re-runs, evolution, retries
through 503s, 500s, 429s and dropped connections, and the one error after the budget. No real
BigQuery is involved (README: BigQuery sink)."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import FixedWindows, TimestampedValue
from apache_beam.utils.windowed_value import PaneInfo, PaneInfoTiming
from google.api_core import exceptions as errors
from google.cloud.bigquery import SchemaField

from tests.bigquery_api import FakeBigQuery
from transforms.sinks.bigquery import (
    BigQuerySinkError,
    BigQueryUnavailable,
    WriteBigQuery,
    _LoadPartitionFn,
    _MergeFn,
    retryable,
)
from transforms.sinks.bigquery_schema import (
    SchemaChangeRefused,
    TableName,
    bigquery_schema,
    evolve,
    file_schema,
    merge_statement,
)

UTC = timezone.utc
T0 = datetime(2024, 3, 1, tzinfo=UTC)
TS = pa.timestamp("us", tz="UTC")
DEC = pa.decimal128(18, 2)
TABLE = "proj-1.sales.orders"


def orders(ids, hours, amounts=None, status=None) -> pa.Table:
    n = len(ids)
    return pa.table(
        {
            "order_id": pa.array(ids, pa.string()),
            "amount": pa.array([Decimal(str(a)) for a in (amounts or [1.5] * n)], DEC),
            "status": pa.array(status or ["paid"] * n, pa.string()),
            "updated_at": pa.array([T0 + timedelta(hours=h) for h in hours], TS),
        }
    )


def sink(api: FakeBigQuery, schema: pa.Schema, **kw) -> WriteBigQuery:
    kw = {"partition_by": "updated_at", "required": ("order_id", "updated_at"), "endpoint": api.url,
          "first_wait_s": 0.02, **kw}  # fmt: skip
    return WriteBigQuery("proj-1", "sales", kw.pop("table", "orders"), schema, **kw)


def run(write: WriteBigQuery, tables: list[pa.Table], pipeline, expect_rows: int | None = None) -> None:
    with pipeline() as p:
        out = p | beam.Create(tables) | write
        if expect_rows is not None:
            total = out | "Rows" >> beam.Map(lambda d: d["rows"]) | beam.CombineGlobally(sum)
            assert_that(total, equal_to([expect_rows]))


def stored(api: FakeBigQuery, table: str = TABLE) -> list[dict]:
    return sorted(api.rows(table).to_pylist(), key=lambda r: (r["order_id"] or "", str(r.get("updated_at"))))


def direct(fn_type, write: WriteBigQuery):
    """The sink's DoFn set up on its own, to call ``process`` directly (streaming firings, failures)."""
    fn = fn_type(write)
    fn.setup()
    return fn


# -- pure parts --------------------------------------------------------------------------------


def test_arrow_types_become_bigquery_types_with_decimals_by_precision_and_modes_from_the_contract():
    schema = pa.schema(
        [("s", pa.string()), ("ls", pa.large_string()), ("i", pa.int32()), ("l", pa.int64()), ("f", pa.float64()),
         ("b", pa.bool_()), ("ts", TS), ("d", pa.date32()), ("bin", pa.binary()), ("n", DEC),
         ("n38_9", pa.decimal128(38, 9)), ("big_scale", pa.decimal128(38, 10)), ("big_whole", pa.decimal256(40, 2)),
         ("rec", pa.struct([("x", pa.int64()), ("y", pa.string())]))]
    )  # fmt: skip
    fields = bigquery_schema(schema, required=("s", "ts"))
    assert [(f.name, f.field_type, f.mode) for f in fields] == [
        ("s", "STRING", "REQUIRED"), ("ls", "STRING", "NULLABLE"), ("i", "INT64", "NULLABLE"),
        ("l", "INT64", "NULLABLE"), ("f", "FLOAT64", "NULLABLE"), ("b", "BOOL", "NULLABLE"),
        ("ts", "TIMESTAMP", "REQUIRED"), ("d", "DATE", "NULLABLE"), ("bin", "BYTES", "NULLABLE"),
        ("n", "NUMERIC", "NULLABLE"), ("n38_9", "NUMERIC", "NULLABLE"), ("big_scale", "BIGNUMERIC", "NULLABLE"),
        ("big_whole", "BIGNUMERIC", "NULLABLE"), ("rec", "RECORD", "NULLABLE"),
    ]  # fmt: skip
    assert [(f.name, f.field_type) for f in fields[-1].fields] == [("x", "INT64"), ("y", "STRING")]
    for bad, message in [
        (pa.decimal256(76, 0), "fits neither NUMERIC nor BIGNUMERIC"),
        (pa.list_(pa.int64()), "make them JSON text first"),
        (pa.timestamp("us"), "has no time zone"),
        (pa.uint64(), "does not fit INT64"),
    ]:
        with pytest.raises(ValueError, match=message):
            bigquery_schema(pa.schema([("x", bad)]))
    with pytest.raises(ValueError, match="one column to BigQuery"):
        bigquery_schema(pa.schema([("Amount", pa.int64()), ("amount", pa.int64())]))
    # The parquet file a load sends: BigQuery's widths, non-nullable exactly where the table is REQUIRED.
    sent = file_schema(pa.schema([("s", pa.large_string()), ("i", pa.int32()), ("ts", pa.timestamp("ms", tz="UTC"))]),
                       [SchemaField("S", "STRING", mode="REQUIRED"), SchemaField("i", "INTEGER")])  # fmt: skip
    assert sent == pa.schema([pa.field("s", pa.string(), nullable=False), ("i", pa.int64()), ("ts", TS)])


def test_hostile_names_are_refused_and_names_are_quoted():
    name = TableName("proj-1", "sales", "orders")
    assert (name.path, name.sql) == ("proj-1.sales.orders", "`proj-1`.`sales`.`orders`")
    assert name.partition("20240301") == "proj-1.sales.orders$20240301"
    assert TableName("example.com:proj-1", "d", "t").sql == "`example.com:proj-1`.`d`.`t`"
    for project, dataset, table in [
        ("proj-1", "sales", "orders`; DROP TABLE x; --"), ("proj-1", "sales", "a.b"), ("proj-1", "sales", ""),
        ("proj-1", "sa les", "t"), ("Proj-1", "sales", "t"), ("p", "sales", "t"), ("proj-1`", "sales", "t"),
    ]:  # fmt: skip
        with pytest.raises(ValueError):
            TableName(project, dataset, table)
    with pytest.raises(ValueError):
        name.partition("2024-03-01")
    for column in ("a b", "x`y", "1a", "_PARTITIONTIME", "_table_suffix", "a" * 301):
        with pytest.raises(ValueError):
            bigquery_schema(pa.schema([(column, pa.int64())]))
    with pytest.raises(ValueError, match="must match"):
        WriteBigQuery("proj-1", "sales", "t", pa.schema([("ts", TS)]), "ts", mode="merge", keys=("ts`) OR TRUE --",))


def test_the_schema_evolves_by_added_nullable_and_relaxed_columns_and_refuses_type_changes():
    current = [SchemaField("order_id", "STRING", mode="REQUIRED"), SchemaField("amount", "NUMERIC"),
               SchemaField("qty", "INTEGER", mode="REQUIRED"), SchemaField("old", "STRING")]  # fmt: skip
    wanted = [SchemaField("ORDER_ID", "STRING", mode="REQUIRED"), SchemaField("amount", "NUMERIC"),
              SchemaField("qty", "INT64"), SchemaField("channel", "STRING", mode="REQUIRED")]  # fmt: skip
    evolved = evolve(TABLE, current, wanted)
    assert (evolved.added, evolved.relaxed) == (("channel",), ("qty",))
    assert [(f.name, f.field_type, f.mode) for f in evolved.schema] == [
        ("order_id", "STRING", "REQUIRED"), ("amount", "NUMERIC", "NULLABLE"), ("qty", "INTEGER", "NULLABLE"),
        ("old", "STRING", "NULLABLE"), ("channel", "STRING", "NULLABLE"),
    ]  # fmt: skip
    assert not evolve(TABLE, list(evolved.schema), wanted).changed
    # A BIGNUMERIC column takes decimals that would be NUMERIC; nothing else differs quietly.
    assert not evolve(TABLE, [SchemaField("amount", "BIGNUMERIC")], [SchemaField("amount", "NUMERIC")]).changed
    with pytest.raises(SchemaChangeRefused) as info:
        evolve(TABLE, current, [SchemaField("order_id", "INT64"), SchemaField("amount", "FLOAT64"),
                                SchemaField("qty", "INT64")])  # fmt: skip
    message = str(info.value)
    assert message.count("\n") == 0 and message.startswith(f"BigQuery table {TABLE}: ")
    assert "column order_id is STRING in the table but INT64 in the rows" in message
    assert "column amount is NUMERIC in the table but FLOAT64 in the rows" in message
    with pytest.raises(SchemaChangeRefused, match="column qty is REQUIRED in the table but the rows do not have it"):
        evolve(TABLE, current, [SchemaField("order_id", "STRING")])


def test_the_merge_statement_holds_only_quoted_names_and_matches_null_keys():
    target, staging = TableName("proj-1", "sales", "hourly"), TableName("proj-1", "sales", "hourly").staging("ab" * 16)
    sql = merge_statement(target, staging, ["window_start", "country", "events"], ["window_start", "country"],
                          partition="window_start")  # fmt: skip
    assert sql == (
        "MERGE INTO `proj-1`.`sales`.`hourly` AS T\n"
        f"USING `proj-1`.`sales`.`hourly__stage_{'ab' * 16}` AS S\n"
        "ON T.`window_start` IS NOT DISTINCT FROM S.`window_start` AND T.`country` IS NOT DISTINCT FROM S.`country` "
        "AND T.`window_start` BETWEEN @partition_lo AND @partition_hi\n"
        "WHEN MATCHED AND (T.`_pane` IS NULL OR T.`_pane` <= S.`_pane`) THEN\n"
        "  UPDATE SET `events` = S.`events`, `_pane` = S.`_pane`\n"
        "WHEN NOT MATCHED THEN\n"
        "  INSERT (`window_start`, `country`, `events`, `_pane`) VALUES (S.`window_start`, S.`country`, S.`events`, "
        "S.`_pane`)"
    )
    with pytest.raises(ValueError, match="keys"):
        merge_statement(target, staging, ["a"], ["b"])
    with pytest.raises(ValueError, match="sink's own"):
        merge_statement(target, staging, ["a", "_pane"], ["a"])
    with pytest.raises(ValueError, match="one of the keys"):
        merge_statement(target, staging, ["a", "ts"], ["a"], partition="ts")
    with pytest.raises(ValueError):
        merge_statement(target, staging, ["a", "b` = 1; --"], ["a"])


def test_the_retryable_errors_are_bigquerys():
    import requests

    def http(cls, reason=None):
        return cls("x", errors=[{"reason": reason, "message": "x"}] if reason else [])

    assert all(retryable(e) for e in [
        http(errors.ServiceUnavailable), http(errors.InternalServerError), http(errors.TooManyRequests), http(errors.BadGateway),
        http(errors.GatewayTimeout), http(errors.Forbidden, "rateLimitExceeded"), http(errors.BadRequest, "jobBackendError"),
        http(errors.InternalServerError, "backendError"), requests.exceptions.ConnectionError("reset"),
        requests.exceptions.Timeout("slow"), ConnectionResetError(),
    ])  # fmt: skip
    assert not any(retryable(e) for e in [
        http(errors.BadRequest, "invalid"), http(errors.Forbidden, "accessDenied"), http(errors.Forbidden, "quotaExceeded"),
        http(errors.NotFound, "notFound"), http(errors.Conflict, "duplicate"), requests.exceptions.SSLError("cert"),
        ValueError("x"),
    ])  # fmt: skip


def test_bad_sink_config_fails_at_build():
    schema = orders(["a"], [0]).schema
    cases = [
        (dict(mode="upsert"), "mode must be one of"),
        (dict(mode="merge"), "merge needs keys"),
        (dict(keys=("order_id",)), "keys apply to mode merge"),
        (dict(streaming=True), "a streaming write merges by keys"),
        (dict(partition_by="status"), "must be a timestamp or date column"),
        (dict(partition_by="nope"), "not a written column"),
        (dict(endpoint="ftp://x"), "endpoint must be an http"),
        (dict(labels={"Team": "x"}), "label Team=x"),
        (dict(retry_for_s=0), "must be > 0"),
    ]
    for kw, message in cases:
        with pytest.raises(ValueError, match=message):
            WriteBigQuery("proj-1", "sales", "orders", schema, **{"partition_by": "updated_at", **kw})


# -- through the client, against the local API ----------------------------------------------------


def test_replace_partitions_loads_each_day_into_its_partition_with_write_truncate(pipeline):
    rows = orders(["a", "b", "c", "d"], [1, 5, 30, 50])  # days 1, 1, 2, 3
    with FakeBigQuery() as api:
        run(sink(api, rows.schema, labels={"team": "data"}), [rows.slice(0, 2), rows.slice(2)], pipeline, 4)
        made = api.tables[TABLE]
        assert made["timePartitioning"] == {"type": "DAY", "field": "updated_at"} and made["labels"] == {"team": "data"}
        assert [(f["name"], f["type"], f["mode"]) for f in made["schema"]["fields"]] == [
            ("order_id", "STRING", "REQUIRED"), ("amount", "NUMERIC", "NULLABLE"), ("status", "STRING", "NULLABLE"),
            ("updated_at", "TIMESTAMP", "REQUIRED"),
        ]  # fmt: skip
        loads = sorted(api.loads, key=lambda x: x["configuration"]["load"]["destinationTable"]["tableId"])
        assert [x["configuration"]["load"]["destinationTable"]["tableId"] for x in loads] == [
            "orders$20240301", "orders$20240302", "orders$20240303"]  # fmt: skip
        for load in loads:
            config = load["configuration"]
            assert config["labels"] == {"team": "data"} and load["upload"] == "multipart"
            assert {k: v for k, v in config["load"].items() if k != "destinationTable"} == {
                "sourceFormat": "PARQUET", "writeDisposition": "WRITE_TRUNCATE", "createDisposition": "CREATE_NEVER",
                "decimalTargetTypes": ["NUMERIC", "BIGNUMERIC"], "timePartitioning": {"type": "DAY", "field": "updated_at"},
                "schemaUpdateOptions": ["ALLOW_FIELD_ADDITION", "ALLOW_FIELD_RELAXATION"],
            }  # fmt: skip
        assert [x["rows"].column("order_id").to_pylist() for x in loads] == [["a", "b"], ["c"], ["d"]]
        # The parquet sent says REQUIRED where the table does (an optional column would not load there).
        assert [f.nullable for f in loads[0]["rows"].schema] == [False, True, True, False]
        assert stored(api) == rows.to_pylist()


def test_a_date_column_partitions_too():
    days = pa.array([19783, 19784, 19784], pa.int32()).cast(pa.date32())  # 2024-03-01, 02, 02
    rows = pa.table({"day": days, "n": [1, 2, 3]})
    with FakeBigQuery() as api:
        write = WriteBigQuery("proj-1", "sales", "merged", rows.schema, "day", mode="merge", keys=("day",),
                              endpoint=api.url)  # fmt: skip
        with pytest.raises(BigQuerySinkError, match="occur more than once"):
            list(direct(_MergeFn, write).process((0, [rows])))
        write = WriteBigQuery("proj-1", "sales", "daily", rows.schema, "day", endpoint=api.url)
        fn = direct(_LoadPartitionFn, write)
        list(fn.process(("20240301", [rows.slice(0, 1)])))
        list(fn.process(("20240302", [rows.slice(1)])))
        assert api.tables["proj-1.sales.daily"]["timePartitioning"] == {"type": "DAY", "field": "day"}
        assert [f["type"] for f in api.tables["proj-1.sales.daily"]["schema"]["fields"]] == ["DATE", "INT64"]
        assert sorted(r["n"] for r in api.rows("proj-1.sales.daily").to_pylist()) == [1, 2, 3]
        with pytest.raises(Exception, match="different partitions"):  # the stand-in checks decorators like BigQuery
            list(fn.process(("20240301", [rows.slice(1)])))


def test_windowed_elements_still_load_each_day_once(pipeline):
    """An aggregate's elements are one window each (here hourly): a day's load gathers all its
    windows, else each window's load would replace the one before it."""
    rows = orders([f"o{h}" for h in range(30)], list(range(30)))
    with FakeBigQuery() as api:
        with pipeline() as p:
            hourly = (
                p
                | beam.Create([rows.slice(h, 1) for h in range(30)])
                | "Stamp"
                >> beam.Map(lambda t: TimestampedValue(t, t["updated_at"][0].value / 1e6)).with_output_types(pa.Table)
                | "Hourly" >> beam.WindowInto(FixedWindows(3600))
            )
            hourly | sink(api, rows.schema)
        assert sorted(x["configuration"]["load"]["destinationTable"]["tableId"] for x in api.loads) == [
            "orders$20240301", "orders$20240302"]  # fmt: skip
        assert len(stored(api)) == 30
        with pipeline() as p:
            hourly = (
                p
                | beam.Create([rows.slice(h, 1) for h in range(30)])
                | "Stamp"
                >> beam.Map(lambda t: TimestampedValue(t, t["updated_at"][0].value / 1e6)).with_output_types(pa.Table)
                | "Hourly" >> beam.WindowInto(FixedWindows(3600))
            )
            hourly | sink(api, rows.schema, table="merged", mode="merge", keys=("order_id",))
        assert len(api.queries) == 1 and len(api.rows("proj-1.sales.merged")) == 30


def test_a_rerun_replaces_exactly_the_days_it_has_rows_for(pipeline):
    with FakeBigQuery() as api:
        run(sink(api, orders(["a"], [0]).schema), [orders(["a", "b", "c"], [1, 30, 50])], pipeline)
        # Day 2 again, with other rows: c (day 3) and a (day 1) stay; b is replaced by b2 and b3.
        again = orders(["b2", "b3"], [26, 27], amounts=[9.99, 1])
        run(sink(api, again.schema), [again], pipeline)
        assert [(r["order_id"], r["amount"]) for r in stored(api)] == [
            ("a", Decimal("1.5")), ("b2", Decimal("9.99")), ("b3", Decimal("1")), ("c", Decimal("1.5"))]  # fmt: skip
        assert api.loads[-1]["configuration"]["load"]["destinationTable"]["tableId"] == "orders$20240302"
        # The same run twice changes nothing.
        before = stored(api)
        run(sink(api, again.schema), [again], pipeline)
        assert stored(api) == before


def test_merge_stages_the_rows_merges_them_by_key_and_drops_the_staging_table(pipeline):
    keys, required = ("order_id", "updated_at"), ("updated_at",)  # a null order_id is a key too
    first = orders(["a", "b", None], [1, 2, 3], amounts=[1, 2, 3])
    with FakeBigQuery() as api:
        run(
            sink(api, first.schema, mode="merge", keys=keys, required=required),
            [first.slice(0, 2), first.slice(2)],
            pipeline,
            3,
        )
        routes = api.routes()
        assert routes == ["get_table", "create_table", "create_table", "upload", "insert_job", "query_results",
                          "delete_table"]  # fmt: skip
        staging_load = api.loads[0]["configuration"]["load"]
        staging = staging_load["destinationTable"]["tableId"]
        assert staging.startswith("orders__stage_") and staging_load["writeDisposition"] == "WRITE_TRUNCATE"
        assert "schemaUpdateOptions" not in staging_load and list(api.tables) == [TABLE]  # dropped
        created = [p for r, p in api.requests if r == "create_table"]
        assert len(created) == 2
        (query,) = api.queries
        assert query["query"].startswith("MERGE INTO `proj-1`.`sales`.`orders` AS T\n"
                                         f"USING `proj-1`.`sales`.`{staging}` AS S\n")  # fmt: skip
        # updated_at is a key and the partitioning column: the MERGE reads only the staged rows' days.
        assert "T.`updated_at` BETWEEN @partition_lo AND @partition_hi" in query["query"]
        assert [(p["name"], p["parameterType"]["type"], p["parameterValue"]["value"]) for p in query["parameters"]] == [
            ("partition_lo", "TIMESTAMP", "2024-03-01 01:00:00+00:00"),
            ("partition_hi", "TIMESTAMP", "2024-03-01 03:00:00+00:00"),
        ]  # fmt: skip
        assert [(r["order_id"], r["amount"], r["_pane"]) for r in stored(api)] == [
            (None, Decimal("3"), 0), ("a", Decimal("1"), 0), ("b", Decimal("2"), 0)]  # fmt: skip
        # Again with one row changed and one new: a null key matches its row; nothing is duplicated.
        second = orders(["a", "c", None], [1, 4, 3], amounts=[10, 4, 30])
        run(sink(api, second.schema, mode="merge", keys=keys, required=required), [second], pipeline)
        assert [(r["order_id"], r["amount"]) for r in stored(api)] == [
            (None, Decimal("30")), ("a", Decimal("10")), ("b", Decimal("2")), ("c", Decimal("4"))]  # fmt: skip
        run(sink(api, second.schema, mode="merge", keys=keys, required=required), [second], pipeline)
        assert len(stored(api)) == 4 and list(api.tables) == [TABLE]


def test_streaming_firings_merge_in_any_order_and_the_latest_firing_wins():
    """Accumulating firings of one window: each carries the total so far; whatever order they
    land in, the table ends with the last firing's total (like the PostgreSQL sink)."""
    schema = pa.schema([("window_start", TS), ("country", pa.string()), ("events", pa.int64())])

    def firing(events):
        return pa.table([[T0, T0], ["US", None], events], schema=schema)

    with FakeBigQuery() as api:
        write = WriteBigQuery("proj-1", "sales", "hourly", schema, "window_start", mode="merge",
                              keys=("window_start", "country"), streaming=True, endpoint=api.url)  # fmt: skip
        fn = direct(_MergeFn, write)
        for index, events in [(0, [1, 1]), (2, [5, 7]), (1, [3, 4])]:  # firing 1 lands after firing 2
            (summary,) = fn.process(firing(events), pane_info=PaneInfo(False, False, PaneInfoTiming.EARLY, index, -1))
            assert summary["pane"] == index
        fn.teardown()
        assert sorted((r["country"] or "", r["events"], r["_pane"]) for r in api.rows("proj-1.sales.hourly").to_pylist()) == [
            ("", 7, 2), ("US", 5, 2)]  # fmt: skip
        assert len(api.queries) == 3 and list(api.tables) == ["proj-1.sales.hourly"]


def test_new_columns_are_added_nullable_before_the_load(pipeline):
    with FakeBigQuery() as api:
        api.create(TABLE, [{"name": "order_id", "type": "STRING", "mode": "REQUIRED"},
                           {"name": "amount", "type": "NUMERIC"},
                           {"name": "updated_at", "type": "TIMESTAMP", "mode": "REQUIRED"},
                           {"name": "coupon", "type": "STRING"}], partition_field="updated_at")  # fmt: skip
        rows = orders(["a"], [0]).append_column("channel", pa.array(["web"]))
        run(sink(api, rows.schema), [rows], pipeline)
        assert api.routes()[:2] == ["get_table", "patch_table"]
        fields = api.tables[TABLE]["schema"]["fields"]
        assert [(f["name"], f["type"], f.get("mode")) for f in fields] == [
            ("order_id", "STRING", "REQUIRED"), ("amount", "NUMERIC", "NULLABLE"),
            ("updated_at", "TIMESTAMP", "REQUIRED"), ("coupon", "STRING", "NULLABLE"),
            ("status", "STRING", "NULLABLE"), ("channel", "STRING", "NULLABLE"),
        ]  # fmt: skip
        assert stored(api)[0]["channel"] == "web" and stored(api)[0]["coupon"] is None


def test_a_type_change_is_refused_with_one_error_before_any_load():
    with FakeBigQuery() as api:
        api.create(TABLE, [{"name": "order_id", "type": "STRING"}, {"name": "amount", "type": "FLOAT"},
                           {"name": "updated_at", "type": "TIMESTAMP"}], partition_field="updated_at")  # fmt: skip
        fn = direct(_LoadPartitionFn, sink(api, orders(["a"], [0]).schema))
        with pytest.raises(SchemaChangeRefused, match="column amount is FLOAT64 in the table but NUMERIC in the rows"):
            list(fn.process(("20240301", [orders(["a"], [0])])))
        assert api.loads == [] and "patch_table" not in api.routes()


def test_a_table_partitioned_otherwise_or_a_missing_dataset_is_one_clear_error():
    rows = orders(["a"], [0])
    with FakeBigQuery() as api:
        api.create(TABLE, [{"name": "order_id", "type": "STRING"}])
        fn = direct(_LoadPartitionFn, sink(api, rows.schema))
        with pytest.raises(BigQuerySinkError, match="is not time-partitioned; this sink writes DAY partitions on "):
            list(fn.process(("20240301", [rows])))
        elsewhere = WriteBigQuery("proj-1", "nowhere", "t", rows.schema, "updated_at", endpoint=api.url)
        fn = direct(_LoadPartitionFn, elsewhere)
        with pytest.raises(BigQuerySinkError, match="dataset proj-1.nowhere does not exist"):
            list(fn.process(("20240301", [rows])))


def test_rows_that_do_not_fit_are_refused_before_any_upload(pipeline):
    with FakeBigQuery() as api:
        fn = direct(_LoadPartitionFn, sink(api, orders(["a"], [0]).schema))
        with pytest.raises(BigQuerySinkError, match=r"columns \['order_id'\] are REQUIRED in the table"):
            list(fn.process(("20240301", [orders([None], [0])])))
        fn = direct(_MergeFn, sink(api, orders(["a"], [0]).schema, mode="merge", keys=("order_id",)))
        with pytest.raises(BigQuerySinkError, match=r"1 keys \['order_id'\] occur more than once"):
            list(fn.process((0, [orders(["a", "b"], [0, 1]), orders(["a"], [2])])))
        with pytest.raises(BigQuerySinkError, match="is null in some rows"):
            schema = orders(["a"], [0]).schema
            run(sink(api, schema, required=()), [orders(["a"], [0]).set_column(3, "updated_at", pa.nulls(1, TS))],
                pipeline)  # fmt: skip
        assert "upload" not in api.routes()


def test_values_never_reach_the_sql_text():
    hostile = "x'); DROP TABLE `proj-1`.`sales`.`orders`; --"
    rows = orders([hostile, "b"], [0, 1], status=[hostile, "\\`"])
    with FakeBigQuery() as api:
        fn = direct(_MergeFn, sink(api, rows.schema, mode="merge", keys=("order_id",)))
        list(fn.process((0, [rows])))
        (query,) = api.queries
        assert "DROP" not in query["query"] and "x'" not in query["query"] and query["parameters"] == []
        assert {r["order_id"] for r in stored(api)} == {hostile, "b"}


def test_retries_ride_out_5xx_429_and_dropped_connections(pipeline, caplog):
    rows = orders(["a", "b"], [0, 30])
    with FakeBigQuery(pending_polls=1) as api:
        api.fail("get_table", 503, "reset").fail("create_table", 500).fail("upload", 503, 429, "reset")
        api.fail("get_job", 503).fail("patch_table", 502)
        with caplog.at_level(logging.WARNING, logger="transforms.sinks.bigquery"):
            run(sink(api, rows.schema), [rows], pipeline, 2)
        assert stored(api) == rows.to_pylist() and len(api.loads) == 2
        assert api.routes().count("upload") == 5 and api.routes().count("get_table") >= 3
        assert "failed (try 1): 503" in caplog.text
        # A merge: the MERGE's insert and its results retried too.
        api.fail("insert_job", 503).fail("query_results", 503, "reset").fail("delete_table", 500)
        run(sink(api, rows.schema, table="merged", mode="merge", keys=("order_id",)), [rows], pipeline, 2)
        assert len(api.queries) == 1 and list(api.tables) == [TABLE, "proj-1.sales.merged"]


def test_a_lost_answer_finds_the_job_that_ran_instead_of_running_it_again():
    rows = orders(["a"], [0])
    with FakeBigQuery() as api:
        api.fail("upload", "lost")  # the load job is made, then the answer is a 503
        fn = direct(_LoadPartitionFn, sink(api, rows.schema))
        (summary,) = fn.process(("20240301", [rows]))
        assert len(api.loads) == 1 and len(api.jobs) == 1 and summary["job_id"] in api.jobs
        assert api.routes().count("upload") == 2 and "get_job" in api.routes()  # 409 on the second: then fetched
        api.fail("insert_job", "lost")
        fn = direct(_MergeFn, sink(api, rows.schema, table="merged", mode="merge", keys=("order_id",)))
        list(fn.process((0, [rows])))
        assert len(api.queries) == 1


def test_a_job_that_fails_for_a_retryable_reason_runs_again_as_a_new_job_and_others_fail_at_once():
    rows = orders(["a"], [0])
    with FakeBigQuery() as api:
        api.fail_job("load", "backendError").fail_job("query", "jobRateLimitExceeded")
        fn = direct(_MergeFn, sink(api, rows.schema, mode="merge", keys=("order_id",)))
        list(fn.process((0, [rows])))
        assert len(api.jobs) == 4 and len(api.queries) == 2 and stored(api)[0]["order_id"] == "a"
        api.fail_job("load", "invalid")
        fn = direct(_LoadPartitionFn, sink(api, rows.schema, table="other"))
        with pytest.raises(errors.BadRequest, match="the job met invalid"):
            list(fn.process(("20240301", [rows])))
        loads = [j["configuration"]["load"]["destinationTable"]["tableId"] for j in api.jobs.values()
                 if "load" in j["configuration"]]  # fmt: skip
        assert loads.count("other$20240301") == 1  # not retried


def test_after_the_budget_one_error_names_the_write_and_the_last_failure():
    rows = orders(["a"], [0])
    with FakeBigQuery() as api:
        api.fail("get_table", *([503] * 1000))
        fn = direct(_LoadPartitionFn, sink(api, rows.schema, retry_for_s=1.0, first_wait_s=0.05))
        began = time.monotonic()
        with pytest.raises(BigQueryUnavailable) as info:
            list(fn.process(("20240301", [rows])))
        took = time.monotonic() - began
        # Waits double from 0.05 s with jitter; none runs past the budget (the tries stop before it).
        assert took < 1.5 and api.routes().count("get_table") >= 4, (took, api.routes())
        message = str(info.value)
        assert message.startswith(f"prepare table {TABLE}: BigQuery kept failing for 1s (")
        assert message.endswith("injected 503") and api.routes().count("get_table") >= 4


def test_large_files_go_by_resumable_upload(monkeypatch):
    import google.cloud.bigquery.client as client

    monkeypatch.setattr(client, "_MAX_MULTIPART_SIZE", 1)
    rows = orders([f"o{i}" for i in range(500)], [i % 20 for i in range(500)])
    with FakeBigQuery() as api:
        api.fail("upload_chunk", 503)
        (summary,) = direct(_LoadPartitionFn, sink(api, rows.schema)).process(("20240301", [rows]))
        assert [x["upload"] for x in api.loads] == ["resumable"] and summary["rows"] == 500
        assert len(stored(api)) == 500


def test_without_an_endpoint_the_client_takes_application_default_credentials(monkeypatch, tmp_path):
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    write = WriteBigQuery("proj-1", "sales", "orders", orders(["a"], [0]).schema, "updated_at")
    with pytest.raises(BigQuerySinkError, match="no Google credentials found: set GOOGLE_APPLICATION_CREDENTIALS"):
        _LoadPartitionFn(write).setup()


def test_a_streaming_aggregate_merges_each_firing_and_the_table_keeps_the_late_total():
    """The events pipeline in streaming mode (TestStream source, on-time then late firing of one
    window, accumulating): each firing is merged as it comes; the table ends with the late total."""
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
    from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner

    from beam_pipelines.pipelines.events import EventsIO, build
    from beam_pipelines.spec import EventsConfig
    from tests.unit.test_events_streaming import _Source

    cfg = EventsConfig(
        input=None, input_format="jsonl", output="unused", shuffle_partitions=2, streaming=True, expectations="none",
        kafka_bootstrap="unused:9092", kafka_topic="events", pg_dsn="postgresql://unused",
    )  # fmt: skip
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with FakeBigQuery() as api:
        p = beam.Pipeline(runner=BundleBasedDirectRunner(), options=options)
        out = build(p, cfg, EventsIO(source=_Source()))
        schema = pa.schema([("window_start", TS), ("window_end", TS), ("event_type", pa.string()),
                            ("country", pa.string()), ("events", pa.int64()), ("users", pa.int64()),
                            ("amount_sum", pa.float64())])  # fmt: skip
        out["aggregates"] | WriteBigQuery(
            "proj-1", "sales", "hourly", schema, "window_start", mode="merge",
            keys=("window_start", "event_type", "country"), streaming=True, endpoint=api.url,
        )  # fmt: skip
        p.run().wait_until_finish()
        table = api.rows("proj-1.sales.hourly").to_pylist()
        assert sorted((r["event_type"], r["events"], r["amount_sum"], r["_pane"]) for r in table) == [
            ("purchase", 3, 3.0, 1), ("refund", 1, 2.5, 1)]  # fmt: skip
        # A MERGE per firing (at least the on-time and the late one), each reading only its rows' days.
        assert len(api.queries) >= 2 and all(len(q["parameters"]) == 2 for q in api.queries), api.queries
        assert list(api.tables) == ["proj-1.sales.hourly"]
