"""The lakehouse example spec (examples/lakehouse/orders.yaml) end to end: bronze, silver and gold Delta tables committed at publish.

Runs go in-process through ``main.run`` (with an injected clock), except the one a fault kills.
Bronze holds every line read, append-only; silver equals the run's curated records and a re-run
over the same input changes nothing in it; newer input replaces an order only by a newer
version; gold's recomputed windows are replaced and the others kept; DuckDB and Polars read the
tables and agree with the pipeline's counts. A redrive after a fix adds the records that now
pass to silver, and again adds nothing; a run whose audit fails commits nothing. A run killed between its silver and gold commits is
completed by ``clean`` to exactly the tables of a run that was not killed.
"""

from __future__ import annotations

import io
import json
import shutil
import signal
import subprocess
import sys
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from beam_pipelines import clean, datagen
from beam_pipelines.errors import RunError
from beam_pipelines.lakehouse import tables
from beam_pipelines.main import run
from beam_pipelines.redrive import run as redrive
from tests.e2e.helpers import ROOT, _env, read_parquet_dir
from transforms import faults

UTC = timezone.utc
PACKAGED = ROOT / "beam_pipelines" / "pipelines"
SPEC = ROOT / "examples" / "lakehouse" / "orders.yaml"
ROWS = 2000
DAY1, DAY2, DAY3 = (datetime(2026, 5, d, 6, tzinfo=UTC) for d in (1, 2, 3))
LAYERS = ("bronze", "silver", "gold")
WINDOW_ORDER = [("window_start", "ascending"), ("region", "ascending"), ("status", "ascending")]


def _run(data: Path, out: Path, when: datetime, spec: str = str(SPEC)) -> dict:
    argv = [f"--pipeline={spec}", f"--input={data}/*.jsonl", f"--output={out}", "--history=none", "--lineage=none"]
    return run(argv, clock=lambda: when, out=io.StringIO())


def _table(out: Path, layer: str):
    return tables.open_table(str(out / "lakehouse" / layer))


def _rows(out: Path, layer: str, drop=("dt",), order=None) -> pa.Table:
    t = tables.read(_table(out, layer)).drop_columns(list(drop))
    return t.sort_by(order or [("order_id", "ascending")])


