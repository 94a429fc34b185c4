"""The PII example (examples/pii/signups.yaml) end to end on DirectRunner, with bronze, silver and
gold Delta tables, the parquet lake, dead letters, the report, the profile and OpenLineage events.

Every file under the output is then scanned (parquet decoded, its footer too; JSON, HTML, logs
as text) for every clear-text value of a protected field of the input: none is found. A run of
the same spec with every action ``keep`` is scanned the same way and the values are found in each
kind of file, so the scan would see a leak. The encrypted values decrypt back to the input
through the command (which writes an audit entry); tokens are the same in two runs, so tables of
different runs join on them; a run without its key stops with one error line.
"""

from __future__ import annotations

import base64
import io
import json
import re
import secrets
import shutil
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from beam_pipelines.errors import RunError
from beam_pipelines.lakehouse import tables
from beam_pipelines.main import run
from beam_pipelines.pii import keys
from beam_pipelines.spec.yamlsrc import load
from tests.e2e.helpers import ROOT, cli, run_module

UTC = timezone.utc
EXAMPLE = ROOT / "examples" / "pii"
INPUT = EXAMPLE / "signups.jsonl"
PROTECTED = ("email", "full_name", "phone", "address", "ip", "note")
DAY1, DAY2 = datetime(2026, 5, 4, 6, tzinfo=UTC), datetime(2026, 5, 5, 6, tzinfo=UTC)


def clear_values() -> set[str]:
    """Every protected field's value in the input, the malformed line's included."""
    found = set()
    for line in INPUT.read_text().splitlines():
        for name in PROTECTED:
            m = re.search(rf'"{name}": "([^"]+)"', line)
            if m:
                found.add(m.group(1))
    return found


def _texts(path: Path) -> list[str]:
    texts = [path.read_bytes().decode("utf-8", "replace")]
    if path.suffix == ".parquet":
        texts.append(json.dumps(pq.read_table(path, partitioning=None).to_pylist(), default=str))
        texts.append(json.dumps(pq.ParquetFile(path).metadata.to_dict(), default=str))
    return texts


