"""The side worker's process (``beam_pipelines.side_worker``): a Beam SDK harness serving the
off-path stages of a streaming job, at a lower CPU priority than the launcher's worker.

    python -m beam_pipelines.side_worker_process LOG_LEVEL LAUNCHER_PID CACHE_BYTES BUFFER_MS
    (then one line on stdin: CONTROL_ENDPOINT WORKER_ID)

The launcher starts it before it submits the job, and it imports Beam while the job is being
prepared: when the runner asks for the worker, it connects at once. Prism (2.77) runs at most 8
bundles at a time, counting those handed to a worker that has not connected yet: a worker that
started only when asked (1.5-3 s of imports) held six of those places with its waiting bundles,
and the first events of a live run waited for them (p99 2.0-2.7 s in the run's first tenth at
2,000 events/s, 1.5 s after it). The priority is lowered before Beam is imported.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time

__all__ = ["disjoint_short_ids", "main"]

NICE = 10  # the latency path's processes go first when the cores are busy
_PARENT_POLL_S = 1.0
_SHORT_ID_BASE = 1 << 40


def _watch_parent(parent: int) -> None:
    """Exits when the launcher is gone (a kill -9 of the job leaves no one to stop this worker)."""
    while True:
        time.sleep(_PARENT_POLL_S)
        if os.getppid() != parent:
            os._exit(1)


def disjoint_short_ids() -> None:
    """Makes this process's metric short ids unlike the launcher's worker's.

    A worker names each metric by a short id it counts up from 1; Prism 2.77 keeps one table of
    them per job, not per worker, so two workers' "3" would be read as one metric (prism panics
    decoding a progress payload with another metric's type). Counting from 2**40 keeps them apart.
    """
    from apache_beam.runners.worker import sdk_worker

    cache = sdk_worker.SHORT_ID_CACHE
    if not hasattr(cache, "_last_short_id"):
        raise RuntimeError("apache_beam's ShortIdCache has changed: the side worker cannot keep its ids apart")
    with cache._lock:
        cache._last_short_id = max(cache._last_short_id, _SHORT_ID_BASE)


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print(__doc__.split("\n\n")[1].strip(), file=sys.stderr)
        return 2
    level, parent, cache, buffer_ms = argv
    os.nice(NICE)
    # A terminal's Ctrl-C reaches the whole process group: the launcher stops the job (and this
    # worker) and says so in one line, which a traceback from here would follow.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(int(parent),), daemon=True, name="watch-launcher").start()
    logging.basicConfig(level=getattr(logging, level, logging.WARNING), format="%(levelname)s %(name)s: %(message)s")
    if level not in ("DEBUG", "INFO"):
        for name in ("apache_beam.runners.worker", "apache_beam.runners.common"):
            logging.getLogger(name).setLevel(logging.CRITICAL)  # the launcher reports a failure once
    from apache_beam.runners.worker.sdk_worker import SdkHarness

    disjoint_short_ids()
    asked = sys.stdin.readline().split()
    if len(asked) != 2:  # the launcher went on without this worker (no job, or it ended)
        return 0
    control, worker_id = asked
    try:
        SdkHarness(control, worker_id=worker_id, state_cache_size=int(cache),
                   data_buffer_time_limit_ms=int(buffer_ms)).run()  # fmt: skip
    except Exception:  # noqa: BLE001 - the runner went away (a stopped or failed job): the launcher says why
        logging.getLogger(__name__).debug("side worker %s: control stream ended", worker_id, exc_info=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
