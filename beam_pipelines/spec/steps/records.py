"""Spec step types that take record tables and hand them on: parse, validate, cleanse,
deduplicate, features, expectations, select."""

from __future__ import annotations

import os

import apache_beam as beam
import pyarrow as pa

from beam_pipelines.spec.contract_rules import arrow_type, field_names, rules_for
from beam_pipelines.spec.steps.base import Columns, Outputs, Step, register
from transforms.cleanse import Cleanse, CountryCode, Email
from transforms.dedup import Deduplicate
from transforms.dedup_stream import DeduplicateStream
from transforms.features import AddFeatures
from transforms.ingest.aliases import resolve_aliases
from transforms.ingest.drift import drift_counts
from transforms.ingest.parse import FORMATS, ParseRecords
from transforms.ingest.validate import ValidateSchema
from transforms.quality.expectations import CheckExpectations
from transforms.quality.expectations_spec import ExpectationError, load_expectations
from transforms.records import typed
from transforms.sinks.files import join_path

__all__ = ["RECORD_COLUMNS"]

# Columns that carry a record's original text and origin past validation (for dead letters
# and dedup ties); left out of deduplicated rows when no later step reads them.
RECORD_COLUMNS = ("_raw", "_source")
_ERRORS = {
    "type": "object",
    "description": "Where this step's failed records go: an output name later steps take as <step>.<output>.",
    "properties": {"output": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"}},
    "required": ["output"],
}
# Undeclared fields: this project's words (--schema_policy) and dlt's schema-contract modes.
_UNKNOWN_POLICIES = {"additive": "additive", "evolve": "additive", "strict": "strict", "discard_row": "strict",
                     "discard": "discard", "discard_value": "discard", "freeze": "freeze"}  # fmt: skip


def _errors_output(step: Step) -> str | None:
    eh = step.config.get("error_handling")
    return eh["output"] if eh else None


def _error_outputs(step: Step, out: dict) -> dict:
    name = _errors_output(step)
    return {name: out["dead_letters"]} if name else {}


@register
class Parse(Step):
    type = "Parse"
    kind = "records"
    doc = "Parses raw batches into the contract's fields; unparseable records are dead letters (malformed)."
    error_outputs = ("error_handling",)
    config_schema = {
        "type": "object",
        "properties": {
            "format": {"enum": list(FORMATS), "description": "Input format. Default: the source's."},
            "error_handling": _ERRORS,
        },
        "required": ["error_handling"],
    }

    def columns(self, inputs):
        return None

    def format(self) -> str:
        return self.config.get("format") or self.ctx.source_format or "jsonl"

    def _aliases(self) -> tuple:
        return tuple((f.name, tuple(f.aliases)) for f in self.ctx.contract.fields if f.aliases)

    def build(self, inputs, io):
        aliases = self._aliases()
        # Former names are read as fields too (not undeclared ones), then folded into their field.
        names = field_names(self.ctx.contract) + tuple(a for _, former in aliases for a in former)
        out = inputs[0] | self.name >> ParseRecords(self.format(), names)
        parsed = out["parsed"]
        if aliases:
            parsed = parsed | f"{self.name}Aliases" >> beam.ParDo(_AliasFn(aliases)).with_input_types(
                pa.Table
            ).with_output_types(pa.Table)
        return Outputs(parsed, _error_outputs(self, out), [out["stats"]])


class _AliasFn(beam.DoFn):
    def __init__(self, aliases: tuple):
        self._aliases = aliases

    def process(self, table: pa.Table):
        yield resolve_aliases(table, self._aliases)


@register
class Validate(Step):
    type = "Validate"
    kind = "records"
    doc = "Types and normalises the contract's fields; records that break it are dead letters."
    error_outputs = ("error_handling",)
    config_schema = {
        "type": "object",
        "properties": {
            "unknown_fields": {
                "enum": sorted(_UNKNOWN_POLICIES),
                "description": "Undeclared fields: additive/evolve keep them as JSON in `extras`; strict/discard_row "
                "dead-letter the record (unknown_field); discard_value drops them (counted); freeze fails the run. "
                "Default: the contract's evolution.columns.",
            },
            "error_handling": _ERRORS,
        },
        "required": ["error_handling"],
    }

    def policy(self) -> str:
        """Undeclared fields: the step's ``unknown_fields``, else the contract's evolution.columns."""
        given = self.config.get("unknown_fields")
        if given is None:
            given = self.ctx.contract.evolution.columns
        return _UNKNOWN_POLICIES[given]

    def invalid(self):
        """Values unusable as their type: one policy when every field has the same, else a
        mapping of field to policy (the field's own, its type's, the contract's)."""
        contract = self.ctx.contract
        modes = {f.name: contract.data_type_policy(f.name) for f in contract.fields}
        distinct = set(modes.values())
        return distinct.pop() if len(distinct) == 1 else modes

    def columns(self, inputs):
        if inputs[0] is not None:
            raise self.error(None, "Validate takes parsed records: put it right after a Parse step")
        self.policy()
        self.invalid()
        cols = {f.name: arrow_type(f) for f in self.ctx.contract.fields}
        cols["extras"] = pa.string()
        cols["_raw"] = pa.string()
        if self.ctx.change_source is not None:
            from beam_pipelines.spec.steps.changes import change_columns

            cols.update(change_columns())
        return cols

    def build(self, inputs, io):
        invalid = self.invalid()
        kw = {"invalid": invalid} if invalid != "discard_row" else {}
        out = inputs[0] | self.name >> ValidateSchema(rules_for(self.ctx.contract), self.policy(), **kw)
        fields = tuple((f.name, f.type) for f in self.ctx.contract.fields)
        drift = inputs[0] | f"{self.name}Drift" >> beam.ParDo(_DriftFn(fields)).with_input_types(pa.Table)
        stats = [typed(drift, dict)] + ([out["stats"]] if "stats" in out else [])
        return Outputs(out["valid"], _error_outputs(self, out), stats)


class _DriftFn(beam.DoFn):
    """Schema drift of the parsed records against the contract (see transforms.ingest.drift)."""

    def __init__(self, fields: tuple):
        self._fields = fields

    def process(self, parsed: pa.Table):
        counts = drift_counts(parsed, self._fields)
        if counts:
            yield counts


_CLEANSE_RULES = {"email": Email, "country_code": CountryCode}


@register
class CleanseStep(Step):
    type = "Cleanse"
    kind = "records"
    doc = "Normalises optional string fields; a value that fails its rule becomes null and is counted."
    config_schema = {
        "type": "object",
        "properties": {
            "rules": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "properties": {
                        "column": {"type": "string"},
                        "rule": {
                            "enum": sorted(_CLEANSE_RULES),
                            "description": "email: trimmed, lower case, null unless local@domain.tld (invalid_email); "
                            "country_code: trimmed, upper case, null unless two letters (invalid_country).",
                        },
                    },
                    "required": ["column", "rule"],
                },
            }
        },
        "required": ["rules"],
    }

    def columns(self, inputs):
        cols = inputs[0]
        for i, r in enumerate(self.config["rules"]):
            self.need(cols, r["column"], f"rules.{i}.column", ("string",))
        return cols

    def reads(self):
        return {r["column"] for r in self.config["rules"]}

    def build(self, inputs, io):
        rules = tuple(_CLEANSE_RULES[r["rule"]](r["column"]) for r in self.config["rules"])
        out = inputs[0] | self.name >> Cleanse(rules)
        return Outputs(out["cleaned"], stats=[out["stats"]])


