"""The DAGs made from pipeline specs, on a real Airflow 3 (scripts/airflow.sh: its own virtualenv, SQLite).

Airflow that cannot be installed or started fails these tests; nothing is skipped. The DAG tasks run
this project's .venv Python on small generated data, with the DirectRunner.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.receivers import Receiver
from tests.services import ROOT, free_port

AIRFLOW_SH = ROOT / "scripts" / "airflow.sh"
PACKAGED = ROOT / "beam_pipelines" / "pipelines"
HERE = Path(__file__).resolve().parent
ROWS = 500
INSTALL_TIMEOUT_S = 540
BAD_SPECS = {
    "cycle_a": "  schedule: {depends_on: [cycle_b]}\n",
    "cycle_b": "  schedule: {depends_on: [cycle_a]}\n",
    "orphan": "  schedule: {depends_on: [evnets]}\n",
    "badcron": "  schedule: {cron: '0 2 * * 8'}\n",
}


def _latest_tick() -> str:
    # The date of the latest 02:00 UTC: unpaused without catchup, the DAG runs that tick once.
    now = datetime.now(timezone.utc)
    return (now if now.hour >= 2 else now - timedelta(days=1)).strftime("%Y-%m-%d")


DATES = ["2024-01-01", "2024-01-02", "2024-02-01", "2024-02-02", "2024-02-03", "2024-03-01", _latest_tick()]


def _events_spec(name: str, expectations: str) -> str:
    text = (PACKAGED / "events.yaml").read_text()
    text = text.replace("name: events\n", f"name: {name}\n", 1)
    text = text.replace(
        "retries: 3\n    retry_delay: 5m\n", "retries: 2\n    retry_delay: 1s\n    max_retry_delay: 2s\n"
    )
    text = text.replace("deadline: 2h\n", "deadline: 1s\n")  # every scheduled run misses it: an alert
    text = text.replace("${expectations:-events.expectations.yaml}", f"${{expectations:-{expectations}}}")
    assert "retry_delay: 1s" in text and "deadline: 1s" in text and expectations in text
    return text


@pytest.fixture(scope="module")
def webhook():
    with Receiver() as rx:
        yield rx


@pytest.fixture(scope="module")
def af(tmp_path_factory, webhook):
    """Specs, landed data, Airflow's home and settings; Airflow installed (once per checkout)."""
    base = tmp_path_factory.mktemp("airflow")
    specs, data, lake = base / "specs", base / "data", base / "lake"
    specs.mkdir()
    (specs / "events.yaml").write_text(_events_spec("events", "events.expectations.yaml"))
    shutil.copy(PACKAGED / "events.expectations.yaml", specs)
    # The same pipeline with an error-severity expectation that every run fails.
    (specs / "events_strict.yaml").write_text(_events_spec("events_strict", "strict.expectations.yaml"))
    (specs / "strict.expectations.yaml").write_text(
        "expectations:\n  - {name: amount_tiny, kind: between, column: amount, min: 0, max: 1, severity: error}\n"
    )
    shutil.copy(HERE / "airflow_specs" / "events_daily.yaml", specs)
    # Delta tables: the DAG maintains them after the audit.
    shutil.copy(ROOT / "examples" / "lakehouse" / "orders.yaml", specs / "orders_lakehouse.yaml")
    for name, schedule in BAD_SPECS.items():
        (specs / f"{name}.yaml").write_text(f"pipeline:\n  name: {name}\n  contract: events@1\n{schedule}"
                                            "  transforms: []\n")  # fmt: skip
    gen = subprocess.run([sys.executable, "-m", "beam_pipelines.datagen", "--rows", str(ROWS), "--format", "jsonl",
                          "--dirty-fraction", "0.05", "--out", str(base / "gen"), "--seed", "3"],
                         cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert gen.returncode == 0, gen.stderr
    (landed,) = (base / "gen").glob("*.jsonl")
    for day in DATES:
        (data / "events" / f"date={day}").mkdir(parents=True)
        shutil.copy(landed, data / "events" / f"date={day}" / "events.jsonl")
    env = {
        "AIRFLOW_HOME": str(base / "home"),
        "BP_SPECS": str(specs),
        "AIRFLOW_PORT": str(free_port()),
        "AIRFLOW_OWNER_PID": str(os.getpid()),
        "AIRFLOW_VAR_BEAM_PIPELINES_DATA": str(data),
        "AIRFLOW_VAR_BEAM_PIPELINES_LAKE": str(lake),
        "AIRFLOW_VAR_BEAM_PIPELINES_ALERT_WEBHOOK": webhook.url + "/hook",
        "AIRFLOW_VAR_BEAM_PIPELINES_PYTHON": str(ROOT / ".venv" / "bin" / "python"),
    }
    started = time.monotonic()
    proc = _sh(["install"], env, INSTALL_TIMEOUT_S)
    if proc.returncode != 0:
        pytest.fail(f"scripts/airflow.sh install failed: {proc.stderr.strip()[-2000:]}")
    print(f"\nairflow install (or the cached venv): {time.monotonic() - started:.1f}s")
    return {"base": base, "specs": specs, "data": data, "lake": lake, "env": env}


def _sh(args: list[str], env: dict, timeout: float = 500, extra: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(AIRFLOW_SH), *args], cwd=ROOT, env={**os.environ, **env, **(extra or {})},
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)  # fmt: skip


