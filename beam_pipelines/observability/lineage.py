"""OpenLineage run events (START, COMPLETE, FAIL) for a pipeline run, with quality facets.

Events go through the openlineage-python client to a JSON-lines file (FileTransport, append
mode) or to an HTTP endpoint such as Marquez (HttpTransport, ``<url>/api/v1/lineage``).
Dataset names follow the OpenLineage naming spec (``file`` + absolute path, ``s3://bucket`` +
key, ...); a glob input names its directory, so every run of the same pattern is one dataset.
"""

from __future__ import annotations

import os
import re
import traceback
import urllib.parse
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import apache_beam as beam
import requests
from openlineage.client import OpenLineageClient
from openlineage.client.constants import __version__ as OPENLINEAGE_VERSION
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    data_quality_assertions_dataset,
    data_quality_metrics_dataset,
    data_quality_metrics_input_dataset,
    dataset_version_dataset,
    error_message_run,
    input_statistics_input_dataset,
    job_type_job,
    output_statistics_output_dataset,
    processing_engine_run,
    schema_dataset,
)
from openlineage.client.naming import dataset as naming
from openlineage.client.serde import Serde
from openlineage.client.transport.file import FileConfig, FileTransport
from openlineage.client.transport.http import HttpConfig, HttpTransport

from transforms.records import DEAD_LETTER_SCHEMA

__all__ = ["PRODUCER", "LineageEmitter", "LineageResult", "dataset_name", "lineage_run_id"]

PRODUCER = "https://github.com/beam-pipelines/beam-pipelines"
JOB_NAMESPACE = "beam-pipelines"
OUTPUTS = ("curated", "aggregates", "dlq")
_GLOB = re.compile(r"[*?\[{]")
_RUN_IDS = uuid.uuid5(uuid.NAMESPACE_URL, PRODUCER + "/runs")


@dataclass(frozen=True)
class LineageResult:
    """What happened to one lineage event.

    Args:
        sent: True when the transport accepted the event.
        event: The event as the OpenLineage JSON object.
        error: Why sending failed, or None.
    """

    sent: bool
    event: dict
    error: str | None = None


def lineage_run_id(run_id: str) -> str:
    """The OpenLineage run id (a UUID) of our run id: the id itself if it is a UUID, else uuid5 of it.

    Args:
        run_id: The pipeline's run id.
    """
    try:
        return str(uuid.UUID(run_id))
    except ValueError:
        return str(uuid.uuid5(_RUN_IDS, run_id))


def _base(path: str) -> str:
    # A pattern names the directory it lists; a plain path names itself.
    match = _GLOB.search(path)
    if not match:
        return path.rstrip("/") or "/"
    return path[: match.start()].rsplit("/", 1)[0] or "/"


def dataset_name(path: str) -> tuple[str, str]:
    """``(namespace, name)`` of a file path or pattern, per the OpenLineage naming spec.

    Args:
        path: Local path, ``file://``, ``s3://``, ``gs://``, ``azfs://account/container/...``,
            ``hdfs://host:port/...`` or another ``scheme://authority/...`` URL.
    """
    if "://" not in path or path.startswith("file://"):
        local = os.path.abspath(urllib.parse.unquote(path.removeprefix("file://")))
        ds = naming.LocalFileSystem(path=_base(local))
        return ds.get_namespace(), ds.get_name()
    parts = urllib.parse.urlsplit(path)
    key = _base(parts.path.lstrip("/")) if parts.path.strip("/") else "/"
    if parts.scheme == "s3":
        ds = naming.S3(bucket_name=parts.netloc, object_key=key)
    elif parts.scheme == "gs":
        ds = naming.GCS(bucket_name=parts.netloc, object_key=key)
    elif parts.scheme == "azfs" and "/" in key:
        container, blob = key.split("/", 1)
        ds = naming.WASBS(container=container, service_name=parts.netloc, object_key=blob)
    else:
        return f"{parts.scheme}://{parts.netloc}", _base(parts.path) or "/"
    return ds.get_namespace(), ds.get_name()


def _join(root: str, name: str) -> str:
    return root.rstrip("/") + "/" + name


