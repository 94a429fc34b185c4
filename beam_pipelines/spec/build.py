"""A checked plan -> a Beam pipeline: ``build(p, cfg, io)``, the same for every spec.

The steps are composed in file order, each labelled with its spec name; around them the run's
own accounting is added: every stage's counts merged into the run report (conservation is
computed, never assumed), the dead letters gathered, the curated columns profiled. Sources and
sinks come in through ``io`` (``file_io`` and ``stream_io`` make them from the spec's own
source and sink steps; a test passes ``Create`` and captures).
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystems import FileSystems

from beam_pipelines.pii.wiring import Protection, redact_report, redact_window_results
from beam_pipelines.side_worker import OFF_PATH
from beam_pipelines.spec.compile import Plan, compile_spec
from beam_pipelines.spec.shape import duration_seconds
from beam_pipelines.spec.steps.io import SCRATCH
from beam_pipelines.spec.yamlsrc import load
from transforms import faults
from transforms.ingest.drift import drift_report
from transforms.quality.counts import CountRows, MergeCounts
from transforms.quality.profile import ProfileColumns
from transforms.sinks.files import join_path
from transforms.sinks.window_json import WriteWindowJson
from transforms.windows import WindowTables

__all__ = [
    "PipelineIO", "WriteJson", "build", "file_io", "make_report", "packaged", "pipeline_name", "plan_for", "spec_path",
    "stream_io",
]  # fmt: skip

PACKAGED = os.path.join(os.path.dirname(os.path.dirname(__file__)), "pipelines")
REPORT_FIRING_SECONDS = 10  # streaming: how often _run/report.json is rewritten with the counts so far
PROFILE_FIRING_SECONDS = 10  # streaming: at most how often a window's profile is written again
REPORT_COUNTS = ("read", "curated", "dead_lettered", "duplicates", "late", "aggregates")


def spec_path(pipeline: str) -> str:
    """The spec file of ``--pipeline``: a packaged pipeline's name, or a path to a YAML file."""
    if pipeline.endswith((".yaml", ".yml")) or os.sep in pipeline:
        return pipeline
    return os.path.join(PACKAGED, pipeline + ".yaml")


def packaged() -> list[str]:
    """Names of the packaged pipelines."""
    return sorted(f[:-5] for f in os.listdir(PACKAGED) if f.endswith(".yaml") and ".expectations" not in f)


def _load(path: str):
    try:
        stat = os.stat(path)
        return _load_version(path, stat.st_mtime_ns, stat.st_size)
    except OSError:
        return load(path)  # raises the SpecError naming the file


@functools.lru_cache(maxsize=16)
def _load_version(path: str, mtime_ns: int, size: int):
    # Keyed by the file's version: a spec edited in the same process is read again.
    return load(path)


def pipeline_name(cfg) -> str:
    """The ``name`` the spec of ``cfg.pipeline`` gives its pipeline."""
    doc = _load(spec_path(cfg.pipeline))
    return doc["pipeline"]["name"]


def plan_for(cfg) -> Plan:
    """The checked plan of ``cfg.pipeline`` for this run's mode and flags (SpecError if wrong)."""
    path = spec_path(cfg.pipeline)
    return compile_spec(_load(path), cfg, path)


@dataclass(frozen=True)
class PipelineIO:
    """Where a pipeline reads from and writes to.

    Args:
        source: PBegin -> PCollection of raw batches (see ``ParseRecords``), or a dict with
            ``records`` (those batches) and ``late`` (DeadLetter tables of records that came
            after their window closed: a streaming source judges lateness, see ReadKafka).
        curated: Sink for curated tables (or None to leave them unconsumed by IO).
        aggregates: Sink for aggregate tables (one per window).
        dead_letters: Sink for DeadLetter tables.
        report: Sink for the one report dict.
        profile: Sink for column-profile dicts of the curated output (None: not profiled): one
            for the run in batch, one per window and firing in streaming.
        checks: Streaming: sink for the expectation results, one dict per window.
        scratch: A directory every worker can reach; when set (batch), the dedup and
            aggregate shuffles go through files there instead of through the runner's memory.
        sinks: Sinks by spec step name; a sink step not named here takes the sink of its role
            (``curated``, ``aggregates`` or ``dead_letters`` above).
        store_keys: Whether the data keys that encrypt personal data are stored under
            ``<output>/_keys`` (False for a dry run: they are made and wrapped, proving the master
            key, and not kept).
    """

    source: beam.PTransform
    curated: beam.PTransform | None = None
    aggregates: beam.PTransform | None = None
    dead_letters: beam.PTransform | None = None
    report: beam.PTransform | None = None
    profile: beam.PTransform | None = None
    checks: beam.PTransform | None = None
    scratch: str | None = None
    sinks: dict | None = None
    store_keys: bool = True

    def source_for(self, step) -> beam.PTransform:
        return self.source

    def sink_for(self, step) -> beam.PTransform | None:
        if self.sinks is not None and step.name in self.sinks:
            return self.sinks[step.name]
        return getattr(self, step.role, None)


