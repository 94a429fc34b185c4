"""Sample data of the example pipelines (orders, sessions): same arguments same bytes, counts,
each kind of dirt, clean rows conforming to their contracts, order versions and sessions."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

import fastavro
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from beam_pipelines import datagen, datagen_orders, datagen_sessions

SCHEMAS = Path(datagen.__file__).parent / "pipelines" / "schemas"
FORMATS = ("jsonl", "csv", "avro", "parquet")
UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
BASE = datetime(2024, 3, 1, tzinfo=UTC)
TS = pa.timestamp("us", tz="UTC")
CASES = {  # CLI arguments, contract, file name prefix
    "orders-v1": (["--dataset", "orders"], "orders/v1.yaml", "orders-v1"),
    "orders-v2": (["--dataset", "orders", "--contract-version", "2"], "orders/v2.yaml", "orders-v2"),
    "sessions": (["--dataset", "sessions"], "sessions/v1.yaml", "sessions"),
}
# What a row of each dirty kind does to a reader of the contract: (reason, field); None: a valid row.
EXPECTED = {
    "orders": {
        "missing_order_id": ("missing", "order_id"),
        "unknown_status": ("invalid", "status"),
        "negative_amount": ("invalid", "amount"),
        "ts_out_of_range": ("invalid", "updated_at"),
        "duplicate": None,
        "malformed": ("malformed", None),
        "non_numeric_amount": ("invalid", "amount"),
        "fractional_quantity": ("invalid", "quantity"),
        "huge_quantity": ("invalid", "quantity"),
        "bad_is_gift": ("invalid", "is_gift"),
        "bad_ts": ("invalid", "updated_at"),
    },
    "sessions": {
        "missing_user_id": ("missing", "user_id"),
        "bad_action": ("invalid", "action"),
        "ts_out_of_range": ("invalid", "ts"),
        "duplicate": None,
        "duplicate_later": None,
        "malformed": ("malformed", None),
        "bad_ts": ("invalid", "ts"),
    },
}
_ARROW = {
    "id": pa.string(),
    "string": pa.string(),
    "int": pa.int32(),
    "long": pa.int64(),
    "double": pa.float64(),
    "boolean": pa.bool_(),
    "timestamp": TS,
}
_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
_REFUSED = (pa.ArrowInvalid, KeyError, TypeError, ValueError)


def _contract(case: str) -> dict:
    return yaml.safe_load((SCHEMAS / CASES[case][1]).read_text())


def _module(case: str):
    return datagen_sessions if case == "sessions" else datagen_orders


def _sample(case: str, rows: int, dirty: float, seed: int = 7, days: int = 7) -> datagen.Sample:
    if case == "sessions":
        return datagen_sessions.generate(rows, 0, seed, dirty, days)
    return datagen_orders.generate(rows, 0, seed, dirty, days, version=int(case[-1]))


def _arrow_type(f: dict) -> pa.DataType:
    return pa.decimal128(f.get("precision", 18), f.get("scale", 2)) if f["type"] == "decimal" else _ARROW[f["type"]]


def _typed(values: list, f: dict) -> pa.Array:
    """Raw values of one field (JSON values, CSV text, avro values) as the field's Arrow type;
    raises when the type refuses any of them."""
    t = f["type"]
    values = [None if v is None or v == "" else v for v in values]
    if t == "boolean":
        return pa.array([v if v is None or isinstance(v, bool) else _BOOLS[str(v).lower()] for v in values], pa.bool_())
    if t == "timestamp":
        parsed = pa.array([v if isinstance(v, str) else None for v in values], pa.string()).cast(TS).to_pylist()
        out = []
        for v, text in zip(values, parsed):
            if isinstance(v, bool) or not isinstance(v, (int, str, datetime, type(None))):
                raise TypeError(f"{f['name']}: not a timestamp: {v!r}")
            if isinstance(v, int):  # epoch milliseconds, or seconds
                v = EPOCH + (timedelta(milliseconds=v) if abs(v) >= 10**11 else timedelta(seconds=v))
            out.append(text if isinstance(v, str) else v)
        return pa.array(out, TS)
    if t in ("id", "string"):
        for v in values:
            if v is not None and not isinstance(v, str) and not (t == "id" and type(v) is int):
                raise TypeError(f"{f['name']}: not a string: {v!r}")
        return pa.array([None if v is None else str(v).strip() for v in values], pa.string())
    if any(isinstance(v, bool) for v in values):
        raise TypeError(f"{f['name']}: a boolean is not a number")
    text = pa.array([None if v is None else str(v) for v in values], pa.string())
    return text.cast(pa.int64()).cast(_arrow_type(f)) if t in ("int", "long") else text.cast(_arrow_type(f))


def _violations(arr: pa.Array, f: dict, earlier: dict) -> tuple[np.ndarray, np.ndarray]:
    """(missing, invalid) masks of a typed column under the field's rules."""
    null = pc.is_null(arr).to_numpy(zero_copy_only=False)
    required = f["type"] == "id" or f.get("required", False)
    missing = null & required & ("default" not in f)
    if "required_if" in f:
        rule = f["required_if"]
        prior = pc.utf8_lower(earlier[rule["field"]]).to_pylist()
        missing |= null & np.array([p in rule["values"] for p in prior], dtype=bool)
    invalid = np.zeros(len(arr), dtype=bool)
    text = arr.to_pylist() if pa.types.is_string(arr.type) else None
    if "values" in f:
        invalid |= np.array([v is not None and v.lower() not in f["values"] for v in text], dtype=bool)
    if "pattern" in f:
        invalid |= np.array([v is not None and not re.search(f["pattern"], v) for v in text], dtype=bool)
    for key, outside in (
        ("minimum", pc.less),
        ("maximum", pc.greater_equal if f["type"] == "timestamp" else pc.greater),
    ):
        if key in f:
            if f["type"] == "timestamp":
                hit = outside(arr, pa.scalar(datetime.fromisoformat(f[key]), TS))
            else:
                hit = outside(arr.cast(pa.float64()), float(f[key]))
            invalid |= pc.fill_null(hit, False).to_numpy(zero_copy_only=False)
    return missing, invalid