def _dags_test(af, dag_id: str, day: str, extra: dict | None = None) -> subprocess.CompletedProcess:
    # `airflow dags test` of Airflow 3.3.2 cannot mark a run with a deadline successful: deadlines off here.
    extra = {"BEAM_PIPELINES_DEADLINE_ALERTS": "0", **(extra or {})}
    started = time.monotonic()
    proc = _sh(["run", "dags", "test", dag_id, day], af["env"], extra=extra)
    print(f"airflow dags test {dag_id} {day}: exit {proc.returncode} in {time.monotonic() - started:.1f}s")
    return proc


def _summary(af, name: str, day: str) -> dict:
    return json.loads((af["lake"] / name / f"date={day}" / "_run" / "summary.json").read_text())


def _tail(proc) -> str:
    return (proc.stdout + proc.stderr)[-4000:]


def test_dag_files_import_without_beam_and_bad_specs_fail_alone(af):
    proc = _sh(["python", str(HERE / "airflow_dagbag.py")], af["env"], timeout=300)
    assert proc.returncode == 0, _tail(proc)
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    for entry, seconds in sorted(got["seconds"].items()):
        print(f"parse {entry}: {seconds * 1000:.1f} ms")
    assert sorted(got["dags"]) == ["events", "events_daily", "events_strict", "orders_lakehouse"]
    assert got["dags"]["orders_lakehouse"]["edges"] == [["audit", "maintain_lakehouse"], ["run", "audit"]]
    events = got["dags"]["events"]
    assert events["edges"] == [["run", "audit"], ["wait_for_input", "run"]]
    assert events["schedule"] == "CronTriggerTimetable" and "0 2 * * *" in events["summary"]
    assert (events["retries"], events["backoff"], events["outlets"]) == (2, 2.0, ["beam_pipelines.events"])
    daily = got["dags"]["events_daily"]
    assert daily["schedule"] == "AssetTriggeredTimetable" and "beam_pipelines.events'" in daily["summary"]
    # Each bad spec is its own file's import error, naming the spec file, the key and what is wrong.
    errors = got["errors"]
    assert sorted(errors) == ["badcron.py", "cycle_a.py", "cycle_b.py", "orphan.py"]
    specs = str(af["specs"])
    assert f"{specs}/cycle_a.yaml:4: pipeline.schedule.depends_on: dependency cycle: cycle_a -> cycle_b -> cycle_a" \
        in errors["cycle_a.py"]  # fmt: skip
    assert "cycle_b -> cycle_a -> cycle_b" in errors["cycle_b.py"]
    assert f"{specs}/orphan.yaml:4: pipeline.schedule.depends_on: unknown upstream pipeline 'evnets' " \
           "(did you mean 'events'?)" in errors["orphan.py"]  # fmt: skip
    assert "badcron.yaml:4: pipeline.schedule.cron: weekday 8 is out of range 0-7" in errors["badcron.py"]
    assert got["heavy_modules"] == []  # neither Beam nor pyarrow was imported to parse


def test_dags_test_runs_the_events_dag_end_to_end(af):
    proc = _dags_test(af, "events", "2024-01-01")
    assert proc.returncode == 0, _tail(proc)
    out = proc.stdout + proc.stderr
    assert "audit passed: " in out and "date=2024-01-01" in out
    s = _summary(af, "events", "2024-01-01")
    c = s["counts"]
    assert c["read"] == ROWS and c["read"] == c["curated"] + c["dead_lettered"] + c["duplicates"]
    assert s["conservation_ok"] and s["files_match"]
    assert (af["lake"] / "events" / "date=2024-01-01" / "curated").is_dir()


