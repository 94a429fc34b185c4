"""Per-entity features as a spec step: trailing aggregates, session features and ratios as of
every event (``transforms.feature_defs`` says exactly what each means).

Batch: ``EntityFeatures`` over the whole input. Streaming: ``EntityFeaturesStream``, with the same
values; its lateness window and allowed lateness (``streaming``) are the pipeline's event time
(the source judges late records by them), and besides the feature rows it has a named output,
``online``: each entity's row as of its latest event, as events arrive (``<step>.online``, for an
``UpsertPostgres`` keyed by the entity with ``version: _version``).
"""

from __future__ import annotations

import pyarrow as pa

from beam_pipelines.spec.shape import DURATION, duration, duration_seconds
from beam_pipelines.spec.steps.base import Outputs, Step, register
from beam_pipelines.spec.steps.records import _ERRORS, STREAM_PARTITIONS, _error_outputs
from transforms.feature_defs import AGGREGATE_FNS, SESSION_FNS, FeatureError, FeatureSet, feature_from_dict
from transforms.quality.expect_expr import parse_expression
from transforms.sinks.files import join_path

__all__ = ["EntityFeaturesStep"]

_DURATION = {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "string", "pattern": DURATION}]}
_FEATURE = {
    "type": "object",
    "properties": {
        "fn": {"enum": [*AGGREGATE_FNS, *SESSION_FNS, "ratio"]},
        "range": {
            **_DURATION,
            "description": "Trailing aggregates: events in (t - range, t]. Seconds, or 90s, 1h, 7d.",
        },
        "column": {"type": "string", "description": "sum, count_distinct, last: the column."},
        "where": {
            "type": "string",
            "description": "Only events where this expression is true count (session_converted: the converting "
            "event), e.g. action == 'purchase'.",
        },
        "decimals": {
            "type": "integer",
            "minimum": 0,
            "maximum": 6,
            "description": "sum of a double (required there): summed exactly in units of 10^-decimals.",
        },
        "gap": {**_DURATION, "description": "Session features: the silence that ends a session, e.g. 30m."},
        "numerator": {"type": "string", "description": "ratio: a feature defined before it."},
        "denominator": {"type": "string", "description": "ratio: a feature defined before it."},
    },
    "required": ["fn"],
}
_DURATIONS = ("range", "gap")
ONLINE = "online"
VERSION = "_version"  # the online rows' version column (transforms.entity_features_stream.VERSION)


