"""Spec step types: each module registers its types in ``STEP_TYPES`` when imported."""

from beam_pipelines.spec.steps import (  # noqa: F401  (registers the types)
    aggregate,
    bigquery,
    changes,
    derive,
    features,
    http,
    io,
    lakehouse,
    postgres,
    records,
    streams,
)
from beam_pipelines.spec.steps.base import STEP_TYPES, Columns, Context, Outputs, Step

__all__ = ["STEP_TYPES", "Columns", "Context", "Outputs", "Step"]
