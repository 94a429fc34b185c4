"""Fault points for the fault tests: a run stops, dies or waits at a named point of its work.

Enabled only through the environment variable ``BEAM_PIPELINES_FAULTS`` (which the tests set):
``point=action[,point=action...]`` where action is ``kill`` (SIGKILL of the whole run, as a
machine crash would), ``raise`` (an exception, as a crash of the code would), ``wait:PATH``
(wait until the file PATH exists: the test decides when the run goes on) or ``kill_if:PATH``
(``kill`` once the file PATH exists: the test decides when a point met again and again, in a
stream, is the last). Without the variable, ``at()`` does nothing.

Points: ``parse``, ``dedup`` (after the dedup shuffle), ``aggregate`` (a window finalised),
``write:<output>`` (a file of ``curated``, ``aggregates``, ``dlq`` or ``report`` written),
``before_publish``, ``publish`` (one output moved into place, the others not yet),
``lakehouse:<layer>`` (that layer's Delta table committed, the next tables not yet),
``tier:moved`` (maintenance: partitions appended to the cold tier, not yet deleted from the hot),
``erase:<layer>`` (an erasure done with that layer, gold, silver or bronze; the rest not yet),
``report`` (published, the run's record not yet written) and, streaming, ``mirror:applied`` (a
change table committed by a CDC mirror, the source not yet told). Points inside the pipeline run on
worker processes, so ``kill`` kills the launcher that ``arm()`` recorded (and its process group
when it leads one), not only the worker.
"""

from __future__ import annotations

import os
import signal
import time

__all__ = ["ENV", "FaultInjected", "arm", "at"]

ENV = "BEAM_PIPELINES_FAULTS"
_ROOT = "BEAM_PIPELINES_FAULTS_ROOT"  # the launcher's pid, inherited by its worker processes
_WAIT_LIMIT_S = 600


class FaultInjected(RuntimeError):
    """The ``raise`` action."""


def arm() -> None:
    """Records this process as the run's launcher (call once, at start, before any worker exists)."""
    if os.environ.get(ENV):
        os.environ[_ROOT] = str(os.getpid())


def _kill_run() -> None:
    root = int(os.environ.get(_ROOT) or os.getpid())
    try:
        if os.getpgid(root) == root:  # the launcher leads its own group: its workers die with it
            os.killpg(root, signal.SIGKILL)
        os.kill(root, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.kill(os.getpid(), signal.SIGKILL)


def at(point: str) -> None:
    """Carries out the action set for ``point``, if any."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    for item in spec.split(","):
        name, _, action = item.partition("=")
        if name.strip() != point:
            continue
        action = action.strip()
        if action == "kill" or (action.startswith("kill_if:") and os.path.exists(action[len("kill_if:") :])):
            _kill_run()
        elif action.startswith("kill_if:"):
            continue
        elif action == "raise":
            raise FaultInjected(f"fault injected at {point}")
        elif action.startswith("wait:"):
            path, deadline = action[len("wait:") :], time.monotonic() + _WAIT_LIMIT_S
            while not os.path.exists(path) and time.monotonic() < deadline:
                time.sleep(0.05)
        else:
            raise ValueError(f"{ENV}: unknown action {action!r} at {point}")
