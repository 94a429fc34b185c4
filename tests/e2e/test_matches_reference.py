"""End to end: the ``events`` CLI agrees with the independent pure-Python reference (tests/reference_events.py).

Input: datagen's dirty sample plus a handwritten file of edge cases, in one directory. The CLI runs
as a subprocess exactly as a user runs it; its outputs (curated, aggregates, dlq, report) are read
back and compared with what the reference computes from the same bytes.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from collections import Counter
from datetime import timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reference_events import reference_many  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CURATED_COLUMNS = [
    "event_id", "user_id", "event_type", "amount", "currency", "ts", "email", "email_domain", "country",
    "hour_of_day", "day_of_week", "is_weekend", "extras",
]  # fmt: skip
AGG_COLUMNS = ["window_start", "window_end", "event_type", "country", "events", "users", "amount_sum"]
TS_TYPE = pa.timestamp("us", tz="UTC")


def _j(**fields) -> bytes:
    return json.dumps(fields, ensure_ascii=False).encode()


def edge_case_lines() -> list[bytes]:
    """Handwritten records exercising the corners of the spec (one record per line)."""
    big = "x" * 300_000
    return [
        # ids as integers and strings; numeric-string amounts; epoch ms; lower-case currency
        _j(
            event_id=101,
            user_id=7,
            event_type=" Purchase ",
            amount="12.345",
            currency="eur",
            ts=1709251200123,
            email=" Alice@Example.COM ",
            country=" fr ",
        ),
        # same event_id as a string, later ts: a duplicate
        _j(event_id=" 101 ", user_id="7", event_type="purchase", amount=12.0, ts="2024-03-01T00:00:01Z"),
        # same event_id, earlier ts but given as an epoch-seconds string: this copy wins
        _j(event_id="101", user_id="8", event_type="view", ts="1709251199"),
        # a tie on ts (same instant, written differently): the smaller raw text wins, not the first seen
        b'{"event_id":"tie-1","user_id":"u2","event_type":"click","ts":"2024-03-02T12:00:00+02:00","k":2}',
        b'{"event_id":"tie-1","user_id":"u1","event_type":"click","ts":"2024-03-02T10:00:00Z","k":1}',
        b'{"event_id":"tie-1","user_id":"u3","event_type":"click","ts":1709373600,"k":3}',
        # ISO-8601 variants
        _j(event_id="iso-1", user_id="u", event_type="view", ts="2024-03-01 10:00:00+02:00"),
        _j(event_id="iso-2", user_id="u", event_type="view", ts="2024-03-01T10:00:00-0530"),
        _j(event_id="iso-3", user_id="u", event_type="view", ts="2024-03-01T10:00:00.1234567Z"),
        _j(event_id="iso-4", user_id="u", event_type="view", ts="2024-03-01T10:00"),
        _j(event_id="iso-5", user_id="u", event_type="view", ts="2024-03-01"),
        _j(event_id="iso-6", user_id="u", event_type="view", ts=" 2024-03-03T23:59:59.5+00:00 "),
        _j(event_id="iso-7", user_id="u", event_type="view", ts="2024-03-02T01:30:00+0200"),
        _j(event_id="iso-8", user_id="u", event_type="view", ts="2024-03-01T10:00:00.123Z"),
        # epoch variants
        _j(event_id="ep-1", user_id="u", event_type="view", ts=1709251200.5),
        _j(event_id="ep-2", user_id="u", event_type="view", ts="1709251200123"),
        _j(event_id="ep-3", user_id="u", event_type="view", ts="1709251200.25"),
        _j(event_id="ep-4", user_id="u", event_type="view", ts=99999999999),
        _j(event_id="ep-5", user_id="u", event_type="view", ts=100000000000),
        # range boundaries
        _j(event_id="rng-1", user_id="u", event_type="view", ts="2000-01-01T00:00:00Z"),
        _j(event_id="rng-2", user_id="u", event_type="view", ts="1999-12-31T23:59:59.999999Z"),
        _j(event_id="rng-3", user_id="u", event_type="view", ts="2099-12-31T23:59:59.999999Z"),
        _j(event_id="rng-4", user_id="u", event_type="view", ts="2100-01-01T00:00:00Z"),
        _j(event_id="rng-5", user_id="u", event_type="view", ts="2000-01-01T01:00:00+02:00"),
        # unicode everywhere, extras with nested objects and a null
        _j(
            event_id="uni-1",
            user_id="ユーザー",
            event_type="add_to_cart",
            amount=None,
            ts="2024-03-04T08:15:00Z",
            email="José@Exämple.com",
            country="de",
            note="café ☕",
            meta={"b": 1, "a": [1, {"z": None}], "s": "é"},
            tags=["x", "y"],
            flag=True,
            nothing=None,
        ),
        # a ~300 KB record
        _j(event_id="big-1", user_id="u9", event_type="view", ts="2024-03-04T09:00:00Z", blob=big),
        # amounts: rounding half away from zero on the float x*100, strings, zero, tiny
        _j(event_id="amt-1", user_id="u", event_type="purchase", amount=0.005, ts="2024-03-05T00:00:00Z"),
        _j(event_id="amt-2", user_id="u", event_type="purchase", amount=2.675, ts="2024-03-05T00:10:00Z"),
        _j(event_id="amt-3", user_id="u", event_type="purchase", amount=" +4 ", ts="2024-03-05T00:20:00Z"),
        _j(event_id="amt-4", user_id="u", event_type="purchase", amount=".5", ts="2024-03-05T00:30:00Z"),
        _j(event_id="amt-5", user_id="u", event_type="refund", amount="1e3", ts="2024-03-05T00:40:00Z"),
        _j(event_id="amt-6", user_id="u", event_type="refund", amount=0, ts="2024-03-05T00:50:00Z"),
        _j(event_id="amt-7", user_id="u", event_type="purchase", amount=1e-7, ts="2024-03-05T00:55:00Z"),
        _j(event_id="amt-8", user_id="u", event_type="purchase", amount=19.999, ts="2024-03-05T00:56:00Z"),
        _j(event_id="amt-9", user_id="u", event_type="purchase", amount="5.", ts="2024-03-05T00:57:00Z"),
        _j(event_id="amt-10", user_id="u", event_type="click", amount=3, ts="2024-03-05T00:58:00Z"),
        # dead letters, one field at a time (first failing field in declared order)
        _j(user_id="u", event_type="view", ts="2024-03-01T00:00:00Z"),
        _j(event_id=None, user_id=None, event_type="view", ts="2024-03-01T00:00:00Z"),
        _j(event_id="", user_id="u", event_type="view", ts="2024-03-01T00:00:00Z"),
        _j(event_id="   ", user_id="u", event_type="view", ts="2024-03-01T00:00:00Z"),
        _j(event_id=1.5, user_id="u", event_type="view", ts="2024-03-01T00:00:00Z"),
        _j(event_id=2.0, user_id="u", event_type="view", ts="2024-03-01T00:00:00Z"),
        _j(event_id=True, user_id="u", event_type="view", ts="2024-03-01T00:00:00Z"),
        _j(event_id=["a"], user_id="u", event_type="view", ts="2024-03-01T00:00:00Z"),
        _j(event_id="dl-1", user_id=" ", event_type="nope", ts="2024-03-01T00:00:00Z"),
        _j(event_id="dl-2", user_id="u", event_type=5, ts="2024-03-01T00:00:00Z"),
        _j(event_id="dl-3", user_id="u", ts="2024-03-01T00:00:00Z"),
        _j(event_id="dl-4", user_id="u", event_type="purchase", amount="NaN", ts="2024-03-01T00:00:00Z"),
        _j(event_id="dl-5", user_id="u", event_type="purchase", amount="-1", ts="2024-03-01T00:00:00Z"),
        _j(event_id="dl-6", user_id="u", event_type="refund", ts="2024-03-01T00:00:00Z"),
        _j(event_id="dl-7", user_id="u", event_type="purchase", amount="1,5", ts="2024-03-01T00:00:00Z"),
        _j(event_id="dl-8", user_id="u", event_type="purchase", amount=True, ts="2024-03-01T00:00:00Z"),
        _j(event_id="dl-9", user_id="u", event_type="purchase", amount="1e999", ts="2024-03-01T00:00:00Z"),
        _j(event_id="dl-10", user_id="u", event_type="view", currency="", ts="2024-03-01T00:00:00Z"),
        _j(event_id="dl-11", user_id="u", event_type="view", currency=123, ts="2024-03-01T00:00:00Z"),
        _j(event_id="dl-12", user_id="u", event_type="view", currency="EURO", ts="2024-03-01T00:00:00Z"),
        _j(event_id="dl-13", user_id="u", event_type="view"),
        _j(event_id="dl-14", user_id="u", event_type="view", ts=True),
        _j(event_id="dl-15", user_id="u", event_type="view", ts="soon"),
        _j(event_id="dl-16", user_id="u", event_type="view", ts="2024-02-30T00:00:00Z"),
        _j(event_id="dl-17", user_id="u", event_type="view", ts={"t": 1}),
        _j(event_id="dl-18", user_id="u", event_type="view", amount=-0.01, ts="2024-03-01T00:00:00Z"),
        # valid: currency null/absent/spaced, type case; email/country cleansing counts
        _j(
            event_id="ok-1",
            user_id="u",
            event_type="VIEW",
            currency=None,
            ts="2024-03-06T00:00:00Z",
            email=123,
            country=12,
        ),
        _j(
            event_id="ok-2",
            user_id="u",
            event_type="view",
            currency=" gbp ",
            ts="2024-03-06T00:00:00Z",
            email="",
            country="",
        ),
        _j(event_id="ok-3", user_id="u", event_type="view", ts="2024-03-06T00:00:00Z", email=None, country=None),
        _j(event_id="ok-4", user_id="u", event_type="view", ts="2024-03-06T00:00:00Z", email="a@b", country="USA"),
        _j(event_id="ok-5", user_id="u", event_type="view", ts="2024-03-06T00:00:00Z", email="a b@c.de", country="u1"),
        _j(event_id=9007199254740993, user_id=-5, event_type="view", ts="2024-03-06T00:00:00Z"),
        # cross-file duplicate of a datagen record (earlier ts, so this copy wins if the other one is valid)
        _j(event_id="ev-0000000005", user_id="u0", event_type="click", ts="2024-02-01T00:00:00Z"),
        # blank lines: skipped, not counted
        b"",
        b"   ",
        b"\t",
        # malformed
        b"not json at all",
        b"[1, 2, 3]",
        b'"just a string"',
        b"null",
        b"42",
        b'{"event_id": "bad-utf8", "user_id": "u", "note": "\xff\xfe"}',
        b'{"event_id": "trunc", "user_id": "u"',
        b'{"event_id": "nan", "amount": NaN}',
        b'{"event_id":"nan-2","user_id":"u","event_type":"view","ts":"2024-03-01T00:00:00Z","x":Infinity}',
        # integers beyond 64 bits are still JSON integers
        b'{"event_id":123456789012345678901234567890,"user_id":"u","event_type":"view","ts":"2024-03-07T00:00:00Z"}',
    ]


def _split_lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def _run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def _run_cli(in_dir: Path, out_dir: Path, *extra: str) -> None:
    proc = _run(
        "-m", "beam_pipelines.main", "--pipeline=events", f"--input={in_dir}/*.jsonl", f"--output={out_dir}", *extra
    )
    assert proc.returncode == 0, f"CLI failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"


def _expected(in_dir: Path, policy: str = "additive") -> dict:
    inputs = [(_split_lines(Path(p).read_bytes()), p) for p in sorted(glob.glob(f"{in_dir}/*.jsonl"))]
    return reference_many(inputs, policy)


def _read_outputs(out: Path) -> dict:
    curated, schemas = [], []
    for path in sorted(glob.glob(f"{out}/curated/**/*.parquet", recursive=True)):
        table = pq.ParquetFile(path).read()
        if "dt" in table.column_names:
            table = table.drop(["dt"])
        schemas.append(table.schema)
        dt = Path(path).parent.name
        for row in table.to_pylist():
            row["_dt"] = dt
            curated.append(row)
    agg_tables = [pq.ParquetFile(p).read() for p in sorted(glob.glob(f"{out}/aggregates/*.parquet"))]
    dlq = []
    for path in sorted(glob.glob(f"{out}/dlq/*.jsonl")):
        with open(path, "rb") as fh:
            dlq += [json.loads(line) for line in fh if line.strip()]
    report = json.loads((out / "_run" / "report.json").read_text())
    return {"curated": curated, "schemas": schemas, "aggregates": agg_tables, "dlq": dlq, "report": report}


def _curated_key(row: dict):
    return row["event_id"]


def _agg_key(row: dict):
    return (row["window_start"], row["event_type"], row["country"] or "")


def _utc(rows: list[dict], *names: str) -> list[dict]:
    """Timestamps as aware UTC datetimes (Arrow may hand back a different tzinfo object)."""
    return [
        {k: (v.astimezone(timezone.utc) if k in names and v is not None else v) for k, v in r.items()} for r in rows
    ]


def _diff(got: list[dict], want: list[dict], key) -> str:
    got_by, want_by = {key(r): r for r in got}, {key(r): r for r in want}
    lines = []
    for k in sorted(set(got_by) | set(want_by), key=str):
        g, w = got_by.get(k), want_by.get(k)
        if g != w:
            if g is None or w is None:
                lines.append(f"{k!r}: got {g!r}\n    expected {w!r}")
            else:
                fields = {f: (g.get(f), w.get(f)) for f in set(g) | set(w) if g.get(f) != w.get(f)}
                lines.append(f"{k!r}: (got, expected) {fields!r}")
    return "\n".join(s[:2000] for s in lines[:30])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("events_vs_reference")
    in_dir, out_dir = base / "in", base / "out"
    proc = _run(
        "-m", "beam_pipelines.datagen", "--rows", "3000", "--format", "jsonl", "--dirty-fraction", "0.3",
        "--out", str(in_dir), "--seed", "11",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (in_dir / "edge-cases.jsonl").write_bytes(b"\n".join(edge_case_lines()) + b"\n")
    _run_cli(in_dir, out_dir)
    return {"in": in_dir, "expected": _expected(in_dir), "got": _read_outputs(out_dir)}


def test_curated_matches_reference(run):
    got = _utc(run["got"]["curated"], "ts")
    for row in got:
        assert row.pop("_dt") == f"dt={row['ts']:%Y-%m-%d}", row["event_id"]
    want = run["expected"]["curated"]
    got, want = sorted(got, key=_curated_key), sorted(want, key=_curated_key)
    assert len({r["event_id"] for r in got}) == len(got), "curated event_id values repeat"
    assert got == want, "curated rows differ from the reference:\n" + _diff(got, want, _curated_key)


def test_curated_schema(run):
    assert run["got"]["schemas"], "no curated parquet files"
    for schema in run["got"]["schemas"]:
        assert schema.names == CURATED_COLUMNS
        assert schema.field("ts").type == TS_TYPE
        assert schema.field("amount").type == pa.float64()


def test_aggregates_match_reference(run):
    tables = run["got"]["aggregates"]
    assert tables, "no aggregate parquet files"
    for t in tables:
        assert t.schema.names == AGG_COLUMNS
        assert t.schema.field("window_start").type == TS_TYPE
        assert t.schema.field("window_end").type == TS_TYPE
    got = _utc([r for t in tables for r in t.to_pylist()], "window_start", "window_end")
    want = run["expected"]["aggregates"]
    got, want = sorted(got, key=_agg_key), sorted(want, key=_agg_key)
    assert got == want, "aggregates differ from the reference:\n" + _diff(got, want, _agg_key)


def test_report_matches_reference(run):
    report, want = run["got"]["report"], run["expected"]
    assert report["counts"] == want["counts"]
    assert report["dead_letter_reasons"] == want["dead_letter_reasons"]
    quality = {k: report["quality"].get(k) for k in want["quality"]}
    assert quality == want["quality"]
    assert report["conservation_ok"] is True


def test_dlq_matches_reference(run):
    dlq, want = run["got"]["dlq"], run["expected"]
    assert len(dlq) == want["counts"]["dead_lettered"]
    inputs = {
        line.decode("utf-8", errors="backslashreplace")
        for p in glob.glob(f"{run['in']}/*.jsonl")
        for line in _split_lines(Path(p).read_bytes())
    }
    for rec in dlq:
        assert {"stage", "reason", "field", "error", "raw", "source"} <= set(rec), rec
        assert rec["raw"] in inputs, f"dlq raw is not an input line: {rec['raw'][:200]!r}"
    got = Counter((d["reason"], d["field"], d["raw"]) for d in dlq)
    expected = Counter((d["reason"], d["field"], d["raw"]) for d in want["dead_letters"])
    assert got == expected, (
        f"dlq differs: only in output {list((got - expected).elements())[:10]!r}; "
        f"only in reference {list((expected - got).elements())[:10]!r}"
    )
    got_sources = Counter((d["raw"], os.path.basename(str(d["source"]))) for d in dlq)
    want_sources = Counter((d["raw"], os.path.basename(d["source"])) for d in want["dead_letters"])
    assert got_sources == want_sources


def test_strict_policy_matches_reference(tmp_path):
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    in_dir.mkdir()
    (in_dir / "edge-cases.jsonl").write_bytes(b"\n".join(edge_case_lines()) + b"\n")
    _run_cli(in_dir, out_dir, "--schema_policy=strict")
    got, want = _read_outputs(out_dir), _expected(in_dir, "strict")
    assert got["report"]["counts"] == want["counts"]
    assert got["report"]["dead_letter_reasons"] == want["dead_letter_reasons"]
    rows = sorted(_utc([{k: v for k, v in r.items() if k != "_dt"} for r in got["curated"]], "ts"), key=_curated_key)
    assert rows == sorted(want["curated"], key=_curated_key)
    assert Counter((d["reason"], d["raw"]) for d in got["dlq"]) == Counter(
        (d["reason"], d["raw"]) for d in want["dead_letters"]
    )


def test_huge_amount_matches_reference(tmp_path):
    """A very large (valid) amount: the run still finishes and sums it exactly."""
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    in_dir.mkdir()
    (in_dir / "huge.jsonl").write_bytes(
        b'{"event_id":"bigamt-1","user_id":"u","event_type":"purchase","amount":100000000000000000000,'
        b'"ts":"2024-03-07T00:00:00Z"}\n'
        b'{"event_id":"bigamt-2","user_id":"u","event_type":"purchase","amount":"1.5","ts":"2024-03-07T00:10:00Z"}\n'
    )
    _run_cli(in_dir, out_dir)
    got, want = _read_outputs(out_dir), _expected(in_dir)
    assert got["report"]["counts"] == want["counts"]
    aggs = _utc([r for t in got["aggregates"] for r in t.to_pylist()], "window_start", "window_end")
    assert sorted(aggs, key=_agg_key) == sorted(want["aggregates"], key=_agg_key)


def test_lone_surrogate_is_dead_lettered(tmp_path):
    """An escaped lone surrogate cannot become UTF-8 text: one bad record must not fail the whole run."""
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    in_dir.mkdir()
    (in_dir / "surrogate.jsonl").write_bytes(
        b'{"event_id":"sur-1","user_id":"\\udc00x","event_type":"view","ts":"2024-03-01T00:00:00Z"}\n'
        b'{"event_id":"sur-2","user_id":"u","event_type":"view","ts":"2024-03-01T00:00:00Z","note":"\\ud800"}\n'
        b'{"event_id":"sur-3","user_id":"u","event_type":"view","ts":"2024-03-01T00:00:00Z"}\n'
    )
    _run_cli(in_dir, out_dir)
    got, want = _read_outputs(out_dir), _expected(in_dir)
    assert got["report"]["counts"] == want["counts"]
    assert got["report"]["dead_letter_reasons"] == want["dead_letter_reasons"]
    assert sorted(d["raw"] for d in got["dlq"]) == sorted(d["raw"] for d in want["dead_letters"])
