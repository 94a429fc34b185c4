"""Merges result files of several benchmark runs into one (newest wins per system, format, rows).

    python -m benchmarks.merge OUT.json NEWEST.json [OLDER.json ...] [--note FILE=TEXT ...]

Runs from every file but the first named keep (or get) a ``note`` saying where they came from;
the Markdown table and the chart are rewritten beside OUT.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.run import chart, markdown


def merge(files: list[Path], notes: dict[str, str]) -> dict:
    merged: dict = {}
    order: list = []
    first = None
    for path in files:
        doc = json.loads(path.read_text())
        first = first or doc
        for run in doc["runs"]:
            key = (run["system"], run["format"], run["rows"])
            if key in merged:
                continue
            if path.name in notes and not run.get("note"):
                run = {**run, "note": notes[path.name]}
            merged[key] = run
            order.append(key)
    fmt_rank = {"parquet": 0, "jsonl": 1}
    order.sort(key=lambda k: (fmt_rank.get(k[1], 2), k[2], k[0]))
    return {
        "machine": first["machine"],
        "repeat": first.get("repeat", 1),
        "repeat_budget": first.get("repeat_budget", 0),
        "runs": [merged[k] for k in order],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.merge", description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("files", nargs="+", help="Result files, newest first.")
    parser.add_argument("--note", action="append", default=[], help="FILE=TEXT: a note for the runs from FILE.")
    args = parser.parse_args(argv)
    notes = dict(n.split("=", 1) for n in args.note)
    result = merge([Path(f) for f in args.files], notes)
    out = Path(args.out)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    chart(result, out.with_suffix(".png"))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
