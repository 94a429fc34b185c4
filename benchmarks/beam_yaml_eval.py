"""Beam YAML as the spec runner? The events chain built through ``apache_beam.yaml`` and by hand.

    PYTHONPATH=/tmp/beamyaml-pkgs .venv/bin/python -m benchmarks.beam_yaml_eval \\
        --input '/tmp/beamyaml-data/*.jsonl' --small '/tmp/beamyaml-small/*.jsonl' --repeat 3

``apache_beam.yaml`` imports pandas (through ``apache_beam.dataframe``), which the project does
not install: put a pandas < 2.4 on ``PYTHONPATH`` (``pip install --target DIR --no-deps
'pandas>=2.3,<2.4' tzdata``).

The chain is the events pipeline's core (read, parse, validate, cleanse, deduplicate, features,
hourly aggregate) with a count sink (``CountRows`` -> ``MergeCounts`` -> one JSON report), built
from the project's composites. Variants, each run in its own process on Beam's in-process
FnApiRunner (one worker):

- ``hand``: the chain composed in Python;
- ``hand_yaml_loaded``: the same, in a process that has also loaded Beam YAML and its standard
  providers (a control: what a bigger Python heap alone costs the run);
- ``yaml``: the same composites registered with an ``InlineProvider`` and wired by a Beam YAML
  spec, the composites' dict outputs (``Parse.dead_letters``, ...) used as named outputs;
- ``yaml_errors``: as ``yaml``, with parse and validate dead letters declared by Beam YAML's
  ``error_handling: {output: ...}`` convention (so Beam YAML checks they are consumed);
- ``yaml_filter``: ``yaml`` plus a built-in ``Filter`` (python callable) after AddFeatures;
- ``yaml_map``: ``yaml`` plus a built-in ``MapToFields`` after AddFeatures, between adapters that
  turn the Arrow tables into schema'd ``beam.Row`` elements and back.

Rounds are interleaved (every variant once, then again); the best of ``--repeat`` is reported.
``--probes`` (on the small input) records how Beam YAML reacts to what a spec author gets wrong
and to Arrow-table elements in its own transforms.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import timezone

import apache_beam as beam
import pyarrow as pa
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.typehints.row_type import RowTypeConstraint
from apache_beam.utils.timestamp import Timestamp

from beam_pipelines.pipelines.events import FIELDS, RULES, WriteJson
from transforms.cleanse import Cleanse
from transforms.dedup import Deduplicate
from transforms.features import AddFeatures
from transforms.ingest.files import ReadFiles
from transforms.ingest.parse import ParseRecords
from transforms.ingest.validate import (
    CodeField,
    EnumField,
    IdField,
    NumberField,
    TextField,
    TimestampField,
    ValidateSchema,
)
from transforms.quality.counts import CountRows, MergeCounts
from transforms.windows import WindowedAggregate

VARIANTS = ("hand", "hand_yaml_loaded", "yaml", "yaml_errors", "yaml_filter", "yaml_map")
PARTITIONS = 8
RECORD_COLUMNS = ("_raw", "_source")

# The events contract's fields as a spec states them (the contract format of the framework).
CONTRACT_FIELDS = [
    {"name": "event_id", "type": "id"},
    {"name": "user_id", "type": "id"},
    {"name": "event_type", "type": "string", "required": True, "values": list(RULES[2].values)},
    {"name": "amount", "type": "double", "minimum": 0, "decimals": 2,
     "required_if": {"field": "event_type", "values": ["purchase", "refund"]}},
    {"name": "currency", "type": "string", "pattern": "^[A-Za-z]{3}$", "case": "upper", "default": "USD"},
    {"name": "ts", "type": "timestamp", "required": True},
    {"name": "email", "type": "string"},
    {"name": "country", "type": "string"},
]  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Adapters: what it takes to register the composites with Beam YAML


def rules_from_fields(fields: list[dict]) -> tuple:
    """Contract field dicts (plain YAML values) -> the validate rules the composite takes."""
    rules = []
    for f in fields:
        name, kind = f["name"], f["type"]
        if kind == "id":
            rules.append(IdField(name))
        elif kind == "string" and "values" in f:
            rules.append(EnumField(name, tuple(f["values"])))
        elif kind == "string" and "pattern" in f:
            rules.append(CodeField(name, f["pattern"], default=f.get("default")))
        elif kind == "string":
            rules.append(TextField(name))
        elif kind == "double":
            cond = f.get("required_if")
            required_if = (cond["field"], tuple(cond["values"])) if cond else None
            rules.append(NumberField(name, float(f.get("minimum", 0)), f.get("decimals", 2), required_if))
        elif kind == "timestamp":
            rules.append(TimestampField(name))
        else:
            raise ValueError(f"{name}: type {kind!r} is not mapped here")
    return tuple(rules)


def _validate_from_contract(fields: list, policy: str = "additive"):
    return ValidateSchema(rules_from_fields(fields), policy)


class _RenameOutput(beam.PTransform):
    """Applies a dict-returning composite and renames one of its outputs."""

    def __init__(self, inner: beam.PTransform, old: str, new: str):
        super().__init__()
        self._inner, self._old, self._new = inner, old, new

    def expand(self, pcoll):
        out = dict(pcoll | "Inner" >> self._inner)
        out[self._new] = out.pop(self._old)
        return out


def _with_error_output(factory):
    """A factory that takes Beam YAML's ``error_handling: {output: NAME}`` and names the
    composite's ``dead_letters`` output NAME (Beam YAML then checks that NAME is consumed)."""

    def make(error_handling: dict | None = None, **config):
        composite = factory(**config)
        if not error_handling:
            return composite
        return _RenameOutput(composite, "dead_letters", error_handling["output"])

    return make


