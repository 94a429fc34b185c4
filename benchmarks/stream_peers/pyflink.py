"""PyFlink as a streaming-benchmark system (see ``benchmarks.stream_peers``): a Flink SQL job
(``benchmarks.stream_peers.flink_job``) on PyFlink's local mini-cluster, Kafka in, JDBC upserts
into PostgreSQL out.

apache-flink pins its own apache-beam, pandas and numpy, so it runs in its own virtualenv with
the connector jars beside it (``scripts/pyflink.sh``, set up on first use). This module, started
with the project's interpreter, creates the result table (the JDBC connector writes into an
existing one), then replaces itself with the job on that virtualenv's interpreter; the job's JVM
logs to ``--work`` and says on stdout when it consumes each partition
(``pyflink-log4j2.properties``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def jdbc_url(dsn: str) -> tuple[str, str, str]:
    """The JDBC URL, user and password of a libpq DSN (the password is kept off command lines)."""
    info = conninfo_to_dict(dsn)
    host, port, db = info.get("host", "127.0.0.1"), info.get("port", "5432"), info.get("dbname", "postgres")
    return f"jdbc:postgresql://{host}:{port}/{quote(db)}", info.get("user", ""), info.get("password", "")


def create_table(dsn: str, table: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
        conn.execute(sql.SQL("CREATE TABLE {} (window_start timestamptz, event_type text, country text, "
                             "events bigint, users bigint, amount_sum numeric(20, 2), "
                             "PRIMARY KEY (window_start, event_type, country))").format(sql.Identifier(table)))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.stream_peers.pyflink", description=__doc__.split("\n\n")[0]
    )
    for flag in ("bootstrap", "topic", "dsn", "table", "work"):
        parser.add_argument(f"--{flag}", required=True)
    parser.add_argument("--window_seconds", type=int, default=3600)
    parser.add_argument("--flush_seconds", type=float, default=1.0)
    args = parser.parse_args(argv)
    setup = subprocess.run([str(ROOT / "scripts/pyflink.sh"), "setup"], capture_output=True, text=True)
    if setup.returncode != 0:
        sys.stderr.write(setup.stderr)
        return setup.returncode
    python, jars = setup.stdout.split()[-2:]
    create_table(args.dsn, args.table)
    url, user, password = jdbc_url(args.dsn)
    env = dict(os.environ, FLINK_LOG_DIR=str(Path(args.work).resolve()),
               LOG4J_PROPERTIES=str(HERE / "pyflink-log4j2.properties"),
               JVM_ARGS="-Duser.timezone=UTC")  # fmt: skip
    env["BENCH_PG_PASSWORD"] = password
    job = [python, "-m", "benchmarks.stream_peers.flink_job", f"--bootstrap={args.bootstrap}",
           f"--topic={args.topic}", f"--jdbc_url={url}", f"--user={user}", f"--table={args.table}", f"--jars={jars}",
           f"--window_seconds={args.window_seconds}", f"--flush_seconds={args.flush_seconds}"]  # fmt: skip
    os.execve(python, job, env)  # the harness's signals and process group reach the job and its JVM
    return 0


if __name__ == "__main__":
    sys.exit(main())