# Streaming dedup partitions: a live batch cut into 8 pieces cost 8 keyed bundles, and on two
# cores those fell behind at 500 events/s.
STREAM_PARTITIONS = 2


@register
class DeduplicateStep(Step):
    type = "Deduplicate"
    kind = "records"
    doc = (
        "Keeps one record per key (the first or last by order_by); the others are counted as duplicates. "
        "Streaming: the first per key within a horizon."
    )
    config_schema = {
        "type": "object",
        "properties": {
            "key": {"type": "string", "description": "The key column."},
            "order_by": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Columns choosing the survivor (_raw: the record text), compared in order.",
            },
            "keep": {
                "enum": ["first", "last"],
                "description": "first: the smallest by order_by (the earliest); last: the largest (the latest "
                "version). Default: first. Streaming keeps the first.",
            },
            "horizon": {
                "anyOf": [{"type": "integer", "minimum": 1}, {"type": "string", "pattern": r"^[0-9]+(s|m|h|d|w)$"}],
                "description": "Streaming: how long a key is remembered. Default: the first aggregate's window "
                "plus its allowed lateness.",
            },
            "stream_partitions": {
                "type": "integer",
                "minimum": 1,
                "description": "Streaming: hash partitions of the key, each with its own state. Each batch read "
                "is cut into this many pieces and each piece costs a keyed bundle, so few keep latency low; "
                f"more spread the state over workers. Default: {STREAM_PARTITIONS}.",
            },
        },
        "required": ["key"],
    }

    def columns(self, inputs):
        cols = inputs[0]
        self.need(cols, self.config["key"], "key")
        for i, c in enumerate(self.config.get("order_by", ())):
            self.need(cols, c, f"order_by.{i}")
        self.ctx.record_key = self.config["key"]
        self.ctx.record_order = (tuple(self.config.get("order_by", ())), self.config.get("keep", "first"))
        if self.ctx.mode == "streaming":
            if self.ctx.event_time is None:
                raise self.error(None, "streaming deduplication needs an event time: add a WindowedAggregate")
            if self.config.get("keep") == "last":
                raise self.error("keep", "streaming deduplication keeps the first record of a key: a later one "
                                         "cannot take back what was written")  # fmt: skip
        return cols

    def reads(self):
        return {self.config["key"], *self.config.get("order_by", ())}

    def _dropped(self) -> tuple[str, ...]:
        # Not a change of the columns later steps see: none of them reads these (later_reads).
        if self.ctx.mode == "streaming":
            return ()
        return tuple(c for c in RECORD_COLUMNS if c not in self.later_reads)

    def build(self, inputs, io):
        key, order_by = self.config["key"], tuple(self.config.get("order_by", ()))
        partitions = self.ctx.cfg.shuffle_partitions
        if self.ctx.mode == "streaming":
            from beam_pipelines.spec.shape import duration_seconds

            time_field, window, lateness = self.ctx.event_time
            horizon = self.config.get("horizon")
            out = inputs[0] | self.name >> DeduplicateStream(
                key,
                time_field=time_field,
                horizon_seconds=duration_seconds(horizon) if horizon is not None else window + lateness,
                order_by=order_by,
                partitions=self.config.get("stream_partitions", STREAM_PARTITIONS),
            )
        else:
            out = inputs[0] | self.name >> Deduplicate(
                key,
                order_by=order_by,
                partitions=partitions,
                spill_dir=join_path(io.scratch, "dedup") if io.scratch else None,
                drop=self._dropped(),
                **({"keep": "last"} if self.config.get("keep") == "last" else {}),
            )
        return Outputs(out["unique"], stats=[out["stats"]])


