"""Spec step type ReadHttp: a paginated JSON API as the pipeline's source (batch).

Its records reach Parse as JSON lines, like a jsonl file's; pages that cannot be read are its
own error output (dead letters, stage ``read``). With ``incremental``, the state published with
the previous run's outputs (``<output>/_state/<step>.json``) gives the value sent, and the new
state is staged with this run's outputs, so it moves on only when they are published.
"""

from __future__ import annotations

from beam_pipelines.spec.steps.base import Outputs, register
from beam_pipelines.spec.steps.io import Source

__all__ = ["ReadHttp"]

_PATH = {"type": "string", "pattern": r"^[A-Za-z0-9_.-]*$", "description": "A dotted JSON path, e.g. meta.next."}
_PARAM_NAME = {"type": "string", "pattern": r"^[A-Za-z0-9_.\[\]-]+$"}
_SCALAR = {"type": ["string", "integer", "number", "boolean"]}
_ENV = {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$", "description": "An environment variable's name."}
_SECONDS = {"type": "number", "minimum": 0}


@register
class ReadHttp(Source):
    type = "ReadHttp"
    doc = (
        "Reads every page of a paginated JSON API (cursor, page number or Link header) with retries, a rate "
        "limit and bounded concurrency; unreadable pages are dead letters naming their URL; incremental reads "
        "keep their state beside the outputs."
    )
    modes = ("batch",)
    error_outputs = ("error_handling",)
    config_schema = {
        "type": "object",
        "properties": {
            "url": {"type": "string", "pattern": r"^https?://", "description": "The endpoint (http:// or https://)."},
            "records": {**_PATH, "description": "Dotted JSON path of a page's list of records ('' : the body)."},
            "pagination": {
                "type": "object",
                "properties": {
                    "style": {"enum": ["cursor", "page", "link"]},
                    "cursor_param": {**_PARAM_NAME, "description": "Cursor: the query parameter. Default: cursor."},
                    "cursor_path": {**_PATH, "description": "Cursor: where the next cursor is in the body."},
                    "page_param": {**_PARAM_NAME, "description": "Page: the query parameter. Default: page."},
                    "start": {"type": "integer", "minimum": 0, "description": "Page: the first page. Default: 1."},
                    "size_param": {**_PARAM_NAME, "description": "Page: the page-size parameter."},
                    "size": {"type": "integer", "minimum": 1, "description": "Page: the page size to ask for."},
                    "total_pages_path": {**_PATH, "description": "Page: the number of pages in the first page."},
                    "total_records_path": {**_PATH, "description": "Page: the number of records (needs size)."},
                    "max_pages": {"type": "integer", "minimum": 1, "description": "Most pages per partition."},
                },
                "required": ["style"],
            },
            "params": {"type": "object", "additionalProperties": _SCALAR, "description": "Query parameters."},
            "partitions": {
                "type": "array",
                "minItems": 1,
                "items": {"type": "object", "additionalProperties": _SCALAR},
                "description": "Independent streams of pages, each with its own query parameters (read concurrently).",
            },
            "record_key": {**_PATH, "description": "A record's key: a record seen before is a counted duplicate."},
            "incremental": {
                "type": "object",
                "properties": {
                    "param": {**_PARAM_NAME, "description": "The query parameter taking the state (updated_since)."},
                    "field": {**_PATH, "description": "Each record's updated value (updated_at)."},
                    "initial": {**_SCALAR, "description": "The value the first run sends. Default: none sent."},
                },
                "required": ["param", "field"],
            },
            "auth": {
                "type": "object",
                "properties": {
                    "type": {"enum": ["bearer", "header"]},
                    "env": _ENV,
                    "header": {"type": "string", "pattern": r"^[A-Za-z0-9-]+$", "description": "For type header."},
                },
                "required": ["type", "env"],
            },
            "retry": {
                "type": "object",
                "properties": {
                    "attempts": {"type": "integer", "minimum": 1, "description": "Tries per page. Default: 5."},
                    "backoff": {**_SECONDS, "description": "Seconds the first retry waits at most. Default: 0.5."},
                    "max_backoff": {**_SECONDS, "description": "Longest wait in seconds. Default: 30."},
                    "max_retry_after": {**_SECONDS, "description": "Longest Retry-After obeyed. Default: 120."},
                    "timeout": {"type": "number", "minimum": 0.001, "description": "Request timeout (s). Default: 30."},
                },
            },
            "rate_limit": {"type": "number", "minimum": 0.001, "description": "Requests per second at most."},
            "concurrency": {"type": "integer", "minimum": 1, "description": "Requests in flight. Default: 8."},
            "batch_records": {"type": "integer", "minimum": 1, "description": "Records per batch. Default: 10000."},
            "error_handling": {
                "type": "object",
                "description": "Where unreadable pages go: an output name later steps take as <step>.<output>.",
                "properties": {"output": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"}},
                "required": ["output"],
            },
        },
        "required": ["url", "pagination", "error_handling"],
    }

    def columns(self, inputs):
        self.ctx.source_format = "jsonl"
        p = self.config["pagination"]
        if p.get("total_records_path") and not p.get("size"):
            raise self.error("pagination.total_records_path", "needs the page size: give pagination.size")
        if p.get("size") and not p.get("size_param") and p["style"] == "page":
            raise self.error("pagination.size", "the API is told the size by size_param: give it too")
        auth = self.config.get("auth", {})
        if auth.get("type") == "header" and not auth.get("header"):
            raise self.error("auth", "auth type header needs the header's name (header: X-Api-Key)")
        return None

    def format(self) -> str:
        return "jsonl"

    def input_name(self) -> str:
        return self.config["url"]

    def state_path(self, root: str) -> str:
        from transforms.ingest.http.state import state_path

        return state_path(root, self.name)

    def make(self, root: str):
        from transforms.ingest.http import Auth, Incremental, Pagination, ReadHttp, RetryPolicy
        from transforms.ingest.http.state import read_state

        c = self.config
        incremental = None
        if "incremental" in c:
            inc = c["incremental"]
            try:
                state = read_state(self.state_path(self.ctx.cfg.output))
            except ValueError as e:
                raise self.error("incremental", str(e)) from e
            since = state["value"] if state and state.get("value") is not None else inc.get("initial")
            incremental = Incremental(inc["param"], inc["field"], since)
        r = c.get("retry", {})
        retry = RetryPolicy(
            attempts=r.get("attempts", 5),
            backoff_seconds=r.get("backoff", 0.5),
            max_backoff_seconds=r.get("max_backoff", 30.0),
            max_retry_after_seconds=r.get("max_retry_after", 120.0),
            timeout_seconds=r.get("timeout", 30.0),
        )
        a = c.get("auth")
        return ReadHttp(
            c["url"],
            Pagination(**c["pagination"]),
            records_path=c.get("records", ""),
            params=dict(c.get("params", {})),
            partitions=[dict(p) for p in c["partitions"]] if "partitions" in c else None,
            record_key=c.get("record_key"),
            incremental=incremental,
            state_path=self.state_path(root),
            auth=Auth(a["type"], a["env"], a.get("header")) if a else None,
            retry=retry,
            rate_per_second=c.get("rate_limit"),
            concurrency=c.get("concurrency", 8),
            batch_records=c.get("batch_records", 10_000),
        )

    def preflight(self) -> int:
        """Reads the first page: OSError with a plain message when the API cannot be read. The
        size is unknown before the pages are read: 0 (the run is sized as a small one)."""
        from transforms.ingest.http import probe

        probe(self.make(self.ctx.cfg.output))
        return 0

    def build(self, inputs, io):
        out = inputs[0] | self.name >> io.source_for(self)
        if not isinstance(out, dict):  # a test's Create of raw batches
            return Outputs(out)
        errors = {self.config["error_handling"]["output"]: out["dead_letters"]}
        return Outputs(out["records"], errors, [out["stats"]])
