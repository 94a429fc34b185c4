"""The Airflow DAG factory: a pipeline spec -> its DAG, built when Airflow parses the DAG file.

Each spec gets one small DAG file (``python -m beam_pipelines.orchestrate link``), so a spec
with a mistake is an import error of its own file, named for it, and the other DAGs still load.
The DAG file only names its spec; everything else is made here, from ``pipeline.schedule``:

    wait_for_input >> run >> audit [>> maintenance steps]

``run`` is the CLI (stage, audit expectations, publish: an error expectation that fails publishes
nothing and fails the task without retries); ``audit`` checks the published partition and, when it
passes, updates the pipeline's asset, which starts the pipelines that depend on it. Retries back
off exponentially; a task out of retries, and a run past its deadline, post to the alert webhook.

Parsing reads YAML only: no Beam, no pyarrow (the specs of a folder are read once per parsing
process while none of them changes).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

from airflow.sdk import DAG, Asset, CronTriggerTimetable, DeadlineAlert, DeadlineReference, SyncCallback

from beam_pipelines.orchestrate import alerts
from beam_pipelines.orchestrate.operators import (
    AuditPartition,
    InputSensor,
    RunCommand,
    partition,
    project_python,
    setting,
)
from beam_pipelines.orchestrate.schedule import Schedule, input_parts, read_schedules
from beam_pipelines.spec.yamlsrc import SpecError

__all__ = ["MAINTENANCE", "asset_of", "build_dag", "dag_for_spec", "output_of"]

DEFAULT_LAKE = "/tmp/beam-pipelines/lake"
DEFAULT_DATA = "/tmp/beam-pipelines/data"
# Further steps after the audit (and the lakehouse maintenance), per pipeline name: callables
# (dag, schedule, last task) -> last task.
MAINTENANCE: dict = {}
_CACHE: dict = {}
INPUT_WAIT_S = 24 * 3600

PARTITION = "{{ bp_partition(dag_run, triggering_asset_events) }}"


def asset_of(name: str) -> Asset:
    """The asset a pipeline's audited publish updates (its events carry the partition and path)."""
    return Asset(name=f"beam_pipelines.{name}", uri=f"beam-pipelines://{name}", group="beam_pipelines")


def output_of(name: str) -> str:
    """Template of a pipeline's published partition for the run's date."""
    return _var("lake", DEFAULT_LAKE) + f"/{name}/date={PARTITION}"


def _var(key: str, default: str) -> str:
    # The setting is read when the task renders (variable, else environment, else the default).
    return "{{ bp_setting('" + key + "', '" + default + "') }}"


def _input_template(pattern: str) -> str:
    # Checked by schedule.input_parts: literal text holds no Jinja markup.
    out = []
    for part in input_parts(pattern):
        if part[0] == "text":
            out.append(part[1])
        elif part[0] == "date":
            out.append(PARTITION)
        elif part[0] == "data":
            out.append(_var("data", DEFAULT_DATA))
        else:
            out.append(output_of(part[1]))
    return "".join(out)


def _schedules(folder: str) -> dict:
    stamp = tuple(sorted((e.name, e.stat().st_mtime_ns) for e in os.scandir(folder) if e.is_file()))
    cached = _CACHE.get(folder)
    if cached is None or cached[0] != stamp:
        cached = _CACHE[folder] = (stamp, read_schedules(folder))
    return cached[1]


def dag_for_spec(spec: str, here: str | None = None) -> DAG:
    """The DAG of ``spec`` (a path, relative to the DAG file ``here`` when given); SpecError
    naming the spec file and key when its schedule or dependencies are wrong."""
    path = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(here)), spec) if here else spec)
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise SpecError("", "no such spec file", path)
    got = _schedules(os.path.dirname(path)).get(path)
    if got is None:
        raise SpecError("", "not a pipeline spec (no pipeline: key)", path)
    if isinstance(got, SpecError):
        raise got
    return build_dag(got)


