"""pipeline.schedule: its checks, the folder's dependencies, and the DAG files `link` writes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from beam_pipelines.orchestrate.__main__ import link
from beam_pipelines.orchestrate.schedule import Schedule, check_cron, input_parts, read_schedules
from beam_pipelines.spec.yamlsrc import SpecError, load_text

PACKAGED = Path(__file__).resolve().parents[2] / "beam_pipelines" / "pipelines"


def spec(name: str, schedule: str = "") -> str:
    return f"pipeline:\n  name: {name}\n  contract: events@1\n{schedule}  transforms: []\n"


def write(folder: Path, name: str, schedule: str = "") -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(spec(name, schedule))
    return path


@pytest.mark.parametrize("expr", ["0 2 * * *", "*/15 * * * 1-5", "0 0 1,15 * *", "@daily", "0 3 * * MON"])
def test_cron_accepted(expr):
    assert check_cron(expr) is None


@pytest.mark.parametrize(
    "expr, why",
    [("61 * * * *", "minute 61 is out of range"), ("0 2 * *", "has 4 fields"), ("@often", "unknown preset"),
     ("*/0 * * * *", "steps by 0"), ("0 2 * * x!", "not a cron field")],
)  # fmt: skip
def test_cron_refused(expr, why):
    assert why in check_cron(expr)


def test_input_parts_and_jinja_refused():
    assert input_parts("{data}/e/date={date}/*.jsonl") == [("data",), ("text", "/e/date="), ("date",),
                                                           ("text", "/*.jsonl")]  # fmt: skip
    assert input_parts("{output:events}/aggregates/*.parquet")[0] == ("output", "events")
    with pytest.raises(ValueError, match="Jinja"):
        input_parts("{{ ds }}/x")
    with pytest.raises(ValueError, match="unknown placeholder"):
        input_parts("{day}/x")


def test_packaged_specs_have_valid_schedules():
    got = read_schedules(str(PACKAGED))
    assert all(isinstance(s, Schedule) for s in got.values()), got
    events = got[str(PACKAGED / "events.yaml")]
    assert (events.cron, events.retries, events.deadline, events.retry_delay) == ("0 2 * * *", 3, 7200, 300)


def test_folder_errors_name_the_spec_and_leave_the_others(tmp_path):
    good = write(tmp_path, "good", "  schedule: {cron: '0 1 * * *'}\n")
    after = write(tmp_path, "after", "  schedule: {depends_on: [good], input: '{output:good}/curated/*'}\n")
    orphan = write(tmp_path, "orphan", "  schedule: {depends_on: [godo]}\n")
    a = write(tmp_path, "cycle_a", "  schedule: {depends_on: [cycle_b]}\n")
    b = write(tmp_path, "cycle_b", "  schedule: {depends_on: [cycle_a]}\n")
    bad = write(tmp_path, "badcron", "  schedule: {cron: '0 25 * * *'}\n")
    got = read_schedules(str(tmp_path))
    assert isinstance(got[str(good)], Schedule) and got[str(after)].depends_on == ("good",)
    assert "unknown upstream pipeline 'godo' (did you mean 'good'?)" in str(got[str(orphan)])
    assert str(got[str(orphan)]).startswith(f"{orphan}:4: pipeline.schedule.depends_on:")
    assert "dependency cycle: cycle_a -> cycle_b -> cycle_a" in str(got[str(a)])
    assert "dependency cycle: cycle_b -> cycle_a -> cycle_b" in str(got[str(b)])
    assert "hour 25 is out of range 0-23" in str(got[str(bad)]) and str(bad) in str(got[str(bad)])


@pytest.mark.parametrize(
    "schedule, message",
    [("{cron: '0 1 * * *', depends_on: [x]}", "give cron or depends_on, not both"),
     ("{depends_on: [me]}", "cannot depend on itself"),
     ("{retries: -1}", "pipeline.schedule.retries"),
     ("{retry_delay: soon}", "pipeline.schedule.retry_delay"),
     ("{cron: '@daily', input: '{output:other}/x'}", "other is not in depends_on"),
     ("{runner: Direct}", "did you mean 'DirectRunner'"),
     ("{crn: '@daily'}", "did you mean 'cron'")],
)  # fmt: skip
def test_schedule_mistakes(tmp_path, schedule, message):
    write(tmp_path, "me", f"  schedule: {schedule}\n")
    (got,) = read_schedules(str(tmp_path)).values()
    assert isinstance(got, SpecError) and message in str(got), got


def test_spec_checker_takes_the_schedule_key():
    from beam_pipelines.spec.compile import SPEC_SCHEMA
    from beam_pipelines.spec.shape import check

    doc = load_text(spec("x", "  schedule: {cron: '@hourly', deadline: 2h}\n"))
    doc["pipeline"]["transforms"] = [{"type": "ReadFiles"}]
    check(doc, SPEC_SCHEMA, "", "x.yaml")


def test_link_writes_one_dag_file_per_spec_and_removes_stale_ones(tmp_path):
    specs, dags = tmp_path / "specs", tmp_path / "dags"
    specs.mkdir()
    write(specs, "one")
    write(specs, "two")
    (specs / "one.expectations.yaml").write_text("expectations: []\n")
    assert sorted(os.path.basename(p) for p in link(str(specs), str(dags))) == ["one.py", "two.py"]
    text = (dags / "one.py").read_text()
    assert "dag_for_spec('../specs/one.yaml', __file__)" in text and "airflow" in text and "dag" in text
    (dags / "mine.py").write_text("# someone else's DAG file\n")
    (specs / "two.yaml").unlink()
    link(str(specs), str(dags))
    assert sorted(os.listdir(dags)) == ["mine.py", "one.py"]


def test_a_spec_that_writes_delta_tables_is_maintained_after_its_runs():
    from beam_pipelines.orchestrate.schedule import schedule_of
    from beam_pipelines.spec.yamlsrc import load

    example = Path(__file__).resolve().parents[2] / "examples" / "lakehouse" / "orders.yaml"
    assert schedule_of(load(str(example)), str(example)).lakehouse
    events = Path(__file__).resolve().parents[2] / "beam_pipelines" / "pipelines" / "events.yaml"
    assert not schedule_of(load(str(events)), str(events)).lakehouse
