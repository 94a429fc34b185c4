"""A canary secret in every place a secret goes (the PostgreSQL password in a source's dsn_file and
a sink's --pg_dsn, the HTTP API's bearer token, the S3 secret key, PGPASSWORD), representative runs (batch, HTTP, S3, streaming CDC) through
the CLI, and then a scan: stdout and stderr, every file under the outputs (report, report.html,
summary, lineage events, profiles, dead letters, _audit), the job graph of a dry run with its
pickled payloads opened (base64, bz2, zlib), and the Flex Template metadata. The canary must appear
nowhere. Services are real (PostgreSQL, moto S3, the HTTP stand-in); README: Security."""

from __future__ import annotations

import base64
import binascii
import bz2
import re
import uuid
import zlib
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.e2e.helpers import ROOT, cli, datagen, report
from tests.http_api import FakeApi, make_records
from tests.integration import test_streaming_cdc

cdc_db = test_streaming_cdc.cdc_db  # a database of its own for the CDC example
CANARY = "cnry" + uuid.uuid4().hex[:16]
_B64 = re.compile(rb"[A-Za-z0-9+/=_-]{24,}")


def opened(data: bytes, depth: int = 0) -> list[bytes]:
    """``data`` and whatever base64 / bz2 / zlib payloads inside it decode to (pickled DoFns in a
    job graph are bz2-compressed and base64-encoded: a plain scan would miss a secret in one)."""
    found = [data]
    if depth > 3:
        return found
    for m in _B64.finditer(data):
        chunk = m.group(0)
        for decode in (base64.b64decode, base64.urlsafe_b64decode):
            try:
                raw = decode(chunk + b"=" * (-len(chunk) % 4))
            except (binascii.Error, ValueError):
                continue
            for unpack in (zlib.decompress, bz2.decompress):  # Beam's pickler compresses with bz2
                try:
                    raw = unpack(raw)
                except (zlib.error, OSError, ValueError):
                    continue
            found += opened(raw, depth + 1)
    return found


def assert_no_canary(*, texts: tuple[str, ...] = (), roots: tuple[Path, ...] = (), graphs: tuple[Path, ...] = ()):
    for t in texts:
        assert CANARY not in t, t[max(0, t.find(CANARY) - 200) : t.find(CANARY) + 50]
    files = [f for r in roots for f in ([r] if r.is_file() else r.rglob("*")) if f.is_file()]
    for f in files:
        assert CANARY.encode() not in f.read_bytes(), f
    for g in graphs:
        assert g.is_file() and g.stat().st_size > 1000, g
        for piece in opened(g.read_bytes()):
            assert CANARY.encode() not in piece, g


def with_password(dsn: str) -> str:
    return dsn.replace("postgresql://bp@", f"postgresql://bp:{CANARY}@")  # trust auth: any password connects


def test_postgres_source_and_upsert_sinks(pg_dsn, tmp_path, monkeypatch):
    from tests.integration.test_postgres_source import new_table

    table = new_table(pg_dsn, 300)
    sinks = ["rev_" + uuid.uuid4().hex[:8] for _ in range(3)]
    (tmp_path / "pg.dsn").write_text(with_password(pg_dsn) + "\n")
    monkeypatch.setenv("PG_SINK_DSN", with_password(pg_dsn))
    monkeypatch.setenv("PGPASSWORD", CANARY)  # libpq's own place for a password that is not in the DSN
    text = (ROOT / "examples" / "postgres" / "orders.yaml").read_text()
    text = text.replace("table: order_versions", f"table: {table}").replace(
        "dsn_env: PG_SOURCE_DSN", "dsn_file: pg.dsn"
    )
    keys = "keys: [window_start, region, status]"
    for i, place in enumerate(("dsn_env: PG_SINK_DSN", "dsn_file: pg.dsn", f"dsn: '{pg_dsn}'")):
        text += f"    - {{name: Upsert{i}, type: UpsertPostgres, input: DailyRevenue, config: {{{place}, table: {sinks[i]}, {keys}}}}}\n"
    spec = tmp_path / "orders_pg.yaml"
    spec.write_text(text)
    out, graph = tmp_path / "out", tmp_path / "graph.json"
    flags = (f"--pipeline={spec}", "--log_level=DEBUG")
    proc = cli(*flags, f"--output={out}")
    assert proc.returncode == 0, proc.stderr
    dry = cli(*flags, f"--output={tmp_path / 'dry'}", "--dry_run", f"--dry_run_out={graph}")
    assert dry.returncode == 0, dry.stderr
    assert report(out)["counts"]["read"] == 300
    with psycopg.connect(pg_dsn) as conn:
        for sink in sinks:
            assert conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(sink))).fetchone()[0] > 0
    assert (out / "_audit").is_dir() and (out / "_lineage").is_dir() and (out / "_run" / "report.html").is_file()
    assert_no_canary(texts=(proc.stdout, proc.stderr, dry.stdout, dry.stderr), roots=(out, tmp_path / "dry"),
                     graphs=(graph,))  # fmt: skip
    # The scan finds a secret inside the graph's pickled payloads: a password in the sink's dsn
    # would have been there, so the spec refuses it.
    spec.write_text(text.replace(f"dsn: '{pg_dsn}'", f"dsn: '{with_password(pg_dsn)}'"))
    refused = cli(*flags, f"--output={tmp_path / 'refused'}", "--dry_run", f"--dry_run_out={tmp_path / 'g2.json'}")
    assert refused.returncode == 2, refused.stderr
    assert (
        "config.dsn: holds a password, which would travel in the job graph" in refused.stderr.strip().splitlines()[-1]
    )
    assert CANARY not in refused.stderr + refused.stdout