def providers(error_style: bool = False):
    """The composites as one Beam YAML InlineProvider."""
    from apache_beam.yaml import yaml_provider

    parse, validate = ParseRecords, _validate_from_contract
    if error_style:
        parse, validate = _with_error_output(parse), _with_error_output(validate)
    return yaml_provider.InlineProvider(
        {
            "ReadFiles": ReadFiles,
            "ParseRecords": parse,
            "ValidateSchema": validate,
            "Cleanse": Cleanse,
            "Deduplicate": Deduplicate,
            "AddFeatures": AddFeatures,
            "WindowedAggregate": WindowedAggregate,
            "CountRows": CountRows,
            "MergeCounts": MergeCounts,
            "WriteJson": WriteJson,
            "TablesToRows": TablesToRows,
            "RowsToTables": RowsToTables,
        },
        no_input_transforms=("ReadFiles",),
    )


# Curated columns after AddFeatures (record columns dropped by Deduplicate), as beam.Row fields.
_ROW_FIELDS = [
    ("event_id", str), ("user_id", str), ("event_type", str), ("amount", float | None), ("currency", str),
    ("ts", Timestamp), ("email", str | None), ("email_domain", str | None), ("country", str | None),
    ("hour_of_day", int), ("day_of_week", int), ("is_weekend", bool), ("extras", str | None),
]  # fmt: skip
_TS = pa.timestamp("us", tz="UTC")


class _TableToRowsFn(beam.DoFn):
    def process(self, table: pa.Table):
        names = [n for n, _ in _ROW_FIELDS]
        cols = [table.column(n).to_pylist() for n in names]
        ts_at = names.index("ts")
        for values in zip(*cols):
            values = list(values)
            values[ts_at] = Timestamp.from_utc_datetime(values[ts_at].astimezone(timezone.utc))
            yield beam.Row(**dict(zip(names, values)))


class TablesToRows(beam.PTransform):
    """Explodes Arrow tables into schema'd beam.Row elements (what Beam YAML's built-ins take)."""

    def expand(self, tables):
        row_type = RowTypeConstraint.from_fields(_ROW_FIELDS)
        return tables | "Explode" >> beam.ParDo(_TableToRowsFn()).with_input_types(pa.Table).with_output_types(row_type)


