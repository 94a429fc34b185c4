"""Erasure end to end: the lakehouse example (examples/lakehouse/orders.yaml) runs twice over
orders whose records carry an undeclared ``email`` (kept by the contract in ``extras``), then
``python -m beam_pipelines.erase`` removes one customer. Every file under the output is then read
(parquet decoded, its statistics too; JSON, JSON lines, HTML, metrics, Delta logs and
checkpoints; SQLite dumped) and holds neither the customer's id nor their email; the receipt says
what went where; the other customers' rows are the rows they were; gold's windows the customer
was in equal an aggregation of silver done here with DuckDB; the audit log holds the erasure and
verifies; a second erasure finds nothing. A dry run changes no byte and counts what the erasure
then removes; an erasure cut off after each layer is completed by running it again."""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from beam_pipelines import audit_log, datagen, erase, lease
from beam_pipelines.errors import RunError
from beam_pipelines.lakehouse import tables
from beam_pipelines.main import run
from tests.e2e.helpers import ROOT
from transforms import faults

UTC = timezone.utc
SPEC = ROOT / "examples" / "lakehouse" / "orders.yaml"
ROWS = 3000
DAY1, DAY2, LATER = (datetime(2026, 5, d, 6, tzinfo=UTC) for d in (1, 2, 3))


def email_of(customer: str) -> str:
    """An address that does not contain the customer's id."""
    return f"buyer{(int(customer[2:]) * 7919) % 1_000_003}@mail.example"


def with_emails(folder: Path) -> None:
    """Adds each record's customer's email, as an undeclared field, to the generated JSON lines."""
    for f in folder.glob("*.jsonl"):
        lines = []
        for line in f.read_text().splitlines():
            try:
                customer = json.loads(line).get("customer_id")
            except json.JSONDecodeError:
                customer = None  # a malformed record, left as it is
            if isinstance(customer, str) and line.endswith("}"):
                line = line[:-1] + f',"email":"{email_of(customer)}"}}'
            lines.append(line)
        f.write_text("\n".join(lines) + "\n")


def _run(data: Path, out: Path, when: datetime) -> dict:
    return run([f"--pipeline={SPEC}", f"--input={data}/*.jsonl", f"--output={out}"], clock=lambda: when,
               out=io.StringIO())  # fmt: skip


def table(out: Path, layer: str) -> pa.Table:
    return tables.read(tables.open_table(str(out / "lakehouse" / layer)))


def texts_of(path: Path) -> list[str]:
    """What a file holds, as text: parquet decoded (values, statistics, metadata), SQLite dumped,
    anything else as bytes read as UTF-8."""
    if path.suffix == ".parquet":
        pf = pq.ParquetFile(path)
        out = [str(pf.metadata.metadata), str(pf.schema_arrow)]
        for i in range(pf.metadata.num_row_groups):
            rg = pf.metadata.row_group(i)
            out += [str(rg.column(j).statistics) for j in range(rg.num_columns)]
        data = pf.read()
        out += [json.dumps(data.column(c).to_pylist(), default=str) for c in data.column_names]
        return out
    if path.suffix in (".sqlite", ".db"):
        con = sqlite3.connect(path)
        try:
            return ["\n".join(con.iterdump())]
        finally:
            con.close()
    return [path.read_bytes().decode("utf-8", errors="replace")]


def holding(out: Path, *needles: str) -> dict[str, list[str]]:
    """The files under ``out`` that hold any of ``needles``, and which."""
    found = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        text = "\n".join(texts_of(path))
        hits = [n for n in needles if n in text]
        if hits:
            found[str(path.relative_to(out))] = hits
    return found


def gold_by_duckdb(silver: pa.Table, windows: list[datetime]) -> pa.Table:
    """DailyRevenue of silver's rows in ``windows``, computed here as the spec declares it."""
    con = duckdb.connect()
    con.register("silver", silver)
    sql = """
        SELECT time_bucket(INTERVAL 1 DAY, updated_at, TIMESTAMPTZ '1970-01-01 00:00:00+00') AS window_start,
               region, status, count(*) AS orders, count(DISTINCT customer_id) AS customers,
               sum(amount) AS revenue, sum(quantity) AS items, avg(amount::DOUBLE) AS average_order,
               max(amount) AS largest_order
        FROM silver GROUP BY ALL"""
    con.execute("SET TimeZone = 'UTC'")
    got = pa.table(con.sql(sql).to_arrow_table())
    keep = pc.is_in(got["window_start"], value_set=pa.array(windows, got["window_start"].type))
    return got.filter(keep)


