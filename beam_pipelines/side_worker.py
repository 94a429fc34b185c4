"""A second SDK worker process for the work that leaves a streaming job's latency path.

In streaming, curated file writes and per-window profiles run behind the ``OffLatencyPath``
fusion break (``spec/build.py``). Prism's default (loopback) worker runs every stage in the
launcher's interpreter, so behind the break those stages still took the interpreter lock from
the source, dedup and aggregates: about a third of the worker's CPU in a 200,000-message
catch-up. :class:`PrismRunner` gives every transform downstream of the break an environment
of its own, served by a worker process of this interpreter (``python -m
beam_pipelines.side_worker_process``): Prism runs each environment's stages on that environment's
worker, so the two share nothing but the machine's cores.

Only a loopback job is split: with ``--environment_type`` PROCESS, DOCKER or EXTERNAL the
workers already run outside the launcher.
"""

from __future__ import annotations

import copy
import logging
import os
import subprocess
import sys
from collections import deque

from apache_beam.portability import python_urns
from apache_beam.portability.api import beam_fn_api_pb2
from apache_beam.runners.portability.prism_runner import PrismRunner as _BeamPrismRunner
from apache_beam.runners.worker.worker_pool_main import BeamFnExternalWorkerPoolServicer, kill_process_gracefully

__all__ = ["ENVIRONMENT", "OFF_PATH", "PrismRunner", "move_off_path"]

_LOGGER = logging.getLogger(__name__)
OFF_PATH = "OffLatencyPath"  # the label of the fusion break (spec/build.py labels it with this)
ENVIRONMENT = "beam_pipelines-off-path"


def _off_path_roots(pipeline) -> list[str]:
    """Where the off-path work starts: the outputs of the GroupByKey inside every transform
    labelled ``OffLatencyPath`` (what follows it, the break's own second half included)."""
    from apache_beam.portability import common_urns

    gbk = common_urns.primitives.GROUP_BY_KEY.urn
    roots = []
    for t in pipeline.components.transforms.values():
        if t.spec.urn == gbk and f"/{OFF_PATH}/" in f"/{t.unique_name}":
            roots.extend(t.outputs.values())
    return roots


def move_off_path(pipeline, environment) -> list[str]:
    """Puts every SDK transform after the ``OffLatencyPath`` break into ``environment``
    (added to the pipeline as :data:`ENVIRONMENT`); returns the moved transforms' names.

    Leaf transforms only: a runner-implemented one (GroupByKey, Flatten) has no environment and
    keeps none, but what it feeds is followed.
    """
    roots = _off_path_roots(pipeline)
    if not roots:
        return []
    readers: dict[str, list] = {}
    for t in pipeline.components.transforms.values():
        if not t.subtransforms:
            for pc in set(t.inputs.values()):
                readers.setdefault(pc, []).append(t)
    moved: dict[str, None] = {}  # names in the order reached
    queue = deque(roots)
    while queue:
        for t in readers.get(queue.popleft(), ()):
            if t.unique_name not in moved:
                moved[t.unique_name] = None
                if t.environment_id:
                    t.environment_id = ENVIRONMENT
                queue.extend(t.outputs.values())
    pipeline.components.environments[ENVIRONMENT].CopyFrom(environment)
    return list(moved)


class _ProcessPool(BeamFnExternalWorkerPoolServicer):
    """A worker pool whose workers are ``python -m beam_pipelines.side_worker_process`` processes
    (stdout and stderr inherited, unlike Beam's own process pool, which pipes stdout). One is
    started with the pool and waits, Beam imported, to be told its runner's address."""

    def __init__(self, log_level: str, **kwargs):
        super().__init__(use_process=True, **kwargs)
        self._log_level = log_level
        self._waiting = self._spawn()

    def _spawn(self) -> subprocess.Popen:
        command = [sys.executable, "-m", "beam_pipelines.side_worker_process", self._log_level, str(os.getpid()),
                   str(self._state_cache_size), str(self._data_buffer_time_limit_ms)]  # fmt: skip
        return subprocess.Popen(command, stdin=subprocess.PIPE)

    def StartWorker(self, request, unused_context):  # noqa: N802 - the gRPC method's name
        try:
            proc, self._waiting = self._waiting, None
            if proc is None or proc.poll() is not None:
                proc = self._spawn()
            proc.stdin.write(f"{request.control_endpoint.url} {request.worker_id}\n".encode())
            proc.stdin.close()
        except OSError as e:
            return beam_fn_api_pb2.StartWorkerResponse(error=f"side worker did not start: {e}")
        self._worker_processes[request.worker_id] = proc
        return beam_fn_api_pb2.StartWorkerResponse()

    def stop_all(self) -> None:
        procs = list(self._worker_processes.values())
        if self._waiting is not None:
            self._waiting.stdin.close()  # never asked for: it leaves on its own
            procs.append(self._waiting)
            self._waiting = None
        for proc in procs:
            kill_process_gracefully(proc)
        self._worker_processes.clear()


def _loopback(env) -> bool:
    return env.urn == python_urns.EMBEDDED_PYTHON_LOOPBACK


class PrismRunner(_BeamPrismRunner):
    """Beam's PrismRunner, with the off-path work of a loopback job in a worker process of its own."""

    def start_and_replace_loopback_environments(self, pipeline, options):
        from apache_beam.options.pipeline_options import DebugOptions, PortableOptions
        from apache_beam.runners.worker import sdk_worker_main
        from apache_beam.transforms.environments import ExternalEnvironment

        envs = pipeline.components.environments
        cleanup = []
        if _off_path_roots(pipeline) and envs and all(_loopback(e) for e in envs.values()):
            experiments = options.view_as(DebugOptions).experiments or []
            address, server, pool = _start_pool(
                logging.getLevelName(logging.getLogger().getEffectiveLevel()),
                state_cache_size=sdk_worker_main._get_state_cache_size_bytes(options=options),
                data_buffer_time_limit_ms=sdk_worker_main._get_data_buffer_time_limit_ms(experiments),
            )
            env = copy.deepcopy(next(iter(envs.values())))
            portable = copy.deepcopy(options.view_as(PortableOptions))
            portable.environment_type, portable.environment_config = "EXTERNAL", address
            external = ExternalEnvironment.from_options(portable).to_runner_api(None)
            env.urn, env.payload = external.urn, external.payload
            moved = move_off_path(pipeline, env)
            _LOGGER.info("%d off-path transforms run in a worker process of their own", len(moved))
            cleanup.append(lambda: (pool.stop_all(), server.stop(1)))
        return [*cleanup, *super().start_and_replace_loopback_environments(pipeline, options)]


def _start_pool(log_level: str, **kwargs):
    """Starts a :class:`_ProcessPool`'s gRPC server; returns its address, the server and the pool."""
    import grpc
    from apache_beam.portability.api import beam_fn_api_pb2_grpc
    from apache_beam.utils import thread_pool_executor

    server = grpc.server(thread_pool_executor.shared_unbounded_instance())
    address = f"localhost:{server.add_insecure_port('localhost:0')}"
    pool = _ProcessPool(log_level, **kwargs)
    beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(pool, server)
    server.start()
    return address, server, pool