class _RowsToTableFn(beam.DoFn):
    def process(self, rows: list):
        names = list(rows[0]._fields) if hasattr(rows[0], "_fields") else list(rows[0].as_dict())
        data = {n: [getattr(r, n) for r in rows] for n in names}
        data["ts"] = pa.array([t.micros for t in data["ts"]], pa.int64()).cast(_TS)
        yield pa.table(data)


class RowsToTables(beam.PTransform):
    """Batches beam.Row elements back into Arrow tables."""

    def __init__(self, batch_size: int = 65536):
        super().__init__()
        self._batch_size = batch_size

    def expand(self, rows):
        return (
            rows
            | "Batch" >> beam.BatchElements(min_batch_size=self._batch_size, max_batch_size=self._batch_size)
            | "ToTable" >> beam.ParDo(_RowsToTableFn()).with_output_types(pa.Table)
        )


# ---------------------------------------------------------------------------------------------
# The chain, by hand and as Beam YAML


def build_hand(p: beam.Pipeline, pattern: str, scratch: str, report: str) -> None:
    raw = p | "Read" >> ReadFiles(pattern, "jsonl")
    parsed = raw | "Parse" >> ParseRecords("jsonl", FIELDS)
    validated = parsed["parsed"] | "Validate" >> ValidateSchema(RULES, "additive")
    cleansed = validated["valid"] | "Cleanse" >> Cleanse()
    unique = cleansed["cleaned"] | "Deduplicate" >> Deduplicate(
        "event_id",
        order_by=("ts", "_raw"),
        partitions=PARTITIONS,
        spill_dir=os.path.join(scratch, "dedup"),
        drop=RECORD_COLUMNS,
    )
    featured = unique["unique"] | "AddFeatures" >> AddFeatures("ts", "email")
    aggregates = featured | "HourlyAggregate" >> WindowedAggregate(
        spill_dir=os.path.join(scratch, "aggregate"), partitions=PARTITIONS
    )
    dead = (parsed["dead_letters"], validated["dead_letters"]) | "AllDeadLetters" >> beam.Flatten()
    counts = (
        parsed["stats"],
        cleansed["stats"],
        unique["stats"],
        featured | "CountCurated" >> CountRows("curated"),
        dead | "CountDeadLetters" >> CountRows("dead_lettered", by="reason"),
        aggregates | "CountAggregates" >> CountRows("aggregates"),
    ) | "AllCounts" >> beam.Flatten()
    counts | "MergeCounts" >> MergeCounts() | "WriteReport" >> WriteJson(report)


_HEAD = """\
pipeline:
  transforms:
    - name: Read
      type: ReadFiles
      config: {pattern: "%(pattern)s", fmt: jsonl}
    - name: Parse
      type: ParseRecords
      input: Read
      config:
        fmt: jsonl
        fields: %(fields)s%(parse_errors)s
    - name: Validate
      type: ValidateSchema
      input: Parse.parsed
      config:
        policy: additive%(validate_errors)s
        fields:
%(contract)s
    - name: Cleanse
      type: Cleanse
      input: Validate.valid
    - name: Deduplicate
      type: Deduplicate
      input: Cleanse.cleaned
      config: {key: event_id, order_by: [ts, _raw], partitions: %(partitions)d, spill_dir: "%(scratch)s/dedup",
               drop: [_raw, _source]}
    - name: AddFeatures
      type: AddFeatures
      input: Deduplicate.unique
      config: {ts_field: ts, email_field: email}
"""
_EXTRA = {
    "": "",
    "filter": """\
    - name: KeepNonEmpty
      type: Filter
      input: AddFeatures
      config:
        language: python
        keep: {callable: "lambda table: table.num_rows > 0"}
""",
    "map": """\
    - name: ToRows
      type: TablesToRows
      input: AddFeatures
    - name: AddIsPaid
      type: MapToFields
      input: ToRows
      config:
        language: python
        append: true
        fields:
          is_paid: "event_type in ('purchase', 'refund')"
    - name: ToTables
      type: RowsToTables
      input: AddIsPaid
""",
}
_TAIL = """\
    - name: HourlyAggregate
      type: WindowedAggregate%(windowing)s
      input: %(curated)s
      config: {spill_dir: "%(scratch)s/aggregate", partitions: %(partitions)d}
    - name: CountCurated
      type: CountRows
      input: %(curated)s
      config: {name: curated}
    - name: CountDeadLetters
      type: CountRows
      input: [Parse.%(dead)s, Validate.%(dead)s]
      config: {name: dead_lettered, by: reason}
    - name: CountAggregates
      type: CountRows
      input: HourlyAggregate
      config: {name: aggregates}
    - name: MergeCounts
      type: MergeCounts
      input: [Parse.stats, Cleanse.stats, Deduplicate.stats, CountCurated, CountDeadLetters, CountAggregates]
    - name: WriteReport
      type: WriteJson
      input: MergeCounts
      config: {path: "%(report)s"}
"""
_CURATED = {"": "AddFeatures", "filter": "KeepNonEmpty", "map": "ToTables"}


