"""Shared test helpers: pipelines on the in-process runner, and table shortcuts."""

from __future__ import annotations

import os

import pyarrow as pa
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline

pytest_plugins = ["tests.services", "tests.object_stores"]


@pytest.fixture(scope="session")
def prism_binary():
    """The cached prism binary, built through the artifacts script if needed (Go required)."""
    from beam_pipelines import artifacts
    from tests.e2e.helpers import run_module

    proc = run_module("beam_pipelines.artifacts", "fetch", "--prism", timeout=1500)
    assert proc.returncode == 0, f"prism could not be built (needs Go from the registries): {proc.stderr.strip()}"
    path = artifacts.prism_path()
    assert path.is_file() and os.access(path, os.X_OK), path
    return path


@pytest.fixture(params=["compiled", "arrow"])
def scanner(request, monkeypatch):
    """Runs a test with each implementation of the flat-JSON fast path."""
    from transforms.ingest import flatjson

    if request.param == "arrow":
        monkeypatch.setattr(flatjson, "_flatscan", None)
    return request.param


@pytest.fixture(params=["compiled", "numpy"])
def colscan_impl(request, monkeypatch):
    """Runs a test with each implementation of the profiles' column passes (HLL coupons, string stats)."""
    from transforms import colscan

    if request.param == "numpy":
        monkeypatch.setattr(colscan, "native", None)
    return request.param


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
