"""WarmWorkers: forked workers take the environment of the client the runner starts, and the
client exits with the worker's status. Run in a fresh interpreter: the test process has
threads (a fork there is refused, as it should be)."""

import json
import os
import subprocess
import sys
import textwrap
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCRIPT = textwrap.dedent(
    """
    import json, os, subprocess, sys, time
    from beam_pipelines.warm_workers import WarmWorkers

    out = sys.argv[1]

    def run():
        if os.environ["WORKER_ID"] == "bad":
            raise RuntimeError("worker failed")
        with open(os.path.join(out, os.environ["WORKER_ID"]), "w") as fh:
            json.dump({"pid": os.getpid(), "control": os.environ["CONTROL_API_SERVICE_DESCRIPTOR"]}, fh)

    pool = WarmWorkers(3, stderr_path=os.path.join(out, "workers.log"), run=run)
    with pool:
        command = pool.command()
        started = time.monotonic()
        clients = []
        for worker_id in ("w1", "bad"):
            env = dict(os.environ, WORKER_ID=worker_id, CONTROL_API_SERVICE_DESCRIPTOR="url: 'x:" + worker_id + "'")
            clients.append(subprocess.Popen(command, shell=True, env=env))
        codes = [c.wait() for c in clients]
    # The third worker was never claimed: leaving the pool ended it.
    print(json.dumps({"launcher": os.getpid(), "codes": codes, "command": command,
                      "seconds": time.monotonic() - started}))
    """
)


def test_forked_workers_take_the_clients_environment_and_report_status(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT)
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "beam_pipelines.warm_workers" in result["command"]
    assert result["codes"] == [0, 1]
    got = json.loads((tmp_path / "w1").read_text())
    assert got["control"] == "url: 'x:w1'"
    assert got["pid"] != result["launcher"]  # ran in a forked child, not in the launcher
    assert "worker failed" in (tmp_path / "workers.log").read_text()  # the child's stderr
    assert not (tmp_path / "bad").exists()
    assert time.monotonic() - started < 30  # the unclaimed worker did not hold the launcher


def test_client_without_a_pool_becomes_an_ordinary_worker(tmp_path):
    # No socket: the client runs Beam's own worker, which fails here for want of a runner.
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("CONTROL_API_SERVICE_DESCRIPTOR", None)
    proc = subprocess.run(
        [sys.executable, "-m", "beam_pipelines.warm_workers", str(tmp_path / "missing.sock")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "CONTROL_API_SERVICE_DESCRIPTOR" in proc.stderr


def test_no_fork_while_other_threads_run():
    import threading

    from beam_pipelines.warm_workers import WarmWorkers

    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        with WarmWorkers(2) as pool:
            assert pool.command() is None
    finally:
        stop.set()
        thread.join()
