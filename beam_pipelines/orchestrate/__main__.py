"""``python -m beam_pipelines.orchestrate link|check``: DAG files for a folder of specs.

link SPECS DAGS   writes DAGS/<name>.py for every spec in SPECS (one small file per spec, naming
                  it by a path relative to DAGS) and removes the files of specs that are gone
check SPECS       each spec's schedule and dependencies, as the DAG factory will judge them
                  (exit 1 when one is wrong); needs no Airflow
"""

from __future__ import annotations

import argparse
import os
import sys

from beam_pipelines.orchestrate.schedule import Schedule, read_schedules

__all__ = ["link", "main"]

MARK = "# Made by `python -m beam_pipelines.orchestrate link`"
STUB = """{mark}: the airflow DAG of one pipeline spec.
# The DAG is built from the spec when Airflow parses this file (beam_pipelines/orchestrate/dags.py).
from beam_pipelines.orchestrate.dags import dag_for_spec

dag = dag_for_spec({spec!r}, __file__)
"""


def link(specs: str, dags: str) -> list[str]:
    """Writes one DAG file per spec of ``specs`` into ``dags``; returns the files written."""
    os.makedirs(dags, exist_ok=True)
    wanted = {}
    for path in read_schedules(specs):
        name = os.path.splitext(os.path.basename(path))[0]
        spec = os.path.relpath(os.path.abspath(path), os.path.abspath(dags))
        # Relative when specs and DAG files sit side by side (they move together), else absolute.
        wanted[f"{name}.py"] = spec if not spec.startswith(os.path.join("..", "..")) else os.path.abspath(path)
    for entry in os.listdir(dags):  # files of specs that are gone (only those this command made)
        full = os.path.join(dags, entry)
        if entry.endswith(".py") and entry not in wanted and os.path.isfile(full):
            with open(full, encoding="utf-8") as fh:
                if fh.readline().startswith(MARK):
                    os.remove(full)
    written = []
    for entry, spec in sorted(wanted.items()):
        full = os.path.join(dags, entry)
        text = STUB.format(mark=MARK, spec=spec)
        if not os.path.exists(full) or open(full, encoding="utf-8").read() != text:
            with open(full, "w", encoding="utf-8") as fh:
                fh.write(text)
        written.append(full)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m beam_pipelines.orchestrate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("link", help="write one DAG file per spec")
    p.add_argument("specs")
    p.add_argument("dags")
    p = sub.add_parser("check", help="check every spec's schedule and dependencies")
    p.add_argument("specs")
    args = parser.parse_args(argv)
    if args.command == "link":
        for path in link(args.specs, args.dags):
            print(path)
        return 0
    bad = 0
    for s in read_schedules(args.specs).values():
        if isinstance(s, Schedule):
            when = s.cron or (f"after {', '.join(s.depends_on)}" if s.depends_on else "by hand")
            print(
                f"ok    {s.name}: {when}, retries {s.retries}" + (f", deadline {s.deadline:g}s" if s.deadline else "")
            )
        else:
            bad += 1
            print(f"error {s}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
