"""A batch run killed (SIGKILL, the whole process group) at every step of its work.

Each case starts from an output published by run A (one input) and kills run B (another input)
at one point. Before publishing, the outputs must still be A's, byte for byte; a kill while
publishing leaves a journal, and the next holder of the output (here ``clean``) completes the
publish, so the outputs are then B's, byte for byte; never a mix. A re-run of B then completes
and leaves no scratch behind.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.helpers import ROOT, _env, cli, datagen, file_bytes, report, run_module
from transforms import faults

ROWS = 20_000
OUTPUTS = ("curated", "aggregates", "dlq")
BEFORE_PUBLISH = ("parse", "dedup", "aggregate", "write:curated", "write:aggregates", "write:dlq", "write:report",
                  "before_publish")  # fmt: skip
AFTER_PUBLISH = ("report",)


def _flags(data: Path, out: Path) -> list[str]:
    return ["--pipeline=events", f"--input={data}/*.jsonl", f"--output={out}"]


def _under(files: dict[str, bytes], name: str) -> dict[str, bytes]:
    return {k: v for k, v in files.items() if k.startswith(name + "/")}


def _published(out: Path) -> dict[str, bytes]:
    return {k: v for k, v in file_bytes(out).items() if k.split("/")[0] in OUTPUTS}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Inputs A and B; the output of A alone (the previous run), and of A then B (the new run)."""
    root = tmp_path_factory.mktemp("crash")
    a = datagen(root / "in-a", "jsonl", ROWS, dirty=0.05, seed=1)
    b = datagen(root / "in-b", "jsonl", ROWS, dirty=0.05, seed=2)
    after_a = root / "after-a"
    assert cli(*_flags(a, after_a)).returncode == 0
    after_b = root / "after-b"
    shutil.copytree(after_a, after_b)
    done = cli(*_flags(b, after_b))
    assert done.returncode == 0, done.stderr
    old, new = _published(after_a), _published(after_b)
    for name in OUTPUTS:  # each output of one run is told apart from the other's
        assert _under(old, name) and _under(old, name) != _under(new, name)
    return {"b": b, "after_a": after_a, "old": old, "new": new, "new_report": report(after_b)}


def _killed_at(point: str, runs, out: Path) -> None:
    if not out.exists():
        shutil.copytree(runs["after_a"], out)
    env = _env()
    env[faults.ENV] = f"{point}=kill"
    proc = subprocess.run(
        [sys.executable, "-m", "beam_pipelines.main", *_flags(runs["b"], out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        start_new_session=True,  # the fault kills the run's process group: its workers too
    )
    assert proc.returncode == -signal.SIGKILL, f"not killed at {point}: {proc.returncode} {proc.stderr[-2000:]}"


def _rerun_completes(runs, out: Path) -> None:
    again = cli(*_flags(runs["b"], out))
    assert again.returncode == 0, again.stderr
    assert _published(out) == runs["new"]
    assert report(out)["counts"] == runs["new_report"]["counts"]
    assert not (out / "_staging").exists() and not (out / "_publishing.json").exists()


def test_killed_at_each_step_before_publishing_leaves_the_previous_outputs(runs, tmp_path):
    # One output through all the kills in turn: each next run removes the scratch of the one
    # before, so crashes in a row leave at most one dead run's staging behind.
    out = tmp_path / "out"
    shutil.copytree(runs["after_a"], out)
    for point in BEFORE_PUBLISH:
        _killed_at(point, runs, out)
        assert _published(out) == runs["old"], f"outputs changed by a run killed at {point}"
        assert report(out)["counts"]["read"] == ROWS and not (out / "_publishing.json").exists()
        assert len(list((out / "_staging").iterdir())) <= 1, point
    _rerun_completes(runs, out)


def test_killed_while_publishing_the_next_holder_completes_the_publish(runs, tmp_path):
    out = tmp_path / "out"
    _killed_at("publish", runs, out)  # the first output moved, the others not
    journal = json.loads((out / "_publishing.json").read_text())
    moved = next(iter(journal["outputs"]))
    on_disk = _published(out)
    assert _under(on_disk, moved) == _under(runs["new"], moved)
    assert on_disk != runs["new"]  # cut off: the journal says what is still to move
    listed = run_module("beam_pipelines.clean", f"--output={out}", "--dry_run")
    assert f"would complete the publish of run {journal['run_id']}" in listed.stdout
    assert _published(out) == on_disk  # a dry run moves nothing
    cleaned = run_module("beam_pipelines.clean", f"--output={out}")
    assert cleaned.returncode == 0, cleaned.stderr
    assert f"completed the publish of run {journal['run_id']}" in cleaned.stdout
    assert _published(out) == runs["new"] and report(out)["counts"] == runs["new_report"]["counts"]
    assert not (out / "_publishing.json").exists() and not (out / "_staging").exists()


def test_killed_while_publishing_the_next_run_completes_it_first(runs, tmp_path):
    out = tmp_path / "out"
    _killed_at("publish", runs, out)
    nxt = cli(*_flags(runs["b"], out))
    assert nxt.returncode == 0, nxt.stderr
    assert "completed the publish of run" in nxt.stderr
    assert _published(out) == runs["new"] and not (out / "_publishing.json").exists()


@pytest.mark.parametrize("point", AFTER_PUBLISH)
def test_killed_after_publishing_leaves_the_new_outputs(point, runs, tmp_path):
    out = tmp_path / "out"
    _killed_at(point, runs, out)
    assert _published(out) == runs["new"] and report(out)["counts"] == runs["new_report"]["counts"]
    assert not (out / "_publishing.json").exists()
    _rerun_completes(runs, out)