@register
class AddFeaturesStep(Step):
    type = "AddFeatures"
    kind = "records"
    doc = (
        "Adds hour_of_day, day_of_week (0 = Monday) and is_weekend from a UTC timestamp, and email_domain "
        "(after the email column) when an email column is named."
    )
    config_schema = {
        "type": "object",
        "properties": {
            "time": {"type": "string", "description": "The timestamp column."},
            "email": {"type": "string", "description": "The (cleansed) email column, or omit."},
        },
        "required": ["time"],
    }

    def columns(self, inputs):
        cols = dict(inputs[0])
        self.need(cols, self.config["time"], "time", ("timestamp",))
        email = self.config.get("email")
        out = {}
        for c, t in cols.items():
            if c == "extras":
                break
            out[c] = t
            if c == email:
                out["email_domain"] = pa.string()
        if email is not None:
            self.need(cols, email, "email", ("string",))
        out.update({"hour_of_day": pa.int32(), "day_of_week": pa.int32(), "is_weekend": pa.bool_()})
        out.update({c: t for c, t in cols.items() if c not in out})
        return out

    def reads(self):
        return {self.config["time"], *([self.config["email"]] if self.config.get("email") else [])}

    def build(self, inputs, io):
        return Outputs(inputs[0] | self.name >> AddFeatures(self.config["time"], self.config.get("email")))