def make_report(counts: dict, expectations: dict | None = None) -> dict:
    """The run report from merged stage counts; conservation is computed, never assumed.

    ``expectations`` is CheckExpectations' result for the run; its list goes under
    ``expectations`` (absent when no expectations are declared).
    """
    c = {k: int(counts.get(k, 0)) for k in REPORT_COUNTS}
    reasons = {k.split(".", 1)[1]: v for k, v in sorted(counts.items()) if k.startswith("dead_lettered.")}
    quality = {k.split(".", 1)[1]: v for k, v in sorted(counts.items()) if k.startswith("quality.")}
    ok = c["read"] == c["curated"] + c["dead_lettered"] + c["duplicates"] + c["late"]
    report = {"counts": c, "dead_letter_reasons": reasons, "quality": quality, "conservation_ok": ok}
    drift = drift_report(counts)
    if drift:
        report["drift"] = drift
    if expectations is not None:
        report["expectations"] = expectations["results"]
    return report


class _LateCountFn(beam.DoFn):
    # A late record was read and ends in the late count (and the dead-letter output).
    def process(self, table: pa.Table):
        if table.num_rows:
            yield {"read": table.num_rows, "late": table.num_rows}


class _RejectedCountFn(beam.DoFn):
    # A record the source read but could not hand on: read, and dead-lettered by its reason.
    def process(self, table: pa.Table):
        if table.num_rows:
            counts = {"read": table.num_rows, "dead_lettered": table.num_rows}
            for item in pc.value_counts(table.column("reason")).to_pylist():
                counts[f"dead_lettered.{item['values']}"] = item["counts"]
            yield counts


def _early(plan: Plan, seconds) -> int | None:
    """Processing-time (early) firings: for live streams only. A bounded stream fires every window
    when it ends; and Prism 2.77 panics when an early-firing timer outlives its window, which the
    end of a bounded stream (the watermark jumping to the end of time) makes likely."""
    return seconds if plan.ctx.mode == "streaming" and plan.ctx.live else None


