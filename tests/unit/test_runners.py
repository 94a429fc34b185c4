"""Runner profiles: names, the defaults each fills in, and what each refuses."""

from __future__ import annotations

import sys

import pytest
from apache_beam.options.pipeline_options import (
    DebugOptions,
    DirectOptions,
    FlinkRunnerOptions,
    PipelineOptions,
    PortableOptions,
    PrismRunnerOptions,
    SetupOptions,
    SparkRunnerOptions,
)

from beam_pipelines import artifacts
from beam_pipelines.options import RunOptions
from beam_pipelines.runners import (
    RunnerError,
    RunnerUnavailable,
    direct_workers,
    make_runner,
    parallel_direct_runner,
    profile_name,
)


@pytest.fixture(autouse=True)
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BEAM_PIPELINES_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.parametrize(
    "name, profile",
    [
        (None, "direct"),
        ("DirectRunner", "direct"),
        ("directrunner", "direct"),
        ("PRISM", "prism"),
        ("PrismRunner", "prism"),
        ("FlinkRunner", "flink"),
        ("sparkrunner", "spark"),
        ("DataflowRunner", "dataflow"),
        ("dataflow", "dataflow"),
    ],
)
def test_profile_names(name, profile):
    assert profile_name(name) == profile


def test_unknown_runner():
    with pytest.raises(RunnerError, match="unknown or unsupported runner 'Samza'"):
        profile_name("Samza")


def test_prism_defaults_use_the_cache_never_a_download(empty_cache):
    opts = PipelineOptions(["--runner=PrismRunner"])
    with pytest.raises(RunnerUnavailable, match="prism binary not found .*make runners"):
        make_runner(opts)
    make_runner(opts, check_artifacts=False)
    assert opts.view_as(PrismRunnerOptions).prism_location == str(artifacts.prism_path())
    assert str(artifacts.prism_path()).startswith(str(empty_cache))
    assert opts.view_as(PortableOptions).environment_type == "LOOPBACK"
    with pytest.raises(RunnerError, match="must be a local file"):
        make_runner(PipelineOptions(["--runner=prism", "--prism_location=https://example.invalid/prism.zip"]))
    binary = empty_cache / "prism"
    binary.parent.mkdir(parents=True)
    binary.write_bytes(b"")
    runner = make_runner(PipelineOptions(["--runner=prism", f"--prism_location={binary}"]))
    assert type(runner).__name__ == "PrismRunner"


def test_streaming_on_prism_never_splits_a_bundle_of_keyed_state():
    # Prism 2.77 frees a split bundle's keys while it still runs them: keyed state lost writes.
    streaming = PipelineOptions(["--runner=prism", "--streaming", "--experiments=other"])
    make_runner(streaming, check_artifacts=False)
    assert streaming.view_as(DebugOptions).experiments == [
        "other", "disable_prism_server_singleton", "prism_disable_sdf_split"
    ]  # fmt: skip
    batch = PipelineOptions(["--runner=prism"])
    make_runner(batch, check_artifacts=False)
    assert batch.view_as(DebugOptions).experiments == ["disable_prism_server_singleton"]


@pytest.mark.parametrize("runner", ["prism", "flink", "spark"])
def test_portable_runners_never_report_a_long_job_failed_at_the_job_service_deadline(runner):
    # Beam's default (300 s) is the deadline of the job's state stream: longer jobs were reported failed.
    opts = PipelineOptions([f"--runner={runner}", "--streaming"])
    make_runner(opts, check_artifacts=False)
    assert opts.view_as(PortableOptions).job_server_timeout >= 365 * 24 * 3600
    given = PipelineOptions([f"--runner={runner}", "--job_server_timeout=42"])
    make_runner(given, check_artifacts=False)
    assert given.view_as(PortableOptions).job_server_timeout == 42


def test_flink_defaults(empty_cache):
    opts = PipelineOptions(["--runner=flink"])
    with pytest.raises(RunnerUnavailable, match="beam-runners-flink-1.20-job-server"):
        make_runner(opts)
    make_runner(opts, check_artifacts=False)
    flink = opts.view_as(FlinkRunnerOptions)
    assert flink.flink_master == "[local]" and flink.flink_version == "1.20" and flink.parallelism >= 1
    assert flink.flink_job_server_jar == str(artifacts.flink_job_server("1.20")[1])
    explicit = PipelineOptions(["--runner=flink", "--flink_version=2.2", "--parallelism=3"])
    make_runner(explicit, check_artifacts=False)
    assert explicit.view_as(FlinkRunnerOptions).flink_version == "2.2"
    assert explicit.view_as(FlinkRunnerOptions).parallelism == 3
    assert "beam-runners-flink-2.2-job-server" in explicit.view_as(FlinkRunnerOptions).flink_job_server_jar
    with pytest.raises(RunnerError, match="flink_master"):
        make_runner(PipelineOptions(["--runner=flink", "--flink_master=not a host"]), check_artifacts=False)
    with pytest.raises(RunnerError, match="environment_config"):
        make_runner(PipelineOptions(["--runner=flink", "--environment_type=PROCESS"]), check_artifacts=False)