@register
class CheckExpectationsStep(Step):
    type = "CheckExpectations"
    kind = "records"
    doc = (
        "Data-quality expectations (README: Data quality) on the records as they flow; quarantined rows become "
        "dead letters. No path (e.g. --expectations=none) checks nothing."
    )
    error_outputs = ("error_handling",)
    config_schema = {
        "type": "object",
        "properties": {
            "path": {
                "type": ["string", "null"],
                "description": "Expectations YAML, relative to the spec file; null: none.",
            },
            "expectations": {
                "type": "array",
                "items": {"type": "object", "additionalProperties": True},
                "description": "Expectations inline (the items of an expectations file).",
            },
            "error_handling": _ERRORS,
        },
        "required": ["error_handling"],
    }

    def _source(self):
        if self.config.get("expectations") is not None:
            return list(self.config["expectations"])
        path = self.config.get("path")
        if path is None or path.lower() == "none":
            return None
        return path if os.path.isabs(path) else os.path.join(self.ctx.base_dir, path)

    def checks(self, cols: Columns | None = None) -> tuple:
        """The expectations, validated against the columns reaching this step."""
        source = self._source()
        if source is None:
            return ()
        cols = self._checked if cols is None else cols
        try:
            return load_expectations(source, cols)
        except (ExpectationError, OSError) as e:
            key = "expectations" if self.config.get("expectations") is not None else "path"
            given = " (--expectations)" if key == "path" and self.ctx.cfg.expectations is not None else ""
            raise self.error(key, f"{e}{given}") from None

    def columns(self, inputs):
        cols = inputs[0]
        if cols is None:
            raise self.error(None, "no record columns here yet: this step must come after a Validate step")
        # Expectations may read the record's text and origin too (quarantines copy them).
        self._checked = {**cols, "_raw": pa.string(), "_source": pa.string()}
        self._checks = self.checks(self._checked)
        return cols

    def reads(self):
        out = set()
        for check in self._checks:
            used = check.reads()
            if used is None or check.quarantines:
                return set(self._checked)
            out |= used
        return out

    def active(self) -> bool:
        return bool(self._checks)

    def build(self, inputs, io):
        if not self._checks:
            return Outputs(inputs[0])
        streaming = self.ctx.mode == "streaming"
        out = inputs[0] | self.name >> CheckExpectations(
            self._checks,
            run_time=self.ctx.cfg.run_time,
            columns=self._checked,
            window_seconds=self.ctx.event_time[1] if streaming and self.ctx.event_time else None,
            unique_partitions=self.ctx.cfg.shuffle_partitions,
        )
        return Outputs(out["passed"], _error_outputs(self, out), [out["stats"]], {"results": out["results"]})


class _SelectFn(beam.DoFn):
    def __init__(self, columns: tuple[str, ...]):
        self._columns = list(columns)

    def process(self, table: pa.Table):
        yield table.select(self._columns)


@register
class Select(Step):
    type = "Select"
    kind = "records"
    doc = "Keeps the named columns, in this order."
    config_schema = {
        "type": "object",
        "properties": {"columns": {"type": "array", "minItems": 1, "items": {"type": "string"}}},
        "required": ["columns"],
    }

    def columns(self, inputs):
        cols = inputs[0]
        names = self.config["columns"]
        for i, c in enumerate(names):
            self.need(cols, c, f"columns.{i}")
        if len(set(names)) != len(names):
            raise self.error("columns", "a column is named twice")
        return {c: cols[c] for c in names}

    def reads(self):
        return set(self.config["columns"])

    def build(self, inputs, io):
        columns = tuple(self.config["columns"])
        return Outputs(inputs[0] | self.name >> beam.ParDo(_SelectFn(columns)).with_output_types(pa.Table))