def _first_failure(record: dict | None, contract: dict) -> tuple[str, str | None] | None:
    """What a reader of the contract makes of one record: (reason, field) of the first failing
    field in declaration order, ("malformed", None), or None for a valid record."""
    if record is None:
        return ("malformed", None)
    earlier = {}
    for f in contract["fields"]:
        name = f["name"]
        keys = [k for k in [name, *f.get("aliases", [])] if k in record]
        try:
            typed = _typed([record[keys[0]] if keys else None], f)
        except _REFUSED:
            return ("invalid", name)
        missing, invalid = _violations(typed, f, earlier)
        if missing[0]:
            return ("missing", name)
        if invalid[0]:
            return ("invalid", name)
        earlier[name] = typed
    return None


def _assert_conform(records: list[dict], contract: dict) -> None:
    """Every record types and validates under the contract, field by field (one column at a time)."""
    assert records
    names = [f["name"] for f in contract["fields"]]
    undeclared = {k for r in records for k in r} - set(names)
    assert not undeclared, f"fields the contract does not declare: {undeclared}"
    earlier = {}
    for f in contract["fields"]:
        typed = _typed([r.get(f["name"]) for r in records], f)
        assert typed.type == _arrow_type(f)
        missing, invalid = _violations(typed, f, earlier)
        bad = np.flatnonzero(missing | invalid)
        assert len(bad) == 0, f"{f['name']}: {len(bad)} bad values, e.g. {records[bad[0]]}"
        earlier[f["name"]] = typed


def _read(fmt: str, path: Path) -> list[dict | None]:
    """The file's records as dicts (None for a line that is not one), in file order."""
    if fmt == "parquet":
        return pq.read_table(path).to_pylist()
    if fmt == "avro":
        with open(path, "rb") as fh:
            return list(fastavro.reader(fh))
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b""
    if fmt == "jsonl":
        return [_json_or_none(line) for line in lines[:-1]]
    header = lines[0].decode().split(",")
    rows = [next(csv.reader([line.decode()])) for line in lines[1:-1]]
    return [dict(zip(header, row)) if len(row) == len(header) else None for row in rows]


