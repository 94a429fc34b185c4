"""The tasks of a pipeline's DAG: wait for the input, run the CLI, audit what was published.

Every command is an argv list (each element a Jinja template Airflow renders, then passed to the
process as is): no shell, so a path or date with spaces or quotes stays one argument. The
commands run with the project's own Python (the Airflow variable ``beam_pipelines_python``; by
default this checkout's .venv), never in Airflow's interpreter: Beam's pins and Airflow's clash.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from airflow.sdk import BaseOperator, BaseSensorOperator, Variable
from airflow.sdk.exceptions import AirflowException, AirflowFailException

__all__ = ["AuditPartition", "InputSensor", "RunCommand", "partition", "project_python", "setting"]

ROOT = Path(__file__).resolve().parents[2]
# The child is the project's interpreter: nothing of Airflow's interpreter may leak into it.
_DROPPED_ENV = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
_ERROR_LINES = 20


def setting(key: str, default: str | None = None) -> str | None:
    """Airflow variable ``beam_pipelines_<key>`` (read when a task renders, never at parse time),
    else the environment's ``BEAM_PIPELINES_<KEY>``, else ``default``."""
    env = os.environ.get(f"BEAM_PIPELINES_{key.upper()}", default)
    return Variable.get(f"beam_pipelines_{key}", default=env)


def project_python() -> str:
    """The project's interpreter: the ``python`` setting, else this checkout's .venv, else python3."""
    venv = ROOT / ".venv" / "bin" / "python"
    return setting("python", str(venv) if venv.exists() else "python3")


def partition(dag_run, events=None) -> str:
    """The date (YYYY-MM-DD) a run reads and writes: the partition its upstreams published when
    assets triggered it (the latest, when several), else its logical date, else when it was due."""
    dates = set()
    for evs in (events or {}).values():
        for e in evs:
            extra = getattr(e, "extra", None) or {}
            if extra.get("partition"):
                dates.add(extra["partition"])
    if dates:
        return max(dates)
    when = dag_run.logical_date or dag_run.run_after
    return when.strftime("%Y-%m-%d")


def _child_env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV}


class RunCommand(BaseOperator):
    """Runs one command (an argv list; each element is templated, empty ones are dropped) and logs
    its output. Exit 2 (bad flags or spec) and an audit failure fail the task without retries:
    running it again cannot help. Any other failure is retried.

    Args:
        argv: The command, one element per argument.
        extra_args: A JSON list of further arguments (templated; e.g. a runner's options from a variable).
    """

    template_fields: Sequence[str] = ("argv", "extra_args")
    ui_color = "#e8f0fe"

    def __init__(self, *, argv: list[str], extra_args: str = "[]", **kwargs):
        super().__init__(**kwargs)
        self.argv, self.extra_args = list(argv), extra_args
        self._proc: subprocess.Popen | None = None

    def full_argv(self) -> list[str]:
        try:
            extra = json.loads(self.extra_args or "[]")
        except ValueError as e:
            raise AirflowFailException(f"runner_args must be a JSON list of flags: {e}") from e
        if not isinstance(extra, list) or not all(isinstance(a, str) for a in extra):
            raise AirflowFailException("runner_args must be a JSON list of strings")
        return self.argv + extra

    def run_argv(self, argv: list[str]) -> list[str]:
        """Runs ``argv``; returns the output lines, or raises with the command's error line."""
        argv = [a for a in argv if a != ""]
        self.log.info("running %s", argv)
        self._proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      env=_child_env(), stdin=subprocess.DEVNULL)  # fmt: skip
        lines = []
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            line = line.rstrip("\n")
            lines.append(line)
            self.log.info("%s", line)
        code = self._proc.wait()
        if code == 0:
            return lines
        errors = [x for x in lines if x.startswith("error: ")]
        why = errors[-1][len("error: ") :] if errors else "\n".join(lines[-_ERROR_LINES:])
        message = f"{Path(argv[2] if len(argv) > 2 else argv[0]).name} exited {code}: {why}"
        if code == 2 or why.startswith("audit failed"):
            raise AirflowFailException(message)
        raise AirflowException(message)

    def execute(self, context):
        lines = self.run_argv(self.full_argv())
        return lines[-1] if lines else None

    def on_kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()


class AuditPartition(RunCommand):
    """Checks the published partition (``python -m beam_pipelines.orchestrate.audit``); on success
    the task's assets get an event carrying the partition and its path, which is what starts the
    pipelines that depend on this one.

    Args:
        output: The published partition (templated).
        date: The partition's date (templated).
    """

    template_fields: Sequence[str] = ("argv", "extra_args", "partition_path", "date")

    def __init__(self, *, output: str, date: str, python: str = "{{ bp_python() }}", **kwargs):
        super().__init__(argv=[python, "-m", "beam_pipelines.orchestrate.audit", f"--output={output}"], **kwargs)
        self.partition_path, self.date = output, date

    def execute(self, context):
        lines = self.run_argv(self.full_argv())
        for asset in self.outlets:
            context["outlet_events"][asset].extra = {"partition": self.date, "path": self.partition_path}
        return lines[-1] if lines else None


class InputSensor(BaseSensorOperator):
    """Waits until the input pattern matches a data file (names starting with _ or . are not data).
    A local pattern is globbed here; any other filesystem is asked through the project's Python
    (Beam's filesystems: gs://, s3://, azfs://), as the pipeline will read it.

    Args:
        pattern: The input pattern (templated).
    """

    template_fields: Sequence[str] = ("pattern", "python")

    def __init__(self, *, pattern: str, python: str = "{{ bp_python() }}", **kwargs):
        super().__init__(**kwargs)
        self.pattern, self.python = pattern, python

    def poke(self, context) -> bool:
        if "://" not in self.pattern or self.pattern.startswith("file://"):
            local = self.pattern.removeprefix("file://")
            found = [p for p in glob.glob(local, recursive=True)
                     if os.path.isfile(p) and not os.path.basename(p).startswith(("_", "."))]  # fmt: skip
            self.log.info("%s: %d file(s)", self.pattern, len(found))
            return bool(found)
        argv = [self.python, "-m", "beam_pipelines.orchestrate.audit", f"--exists={self.pattern}"]
        proc = subprocess.run(argv, capture_output=True, text=True, env=_child_env(), stdin=subprocess.DEVNULL)
        self.log.info("%s", (proc.stdout + proc.stderr).strip())
        if proc.returncode not in (0, 3):
            raise AirflowException(f"cannot list {self.pattern}: {proc.stderr.strip()}")
        return proc.returncode == 0
