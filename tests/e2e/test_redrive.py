"""Redrive through the CLI: dead letters replayed after a fix to the spec's contract.

The fix: a copy of the events spec whose contract (its own schemas/events/v1.yaml, found before
the packaged one) and expectations accept one more event_type value, ``purchased!``, which the
generated dirty data holds. The real check is against a fresh run over the same input under the
fixed spec: after the redrive, curated rows, aggregates, dead letters and counts must be theirs.
"""

from __future__ import annotations

import collections
import json
import shutil
from pathlib import Path

import pytest

from tests.e2e.helpers import (
    ROOT,
    aggregates,
    cli,
    curated,
    datagen,
    dead_letters,
    file_bytes,
    one_line_error,
    report,
    run_module,
)

PACKAGED = ROOT / "beam_pipelines" / "pipelines"
ENUM = "values: [view, click, add_to_cart, purchase, refund]"
FIXED_ENUM = 'values: [view, click, add_to_cart, purchase, refund, "purchased!"]'


def redrive(*args: str):
    return run_module("beam_pipelines.redrive", *args)


def fixed_spec(root: Path) -> Path:
    """A copy of the events spec whose contract and expectations accept event_type purchased!."""
    (root / "schemas" / "events").mkdir(parents=True)
    shutil.copy(PACKAGED / "events.yaml", root / "events.yaml")
    for src, dst in (
        (PACKAGED / "events.expectations.yaml", root / "events.expectations.yaml"),
        (PACKAGED / "schemas" / "events" / "v1.yaml", root / "schemas" / "events" / "v1.yaml"),
    ):
        text = src.read_text()
        assert ENUM in text, src
        dst.write_text(text.replace(ENUM, FIXED_ENUM))
    return root / "events.yaml"


def run_pipeline(spec: str, data: Path, fmt: str, out: Path) -> Path:
    proc = cli(f"--pipeline={spec}", f"--input={data}/*.{fmt}", f"--output={out}")
    assert proc.returncode == 0, proc.stderr
    return out


def data_bytes(out: Path) -> dict:
    """Every file under ``out`` but the audit log, which each redrive that held the lease appends to."""
    return {k: v for k, v in file_bytes(out).items() if not k.startswith("_audit/")}


def audit_outcomes(out: Path) -> list[tuple[str, str]]:
    lines = (out / "_audit" / "log.jsonl").read_text().splitlines()
    return [(e["action"], e["outcome"]) for e in map(json.loads, lines)]


def letters_key(rows: list[dict]) -> collections.Counter:
    return collections.Counter(json.dumps(r, sort_keys=True) for r in rows)