def scan(root: Path, values: set[str]) -> dict[str, set[str]]:
    """File (relative to ``root``) -> the values found in it."""
    hits: dict[str, set[str]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        for text in _texts(path):
            for v in values:
                if v in text:
                    hits.setdefault(str(path.relative_to(root)), set()).add(v)
    return hits


def _kind(relative: str) -> str:
    return relative.split("/")[0] if not relative.startswith("lakehouse/") else "/".join(relative.split("/")[:2])


def _run(spec: Path, out: Path, when: datetime) -> dict:
    # The default metrics history (<output>/_history) and a lineage file: both scanned too.
    argv = [f"--pipeline={spec}", f"--input={INPUT}", f"--output={out}", f"--lineage={out}/_lineage/events.jsonl"]
    return run(argv, clock=lambda: when, out=io.StringIO())


def _key(path: Path) -> str:
    path.write_text(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
    return f"file:{path}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pii")
    refs = {keys.MASTER_ENV: _key(root / "master.key"), keys.HMAC_ENV: _key(root / "hmac.key")}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in refs.items():
            mp.setenv(k, v)
        first = _run(EXAMPLE / "signups.yaml", root / "out1", DAY1)
        second = _run(EXAMPLE / "signups.yaml", root / "out2", DAY2)
        # Through the command line at INFO, for its own output and logs.
        logged = cli(f"--pipeline={EXAMPLE / 'signups.yaml'}", f"--input={INPUT}", f"--output={root / 'out_cli'}",
                     "--log_level=INFO")  # fmt: skip
        assert logged.returncode == 0, logged.stderr
        (root / "out_cli" / "_cli").mkdir()
        (root / "out_cli" / "_cli" / "stdout.log").write_text(logged.stdout)
        (root / "out_cli" / "_cli" / "stderr.log").write_text(logged.stderr)
        # The same spec with every action keep: the scan's control.
        plain = root / "plain"
        shutil.copytree(EXAMPLE / "schemas", plain / "schemas")
        doc = (EXAMPLE / "signups.yaml").read_text()
        spec = load(str(EXAMPLE / "signups.yaml"))
        keep_all = {k: dict.fromkeys(["default", "bronze", "received", "dead_letters", "profile"], "keep")
                    for k in spec["pipeline"]["pii"]["actions"]}  # fmt: skip
        doc = re.sub(r"  pii:\n(    .*\n)+", "  pii:\n    actions: " + json.dumps(keep_all) + "\n", doc)
        (plain / "signups.yaml").write_text(doc)
        control = _run(plain / "signups.yaml", root / "out_plain", DAY1)
        # The same spec whose email expectation stops the publish: the staging is kept.
        strict = root / "strict"
        shutil.copytree(EXAMPLE / "schemas", strict / "schemas")
        (strict / "signups.yaml").write_text((EXAMPLE / "signups.yaml").read_text().replace(
            "severity: warn, action: quarantine", "severity: error"))  # fmt: skip
        with pytest.raises(RunError, match="audit failed"):
            _run(strict / "signups.yaml", root / "out_failed", DAY1)
    return {"root": root, "refs": refs, "first": first, "second": second, "control": control}


def test_no_clear_text_value_of_a_protected_field_is_in_any_file_of_the_output(runs):
    out = runs["root"] / "out1"
    s = runs["first"]
    c = s["counts"]
    assert s["tables_match"] and c["dead_lettered"] == 4 and c["curated"] == 24
    files = [p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()]
    kinds = {_kind(f) for f in files}
    # Every place the run writes is there to be scanned.
    assert {"curated", "aggregates", "dlq", "_run", "_lineage", "_history", "_audit", "_keys", "lakehouse/bronze",
            "lakehouse/silver", "lakehouse/gold"} <= kinds  # fmt: skip
    assert {"_run/report.json", "_run/report.html", "_run/profile.json"} <= set(files)
    values = clear_values()
    assert len(values) > 100
    assert scan(out, values) == {}


def test_nor_in_the_commands_output_and_logs(runs):
    out = runs["root"] / "out_cli"
    assert "signups_pii on DirectRunner" in (out / "_cli" / "stdout.log").read_text()
    assert len((out / "_cli" / "stderr.log").read_text().splitlines()) > 5  # INFO lines: Beam's and the run's
    assert scan(out, clear_values()) == {}


def test_a_run_that_fails_its_audit_keeps_a_staging_without_clear_text(runs):
    out = runs["root"] / "out_failed"
    staged = [p.relative_to(out).as_posix() for p in (out / "_staging").rglob("*") if p.is_file()]
    assert any(f.endswith("_run/report.html") for f in staged) and any("/dlq/" in f for f in staged)
    assert not any("/_scratch/" in f for f in staged)
    assert scan(out, clear_values()) == {}


def test_the_scan_finds_the_values_when_the_policy_keeps_them(runs):
    hits = scan(runs["root"] / "out_plain", clear_values())
    kinds = {_kind(f) for f in hits}
    assert {"curated", "dlq", "_run", "lakehouse/bronze", "lakehouse/silver"} <= kinds
    assert {"_run/report.html", "_run/profile.json"} <= set(hits)  # top values and samples in the clear


def _decrypt(runs, out: Path, path: str, *extra: str) -> list[dict]:
    target = runs["root"] / f"clear-{path.replace('/', '_')}.jsonl"
    proc = run_module("beam_pipelines.pii", "decrypt", f"--output={out}", f"--path={path}", f"--to={target}",
                      f"--master_key={runs['refs'][keys.MASTER_ENV]}", "--audit_user=dpo@example.org", *extra)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in target.read_text().splitlines()]


def test_decrypt_gives_back_the_input_and_is_recorded_in_the_audit_log(runs):
    out = runs["root"] / "out1"
    latest = {}
    for line in INPUT.read_text().splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if r.get("country") != "xx" and "@" in r.get("email", "") and " " not in r["email"]:
            if r["signup_id"] not in latest or r["updated_at"] >= latest[r["signup_id"]]["updated_at"]:
                latest[r["signup_id"]] = r
    silver = _decrypt(runs, out, "lakehouse/silver", "--columns=full_name,phone,address")
    assert {r["signup_id"]: (r["full_name"], r["phone"], r["address"]) for r in silver} == {
        k: (r["full_name"], r["phone"], r["address"]) for k, r in latest.items()
    }
    bronze = _decrypt(runs, out, "lakehouse/bronze", "--columns=record")
    assert Counter(r["record"] for r in bronze) == Counter(line for line in INPUT.read_text().splitlines() if line)
    dead = _decrypt(runs, out, "dlq")
    assert sorted(r["raw"] for r in dead) == sorted(
        line for line in INPUT.read_text().splitlines() if "s0901" in line or "s0902" in line or "s0903" in line
        or "s0904" in line
    )  # fmt: skip
    assert any("yusuf at example dot org" in r["error"] for r in dead)
    log = [json.loads(line) for line in (out / "_audit" / "log.jsonl").read_text().splitlines()]
    decrypts = [e for e in log if e["action"] == "decrypt" and e["outcome"] == "done"]
    assert [e["what"]["path"] for e in decrypts] == ["lakehouse/silver", "lakehouse/bronze", "dlq"]
    assert decrypts[0]["who"]["user"] == "dpo@example.org" and decrypts[0]["what"]["rows"] == 24
    assert run_module("beam_pipelines.audit_log", "verify", f"--output={out}").returncode == 0