def _lines(data: Path) -> Counter:
    return Counter(x for f in data.glob("*.jsonl") for x in f.read_text().splitlines() if x.strip())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Inputs in1 and in2 (the same order ids, other versions), and the output after in1."""
    root = tmp_path_factory.mktemp("lakehouse")
    for name, seed in (("in1", 3), ("in2", 4)):
        assert datagen.main(["--dataset=orders", f"--rows={ROWS}", f"--out={root / name}", f"--seed={seed}",
                             "--days=3", "--dirty-fraction=0.05"]) == 0  # fmt: skip
    first = _run(root / "in1", root / "after1", DAY1)
    return {"root": root, "in1": root / "in1", "in2": root / "in2", "after1": root / "after1", "first": first}


def test_a_run_commits_the_records_as_received_the_curated_records_and_the_aggregates(runs):
    out, s = runs["after1"], runs["first"]
    c = s["counts"]
    assert s["tables_match"] and [t["layer"] for t in s["lakehouse"]] == list(LAYERS)
    bronze = tables.read(_table(out, "bronze"))
    assert bronze.num_rows == c["read"] == ROWS
    assert Counter(bronze.column("record").to_pylist()) == _lines(runs["in1"])  # every line, as it was
    assert set(bronze.column("ingest_time").to_pylist()) == {DAY1}  # the run's (injected) clock
    assert set(bronze.column("ingest_date").to_pylist()) == {DAY1.date()}
    assert set(bronze.column("run_id").to_pylist()) == {s["run_id"]}
    assert _table(out, "bronze").metadata().partition_columns == ["ingest_date"]
    # Silver is the run's curated records, partitioned by the day of created_at.
    curated = read_parquet_dir(out / "curated").sort_by("order_id")
    assert _rows(out, "silver").select(curated.column_names).equals(curated)
    silver = tables.read(_table(out, "silver"))
    assert silver.num_rows == c["curated"] and pc.all(pc.equal(silver["dt"], silver["created_at"].cast(pa.date32())))
    aggregates = read_parquet_dir(out / "aggregates").sort_by(WINDOW_ORDER)
    assert _rows(out, "gold", order=WINDOW_ORDER).equals(aggregates) and aggregates.num_rows == c["aggregates"]
    for layer in LAYERS:  # each table's one commit names the run and carries its transaction version
        (commit,) = _table(out, layer).history()
        assert commit[tables.RUN_ID_KEY] == s["run_id"] and tables.txn_version(_table(out, layer)) == 1


def test_a_rerun_changes_nothing_in_silver_and_newer_input_merges_by_version(runs, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(runs["after1"], out)
    silver_before, gold_before = _rows(out, "silver"), _rows(out, "gold", order=WINDOW_ORDER)
    again = _run(runs["in1"], out, DAY2)
    assert again["tables_match"]
    silver = next(t for t in again["lakehouse"] if t["layer"] == "silver")
    assert silver["commit"] is None and silver["version"] == 0  # nothing to change: no commit at all
    assert _rows(out, "silver").equals(silver_before)
    assert _rows(out, "gold", order=WINDOW_ORDER).equals(gold_before)  # the same windows, recomputed alike
    bronze = tables.read(_table(out, "bronze"))  # append-only: what each run received
    assert Counter(bronze.column("ingest_date").to_pylist()) == {DAY1.date(): ROWS, DAY2.date(): ROWS}

    # Other versions of the same orders: each order keeps its newest version (in2's on a tie).
    newer = _run(runs["in2"], out, DAY3)
    curated2 = {r["order_id"]: r for r in read_parquet_dir(out / "curated").to_pylist()}
    expected = {r["order_id"]: r for r in silver_before.to_pylist()}
    for key, row in curated2.items():
        if key not in expected or row["updated_at"] >= expected[key]["updated_at"]:
            expected[key] = row
    got = {r["order_id"]: r for r in _rows(out, "silver").to_pylist()}
    assert got == expected
    stored = {r["order_id"]: r["updated_at"] for r in silver_before.to_pylist()}
    kept_older = [k for k, r in curated2.items() if k in stored and r["updated_at"] < stored[k]]
    assert kept_older and all(got[k] != curated2[k] for k in kept_older)  # late, older versions did not win
    changes = next(t for t in newer["lakehouse"] if t["layer"] == "silver")["commit"]
    assert changes["source"] == newer["counts"]["curated"] and changes["inserted"] + changes["updated"] > 0
    # Gold: in2's windows replaced by in2's aggregates, the others as they were.
    fresh = read_parquet_dir(out / "aggregates")
    recomputed = set(fresh.column("window_start").to_pylist())
    kept = [r for r in gold_before.to_pylist() if r["window_start"] not in recomputed]
    want = sorted(kept + fresh.to_pylist(), key=lambda r: (r["window_start"], r["region"], r["status"]))
    assert _rows(out, "gold", order=WINDOW_ORDER).to_pylist() == want


def test_duckdb_and_polars_read_the_tables_and_agree_with_the_run(runs):
    out, c = runs["after1"], runs["first"]["counts"]
    want = {"bronze": c["read"], "silver": c["curated"], "gold": c["aggregates"]}
    revenue = pc.sum(tables.read(_table(out, "silver"))["amount"]).as_py()
    for layer in LAYERS:
        files = _table(out, layer).file_uris()  # the current version's files, from the Delta log
        con = duckdb.connect()
        got = con.execute("SELECT count(*) FROM read_parquet(?, hive_partitioning = true)", [files]).fetchone()[0]
        assert got == want[layer], layer
        assert pl.scan_delta(str(out / "lakehouse" / layer)).select(pl.len()).collect().item() == want[layer]
    duck = (
        duckdb.connect()
        .execute(
            "SELECT sum(amount), count(DISTINCT order_id), min(dt) FROM read_parquet(?, hive_partitioning = true)",
            [_table(out, "silver").file_uris()],
        )
        .fetchone()
    )
    assert duck[0] == revenue and duck[1] == c["curated"]
    polars = pl.scan_delta(str(out / "lakehouse" / "silver")).select(pl.col("amount").sum()).collect().item()
    assert polars == revenue
    days = pl.scan_delta(str(out / "lakehouse" / "gold")).group_by("dt").agg(pl.col("orders").sum()).collect()
    assert days["orders"].sum() == pc.sum(read_parquet_dir(out / "aggregates")["orders"]).as_py()


def test_a_redrive_merges_the_letters_that_now_pass_into_silver_once(runs, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(runs["after1"], out)
    fixed = tmp_path / "fixed"  # the spec with a contract that accepts status on_hold (in the dirty data)
    (fixed / "schemas" / "orders").mkdir(parents=True)
    shutil.copy(SPEC, fixed)
    contract = (PACKAGED / "schemas" / "orders" / "v2.yaml").read_text()
    assert contract.count("cancelled, returned]") == 1
    (fixed / "schemas" / "orders" / "v2.yaml").write_text(
        contract.replace("cancelled, returned]", "cancelled, returned, on_hold]")
    )
    silver_before = _rows(out, "silver")
    argv = [f"--pipeline={fixed / 'orders.yaml'}", f"--dlq={out / 'dlq'}", f"--output={out}"]
    done = redrive(argv, clock=lambda: DAY2, out=io.StringIO())
    added = done["last_redrive"]["passed"]
    assert added > 0 and _table(out, "silver").count() == silver_before.num_rows + added
    # Silver holds the redrive's curated records (the published row keeps its key, as in the parquet
    # output), gold its recomputed aggregates; bronze is unchanged: a redrive receives nothing new.
    curated = read_parquet_dir(out / "curated").sort_by("order_id")
    assert (
        _rows(out, "silver").select(curated.column_names).equals(curated)
        and curated.num_rows == done["counts"]["curated"]
    )
    assert _rows(out, "gold", order=WINDOW_ORDER).equals(read_parquet_dir(out / "aggregates").sort_by(WINDOW_ORDER))
    assert _table(out, "bronze").count() == ROWS and _table(out, "bronze").version() == 0
    version = _table(out, "silver").version()
    redrive(argv, clock=lambda: DAY3, out=io.StringIO())  # the same redrive again
    assert _table(out, "silver").version() == version and _rows(out, "silver").select(curated.column_names).equals(
        curated
    )


def test_a_run_whose_audit_fails_commits_nothing(runs, tmp_path):
    out, spec = tmp_path / "out", tmp_path / "strict.yaml"
    shutil.copytree(runs["after1"], out)
    warn = 'expr: "updated_at >= created_at", severity: warn}'
    assert SPEC.read_text().count(warn) == 1
    spec.write_text(SPEC.read_text().replace(warn, 'expr: "amount < 0", severity: error}'))  # fails on every row
    before = {layer: (_table(out, layer).version(), _table(out, layer).count()) for layer in LAYERS}
    with pytest.raises(RunError, match="audit failed, nothing published"):
        _run(runs["in2"], out, DAY2, str(spec))
    assert {layer: (_table(out, layer).version(), _table(out, layer).count()) for layer in LAYERS} == before


def test_a_run_killed_between_the_silver_and_gold_commits_is_completed_once(runs, tmp_path):
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    shutil.copytree(runs["after1"], killed)
    shutil.copytree(runs["after1"], whole)
    _run(runs["in2"], whole, DAY2)  # the same run, not killed
    env = _env()
    env[faults.ENV] = "lakehouse:silver=kill"
    proc = subprocess.run(
        [sys.executable, "-m", "beam_pipelines.main", f"--pipeline={SPEC}", f"--input={runs['in2']}/*.jsonl",
         f"--output={killed}", "--history=none", "--lineage=none"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, start_new_session=True,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    journal = json.loads((killed / "_publishing.json").read_text())
    assert [(e["layer"], e["txn"]) for e in journal["tables"]] == [("bronze", 2), ("silver", 2), ("gold", 2)]
    # Bronze and silver were committed, gold not yet.
    assert [tables.txn_version(_table(killed, layer)) for layer in LAYERS] == [2, 2, 1]
    listed = io.StringIO()
    clean.run([f"--output={killed}", "--dry_run"], out=listed)
    assert f"would complete the publish of run {journal['run_id']}" in listed.getvalue()
    assert tables.txn_version(_table(killed, "gold")) == 1  # a dry run commits nothing
    done = io.StringIO()
    clean.run([f"--output={killed}"], out=done)
    assert f"completed the publish of run {journal['run_id']}" in done.getvalue()
    assert not (killed / "_publishing.json").exists() and not (killed / "_staging").exists()
    # Each table exactly as after the run that was not killed: nothing committed twice.
    for layer in LAYERS:
        runs_of = [h[tables.RUN_ID_KEY] for h in _table(killed, layer).history()]
        assert len(runs_of) == len(set(runs_of)) == len(_table(whole, layer).history()), layer
    assert _table(killed, "bronze").count() == _table(whole, "bronze").count() == 2 * ROWS
    assert _rows(killed, "silver").equals(_rows(whole, "silver"))
    assert _rows(killed, "gold", order=WINDOW_ORDER).equals(_rows(whole, "gold", order=WINDOW_ORDER))
    bronze = tables.read(_table(killed, "bronze"))
    assert Counter(bronze.column("run_id").to_pylist()) == {runs["first"]["run_id"]: ROWS, journal["run_id"]: ROWS}
    # The audit log: the first run's commits, the killed run's start (it never ended), the clean
    # that completed its publish.
    entries = [json.loads(line) for line in (killed / "_audit" / "log.jsonl").read_text().splitlines()]
    assert [(e["action"], e["outcome"]) for e in entries] == [
        ("run", "started"), ("run", "published"), ("run", "started"), ("clean", "done"),
    ]  # fmt: skip
    assert entries[1]["time"] == "2026-05-01T06:00:00.000+00:00"  # the run's injected clock
    committed = entries[1]["what"]["lakehouse"]
    assert [(t["layer"], t["commit"]["version"]) for t in committed] == [(layer, 0) for layer in LAYERS]
    assert entries[2]["what"]["run_id"] == journal["run_id"] == entries[3]["what"]["completed_cut_off"]


def test_the_report_page_and_the_lineage_events_name_the_tables_and_their_versions(runs, tmp_path):
    out, events = tmp_path / "out", tmp_path / "lineage.jsonl"
    argv = [f"--pipeline={SPEC}", f"--input={runs['in1']}/*.jsonl", f"--output={out}", "--history=none",
            f"--lineage={events}"]  # fmt: skip
    s = run(argv, clock=lambda: DAY1, out=io.StringIO())
    page = (out / "_run" / "report.html").read_text()
    assert "Lakehouse tables" in page
    for layer in LAYERS:
        assert f"<code>{out / 'lakehouse' / layer}</code>" in page
    (complete,) = [e for e in map(json.loads, events.read_text().splitlines()) if e["eventType"] == "COMPLETE"]
    by_name = {o["name"]: o for o in complete["outputs"]}
    written = {"bronze": s["counts"]["read"], "silver": s["counts"]["curated"], "gold": s["counts"]["aggregates"]}
    for layer in LAYERS:
        dataset = by_name[str(out / "lakehouse" / layer)]
        assert dataset["facets"]["version"]["datasetVersion"] == "0"
        assert dataset["outputFacets"]["outputStatistics"]["rowCount"] == written[layer]
