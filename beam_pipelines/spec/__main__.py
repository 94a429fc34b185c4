"""Pipeline specs from the command line.

    python -m beam_pipelines.spec schema [--out FILE]   # the JSON Schema of the spec format
    python -m beam_pipelines.spec check SPEC [--mode batch|streaming|both]
    python -m beam_pipelines.spec types                 # the step types and their config keys

``check`` compiles a spec as a run would, before any data is read, and prints its plan; a
mistake is one ``error:`` line naming its place in the file, and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from beam_pipelines.spec.build import spec_path
from beam_pipelines.spec.compile import compile_spec
from beam_pipelines.spec.config import EventsConfig
from beam_pipelines.spec.jsonschema import spec_schema
from beam_pipelines.spec.steps import STEP_TYPES
from beam_pipelines.spec.yamlsrc import SpecError, load

# Stand-ins for the flags a check does not have: they are substituted like real values.
_CHECK_FLAGS = {
    "batch": {},
    "streaming": {"streaming": True, "input_format": "jsonl", "kafka_bootstrap": "check:9092", "kafka_topic": "check",
                  "pg_dsn": "postgresql://check@localhost/check"},
}  # fmt: skip


def _modes(doc) -> list[str]:
    given = {t.get("mode") for t in doc["pipeline"]["transforms"] if isinstance(t, dict)}
    return ["batch", "streaming"] if "streaming" in given else ["batch"]


def check(path: str, mode: str, out=None) -> int:
    out = out or sys.stdout
    doc = load(path)
    modes = _modes(doc) if mode == "both" else [mode]
    for m in modes:
        cfg = EventsConfig(**{"input": None, "input_format": None, "output": "check", **_CHECK_FLAGS[m]})
        plan = compile_spec(doc, cfg, path)
        chain = " -> ".join(n.step.name for n in plan.chain)
        out.write(f"ok: {path}: pipeline {plan.name} ({m}): {chain}\n")
        out.write(f"  curated columns: {', '.join(c for c in plan.curated.columns if not c.startswith('_'))}\n")
        for n in plan.aggregates:
            out.write(f"  aggregate {n.step.name}: {', '.join(n.columns)}\n")
        for n in plan.sinks:
            out.write(f"  sink {n.step.name} ({n.step.type}): {n.step.describe()}\n")
        if plan.pii is not None:
            from beam_pipelines.pii.policy import describe

            for line in describe(plan.pii, [n.step for n in plan.sinks]):
                out.write(f"  pii {line}\n")
    return 0


def types(out=None) -> int:
    out = out or sys.stdout
    for name, cls in sorted(STEP_TYPES.items()):
        props = cls.config_schema.get("properties", {})
        required = set(cls.config_schema.get("required", ()))
        keys = ", ".join(k + ("" if k in required else "?") for k in props)
        out.write(f"{name} ({cls.kind}; {'/'.join(cls.modes)})\n    {cls.doc}\n    config: {keys or '-'}\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m beam_pipelines.spec", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_schema = sub.add_parser("schema", help="Print (or write) the JSON Schema of the spec format.")
    p_schema.add_argument("--out", help="Write it to this file instead of standard output.")
    p_check = sub.add_parser("check", help="Check a spec (a file, or a packaged pipeline's name) and print its plan.")
    p_check.add_argument("spec")
    p_check.add_argument("--mode", choices=["batch", "streaming", "both"], default="both",
                         help="Mode(s) to check. Default: both when the spec has streaming steps.")  # fmt: skip
    sub.add_parser("types", help="List the step types with their config keys (? = optional).")
    args = parser.parse_args(argv)
    try:
        if args.command == "schema":
            text = json.dumps(spec_schema(), indent=2) + "\n"
            if args.out:
                with open(args.out, "w", encoding="utf-8") as fh:
                    fh.write(text)
            else:
                sys.stdout.write(text)
            return 0
        if args.command == "check":
            return check(spec_path(args.spec), args.mode)
        return types()
    except SpecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