def build_dag(s: Schedule) -> DAG:
    """The DAG of one checked schedule."""
    output = output_of(s.name)
    defaults = {
        "retries": s.retries,
        "retry_delay": timedelta(seconds=s.retry_delay),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(seconds=s.max_retry_delay),
        "on_failure_callback": alerts.task_failed,
    }
    if s.depends_on:
        schedule = [asset_of(u) for u in s.depends_on]
        if len(schedule) == 1:
            schedule = schedule[0]
        else:
            first, *rest = schedule
            for a in rest:
                first = first & a
            schedule = first
    elif s.cron:
        schedule = CronTriggerTimetable(s.cron, timezone="UTC")
    else:
        schedule = None
    deadline = None
    # Airflow 3.3.2's `airflow dags test` fails when it marks a run with a deadline successful (it looks
    # the alert up by its serialized form); BEAM_PIPELINES_DEADLINE_ALERTS=0 leaves deadlines out there.
    if s.deadline and os.environ.get("BEAM_PIPELINES_DEADLINE_ALERTS", "1") != "0":
        deadline = DeadlineAlert(
            reference=DeadlineReference.DAGRUN_QUEUED_AT,
            interval=timedelta(seconds=s.deadline),
            callback=SyncCallback(alerts.deadline_missed, kwargs={"pipeline": s.name, "deadline": _human(s.deadline)}),
        )
    doc = f"Pipeline spec `{s.spec}`, run by beam_pipelines.orchestrate (README: Orchestration)."
    dag = DAG(
        dag_id=s.name,
        description=f"beam-pipelines {s.name}: {os.path.basename(s.spec)}",
        doc_md=doc,
        schedule=schedule,
        start_date=datetime(s.start_date.year, s.start_date.month, s.start_date.day, tzinfo=timezone.utc),
        catchup=False,
        default_args=defaults,
        max_active_runs=1,
        tags=["beam-pipelines"],
        deadline=deadline,
        user_defined_macros={"bp_partition": partition, "bp_setting": setting, "bp_python": project_python},
    )
    with dag:
        argv = ["{{ bp_python() }}", "-m", "beam_pipelines.main", f"--pipeline={s.spec}",
                "--runner=" + _var("runner", s.runner), f"--output={output}",
                "{% if bp_setting('alert_webhook') %}--alert_webhook={{ bp_setting('alert_webhook') }}{% endif %}"]  # fmt: skip
        first = None
        if s.input is not None:
            pattern = _input_template(s.input)
            # Rescheduled between pokes (no worker slot held while waiting); gives up after a day.
            first = InputSensor(task_id="wait_for_input", pattern=pattern, mode="reschedule", poke_interval=60,
                                timeout=INPUT_WAIT_S)  # fmt: skip
            argv.append(f"--input={pattern}")
        if s.input_format:
            argv.append(f"--input_format={s.input_format}")
        timeout = timedelta(seconds=s.timeout) if s.timeout else None
        # Runner options (--project, --region, --temp_location for Dataflow): a JSON list of flags.
        extra = "{{ bp_setting('runner_args', '[]') }}"
        run = RunCommand(task_id="run", argv=argv, extra_args=extra, execution_timeout=timeout)
        audit = AuditPartition(task_id="audit", output=output, date=PARTITION, outlets=[asset_of(s.name)])
        if first is not None:
            first >> run
        run >> audit
        last = audit
        if s.lakehouse:
            # Retention, compaction and vacuum of the spec's Delta tables, once the run has published.
            last = RunCommand(task_id="maintain_lakehouse", argv=["{{ bp_python() }}", "-m", "beam_pipelines.lakehouse",
                              "maintain", f"--pipeline={s.spec}", f"--output={output}"])  # fmt: skip
            audit >> last
        step = MAINTENANCE.get(s.name)
        if step is not None:
            step(dag, s, last)
    return dag


def _human(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