def test_a_run_killed_before_publishing_is_retried_and_publishes_once(af):
    marker = af["base"] / "killed-once"
    flaky = af["base"] / "flaky-python"
    # The project's Python, except that the first pipeline run is killed once it is writing its staged
    # outputs (as a lost worker would be): nothing is published, and the retry starts from scratch.
    flaky.write_text(f"""#!/usr/bin/env bash
real={ROOT}/.venv/bin/python
if [[ " $* " == *" beam_pipelines.main "* && ! -e {marker} ]]; then
    out=; for a in "$@"; do [[ $a == --output=* ]] && out=${{a#--output=}}; done
    "$real" "$@" & pid=$!
    for _ in $(seq 1 1200); do compgen -G "$out/_staging/2*" >/dev/null && break; sleep 0.05; done
    kill -KILL $pid; wait $pid; echo "killed after staging in $(ls "$out/_staging")" > {marker}
    echo "error: worker lost"; exit 137
fi
exec "$real" "$@"
""")
    flaky.chmod(0o755)
    proc = _dags_test(af, "events", "2024-01-02", {"AIRFLOW_VAR_BEAM_PIPELINES_PYTHON": str(flaky)})
    assert proc.returncode == 0, _tail(proc)
    out = proc.stdout + proc.stderr
    assert "killed after staging" in marker.read_text()
    assert "exited 137: worker lost" in out  # the first try failed ...
    assert re.search(r"task_id='run'.*try_number=2", out)  # ... and the second one ran
    s = _summary(af, "events", "2024-01-02")
    assert s["counts"]["read"] == ROWS and s["conservation_ok"] and s["files_match"]
    killed = marker.read_text().split()[-1]
    assert killed != s["run_id"]  # the killed run's staging was never published
    assert not (af["lake"] / "events" / "date=2024-01-02" / "_staging" / s["run_id"]).exists()


def test_a_failed_error_expectation_publishes_nothing_is_not_retried_and_alerts(af, webhook):
    proc = _dags_test(af, "events_strict", "2024-01-01")
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "audit failed, nothing published: expectation 'amount_tiny' failed" in out
    assert out.count("'beam_pipelines.main'") == 1  # no retry of a data failure
    part = af["lake"] / "events_strict" / "date=2024-01-01"
    assert not (part / "curated").exists() and not (part / "_run").exists()
    alerts = [r.json()["text"] for r in webhook.requests if r.path == "/hook"]
    assert any(t.startswith("beam-pipelines events_strict: task run failed") and "amount_tiny" in t for t in alerts)