def test_tokens_are_the_same_in_two_runs_so_tables_of_different_runs_join_on_them(runs):
    one, two = (
        tables.read(tables.open_table(str(runs["root"] / o / "lakehouse" / "silver"))) for o in ("out1", "out2")
    )
    by_id = [dict(zip(t.column("signup_id").to_pylist(), t.column("email").to_pylist())) for t in (one, two)]
    assert by_id[0] == by_id[1] and all(v.startswith("tok_") for v in by_id[0].values())
    # The curated lake of run 1 joins run 2's silver table on the email token, row for row.
    curated = pq.read_table(runs["root"] / "out1" / "curated", partitioning=None).select(["signup_id", "email"])
    joined = curated.join(two.select(["email", "signup_id"]).rename_columns(["email", "id2"]), "email")
    assert joined.num_rows == 24 and joined.column("signup_id").to_pylist() == joined.column("id2").to_pylist()
    # Encrypted values are not: each run has its own data keys and every value its own nonce.
    names = [dict(zip(t.column("signup_id").to_pylist(), t.column("full_name").to_pylist())) for t in (one, two)]
    assert all(names[0][k] != names[1][k] for k in names[0])
    assert len({json.loads(p.read_text())["key_id"] for o in ("out1", "out2")
                for p in (runs["root"] / o / "_keys").glob("*.json")}) == 6  # fmt: skip


def test_gold_and_the_profile_hold_no_personal_data(runs):
    out = runs["root"] / "out1"
    gold = tables.read(tables.open_table(str(out / "lakehouse" / "gold")))
    assert set(gold.column_names) >= {"country", "plan", "signups", "customers"}
    profile = json.loads((out / "_run" / "profile.json").read_text())["columns"]
    assert all(v["value"].startswith("tok_") for v in profile["email"]["top_values"])
    assert profile["note"]["nulls"] == 24 and profile["note"]["top_values"] == []  # dropped
    assert profile["full_name"]["top_values"] and all(
        v["value"].endswith("***") for v in profile["full_name"]["top_values"]
    )
    report = json.loads((out / "_run" / "report.json").read_text())
    shape = next(e for e in report["expectations"] if e["name"] == "email_shape")
    assert shape["samples"] == ["[protected]"]


def test_a_run_without_its_key_stops_with_one_error_line(tmp_path, monkeypatch):
    monkeypatch.delenv(keys.MASTER_ENV, raising=False)
    monkeypatch.setenv(keys.HMAC_ENV, _key(tmp_path / "hmac.key"))
    proc = cli(f"--pipeline={EXAMPLE / 'signups.yaml'}", f"--input={INPUT}", f"--output={tmp_path / 'out'}",
               "--history=none", "--lineage=none")  # fmt: skip
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "no master key" in lines[-1]
    assert not (tmp_path / "out" / "curated").exists()


def test_a_dry_run_proves_the_keys_and_stores_none(tmp_path, monkeypatch):
    args = [f"--pipeline={EXAMPLE / 'signups.yaml'}", f"--input={INPUT}", f"--output={tmp_path / 'out'}", "--dry_run"]
    monkeypatch.setenv(keys.HMAC_ENV, _key(tmp_path / "hmac.key"))
    monkeypatch.delenv(keys.MASTER_ENV, raising=False)
    proc = cli(*args)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].startswith("error: no master key")
    assert "Traceback" not in proc.stderr
    monkeypatch.setenv(keys.MASTER_ENV, _key(tmp_path / "master.key"))
    proc = cli(*args)
    assert proc.returncode == 0, proc.stderr
    assert "nothing was run or submitted" in proc.stdout
    assert (tmp_path / "out" / "_run" / "pipeline.json").exists() and not (tmp_path / "out" / "_keys").exists()


def test_the_decrypt_command_needs_the_key(runs, tmp_path):
    out = runs["root"] / "out1"
    other = _key(tmp_path / "other.key")
    proc = run_module("beam_pipelines.pii", "decrypt", f"--output={out}", "--path=lakehouse/silver",
                      f"--master_key={other}")  # fmt: skip
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1


def test_a_redrive_is_refused_rather_than_mixing_clear_and_protected_values(runs):
    out = runs["root"] / "out1"
    proc = run_module("beam_pipelines.redrive", f"--pipeline={EXAMPLE / 'signups.yaml'}", f"--dlq={out}/dlq",
                      f"--output={out}")  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: signups_pii protects personal data") and proc.stderr.count("\n") == 1
