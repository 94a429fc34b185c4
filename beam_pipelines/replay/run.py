"""One redrive, from a checked plan to published outputs.

Reads what the published run left (its report, dead letters and curated files), runs the
redrive pipeline into ``<output>/_staging/<run id>/``, brings the report up to date, checks
conservation and that the files hold the counted rows, and only then publishes (each output
directory replaced whole, as a batch run does): a failure leaves the previous outputs as they were.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from beam_pipelines import lakehouse, publish
from beam_pipelines.errors import RunError, UsageError
from beam_pipelines.lakehouse import commit
from beam_pipelines.observe import read_json
from beam_pipelines.options import RunOptions
from beam_pipelines.replay import report as rr
from beam_pipelines.replay.letters import LetterError, Selection, csv_header, letters_format, read_letter_file
from beam_pipelines.replay.plan import FILE_SINKS, RedriveInputs, build_redrive, curated_schema, dedup_key
from beam_pipelines.runners import direct_workers, parallel_direct_runner
from beam_pipelines.spec.build import plan_for
from beam_pipelines.spec.compile import Plan
from beam_pipelines.warm_workers import WarmWorkers
from transforms.records import DEAD_LETTER_SCHEMA
from transforms.sinks.files import join_path

__all__ = ["Request", "check_plan", "redrive"]

_PART = re.compile(r"part-(\d+)\.[a-z]+$")
HISTORY = "redrives.jsonl"
_OWN = ("report.json", "summary.json", HISTORY)  # _run files a redrive writes itself


@dataclass(frozen=True)
class Request:
    """What to redrive.

    Args:
        dlq: The dead-letter directory (any Beam filesystem).
        selection: Which letters are replayed.
        runner: The runner's name, for the summary.
        dry_run: Say what would be replayed; run and write nothing.
        buckets_given: Whether --curated_buckets was given (else the published files' count).
        shards_given: Whether --dlq_shards was given (else the published files' count).
    """

    dlq: str
    selection: Selection
    runner: str = "DirectRunner"
    dry_run: bool = False
    buckets_given: bool = False
    shards_given: bool = False


def check_plan(plan: Plan) -> None:
    """Raises UsageError when a redrive cannot stage and publish this plan's outputs."""
    if plan.ctx.mode != "batch":
        raise UsageError("a redrive runs in batch mode: drop --streaming")
    if getattr(plan, "pii", None) is not None:
        # Its published curated rows are protected (tokens, masks, nulls): merging replayed records
        # into them, and recomputing aggregates from them, would mix protected and clear values.
        raise UsageError(f"{plan.name} protects personal data (its contract's pii fields): a redrive cannot merge "
                         "replayed records into protected outputs; decrypt the dead letters "
                         "(python -m beam_pipelines.pii decrypt) and run the pipeline on them")  # fmt: skip
    for node in plan.sinks:
        if node.step.type not in FILE_SINKS:
            raise UsageError(f"a redrive writes files only ({', '.join(FILE_SINKS)}); step {node.step.name} is "
                             f"{node.step.type}")  # fmt: skip
    roles = [n.step.role for n in plan.sinks if n.step.type != "WriteLakehouse"]
    if roles.count("dead_letters") != 1 or "curated" not in roles:
        raise UsageError(f"a redrive needs one curated sink and one WriteDeadLetters step; {plan.name} has "
                         f"{roles.count('curated')} and {roles.count('dead_letters')}")  # fmt: skip
    key = dedup_key(plan)
    if key is not None and key not in curated_schema(plan).names:
        raise UsageError(f"the curated records of {plan.name} do not hold its Deduplicate key {key!r}: "
                         "redriven records could not be merged by it")  # fmt: skip


def _files(root: str, suffix: str) -> list[str]:
    try:
        matched = FileSystems.match([join_path(root, "**")])[0].metadata_list
    except Exception:  # noqa: BLE001 - a missing prefix matches nothing on some filesystems
        return []
    prefix = len(root.rstrip("/"))
    return sorted(m.path for m in matched if m.path.endswith(suffix) and "/_" not in m.path[prefix:])


def _published_report(output: str) -> dict:
    path = join_path(output, "_run", "report.json")
    try:
        report = read_json(path)
    except (OSError, ValueError) as e:
        raise RunError(f"cannot read {path}: {e}") from e
    if report is None:
        raise RunError(f"no published run under {output}: {path} not found (run the pipeline first)")
    if not isinstance(report.get("counts"), dict) or "read" not in report["counts"]:
        raise RunError(f"{path} is not a run report (no counts)")
    return report


def _letters(dlq: str) -> tuple[list[str], pa.Table]:
    if publish.is_local(dlq) and not os.path.isdir(dlq.removeprefix("file://")):
        raise RunError(f"cannot read --dlq={dlq}: no such directory")
    paths = _files(dlq, ".jsonl")
    try:
        tables = [read_letter_file(p) for p in paths]
    except (LetterError, OSError) as e:
        raise RunError(f"cannot read --dlq: {e}") from e
    return paths, pa.concat_tables(tables) if tables else DEAD_LETTER_SCHEMA.empty_table()


def _curated_files(output: str, plan: Plan) -> list[str]:
    sink = next(n.step for n in plan.sinks if n.step.role == "curated" and n.step.type == "WriteLake")
    paths = _files(join_path(output, sink.config["path"]), ".parquet")
    wanted = curated_schema(plan)
    for path in paths:
        try:
            with FileSystems.open(path) as fh:
                names = pq.ParquetFile(fh).schema_arrow.names
        except Exception as e:  # noqa: BLE001 - each filesystem and a corrupt footer raise their own errors
            raise RunError(f"cannot read curated file {path}: {e}") from e
        missing = [c for c in wanted.names if c not in names]
        if missing:
            raise RunError(f"curated file {path} lacks {', '.join(missing)}: the spec's curated columns changed "
                           "since the run; run the pipeline again instead")  # fmt: skip
    return paths


def _count_of_parts(paths: list[str]) -> int | None:
    numbers = [int(m.group(1)) for m in (_PART.search(p) for p in paths) if m]
    return max(numbers) + 1 if numbers else None


def _value_counts(column) -> dict:
    return {r["values"]: r["counts"] for r in pc.value_counts(column).to_pylist()} if len(column) else {}


def _copy(src: str, dst: str) -> None:
    with FileSystems.open(src) as fh:
        data = fh.read()
    _write(dst, data)


def _write(path: str, data: bytes) -> None:
    if publish.is_local(path):
        os.makedirs(os.path.dirname(os.path.abspath(path.removeprefix("file://"))), exist_ok=True)
    with FileSystems.create(path) as fh:
        fh.write(data)


def _json(obj) -> bytes:
    return json.dumps(obj, indent=2, sort_keys=True).encode() + b"\n"


def redrive(cfg, request: Request, options, runner, run_id: str, clock, out, held=None, audit=None) -> dict:
    """Runs one redrive of ``cfg.pipeline``'s published outputs under ``cfg.output``; returns the summary.

    ``held``: the output's lease (lease.Lease); checked before publishing. None for dry runs.
    ``audit``: the audit log's Recorder (audit_log.py), told the outcome when it is not ``failed``."""
    plan = plan_for(cfg)
    check_plan(plan)
    publish.check_output_paths(cfg.output, plan)
    original = _published_report(cfg.output)
    paths, letters = _letters(request.dlq)
    matching = request.selection.matches(letters)
    chosen = request.selection.mask(letters)
    selected = letters.filter(pa.array(chosen))
    kept_reasons = _value_counts(letters.filter(pa.array(~chosen)).column("reason"))
    try:
        fmt = letters_format(selected.column("source"))
        headers = None
        if fmt == "csv":
            headers = {s: csv_header(s) for s in pc.unique(selected.column("source")).to_pylist()}
    except (LetterError, OSError) as e:
        raise RunError(f"cannot replay the letters: {e}") from e
    curated = _curated_files(cfg.output, plan)
    changes = {}
    if not request.buckets_given and _count_of_parts(curated):
        changes["curated_buckets"] = _count_of_parts(curated)
    if not request.shards_given and _count_of_parts(paths):
        changes["dlq_shards"] = _count_of_parts(paths)
    if changes:
        cfg = dataclasses.replace(cfg, **changes)
        plan = plan_for(cfg)
    meta = {
        "run_id": run_id,
        "at": clock().isoformat(),
        "pipeline": plan.name,
        "spec": plan.file,
        "dlq": request.dlq,
        "filters": request.selection.describe(),
        "unmatched_filters": request.selection.unmatched(letters),
        "not_replayable": int(np.count_nonzero(matching & ~chosen)),
    }
    n_selected = int(np.count_nonzero(chosen))
    inputs = RedriveInputs(paths, request.selection, fmt, headers, curated)
    staging = publish.staging_dir(cfg.output, run_id)
    if request.dry_run or n_selected == 0:
        p = beam.Pipeline(runner=runner, options=options)
        build_redrive(p, plan, inputs, staging)  # a plan that cannot be composed fails here too
        return _nothing_run(meta, letters.num_rows, n_selected, _value_counts(selected.column("reason")), out,
                            request.dry_run)  # fmt: skip
    try:
        publish.check_writable(cfg.output)
    except OSError as e:
        raise RunError(str(e)) from e
    started = time.monotonic()
    # The work grows with the curated output (merged and rewritten whole), not with the letters.
    rows = original["counts"].get("curated", 0) + n_selected
    _execute(plan, inputs, staging, options, runner, rows, run_id, held)
    elapsed = time.monotonic() - started
    return _finish(cfg, original, plan, meta, letters.num_rows, n_selected, kept_reasons, staging, elapsed,
                   request.runner, out, held.check, audit)  # fmt: skip


def _execute(plan: Plan, inputs: RedriveInputs, staging: str, options, runner, rows: int, run_id: str,
             held) -> None:  # fmt: skip
    """Runs the redrive pipeline; on the direct runner, in one worker process per core for large
    outputs, as a batch run does (see ``main``)."""
    workers = direct_workers(options, rows)
    parallel = workers is not None and workers > 1
    worker_log = os.path.join(tempfile.gettempdir(), f"beam_pipelines-{run_id}-workers.log") if parallel else None
    stderr = None if options.view_as(RunOptions).log_level == "DEBUG" else worker_log
    try:
        with held.fork_safe(WarmWorkers(workers, stderr) if parallel else contextlib.nullcontext()) as pool:
            if parallel:  # the workers are forked (entering the pool) before the runner exists
                runner = parallel_direct_runner(options, workers, stderr, pool.command())
            p = beam.Pipeline(runner=runner, options=options)
            build_redrive(p, plan, inputs, staging)
            p.run().wait_until_finish()
    except Exception as e:
        publish.discard(staging)
        first = (str(e).strip().splitlines() or [type(e).__name__])[-1]
        where = f" (worker log: {worker_log})" if worker_log and os.path.exists(worker_log) else ""
        raise RunError(f"redrive failed, nothing published: {first}{where}") from e
    if worker_log and os.path.exists(worker_log):
        os.remove(worker_log)


def _nothing_run(meta: dict, letters: int, selected: int, reasons: dict, out, dry_run: bool) -> dict:
    notes = rr.notes(meta)
    by_reason = ", ".join(f"{k} {v:,}" for k, v in sorted(reasons.items()))
    if dry_run:
        head = (f"dry run: {meta['pipeline']} would replay {selected:,} of {letters:,} dead letters"
                + (f" ({by_reason})" if by_reason else "") + "; nothing was run or written")  # fmt: skip
    else:
        head = f"nothing to redrive: none of {letters:,} dead letters is selected; outputs unchanged"
    out.write("\n".join([head, *notes]) + "\n")
    return {"dry_run": dry_run, "letters": letters, "selected": selected, "selected_reasons": reasons, **meta}


def _finish(cfg, original, plan, meta, letters, selected, kept_reasons, staging, elapsed, runner, out,
            fence, audit=None) -> dict:  # fmt: skip
    counts = read_json(join_path(staging, "_redrive", "counts.json")) or {}
    checked = read_json(join_path(staging, "_redrive", "expectations.json"))
    results = checked["results"] if checked is not None else None
    section = rr.redrive_section(counts, selected, letters, meta, results)
    failed = [r for r in results or () if r["severity"] == "error" and not r["passed"] and r.get("action")]
    if failed:
        if audit is not None:
            audit.outcome = "audit_failed"
        raise RunError(f"audit failed, nothing published: expectation {failed[0]['name']!r} failed on the replayed "
                       f"records: {failed[0]['detail']} (staged outputs kept in {staging})")  # fmt: skip
    report = rr.updated_report(original, counts, kept_reasons, section)
    run_dir, staged_run = join_path(cfg.output, "_run"), join_path(staging, "_run")
    for path in _files(run_dir, ""):
        name = path[len(run_dir) :].lstrip("/")
        if name not in _OWN:
            _copy(path, join_path(staged_run, name))
    history = b""
    if FileSystems.exists(join_path(run_dir, HISTORY)):
        with FileSystems.open(join_path(run_dir, HISTORY)) as fh:
            history = fh.read()
    line = {k: v for k, v in section.items() if k != "expectations"}
    line.update(counts=report["counts"], elapsed_s=round(elapsed, 3))
    if results is not None:
        line["expectations_failed"] = [r["name"] for r in results if not r["passed"]]
    history += json.dumps(line, sort_keys=True).encode() + b"\n"
    _write(join_path(staged_run, HISTORY), history)
    _write(join_path(staged_run, "report.json"), _json(report))
    published = publish.count_published(staging)
    summary = rr.updated_summary(read_json(join_path(run_dir, "summary.json")), report, published, elapsed, runner)
    _write(join_path(staged_run, "summary.json"), _json(summary))
    if not (report["conservation_ok"] and section["conservation_ok"]):
        raise RunError("conservation check failed, nothing published: read != curated + dead_lettered + duplicates "
                       f"+ late (staged report in {join_path(staged_run, 'report.json')})")  # fmt: skip
    if not summary["files_match"]:
        raise RunError(f"staged files do not hold the counted rows, nothing published (see {staged_run})")
    try:
        fence()
    except RunError:
        publish.discard(staging)
        raise
    try:
        tables = lakehouse.table_entries(plan, cfg.output, staging, meta["run_id"])
        cleanup = publish.publish(staging, cfg.output, tables)
    except OSError as e:  # NotPublished or PublishCutOff: each says what stands
        if isinstance(e, publish.NotPublished):
            publish.discard(staging)
        elif audit is not None:
            audit.outcome = "cut_off"
        raise RunError(str(e)) from e
    if audit is not None:
        audit.outcome = "published"
    if cleanup is not None:
        cleanup.join()
    if tables:
        summary["lakehouse"] = commit.results(tables)
    out.write(rr.render(summary, cfg.output, history.count(b"\n")))
    out.flush()
    return summary
