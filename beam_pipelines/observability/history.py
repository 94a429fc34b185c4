"""Metrics history: one row per (pipeline, run_id, metric) in SQLite or PostgreSQL.

The launcher records each finished run's metrics (:func:`run_metrics`) and reads the last runs
back for anomaly detection. SQLite is the default (a file under ``<output>/_history/``);
a ``postgresql://`` URL shares the history between machines.
"""

from __future__ import annotations

import math
import os
import sqlite3
from collections.abc import Mapping
from datetime import datetime, timezone

__all__ = ["MetricsHistory", "run_metrics"]

TABLE = "metrics_history"

# Identifiers are constants, quoted; every value goes through a placeholder.
_CREATE = (
    f'CREATE TABLE IF NOT EXISTS "{TABLE}" ('
    " pipeline TEXT NOT NULL, run_id TEXT NOT NULL, metric TEXT NOT NULL,"
    " value DOUBLE PRECISION NOT NULL, recorded_at {ts} NOT NULL,"
    " PRIMARY KEY (pipeline, run_id, metric))"
)
_INDEX = f'CREATE INDEX IF NOT EXISTS "{TABLE}_by_time" ON "{TABLE}" (pipeline, recorded_at)'
_DELETE = f'DELETE FROM "{TABLE}" WHERE pipeline = ? AND run_id = ?'
_INSERT = f'INSERT INTO "{TABLE}" (pipeline, run_id, metric, value, recorded_at) VALUES (?, ?, ?, ?, ?)'
_RUN_TIME = f'SELECT MAX(recorded_at) FROM "{TABLE}" WHERE pipeline = ? AND run_id = ?'
_RUNS = (
    f'SELECT run_id, MAX(recorded_at) AS last_at FROM "{TABLE}" WHERE pipeline = ?{{before}}'
    " GROUP BY run_id ORDER BY last_at DESC, run_id DESC LIMIT ?"
)
_BEFORE = " AND (recorded_at < ? OR (recorded_at = ? AND run_id < ?))"
_VALUES = f'SELECT run_id, metric, value FROM "{TABLE}" WHERE pipeline = ? AND run_id IN ({{marks}})'


def _utc(ts: datetime) -> datetime:
    if not isinstance(ts, datetime) or ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError(f"recorded_at must be a timezone-aware datetime, got {ts!r}")
    return ts.astimezone(timezone.utc)


