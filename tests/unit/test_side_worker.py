"""The off-path work of a streaming job goes to a worker process of its own (beam_pipelines.side_worker):
which transforms move, checked on the events spec's job graph, and the side worker's metric ids."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.portability.api import metrics_pb2
from apache_beam.runners.worker import sdk_worker
from apache_beam.transforms.environments import ExternalEnvironment

from beam_pipelines import side_worker, side_worker_process
from tests.unit.test_stream_latency_path import STREAM, built


def _proto(p: beam.Pipeline):
    return p.to_runner_api()


def _env():
    return ExternalEnvironment("localhost:1").to_runner_api(None)


def test_what_follows_the_break_moves_and_the_latency_path_stays(tmp_path):
    proto = _proto(built(tmp_path, **STREAM))
    default_env = {t.environment_id for t in proto.components.transforms.values() if t.environment_id}
    moved = set(side_worker.move_off_path(proto, _env()))
    names = {t.unique_name: t for t in proto.components.transforms.values()}
    assert any(n.startswith("WriteCurated/") for n in moved), moved
    assert any(n.startswith("ProfileCurated/") for n in moved), moved
    # the latency path, the dead letters of the records and the break's own first half stay
    for name, t in names.items():
        if t.subtransforms or not t.environment_id:
            continue
        off = t.environment_id == side_worker.ENVIRONMENT
        assert off == (name in moved), name
        if name.startswith(("Read", "Validate", "HourlyAggregate", "Upsert", "SelectCurated")):
            assert not off, name
    assert proto.components.environments[side_worker.ENVIRONMENT].urn == _env().urn
    assert len(default_env) == 1  # nothing else changed environment
    # every reader of a moved transform's output moved too: the side worker feeds nothing back
    outputs = {pc for n in moved for pc in names[n].outputs.values()}
    for name, t in names.items():
        if not t.subtransforms and set(t.inputs.values()) & outputs:
            assert name in moved, name


def test_a_graph_without_the_break_is_left_as_it_is(tmp_path):
    proto = _proto(built(tmp_path))  # batch: no OffLatencyPath
    before = proto.SerializeToString(deterministic=True)
    assert side_worker.move_off_path(proto, _env()) == []
    assert proto.SerializeToString(deterministic=True) == before
    assert side_worker.ENVIRONMENT not in proto.components.environments


def test_the_side_workers_metric_ids_do_not_meet_the_launchers(monkeypatch):
    cache = sdk_worker.ShortIdCache()
    monkeypatch.setattr(sdk_worker, "SHORT_ID_CACHE", cache)
    launcher = sdk_worker.ShortIdCache()
    infos = [metrics_pb2.MonitoringInfo(urn="beam:metric:user:sum_int64:v1", labels={"NAME": str(i)})
             for i in range(50)]  # fmt: skip
    side_worker_process.disjoint_short_ids()
    ours = {cache.get_short_id(i) for i in infos}
    theirs = {launcher.get_short_id(i) for i in infos}
    assert len(ours) == len(theirs) == 50 and not ours & theirs


def _worker(*args, stdin=""):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "beam_pipelines.side_worker_process", *args], input=stdin,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_a_side_worker_never_asked_for_leaves_quietly_and_a_bad_command_says_how():
    import os

    done = _worker("WARNING", str(os.getpid()), "0", "0")  # stdin closed: no runner asked for it
    assert (done.returncode, done.stderr) == (0, "")
    bad = _worker("WARNING")
    assert bad.returncode == 2 and "CONTROL_ENDPOINT WORKER_ID" in bad.stderr


def test_the_pool_starts_its_worker_before_it_is_asked_and_stops_it():
    pool = side_worker._ProcessPool("WARNING")
    waiting = pool._waiting
    try:
        assert waiting.poll() is None  # importing Beam while the job is prepared
    finally:
        pool.stop_all()
    assert waiting.poll() is not None and pool._waiting is None


def test_the_runner_gives_a_loopback_streaming_job_its_side_worker(tmp_path):
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.portability import common_urns, python_urns
    from apache_beam.transforms.environments import EmbeddedPythonGrpcEnvironment

    p = built(tmp_path, **STREAM)
    loopback = EmbeddedPythonGrpcEnvironment.default()
    proto = p.to_runner_api(default_environment=loopback)
    for env in proto.components.environments.values():
        env.urn = python_urns.EMBEDDED_PYTHON_LOOPBACK  # as Beam's PortableRunner builds a LOOPBACK job
    cleanups = side_worker.PrismRunner().start_and_replace_loopback_environments(proto, PipelineOptions())
    try:
        envs = proto.components.environments
        assert envs[side_worker.ENVIRONMENT].urn == common_urns.environments.EXTERNAL.urn
        moved = [t.unique_name for t in proto.components.transforms.values()
                 if t.environment_id == side_worker.ENVIRONMENT]  # fmt: skip
        assert any(n.startswith("WriteCurated/") for n in moved)
        assert all(e.urn == common_urns.environments.EXTERNAL.urn for e in envs.values())  # loopback replaced
    finally:
        for stop in cleanups:
            stop()
