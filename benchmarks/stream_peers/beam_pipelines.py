"""This project's ``events`` pipeline as a streaming-benchmark system: the streaming CLI on Prism,
unbounded, one-second early firings."""

from __future__ import annotations

import argparse
import os
import sys

from benchmarks.stream_peers import READY  # noqa: F401 - the line the CLI prints is READY's


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stream_peers.beam_pipelines")
    for flag in ("bootstrap", "topic", "dsn", "table", "work"):
        parser.add_argument(f"--{flag}", required=True)
    parser.add_argument("--window_seconds", type=int, default=3600)
    args = parser.parse_args(argv)
    cli = [sys.executable, "-m", "beam_pipelines.main", "--pipeline=events", "--streaming", "--runner=PrismRunner",
           f"--kafka_bootstrap={args.bootstrap}", f"--kafka_topic={args.topic}", f"--pg_dsn={args.dsn}",
           f"--pg_table={args.table}", f"--output={args.work}/out", f"--window_seconds={args.window_seconds}",
           "--early_firing_seconds=1"]  # fmt: skip
    os.execv(cli[0], cli)  # the harness's signals and process group reach the job itself
    return 0


if __name__ == "__main__":
    sys.exit(main())