def test_http_source_bearer_token(tmp_path, monkeypatch):
    from tests.e2e.test_http_source import spec_for

    monkeypatch.setenv("ITEMS_API_TOKEN", CANARY)
    with FakeApi(make_records(200), per_page=50, token=CANARY) as api:
        api.fail(2, "500")
        spec, out, graph = spec_for(tmp_path, api.url), tmp_path / "out", tmp_path / "graph.json"
        proc = cli(f"--pipeline={spec}", f"--output={out}", "--log_level=DEBUG")
        assert proc.returncode == 0, proc.stderr
        dry = cli(f"--pipeline={spec}", f"--output={tmp_path / 'dry'}", "--dry_run", f"--dry_run_out={graph}")
        assert dry.returncode == 0, dry.stderr
        # A refused credential: the one error line does not echo it either.
        monkeypatch.setenv("ITEMS_API_TOKEN", CANARY + "-wrong")
        refused = cli(f"--pipeline={spec}", f"--output={tmp_path / 'refused'}")
    assert refused.returncode != 0
    assert report(out)["counts"]["read"] == 200
    assert_no_canary(texts=(proc.stdout, proc.stderr, dry.stdout, dry.stderr, refused.stdout, refused.stderr),
                     roots=(out, tmp_path / "dry", tmp_path / "refused"), graphs=(graph,))  # fmt: skip


@pytest.fixture(scope="module")
def s3_endpoint():
    from tests.integration.test_s3 import _free_port, _script

    port = _free_port()
    proc = _script("start", port)
    if proc.returncode != 0:
        _script("stop", port)
        pytest.fail(f"cannot start the S3 server (scripts/s3.sh start): {proc.stderr.strip() or proc.stdout}")
    yield f"http://127.0.0.1:{port}"
    _script("stop", port)
    (ROOT / ".cache" / "s3" / f"moto-{port}.log").unlink(missing_ok=True)


def test_s3_secret_key(s3_endpoint, tmp_path, monkeypatch):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="testing", aws_secret_access_key=CANARY,
                      region_name="us-east-1")  # fmt: skip
    s3.create_bucket(Bucket="canary")
    data = datagen(tmp_path / "in", "jsonl", rows=500, dirty=0.2)
    for path in sorted(data.iterdir()):
        s3.upload_file(str(path), "canary", f"in/{path.name}")
    flags = ("--pipeline=events", "--input=s3://canary/in/*.jsonl", f"--s3_endpoint_url={s3_endpoint}",
             "--s3_access_key_id=testing", f"--s3_secret_access_key={CANARY}", "--s3_region_name=us-east-1",
             "--log_level=DEBUG")  # fmt: skip
    proc = cli(*flags, "--output=s3://canary/out")
    assert proc.returncode == 0, proc.stderr
    graph = tmp_path / "graph.json"
    dry = cli(*flags, "--output=s3://canary/dry", "--dry_run", f"--dry_run_out={graph}")
    assert dry.returncode == 0, dry.stderr
    local = tmp_path / "bucket"
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="canary", Prefix="out/")
            for o in page.get("Contents", [])]  # fmt: skip
    assert any(k.endswith("report.json") for k in keys) and any("_audit" in k for k in keys)
    for k in keys:
        (local / k).parent.mkdir(parents=True, exist_ok=True)
        (local / k).write_bytes(s3.get_object(Bucket="canary", Key=k)["Body"].read())
    assert_no_canary(texts=(proc.stdout, proc.stderr, dry.stdout, dry.stderr), roots=(local,), graphs=(graph,))


def test_the_flex_template_metadata_names_no_secret_default():
    for f in (ROOT / "templates").rglob("*.json"):
        text = f.read_text()
        assert CANARY not in text
        # Parameters that take secrets carry no default value in the metadata.
        assert not re.search(r'"name":\s*"[^"]*(password|secret|token)[^"]*"[^}]*"defaultValue"', text, re.I), f


@pytest.mark.timeout(600)
def test_streaming_cdc(prism_binary, cdc_db, tmp_path, monkeypatch):
    from tests.integration.test_streaming_cdc import INSERTS, SPEC, _sql, _table

    monkeypatch.setenv("PG_SOURCE_DSN", with_password(cdc_db))
    monkeypatch.setenv("PGPASSWORD", CANARY)  # the mirror's password: not in --pg_dsn (see Security)
    out, graph = tmp_path / "out", tmp_path / "graph.json"
    flags = (f"--pipeline={SPEC}", "--streaming", "--runner=PrismRunner", f"--pg_dsn={cdc_db}", "--kafka_stop_at_end",
             "--log_level=DEBUG")  # fmt: skip
    first = cli(*flags, f"--output={out}")  # creates the slot
    assert first.returncode == 0, first.stderr
    _sql(cdc_db, INSERTS.format(lo=1, hi=200))
    second = cli(*flags, f"--output={out}")
    assert second.returncode == 0, second.stderr
    assert len(_table(cdc_db, "orders_mirror")) == 200
    dry = cli(*flags, f"--output={tmp_path / 'dry'}", "--dry_run", f"--dry_run_out={graph}")
    assert dry.returncode == 0, dry.stderr
    assert_no_canary(texts=(first.stdout, first.stderr, second.stdout, second.stderr, dry.stdout, dry.stderr),
                     roots=(out, tmp_path / "dry"), graphs=(graph,))  # fmt: skip
