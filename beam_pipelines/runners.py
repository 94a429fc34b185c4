"""Runner profiles: the names users type, resolved to a configured runner with sane defaults.

``direct`` runs batch pipelines on Beam's in-process FnApiRunner directly: Beam's own
DirectRunner first tries to download a prism binary from the internet, which the default
path must never wait on. ``prism``, ``flink`` and ``spark`` use only the artifacts cached by
``python -m beam_pipelines.artifacts fetch`` (``make runners``); ``dataflow`` validates what a
Dataflow job needs before anything is staged or submitted.

Errors are :class:`RunnerError` (bad or missing flags) or :class:`RunnerUnavailable` (a
binary, jar, tool or cluster this machine does not have), each a one-line message.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import sys
import urllib.error
import urllib.request

from apache_beam.options.pipeline_options import (
    DebugOptions,
    DirectOptions,
    FlinkRunnerOptions,
    GoogleCloudOptions,
    PipelineOptions,
    PortableOptions,
    PrismRunnerOptions,
    SetupOptions,
    SparkRunnerOptions,
    StandardOptions,
    WorkerOptions,
)
from apache_beam.options.pipeline_options_validator import PipelineOptionsValidator

from beam_pipelines import artifacts
from beam_pipelines.options import RunOptions

__all__ = [
    "PROFILES",
    "RunnerError",
    "RunnerUnavailable",
    "check_worker_paths",
    "direct_workers",
    "parallel_direct_runner",
    "graph_environment",
    "make_runner",
    "profile_name",
]

# profile -> the canonical Beam runner name it stands for
PROFILES = {
    "direct": "DirectRunner",
    "prism": "PrismRunner",
    "flink": "FlinkRunner",
    "spark": "SparkRunner",
    "dataflow": "DataflowRunner",
}
_ALIASES = {**{p: p for p in PROFILES}, **{r.lower(): p for p, r in PROFILES.items()}, "fnapirunner": "direct"}
_SETUP_PY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "setup.py")


class RunnerError(ValueError):
    """The requested runner is unknown or misconfigured (a flag is wrong or missing)."""


class RunnerUnavailable(RunnerError):
    """The runner is configured, but something it needs is not on this machine."""


def profile_name(runner: str | None) -> str:
    key = (runner or "direct").strip().lower()
    if key not in _ALIASES:
        known = ", ".join(f"{p} ({r})" for p, r in PROFILES.items())
        raise RunnerError(f"unknown or unsupported runner {runner!r}; available: {known}")
    return _ALIASES[key]


def _given(options: PipelineOptions, flag: str) -> bool:
    """Whether the user passed ``--flag`` (Beam fills defaults we want to tell apart)."""
    return any(f == f"--{flag}" or f.startswith(f"--{flag}=") for f in options._flags)


def _local_file(flag: str, value: str) -> str:
    if "://" in value:
        raise RunnerError(f"--{flag} must be a local file; this project never downloads runner artifacts")
    if not os.path.isfile(value):
        raise RunnerUnavailable(f"--{flag}={value} does not exist")
    return value


def _need_java(what: str) -> None:
    if not shutil.which("java"):
        raise RunnerUnavailable(f"java not found: the {what} job server runs on Java 11+ (apt-get install default-jre)")


def _default_environment(options: PipelineOptions) -> None:
    # LOOPBACK: the SDK worker runs in this process, so nothing (no container) is needed.
    portable = options.view_as(PortableOptions)
    if not portable.environment_type:
        portable.environment_type = "LOOPBACK"
    if portable.environment_type.upper() == "PROCESS" and not portable.environment_config:
        raise RunnerError('--environment_type=PROCESS needs --environment_config=\'{"command": "<sdk boot binary>"}\'')


def _prism(options: PipelineOptions, check: bool) -> None:
    prism = options.view_as(PrismRunnerOptions)
    if prism.prism_location:
        if check or "://" in prism.prism_location:
            _local_file("prism_location", prism.prism_location)
    else:
        path = artifacts.prism_path()
        if check and not path.exists():
            raise RunnerUnavailable(f"prism binary not found ({path}); run `make runners` (builds it with Go)")
        # Always set: without it Beam would download prism from the internet.
        prism.prism_location = str(path)
    # Beam shares one Prism job server per process, made from the options of the first pipeline
    # that asked for one: a plain DirectRunner pipeline asks too (it tries Prism first, without
    # this binary, and falls back), and its failed server would then serve this pipeline.
    debug = options.view_as(DebugOptions)
    if not debug.lookup_experiment("disable_prism_server_singleton"):
        debug.add_experiment("disable_prism_server_singleton")
    if not _given(options, "prism_log_level"):
        prism.prism_log_level = "warn"  # its info lines would be printed as each job starts and ends
    if options.view_as(StandardOptions).streaming:
        # Prism 2.77 splits a bundle that shows no progress between two progress reports and frees
        # the keys of the split-off elements while the first part still processes the same keys:
        # a second bundle of a key then runs from the same keyed state, and the later commit drops
        # the other's writes (streamed features lost rows, seen about one run in ten under load).
        options.view_as(DebugOptions).add_experiment("prism_disable_sdf_split")
    _default_environment(options)


# Beam's portable runners read the job's state and message streams with --job_server_timeout as
# their gRPC deadline (default 300 s): a job still running after it is reported failed with
# DEADLINE_EXCEEDED, which ends every streaming job after five minutes.
_JOB_STREAM_DEADLINE_S = 10 * 365 * 24 * 3600


def _portable(options: PipelineOptions) -> None:
    if not (_given(options, "job_server_timeout") or _given(options, "job-server-timeout")):
        options.view_as(PortableOptions).job_server_timeout = _JOB_STREAM_DEADLINE_S


def _check_flink_master(master: str) -> None:
    url = master if re.match(r"^https?://", master) else "http://" + master
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/overview", timeout=5) as resp:
            resp.read()
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise RunnerUnavailable(f"Flink master {master} does not answer ({reason}); is the cluster running?") from e


def _flink(options: PipelineOptions, check: bool) -> None:
    flink = options.view_as(FlinkRunnerOptions)
    master = (flink.flink_master or "[auto]").strip()
    if not re.match(r"^(\[local\]|\[auto\]|(https?://)?[\w.-]+(:\d+)?/?)$", master):
        raise RunnerError(f"--flink_master={master!r} is not [local], [auto] or host:port")
    if master == "[auto]":
        master = flink.flink_master = "[local]"  # an embedded Flink inside the job server
    if not _given(options, "flink_version"):
        flink.flink_version = artifacts.DEFAULT_FLINK_VERSION
    if flink.parallelism in (None, -1) and master == "[local]":
        flink.parallelism = max(1, min(os.cpu_count() or 1, 4))
    _default_environment(options)
    if check:
        _need_java("Flink")
        if master != "[local]":
            _check_flink_master(master)
    if flink.flink_job_server_jar:
        if check or "://" in flink.flink_job_server_jar:
            _local_file("flink_job_server_jar", flink.flink_job_server_jar)
    else:
        coords, jar = artifacts.flink_job_server(flink.flink_version)
        if check and not jar.exists():
            raise RunnerUnavailable(
                f"Flink {flink.flink_version} job-server jar not found ({jar}); run `make runners` "
                f"(it needs {coords} from Maven Central)"
            )
        # Always set: without it Beam would download the jar itself.
        flink.flink_job_server_jar = str(jar)


def _spark(options: PipelineOptions, check: bool) -> None:
    spark = options.view_as(SparkRunnerOptions)
    url = (spark.spark_master_url or "").strip()
    if not re.match(r"^(local(\[(\d+|\*)\])?|spark://[\w.-]+:\d+)$", url):
        raise RunnerError(f"--spark_master_url={url!r} is not local, local[N] or spark://host:port")
    _default_environment(options)
    if check:
        _need_java("Spark")
    if spark.spark_job_server_jar:
        if check or "://" in spark.spark_job_server_jar:
            _local_file("spark_job_server_jar", spark.spark_job_server_jar)
    else:
        coords, jar = artifacts.spark_job_server()
        if check and not jar.exists():
            raise RunnerUnavailable(
                f"Spark job-server jar not found ({jar}); run `make runners` (it needs {coords} from Maven Central)"
            )
        spark.spark_job_server_jar = str(jar)


def _dataflow(options: PipelineOptions) -> None:
    gcp = options.view_as(GoogleCloudOptions)
    missing = [f for f, v in (("--project", gcp.project), ("--region", gcp.region)) if not v]
    if not gcp.temp_location:
        missing.append("--temp_location=gs://BUCKET/tmp")
    if missing:
        raise RunnerError(f"Dataflow needs {', '.join(missing)}")
    for flag, value in (("temp_location", gcp.temp_location), ("staging_location", gcp.staging_location)):
        if value and not value.startswith("gs://"):
            raise RunnerError(f"--{flag} must be a gs:// path for Dataflow, not {value!r}")
    # Beam's own checks (bucket and project-id syntax), caught here: when they fail inside
    # Pipeline(), Beam goes looking for a default bucket on GCP instead.
    validator = PipelineOptionsValidator(options, None)
    errors = validator.validate_gcs_path(gcp, "temp_location") + validator.validate_cloud_options(gcp)
    if gcp.staging_location:
        errors += validator.validate_gcs_path(gcp, "staging_location")
    if errors:
        raise RunnerError(errors[0].strip().splitlines()[0])
    setup = options.view_as(SetupOptions)
    if not (setup.setup_file or options.view_as(WorkerOptions).sdk_container_image) and os.path.exists(_SETUP_PY):
        # Workers need this project's packages: stage them unless a custom image carries them.
        setup.setup_file = _SETUP_PY
    check_worker_paths("dataflow", {"--output": options.view_as(RunOptions).output})


def check_worker_paths(profile: str, paths: dict[str, str | None]) -> None:
    """Raises RunnerError when a runner's remote workers could not see a local path."""
    if profile != "dataflow":
        return
    local = [f for f, p in paths.items() if p and ("://" not in p or p.startswith("file://"))]
    if local:
        raise RunnerError(f"Dataflow workers cannot read this machine's disk: {', '.join(local)} must be gs:// paths")