def rows_of(t: pa.Table, columns: list[str]) -> Counter:
    return Counter(zip(*(t[c].to_pylist() for c in columns)))


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    root = tmp_path_factory.mktemp("erase")
    for name, seed in (("in1", 3), ("in2", 4)):
        assert datagen.main(["--dataset=orders", f"--rows={ROWS}", f"--out={root / name}", f"--seed={seed}",
                             "--days=3", "--dirty-fraction=0.05"]) == 0  # fmt: skip
        with_emails(root / name)
    out = root / "out"
    _run(root / "in1", out, DAY1)
    _run(root / "in2", out, DAY2)
    # The subject: a customer with records in both inputs, in silver, and in the dead letters.
    dlq = (
        (out / "dlq").read_text()
        if (out / "dlq").is_file()
        else "".join(p.read_text() for p in (out / "dlq").rglob("*.jsonl"))
    )
    silver = table(out, "silver")
    counts = Counter(silver["customer_id"].to_pylist())
    subject = next(c for c, _ in counts.most_common() if f'\\"customer_id\\":\\"{c}\\"' in dlq)
    before = {layer: table(out, layer) for layer in ("bronze", "silver", "gold")}
    bronze_hits = sum(1 for r in before["bronze"]["record"].to_pylist() if f'"{subject}"' in r)
    dlq_hits = sum(1 for line in dlq.splitlines() if subject in line)
    argv = [f"--pipeline={SPEC}", f"--output={out}", "--subject", f"customer_id={subject}", "--identifier",
            email_of(subject)]  # fmt: skip
    shutil.copytree(out, root / "crash")  # for the erasure cut off by a crash
    files = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    dry = erase.run([*argv, "--dry_run"], clock=lambda: LATER, out=io.StringIO())
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == files  # a dry run changes nothing
    said = io.StringIO()
    receipt = erase.run(argv, clock=lambda: LATER, out=said)
    return {"root": root, "argv": argv, "dry": dry, "out": out, "subject": subject, "email": email_of(subject), "before": before, "receipt": receipt,
            "said": said.getvalue(), "bronze_hits": bronze_hits, "dlq_hits": dlq_hits}  # fmt: skip


def test_no_file_under_the_output_holds_the_subjects_id_or_email(lake):
    out, subject, email = lake["out"], lake["subject"], lake["email"]
    assert lake["bronze_hits"] and lake["dlq_hits"]  # the subject was in every layer
    assert holding(out, subject, email) == {}
    # The scan itself finds what is there: another customer's id and email are still in the output.
    other = next(c for c in table(out, "silver")["customer_id"].to_pylist() if c != subject)
    found = holding(out, other, email_of(other))
    assert any(k.startswith("lakehouse/silver") for k in found) and any(k.startswith("lakehouse/bronze") for k in found)
    assert any(email_of(other) in v for v in found.values())


def test_the_receipt_says_what_went_where_and_names_the_subject_only_by_a_salted_hash(lake):
    r, subject = lake["receipt"], lake["subject"]
    assert r["subject"]["sha256"] == erase.subject_digest("customer_id", subject, r["subject"]["salt"])
    layers = {(t["layer"], t.get("tier")): t for t in r["tables"]}
    silver_before = lake["before"]["silver"]
    theirs = pc.sum(pc.equal(silver_before["customer_id"], subject)).as_py()
    assert layers["silver", "hot"]["rows_deleted"] == theirs > 0
    assert layers["bronze", "hot"]["rows_deleted"] == lake["bronze_hits"]
    gold = layers["gold", None]
    assert gold["windows"] == len(gold["window_starts"]) >= 1
    for t in r["tables"]:
        assert t["version_after"] is not None and t["log_entries_removed"] >= 1
    files = {f["what"]: f for f in r["files"]}
    assert files["dead letters"]["rows_deleted"] == lake["dlq_hits"]
    assert files["curated records"]["rows_deleted"] >= 1
    assert "_run/profile.json" in files["reports, profiles, lineage"]["paths"]
    assert r["time"] == LATER.isoformat(timespec="milliseconds")
    saved = json.loads((lake["out"] / "_erasure" / f"{r['erasure_id']}.json").read_text())
    assert saved["tables"] == json.loads(json.dumps(r["tables"], default=str))
    assert "rows deleted" in lake["said"] or "delete" in lake["said"]


def test_the_other_subjects_rows_are_intact(lake):
    out, subject, before = lake["out"], lake["subject"], lake["before"]
    silver = table(out, "silver")
    kept = before["silver"].filter(pc.not_equal(before["silver"]["customer_id"], subject))
    cols = [c for c in kept.column_names if c != "extras"] + ["extras"]
    assert rows_of(silver, cols) == rows_of(kept, cols)
    bronze = table(out, "bronze")
    kept_bronze = [r for r in before["bronze"]["record"].to_pylist() if f'"{subject}"' not in r]
    assert Counter(bronze["record"].to_pylist()) == Counter(kept_bronze)


