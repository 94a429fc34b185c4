"""A redrive as a Beam pipeline, composed from a spec's checked ``Plan``.

The selected dead letters' record text goes through the plan's records chain (Parse ... the
curated records), built by the steps themselves; the records that now pass are merged into the
published curated rows (one row per Deduplicate key, the published row winning); the plan's
aggregate steps recompute the aggregates from the merged rows; the letters that were not
selected and those that still fail are the new dead letters. Counts for the run report come out
as one dict (see ``replay.report``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from beam_pipelines.replay.letters import Selection, raw_batches, read_letter_file
from beam_pipelines.spec.build import PipelineIO, WriteJson
from beam_pipelines.spec.compile import Plan
from beam_pipelines.spec.steps.io import SCRATCH
from transforms.quality.counts import CountRows, MergeCounts
from transforms.records import typed
from transforms.sinks.files import join_path

__all__ = [
    "FILE_SINKS", "MergeCurated", "RedriveInputs", "RedriveSource", "build_redrive", "curated_schema", "dedup_key",
    "in_columns", "taken_keys", "without_keys",
]  # fmt: skip

# Sinks whose outputs a redrive can stage and publish (files and tables under --output).
FILE_SINKS = ("WriteLake", "WriteDeadLetters", "WriteLakehouse")


def curated_schema(plan: Plan) -> pa.Schema:
    """The columns of the curated files (what a curated sink writes), with their types."""
    cols = plan.curated.columns
    return pa.schema([(c, t) for c, t in cols.items() if not c.startswith("_")])


def dedup_key(plan: Plan) -> str | None:
    """The key of the plan's Deduplicate step (None when it has none)."""
    return next((n.step.config["key"] for n in plan.chain if n.step.type == "Deduplicate"), None)


