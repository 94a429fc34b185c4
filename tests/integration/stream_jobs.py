"""Unbounded streaming CLI jobs for tests: started in their own process group, stderr kept in a
file (a pipe nobody drains fills up during a long outage and blocks the job), and waited on
until PostgreSQL holds the rows a test expects."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

from tests.e2e.helpers import ROOT
from tests.integration.test_streaming_kafka import pg_rows


class StreamJob:
    """``python -m beam_pipelines.main ARGS`` running until :meth:`kill` (a context manager)."""

    def __init__(self, args: list[str], log: Path):
        self.log = log
        with open(log, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "beam_pipelines.main", *args],
                cwd=ROOT,
                env=dict(os.environ, PYTHONPATH=str(ROOT)),
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,  # its own process group: prism and the SDK worker die with it
            )

    def __enter__(self) -> StreamJob:
        return self

    def __exit__(self, *_) -> None:
        self.kill()

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def assert_running(self) -> None:
        assert self.proc.poll() is None, f"the job ended ({self.proc.returncode}):\n{self.stderr()[-4000:]}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)


def rows_or_none(dsn: str, table: str, read: Callable[[str, str], list] = pg_rows) -> list[tuple] | None:
    """The rows ``read`` returns (the events aggregates by default), or None while the table or
    the server is not there."""
    try:
        return read(dsn, table)
    except (psycopg.OperationalError, psycopg.errors.UndefinedTable):
        return None


def wait_for_rows(
    job: StreamJob,
    dsn: str,
    table: str,
    done: Callable[[list | None], bool],
    timeout_s: float = 300,
    read: Callable[[str, str], list] = pg_rows,
):
    """Polls the table until ``done(rows)`` while the job keeps running; the last rows read."""
    deadline, rows = time.monotonic() + timeout_s, None
    while not done(rows := rows_or_none(dsn, table, read)):
        job.assert_running()
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    return rows