class MetricsHistory:
    """Per-run metric values of each pipeline, newest last.

    Open with :meth:`open`; close with :meth:`close` or use as a context manager.

    Args:
        conn: An open DB-API connection (sqlite3 or psycopg 3).
        dialect: ``"sqlite"`` or ``"postgresql"``.
    """

    def __init__(self, conn, dialect: str):
        if dialect not in ("sqlite", "postgresql"):
            raise ValueError(f"unknown dialect {dialect!r}")
        self._conn, self._dialect = conn, dialect
        self._create()

    @classmethod
    def open(cls, url: str) -> MetricsHistory:
        """Opens (and creates if missing) the history at ``url``.

        Args:
            url: A path to an SQLite file (``sqlite:///path`` works too; parent directories are
                created), or a ``postgresql://`` / ``postgres://`` connection URL.

        Raises:
            ValueError: For any other URL scheme or an empty URL.
        """
        if not url:
            raise ValueError("a history URL is required")
        if url.startswith(("postgresql://", "postgres://")):
            import psycopg  # only needed for a shared history

            return cls(psycopg.connect(url, autocommit=True), "postgresql")
        if url.startswith("sqlite:///"):
            url = url[len("sqlite:///") - 1 :]
        elif url.startswith("file://"):
            url = url[len("file://") :]
        elif "://" in url:
            raise ValueError(f"history URL must be a file path or postgresql://..., got {url!r}")
        parent = os.path.dirname(os.path.abspath(url))
        os.makedirs(parent, exist_ok=True)
        return cls(sqlite3.connect(url), "sqlite")

    def _sql(self, statement: str) -> str:
        return statement.replace("?", "%s") if self._dialect == "postgresql" else statement

    def _transaction(self):
        # sqlite3's connection context commits; psycopg's would close the connection.
        return self._conn.transaction() if self._dialect == "postgresql" else self._conn

    def _create(self) -> None:
        ts = "TIMESTAMPTZ" if self._dialect == "postgresql" else "TEXT"
        with self._transaction():
            self._conn.execute(_CREATE.format(ts=ts))
            self._conn.execute(_INDEX)

    def _stored(self, ts: datetime):
        # SQLite has no time type: a fixed-width UTC ISO string sorts like the instant.
        ts = _utc(ts)
        return ts if self._dialect == "postgresql" else ts.strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")

    @staticmethod
    def _loaded(value) -> datetime:
        ts = value if isinstance(value, datetime) else datetime.fromisoformat(value)
        return ts.astimezone(timezone.utc)

    def record(self, pipeline: str, run_id: str, recorded_at: datetime, metrics: Mapping[str, float]) -> None:
        """Stores one run's metrics, replacing whatever was stored for the same run id.

        Args:
            pipeline: Pipeline name (history is kept per pipeline).
            run_id: The run's id.
            recorded_at: When the run happened (timezone-aware).
            metrics: Metric name to finite value.

        Raises:
            ValueError: For an empty pipeline/run id, a naive datetime, or a non-finite value.
        """
        if not pipeline or not run_id:
            raise ValueError("pipeline and run_id are required")
        at = self._stored(recorded_at)
        rows = []
        for name, value in sorted(metrics.items()):
            number = float(value)
            if not math.isfinite(number):
                raise ValueError(f"metric {name!r} is not a finite number: {value!r}")
            rows.append((pipeline, run_id, str(name), number, at))
        with self._transaction():
            cur = self._conn.cursor()
            cur.execute(self._sql(_DELETE), (pipeline, run_id))
            cur.executemany(self._sql(_INSERT), rows)

    def last_runs(self, pipeline: str, n: int, before_run_id: str | None = None) -> list[dict]:
        """The last ``n`` recorded runs of ``pipeline``, oldest first.

        Args:
            pipeline: Pipeline name.
            n: How many runs at most.
            before_run_id: When given and recorded, only runs recorded before that one (by
                ``recorded_at``, ties broken by run id); when not recorded, it is just excluded.

        Returns:
            ``[{"run_id", "recorded_at" (UTC datetime), "metrics": {name: value}}]``.
        """
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        cur = self._conn.cursor()
        before, params = "", [pipeline]
        if before_run_id is not None:
            cur.execute(self._sql(_RUN_TIME), (pipeline, before_run_id))
            at = cur.fetchone()[0]
            if at is None:
                before = " AND run_id <> ?"
                params.append(before_run_id)
            else:
                before = _BEFORE
                params += [at, at, before_run_id]
        cur.execute(self._sql(_RUNS.format(before=before)), (*params, n))
        runs = cur.fetchall()
        if not runs:
            return []
        marks = ", ".join("?" for _ in runs)
        cur.execute(self._sql(_VALUES.format(marks=marks)), (pipeline, *(r[0] for r in runs)))
        values: dict[str, dict[str, float]] = {r[0]: {} for r in runs}
        for run_id, metric, value in cur.fetchall():
            values[run_id][metric] = float(value)
        return [
            {"run_id": run_id, "recorded_at": self._loaded(at), "metrics": values[run_id]}
            for run_id, at in reversed(runs)
        ]

    def close(self) -> None:
        """Closes the connection."""
        self._conn.close()

    def __enter__(self) -> MetricsHistory:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _rate(n, total) -> float:
    return float(n) / total if total else 0.0


def run_metrics(report: Mapping, profile: Mapping | None = None) -> dict[str, float]:
    """The numbers of one run worth comparing with earlier runs.

    Rates (per record read) rather than raw counts where input size would otherwise dominate.

    Args:
        report: The run report (``_run/report.json``).
        profile: The curated-data profile, or None.

    Returns:
        ``count.<stage>``, ``dead_letter_rate``, ``dead_letter_rate.<reason>``,
        ``quality_rate.<check>``, ``null_rate.<col>``, ``mean.<col>`` (numeric columns),
        ``distinct.<col>``, ``expectation.<name>.failing``: only finite values.
    """
    out: dict[str, float] = {}
    counts = report.get("counts") or {}
    for stage, n in counts.items():
        out[f"count.{stage}"] = float(n)
    read = float(counts.get("read") or 0)
    out["dead_letter_rate"] = _rate(counts.get("dead_lettered", 0), read)
    for reason, n in (report.get("dead_letter_reasons") or {}).items():
        out[f"dead_letter_rate.{reason}"] = _rate(n, read)
    for check, n in (report.get("quality") or {}).items():
        out[f"quality_rate.{check}"] = _rate(n, read)
    for exp in report.get("expectations") or []:
        if exp.get("failing") is not None:
            out[f"expectation.{exp['name']}.failing"] = float(exp["failing"])
    for col, stats in ((profile or {}).get("columns") or {}).items():
        for key, prefix in (("null_rate", "null_rate"), ("mean", "mean"), ("distinct_approx", "distinct")):
            value = stats.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[f"{prefix}.{col}"] = float(value)
    return {k: v for k, v in out.items() if math.isfinite(v)}
