"""The PostgreSQL source's pure parts: range splits, queries, windows, secrets and the saved cursor."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from beam_pipelines.spec import EventsConfig
from beam_pipelines.spec.compile import compile_spec
from beam_pipelines.spec.yamlsrc import SpecError, load
from tests.e2e.helpers import ROOT
from transforms.ingest import pg_sql
from transforms.ingest.pg_state import check_state, read_state, write_state
from transforms.ingest.postgres import check_columns

T = datetime(2024, 3, 1, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    "lo,hi,n",
    [(1, 1, 8), (1, 10, 3), (1, 10, 10), (1, 10, 50), (-(2**63), 2**63 - 1, 7), (-5, 5, 2), (0, 999_999, 8)],
)
def test_ranges_tile_the_key_span_exactly_once(lo, hi, n):
    ranges = pg_sql.split_ranges(lo, hi, n)
    assert 1 <= len(ranges) <= n
    assert ranges[0][0] == lo and ranges[-1][1] is None
    for (_, end), (start, _) in zip(ranges, ranges[1:]):
        assert end == start  # each range ends where the next starts: no gap, no overlap
    assert all(s < e for s, e in ranges[:-1]) and ranges[-1][0] <= hi


def test_an_empty_table_has_no_ranges():
    assert pg_sql.split_ranges(None, None, 8) == []


def test_queries_take_values_as_parameters_and_quote_names():
    w = pg_sql.window_for({"cursor": T.isoformat(), "cursor_key": 42}, (T + timedelta(hours=1), 99), 0)
    query, params = pg_sql.read_query("public", "Orders", "id", ("a", "b"), "updated_at", w, 10, 20)
    assert query == (
        'SELECT "a", "b" FROM "public"."Orders" WHERE "id" >= $1 AND "id" < $2 AND ("updated_at", "id") > ($3, $4) '
        'AND ("updated_at", "id") <= ($5, $6)'
    )
    assert params == [10, 20, T, 42, T + timedelta(hours=1), 99]
    lookback = pg_sql.window_for({"cursor": T.isoformat(), "cursor_key": 42}, None, 600)
    query, params = pg_sql.read_query("s", "t", "id", None, "updated_at", lookback, 0, None)
    assert query == 'SELECT * FROM "s"."t" WHERE "id" >= $1 AND "updated_at" >= $2'
    assert params == [0, T - timedelta(minutes=10)]
    assert pg_sql.window_for(None, (T, 1), 600) == pg_sql.Window(None, (T, 1))


@pytest.mark.parametrize("name", ['x"; DROP TABLE y; --', "a b", "1abc", "", "a" * 64, "t.x", "é"])
def test_names_that_are_not_plain_sql_names_are_refused(name):
    with pytest.raises(ValueError, match="plain SQL name"):
        pg_sql.check_identifier(name, "table")


def test_a_table_name_with_sql_in_it_is_a_spec_error_at_its_place(tmp_path):
    text = (ROOT / "examples" / "postgres" / "orders.yaml").read_text()
    spec = tmp_path / "s.yaml"
    spec.write_text(text.replace("table: order_versions", "table: 'x; DROP TABLE y'"))
    cfg = EventsConfig(input=None, input_format=None, output=str(tmp_path / "out"), pipeline=str(spec))
    with pytest.raises(SpecError, match=r"transforms\[0\]\.config\.table"):
        compile_spec(load(str(spec)), cfg, str(spec))
    spec.write_text(text.replace("        dsn_env: PG_SOURCE_DSN\n", ""))
    with pytest.raises(SpecError, match="dsn_env or dsn_file"):
        compile_spec(load(str(spec)), cfg, str(spec))


def test_secrets_are_scrubbed_from_messages():
    dsn = "postgresql://bp:s3cr3t@db:5432/bp"
    assert pg_sql.scrub(f"bad {dsn}\n  hint: password s3cr3t", dsn) == "bad *** hint: password ***"
    assert pg_sql.describe(dsn) == "postgresql://db:5432/bp"
    assert "s3cr3t" not in pg_sql.describe("host=db password=s3cr3t dbname=x")


def test_the_dsn_comes_from_the_environment_or_a_file(tmp_path, monkeypatch):
    monkeypatch.setenv("PG_X", " postgresql://a@b/c\n")
    assert pg_sql.resolve_dsn("PG_X", None) == "postgresql://a@b/c"
    monkeypatch.delenv("PG_X")
    with pytest.raises(ValueError, match="PG_X .* is not set"):
        pg_sql.resolve_dsn("PG_X", None)
    f = tmp_path / "dsn"
    f.write_text("postgresql://a@b/d\n")
    assert pg_sql.resolve_dsn(None, str(f)) == "postgresql://a@b/d"


def test_columns_are_checked_key_and_cursor_not_null():
    rows = [("id", "bigint", True), ("u", "timestamp with time zone", True), ("n", "bigint", False)]
    check_columns(rows, "t", "id", "u", None)
    with pytest.raises(ValueError, match="nullable"):
        check_columns(rows, "t", "n", None, None)
    with pytest.raises(ValueError, match="must be smallint or integer or bigint"):
        check_columns(rows, "t", "u", None, None)
    with pytest.raises(ValueError, match="no column 'zz'"):
        check_columns(rows, "t", "id", None, ("zz",))
    with pytest.raises(ValueError, match="does not exist"):
        check_columns([], "t", "id", None, None)


def test_the_state_is_written_whole_and_checked_against_its_source(tmp_path):
    path = str(tmp_path / "_state" / "Read.json")
    assert read_state(path) is None
    state = {"version": 1, "table": "public.t", "key_column": "id", "cursor_column": "u", "cursor": T.isoformat(),
             "cursor_key": 5}  # fmt: skip
    write_state(path, state)
    assert read_state(path) == state and json.loads(open(path).read()) == state
    assert [p.name for p in (tmp_path / "_state").iterdir()] == ["Read.json"]  # no temporary file left
    identity = {"table": "public.t", "key_column": "id", "cursor_column": "u"}
    assert check_state(state, identity) == state
    with pytest.raises(ValueError, match="remove the state file"):
        check_state(state, {**identity, "table": "public.other"})


def test_publishing_moves_a_staged_cursor_and_keeps_one_not_staged(tmp_path):
    from beam_pipelines import publish

    out = tmp_path / "out"
    (out / "_state").mkdir(parents=True)
    (out / "_state" / "Read.json").write_text("old")
    staging = out / "_staging" / "r1"
    (staging / "curated").mkdir(parents=True)  # a run (or a redrive) that reads no database
    thread = publish.publish(str(staging), str(out))
    thread.join()
    assert (out / "_state" / "Read.json").read_text() == "old"
    staging = out / "_staging" / "r2"
    (staging / "_state").mkdir(parents=True)
    (staging / "_state" / "Read.json").write_text("new")
    publish.publish(str(staging), str(out)).join()
    assert (out / "_state" / "Read.json").read_text() == "new"
