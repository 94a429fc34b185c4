from datetime import datetime, timezone

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing.util import assert_that, equal_to

from transforms.dedup import Deduplicate, keep_first


def t(rows):
    return pa.table(
        {
            "event_id": [r[0] for r in rows],
            "ts": pa.array(
                [datetime(2024, 1, 1, r[1], tzinfo=timezone.utc) for r in rows], pa.timestamp("us", tz="UTC")
            ),
            "_raw": [r[2] for r in rows],
        }
    )


def test_keep_first_earliest_then_smallest_raw():
    table = t([("a", 5, "z"), ("a", 3, "y"), ("b", 1, "b2"), ("b", 1, "b1"), ("c", 2, "c")])
    out = keep_first(table, "event_id", ("ts", "_raw")).sort_by("event_id")
    assert out.column("_raw").to_pylist() == ["y", "b1", "c"]
    unique = t([("a", 1, "a"), ("b", 1, "b")])
    assert keep_first(unique, "event_id", ("ts", "_raw")).equals(unique)


@pytest.mark.parametrize("spill", [False, True])
def test_deduplicate_across_batches_and_partitions(pipeline, tmp_path, spill):
    batches = [
        t([("a", 5, "a-late"), ("b", 1, "b"), ("a", 5, "a-late")]),
        t([("a", 2, "a-early"), ("c", 1, "c")]),
        t([("c", 1, "c"), ("d", 0, "d")]),
    ]
    with pipeline() as p:
        spill_dir = str(tmp_path / "scratch") if spill else None
        out = p | beam.Create(batches) | Deduplicate("event_id", ("ts", "_raw"), partitions=3, spill_dir=spill_dir)
        kept = out["unique"] | "rows" >> beam.FlatMap(lambda tb: tb.column("_raw").to_pylist())
        assert_that(kept, equal_to(["a-early", "b", "c", "d"]), label="kept")
        total = out["stats"] | beam.Map(lambda d: d["duplicates"]) | beam.CombineGlobally(sum)
        assert_that(total, equal_to([3]), label="dups")
    if spill:
        # Rows went through files, one per batch (its partitions are record batches in it).
        assert len(list((tmp_path / "scratch").rglob("*.arrow"))) == 3


def test_deduplicate_config_errors():
    with pytest.raises(ValueError):
        Deduplicate("", ())
    with pytest.raises(ValueError):
        Deduplicate("k", (), partitions=0)


def test_keep_first_compares_typed_records_by_their_text():
    # Struct records (typed sources) tie-break as their JSON text would: {"n":10,...} < {"n":9,...}.
    records = pa.StructArray.from_arrays([pa.array([9, 10, 1]), pa.array(["x", "x", "y"])], names=["n", "s"])
    table = pa.table(
        {
            "event_id": ["a", "a", "b"],
            "ts": pa.array([datetime(2024, 1, 1, tzinfo=timezone.utc)] * 3, pa.timestamp("us", tz="UTC")),
            "_raw": records,
        }
    )
    out = keep_first(table, "event_id", ("ts", "_raw")).sort_by("event_id")
    assert out.column("_raw").to_pylist() == [{"n": 10, "s": "x"}, {"n": 1, "s": "y"}]
    assert pa.types.is_struct(out.schema.field("_raw").type)


def test_keep_first_matches_a_row_by_row_choice_on_random_rows():
    import random

    rng = random.Random(5)
    rows = [(f"k{rng.randrange(40)}", rng.randrange(3), f"r{rng.randrange(6)}") for _ in range(300)]
    best = {}
    for r in rows:
        if r[0] not in best or (r[1], r[2]) < best[r[0]][1:]:
            best[r[0]] = r
    out = keep_first(t(rows), "event_id", ("ts", "_raw"))
    got = sorted(zip(out.column("event_id").to_pylist(), [d.hour for d in out.column("ts").to_pylist()],
                     out.column("_raw").to_pylist()))  # fmt: skip
    assert got == sorted(best.values())


def test_keep_first_can_leave_out_its_tie_break_columns():
    rows = [("a", 2, "a-late"), ("a", 2, "a-early"), ("b", 1, "b")]
    full = keep_first(t(rows), "event_id", ("ts", "_raw"))
    slim = keep_first(t(rows), "event_id", ("ts", "_raw"), drop=("_raw", "_source"))
    assert slim.column_names == [c for c in full.column_names if c != "_raw"]
    assert slim.equals(full.drop_columns(["_raw"]))
    unique = keep_first(t(rows[1:]), "event_id", ("ts", "_raw"), drop=("_raw",))
    assert unique.column_names == slim.column_names and unique.num_rows == 2
    with pytest.raises(ValueError, match="key"):
        Deduplicate("event_id", ("ts",), drop=("event_id",))


def test_keep_last_takes_the_largest_by_order_by_on_random_rows():
    import random

    rng = random.Random(9)
    rows = [(f"k{rng.randrange(40)}", rng.randrange(3), f"r{rng.randrange(6)}") for _ in range(300)]
    best = {}
    for r in rows:
        if r[0] not in best or (r[1], r[2]) > best[r[0]][1:]:
            best[r[0]] = r
    out = keep_first(t(rows), "event_id", ("ts", "_raw"), last=True)
    got = sorted(zip(out.column("event_id").to_pylist(), [d.hour for d in out.column("ts").to_pylist()],
                     out.column("_raw").to_pylist()))  # fmt: skip
    assert got == sorted(best.values())


def test_deduplicate_keeps_the_latest_version_across_batches(pipeline):
    batches = [t([("a", 1, "a-v1"), ("b", 1, "b-v1")]), t([("a", 3, "a-v3"), ("b", 0, "b-v0")]), t([("a", 2, "a-v2")])]
    with pipeline() as p:
        out = p | beam.Create(batches) | Deduplicate("event_id", ("ts", "_raw"), partitions=2, keep="last")
        kept = out["unique"] | beam.FlatMap(lambda tb: tb.column("_raw").to_pylist())
        assert_that(kept, equal_to(["a-v3", "b-v1"]))
    with pytest.raises(ValueError, match="keep must be first or last"):
        Deduplicate("event_id", ("ts",), keep="latest")
