"""Hot and cold tiers on real Delta tables in two local directories: maintenance moves the
partitions before the cut-off to the cold table (zstd at the cold level), the union of both
tiers is the table it was, a second run moves nothing, a maintenance cut off between its two
commits (an exception, or SIGKILL) is completed by the next without a row copied twice, and a silver MERGE of a key the
cold tier holds updates it there. (The same on two S3 buckets: tests/integration/test_lakehouse_tiers_s3.py.)"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from datetime import date, datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_pipelines.lakehouse import commit, maintain, tables, tiers
from transforms import faults

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "lakehouse" / "orders.yaml"
DAYS = [date(2024, 3, 1), date(2024, 3, 2), date(2024, 3, 3), date(2024, 3, 4)]


def spec(tmp_path: Path, location: str = "cold/silver") -> str:
    text = EXAMPLE.read_text()
    old = "partition_by: created_at, retention: 400d}"
    assert text.count(old) == 1
    path = tmp_path / "orders.yaml"
    new = f"partition_by: created_at, retention: 400d, cold: {{after_days: 2, location: {location}}}}}"
    path.write_text(text.replace(old, new))
    return str(path)


def day_rows(day: date, n: int) -> pa.Table:
    return pa.table({"order_id": [f"o-{day.day}-{i}" for i in range(n)], "amount": [float(i) for i in range(n)],
                     "dt": pa.array([day] * n, pa.date32())})  # fmt: skip


def hot_table(out: Path) -> str:
    uri = str(out / "lakehouse" / "silver")
    for day in DAYS:
        tables.append(uri, day_rows(day, 40), ["dt"])
    return uri


def run(*argv: str) -> str:
    out = io.StringIO()
    maintain.run(list(argv), clock=lambda: datetime(2026, 12, 7, tzinfo=timezone.utc), out=out)
    return out.getvalue()


def rows(data: pa.Table) -> Counter:
    return Counter(zip(data["order_id"].to_pylist(), data["amount"].to_pylist(), data["dt"].to_pylist()))


def days_of(uri: str) -> set[date]:
    return set(tables.read(tables.open_table(uri))["dt"].to_pylist())


def test_old_partitions_move_to_the_cold_tier_and_the_table_is_the_union(tmp_path):
    out = tmp_path / "out"
    hot = hot_table(out)
    before = rows(tables.read(tables.open_table(hot)))
    said = run(f"--pipeline={spec(tmp_path)}", f"--output={out}", "--as_of=2024-03-05")
    cold = str(out / "cold" / "silver")
    assert f"tiering: move 2 partition(s) before 2024-03-03 to {cold}: 2024-03-01" in said
    assert "80 rows appended there, 80 deleted here" in said
    assert f"{cold}  silver (cold)" in said
    assert days_of(hot) == {date(2024, 3, 3), date(2024, 3, 4)}
    assert days_of(cold) == {date(2024, 3, 1), date(2024, 3, 2)}
    assert rows(tiers.read(hot, cold)) == before
    # The cold tier's files are zstd (at the cold level: smaller for the same rows is checked on S3).
    cold_files = list(Path(cold).rglob("*.parquet"))
    assert cold_files and all(
        pq.ParquetFile(f).metadata.row_group(0).column(0).compression == "ZSTD" for f in cold_files
    )
    # The audit log says what moved.
    entry = json.loads((out / "_audit" / "log.jsonl").read_text().splitlines()[-1])
    (hot_entry,) = [t for t in entry["what"]["tables"] if t["table"] == hot]
    assert hot_entry["tier"] == "hot" and hot_entry["moved"] == {"appended": 80, "deleted": 80}
    again = run(f"--pipeline={spec(tmp_path)}", f"--output={out}", "--as_of=2024-03-05")
    assert "tiering: nothing before 2024-03-03" in again
    assert rows(tiers.read(hot, cold)) == before


def test_a_dry_run_lists_the_partitions_that_would_move(tmp_path):
    out = tmp_path / "out"
    hot = hot_table(out)
    version = tables.open_table(hot).version()
    said = run(f"--pipeline={spec(tmp_path)}", f"--output={out}", "--as_of=2024-03-04", "--dry_run")
    assert "tiering: would move 1 partition(s) before 2024-03-02" in said
    assert tables.open_table(hot).version() == version and not (out / "cold").exists()


def test_a_move_cut_off_between_its_commits_is_completed_without_copying_twice(tmp_path, monkeypatch):
    out = tmp_path / "out"
    hot = hot_table(out)
    before = rows(tables.read(tables.open_table(hot)))
    monkeypatch.setenv(faults.ENV, "tier:moved=raise")
    with pytest.raises(faults.FaultInjected):
        run(f"--pipeline={spec(tmp_path)}", f"--output={out}", "--as_of=2024-03-05")
    monkeypatch.delenv(faults.ENV)
    cold = str(out / "cold" / "silver")
    # Cut off: the moved rows are in both tiers.
    assert days_of(cold) == {date(2024, 3, 1), date(2024, 3, 2)} and date(2024, 3, 1) in days_of(hot)
    # Meanwhile a run writes one more row into a moving partition: it must move too, once.
    late = day_rows(date(2024, 3, 1), 41).slice(40)
    tables.append(hot, late, ["dt"])
    said = run(f"--pipeline={spec(tmp_path)}", f"--output={out}", "--as_of=2024-03-05")
    assert "1 rows appended there, 81 deleted here" in said
    assert rows(tiers.read(hot, cold)) == before + rows(late)
    assert days_of(hot) == {date(2024, 3, 3), date(2024, 3, 4)}


def test_the_cold_tier_takes_the_merge_of_a_key_it_holds_and_gold_windows_leave_it(tmp_path):
    out = tmp_path / "out"
    hot = hot_table(out)
    run(f"--pipeline={spec(tmp_path)}", f"--output={out}", "--as_of=2024-03-05")
    cold = str(out / "cold" / "silver")
    # A late version of o-1-3 (in the cold tier) and a new order: the first updates the cold row.
    incoming = pa.table({"order_id": ["o-1-3", "o-4-99"], "amount": [333.0, 99.0],
                         "dt": pa.array([date(2024, 3, 1), date(2024, 3, 4)], pa.date32())})  # fmt: skip
    entry = {
        "key": "order_id",
        "cold": cold,
        "cold_level": 19,
        "txn": 5,
        "run_id": "r",
        "step": "Silver",
        "newer": None,
    }
    rest = commit._merge_cold(entry, incoming)
    assert rest["order_id"].to_pylist() == ["o-4-99"]
    held = tiers.read(cold, where="\"order_id\" = 'o-1-3'")
    assert held["amount"].to_pylist() == [333.0]
    assert tables.txn_version(tables.open_table(cold)) == 5
    # The same entry again (a publish completed twice) changes nothing in the cold tier.
    version = tables.open_table(cold).version()
    commit._merge_cold(entry, incoming)
    assert tables.open_table(cold).version() == version
    assert len(tiers.read(hot, cold)) == 160

    # Gold: a run's recomputed window leaves the cold tier (the hot table's replace-where holds it).
    utc = timezone.utc
    windows = [datetime(2024, 3, d, tzinfo=utc) for d in (1, 2)]
    gold_cold = str(out / "cold" / "gold")
    old = pa.table({"window_start": pa.array(windows, pa.timestamp("us", tz="UTC")), "orders": [5, 6],
                    "dt": pa.array([w.date() for w in windows], pa.date32())})  # fmt: skip
    tables.append(gold_cold, old, ["dt"])
    recomputed = old.slice(0, 1).set_column(1, "orders", pa.array([7]))
    commit._drop_cold_windows({"cold": gold_cold, "run_id": "r", "step": "Gold"}, recomputed)
    assert tiers.read(gold_cold)["window_start"].to_pylist() == [windows[1]]


def test_a_cold_tier_is_checked_with_the_spec(tmp_path):
    from beam_pipelines.spec import EventsConfig
    from beam_pipelines.spec.build import plan_for

    text = Path(spec(tmp_path)).read_text()

    def plan(new_text: str):
        path = tmp_path / "bad.yaml"
        path.write_text(new_text)
        return plan_for(EventsConfig(pipeline=str(path), output=str(tmp_path / "o"), input="-", input_format="jsonl"))

    with pytest.raises(Exception, match="never happen"):
        plan(text.replace("retention: 400d, cold: {after_days: 2", "retention: 2d, cold: {after_days: 2"))
    with pytest.raises(Exception, match="overlaps table"):
        plan(text.replace("location: cold/silver", "location: lakehouse/bronze/cold"))
    with pytest.raises(Exception, match="location"):
        plan(text.replace("location: cold/silver", "location: ../elsewhere"))
    entry = next(n.step.maintenance("o") for n in plan(text).sinks if n.step.name == "Silver")
    assert entry["cold"] == {"table": "o/cold/silver", "after_days": 2, "level": tiers.COLD_LEVEL}


def test_a_maintenance_killed_between_the_two_commits_is_completed_by_the_next(tmp_path):
    out = tmp_path / "out"
    hot = hot_table(out)
    before = rows(tables.read(tables.open_table(hot)))
    argv = [sys.executable, "-m", "beam_pipelines.lakehouse", "maintain", f"--pipeline={spec(tmp_path)}",
            f"--output={out}", "--as_of=2024-03-05"]  # fmt: skip
    env = {**os.environ, faults.ENV: "tier:moved=kill", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300, start_new_session=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    cold = str(out / "cold" / "silver")
    assert date(2024, 3, 1) in days_of(cold) and date(2024, 3, 1) in days_of(hot)  # in both tiers
    said = run(
        f"--pipeline={spec(tmp_path)}", f"--output={out}", "--as_of=2024-03-05"
    )  # the dead holder's lease is free
    assert "0 rows appended there, 80 deleted here" in said
    assert rows(tiers.read(hot, cold)) == before