def yaml_spec(pattern: str, scratch: str, report: str, error_style: bool = False, extra: str = "", **over) -> str:
    """The Beam YAML text of the chain; ``over`` replaces template values (for the probes)."""
    errors = "\n        error_handling: {output: errors}" if error_style else ""
    values = {
        "pattern": pattern,
        "scratch": scratch,
        "report": report,
        "partitions": PARTITIONS,
        "fields": json.dumps(list(FIELDS)),
        "contract": "\n".join("          - " + json.dumps(f) for f in CONTRACT_FIELDS),
        "parse_errors": errors,
        "validate_errors": errors,
        "dead": "errors" if error_style else "dead_letters",
        "curated": _CURATED[extra],
        "windowing": "",
    }
    values.update(over)
    return (_HEAD % values) + _EXTRA[extra] + (_TAIL % values)


def build_yaml(p: beam.Pipeline, spec: str, error_style: bool = False) -> None:
    from apache_beam.yaml import yaml_transform

    yaml_transform.expand_pipeline(p, spec, providers=providers(error_style))


# ---------------------------------------------------------------------------------------------
# One run (a child process) and the interleaved rounds


class _GcTimer:
    """Seconds spent in the garbage collector while active (a bigger heap costs more per collection)."""

    def __init__(self):
        self.seconds, self._start = 0.0, 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._start


def run_once(variant: str, pattern: str, workdir: str) -> dict:
    scratch, report = os.path.join(workdir, "scratch"), os.path.join(workdir, "report.json")
    os.makedirs(scratch, exist_ok=True)
    setup = 0.0
    if variant != "hand":
        t = time.perf_counter()
        from apache_beam.yaml import yaml_provider  # imports pandas

        yaml_provider.standard_providers()  # Beam YAML's built-in providers, loaded once per process
        setup = time.perf_counter() - t
    t0 = time.perf_counter()
    p = beam.Pipeline(runner=FnApiRunner())
    if variant.startswith("hand"):
        build_hand(p, pattern, scratch, report)
    else:
        extra = {"yaml_filter": "filter", "yaml_map": "map"}.get(variant, "")
        error_style = variant == "yaml_errors"
        build_yaml(p, yaml_spec(pattern, scratch, report, error_style, extra), error_style)
    t1, c1 = time.perf_counter(), time.process_time()
    timer = _GcTimer()
    gc.callbacks.append(timer)
    p.run().wait_until_finish()
    gc.callbacks.remove(timer)
    t2, c2 = time.perf_counter(), time.process_time()
    with open(report) as fh:
        counts = json.load(fh)
    return {
        "variant": variant,
        "setup_s": setup,
        "build_s": t1 - t0,
        "run_s": t2 - t1,
        "run_cpu_s": c2 - c1,
        "gc_s": timer.seconds,
        "objects": len(gc.get_objects()),
        "counts": counts,
    }