def build(p: beam.Pipeline, cfg, io: PipelineIO, plan: Plan | None = None) -> dict:
    """Composes the pipeline of ``cfg.pipeline``; returns its PCollections by name.

    Returns ``curated``, ``aggregates`` (the first aggregate's), ``dead_letters`` (tables) and
    ``report`` (one dict; in streaming, one per firing of the report trigger, each with the
    counts so far).
    """
    plan = plan or plan_for(cfg)
    streaming = plan.ctx.mode == "streaming"
    protection = _protection(plan, cfg, io.store_keys)
    built = {}
    source = plan.source.step.build([p], io)
    built[plan.source.step.name] = source
    late = source.extra.get("late")
    # Records the source itself could not hand on (e.g. a change it cannot represent): read and
    # dead-lettered, and like late records they go to every WriteDeadLetters step.
    rejected = source.extra.get("rejected")
    if rejected is not None:
        late = rejected if late is None else (late, rejected) | "LateAndRejected" >> beam.Flatten()
    for node in plan.chain[1:]:
        built[node.step.name] = node.step.build([built[node.inputs[0][0]].main], io)
    curated = built[plan.curated.step.name].main
    unwindowed = streaming and plan.ctx.event_time is None  # a change stream: no windows to profile by
    # Streamed feature rows are written once their window and its lateness have passed: a
    # per-window profile would have fired without them (see EntityFeaturesStep).
    profiled = (
        io.profile is not None
        and not unwindowed
        and not (streaming and getattr(plan.curated.step, "rows_after_lateness", False))
    )
    off_path = _off_latency_path(plan, curated, profiled)
    aggregates = []
    for node in plan.aggregates:
        built[node.step.name] = node.step.build([curated], io)
        aggregates.append(built[node.step.name].main)
    errors = {(name, out): built[name].errors[out] for name, out in plan.errors if out in built[name].errors}
    dead = tuple(errors.values()) | "AllDeadLetters" >> beam.Flatten()
    stats = [s for node in plan.chain for s in built[node.step.name].stats]
    count_parts = [
        *stats,
        curated | "CountCurated" >> CountRows("curated"),
        dead | "CountDeadLetters" >> CountRows("dead_lettered", by="reason"),
    ]
    if aggregates:
        all_aggregates = (
            aggregates[0] if len(aggregates) == 1 else tuple(aggregates) | "AllAggregates" >> beam.Flatten()
        )
        count_parts.append(all_aggregates | "CountAggregates" >> CountRows("aggregates"))
    if source.extra.get("late") is not None:
        count_parts.append(
            source.extra["late"]
            | "CountLate" >> beam.ParDo(_LateCountFn()).with_input_types(pa.Table).with_output_types(dict)
            | "LateGlobalWindow" >> beam.WindowInto(beam.window.GlobalWindows())
        )
    if rejected is not None:
        count_parts.append(
            rejected
            | "CountRejected" >> beam.ParDo(_RejectedCountFn()).with_input_types(pa.Table).with_output_types(dict)
        )
    counts = tuple(count_parts) | "AllCounts" >> beam.Flatten()
    checked = next((built[n.step.name] for n in plan.chain if "results" in built[n.step.name].extra), None)
    # In streaming, expectation results are per window and stay out of the run's report.
    results = checked.extra["results"] if checked is not None and not streaming else None
    report = (
        counts
        | "MergeCounts" >> MergeCounts(early_firing_seconds=_early(plan, REPORT_FIRING_SECONDS))
        | "MakeReport"
        >> beam.Map(
            make_report, expectations=beam.pvalue.AsSingleton(results) if results is not None else None
        ).with_output_types(dict)
    )
    if protection is not None:
        report = report | "ProtectReport" >> beam.Map(redact_report, tuple(plan.pii.fields)).with_output_types(dict)
    if profiled:
        _profile(plan, off_path, io, protection)
    if streaming and checked is not None and io.checks is not None:
        window_results = checked.extra["results"]
        if protection is not None:
            window_results = window_results | "ProtectChecks" >> beam.Map(
                redact_window_results, tuple(plan.pii.fields)
            ).with_output_types(dict)
        window_results | "WriteChecks" >> io.checks
    all_dead = dead if late is None else (dead, late) | "DeadAndLate" >> beam.Flatten()
    for node in plan.sinks:
        _write(node, built, (curated, off_path), (errors, all_dead, late), io, protection)
    if io.report is not None:
        report | "WriteReport" >> io.report
    return {
        "curated": curated,
        "aggregates": aggregates[0] if aggregates else None,
        "dead_letters": all_dead,
        "report": report,
    }


def _off_latency_path(plan: Plan, curated, profiled: bool):
    """The curated records for the work that may leave the latency path.

    In streaming, curated file writes and per-window profiles run in a stage of their own: fused
    with the aggregates they added their parquet and sketch work to every firing's latency. On
    Prism a Reshuffle is only that fusion break; no data moves between workers. The break gives
    up the source's order, so only sinks that declare they need none go behind it: a change
    mirror applies its batches in the order they were read.
    """
    if plan.ctx.mode != "streaming":
        return curated
    if not profiled and not any(n.step.role == "curated" and n.step.any_order for n in plan.sinks):
        return curated
    return curated | OFF_PATH >> beam.Reshuffle().with_output_types(pa.Table)


def _protection(plan: Plan, cfg, store_keys: bool = True):
    if plan.pii is None:
        return None
    run_time = getattr(cfg, "run_time", None)
    return Protection(plan.pii, getattr(cfg, "output", None), (lambda: run_time) if run_time else None, store_keys)