@register
class EntityFeaturesStep(Step):
    type = "EntityFeatures"
    kind = "records"
    doc = (
        "Per-entity features as of every event: count, sum, count_distinct and last over trailing ranges "
        "(t - range, t], the current session's length, events and conversion, and ratios. One row per event "
        "(entity, time, keep columns, features); events without an entity or a time are dead letters. "
        "Streaming: the same values, each row written once final (its window's end plus the allowed lateness "
        "passed); <step>.online holds each entity's row as of its latest event, as events arrive."
    )
    error_outputs = ("error_handling",)
    # Streaming: rows leave once final, after their window and its lateness (no per-window profile).
    rows_after_lateness = True
    config_schema = {
        "type": "object",
        "properties": {
            "entity": {"type": "string", "description": "The entity key column (string or integer)."},
            "time": {"type": "string", "description": "The event-time column (a timestamp)."},
            "keep": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Columns carried into each feature row (e.g. the event's id).",
            },
            "features": {
                "type": "object",
                "description": "Output column -> {fn, range, column, where, decimals, gap, numerator, denominator}.",
                "additionalProperties": _FEATURE,
            },
            "streaming": {
                "type": "object",
                "description": "Streaming only: the event time the source judges late records by. An event "
                "is late when its window's end plus allowed_lateness has passed (a dead letter, reason late); "
                "an event's row is written once that time has passed for it.",
                "properties": {
                    "window": duration("The lateness window (and the feature files' window). Default: 1h."),
                    "allowed_lateness": duration("How late an event may come and still count. Default: 0.", 0),
                    "partitions": {
                        "type": "integer",
                        "minimum": 1,
                        "description": "Hash partitions of the entity, each with its own state: each batch read "
                        "is cut into this many pieces, each a keyed bundle, so few keep latency low; more spread "
                        f"the state over workers. Default: {STREAM_PARTITIONS}.",
                    },
                },
            },
            "error_handling": _ERRORS,
        },
        "required": ["entity", "time", "features", "error_handling"],
    }

    def event_time(self) -> tuple[str, int, int] | None:
        """Streaming: ``(time column, window seconds, allowed lateness seconds)``."""
        if self.ctx.mode != "streaming":
            return None
        s = self.config.get("streaming", {})
        return (
            self.config["time"],
            duration_seconds(s.get("window", 3600)),
            duration_seconds(s.get("allowed_lateness", 0)),
        )

    def outputs(self) -> tuple[str, ...]:
        return (ONLINE,) if self.ctx.mode == "streaming" else ()

    def output_columns(self, name: str):
        return {**self._columns, VERSION: pa.int64()}

    def feature_set(self) -> FeatureSet:
        """The step's FeatureSet (checked: SpecError at the first mistake)."""
        c = self.config
        try:
            features = tuple(
                feature_from_dict(name, {k: duration_seconds(v) if k in _DURATIONS else v for k, v in f.items()})
                for name, f in c["features"].items()
            )
            return FeatureSet(c["entity"], c["time"], features, tuple(c.get("keep", ())))
        except FeatureError as e:
            raise self.error(e.key, e.message) from None

    def columns(self, inputs):
        cols = inputs[0]
        if cols is None:
            raise self.error(None, "no record columns here yet: this step must come after a Validate step")
        fs = self._fs = self.feature_set()
        self.need(cols, fs.entity, "entity")
        self.need(cols, fs.time, "time")
        for i, c in enumerate(fs.keep):
            self.need(cols, c, f"keep.{i}")
        where_types, self._where_columns = {}, set()
        for f in fs.features:
            if getattr(f, "column", None):
                self.need(cols, f.column, f"features.{f.name}.column")
            if getattr(f, "where", None):
                where_types[f.name] = self._where_type(f.name, f.where, cols)
        try:
            self._columns = fs.output_types(cols, where_types)
        except FeatureError as e:
            raise self.error(e.key, e.message) from None
        if self.ctx.mode == "streaming":
            given = self.ctx.event_time
            if given[0] != fs.time:
                raise self.error("time", f"the stream's event time is {given[0]!r} (its first WindowedAggregate's): "
                                         "features streamed must be as of the same time column")  # fmt: skip
            if {"window", "allowed_lateness"} & set(self.config.get("streaming", {})) and given != self.event_time():
                raise self.error("streaming", "the stream's lateness comes from its first WindowedAggregate "
                                              f"(window {given[1]}s, allowed lateness {given[2]}s): drop these "
                                              "settings or make them the same")  # fmt: skip
        return self._columns

    def _where_type(self, name: str, text: str, cols) -> pa.DataType:
        key = f"features.{name}.where"
        try:
            expr = parse_expression(text)
        except ValueError as e:
            raise self.error(key, str(e)) from None
        for c in expr.columns:
            self.need(cols, c, key)
        self._where_columns |= set(expr.columns)
        empty = pa.table({c: pa.array([], t) for c, t in cols.items()})
        try:
            value = expr.evaluate(empty)
        except (ValueError, TypeError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise self.error(key, str(e)) from None
        return value.type

    def reads(self):
        return set(self._fs.columns_read()) | self._where_columns

    def build(self, inputs, io):
        if self.ctx.mode == "streaming":
            from transforms.entity_features_stream import EntityFeaturesStream

            _, window, lateness = self.ctx.event_time
            partitions = self.config.get("streaming", {}).get("partitions", STREAM_PARTITIONS)
            out = inputs[0] | self.name >> EntityFeaturesStream(
                self._fs, window, lateness, partitions=partitions, stage=self.name
            )
            return Outputs(out["features"], _error_outputs(self, out), extra={ONLINE: out["online"]})
        from transforms.entity_features import EntityFeatures

        out = inputs[0] | self.name >> EntityFeatures(
            self._fs,
            partitions=self.ctx.cfg.shuffle_partitions,
            spill_dir=join_path(io.scratch, "features") if io.scratch else None,
            stage=self.name,
        )
        return Outputs(out["features"], _error_outputs(self, out))
