"""Worker processes forked before the run starts, so a worker does not spend a second
importing Beam, Arrow and the transforms when the runner asks for it.

The direct runner starts each worker with a shell command and talks to it over gRPC, with
the addresses in the command's environment. :class:`WarmWorkers` forks children of the
launcher (which has imported everything a worker needs) that wait on a Unix socket; the
command the runner is given (``python -m beam_pipelines.warm_workers <socket>``) is a small
client that hands its environment to one waiting child, then waits for that child's exit
status and exits with it. A client that finds no child waiting becomes an ordinary worker.

Forking is only safe while the launcher runs a single thread and holds no gRPC channel: the
pool is started before the runner and refuses (falling back to ordinary workers) otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import select
import shlex
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback

# What the runner passes to a worker through its environment.
_ENV = ("CONTROL_API_SERVICE_DESCRIPTOR", "LOGGING_API_SERVICE_DESCRIPTOR", "PIPELINE_OPTIONS", "WORKER_ID")
_LOGGER = logging.getLogger(__name__)
_WORKER_MODULE = "apache_beam.runners.worker.sdk_worker_main"
CLAIM_SECONDS = 10.0  # a client no child answers within this becomes an ordinary worker
REAP_SECONDS = 10.0  # after the run, how long a worker may take to exit before it is killed
_ACCEPTED = b"\x06"


def _reap(pids: list[int], timeout: float) -> None:
    """Waits for the children to exit; those still running after ``timeout`` are killed."""
    deadline = time.monotonic() + timeout
    waiting = list(pids)
    while waiting:
        for pid in list(waiting):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                waiting.remove(pid)
        if waiting and time.monotonic() > deadline:
            for pid in waiting:
                os.kill(pid, signal.SIGKILL)
            deadline = float("inf")
        elif waiting:
            time.sleep(0.02)


class WarmWorkers:
    """Forked, waiting worker processes; use as a context manager around the run.

    Args:
        count: How many workers to fork.
        stderr_path: File that the workers' stderr is appended to (None: inherited).
        run: What a claimed worker runs, with the client's environment in ``os.environ``
            (default: Beam's SDK harness); an exception is exit status 1.
    """

    def __init__(self, count: int, stderr_path: str | None = None, run=None):
        if count < 1:
            raise ValueError("count must be >= 1")
        self._count, self._stderr_path, self._run = count, stderr_path, run
        self._dir = self._listener = self._alive_w = None
        self._pids: list[int] = []

    def command(self) -> str | None:
        """The worker command for the runner, or None when no worker could be forked."""
        if not self._pids:
            return None
        path = os.path.join(self._dir, "claim.sock")
        return f"{shlex.quote(sys.executable)} -m beam_pipelines.warm_workers {shlex.quote(path)}"

    def __enter__(self) -> WarmWorkers:
        if threading.active_count() > 1 or not hasattr(os, "fork"):
            # A fork would copy locks other threads hold: workers start as new interpreters.
            _LOGGER.info("worker processes start fresh (%d threads running)", threading.active_count())
            return self
        import apache_beam.runners.worker.sdk_worker_main  # noqa: F401  (what the children run)

        self._dir = tempfile.mkdtemp(prefix="beam_pipelines-workers-")
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._listener.bind(os.path.join(self._dir, "claim.sock"))
        except OSError as e:  # e.g. a socket path longer than the system allows
            _LOGGER.info("worker processes start fresh (%s)", e)
            self.__exit__()
            self._listener = self._dir = None
            return self
        self._listener.listen(self._count)
        self._listener.setblocking(False)
        alive_r, self._alive_w = os.pipe()
        for _ in range(self._count):
            sys.stdout.flush(), sys.stderr.flush()
            pid = os.fork()
            if pid == 0:  # the child never returns into the launcher's code
                status = 1
                try:
                    os.close(self._alive_w)
                    status = _serve(self._listener, alive_r, self._stderr_path, self._run)
                finally:
                    os._exit(status)
            self._pids.append(pid)
        os.close(alive_r)
        _LOGGER.info("forked %d worker processes before the run", len(self._pids))
        return self

    def __exit__(self, *exc) -> None:
        if self._alive_w is not None:
            os.close(self._alive_w)  # children still waiting see the pipe close and leave
        if self._listener is not None:
            self._listener.close()
        _reap(self._pids, REAP_SECONDS)
        if self._dir:
            for name in os.listdir(self._dir):
                os.remove(os.path.join(self._dir, name))
            os.rmdir(self._dir)


def _serve(listener: socket.socket, alive_r: int, stderr_path: str | None, run) -> int:
    """A forked child: waits for one claim (or for the launcher to finish), then runs the
    worker with the claimed environment and reports its exit status to the client."""
    while True:
        ready, _, _ = select.select([listener, alive_r], [], [])
        if alive_r in ready:
            return 0
        try:
            conn, _ = listener.accept()
        except BlockingIOError:  # another child took this client
            continue
        conn.setblocking(True)
        data = _claimed(conn)
        if data is not None:
            break
        conn.close()  # the client gave up waiting: wait for the next one
    listener.close()
    os.close(alive_r)
    os.environ.update(json.loads(data))
    if stderr_path:
        fd = os.open(stderr_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(fd, 2)
        os.close(fd)
    if run is None:
        from apache_beam.runners.worker import sdk_worker_main

        def run():
            sdk_worker_main.main([])

    status = 0
    try:
        run()
    except BaseException:  # noqa: BLE001  (the harness has logged it; the status says it failed)
        traceback.print_exc()
        status = 1
    sys.stdout.flush(), sys.stderr.flush()
    conn.sendall(bytes([status]))
    conn.close()
    return status


def _claimed(conn: socket.socket) -> bytes | None:
    """Answers a client and reads its environment (None if it has gone)."""
    try:
        conn.sendall(_ACCEPTED)
        data = b""
        while not data.endswith(b"\n"):
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
    except OSError:
        return None
    return data


def _claim(path: str) -> int:
    """The client the runner starts: hands its environment to a waiting child and returns its
    exit status; without one, becomes an ordinary worker process."""
    env = {k: os.environ[k] for k in _ENV if k in os.environ}
    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(path)
        conn.settimeout(CLAIM_SECONDS)
        if conn.recv(1) != _ACCEPTED:
            raise ConnectionError("no worker answered")
        conn.settimeout(None)
    except OSError:  # no pool, or every forked worker is taken
        os.execv(sys.executable, [sys.executable, "-m", _WORKER_MODULE])
    conn.sendall(json.dumps(env).encode() + b"\n")
    last = b""
    while chunk := conn.recv(65536):
        last = chunk[-1:]
    return last[0] if last else 1


if __name__ == "__main__":
    sys.exit(_claim(sys.argv[1]))
