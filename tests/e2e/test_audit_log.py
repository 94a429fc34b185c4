"""The audit log through the CLI: a run, a redrive, a clean, a clean refused and a failed run
each append their entries; verify passes, and fails with one error line once a byte is edited."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from beam_pipelines import lease
from tests.e2e.helpers import ROOT, _env, datagen, one_line_error, report

WEBHOOK = "http://127.0.0.1:9/hooks/T0/B0/SECRETTOKEN"


def run(module: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env={**_env(), **(env or {})},
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def audit(*args: str) -> subprocess.CompletedProcess:
    return run("beam_pipelines.audit_log", *args)


def entries(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_every_command_appends_and_an_edited_byte_fails_verify(tmp_path):
    data = datagen(tmp_path / "in", "jsonl", rows=1000, dirty=0.2)
    out = tmp_path / "out"
    log = out / "_audit" / "log.jsonl"
    first = run("beam_pipelines.main", "--pipeline=events", f"--input={data}/*.jsonl", f"--output={out}",
                "--audit_user=alice", f"--alert_webhook={WEBHOOK}")  # fmt: skip
    assert first.returncode == 0, first.stderr
    redriven = run("beam_pipelines.redrive", f"--dlq={out}/dlq", f"--output={out}", "--reason=invalid_value",
                   env={"BEAM_PIPELINES_AUDIT_USER": "svc-redrive"})  # fmt: skip
    assert redriven.returncode == 0, redriven.stderr
    dead = out / "_staging" / "20260101T000000Z-deadbeef"  # what a killed run leaves
    dead.mkdir(parents=True)
    (dead / "part-00000.parquet").write_bytes(b"x" * 1000)
    dry = run("beam_pipelines.clean", f"--output={out}", "--dry_run")
    assert dry.returncode == 0 and dead.exists(), dry.stderr
    cleaned = run("beam_pipelines.clean", f"--output={out}")
    assert cleaned.returncode == 0 and not dead.exists(), cleaned.stderr
    with lease.acquire(str(out), "another-run"):
        assert "is in use by run another-run" in one_line_error(run("beam_pipelines.clean", f"--output={out}"), 1)
    failed = run("beam_pipelines.main", "--pipeline=events", f"--input={tmp_path}/none/*.jsonl", f"--output={out}")
    assert "no file matches" in one_line_error(failed, 1)

    found = entries(log)
    assert [(e["seq"], e["action"], e["outcome"]) for e in found] == [
        (1, "run", "started"),
        (2, "run", "published"),
        (3, "redrive", "started"),
        (4, "redrive", "published"),
        (5, "clean", "done"),  # the dry run wrote no entry
        (6, "clean", "refused"),
        (7, "run", "started"),
        (8, "run", "failed"),
    ]
    users = [e["who"]["user"] for e in found]
    assert users[:2] == ["alice", "alice"] and users[2:4] == ["svc-redrive", "svc-redrive"]
    assert all(e["who"]["os_user"] and e["who"]["host"] for e in found)
    run_id = found[0]["what"]["run_id"]
    assert found[0]["what"]["input"] == f"{data}/*.jsonl" and found[0]["what"]["output"] == str(out)
    assert "--alert_webhook=***" in found[0]["what"]["args"] and "args" not in found[1]["what"]
    published = found[1]["what"]
    assert published["run_id"] == run_id and published["published"]["curated_rows"] > 0
    redrive_counts = report(out)["counts"]
    assert found[3]["what"]["counts"] == redrive_counts  # the redrive's publish holds the report's counts now
    assert found[3]["what"]["redrive"]["selected"] == report(out)["redrive"]["selected"] > 0
    assert found[4]["what"]["removed"] == {dead.name: 1000}
    assert "another-run" in found[5]["what"]["error"]
    assert found[7]["what"]["error"].startswith("no file matches --input=")
    assert b"SECRETTOKEN" not in log.read_bytes()

    ok = audit("verify", f"--output={out}")
    assert ok.returncode == 0 and ok.stderr == "", ok.stderr
    head = found[-1]["hash"]
    assert ok.stdout == f"audit log OK: 8 entries, last seq 8 at {found[-1]['time']}, head {head}\n"
    shown = audit("show", f"--output={out}").stdout.splitlines()
    assert len(shown) == 8 and "alice" in shown[0] and "redrive published" in shown[3] and "clean refused" in shown[5]

    # One byte of the published entry's counts edited: named by its line, exit 1.
    text = log.read_bytes()
    at = text.index(b'"curated_rows":') + len(b'"curated_rows":')
    digit = text[at : at + 1]
    log.write_bytes(text[:at] + (b"1" if digit != b"1" else b"2") + text[at + 1 :])
    line = one_line_error(audit("verify", f"--output={out}"), 1)
    assert line == f"error: audit log {log}: line 2 (seq 2): its hash does not match its content: it was edited"
    # The last two entries cut off: a valid chain, but not the head kept from before.
    log.write_bytes(b"".join(text.splitlines(keepends=True)[:-2]))
    assert audit("verify", f"--output={out}").returncode == 0
    line = one_line_error(audit("verify", f"--log={log}", f"--head={head}"), 1)
    assert f"the recorded head {head} is not in the log" in line


def test_audit_log_elsewhere(tmp_path):
    data = datagen(tmp_path / "in", "jsonl", rows=200, dirty=0.0)
    out, log = tmp_path / "out", tmp_path / "governance" / "beam.jsonl"
    for name in ("a", "b"):
        proc = run("beam_pipelines.main", f"--input={data}/*.jsonl", f"--output={out}/{name}", f"--audit_log={log}")
        assert proc.returncode == 0, proc.stderr
    assert not (out / "a" / "_audit").exists()
    found = entries(log)
    assert [(e["what"]["output"], e["outcome"]) for e in found] == [
        (f"{out}/a", "started"),
        (f"{out}/a", "published"),
        (f"{out}/b", "started"),
        (f"{out}/b", "published"),
    ]
    assert audit("verify", f"--log={log}").stdout.startswith("audit log OK: 4 entries")