def _child(variant: str, pattern: str) -> dict:
    workdir = tempfile.mkdtemp(prefix=f"beamyaml-{variant}-")
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.beam_yaml_eval",
        "--child",
        variant,
        "--input",
        pattern,
        "--workdir",
        workdir,
    ]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t
    shutil.rmtree(workdir, ignore_errors=True)
    if proc.returncode:
        return {"variant": variant, "error": proc.stderr.strip().splitlines()[-1:] or ["(no stderr)"]}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_s"] = wall
    return result


def rounds(pattern: str, variants: tuple, repeat: int) -> dict:
    results: dict = {v: [] for v in variants}
    for r in range(repeat):
        for v in variants:
            res = _child(v, pattern)
            results[v].append(res)
            if "error" in res:
                print(f"round {r + 1} {v:16s} FAILED: {res['error']}", flush=True)
            else:
                print(
                    f"round {r + 1} {v:16s} run {res['run_s']:6.2f} s (cpu {res['run_cpu_s']:6.2f} s, "
                    f"gc {res['gc_s']:5.2f} s, {res['objects'] / 1e6:4.2f}M objects)  "
                    f"build {res['build_s']:5.2f} s  "
                    f"yaml setup {res['setup_s']:5.2f} s  process {res['process_s']:6.2f} s",
                    flush=True,
                )
    return results


def summarise(results: dict) -> None:
    hand = [r for r in results.get("hand", []) if "error" not in r]
    base = min(r["run_s"] for r in hand) if hand else None
    base_cpu = min(r["run_cpu_s"] for r in hand) if hand else None
    print("\nbest of rounds (run: p.run() until finished, wall and CPU of the process; gc: time in the garbage")
    print("collector during the run; build: Pipeline() and its graph; yaml setup: importing apache_beam.yaml and")
    print("its standard providers; process: the whole child process)")
    print(
        f"{'variant':16s} {'run s':>7s} {'vs hand':>8s} {'cpu s':>7s} {'vs hand':>8s} {'gc s':>6s} {'build s':>8s} "
        f"{'setup s':>8s} {'process s':>10s}  counts"
    )
    for v, runs in results.items():
        ok = [r for r in runs if "error" not in r]
        if not ok:
            print(f"{v:16s} failed: {runs[0]['error'] if runs else 'not run'}")
            continue
        run_s, cpu_s = min(r["run_s"] for r in ok), min(r["run_cpu_s"] for r in ok)
        ratio = f"{run_s / base:7.2f}x" if base else "      -"
        cpu_ratio = f"{cpu_s / base_cpu:7.2f}x" if base_cpu else "      -"
        same = all(r["counts"] == ok[0]["counts"] for r in ok)
        match = "-" if not hand else ("= hand" if ok[0]["counts"] == hand[0]["counts"] else "DIFFER from hand")
        print(
            f"{v:16s} {run_s:7.2f} {ratio} {cpu_s:7.2f} {cpu_ratio} {min(r['gc_s'] for r in ok):6.2f} "
            f"{min(r['build_s'] for r in ok):8.2f} "
            f"{min(r['setup_s'] for r in ok):8.2f} {min(r['process_s'] for r in ok):10.2f}  "
            f"{match}{'' if same else ' (vary between rounds)'}"
        )
    if hand:
        print("\nhand counts:", json.dumps(hand[0]["counts"], sort_keys=True))


def _leaf_names(p: beam.Pipeline) -> set:
    transforms = p.to_runner_api().components.transforms
    return {t.unique_name for t in transforms.values() if not t.subtransforms}