# Below this many input records, worker processes (forked ahead, see warm_workers) save nothing.
PARALLEL_MIN_ROWS = 100_000
MAX_AUTO_WORKERS = 4


def local_workers(options: PipelineOptions) -> str | int:
    """``--local_workers``: ``auto`` or a number >= 1 (RunnerError otherwise)."""
    value = str(options.view_as(RunOptions).local_workers).strip().lower()
    if value == "auto":
        return value
    if value.isdigit() and int(value) >= 1:
        return int(value)
    raise RunnerError(f"--local_workers must be auto or a number >= 1, got {value!r}")


def direct_workers(options: PipelineOptions, estimated_rows: float, cores: int | None = None) -> int | None:
    """How many worker processes the direct runner should use, from ``--local_workers``.

    ``auto``: one per core (up to MAX_AUTO_WORKERS) when the input holds PARALLEL_MIN_ROWS
    records or more, else 1. None when this is not the direct profile, or when Beam's own
    ``--direct_num_workers``/``--direct_running_mode`` were given (they are then left to Beam).
    """
    if profile_name(options.view_as(StandardOptions).runner) != "direct":
        return None
    # The flags as given: an explicit value equal to Beam's default must still win.
    given = [f.split("=", 1)[0] for f in getattr(options, "_flags", [])]
    if "--direct_num_workers" in given or "--direct_running_mode" in given:
        return None
    wanted = local_workers(options)
    if wanted == "auto":
        cores = cores or os.cpu_count() or 1
        wanted = min(cores, MAX_AUTO_WORKERS) if estimated_rows >= PARALLEL_MIN_ROWS else 1
    return wanted