def test_spark_defaults():
    opts = PipelineOptions(["--runner=SparkRunner"])
    with pytest.raises(RunnerUnavailable, match="beam-runners-spark-3-job-server"):
        make_runner(opts)
    make_runner(opts, check_artifacts=False)
    assert opts.view_as(SparkRunnerOptions).spark_job_server_jar == str(artifacts.spark_job_server()[1])
    assert opts.view_as(PortableOptions).environment_type == "LOOPBACK"
    with pytest.raises(RunnerError, match="spark_master_url"):
        make_runner(PipelineOptions(["--runner=spark", "--spark_master_url=yarn"]), check_artifacts=False)


DATAFLOW_OK = [
    "--runner=DataflowRunner",
    "--project=my-project",
    "--region=europe-west1",
    "--temp_location=gs://my-bucket/tmp",
    "--output=gs://my-bucket/out",
]


def test_dataflow_validation_and_defaults():
    opts = PipelineOptions(DATAFLOW_OK)
    runner = make_runner(opts)
    assert type(runner).__name__ == "DataflowRunner"
    assert opts.view_as(SetupOptions).setup_file.endswith("setup.py")  # workers get this project
    assert opts.view_as(RunOptions).output == "gs://my-bucket/out"
    for drop, message in (
        ("--project=my-project", "Dataflow needs --project"),
        ("--region=europe-west1", "Dataflow needs --region"),
        ("--temp_location=gs://my-bucket/tmp", "Dataflow needs --temp_location=gs://"),
    ):
        with pytest.raises(RunnerError, match=message):
            make_runner(PipelineOptions([a for a in DATAFLOW_OK if a != drop]))
    with pytest.raises(RunnerError, match="Invalid GCS bucket"):
        make_runner(PipelineOptions([*DATAFLOW_OK, "--temp_location=gs://b/tmp"]))
    with pytest.raises(RunnerError, match="Invalid Project ID"):
        make_runner(PipelineOptions([*DATAFLOW_OK, "--project=Not_A_Project"]))


def test_dry_run_flag_is_a_boolean():
    assert PipelineOptions(["--dry_run"]).view_as(RunOptions).dry_run is True
    assert PipelineOptions(["--dry_run=false"]).view_as(RunOptions).dry_run is False
    assert PipelineOptions([]).view_as(RunOptions).dry_run is False


@pytest.mark.parametrize(
    "flags, rows, workers",
    [
        ([], 50_000, 1),  # small input: worker processes would save nothing
        ([], 200_000, 2),
        ([], 5_000_000, 2),
        (["--local_workers=3"], 10, 3),
        (["--local_workers=1"], 5_000_000, 1),
        (["--direct_num_workers=1"], 5_000_000, None),  # Beam's own flags are left to Beam
        (["--direct_running_mode=multi_threading"], 5_000_000, None),
        (["--runner=PrismRunner"], 5_000_000, None),
    ],
)
def test_direct_worker_processes(flags, rows, workers):
    assert direct_workers(PipelineOptions(flags), rows, cores=2) == workers


def test_auto_workers_are_capped_at_four():
    assert direct_workers(PipelineOptions([]), 5_000_000, cores=64) == 4


def test_parallel_runner_starts_worker_processes_of_this_interpreter(tmp_path):
    options = PipelineOptions([])
    runner = parallel_direct_runner(options, 3, str(tmp_path / "w.log"))
    assert options.view_as(DirectOptions).direct_num_workers == 3
    command = runner._default_environment.command_string
    assert command.startswith(sys.executable) and command.endswith(f"2>>{tmp_path / 'w.log'}")


@pytest.mark.parametrize("value", ["0", "-1", "two", ""])
def test_bad_local_workers_is_a_flag_error(value):
    with pytest.raises(RunnerError, match="--local_workers"):
        make_runner(PipelineOptions([f"--local_workers={value}"]))


def test_runner_noise_is_filtered_but_real_errors_stay():
    import logging

    from beam_pipelines.main import _not_runner_noise

    def record(name, level, module="x"):
        r = logging.LogRecord(name, level, module + ".py", 1, "m", None, None)
        r.module = module
        return r

    assert not _not_runner_noise(record("PrismRunner", logging.WARNING))  # prism on the job graph
    assert _not_runner_noise(record("PrismRunner", logging.ERROR))
    assert not _not_runner_noise(record("root", logging.ERROR, "worker_handlers"))  # relayed traceback
    assert _not_runner_noise(record("root", logging.WARNING, "worker_handlers"))
    assert _not_runner_noise(record("beam_pipelines", logging.WARNING))


def test_cli_uses_a_memory_pool_that_returns_memory_unless_one_is_chosen():
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    # The CLI module is loaded before Arrow, as under python -m beam_pipelines.main.
    code = "import beam_pipelines.main, pyarrow as pa; print(pa.default_memory_pool().backend_name)"
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    env["PYTHONPATH"] = root
    chosen = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert chosen.stdout.strip() == "jemalloc"
    kept = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(env, ARROW_DEFAULT_MEMORY_POOL="system"), check=True)  # fmt: skip
    assert kept.stdout.strip() == "system"
