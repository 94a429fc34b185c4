"""PII actions per sink reach a PostgreSQL table: the signups example with an UpsertPostgres step of
its own actions (email masked, the name as a token, the address encrypted), run against a real
server; the table holds no clear-text value of a protected field, and a key column may only be
kept or tokenised."""

from __future__ import annotations

import base64
import io
import re
import secrets
import shutil
from datetime import datetime, timezone

import psycopg
import pytest

from beam_pipelines.main import run
from beam_pipelines.pii import keys
from beam_pipelines.spec.yamlsrc import SpecError
from tests.e2e.helpers import ROOT
from tests.e2e.test_pii import INPUT, clear_values

EXAMPLE = ROOT / "examples" / "pii"
STEP = """    - name: WriteCustomers
      type: UpsertPostgres
      input: Curated
      config: {{dsn: "{dsn}", table: {table}, keys: [{key}]}}
"""


def _spec(tmp_path, table: str, key: str, actions: dict, dsn: str = "postgresql://x@h/db"):
    """The example with ``actions`` (field -> its line's mapping) in place of its own, and the step."""
    shutil.copytree(EXAMPLE / "schemas", tmp_path / "schemas")
    doc = (EXAMPLE / "signups.yaml").read_text()
    for name, mapping in actions.items():
        doc, n = re.subn(rf"(?m)^      {name}: .*$", f"      {name}: {mapping}", doc)
        assert n == 1
    doc = doc.rstrip("\n") + "\n" + STEP.format(table=table, key=key, dsn=dsn)
    (tmp_path / "signups.yaml").write_text(doc)
    return tmp_path / "signups.yaml"


def _keys(tmp_path, monkeypatch):
    for env, name in ((keys.MASTER_ENV, "m.key"), (keys.HMAC_ENV, "h.key")):
        (tmp_path / name).write_text(base64.b64encode(secrets.token_bytes(32)).decode())
        monkeypatch.setenv(env, f"file:{tmp_path / name}")


def test_a_postgres_sink_gets_its_own_actions(pg_dsn, tmp_path, monkeypatch):
    _keys(tmp_path, monkeypatch)
    table = f"signups_{secrets.token_hex(4)}"
    actions = {"email": "{silver: token, curated: token, gold: drop, profile: token, WriteCustomers: mask}",
               "full_name": "{silver: encrypt, default: mask, WriteCustomers: token}",
               "address": "{silver: encrypt, default: drop, WriteCustomers: encrypt}"}  # fmt: skip
    spec = _spec(tmp_path, table, "signup_id", actions, pg_dsn)  # a batch run takes the DSN from its spec
    argv = [f"--pipeline={spec}", f"--input={INPUT}", f"--output={tmp_path / 'out'}", "--history=none",
            "--lineage=none"]  # fmt: skip
    run(argv, clock=lambda: datetime(2026, 5, 4, 6, tzinfo=timezone.utc), out=io.StringIO())
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute(
            f"SELECT signup_id, email, full_name, address, phone, note FROM {table} ORDER BY 1"
        ).fetchall()
    assert len(rows) == 24
    assert all(re.fullmatch(r"[^@]\*\*\*@example\.org", r[1]) for r in rows)
    assert all(r[2].startswith("tok_") and r[3].startswith("enc1.") for r in rows)
    assert all(r[4].startswith("***") and r[5] is None for r in rows)  # phone and note: their defaults
    text = repr(rows)
    assert not [v for v in clear_values() if v in text]


def test_a_postgres_key_column_is_kept_or_tokenised_only(tmp_path, monkeypatch):
    _keys(tmp_path, monkeypatch)
    spec = _spec(tmp_path, "t", "email", {"email": "{silver: token, WriteCustomers: mask}"})
    argv = [f"--pipeline={spec}", f"--input={INPUT}", f"--output={tmp_path / 'out'}"]
    with pytest.raises(SpecError, match="WriteCustomers upserts on 'email': keep it or token it"):
        run(argv, clock=lambda: datetime(2026, 5, 4, 6, tzinfo=timezone.utc), out=io.StringIO())