def _json_or_none(line: bytes):
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _write(case: str, fmt: str, sample: datagen.Sample, tmp_path: Path) -> Path:
    path = tmp_path / f"{case}.{fmt}"
    _module(case).write_file(fmt, sample, np.random.default_rng(1), str(path))
    return path


def _run(tmp_path: Path, case: str, fmt: str, *args: str) -> list[Path]:
    out = tmp_path / "out"
    assert datagen.main([*CASES[case][0], "--format", fmt, "--out", str(out), *args]) == 0
    return sorted(out.iterdir())


def _text_kinds(case: str) -> tuple[str, ...]:
    return _module(case).TEXT_DIRTY


# -- determinism and counts -------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", CASES)
def test_same_arguments_same_bytes(tmp_path, case, fmt):
    args = ("--rows", "3000", "--files", "2", "--dirty-fraction", "0.1", "--seed", "11")
    first = [p.read_bytes() for p in _run(tmp_path / "a", case, fmt, *args)]
    again = [p.read_bytes() for p in _run(tmp_path / "b", case, fmt, *args)]
    other = [p.read_bytes() for p in _run(tmp_path / "c", case, fmt, *args[:-1], "12")]
    assert len(first) == 2
    assert first == again
    assert first[0] != other[0]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", CASES)
def test_row_counts_and_file_names(tmp_path, case, fmt):
    paths = _run(tmp_path, case, fmt, "--rows", "5000", "--files", "3", "--dirty-fraction", "0.05")
    assert [p.name for p in paths] == [f"{CASES[case][2]}-{i:05d}.{fmt}" for i in range(3)]
    assert [len(_read(fmt, p)) for p in paths] == [1667, 1667, 1666]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_events_output_is_unchanged(tmp_path, fmt):
    """The events files of these arguments, as written before orders and sessions existed."""
    golden = {
        "jsonl": "31e6d16c3a079315a26257438980763919c44e0fd3225212b4f3edaf8f28b5e4",
        "csv": "284d0e6afbf3c2187039b28dd97854c65f62a5fd9e0d5fdea1f03b67dd54f517",
    }
    assert datagen.main(["--rows", "2000", "--format", fmt, "--out", str(tmp_path / "a")]) == 0
    assert datagen.main(["--dataset", "events", "--rows", "2000", "--format", fmt, "--out", str(tmp_path / "b")]) == 0
    for out in ("a", "b"):
        data = (tmp_path / out / f"events-00000.{fmt}").read_bytes()
        assert hashlib.sha256(data).hexdigest() == golden[fmt]


@pytest.mark.parametrize(
    "args",
    [
        ["--dataset", "sessions", "--contract-version", "2"],
        ["--dataset", "orders", "--days", "0"],
        ["--dataset", "orders", "--contract-version", "3"],
        ["--dataset", "clicks"],
    ],
)
def test_bad_arguments_exit_2(tmp_path, args):
    with pytest.raises(SystemExit) as exc:
        datagen.main([*args, "--rows", "10", "--out", str(tmp_path)])
    assert exc.value.code == 2


# -- contracts -------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", CASES)
def test_clean_rows_conform_to_the_contract(tmp_path, case, fmt):
    contract = _contract(case)
    sample = _sample(case, 3000, 0.1)
    records = _read(fmt, _write(case, fmt, sample, tmp_path))
    assert len(records) == 3000
    kinds = [k for k in sample.dirty if fmt in ("jsonl", "csv") or k not in _text_kinds(case)]
    dirty = np.concatenate([sample.dirty[k] for k in kinds])
    clean = np.setdiff1d(np.arange(3000), dirty)
    assert len(clean) > 2500
    _assert_conform([records[i] for i in clean], contract)
    if fmt == "parquet":
        declared = pa.schema([(f["name"], _arrow_type(f)) for f in contract["fields"]])
        assert pq.read_schema(tmp_path / f"{case}.{fmt}").remove_metadata() == declared


