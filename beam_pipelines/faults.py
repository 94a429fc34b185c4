"""Fault points for the fault tests: a run stops, dies or waits at a named point of its work.

Enabled only through the environment variable ``BEAM_PIPELINES_FAULTS`` (which the tests set):
``point=action[,point=action...]`` where action is ``kill`` (SIGKILL of this process),
``raise`` (an exception, as a crash of the code would) or ``wait:PATH`` (wait until the file
PATH exists: the test decides when the run goes on). Without the variable, ``at()`` does nothing.
"""

from __future__ import annotations

import os
import signal
import time

__all__ = ["ENV", "FaultInjected", "at"]

ENV = "BEAM_PIPELINES_FAULTS"
_WAIT_LIMIT_S = 600


class FaultInjected(RuntimeError):
    """The ``raise`` action."""


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
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif action == "raise":
            raise FaultInjected(f"fault injected at {point}")
        elif action.startswith("wait:"):
            path, deadline = action[len("wait:") :], time.monotonic() + _WAIT_LIMIT_S
            while not os.path.exists(path) and time.monotonic() < deadline:
                time.sleep(0.05)
        else:
            raise ValueError(f"{ENV}: unknown action {action!r} at {point}")
