"""Shared test helpers: pipelines on the in-process runner, and table shortcuts."""

from __future__ import annotations

import pyarrow as pa
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline


@pytest.fixture
def pipeline():
    """A TestPipeline on the in-process FnApiRunner (what the ``direct`` profile uses)."""

    def make():
        return TestPipeline(runner=FnApiRunner())

    return make


def rows(tables) -> list[dict]:
    """All rows of a list of tables, as dicts."""
    out = []
    for t in tables:
        out.extend(t.to_pylist())
    return out


def table_of(records: list[dict], schema: pa.Schema | None = None) -> pa.Table:
    return pa.Table.from_pylist(records, schema=schema)
