"""Quix Streams as a streaming-benchmark system (see ``benchmarks.stream_peers``); the
Application is ``benchmarks.stream_peers.quix_app``.

quixstreams pins confluent-kafka and pydantic below the project's own pins, so it runs in its
own virtualenv (``scripts/quix.sh``, created on first use): this module, started with the
project's interpreter, replaces itself with the Application on that virtualenv's interpreter.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    setup = subprocess.run([str(ROOT / "scripts/quix.sh"), "python"], capture_output=True, text=True)
    if setup.returncode != 0:
        sys.stderr.write(setup.stderr)
        return setup.returncode
    python = setup.stdout.split()[-1]
    os.execv(python, [python, "-m", "benchmarks.stream_peers.quix_app", *argv])  # signals reach the app itself
    return 0


if __name__ == "__main__":
    sys.exit(main())
