"""The reference pipeline ``events`` (SPEC-events.md) is the spec ``events.yaml`` beside this
module, with its contract in ``schemas/events/``; ``build(p, cfg, io)`` composes any spec.

What other code reads of the pipeline (its curated columns, aggregate keys and schema, the
validation rules, the columns its expectations see) is taken from the compiled spec here, so
the spec stays the one place it is declared.
"""

from __future__ import annotations

import os

import pyarrow as pa

from beam_pipelines.spec.build import PipelineIO, WriteJson, build, file_io, make_report, plan_for, stream_io
from beam_pipelines.spec.config import EventsConfig
from beam_pipelines.spec.contract_rules import field_names, rules_for
from beam_pipelines.spec.steps.records import RECORD_COLUMNS

__all__ = [
    "AGGREGATE_KEYS",
    "AGGREGATE_SCHEMA",
    "CHECKED_TYPES",
    "CURATED_COLUMNS",
    "DEFAULT_EXPECTATIONS",
    "EventsIO",
    "FIELDS",
    "RULES",
    "WriteJson",
    "build",
    "file_io",
    "make_report",
    "reads_records",
    "stream_io",
]

EventsIO = PipelineIO
DEFAULT_EXPECTATIONS = os.path.join(os.path.dirname(__file__), "events.expectations.yaml")

_PLAN = plan_for(
    EventsConfig(input="in/*.jsonl", input_format="jsonl", output="out", expectations=DEFAULT_EXPECTATIONS)
)
FIELDS = field_names(_PLAN.ctx.contract)
RULES = rules_for(_PLAN.ctx.contract)
EVENT_TYPES = next(r.values for r in RULES if r.name == "event_type")
CURATED_COLUMNS = tuple(_PLAN.curated.columns)
_AGGREGATE = _PLAN.aggregates[0]
AGGREGATE_KEYS = ("window_start", *_AGGREGATE.step.config["group_by"])
AGGREGATE_SCHEMA = pa.schema(list(_AGGREGATE.columns.items()))
# What expectations see: the curated columns, plus the record text and source for dead letters.
CHECKED_TYPES = next(n.step._checked for n in _PLAN.chain if n.step.type == "CheckExpectations")


def reads_records(checks: tuple) -> bool:
    """Whether expectations read a record's text or source after deduplication: to quarantine
    rows as dead letters, or in a check. If not, deduplication leaves those columns out."""
    for check in checks:
        used = check.reads()
        if used is None or check.quarantines or used & set(RECORD_COLUMNS):
            return True
    return False