class _Api:
    def __init__(self, base: str):
        self.base = base

    def __call__(self, method: str, path: str, body: dict | None = None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            raise AssertionError(f"{method} {path}: HTTP {e.code} {e.read()[:500]!r}") from e

    def retry_locked(self, method: str, path: str, body: dict, timeout_s: float = 120):
        """Calls again while Airflow answers 503 "Database is locked": its SQLite database (this
        test's) refuses some writes while the scheduler holds it, more often on a loaded machine."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return self(method, path, body)
            except AssertionError as e:
                if "Database is locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(2)

    def runs(self, dag_id: str) -> list[dict]:
        return self("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=100")["dag_runs"]

    def wait(
        self, dag_id: str, run_ids: set | None = None, new_than: set | None = None, count: int = 1, timeout: float = 420
    ) -> list[dict]:
        """Waits until the runs ``run_ids`` (or ``count`` runs not in ``new_than``) have succeeded;
        fails on a failed one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            runs = [
                r
                for r in self.runs(dag_id)
                if (run_ids is None or r["dag_run_id"] in run_ids) and r["dag_run_id"] not in (new_than or ())
            ]
            failed = [r for r in runs if r["state"] == "failed"]
            assert not failed, f"{dag_id} run failed: {failed[0]['dag_run_id']}"
            done = [r for r in runs if r["state"] == "success"]
            if len(done) >= (len(run_ids) if run_ids is not None else count):
                return done
            time.sleep(2)
        raise AssertionError(f"{dag_id}: runs not done after {timeout}s: {self.runs(dag_id)}")

    def wait_for_partition(self, af, name: str, day: str, timeout: float = 420) -> None:
        """Waits until ``name`` has published ``day`` and none of its runs is unfinished or failed."""
        deadline = time.monotonic() + timeout
        part = af["lake"] / name / f"date={day}" / "_run" / "summary.json"
        while time.monotonic() < deadline:
            states = [r["state"] for r in self.runs(name)]
            assert "failed" not in states, f"a {name} run failed"
            if part.exists() and states and all(s == "success" for s in states):
                return
            time.sleep(2)
        raise AssertionError(f"{name} did not publish {day} within {timeout}s: {self.runs(name)}")

    def run_ids(self, dag_id: str) -> set:
        return {r["dag_run_id"] for r in self.runs(dag_id)}


def test_scheduler_runs_triggers_backfills_dependents_and_reruns(af, webhook):
    """With the scheduler running: a run triggered through the REST API succeeds and misses its 1 s
    deadline (an alert); the pipeline reading its output runs after it (assets) on the same partition;
    a backfill of three dates makes three partitions; clearing one run replaces its partition."""
    env = af["env"]
    started = time.monotonic()
    proc = _sh(["start"], env, timeout=400)
    try:
        assert proc.returncode == 0, f"airflow did not start: {proc.stderr.strip()[-2000:]}"
        api = _Api(proc.stdout.strip().splitlines()[-1])
        print(f"airflow standalone healthy after {time.monotonic() - started:.1f}s")
        errors = api("GET", "/api/v2/importErrors")["import_errors"]
        assert sorted(os.path.basename(e["filename"]) for e in errors) == [
            "badcron.py", "cycle_a.py", "cycle_b.py", "orphan.py"]  # fmt: skip
        for dag_id in ("events_daily", "events"):
            for _ in range(60):  # the DAG processor may not have stored every DAG yet
                try:
                    api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
                    break
                except AssertionError:
                    time.sleep(2)
        # Unpaused, the cron schedule runs the latest 02:00 tick; the dependent pipeline follows.
        t0, tick = time.monotonic(), _latest_tick()
        before = {r["dag_run_id"] for r in api.runs("events") if r["run_type"] != "scheduled"}
        (scheduled,) = api.wait("events", new_than=before)
        assert scheduled["run_type"] == "scheduled" and scheduled["logical_date"].startswith(tick)
        print(f"scheduled events run: {time.monotonic() - t0:.1f}s")
        api.wait_for_partition(af, "events_daily", tick)
        print(f"events_daily after it (asset): {time.monotonic() - t0:.1f}s")
        # A run triggered through the REST API, for a past date; its dependent reads that date's partition.
        t0 = time.monotonic()
        run = api("POST", "/api/v2/dags/events/dagRuns", {"logical_date": "2024-03-01T00:00:00Z"})
        api.wait("events", {run["dag_run_id"]})
        print(f"triggered events run: {time.monotonic() - t0:.1f}s")
        api.wait_for_partition(af, "events_daily", "2024-03-01")
        print(f"events_daily after it: {time.monotonic() - t0:.1f}s")
        assert all(r["run_type"] == "asset_triggered" for r in api.runs("events_daily"))
        daily = _summary(af, "events_daily", "2024-03-01")
        assert daily["counts"]["read"] == _summary(af, "events", "2024-03-01")["counts"]["aggregates"]
        deadline = time.monotonic() + 60
        while not any("missed its deadline" in r.json().get("text", "") for r in webhook.requests):
            assert time.monotonic() < deadline, "no deadline alert"
            time.sleep(1)
        api("PATCH", "/api/v2/dags/events_daily", {"is_paused": True})

        t0 = time.monotonic()
        earlier = api.run_ids("events")
        backfill = {"dag_id": "events", "from_date": "2024-02-01T00:00:00Z", "to_date": "2024-02-03T03:00:00Z",
                    "max_active_runs": 1}  # fmt: skip
        api.retry_locked("POST", "/api/v2/backfills", backfill)
        runs = api.wait("events", new_than=earlier, count=3)
        print(f"backfill of 3 dates: {time.monotonic() - t0:.1f}s")
        backfilled = sorted(r["logical_date"][:10] for r in runs if r["run_type"] == "backfill")
        assert backfilled == ["2024-02-01", "2024-02-02", "2024-02-03"]
        for day in backfilled:
            assert _summary(af, "events", day)["counts"]["read"] == ROWS
        before = _summary(af, "events", "2024-02-02")["run_id"]
        stale = af["lake"] / "events" / "date=2024-02-02" / "curated" / "stale.parquet"
        stale.write_bytes(b"left by hand")
        run_id = next(r["dag_run_id"] for r in runs if r["logical_date"].startswith("2024-02-02"))
        t0 = time.monotonic()
        api("POST", "/api/v2/dags/events/clearTaskInstances",
            {"dag_run_id": run_id, "dry_run": False, "only_failed": False, "reset_dag_runs": True})  # fmt: skip
        deadline = time.monotonic() + 300
        while _summary(af, "events", "2024-02-02")["run_id"] == before or \
                api("GET", f"/api/v2/dags/events/dagRuns/{run_id}")["state"] != "success":  # fmt: skip
            assert time.monotonic() < deadline, "the cleared run did not run again"
            time.sleep(2)
        print(f"re-run of 2024-02-02: {time.monotonic() - t0:.1f}s")
        assert not stale.exists()  # the partition was replaced whole
        assert _summary(af, "events", "2024-02-02")["counts"]["read"] == ROWS
    finally:
        _sh(["stop"], env, timeout=120)