def test_the_subjects_gold_windows_equal_a_recomputation_and_the_others_are_kept(lake):
    out, r = lake["out"], lake["receipt"]
    gold = table(out, "gold")
    windows = [datetime.fromisoformat(w) for w in next(t for t in r["tables"] if t["layer"] == "gold")["window_starts"]]
    inside = pc.is_in(gold["window_start"], value_set=pa.array(windows, gold["window_start"].type))
    expected = gold_by_duckdb(table(out, "silver"), windows)
    cols = ["window_start", "region", "status", "orders", "customers", "items"]
    assert rows_of(gold.filter(inside), cols) == rows_of(expected, cols)
    got = {(w, g, s): (float(v), float(a)) for w, g, s, v, a in zip(*(gold.filter(inside)[c].to_pylist() for c in
           ("window_start", "region", "status", "revenue", "average_order")))}  # fmt: skip
    want = {(w, g, s): (float(v), float(a)) for w, g, s, v, a in zip(*(expected[c].to_pylist() for c in
            ("window_start", "region", "status", "revenue", "average_order")))}  # fmt: skip
    assert got.keys() == want.keys()
    assert all(abs(got[k][0] - want[k][0]) < 1e-6 and abs(got[k][1] - want[k][1]) < 1e-6 for k in got)
    old = lake["before"]["gold"]

    def outside(t):
        return t.filter(pc.invert(pc.is_in(t["window_start"], value_set=pa.array(windows, t["window_start"].type))))

    assert rows_of(outside(gold), cols) == rows_of(outside(old), cols)


def test_the_audit_log_holds_the_erasure_and_a_second_erasure_finds_nothing(lake):
    out, subject = lake["out"], lake["subject"]
    entries = [json.loads(x) for x in (out / "_audit" / "log.jsonl").read_text().splitlines()]
    (entry,) = [e for e in entries if e["action"] == "erasure"]
    assert entry["outcome"] == "done" and entry["what"]["rows_deleted"] > 0
    digest = lake["receipt"]["subject"]["sha256"][:12]
    assert entry["what"]["args"][-4:] == ["--subject", f"customer_id=<sha256:{digest}>", "--identifier", "<hidden>"]
    assert entry["what"]["receipt_sha256"] == audit_log.file_sha256(entry["what"]["receipt"])
    assert audit_log.main(["verify", f"--output={out}"]) == 0
    again = erase.run([f"--pipeline={SPEC}", f"--output={out}", f"--subject=customer_id={subject}",
                       f"--identifier={lake['email']}"], clock=lambda: LATER, out=io.StringIO())  # fmt: skip
    assert all(t.get("rows_deleted", 0) == 0 for t in again["tables"] + again["files"])
    assert holding(out, subject, lake["email"]) == {}
    with lease.acquire(str(out), "20261207T000000Z-running"):
        with pytest.raises(RunError, match="in use by run 20261207T000000Z-running"):
            erase.run([f"--pipeline={SPEC}", f"--output={out}", f"--subject=customer_id={subject}"],
                      clock=lambda: LATER, out=io.StringIO())  # fmt: skip


def test_a_dry_run_counted_what_the_erasure_removed(lake):
    def counts(r):
        return [(t["layer"], t.get("tier"), t.get("rows_deleted", t.get("windows"))) for t in r["tables"]] + [
            (f["what"], f.get("rows_deleted", f.get("windows", f.get("occurrences")))) for f in r["files"]
        ]

    assert counts(lake["dry"]) == counts(lake["receipt"])


@pytest.mark.parametrize("point", ["erase:gold", "erase:silver", "erase:bronze"])
def test_an_erasure_cut_off_by_a_crash_is_completed_by_running_it_again(lake, point, monkeypatch, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(lake["root"] / "crash", out)
    argv = [a.replace(str(lake["out"]), str(out)) for a in lake["argv"]]
    monkeypatch.setenv(faults.ENV, f"{point}=raise")
    with pytest.raises(faults.FaultInjected):
        erase.run(argv, clock=lambda: LATER, out=io.StringIO())
    monkeypatch.delenv(faults.ENV)
    erase.run(argv, clock=lambda: LATER, out=io.StringIO())
    assert holding(out, lake["subject"], lake["email"]) == {}
    for layer in ("bronze", "silver", "gold"):
        done, crashed = table(lake["out"], layer), table(out, layer)
        assert rows_of(crashed, crashed.column_names) == rows_of(done, done.column_names), layer
    outcomes = [json.loads(x)["outcome"] for x in (out / "_audit" / "log.jsonl").read_text().splitlines()]
    assert outcomes[-2:] == ["failed", "done"]