def in_columns(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table``'s curated columns, in ``schema``'s order and types."""
    return table.select(schema.names).cast(schema)


def taken_keys(table: pa.Table, key: str, keys: pa.Array) -> pa.Array:
    """The values of ``keys`` that ``table``'s ``key`` column holds."""
    column = table.column(key)
    return column.filter(pc.is_in(column, value_set=keys)).combine_chunks()


def without_keys(table: pa.Table, key: str, keys: pa.Array) -> pa.Table:
    """The rows of ``table`` whose ``key`` is not one of ``keys``."""
    return table.filter(pc.invert(pc.is_in(table.column(key), value_set=keys)))


class _CurateFn(beam.DoFn):
    def __init__(self, schema: pa.Schema):
        self._schema = schema

    def process(self, table: pa.Table):
        if table.num_rows:
            yield in_columns(table, self._schema)


class _ReadParquetFn(beam.DoFn):
    def process(self, path: str):
        with FileSystems.open(path) as fh:
            yield pq.read_table(fh)


class _DistinctKeysFn(beam.CombineFn):
    """Key arrays -> one array of the distinct keys (a few per replayed letter: small)."""

    def __init__(self, key_type: pa.DataType):
        self._type = key_type

    def create_accumulator(self):
        return []

    def add_input(self, acc, keys: pa.Array):
        acc.append(keys)
        return acc

    def merge_accumulators(self, accs):
        return [a for acc in accs for a in acc]

    def extract_output(self, acc):
        if not acc:
            return pa.array([], self._type)
        return pc.unique(pa.concat_arrays([a.cast(self._type) for a in acc]))


def _keys(table: pa.Table, key: str):
    if table.num_rows:
        yield table.column(key).combine_chunks()


def _taken(table: pa.Table, key: str, keys: pa.Array):
    if len(keys) and table.num_rows:
        hit = taken_keys(table, key, keys)
        if len(hit):
            yield hit


class _DropTakenFn(beam.DoFn):
    def __init__(self, key: str):
        self._key = key

    def process(self, table: pa.Table, taken: pa.Array):
        kept = without_keys(table, self._key, taken) if len(taken) else table
        if kept.num_rows < table.num_rows:
            yield beam.pvalue.TaggedOutput("stats", {"merge_duplicates": table.num_rows - kept.num_rows})
        if kept.num_rows:
            yield kept


class MergeCurated(beam.PTransform):
    """Merges redriven curated rows into the published ones: one row per key, the published
    row winning; a redriven row whose key is already published is counted as a duplicate.

    Takes a pair ``(published, redriven)`` of PCollections of tables; the published rows are
    unique by ``key`` (a run's curated output), and so are the redriven ones (deduplicated by
    the spec's chain). Only keys travel: the redriven keys go to every published table as a
    side input, the published ones among them come back; published rows pass on untouched.

    Args:
        schema: The curated columns and types both sides are brought to.
        key: The key column; None: the rows are unioned as they are.

    Returns a dict: ``merged`` (tables) and ``stats`` (dicts with ``merge_duplicates``).
    """

    def __init__(self, schema: pa.Schema, key: str | None, label: str | None = None):
        super().__init__(label)
        if key is not None and key not in schema.names:
            raise ValueError(f"the curated columns do not hold the key {key!r}: cannot merge redriven rows by it")
        self._schema, self._key = schema, key

    def expand(self, pcolls):
        published, redriven = pcolls
        schema, key = self._schema, self._key
        published = published | "CuratePublished" >> beam.ParDo(_CurateFn(schema)).with_output_types(pa.Table)
        redriven = redriven | "CurateRedriven" >> beam.ParDo(_CurateFn(schema)).with_output_types(pa.Table)
        if key is None:
            merged = (published, redriven) | "Union" >> beam.Flatten()
            return {
                "merged": merged,
                "stats": published.pipeline | "NoStats" >> beam.Create([]).with_output_types(dict),
            }
        key_type = schema.field(key).type
        wanted = (
            redriven
            | "RedrivenKeys" >> beam.FlatMap(_keys, key)
            | "DistinctRedriven" >> beam.CombineGlobally(_DistinctKeysFn(key_type))
        )
        taken = (
            published
            | "PublishedAmongThem" >> beam.FlatMap(_taken, key, beam.pvalue.AsSingleton(wanted))
            | "DistinctTaken" >> beam.CombineGlobally(_DistinctKeysFn(key_type))
        )
        fresh = redriven | "DropTaken" >> beam.ParDo(_DropTakenFn(key), beam.pvalue.AsSingleton(taken)).with_outputs(
            "stats", main="rows"
        )
        merged = (published, typed(fresh.rows)) | "Union" >> beam.Flatten()
        return {"merged": merged, "stats": typed(fresh.stats, dict)}


class _LettersFn(beam.DoFn):
    """A dead-letter file -> raw batches of its selected letters, and (tagged ``kept``) the rest."""

    def __init__(self, selection: Selection, fmt: str, headers: dict | None):
        self._selection, self._fmt, self._headers = selection, fmt, headers

    def process(self, path: str):
        letters = read_letter_file(path)
        if letters.num_rows == 0:
            return
        chosen = self._selection.mask(letters)
        kept = letters.filter(pa.array(~chosen))
        if kept.num_rows:
            yield beam.pvalue.TaggedOutput("kept", kept)
        yield from raw_batches(letters.filter(pa.array(chosen)), self._fmt, self._headers)


class RedriveSource(beam.PTransform):
    """Dead-letter files -> raw batches of the selected letters' records, and the kept letters.

    Args:
        paths: The dead-letter JSON-lines files.
        selection: Which letters are replayed.
        fmt: ``jsonl`` or ``csv`` (see ``letters.letters_format``).
        headers: For csv: each source's column names.

    Returns a dict: ``records`` (raw batches) and ``kept`` (DeadLetter tables, unchanged).
    """

    def __init__(self, paths: list[str], selection: Selection, fmt: str, headers: dict | None = None,
                 label: str | None = None):  # fmt: skip
        super().__init__(label)
        if fmt not in ("jsonl", "csv"):
            raise ValueError(f"letters are replayed as jsonl or csv, not {fmt!r}")
        if fmt == "csv" and headers is None:
            raise ValueError("csv letters need their sources' headers")
        self._paths, self._selection, self._fmt, self._headers = sorted(paths), selection, fmt, headers

    def expand(self, pbegin):
        out = (
            pbegin
            | "Files" >> beam.Create(self._paths, reshuffle=False)
            | "Letters"
            >> beam.ParDo(_LettersFn(self._selection, self._fmt, self._headers)).with_outputs("kept", main="records")
        )
        return {"records": typed(out.records), "kept": typed(out.kept)}


@dataclass(frozen=True)
class RedriveInputs:
    """What a redrive reads.

    Args:
        letter_files: The dead-letter files (``--dlq``).
        selection: Which letters are replayed.
        fmt: The letters' record format (``jsonl`` or ``csv``).
        headers: For csv: each source's column names.
        curated_files: The published curated parquet files.
    """

    letter_files: list
    selection: Selection
    fmt: str
    headers: dict | None
    curated_files: list


def _parse_as(step, fmt: str):
    # The letters' text is parsed in its own format, whatever the spec's source reads.
    replayed = copy.copy(step)
    replayed.config = {**step.config, "format": fmt}
    return replayed


def build_redrive(p: beam.Pipeline, plan: Plan, inputs: RedriveInputs, staging: str) -> dict:
    """Composes the redrive of ``plan`` with its sinks under ``staging``.

    Writes the merged curated rows, the recomputed aggregates and the dead letters through the
    spec's own sink steps (a silver table MERGEs the merged rows: the published ones change nothing
    there, the redriven ones are added; gold's windows are replaced), the counts (one dict) to ``<staging>/_redrive/counts.json`` and, when
    the plan checks expectations, their results on the replayed records to
    ``<staging>/_redrive/expectations.json``. Returns the PCollections by name.
    """
    scratch = join_path(staging, SCRATCH)
    io = PipelineIO(source=None, scratch=scratch)
    letters = p | "ReadLetters" >> RedriveSource(inputs.letter_files, inputs.selection, inputs.fmt, inputs.headers)
    built = {}
    previous = letters["records"]
    for node in plan.chain[1:]:
        step = _parse_as(node.step, inputs.fmt) if node.step.type == "Parse" else node.step
        built[node.step.name] = step.build([previous], io)
        previous = built[node.step.name].main
    redriven = previous
    published = (
        p
        | "CuratedFiles" >> beam.Create(sorted(inputs.curated_files), reshuffle=False)
        | "ReadCurated" >> beam.ParDo(_ReadParquetFn()).with_output_types(pa.Table)
    )
    merge = (published, redriven) | "MergeCurated" >> MergeCurated(curated_schema(plan), dedup_key(plan))
    merged = merge["merged"]
    aggregates = []
    for node in plan.aggregates:
        built[node.step.name] = node.step.build([merged], io)
        aggregates.append(built[node.step.name].main)
    errors = [built[name].errors[out] for name, out in plan.errors if name in built and out in built[name].errors]
    failed = (
        tuple(errors) | "StillFailing" >> beam.Flatten()
        if errors
        else p | "NoErrors" >> beam.Create([]).with_output_types(pa.Table)
    )
    dead = (letters["kept"], failed) | "AllDeadLetters" >> beam.Flatten()
    for node in plan.sinks:
        step = node.step
        if step.role == "received":  # a redrive receives nothing new: its records are already in bronze
            continue
        data = {"curated": merged, "dead_letters": dead}.get(step.role)
        if data is None:
            data = built[node.inputs[0][0]].main
        data | step.name >> step.make(staging)
    stats = [s for node in plan.chain[1:] for s in built[node.step.name].stats]
    counts = [
        *stats,
        redriven | "CountPassed" >> CountRows("curated"),
        failed | "CountStillFailing" >> CountRows("dead_lettered", by="reason"),
        merge["stats"],
        merged | "CountMerged" >> CountRows("merged"),
    ]
    if aggregates:
        every = aggregates[0] if len(aggregates) == 1 else tuple(aggregates) | "AllAggregates" >> beam.Flatten()
        counts.append(every | "CountAggregates" >> CountRows("aggregates"))
    report = tuple(counts) | "AllCounts" >> beam.Flatten() | "MergeCounts" >> MergeCounts()
    report | "WriteCounts" >> WriteJson(join_path(staging, "_redrive", "counts.json"))
    checked = next((built[n.step.name] for n in plan.chain[1:] if "results" in built[n.step.name].extra), None)
    if checked is not None:
        checked.extra["results"] | "WriteExpectations" >> WriteJson(join_path(staging, "_redrive", "expectations.json"))
    return {"curated": merged, "redriven": redriven, "aggregates": aggregates, "dead_letters": dead, "counts": report}