def construction(pattern: str, repeat: int = 5) -> None:
    """Graph construction in this process: Beam YAML's one-time setup, then each build."""
    workdir = tempfile.mkdtemp(prefix="beamyaml-build-")
    scratch, report = os.path.join(workdir, "scratch"), os.path.join(workdir, "report.json")
    t = time.perf_counter()
    from apache_beam.yaml import yaml_provider

    imported = time.perf_counter() - t
    t = time.perf_counter()
    yaml_provider.standard_providers()
    loaded = time.perf_counter() - t
    print(f"import apache_beam.yaml {imported:.2f} s; standard_providers() {loaded:.2f} s (once per process)")
    builders = {
        "hand": lambda p: build_hand(p, pattern, scratch, report),
        "yaml": lambda p: build_yaml(p, yaml_spec(pattern, scratch, report)),
        "yaml_errors": lambda p: build_yaml(p, yaml_spec(pattern, scratch, report, True), True),
    }
    times: dict = {k: [] for k in builders}
    graphs: dict = {}
    for _ in range(repeat):
        for name, build in builders.items():
            p = beam.Pipeline(runner=FnApiRunner())
            t = time.perf_counter()
            build(p)
            times[name].append(time.perf_counter() - t)
            graphs[name] = _leaf_names(p)
    for name in ("yaml", "yaml_errors"):
        print(
            f"graph {name}: {len(graphs[name])} leaf transforms (hand {len(graphs['hand'])}); "
            f"only in {name}: {sorted(graphs[name] - graphs['hand'])}; only in hand: {sorted(graphs['hand'] - graphs[name])}"
        )
    for name, ts in times.items():
        print(
            f"build {name:12s} first {ts[0] * 1000:7.1f} ms, best of the next {repeat - 1}: {min(ts[1:]) * 1000:7.1f} ms"
        )
    shutil.rmtree(workdir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Probes: what Beam YAML does with spec mistakes and with Arrow-table elements


def _one_line(exn: Exception, keep: int = 400) -> str:
    text = " ".join(str(exn).split())
    return f"{type(exn).__name__}: {text if len(text) <= keep else text[:keep] + ' ...'}"


def probes(pattern: str) -> None:
    from apache_beam.yaml import yaml_provider, yaml_transform

    workdir = tempfile.mkdtemp(prefix="beamyaml-probe-")
    scratch, report = os.path.join(workdir, "scratch"), os.path.join(workdir, "report.json")
    base = yaml_spec(pattern, scratch, report)
    err = yaml_spec(pattern, scratch, report, error_style=True)

    def attempt(spec: str, error_style: bool = False, run: bool = False, provider=None) -> str:
        p = beam.Pipeline(runner=FnApiRunner())
        try:
            yaml_transform.expand_pipeline(p, spec, providers=provider or providers(error_style))
        except Exception as exn:  # noqa: BLE001 (the probe reports whatever Beam YAML raises)
            return "build fails: " + _one_line(exn)
        if not run:
            return "builds, no error"
        if os.path.exists(report):
            os.remove(report)
        try:
            p.run().wait_until_finish()
        except Exception as exn:  # noqa: BLE001
            return "run fails: " + _one_line(exn)
        with open(report) as fh:
            return "runs; counts " + json.dumps(json.load(fh), sort_keys=True)

    def with_step(step: str) -> str:
        # ``step`` (named Step) goes after AddFeatures; the aggregate and the curated count read it.
        return (
            base.replace("    - name: HourlyAggregate", step + "    - name: HourlyAggregate")
            .replace("input: AddFeatures\n      config: {spill", "input: Step\n      config: {spill")
            .replace("input: AddFeatures\n      config: {name: curated}", "input: Step\n      config: {name: curated}")
        )

    step = "    - {name: Step, type: %s, input: AddFeatures, config: %s}\n"
    raw_rules = (
        "pipeline:\n  transforms:\n    - {type: Create, config: {elements: [1]}}\n"
        "    - {type: ValidateSchema, input: Create, config: {rules: [{name: event_id, type: id}]}}\n"
    )
    cleanse_errors = base.replace(
        "input: Validate.valid\n", "input: Validate.valid\n      config: {error_handling: {output: e}}\n"
    ).replace(
        "    - name: CountCurated",
        "    - {type: CountRows, input: Cleanse.e, config: {name: e}}\n    - name: CountCurated",
    )
    window_into = yaml_provider.YamlProviders.WindowInto
    cases = [
        ("spec contract fields -> rules == events.RULES", lambda: str(rules_from_fields(CONTRACT_FIELDS) == RULES)),
        ("the chain as Beam YAML", lambda: attempt(base, run=True)),
        ("the chain with error_handling outputs", lambda: attempt(err, error_style=True, run=True)),
        (
            "rule dicts straight into ValidateSchema (no adapter)",
            lambda: attempt(raw_rules, provider=yaml_provider.InlineProvider({"ValidateSchema": ValidateSchema})),
        ),
        (
            "unknown config key (ReadFiles chunk_kb: 8)",
            lambda: attempt(base.replace("jsonl}", "jsonl, chunk_kb: 8}", 1)),
        ),
        (
            "wrong value type (Deduplicate partitions: eight)",
            lambda: attempt(base.replace("partitions: 8, ", "partitions: eight, ")),
        ),
        ("input: Parse (a 3-output composite)", lambda: attempt(base.replace("input: Parse.parsed", "input: Parse"))),
        (
            "Validate.dead_letters unconsumed (dict outputs)",
            lambda: attempt(base.replace("[Parse.dead_letters, Validate.dead_letters]", "[Parse.dead_letters]")),
        ),
        ("Cleanse.stats unconsumed (dict outputs)", lambda: attempt(base.replace("Cleanse.stats, ", ""))),
        (
            "Validate.errors unconsumed (error_handling)",
            lambda: attempt(err.replace("[Parse.errors, Validate.errors]", "[Parse.errors]"), error_style=True),
        ),
        ("error_handling on a composite without it (Cleanse)", lambda: attempt(cleanse_errors)),
        (
            "Filter, generic expression, on tables",
            lambda: attempt(with_step(step % ("Filter", '{keep: "amount >= 0"}'))),
        ),
        (
            "Filter, python expression, on tables",
            lambda: attempt(with_step(step % ("Filter", '{language: python, keep: "amount >= 0"}'))),
        ),
        (
            "Filter, python callable, on tables (keeps tables > 100k rows)",
            lambda: attempt(
                with_step(step % ("Filter", '{language: python, keep: {callable: "lambda t: t.num_rows > 100000"}}')),
                run=True,
            ),
        ),
        (
            "MapToFields append, on tables",
            lambda: attempt(with_step(step % ("MapToFields", '{language: python, append: true, fields: {n: "1"}}'))),
        ),
        (
            "MapToFields callable (lambda t: t), on tables, into WindowedAggregate",
            lambda: attempt(
                with_step(step % ("MapToFields", '{language: python, fields: {t: {callable: "lambda t: t"}}}'))
            ),
        ),
        (
            "windowing: {type: fixed, size: 1h} on WindowedAggregate",
            lambda: attempt(
                yaml_spec(pattern, scratch, report, windowing="\n      windowing: {type: fixed, size: 1h}"), run=True
            ),
        ),
        ("Beam YAML WindowInto '1d' in seconds", lambda: str(window_into._parse_duration("1d", "size"))),
        (
            "Beam YAML windowing with allowed_lateness",
            lambda: str(window_into._parse_window_spec({"type": "fixed", "size": "1h", "allowed_lateness": "10m"})),
        ),
    ]
    for name, case in cases:
        try:
            result = case()
        except Exception as exn:  # noqa: BLE001
            result = "fails: " + _one_line(exn)
        print(f"- {name}:\n    {result}", flush=True)
    shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--input", required=True, help="jsonl file pattern of the timed runs")
    parser.add_argument("--small", help="jsonl file pattern for --probes")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--probes", action="store_true", help="also run the probes on --small")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_once(args.child, args.input, args.workdir)))
        return 0
    if importlib.util.find_spec("pandas") is None:
        print("error: apache_beam.yaml needs pandas (< 2.4) on PYTHONPATH; see this module's docstring")
        return 2
    print("construction")
    construction(args.input)
    print()
    if args.probes:
        print(f"probes on {args.small}")
        probes(args.small)
        print()
    variants = tuple(v for v in args.variants.split(",") if v)
    summarise(rounds(args.input, variants, args.repeat))
    return 0


if __name__ == "__main__":
    sys.exit(main())
