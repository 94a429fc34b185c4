"""The HTTP API source through the CLI, against a real local API (tests/http_api.py): records
through Parse and Validate with conservation, incremental state published only with the
outputs, the same state giving the same output, credentials kept out of every output, and an
unreachable API failing before anything is written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.e2e.helpers import cli, dead_letters, file_bytes, one_line_error, report
from tests.http_api import FakeApi, make_records

SPEC = Path(__file__).with_name("specs") / "api_items.yaml"
TOKEN = "tok-e2e-5b1f0c9a77"


def spec_for(tmp_path: Path, url: str, *edits: tuple[str, str], name: str = "api_items") -> Path:
    text = SPEC.read_text().replace("http://127.0.0.1:8765", url)
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def run(spec: Path, out: Path, *flags: str):
    return cli(f"--pipeline={spec}", "--runner=DirectRunner", f"--output={out}", *flags)


def curated_ids(out: Path) -> list[str]:
    return sorted(i for p in sorted((out / "curated").rglob("*.parquet")) for i in pq.read_table(p)["id"].to_pylist())


def state(out: Path) -> dict:
    return json.loads((out / "_state" / "ReadApi.json").read_text())


@pytest.fixture
def token(monkeypatch):
    monkeypatch.setenv("ITEMS_API_TOKEN", TOKEN)
    return TOKEN


def test_api_records_flow_through_the_contract_and_conserve(tmp_path, token):
    records = make_records(600)
    records[10]["amount"] = -5  # breaks the contract: a Validate dead letter
    with FakeApi(records, per_page=50, token=token, repeat_page=2) as api:
        api.fail(3, "500", "429").fail(5, "truncated").fail(7, "bad_json", "503")
        spec = spec_for(tmp_path, api.url)
        out = tmp_path / "out"
        proc = run(spec, out)
        assert proc.returncode == 0, proc.stderr
        assert not any(api.faults.values())
        assert all(h.get("authorization") == f"Bearer {token}" for _, h in api.requests)
        graph = tmp_path / "graph.json"
        dry = run(spec, tmp_path / "dry", "--dry_run", f"--dry_run_out={graph}")
        assert dry.returncode == 0, dry.stderr
    rep = report(out)
    c = rep["counts"]
    # 12 pages of 50 and page 2 served twice: 650 read, 50 duplicates, one invalid record.
    assert (c["read"], c["curated"], c["duplicates"], c["dead_lettered"]) == (650, 599, 50, 1)
    assert rep["conservation_ok"] is True and rep["dead_letter_reasons"] == {"invalid_value": 1}
    assert curated_ids(out) == sorted(r["id"] for r in records if r["id"] != "r000010")
    (bad,) = dead_letters(out)
    assert (
        bad["field"] == "amount"
        and bad["source"] == f"{api.url}/items?updated_since=2024-01-01T00%3A00%3A00Z&per_page=50&page=1"
    )
    assert state(out)["value"] == records[-1]["updated_at"] and state(out)["complete"] is True
    summary = json.loads((out / "_run" / "summary.json").read_text())
    assert summary["input"] == f"{api.url}/items"
    # The credential is in no output, log line, lineage event or job graph.
    assert token not in proc.stdout + proc.stderr + dry.stdout + dry.stderr
    assert graph.exists() and token.encode() not in graph.read_bytes()
    for path, data in file_bytes(out).items():
        assert token.encode() not in data, path
    assert (out / "_lineage").exists()


def test_state_moves_on_only_with_a_published_run(tmp_path, token):
    with FakeApi(make_records(300), per_page=50, token=token) as api:
        spec = spec_for(tmp_path, api.url)
        out = tmp_path / "out"
        assert run(spec, out).returncode == 0
        first = state(out)
        assert first["value"] == "2024-05-01T04:59:00Z"
        # New records: the next run reads only those.
        api.records += make_records(40, start=300)
        assert run(spec, out).returncode == 0
        assert report(out)["counts"]["read"] == 40 and curated_ids(out) == [f"r{i:06d}" for i in range(300, 340)]
        second = (out / "_state" / "ReadApi.json").read_bytes()
        assert state(out)["previous"] == first["value"]
        published = file_bytes(out / "curated")
        # A run that fails (a frozen contract meets a new field) publishes nothing: not its state either.
        api.records += [{**r, "coupon": "X1"} for r in make_records(5, start=340)]
        frozen = spec_for(
            tmp_path, api.url, ("evolution: {columns: evolve", "evolution: {columns: freeze"), name="frozen"
        )
        one_line_error(run(frozen, out), 1)
        assert (out / "_state" / "ReadApi.json").read_bytes() == second
        assert file_bytes(out / "curated") == published
        # The next good run asks from the published state again: the 5 records are not lost.
        assert run(spec, out).returncode == 0
        assert curated_ids(out) == [f"r{i:06d}" for i in range(340, 345)]


def test_the_same_state_gives_the_same_output(tmp_path, token):
    with FakeApi(make_records(400), per_page=40, token=token) as api:
        api.fail(2, "500").fail(4, "429")
        spec = spec_for(tmp_path, api.url)
        seed = tmp_path / "seed"
        assert run(spec, seed).returncode == 0
        api.records += make_records(120, start=400)
        outs = [tmp_path / "a", tmp_path / "b"]
        for out in outs:
            shutil.copytree(seed / "_state", out / "_state")
            assert run(spec, out).returncode == 0
    a, b = (file_bytes(o / "curated") for o in outs)
    assert a and a == b
    assert curated_ids(outs[0]) == [f"r{i:06d}" for i in range(400, 520)]
    assert state(outs[0]) == state(outs[1])


def test_a_page_that_never_reads_is_a_dead_letter_and_holds_the_state(tmp_path, token):
    with FakeApi(make_records(200), per_page=50, token=token) as api:
        api.fail(3, "500", "500", "500", "500")
        out = tmp_path / "out"
        proc = run(spec_for(tmp_path, api.url), out)
        assert proc.returncode == 0, proc.stderr
    rep = report(out)
    assert (
        rep["conservation_ok"] and rep["counts"]["curated"] == 150 and rep["dead_letter_reasons"] == {"http_status": 1}
    )
    (dead,) = dead_letters(out)
    assert dead["stage"] == "read" and dead["source"].endswith("&per_page=50&page=3")
    assert dead["error"] == "page 3: HTTP 500 Internal Server Error (gave up after 4 attempts)"
    assert state(out)["value"] == "2024-01-01T00:00:00Z" and state(out)["complete"] is False


def test_an_unreachable_api_fails_before_anything_is_written(tmp_path, token):
    with FakeApi() as api:
        url = api.url  # closed when the block ends: nothing listens there
    out = tmp_path / "out"
    line = one_line_error(run(spec_for(tmp_path, url, ("attempts: 4", "attempts: 1")), out), 1)
    assert line.startswith(f"error: cannot read the API at {url}/items?") and "Connection refused" in line
    assert not (out / "curated").exists() and not (out / "_state").exists()


def test_an_unset_credential_is_one_error_line(tmp_path, monkeypatch):
    monkeypatch.delenv("ITEMS_API_TOKEN", raising=False)
    with FakeApi(token=TOKEN) as api:
        line = one_line_error(run(spec_for(tmp_path, api.url), tmp_path / "out"), 1)
        assert api.requests == []
    assert line == "error: environment variable ITEMS_API_TOKEN (the API credential) is not set"
