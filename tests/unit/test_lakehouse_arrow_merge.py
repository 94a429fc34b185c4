"""Silver's MERGE computed in Arrow (``arrow_merge``) against delta-rs' MERGE: the same inputs give
the same table and the same counts, for newer and older versions, ties, rows equal to the stored
ones, nulls and NaNs, keys moving to another day, keep first/last or no ordering, updates only;
statistics that hold each written file's rows; the fallback to delta-rs where the Arrow path
does not apply; and a commit that meets a concurrent one computed again on the new version."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_pipelines.lakehouse import arrow_merge, tables

UTC = timezone.utc
T0 = datetime(2026, 3, 1, 0, 0, 0, 123_456, tzinfo=UTC)  # microseconds: statistics keep milliseconds
TS = pa.timestamp("us", tz="UTC")
NAN = float("nan")


def rows(spec: list[tuple]) -> pa.Table:
    """(key, hours after T0, amount, score, note) -> rows with dt (the day of updated_at)."""
    ts = [T0 + timedelta(hours=h) for _, h, *_ in spec]
    return pa.table(
        {
            "order_id": pa.array([r[0] for r in spec], pa.string()),
            "updated_at": pa.array(ts, TS),
            "amount": pa.array([None if r[2] is None else Decimal(r[2]) for r in spec], pa.decimal128(18, 2)),
            "score": pa.array([r[3] for r in spec], pa.float64()),
            "note": pa.array([r[4] for r in spec], pa.string()),
            "dt": pa.array([t.date() for t in ts], pa.date32()),
        }
    )


STORED = [  # three appends: several files in each of three day partitions
    [
        ("a", 1, "1.00", 1.0, "x"),
        ("b", 30, "2.00", NAN, None),
        ("c", 2, "3.00", None, "y"),
        ("e", 50, "5.00", 2.0, "z"),
    ],
    [("f", 3, "6.00", 3.0, "p"), ("g", 26, "7.00", 4.0, "q"), ("h", 27, "8.00", 5.0, None)],
    [("i", 60, "9.00", 6.0, "r"), ("j", 61, None, 7.0, "s")],
]
INCOMING = [
    ("a", 50, "10.00", 1.0, "x"),  # newer, moves to another day
    ("b", 5, "20.00", NAN, None),  # older
    ("c", 2, "3.00", None, "y2"),  # a tie, differing: not older, so it replaces
    ("e", 50, "5.00", 2.0, "z"),  # equal to the stored row: nothing to do
    ("f", 3, "6.00", 3.0, None),  # a tie, a value now null
    ("g", 26, "7.00", NAN, "q"),  # a tie, NaN for a number
    ("i", 60, "9.00", 6.0, "r"),  # equal, in a file holding nothing else to change
    ("k", 4, "11.00", 8.0, "n"),  # new
    ("l", 75, None, None, None),  # new, nulls
]


def _stored(path) -> str:
    uri = str(path)
    for part in STORED:
        tables.append(uri, rows(part), ["dt"])
    return uri


def _both(tmp_path, incoming: pa.Table, newer=("updated_at", "last"), insert=True):
    """The table after each engine's MERGE of ``incoming``, its version and the counts."""
    base = _stored(tmp_path / "base")
    out = {}
    for engine in ("arrow", "delta-rs"):
        uri = str(tmp_path / engine)
        shutil.copytree(base, uri)
        table = tables.open_table(uri)
        props = tables.commit_properties("run-1", 1, layer="silver")
        m = tables.merge(table, incoming, "order_id", newer, props, insert=insert, engine=engine)
        table = tables.open_table(uri)
        out[engine] = (
            tables.read(table).sort_by("order_id"),
            table.version(),
            (m["num_target_rows_inserted"], m["num_target_rows_updated"]),
            table.count(),
        )
    return out


def _same(out: dict) -> tuple:
    (a, va, ma, ca), (d, vd, md, cd) = out["arrow"], out["delta-rs"]
    assert a.schema == d.schema
    _equal_with_nans(a, d)
    assert (va, ma, ca) == (vd, md, cd)
    return a, ma


def _equal_with_nans(a: pa.Table, b: pa.Table) -> None:
    def norm(t):
        return [{k: ("NaN" if isinstance(v, float) and v != v else v) for k, v in r.items()} for r in t.to_pylist()]

    assert norm(a) == norm(b)


@pytest.mark.parametrize("newer", [("updated_at", "last"), ("updated_at", "first"), None])
def test_both_engines_give_the_same_table_and_counts(tmp_path, newer):
    table, counts = _same(_both(tmp_path, rows(INCOMING), newer))
    got = {r["order_id"]: r for r in table.to_pylist()}
    assert set(got) == set("abcefghijkl")
    if newer == ("updated_at", "last"):
        assert counts == (2, 4)  # k, l inserted; a, c, f, g updated; b older; e, i equal
        assert (got["a"]["amount"], got["a"]["dt"]) == (Decimal("10.00"), (T0 + timedelta(hours=50)).date())
        assert got["b"]["amount"] == Decimal("2.00") and got["c"]["note"] == "y2" and got["f"]["note"] is None


