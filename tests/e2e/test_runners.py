"""Runners through the CLI: Prism against DirectRunner on the same data, runner errors, the
Dataflow dry run, and the Flex Template metadata.

The Prism test builds prism with the project's own artifacts script when it is not cached
(Go from the registries; about 3 minutes cold, seconds when Go's caches are warm) and fails,
not skips, when that is impossible.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from beam_pipelines import flex
from tests.e2e.helpers import ROOT, aggregates, cli, curated, datagen, one_line_error, report


def _run(*args: str, env: dict | None = None, module: str = "beam_pipelines.main") -> subprocess.CompletedProcess:
    full = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, env=full, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def events_data(tmp_path_factory):
    return datagen(tmp_path_factory.mktemp("runners") / "in", "jsonl", rows=3000, dirty=0.2, files=2)


@pytest.mark.timeout(1800)
def test_prism_gives_the_same_result_as_direct(prism_binary, events_data, tmp_path):
    outs = {}
    for runner in ("DirectRunner", "PrismRunner"):
        out = tmp_path / runner
        proc = cli(f"--runner={runner}", f"--input={events_data}/*.jsonl", f"--output={out}")
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr and f"events on {runner}" in proc.stdout
        outs[runner] = out
    direct, prism = outs["DirectRunner"], outs["PrismRunner"]
    assert report(prism)["conservation_ok"] is True
    assert report(prism)["counts"] == report(direct)["counts"]
    assert report(prism)["counts"]["aggregates"] > 0  # Prism drops late windows; none may be late here
    assert curated(prism).equals(curated(direct))
    assert aggregates(prism).equals(aggregates(direct))
    assert json.loads((prism / "_run" / "summary.json").read_text())["runner"] == "PrismRunner"


def test_unknown_runner_exits_2_with_one_line(events_data, tmp_path):
    line = one_line_error(cli("--runner=NoSuchRunner", f"--input={events_data}/*.jsonl", f"--output={tmp_path}/o"), 2)
    assert "NoSuchRunner" in line and "prism (PrismRunner)" in line and "dataflow (DataflowRunner)" in line
    assert not (tmp_path / "o").exists()


DATAFLOW = ("--runner=DataflowRunner", "--input=gs://beam-pipelines-test/in/*.jsonl")


def test_dataflow_options_are_validated(tmp_path):
    out = "--output=gs://beam-pipelines-test/out"
    line = one_line_error(cli(*DATAFLOW, out), 2)
    assert "--project" in line and "--region" in line and "--temp_location" in line
    line = one_line_error(cli(*DATAFLOW, out, "--project=my-project", "--temp_location=gs://b-1/tmp"), 2)
    assert "--region" in line and "--project" not in line
    ok = ("--project=my-project", "--region=europe-west1")
    line = one_line_error(cli(*DATAFLOW, out, *ok, f"--temp_location={tmp_path}"), 2)
    assert "--temp_location must be a gs:// path" in line
    line = one_line_error(cli(*DATAFLOW, f"--output={tmp_path}/out", *ok, "--temp_location=gs://b-1/tmp"), 2)
    assert "--output must be gs://" in line
    assert not (tmp_path / "out").exists()


def test_dry_run_with_dataflow_options_writes_the_graph(tmp_path):
    graph_path = tmp_path / "graph" / "pipeline.json"
    proc = cli(
        *DATAFLOW,
        "--output=gs://beam-pipelines-test/out",
        "--project=my-project",
        "--region=europe-west1",
        "--temp_location=gs://beam-pipelines-test/tmp",
        "--dry_run",
        f"--dry_run_out={graph_path}",
    )
    assert proc.returncode == 0, proc.stderr
    assert "credentials" not in proc.stderr.lower()  # nothing asked GCP for anything
    assert "nothing was run or submitted" in proc.stdout
    graph = json.loads(graph_path.read_text())
    labels = {t["uniqueName"] for t in graph["components"]["transforms"].values()}
    for label in ("ParseRecords", "ValidateSchema", "Cleanse", "Deduplicate", "HourlyAggregate", "WriteCurated"):
        assert label in labels, label
    assert "Deduplicate/GroupPartitions" in labels
    envs = [e["urn"] for e in graph["components"]["environments"].values()]
    assert envs == ["beam:env:docker:v1"]  # Dataflow's worker container


def test_dry_run_default_path_needs_no_runner_artifact(events_data, tmp_path):
    out = tmp_path / "out"
    env = {"BEAM_PIPELINES_CACHE": str(tmp_path / "empty-cache")}
    proc = _run("--runner=prism", f"--input={events_data}/*.jsonl", f"--output={out}", "--dry_run", env=env)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.rglob("*")) == ["_run", "pipeline.json"]
    graph = json.loads((out / "_run" / "pipeline.json").read_text())
    assert "ParseRecords" in {t["uniqueName"] for t in graph["components"]["transforms"].values()}


def test_missing_prism_binary_is_one_line(events_data, tmp_path):
    env = {"BEAM_PIPELINES_CACHE": str(tmp_path / "empty-cache")}
    proc = _run("--runner=PrismRunner", f"--input={events_data}/*.jsonl", f"--output={tmp_path}/o", env=env)
    line = one_line_error(proc, 1)
    assert "prism binary not found" in line and "make runners" in line
    assert not (tmp_path / "o").exists()


def test_missing_job_server_jars_and_silent_flink_master(events_data, tmp_path):
    env = {"BEAM_PIPELINES_CACHE": str(tmp_path / "empty-cache")}
    common = (f"--input={events_data}/*.jsonl", f"--output={tmp_path}/o")
    line = one_line_error(_run("--runner=FlinkRunner", *common, env=env), 1)
    assert "org.apache.beam:beam-runners-flink-1.20-job-server:" in line and "make runners" in line
    line = one_line_error(_run("--runner=spark", *common, env=env), 1)
    assert "org.apache.beam:beam-runners-spark-3-job-server:" in line
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    line = one_line_error(_run("--runner=flink", f"--flink_master=localhost:{port}", *common, env=env), 1)
    assert f"Flink master localhost:{port} does not answer" in line
    assert not (tmp_path / "o").exists()


def test_artifacts_name_the_missing_tool(tmp_path):
    env = {"BEAM_PIPELINES_CACHE": str(tmp_path / "cache"), "PATH": str(tmp_path)}  # no go, java or mvn
    proc = _run("fetch", "--prism", env=env, module="beam_pipelines.artifacts")
    assert "go not found" in one_line_error(proc, 1)
    proc = _run("fetch", "--flink", env=env, module="beam_pipelines.artifacts")
    line = one_line_error(proc, 1)
    assert "java and mvn not found" in line and "org.apache.beam:beam-runners-flink-1.20-job-server:" in line
    status = _run("status", env=env, module="beam_pipelines.artifacts")
    assert status.returncode == 0 and "prism  missing" in status.stdout and "go     missing" in status.stdout


def test_flex_template_metadata_is_current():
    committed = flex.metadata_path("events").read_text()
    assert committed == flex.metadata_text("events"), "stale: run `python -m beam_pipelines.flex metadata`"
    params = {p["name"]: p for p in json.loads(committed)["parameters"]}
    assert not params["input"]["isOptional"] and not params["output"]["isOptional"]
    assert "dry_run" not in params and "pipeline" not in params
    assert params["shuffle_partitions"]["regexes"] == ["^[0-9]+$"]
    assert _run("metadata", "--check", module="beam_pipelines.flex").returncode == 0


def test_flex_template_dockerfile_points_at_the_project():
    text = (ROOT / "templates" / "flex" / "events" / "Dockerfile").read_text()
    assert text.startswith("#") and "FROM gcr.io/dataflow-templates-base/python311-template-launcher-base" in text
    for var, rel in (
        ("FLEX_TEMPLATE_PYTHON_PY_FILE", "beam_pipelines/main.py"),
        ("FLEX_TEMPLATE_PYTHON_REQUIREMENTS_FILE", "requirements.txt"),
        ("FLEX_TEMPLATE_PYTHON_SETUP_FILE", "setup.py"),
    ):
        assert f'{var}="${{WORKDIR}}/{rel}"' in text and (ROOT / rel).is_file(), var


def test_a_prism_pipeline_after_a_plain_direct_runner_one_in_the_same_process(prism_binary, tmp_path):
    # Beam's DirectRunner tries Prism first, without the project's binary (it would download one),
    # and falls back; the failed job server it leaves must not serve the next Prism pipeline.
    script = tmp_path / "two.py"
    script.write_text(
        "import apache_beam as beam\n"
        "from apache_beam.options.pipeline_options import PipelineOptions\n"
        "from beam_pipelines.runners import make_runner\n"
        "with beam.Pipeline(runner='DirectRunner') as p:\n"
        "    p | beam.Create([1, 2]) | beam.Map(lambda x: x)\n"
        "opts = PipelineOptions(['--runner=PrismRunner'])\n"
        "with beam.Pipeline(runner=make_runner(opts), options=opts) as p:\n"
        "    p | 'C2' >> beam.Create([3]) | 'M2' >> beam.Map(lambda x: print('prism ran', x))\n"
    )
    proc = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "prism ran 3" in proc.stdout