def outputs(out: Path) -> dict:
    return {**{"curated/" + k: v for k, v in file_bytes(out / "curated").items()},
            **{"aggregates/" + k: v for k, v in file_bytes(out / "aggregates").items()},
            **{"dlq/" + k: v for k, v in file_bytes(out / "dlq").items()}}  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Dirty jsonl events run through events, and a fresh run over them under the fixed spec."""
    base = tmp_path_factory.mktemp("redrive")
    data = datagen(base / "in", "jsonl", rows=4000, dirty=0.25)
    spec = fixed_spec(base / "fixed")
    original = run_pipeline("events", data, "jsonl", base / "original")
    fresh = run_pipeline(str(spec), data, "jsonl", base / "fresh")
    return {"base": base, "spec": spec, "original": original, "fresh": fresh}


def copy_of(world, name: str) -> Path:
    out = world["base"] / name
    shutil.copytree(world["original"], out)
    return out


@pytest.fixture(scope="module")
def redriven(world):
    """The original outputs redriven under the fixed spec, then redriven again the same way."""
    out = copy_of(world, "redriven")
    first = redrive(f"--pipeline={world['spec']}", f"--dlq={out}/dlq", f"--output={out}")
    after_first = {"outputs": outputs(out), "report": report(out), "proc": first}
    second = redrive(f"--pipeline={world['spec']}", f"--dlq={out}/dlq", f"--output={out}")
    return {"out": out, "first": after_first, "second": second}


def test_passing_letters_join_curated_and_aggregates_as_in_a_fresh_run(world, redriven):
    proc = redriven["first"]["proc"]
    assert proc.returncode == 0, proc.stderr
    rep = redriven["first"]["report"]
    before, fresh = report(world["original"]), report(world["fresh"])
    assert rep["counts"]["curated"] > before["counts"]["curated"]
    # The real check: the same curated rows, aggregates, dead letters and counts as a fresh run.
    out = world["base"] / "first-snapshot"
    for name, data in redriven["first"]["outputs"].items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    assert curated(out).equals(curated(world["fresh"]))
    assert aggregates(out).equals(aggregates(world["fresh"]))
    assert letters_key(dead_letters(out)) == letters_key(dead_letters(world["fresh"]))
    assert rep["counts"] == fresh["counts"]
    assert rep["dead_letter_reasons"] == fresh["dead_letter_reasons"]
    assert rep["quality"] == fresh["quality"]
    # The run's records are still accounted for: read unchanged, conservation holds.
    c = rep["counts"]
    assert c["read"] == before["counts"]["read"]
    assert c["read"] == c["curated"] + c["dead_lettered"] + c["duplicates"] + c["late"]
    assert rep["conservation_ok"] is True
    section = rep["redrive"]
    assert section["letters"] == before["counts"]["dead_lettered"]
    assert section["passed"] == c["curated"] - before["counts"]["curated"] > 0
    assert section["duplicates"] == c["duplicates"] - before["counts"]["duplicates"] > 0
    assert section["still_failing"] > 0 and section["conservation_ok"] is True
    replayed = section["selected"] + section["not_replayable"]
    assert replayed == section["letters"] and section["not_replayable"] > 0  # the undecodable lines stay as they were
    assert section["selected"] == section["passed"] + section["duplicates"] + section["still_failing"]
    assert section["filters"] == {"reason": [], "field": []}
    assert "conservation OK" in proc.stdout and "files match the counts" in proc.stdout
    assert f"{section['selected']:,} of {section['letters']:,} dead letters replayed" in proc.stdout
    history = (redriven["out"] / "_run" / "redrives.jsonl").read_text().splitlines()
    assert json.loads(history[0])["run_id"] == section["run_id"]


def test_letters_that_still_fail_stay_dead_letters(world, redriven):
    out = redriven["out"]
    left = dead_letters(out)
    assert not any('"purchased!"' in d["raw"] for d in left if d["field"] == "event_type")
    before = letters_key(dead_letters(world["original"]))
    fixed = [d for d in dead_letters(world["original"]) if d["field"] == "event_type" and "purchased!" in d["error"]]
    assert fixed and letters_key(left) == before - letters_key(fixed)


def test_the_same_redrive_twice_adds_nothing(redriven):
    proc = redriven["second"]
    assert proc.returncode == 0, proc.stderr
    out = redriven["out"]
    assert outputs(out) == redriven["first"]["outputs"]  # curated, aggregates and dead letters: same bytes
    rep, first = report(out), redriven["first"]["report"]
    assert rep["counts"] == first["counts"] and rep["dead_letter_reasons"] == first["dead_letter_reasons"]
    assert rep["quality"] == first["quality"]
    section = rep["redrive"]
    assert section["selected"] == first["redrive"]["still_failing"] == section["still_failing"]
    assert section["passed"] == section["duplicates"] == 0
    assert len((out / "_run" / "redrives.jsonl").read_text().splitlines()) == 2
    assert not (out / "_staging").exists()


def test_filters_by_reason_and_field(world):
    out = copy_of(world, "filtered")
    original = dead_letters(world["original"])
    proc = redrive(f"--pipeline={world['spec']}", f"--dlq={out}/dlq", f"--output={out}",
                   "--reason=invalid_value", "--field=event_type", "--field=no_such_field")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "no dead letter has field 'no_such_field': selects nothing" in proc.stdout
    section = report(out)["redrive"]
    chosen = [d for d in original if d["reason"] == "invalid_value" and d["field"] == "event_type"]
    assert section["selected"] == len(chosen) and section["still_failing"] == 0
    assert section["filters"] == {"reason": ["invalid_value"], "field": ["event_type", "no_such_field"]}
    assert section["unmatched_filters"] == {"field": ["no_such_field"]}
    # Only event_type letters could pass, so this redrive ends where the fresh run does.
    assert curated(out).equals(curated(world["fresh"]))
    assert aggregates(out).equals(aggregates(world["fresh"]))
    assert letters_key(dead_letters(out)) == letters_key(original) - letters_key(chosen)
    assert report(out)["conservation_ok"] is True


def test_letters_that_cannot_pass_change_nothing(world):
    out = copy_of(world, "missing")
    before = outputs(out)
    proc = redrive(f"--pipeline={world['spec']}", f"--dlq={out}/dlq", f"--output={out}", "--reason=missing_field")
    assert proc.returncode == 0, proc.stderr
    section = report(out)["redrive"]
    assert (
        section["selected"]
        == section["still_failing"]
        == report(world["original"])["dead_letter_reasons"]["missing_field"]
    )
    assert outputs(out) == before
    assert report(out)["counts"] == report(world["original"])["counts"]


def test_an_unknown_reason_selects_nothing_and_says_so(world):
    out = copy_of(world, "unknown")
    before = data_bytes(out)
    proc = redrive(f"--dlq={out}/dlq", f"--output={out}", "--reason=no_such_reason")
    assert proc.returncode == 0, proc.stderr
    assert "no dead letter has reason 'no_such_reason': selects nothing" in proc.stdout
    assert "nothing to redrive" in proc.stdout
    assert data_bytes(out) == before
    assert audit_outcomes(out)[-2:] == [("redrive", "started"), ("redrive", "unchanged")]


def test_dry_run_runs_and_writes_nothing(world):
    out = copy_of(world, "dry")
    before = file_bytes(out)
    proc = redrive(f"--pipeline={world['spec']}", f"--dlq={out}/dlq", f"--output={out}", "--dry_run",
                   "--reason=invalid_value")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    n = report(world["original"])["dead_letter_reasons"]["invalid_value"]
    assert f"dry run: events would replay {n:,} of " in proc.stdout and "nothing was run or written" in proc.stdout
    assert file_bytes(out) == before


@pytest.mark.parametrize(
    "args, words",
    [
        ((), "--dlq is required"),
        (("--dlq=D", "--reason=late"), "--reason=late cannot be redriven"),
        (("--dlq=D", "--reason="), "--reason needs a value"),
        (("--dlq=D", "--reasons=x"), "unknown flag --reasons"),
        (("--dlq=D", "--input=in/*.jsonl"), "reads --dlq, not --input"),
        (("--dlq=D", "--pipeline=no_such_pipeline"), "unknown pipeline 'no_such_pipeline'"),
        (("--dlq=D", "--runner=NoSuchRunner"), "unknown or unsupported runner"),
    ],
)
def test_bad_flags_exit_2(world, args, words):
    out = world["original"]
    args = tuple(a.replace("--dlq=D", f"--dlq={out}/dlq") for a in args)
    line = one_line_error(redrive(f"--output={out}", *args), 2)
    assert words in line, line


def test_unreadable_letters_or_outputs_exit_1_and_change_nothing(world, tmp_path):
    original = world["original"]
    line = one_line_error(redrive(f"--dlq={tmp_path}/no_dlq", f"--output={original}"), 1)
    assert "no such directory" in line
    line = one_line_error(redrive(f"--dlq={original}/dlq", f"--output={tmp_path}"), 1)
    assert "no published run" in line
    out = copy_of(world, "broken-dlq")
    with open(out / "dlq" / "part-00000.jsonl", "a") as fh:
        fh.write("this is not a dead letter\n")
    before = data_bytes(out)
    line = one_line_error(redrive(f"--dlq={out}/dlq", f"--output={out}"), 1)
    assert "not dead-letter JSON lines" in line
    assert data_bytes(out) == before
    assert audit_outcomes(out)[-2:] == [("redrive", "started"), ("redrive", "failed")]
    out = copy_of(world, "broken-curated")
    victim = sorted((out / "curated").rglob("*.parquet"))[0]
    victim.write_bytes(victim.read_bytes()[:100])
    before = data_bytes(out)
    line = one_line_error(redrive(f"--pipeline={world['spec']}", f"--dlq={out}/dlq", f"--output={out}"), 1)
    assert "cannot read curated file" in line
    assert data_bytes(out) == before


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_other_formats_redrive_to_a_fresh_runs_outputs(world, tmp_path, fmt):
    # CSV letters are replayed with their source's header; parquet letters hold each row as a JSON object.
    data = datagen(tmp_path / "in", fmt, rows=2000, dirty=0.25)
    out = run_pipeline("events", data, fmt, tmp_path / "out")
    fresh = run_pipeline(str(world["spec"]), data, fmt, tmp_path / "fresh")
    # Two worker processes, as a large output would get by default.
    proc = redrive(f"--pipeline={world['spec']}", f"--dlq={out}/dlq", f"--output={out}", "--local_workers=2")
    assert proc.returncode == 0, proc.stderr
    assert "redrive on DirectRunner" in proc.stdout
    assert curated(out).equals(curated(fresh))
    assert aggregates(out).equals(aggregates(fresh))
    assert letters_key(dead_letters(out)) == letters_key(dead_letters(fresh))
    assert report(out)["counts"] == report(fresh)["counts"] and report(out)["conservation_ok"] is True