def test_only_updates_when_told_not_to_insert(tmp_path):
    _, counts = _same(_both(tmp_path, rows(INCOMING), insert=False))
    assert counts == (0, 4)


def test_rows_equal_to_the_stored_ones_change_nothing_and_commit_nothing(tmp_path):
    out = _both(tmp_path, rows([r for part in STORED for r in part]))
    _, counts = _same(out)
    assert counts == (0, 0) and out["arrow"][1] == 2  # the three appends' versions only


def test_each_written_files_statistics_hold_its_rows(tmp_path):
    _both(tmp_path, rows(INCOMING))
    uri = str(tmp_path / "arrow")
    table = tables.open_table(uri)
    before = {
        f["path"] for f in pa.table(tables.open_table(str(tmp_path / "base")).get_add_actions(flatten=True)).to_pylist()
    }
    new = [f for f in pa.table(table.get_add_actions(flatten=True)).to_pylist() if f["path"] not in before]
    assert len(new) == 4  # the rewritten files' rows and the new versions, one file per day
    for f in new:
        got = pq.read_table(f"{uri}/{f['path']}")
        assert f["num_records"] == got.num_rows
        for c in ("order_id", "updated_at", "amount", "score", "note"):
            values = [v for v in got.column(c).to_pylist() if v is not None and v == v]
            assert f[f"null_count.{c}"] == got.column(c).null_count
            if values and f.get(f"min.{c}") is not None:
                assert f[f"min.{c}"] <= min(values) and max(values) <= f[f"max.{c}"], (c, f["path"])
    lone = [f for f in new if f["num_records"] == 1 and f["min.order_id"] == "l"]  # microseconds: rounded outwards
    assert lone and lone[0]["min.updated_at"] < T0 + timedelta(hours=75) < lone[0]["max.updated_at"]
    assert tables.read(table).num_rows == table.count() == 11


def test_where_the_arrow_path_does_not_apply_delta_rs_merges(tmp_path):
    uri = _stored(tmp_path / "t")
    table = tables.open_table(uri)
    duplicate = rows([("a", 50, "1.00", 1.0, "x"), ("a", 51, "2.00", 1.0, "x")])
    null_key = rows([("z", 1, "1.00", 1.0, "x")]).set_column(0, "order_id", pa.array([None], pa.string()))
    added = rows([("a", 50, "1.00", 1.0, "x")]).append_column("extra", pa.array([1], pa.int64()))
    assert arrow_merge.applies(table, rows(INCOMING), "order_id")
    with pytest.raises(arrow_merge.RepeatedKeys):  # found while planning, before anything is written
        tables.merge(table, duplicate, "order_id", ("updated_at", "last"), engine="arrow")
    new_twice = rows([("y", 1, "1.00", 1.0, "x"), ("y", 2, "2.00", 1.0, "x")])
    with pytest.raises(arrow_merge.RepeatedKeys):
        tables.merge(table, new_twice, "order_id", ("updated_at", "last"), engine="arrow")
    assert tables.open_table(uri).version() == 2
    assert not arrow_merge.applies(table, null_key, "order_id")
    assert not arrow_merge.applies(table, added, "order_id")
    with pytest.raises(ValueError, match="does not apply"):
        tables.merge(table, added, "order_id", ("updated_at", "last"), engine="arrow")
    m = tables.merge(table, added, "order_id", ("updated_at", "last"))  # a new column: delta-rs adds it
    assert (m["num_target_rows_updated"], "extra" in tables.open_table(uri).schema().to_arrow().names) == (1, True)
    m = tables.merge(tables.open_table(uri), null_key, "order_id", ("updated_at", "last"))
    assert m["num_target_rows_inserted"] == 1  # a null key matches nothing


def test_a_commit_meeting_a_concurrent_one_is_computed_again_on_the_new_version(tmp_path):
    uri = _stored(tmp_path / "t")
    stale = tables.open_table(uri)
    tables.append(uri, rows([("k", 80, "99.00", 9.0, "late")]), ["dt"])  # committed after ``stale`` was read
    m = tables.merge(stale, rows(INCOMING), "order_id", ("updated_at", "last"), engine="arrow")
    got = tables.read(tables.open_table(uri)).to_pylist()
    ks = [r for r in got if r["order_id"] == "k"]
    assert len(ks) == 1 and ks[0]["note"] == "late"  # the stored k is newer than the incoming one
    assert (m["num_target_rows_inserted"], m["num_target_rows_updated"]) == (1, 4)
    assert len(got) == 11
