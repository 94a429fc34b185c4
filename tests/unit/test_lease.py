"""The output lease on local disks: one holder, a dead holder's lease is free, fencing, waiting."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from datetime import datetime, timezone

import pytest

from beam_pipelines import lease, publish
from beam_pipelines.lease import LEASE_FILE, LeaseError

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def clock():
    return T0


def test_a_second_run_is_refused_naming_the_holder(tmp_path):
    with lease.acquire(str(tmp_path), "run-a", clock=clock):
        held = json.loads((tmp_path / LEASE_FILE).read_text())
        assert held["run_id"] == "run-a" and held["pid"] == os.getpid() and held["heartbeat"] == T0.isoformat()
        with pytest.raises(LeaseError, match=r"in use by run run-a \(pid \d+ on .*--wait_for_lock"):
            lease.acquire(str(tmp_path), "run-b", clock=clock)
    assert not (tmp_path / LEASE_FILE).exists()  # released: removed
    lease.acquire(str(tmp_path), "run-b", clock=clock).release()


def test_the_lease_of_a_killed_holder_is_taken_over_at_once(tmp_path):
    code = (
        "import sys, time; from beam_pipelines import lease; "
        "lease.acquire(sys.argv[1], 'run-dead'); print('held', flush=True); time.sleep(600)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LeaseError, match="run-dead"):
            lease.acquire(str(tmp_path), "run-b", clock=clock)
        assert lease.holder_of(str(tmp_path)).run_id == "run-dead"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert lease.holder_of(str(tmp_path)) is None  # its file is left behind, but nobody holds it
    with lease.acquire(str(tmp_path), "run-b", clock=clock) as held:
        held.check()
        assert json.loads((tmp_path / LEASE_FILE).read_text())["run_id"] == "run-b"


def test_a_run_whose_lease_file_was_replaced_cannot_publish(tmp_path):
    first = lease.acquire(str(tmp_path), "run-a", clock=clock)
    os.remove(tmp_path / LEASE_FILE)  # e.g. removed by hand, or the directory replaced
    second = lease.acquire(str(tmp_path), "run-b", clock=clock)
    second.check()
    with pytest.raises(LeaseError, match="lease on .* lost .*nothing published"):
        first.check()
    first.release()  # does not remove the new holder's file
    assert json.loads((tmp_path / LEASE_FILE).read_text())["run_id"] == "run-b"
    second.release()


def test_wait_for_lock_waits_until_the_holder_releases(tmp_path):
    first = lease.acquire(str(tmp_path), "run-a", clock=clock)
    slept = []

    def sleep(s):
        slept.append(s)
        if len(slept) == 3:
            threading.Thread(target=first.release).start()
        else:
            threading.Event().wait(0.01)

    with lease.acquire(str(tmp_path), "run-b", wait_s=float("inf"), clock=clock, sleep=sleep):
        assert len(slept) >= 3
    first2 = lease.acquire(str(tmp_path), "run-c", clock=clock)
    with pytest.raises(LeaseError, match=r"after waiting 2 s"):
        lease.acquire(str(tmp_path), "run-d", wait_s=2, clock=clock, sleep=lambda s: None)
    first2.release()


def test_the_heartbeat_refreshes_the_lease_file(tmp_path):
    times = iter([T0, T0.replace(minute=5), T0.replace(minute=6), T0.replace(minute=7)])
    last = [T0]

    def ticking():
        last[0] = next(times, last[0])
        return last[0]

    held = lease.acquire(str(tmp_path), "run-a", clock=ticking, heartbeat_s=0.01)
    try:
        for _ in range(200):
            doc = json.loads((tmp_path / LEASE_FILE).read_text() or "{}")
            if doc.get("heartbeat", "") > T0.replace(minute=5).isoformat():
                break
            threading.Event().wait(0.01)
        assert doc["acquired"] == T0.isoformat() and doc["heartbeat"] > T0.replace(minute=5).isoformat()
    finally:
        held.release()


def test_abandoned_staging_goes_and_the_live_runs_stays(tmp_path):
    out = tmp_path / "out"
    for name, size in (("dead-1", 1000), ("live", 10), ("replaced-x-curated", 5)):
        (out / "_staging" / name / "sub").mkdir(parents=True)
        (out / "_staging" / name / "sub" / "f").write_bytes(b"x" * size)
    assert publish.staging_runs(str(out)) == {"dead-1": 1000, "live": 10, "replaced-x-curated": 5}
    assert publish.remove_abandoned(str(out), "live") == {"dead-1": 1000, "replaced-x-curated": 5}
    assert sorted(os.listdir(out / "_staging")) == ["live"]


def test_directories_made_for_the_lease_alone_go_on_release(tmp_path):
    out = tmp_path / "a" / "b"
    lease.acquire(str(out), "run-a", clock=clock).release()
    assert list(tmp_path.iterdir()) == []
    held = lease.acquire(str(out), "run-a", clock=clock)
    (out / "curated").mkdir()
    held.release()
    assert sorted(os.listdir(out)) == ["curated"]


def test_an_output_that_cannot_be_written_is_a_lease_error(tmp_path):
    (tmp_path / "a-file").write_text("in the way")
    with pytest.raises(LeaseError, match="is not writable"):
        lease.acquire(str(tmp_path / "a-file" / "out"), "run-a", clock=clock)


def test_the_heartbeat_thread_is_paused_while_worker_processes_are_forked(tmp_path):
    # Other tests in the same process may leave threads of their own: count only heartbeats.
    def heartbeats():
        return sum(t.name == "lease-heartbeat" and t.is_alive() for t in threading.enumerate())

    before = heartbeats()

    class Forks:
        def __enter__(self):
            self.beats = heartbeats()  # WarmWorkers refuses to fork beside other threads
            return self

        def __exit__(self, *exc):
            return False

    with lease.acquire(str(tmp_path), "run-a", clock=clock) as held:
        assert heartbeats() == before + 1
        with held.fork_safe(Forks()) as entered:
            assert entered.beats == before and heartbeats() == before + 1
        held.check()
    assert heartbeats() == before
