"""A full disk under the output (a size-limited tmpfs the test mounts; the suite runs as root):
one error line and exit 1, the previous outputs still published, the scratch removed."""

from __future__ import annotations

import errno
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.helpers import ROOT, _env, cli, datagen, file_bytes, one_line_error, report
from transforms import faults

OUTPUTS = ("curated", "aggregates", "dlq")


def _published(out: Path) -> dict[str, bytes]:
    return {k: v for k, v in file_bytes(out).items() if k.split("/")[0] in OUTPUTS}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("full")
    return datagen(root / "small", "jsonl", 3_000, dirty=0.05, seed=3), datagen(root / "big", "jsonl", 60_000, seed=4)


@pytest.fixture
def disk(tmp_path):
    """A 3 MB filesystem of its own: the previous run's outputs fit, a larger run's scratch does not."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    assert done.returncode == 0, f"cannot mount a tmpfs for the full-disk test: {done.stderr}"
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def _fill(disk: Path) -> Path:
    filler = disk / "filler"
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC
    return filler


def _run_entries(out: Path) -> list[str]:
    staging = out / "_staging"
    return sorted(p.name for p in staging.iterdir()) if staging.exists() else []


def test_a_disk_that_fills_during_the_run(inputs, disk):
    small, big = inputs
    out = disk / "out"
    assert cli("--pipeline=events", f"--input={small}/*.jsonl", f"--output={out}").returncode == 0
    before = _published(out)
    failed = cli("--pipeline=events", f"--input={big}/*.jsonl", f"--output={out}")
    line = one_line_error(failed, 1)
    assert "No space left on device" in line and f"the disk holding {out} is full" in line, line
    assert _published(out) == before and report(out)["counts"]["read"] == 3_000
    assert _run_entries(out) == []  # the failed run's scratch is gone: the disk is usable again
    assert cli("--pipeline=events", f"--input={small}/*.jsonl", f"--output={out}").returncode == 0


def test_a_disk_already_full(inputs, disk):
    small, _ = inputs
    out = disk / "out"
    assert cli("--pipeline=events", f"--input={small}/*.jsonl", f"--output={out}").returncode == 0
    before = _published(out)
    filler = _fill(disk)
    line = one_line_error(cli("--pipeline=events", f"--input={small}/*.jsonl", f"--output={out}"), 1)
    assert f"output '{out}' is not writable" in line and "No space left on device" in line, line
    assert _published(out) == before
    filler.unlink()
    assert cli("--pipeline=events", f"--input={small}/*.jsonl", f"--output={out}").returncode == 0


def test_a_disk_that_fills_right_before_publishing(inputs, disk, tmp_path):
    small, _ = inputs
    out, go_on = disk / "out", tmp_path / "go-on"
    assert cli("--pipeline=events", f"--input={small}/*.jsonl", f"--output={out}").returncode == 0
    before = _published(out)
    env = _env()
    env[faults.ENV] = f"before_publish=wait:{go_on}"
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "beam_pipelines.main",
            "--pipeline=events",
            f"--input={small}/*.jsonl",
            f"--output={out}",
        ],  # fmt: skip
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not list((out / "_staging").glob("*/_run/report.json")):  # staged and audited: about to publish
        assert run.poll() is None, run.communicate()
        assert time.monotonic() < deadline, "the run never staged its report"
        time.sleep(0.05)
    filler = _fill(disk)
    go_on.touch()
    _, stderr = run.communicate(timeout=300)
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert run.returncode == 1 and len(lines) == 1, stderr
    assert lines[0].startswith("error: nothing published: ") and "No space left on device" in lines[0], lines
    assert _published(out) == before and not (out / "_publishing.json").exists()
    assert _run_entries(out) == []
    filler.unlink()
    again = cli("--pipeline=events", f"--input={small}/*.jsonl", f"--output={out}")
    assert again.returncode == 0, again.stderr