def _utc_iso(ts: datetime) -> str:
    if not isinstance(ts, datetime) or ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError(f"event_time must be a timezone-aware datetime, got {ts!r}")
    return ts.isoformat()


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _quantiles(value) -> dict[str, float]:
    # Profiles give quantiles as {q: v}, [[q, v], ...] or [{"q": q, "value": v}, ...].
    if isinstance(value, Mapping):
        pairs = list(value.items())
    elif isinstance(value, Sequence) and not isinstance(value, str):
        pairs = []
        for p in value:
            if isinstance(p, Mapping):
                pairs.append((p.get("q", p.get("quantile")), p.get("value")))
            elif isinstance(p, Sequence) and not isinstance(p, str) and len(p) == 2:
                pairs.append(tuple(p))
    else:
        return {}
    return {str(q): float(v) for q, v in pairs if q is not None and _number(v) is not None}


def _column_metrics(profile: Mapping, cls) -> dict:
    out = {}
    for col, stats in (profile.get("columns") or {}).items():
        distinct = _number(stats.get("distinct_approx"))
        out[col] = cls(
            nullCount=None if _number(stats.get("nulls")) is None else int(stats["nulls"]),
            distinctCount=None if distinct is None else round(distinct),
            count=_number(stats.get("count")),
            min=_number(stats.get("min")),
            max=_number(stats.get("max")),
            quantiles=_quantiles(stats.get("quantiles")),
        )
    return out


def _table_outputs(tables: Sequence[Mapping]) -> list[OutputDataset]:
    """Lakehouse tables as output datasets: the Delta version as the dataset's version, and the
    rows this run's commit wrote (appended, or merged) as its output statistics."""
    out = []
    for t in tables:
        namespace, name = dataset_name(str(t["table"]))
        facets = {}
        if t.get("version") is not None:
            facets["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(
                datasetVersion=str(t["version"]), producer=PRODUCER
            )
        commit = t.get("commit") or {}
        written = commit.get("source", commit.get("added"))
        output_facets = {}
        if written is not None:
            output_facets["outputStatistics"] = output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
                rowCount=int(written), producer=PRODUCER
            )
        out.append(OutputDataset(namespace=namespace, name=name, facets=facets, outputFacets=output_facets))
    return out


def _schema(columns: Mapping[str, str]) -> schema_dataset.SchemaDatasetFacet:
    return schema_dataset.SchemaDatasetFacet(
        fields=[
            schema_dataset.SchemaDatasetFacetFields(
                name=name, type=None if kind is None else str(kind), ordinal_position=i
            )
            for i, (name, kind) in enumerate(columns.items(), start=1)
        ],
        producer=PRODUCER,
    )


def _assertions(report: Mapping) -> data_quality_assertions_dataset.DataQualityAssertionsDatasetFacet:
    return data_quality_assertions_dataset.DataQualityAssertionsDatasetFacet(
        assertions=[
            data_quality_assertions_dataset.Assertion(
                assertion=str(e.get("kind") or e["name"]),
                success=bool(e.get("passed")),
                column=e.get("column"),
                severity=e.get("severity"),
                name=e.get("name"),
                description=e.get("detail"),
                actual=None if e.get("failing") is None else str(e["failing"]),
                params={k: e[k] for k in ("action", "checked", "failing") if e.get(k) is not None},
            )
            for e in report.get("expectations") or []
        ],
        producer=PRODUCER,
    )


