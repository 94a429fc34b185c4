"""The object store failing under the pipeline: throttling (503 SlowDown), internal errors (500)
and reset connections on a share of requests, and an outage, between the pipeline and a real
S3 server (moto) through tests/fault_proxy.py.

A throttled run must end exactly as a fault-free run does (same counts, same bytes); an outage
longer than the retry budget must end in one error line, with the previous outputs untouched.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.e2e.helpers import cli, datagen, one_line_error, report
from tests.fault_proxy import FaultProxy
from tests.integration.test_s3 import _get, _keys, _s3_flags, endpoint, s3  # noqa: F401 - fixtures

ROWS = 3000


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, s3):  # noqa: F811 - the fixture imported above
    base = tmp_path_factory.mktemp("s3-faults")
    data = datagen(base / "in", "jsonl", rows=ROWS, dirty=0.2, files=2)
    s3.create_bucket(Bucket="faults")
    for path in sorted(data.iterdir()):
        s3.upload_file(str(path), "faults", f"in/{path.name}")
    local = base / "local"
    proc = cli("--pipeline=events", f"--input={data}/*.jsonl", f"--output={local}")
    assert proc.returncode == 0, proc.stderr
    return local


def _run(url: str, out: str):
    return cli("--pipeline=events", "--input=s3://faults/in/*.jsonl", f"--output=s3://faults/{out}", *_s3_flags(url))


@pytest.fixture(scope="module")
def throttled(dataset, endpoint):  # noqa: F811 - the input is uploaded by dataset
    """The events pipeline run through a proxy that fails a share of the requests; the proxy's counts."""
    with FaultProxy(endpoint, every={11: "503", 17: "500", 29: "reset"}) as proxy:
        # Also a burst: 6 requests in a row fail once the run is under way (fewer than the 8
        # attempts each request has, so every request gets through).
        proxy.outage("503", after=60, count=6)
        done = _run(proxy.url, "throttled")
    assert done.returncode == 0, done.stderr
    return proxy.injected


def test_a_throttled_store_gives_the_fault_free_result(dataset, throttled, s3):  # noqa: F811
    local = dataset
    assert throttled["503"] >= 6 and throttled["500"] > 0 and throttled["reset"] > 0, throttled
    rep = json.loads(_get(s3, "faults", "throttled/_run/report.json"))
    assert rep == report(local)  # every count and reason exactly as without faults: no loss, no doubles
    for key in _keys(s3, "faults", "throttled/"):
        if key.startswith(("throttled/curated/", "throttled/aggregates/")):
            assert _get(s3, "faults", key) == (local / key[len("throttled/") :]).read_bytes(), key
    assert not [k for k in _keys(s3, "faults", "throttled/") if "_staging" in k or k.endswith("_publishing.json")]


def test_a_store_that_stays_down_is_one_error_line_after_the_budget(throttled, s3, endpoint, monkeypatch):  # noqa: F811
    before = {k: _get(s3, "faults", k) for k in _keys(s3, "faults", "throttled/")}  # the previous run's outputs
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "3")  # the budget is the user's to set: a short one here
    with FaultProxy(endpoint) as proxy:
        proxy.outage("503")
        started = time.monotonic()
        failed = _run(proxy.url, "throttled")
        took = time.monotonic() - started
    line = one_line_error(failed, 1)
    assert "SlowDown" in line and "s3://faults/throttled" in line, line
    assert took < 120, f"gave up only after {took:.0f} s"
    assert {k: _get(s3, "faults", k) for k in _keys(s3, "faults", "throttled/")} == before