def _profile(plan: Plan, curated, io: PipelineIO, protection=None) -> None:
    profiled = curated
    guard = protection.for_profile() if protection is not None else None
    if guard is not None:  # the profile, and the report and lineage made from it, see protected values only
        profiled = profiled | "ProtectProfiled" >> guard
    if plan.ctx.mode == "streaming":
        time_field, window, lateness = plan.ctx.event_time
        early = plan.aggregates[0].step.config.get("early_firing") if plan.aggregates else None
        # A window's profile is re-merged from all its partial sketches at each firing (panes
        # accumulate): at the aggregates' pace (every second) that work grew with the window's
        # age and took the CPU the latency path needed. Nobody reads a profile by the second.
        if early is not None:
            early = max(duration_seconds(early), PROFILE_FIRING_SECONDS)
        profiled = profiled | "WindowCurated" >> WindowTables(
            time_field, window, lateness, _early(plan, early), late_firings=True
        )
    columns = tuple(c for c in plan.curated.columns if not c.startswith("_"))
    profile = profiled | "ProfileCurated" >> ProfileColumns(columns)
    profile | "WriteProfile" >> io.profile


def _write(node, built: dict, curated: tuple, dead: tuple, io: PipelineIO, protection=None) -> None:
    step = node.step
    if step.role == "curated":  # (in source order, off the latency path)
        data = curated[1] if step.any_order else curated[0]
    elif step.role in ("aggregates", "received"):  # an aggregate, or the source's records as they came in
        data = built[node.inputs[0][0]].main
    elif step.role == "output":  # a step's named output
        name, output = node.inputs[0]
        data = built[name].extra[output]
    else:
        errors, all_dead, late = dead
        taken = [(name, out) for name, out in node.inputs if (name, out) in errors]
        if set(taken) == set(errors):
            data = all_dead
        else:  # this sink takes some of the error outputs (another takes the rest), and late records
            data = tuple([errors[k] for k in taken] + ([late] if late is not None else [])) | (
                f"{step.name}Inputs" >> beam.Flatten()
            )
    sink = io.sink_for(step)
    if sink is not None:
        guard = protection.for_sink(step) if protection is not None else None
        if guard is not None:
            data = data | f"{step.name}Protect" >> guard
        data | step.name >> sink


class _WriteJsonFn(beam.DoFn):
    def __init__(self, path: str):
        self._path = path

    def process(self, obj: dict):
        with FileSystems.create(self._path, mime_type="application/json") as fh:
            fh.write(json.dumps(obj, indent=2, sort_keys=True).encode() + b"\n")
        faults.at("write:" + self._path.rsplit("/", 1)[-1].removesuffix(".json"))
        yield self._path


class WriteJson(beam.PTransform):
    """Writes each dict element to ``path`` as indented JSON (use for single-element
    PCollections such as the run report)."""

    def __init__(self, path: str, label: str | None = None):
        super().__init__(label)
        self._path = path

    def expand(self, pcoll):
        return pcoll | "Write" >> beam.ParDo(_WriteJsonFn(self._path))


def file_io(cfg, root: str, plan: Plan | None = None) -> PipelineIO:
    """File sources and sinks of the spec under ``root`` (the run's staging directory)."""
    plan = plan or plan_for(cfg)
    plan.check_io()
    return PipelineIO(
        scratch=join_path(root, SCRATCH),
        source=plan.source.step.make(root),
        sinks={n.step.name: n.step.make(root) for n in plan.sinks},
        report=WriteJson(join_path(root, "_run", "report.json")),
        profile=WriteJson(join_path(root, "_run", "profile.json")) if cfg.profile else None,
    )


def stream_io(cfg, root: str, plan: Plan | None = None) -> PipelineIO:
    """The spec's streaming source and sinks; the report rewritten under ``root`` as counts
    come in, profiles and expectation results per window."""
    plan = plan or plan_for(cfg)
    plan.check_io()
    return PipelineIO(
        source=plan.source.step.make(root),
        sinks={n.step.name: n.step.make(root) for n in plan.sinks},
        report=WriteJson(join_path(root, "_run", "report.json")),
        profile=WriteWindowJson(join_path(root, "_run", "windows"), "profile.json") if cfg.profile else None,
        checks=WriteWindowJson(join_path(root, "_run", "windows"), "expectations.json"),
    )
