"""A spec's ``pipeline.schedule``: when it runs, after which pipelines, with what retries and deadline.

Read with the spec loader only (PyYAML): the Airflow DAG factory uses this where neither Beam nor
pyarrow is installed, and the spec checker uses the same shape. Everything a schedule can get
wrong is a SpecError naming the spec file and the key: a bad cron expression or duration, an
upstream pipeline no spec in the folder defines, a dependency cycle, an input naming a pipeline
it does not depend on.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import date

from beam_pipelines.spec.shape import check, duration, duration_seconds
from beam_pipelines.spec.yamlsrc import SpecError, did_you_mean, line_of, load

__all__ = ["SCHEDULE_SCHEMA", "Schedule", "check_cron", "input_parts", "read_schedules", "schedule_of"]

_NAME = r"^[a-z][a-z0-9_]*$"
RUNNERS = ("DirectRunner", "PrismRunner", "FlinkRunner", "SparkRunner", "DataflowRunner")
SCHEDULE_SCHEMA = {
    "type": "object",
    "description": "How Airflow runs this pipeline (the DAG factory, beam_pipelines/orchestrate): cron or "
    "depends_on, the input of a run, retries, the deadline.",
    "properties": {
        "cron": {
            "type": "string",
            "description": "When it runs: five cron fields (minute hour day month weekday) or @hourly, @daily, "
            "@weekly, @monthly, @yearly. Not with depends_on.",
        },
        "depends_on": {
            "type": "array",
            "minItems": 1,
            "items": {"type": "string", "pattern": _NAME},
            "description": "Pipelines whose published output this one reads: it runs when each of them has "
            "published (Airflow assets). Not with cron.",
        },
        "input": {
            "type": "string",
            "description": "The run's --input pattern. {date} is the run's partition (YYYY-MM-DD), {data} the "
            "landing root (Airflow variable beam_pipelines_data), {output:NAME} the partition pipeline NAME "
            "published for the same date.",
        },
        "input_format": {"enum": ["jsonl", "csv", "avro", "parquet"], "description": "Default: from the input."},
        "runner": {
            "enum": list(RUNNERS),
            "description": "Default DirectRunner; the Airflow variable beam_pipelines_runner overrides it.",
        },
        "start_date": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$", "description": "Default 2024-01-01."},
        "retries": {"type": "integer", "minimum": 0, "maximum": 20, "description": "Retries per task. Default 3."},
        "retry_delay": duration("Before the first retry; doubled after each (exponential backoff). Default 5m.", 0),
        "max_retry_delay": duration("The longest wait between retries. Default 1h.", 0),
        "deadline": duration("Alert when a run has not finished this long after it was queued. Default: none.", 1),
        "timeout": duration("Kill the pipeline run after this long (then it is retried). Default: none.", 1),
    },
}
_CRON_PRESETS = ("@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@annually")
# minute, hour, day of month, month, day of week (0-7; names are left to Airflow's checker).
_CRON_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_INPUT_REF = re.compile(r"\{([^{}]*)\}")


@dataclass(frozen=True)
class Schedule:
    """A checked ``pipeline.schedule``; durations in seconds.

    Args:
        name: The pipeline's name.
        spec: The spec file (absolute path).
        cron: The cron expression, or None (then ``depends_on`` or manual runs only).
        depends_on: Upstream pipeline names.
        input: The input pattern with {date}, {data}, {output:NAME}; None: the spec's own.
        input_format: The input format, or None.
        runner: The runner when no Airflow variable says otherwise.
        start_date: The first date a schedule covers.
        retries: Retries per task.
        retry_delay: Seconds before the first retry.
        max_retry_delay: The longest wait between retries.
        deadline: Seconds after a run is queued by which it must have finished, or None.
        timeout: Seconds the pipeline run may take, or None.
        lakehouse: Whether the spec writes Delta tables (WriteLakehouse): the DAG then maintains
            them after each audited run (``python -m beam_pipelines.lakehouse maintain``).
    """

    name: str
    spec: str
    cron: str | None = None
    depends_on: tuple = ()
    input: str | None = None
    input_format: str | None = None
    runner: str = "DirectRunner"
    start_date: date = date(2024, 1, 1)
    retries: int = 3
    retry_delay: float = 300
    max_retry_delay: float = 3600
    deadline: float | None = None
    timeout: float | None = None
    lakehouse: bool = False


def check_cron(expr: str) -> str | None:
    """Why ``expr`` is not a cron expression this format takes, or None."""
    if expr in _CRON_PRESETS:
        return None
    if expr.startswith("@"):
        return f"unknown preset {expr!r} (presets: {', '.join(_CRON_PRESETS)})"
    fields = expr.split()
    if len(fields) != 5:
        return f"{expr!r} has {len(fields)} fields; cron takes 5 (minute hour day month weekday)"
    names = ("minute", "hour", "day", "month", "weekday")
    for field, (lo, hi), what in zip(fields, _CRON_RANGES, names):
        for part in field.split(","):
            m = re.fullmatch(r"(\*|(\d+)(?:-(\d+))?|[A-Za-z]{3}(?:-[A-Za-z]{3})?)(?:/(\d+))?", part)
            if not m:
                return f"{what} field {field!r} is not a cron field"
            for n in (m.group(2), m.group(3)):
                if n is not None and not lo <= int(n) <= hi:
                    return f"{what} {n} is out of range {lo}-{hi}"
            if m.group(4) is not None and int(m.group(4)) == 0:
                return f"{what} field {field!r} steps by 0"
    return None


def input_parts(pattern: str) -> list:
    """``pattern`` as literal text and placeholders: ``("text", s)``, ``("date",)``, ``("data",)``,
    ``("output", name)``; ValueError for an unknown placeholder or Jinja markup."""
    if any(t in pattern for t in ("{{", "{%", "{#", "}}")):
        raise ValueError("Jinja markup is not taken here: use {date}, {data} or {output:NAME}")
    parts, pos = [], 0
    for m in _INPUT_REF.finditer(pattern):
        if m.start() > pos:
            parts.append(("text", pattern[pos : m.start()]))
        ref = m.group(1)
        if ref in ("date", "data"):
            parts.append((ref,))
        elif ref.startswith("output:") and re.fullmatch(_NAME, ref[7:]):
            parts.append(("output", ref[7:]))
        else:
            raise ValueError(f"unknown placeholder {{{ref}}} (known: {{date}}, {{data}}, {{output:NAME}})")
        pos = m.end()
    if pos < len(pattern):
        parts.append(("text", pattern[pos:]))
    if any("{" in p[1] or "}" in p[1] for p in parts if p[0] == "text"):
        raise ValueError("an unmatched { or } (placeholders are {date}, {data}, {output:NAME})")
    return parts


def schedule_of(doc, file: str) -> Schedule:
    """The checked schedule of a loaded spec (without one: run by hand only); SpecError at the first mistake."""
    pipe = doc.get("pipeline") if isinstance(doc, dict) else None
    if not isinstance(pipe, dict) or "name" not in pipe:
        raise SpecError("pipeline.name", "a spec needs pipeline.name", file, getattr(doc, "line", 0))
    check(pipe.get("name"), {"type": "string", "pattern": _NAME}, "pipeline.name", file, pipe, "name")
    given = pipe.get("schedule")
    steps = pipe.get("transforms") if isinstance(pipe.get("transforms"), list) else []
    lakehouse = any(isinstance(t, dict) and t.get("type") == "WriteLakehouse" for t in steps)
    if given is None:  # run by hand (or by the API) only
        return Schedule(name=pipe["name"], spec=os.path.abspath(file), lakehouse=lakehouse)
    check(given, SCHEDULE_SCHEMA, "pipeline.schedule", file, pipe, "schedule")

    def fail(key: str, message: str):
        raise SpecError(f"pipeline.schedule.{key}", message, file, line_of(given, key))

    cron, deps = given.get("cron"), tuple(given.get("depends_on") or ())
    if cron is not None and deps:
        fail("depends_on", "give cron or depends_on, not both (a dependent pipeline runs when its upstreams publish)")
    if cron is not None and (why := check_cron(cron.strip())):
        fail("cron", why)
    if pipe["name"] in deps:
        fail("depends_on", f"{pipe['name']} cannot depend on itself")
    if len(set(deps)) != len(deps):
        fail("depends_on", "names an upstream twice")
    if "input" in given:
        try:
            parts = input_parts(given["input"])
        except ValueError as e:
            fail("input", str(e))
        for p in parts:
            if p[0] == "output" and p[1] not in deps:
                fail("input", f"reads {{output:{p[1]}}} but {p[1]} is not in depends_on")
    try:
        start = date.fromisoformat(given.get("start_date", "2024-01-01"))
    except ValueError as e:
        fail("start_date", str(e))
    seconds = {k: duration_seconds(given[k]) for k in ("retry_delay", "max_retry_delay", "deadline", "timeout")
               if k in given}  # fmt: skip
    return Schedule(
        name=pipe["name"],
        spec=os.path.abspath(file),
        cron=cron.strip() if cron is not None else None,
        depends_on=deps,
        input=given.get("input"),
        input_format=given.get("input_format"),
        runner=given.get("runner", "DirectRunner"),
        start_date=start,
        retries=given.get("retries", 3),
        lakehouse=lakehouse,
        **seconds,
    )


def read_schedules(folder: str) -> dict:
    """Every ``*.yaml`` spec of ``folder`` (files ending .expectations.yaml are not specs) by file:
    its Schedule, or the SpecError that makes its DAG fail to import.

    Dependencies are checked across the folder: an upstream no spec defines, and every spec on a
    dependency cycle, are errors of the specs that declare them; the other specs are unaffected.
    """
    out: dict = {}
    for entry in sorted(os.listdir(folder)):
        path = os.path.join(folder, entry)
        if not entry.endswith((".yaml", ".yml")) or entry.endswith(".expectations.yaml") or not os.path.isfile(path):
            continue
        try:
            doc = load(path)
            if not (isinstance(doc, dict) and "pipeline" in doc):
                continue  # not a spec (a contract, expectations)
            out[path] = (doc, schedule_of(doc, path))
        except SpecError as e:
            out[path] = (None, e)
    by_name = {s.name: p for p, (_, s) in out.items() if isinstance(s, Schedule)}
    names = {}
    for p, (doc, _) in out.items():
        if doc is not None and isinstance(doc.get("pipeline"), dict):
            names.setdefault(doc["pipeline"].get("name"), p)
    result = {p: s for p, (_, s) in out.items()}
    for p, (doc, s) in out.items():
        if not isinstance(s, Schedule):
            continue
        given = doc["pipeline"].get("schedule")
        for up in s.depends_on:
            if up not in names:
                hint = (
                    did_you_mean(up, names) or f" (pipelines in {folder}: {', '.join(sorted(n for n in names if n))})"
                )
                result[p] = SpecError("pipeline.schedule.depends_on", f"unknown upstream pipeline {up!r}{hint}", p,
                                      line_of(given, "depends_on"))  # fmt: skip
                break
    for p, cycle in _cycles(by_name, result).items():
        given = out[p][0]["pipeline"]["schedule"]
        result[p] = SpecError("pipeline.schedule.depends_on", f"dependency cycle: {' -> '.join(cycle)}", p,
                              line_of(given, "depends_on"))  # fmt: skip
    return result


def _cycles(by_name: dict, result: dict) -> dict:
    """Spec file -> the cycle it lies on, for every spec on a dependency cycle."""
    deps = {n: [u for u in result[p].depends_on if u in by_name] for n, p in by_name.items()
            if isinstance(result[p], Schedule)}  # fmt: skip
    found: dict = {}
    for start in sorted(deps):
        path, seen = [start], {start}
        stack = [iter(deps[start])]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                stack.pop()
                seen.discard(path.pop())
                continue
            if nxt == start:
                found.setdefault(by_name[start], path + [start])
            elif nxt not in seen and nxt in deps:
                path.append(nxt)
                seen.add(nxt)
                stack.append(iter(deps[nxt]))
    return found