def _not_about_running_mode(record: logging.LogRecord) -> bool:
    return "direct_running_mode" not in record.getMessage()


def parallel_direct_runner(options: PipelineOptions, workers: int, stderr_path: str | None, command: str | None = None):
    """The in-process runner driving ``workers`` worker processes of this interpreter.

    Processes, not threads: threads would share one interpreter lock. Every shuffle of the
    events pipeline goes through spill files, so what the runner passes between them is small.
    The workers' stderr (where each prints a failing step's traceback, already reported as the
    run's one-line error) goes to ``stderr_path`` when given. ``command`` starts a worker
    instead of a new interpreter (see ``warm_workers``).
    """
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    from apache_beam.transforms.environments import SubprocessSDKEnvironment

    options.view_as(DirectOptions).direct_num_workers = workers
    if command is None:
        command = f"{shlex.quote(sys.executable)} -m apache_beam.runners.worker.sdk_worker_main"
    if stderr_path:
        command += f" 2>>{shlex.quote(stderr_path)}"
    # Beam warns that --direct_running_mode should be multi_processing: it is, with this command.
    logging.getLogger("apache_beam.runners.portability.fn_api_runner.fn_runner").addFilter(_not_about_running_mode)
    return FnApiRunner(default_environment=SubprocessSDKEnvironment.from_command_string(command))


def make_runner(options: PipelineOptions, check_artifacts: bool = True):
    """A runner instance for the options' ``--runner`` (default: direct), with its defaults filled in.

    ``check_artifacts=False`` validates the flags only (for ``--dry_run``): no binary, jar,
    tool or cluster needs to be present.
    """
    standard = options.view_as(StandardOptions)
    name = profile_name(standard.runner)
    if name == "direct":
        local_workers(options)
        if standard.streaming:
            raise RunnerError(
                "--streaming needs a streaming runner: --runner=PrismRunner (the direct profile runs batch only)"
            )
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        return FnApiRunner()
    if name == "prism":
        _prism(options, check_artifacts)
        _portable(options)
        from beam_pipelines.side_worker import PrismRunner

        return PrismRunner()
    if name == "flink":
        _flink(options, check_artifacts)
        _portable(options)
        from apache_beam.runners.portability.flink_runner import FlinkRunner

        return FlinkRunner()
    if name == "spark":
        _spark(options, check_artifacts)
        _portable(options)
        from apache_beam.runners.portability.spark_runner import SparkRunner

        return SparkRunner()
    _dataflow(options)
    from apache_beam.runners.dataflow.dataflow_runner import DataflowRunner

    return DataflowRunner()  # its clients are created only when a job is submitted


def graph_environment(runner, options: PipelineOptions):
    """The default SDK environment ``runner`` would put in the job graph (for ``--dry_run``)."""
    from apache_beam.runners.dataflow.dataflow_runner import DataflowRunner
    from apache_beam.runners.portability.portable_runner import PortableRunner

    if isinstance(runner, PortableRunner):
        return runner.default_environment(options)
    if isinstance(runner, DataflowRunner):
        from apache_beam.runners.dataflow.internal import apiclient
        from apache_beam.transforms.environments import DockerEnvironment

        # The worker image only: staging the project's packages (setup.py sdist) is left to a real submit.
        return DockerEnvironment.from_container_image(apiclient.get_container_image_from_options(options))
    return None