class LineageEmitter:
    """Emits a run's OpenLineage events.

    Args:
        target: A file path (events appended as JSON lines; the directory is created) or an
            ``http(s)://`` base URL (events posted to ``<url>/api/v1/lineage``).
        namespace: The job namespace.
        processing_type: ``BATCH`` or ``STREAMING`` (the jobType facet).
        timeout: Seconds per HTTP attempt.
        retries: HTTP retries on connection errors and 5xx answers.
        backoff: urllib3 backoff factor between HTTP retries.

    Raises:
        ValueError: For an empty target, an unsupported URL scheme or a bad option.
    """

    def __init__(
        self,
        target: str,
        namespace: str = JOB_NAMESPACE,
        processing_type: str = "BATCH",
        timeout: float = 5.0,
        retries: int = 3,
        backoff: float = 0.5,
    ):
        if not target:
            raise ValueError("a lineage target (file path or http(s) URL) is required")
        if processing_type not in ("BATCH", "STREAMING"):
            raise ValueError(f"processing_type must be BATCH or STREAMING, got {processing_type!r}")
        if not namespace or timeout <= 0 or retries < 0 or backoff < 0:
            raise ValueError("namespace is required; timeout must be > 0, retries and backoff >= 0")
        self.namespace, self._processing_type = namespace, processing_type
        if target.startswith(("http://", "https://")):
            # A trailing slash keeps a path prefix (e.g. behind a proxy) when the endpoint is joined.
            config = HttpConfig(
                url=target.rstrip("/") + "/",
                endpoint="api/v1/lineage",
                timeout=timeout,
                retry={
                    "total": retries,
                    "connect": retries,
                    "read": retries,
                    "status": retries,
                    "backoff_factor": backoff,
                    "status_forcelist": [429, 500, 502, 503, 504],
                    "allowed_methods": ["POST"],
                },
            )
            transport = HttpTransport(config)
        elif "://" in target and not target.startswith("file://"):
            raise ValueError(f"lineage target must be a file path or an http(s) URL, got {target!r}")
        else:
            path = os.path.abspath(target.removeprefix("file://"))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            transport = FileTransport(FileConfig(log_file_path=path, append=True))
        self.target = target
        self._client = OpenLineageClient(transport=transport)

    def _job(self, job_name: str) -> Job:
        if not job_name:
            raise ValueError("job_name is required")
        return Job(
            namespace=self.namespace,
            name=job_name,
            facets={
                "jobType": job_type_job.JobTypeJobFacet(
                    processingType=self._processing_type, integration="APACHE_BEAM", jobType="JOB", producer=PRODUCER
                )
            },
        )

    def _run(self, run_id: str, extra: Mapping | None = None) -> Run:
        facets = {
            "processing_engine": processing_engine_run.ProcessingEngineRunFacet(
                version=beam.__version__,
                name="Apache Beam",
                openlineageAdapterVersion=OPENLINEAGE_VERSION,
                producer=PRODUCER,
            ),
            **(extra or {}),
        }
        return Run(runId=lineage_run_id(run_id), facets=facets)

    @staticmethod
    def _inputs(inputs: str | Sequence[str], report: Mapping | None = None) -> list[InputDataset]:
        patterns = [inputs] if isinstance(inputs, str) else list(inputs)
        read = (report or {}).get("counts", {}).get("read")
        out = []
        for pattern in patterns:
            namespace, name = dataset_name(pattern)
            facets = {}
            if read is not None and len(patterns) == 1:
                facets = {
                    "dataQualityMetrics": data_quality_metrics_input_dataset.DataQualityMetricsInputDatasetFacet(
                        columnMetrics={}, rowCount=int(read), producer=PRODUCER
                    ),
                    "inputStatistics": input_statistics_input_dataset.InputStatisticsInputDatasetFacet(
                        rowCount=int(read), producer=PRODUCER
                    ),
                }
            out.append(InputDataset(namespace=namespace, name=name, inputFacets=facets))
        return out

    @staticmethod
    def _outputs(
        output: str, report: Mapping | None, profile: Mapping | None, event_time: str, schemas: Mapping | None
    ) -> list[OutputDataset]:
        counts = (report or {}).get("counts", {})
        rows = {kind: counts.get("dead_lettered" if kind == "dlq" else kind) for kind in OUTPUTS}
        columns = {"dlq": {f.name: str(f.type) for f in DEAD_LETTER_SCHEMA}}
        if profile and profile.get("columns"):
            columns["curated"] = {c: s.get("type") for c, s in profile["columns"].items()}
        columns.update(schemas or {})
        out = []
        for kind in OUTPUTS:
            namespace, name = dataset_name(_join(output, kind))
            facets: dict = {}
            if columns.get(kind):
                facets["schema"] = _schema(columns[kind])
            if kind == "curated" and profile:
                facets["dataQualityMetrics"] = data_quality_metrics_dataset.DataQualityMetricsDatasetFacet(
                    columnMetrics=_column_metrics(profile, data_quality_metrics_dataset.ColumnMetrics),
                    rowCount=profile.get("rows"),
                    captureDate=event_time,
                    producer=PRODUCER,
                )
            if kind == "curated" and (report or {}).get("expectations"):
                # OpenLineage types this facet as an input facet; our expectations check the
                # curated rows, so it describes this dataset and sits in its dataset facets.
                facets["dataQualityAssertions"] = _assertions(report)
            output_facets = {}
            if rows[kind] is not None:
                output_facets["outputStatistics"] = output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
                    rowCount=int(rows[kind]), producer=PRODUCER
                )
            out.append(OutputDataset(namespace=namespace, name=name, facets=facets, outputFacets=output_facets))
        return out

    def _emit(self, event: RunEvent) -> LineageResult:
        try:
            self._client.emit(event)
        except (requests.RequestException, RuntimeError, OSError) as e:
            # Lineage is reported, not required: a receiver that is down must not fail the run.
            return LineageResult(False, Serde.to_dict(event), f"{type(e).__name__}: {e}")
        # Serialised after emit: the client adds its own facets (tags) to the event.
        return LineageResult(True, Serde.to_dict(event))

    def start(self, run_id: str, job_name: str, inputs: str | Sequence[str], event_time: datetime) -> LineageResult:
        """Emits START before the pipeline runs.

        Args:
            run_id: The pipeline's run id (mapped to a UUID by :func:`lineage_run_id`).
            job_name: The job name, e.g. the pipeline name.
            inputs: The input pattern(s).
            event_time: When the run started (timezone-aware).
        """
        return self._emit(
            RunEvent(
                eventType=RunState.START,
                eventTime=_utc_iso(event_time),
                run=self._run(run_id),
                job=self._job(job_name),
                inputs=self._inputs(inputs),
                producer=PRODUCER,
            )
        )

    def complete(
        self,
        run_id: str,
        job_name: str,
        inputs: str | Sequence[str],
        outputs: str,
        report: Mapping | None,
        profile: Mapping | None,
        event_time: datetime,
        schemas: Mapping[str, Mapping[str, str]] | None = None,
        tables: Sequence[Mapping] | None = None,
    ) -> LineageResult:
        """Emits COMPLETE with the outputs and their quality facets.

        Args:
            run_id: The pipeline's run id.
            job_name: The job name.
            inputs: The input pattern(s).
            outputs: The ``--output`` root; datasets are its curated/, aggregates/ and dlq/.
            report: The run report (row counts, expectations), or None.
            profile: The curated-data profile (schema types, column metrics), or None.
            event_time: When the run finished (timezone-aware).
            schemas: Optional ``{"curated"|"aggregates"|"dlq": {column: type}}`` overriding the
                schema facets taken from the profile and the dead-letter schema.
            tables: The lakehouse tables the run committed to (``lakehouse.commit.results``): each
                an output dataset with its Delta version and the rows this run's commit wrote.
        """
        at = _utc_iso(event_time)
        return self._emit(
            RunEvent(
                eventType=RunState.COMPLETE,
                eventTime=at,
                run=self._run(run_id),
                job=self._job(job_name),
                inputs=self._inputs(inputs, report),
                outputs=self._outputs(outputs, report, profile, at, schemas) + _table_outputs(tables or ()),
                producer=PRODUCER,
            )
        )

    def fail(
        self, run_id: str, job_name: str, inputs: str | Sequence[str], error: BaseException | str, event_time: datetime
    ) -> LineageResult:
        """Emits FAIL with an errorMessage run facet.

        Args:
            run_id: The pipeline's run id.
            job_name: The job name.
            inputs: The input pattern(s).
            error: The exception (its traceback is included) or a message.
            event_time: When the run failed (timezone-aware).
        """
        if isinstance(error, BaseException):
            message = f"{type(error).__name__}: {error}"
            stack = "".join(traceback.format_exception(error)) if error.__traceback__ else None
        else:
            message, stack = str(error), None
        facet = error_message_run.ErrorMessageRunFacet(
            message=message, programmingLanguage="PYTHON", stackTrace=stack, producer=PRODUCER
        )
        return self._emit(
            RunEvent(
                eventType=RunState.FAIL,
                eventTime=_utc_iso(event_time),
                run=self._run(run_id, {"errorMessage": facet}),
                job=self._job(job_name),
                inputs=self._inputs(inputs),
                producer=PRODUCER,
            )
        )

    def close(self) -> None:
        """Closes the transport (the HTTP session)."""
        self._client.close()
