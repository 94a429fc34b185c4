"""One writer per output, through the CLI: a concurrent run is refused or waits, a killed run's
scratch is removed by the next run, and ``clean`` removes what dead runs left."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.helpers import ROOT, _env, cli, datagen, file_bytes, one_line_error, report, run_module
from transforms import faults

ROWS = 150_000


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return datagen(tmp_path_factory.mktemp("lease") / "in", "jsonl", ROWS, dirty=0.05)


def _flags(data: Path, out: Path, *extra: str) -> list[str]:
    return ["--pipeline=events", f"--input={data}/*.jsonl", f"--output={out}", "--local_workers=1", *extra]


def _start(data: Path, out: Path, *extra: str, fault: str | None = None) -> subprocess.Popen:
    env = _env()
    if fault:
        env[faults.ENV] = fault
    return subprocess.Popen(
        [sys.executable, "-m", "beam_pipelines.main", *_flags(data, out, *extra)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its worker processes are killed with it
    )


def _wait_for(check, what: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert proc.poll() is None, f"the run ended before {what}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.05)


def _holder(out: Path) -> str | None:
    try:
        return json.loads((out / "_lease.json").read_text()).get("run_id")
    except (FileNotFoundError, ValueError):
        return None


def _scratch_bytes(out: Path) -> int:
    root = out / "_staging"
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) if root.exists() else 0


def test_a_second_run_on_the_same_output_is_refused_or_waits(data, tmp_path):
    out, go_on = tmp_path / "out", tmp_path / "go-on"
    first = _start(data, out, fault=f"before_publish=wait:{go_on}")  # holds the lease until go_on exists
    _wait_for(lambda: _holder(out), "lease", first)
    holder = _holder(out)
    refused = cli(*_flags(data, out))
    line = one_line_error(refused, 1)
    assert f"output {out} is in use by run {holder} (pid {first.pid}" in line and "--wait_for_lock" in line
    waiting = _start(data, out, "--wait_for_lock=600")
    said = waiting.stderr.readline()  # blocks until it says what it waits for
    assert f"is in use by run {holder}" in said and "waiting" in said, said
    assert waiting.poll() is None and _holder(out) == holder
    go_on.touch()
    assert first.wait(timeout=600) == 0, first.stderr.read()
    assert waiting.wait(timeout=600) == 0, waiting.stderr.read()
    first_summary = first.stdout.read()
    assert "records in" in first_summary and "records in" in waiting.stdout.read()
    assert report(out)["conservation_ok"] and report(out)["counts"]["read"] == ROWS
    assert json.loads((out / "_run" / "summary.json").read_text())["run_id"] != holder  # the waiting run published last
    assert not (out / "_lease.json").exists() and not (out / "_staging").exists()


def test_a_killed_run_leaves_the_published_outputs_and_the_next_run_removes_its_scratch(data, tmp_path):
    out = tmp_path / "out"
    assert cli(*_flags(data, out)).returncode == 0
    published = {k: v for k, v in file_bytes(out).items() if k.split("/")[0] in ("curated", "aggregates", "dlq")}
    killed = _start(data, out, fault="before_publish=kill")  # all staged, nothing published yet
    assert killed.wait(timeout=600) == -signal.SIGKILL
    left = {p.name for p in (out / "_staging").iterdir()}
    assert len(left) == 1 and _scratch_bytes(out) > 1_000_000
    after_kill = {k: v for k, v in file_bytes(out).items() if k.split("/")[0] in ("curated", "aggregates", "dlq")}
    assert after_kill == published
    # The dead run's lease file is still there, but nobody holds it: the next run takes it over.
    nxt = cli(*_flags(data, out))
    assert nxt.returncode == 0, nxt.stderr
    assert "removed 1 abandoned staging entry of dead runs" in nxt.stdout
    assert not (out / "_staging").exists()
    summary = json.loads((out / "_run" / "summary.json").read_text())
    assert list(summary["scratch"]["abandoned_removed"]) == sorted(left)
    assert summary["scratch"]["staged_bytes"] > 0


def test_clean_lists_and_removes_abandoned_staging(tmp_path):
    out = tmp_path / "out"
    dead = out / "_staging" / "20260101T000000Z-0badf00d" / "shuffle"
    dead.mkdir(parents=True)
    (dead / "spill").write_bytes(b"x" * 2_500_000)
    listed = run_module("beam_pipelines.clean", f"--output={out}", "--dry_run")
    assert listed.returncode == 0, listed.stderr
    assert "20260101T000000Z-0badf00d" in listed.stdout and "2.5 MB" in listed.stdout
    assert "would remove 1 abandoned staging entry" in listed.stdout and dead.exists()
    cleaned = run_module("beam_pipelines.clean", f"--output={out}")
    assert cleaned.returncode == 0, cleaned.stderr
    assert "removed 1 abandoned staging entry, 2.5 MB" in cleaned.stdout
    assert not (out / "_staging").exists() or not any((out / "_staging").iterdir())
    again = run_module("beam_pipelines.clean", f"--output={out}")
    assert "nothing to clean" in again.stdout
    assert one_line_error(run_module("beam_pipelines.clean"), 2).startswith("error: --output is required")