@pytest.mark.parametrize("case", CASES)
def test_avro_holds_the_typed_rows(tmp_path, case):
    sample = _sample(case, 5000, 0.1)
    avro = _read("avro", _write(case, "avro", sample, tmp_path))
    assert avro == sample.table.to_pylist()
    with open(tmp_path / f"{case}.avro", "rb") as fh:
        reader = fastavro.reader(fh)
        assert reader.metadata["avro.codec"] == "deflate"
        assert [f["name"] for f in reader.writer_schema["fields"]] == [f["name"] for f in _contract(case)["fields"]]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", CASES)
def test_each_kind_of_dirt_fails_as_intended(tmp_path, case, fmt):
    _check_dirt(tmp_path, case, fmt)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
@pytest.mark.parametrize("case", ["orders-v2", "sessions"])
def test_text_written_in_chunks_keeps_its_dirt(tmp_path, monkeypatch, case, fmt):
    """Duplicates copy lines of earlier chunks; fixes number each kind's rows across chunks."""
    monkeypatch.setattr(datagen, "TEXT_CHUNK_ROWS", 700)
    _check_dirt(tmp_path, case, fmt)


def _check_dirt(tmp_path: Path, case: str, fmt: str) -> None:
    contract, expected = _contract(case), EXPECTED[case.split("-")[0]]
    sample = _sample(case, 4000, 0.3)
    path = _write(case, fmt, sample, tmp_path)
    records = _read(fmt, path)
    lines = path.read_bytes().split(b"\n")[(1 if fmt == "csv" else 0) :]
    assert set(sample.dirty) == set(expected)
    for kind, rows in sample.dirty.items():
        assert len(rows) > 20, kind
        typed_format_text_kind = fmt in ("avro", "parquet") and kind in _text_kinds(case)
        want = None if typed_format_text_kind else expected[kind]
        got = {_first_failure(records[i], contract) for i in rows}
        assert got == {want}, f"{kind}: {got}"
    for kind, sources in sample.sources.items():
        for row, src in zip(sample.dirty[kind], sources):
            assert src < row and records[src] is not None
            if kind == "duplicate":
                assert records[row] == records[src]
                if fmt in ("jsonl", "csv"):
                    assert lines[row] == lines[src]  # a redelivery: the same bytes
            else:  # the same event sent again, a few seconds later
                later = {**records[row], "ts": records[src]["ts"]}
                assert later == records[src]
                seconds = (_typed([records[row]["ts"]], {"name": "ts", "type": "timestamp"})[0].as_py() -
                           _typed([records[src]["ts"]], {"name": "ts", "type": "timestamp"})[0].as_py()).total_seconds()  # fmt: skip
                assert 1 <= seconds < 5


def test_no_dirt_at_fraction_zero():
    for case in CASES:
        sample = _sample(case, 2000, 0.0)
        assert all(len(rows) == 0 for rows in sample.dirty.values())


def test_orders_contracts_v2_reads_v1():
    """v2 is v1 evolved: a new optional channel with a default, quantity widened, coupon renamed."""
    v1, v2 = (_contract(c) for c in ("orders-v1", "orders-v2"))
    old, new = ({f["name"]: f for f in c["fields"]} for c in (v1, v2))
    assert (v1["version"], v2["version"]) == (1, 2)
    assert (old["quantity"]["type"], new["quantity"]["type"]) == ("int", "long")
    assert "coupon" not in new and new["promo_code"]["aliases"] == ["coupon"]
    assert new["channel"]["default"] in new["channel"]["values"] and not new["channel"].get("required")
    assert "channel" not in old
    # A v1 record reads under v2 (coupon through its alias, channel defaulted).
    sample = _sample("orders-v1", 2000, 0.0)
    with_coupon = [r for r in sample.table.to_pylist() if r["coupon"]]
    assert with_coupon and all(_first_failure(r, v2) is None for r in with_coupon[:50])


def test_orders_v2_files_carry_promo_code_and_channel_and_their_own_orders(tmp_path):
    v1 = _read("jsonl", _run(tmp_path / "v1", "orders-v1", "jsonl", "--rows", "3000", "--dirty-fraction", "0")[0])
    v2 = _read("jsonl", _run(tmp_path / "v2", "orders-v2", "jsonl", "--rows", "3000", "--dirty-fraction", "0")[0])
    keys1, keys2 = set().union(*v1), set().union(*v2)
    assert {"coupon"} <= keys1 and not {"promo_code", "channel"} & keys1
    assert {"promo_code", "channel"} <= keys2 and "coupon" not in keys2
    assert not {r["order_id"] for r in v1} & {r["order_id"] for r in v2}
    assert {r["channel"] for r in v2 if "channel" in r} == set(_contract("orders-v2")["fields"][-1]["values"])


# -- the shape of the data -------------------------------------------------------------------


@pytest.mark.parametrize("case", ["orders-v1", "orders-v2"])
def test_order_versions_move_forward(case):
    sample = _sample(case, 20000, 0.1, days=3)
    dirty = np.concatenate(list(sample.dirty.values()))
    rows = sample.table.take(pa.array(np.setdiff1d(np.arange(20000), dirty))).to_pylist()
    versions = defaultdict(list)
    for r in rows:
        versions[r["order_id"]].append(r)
    rank = {"placed": 0, "paid": 1, "shipped": 2, "delivered": 3, "returned": 4, "cancelled": 5}
    counts = []
    for order_id, vs in versions.items():
        vs.sort(key=lambda r: r["updated_at"])
        times = [r["updated_at"] for r in vs]
        statuses = [r["status"] for r in vs]
        assert all(a < b for a, b in zip(times, times[1:])), order_id
        assert all(rank[a] < rank[b] for a, b in zip(statuses, statuses[1:])), (order_id, statuses)
        assert "cancelled" not in statuses or set(statuses) <= {"placed", "paid", "cancelled"}, statuses
        assert len({(r["created_at"], r["customer_id"], r["amount"]) for r in vs}) == 1
        assert vs[0]["created_at"] <= times[0]
        counts.append(len(vs))
    assert max(counts) >= 4 and np.mean(counts) > 1.5
    updated = [r["updated_at"] for r in rows]
    assert BASE <= min(updated) and max(updated) < BASE + timedelta(days=3)
    assert max(updated) > BASE + timedelta(days=2)
    # Versions arrive roughly in updated_at order, some overtaking an older one.
    arrival = {}
    overtaken = sum(1 for r in rows if arrival.setdefault(r["order_id"], r["updated_at"]) > r["updated_at"])
    assert 0 < overtaken < len(rows) // 10


def test_sessions_are_bursts_apart_by_more_than_30_minutes():
    sample = _sample("sessions", 20000, 0.0, days=2)
    table = sample.table
    users = table.column("user_id").to_pylist()
    times = table.column("ts").to_pylist()
    assert times == sorted(times)
    by_user = defaultdict(list)
    for i, user in enumerate(users):
        by_user[user].append(i)
    inside, between = [], []
    for rows in by_user.values():
        for a, b in zip(rows, rows[1:]):
            (inside if sample.group[a] == sample.group[b] else between).append(times[b] - times[a])
    half_hour = timedelta(minutes=30)
    assert inside and between
    assert max(inside) < half_hour < min(between)
    # A session's events are consecutive in its user's time: gaps alone find the sessions.
    assert len(between) + len(by_user) == len(np.unique(sample.group))
    assert BASE <= times[0] and times[-1] < BASE + timedelta(days=2)


def test_sessions_funnel():
    sample = _sample("sessions", 20000, 0.0)
    rows = sample.table.to_pylist()
    sessions = defaultdict(list)
    for row, group in zip(rows, sample.group):
        sessions[group].append(row)
    assert all(events[0]["action"] == "view" for events in sessions.values())
    converted = [events for events in sessions.values() if events[-1]["action"] == "purchase"]
    assert 0.05 < len(converted) / len(sessions) < 0.4
    for events in converted:
        assert [e["action"] for e in events[-3:]] == ["add_to_cart", "checkout", "purchase"]
    for row in rows:
        assert (row["amount"] is not None) == (row["action"] == "purchase")
        assert row["amount"] is None or (row["amount"] > 0 and round(row["amount"], 2) == row["amount"])
    devices = defaultdict(set)
    for events in sessions.values():
        devices[events[0]["user_id"]].add(events[0]["device"].lower())
        assert len({e["device"].lower() for e in events}) == 1
    assert {d for ds in devices.values() for d in ds} == {"web", "ios", "android"}
