"""A local stand-in for the BigQuery REST API, for the BigQuery sink's tests: real HTTP (stdlib
http.server in a thread) answering the real ``google-cloud-bigquery`` client, which is pointed
at it with ``client_options={"api_endpoint": api.url}`` and anonymous credentials.

    with FakeBigQuery(datasets=["proj-1.sales"]) as api:
        api.fail("upload", 503, 503)      # the next two uploads: 503, then as normal
        ...                               # run the sink
        api.loads[0]["configuration"]     # the load job's configuration as the client sent it
        api.rows("proj-1.sales.orders")   # what the table holds now (an Arrow table)

What it answers: tables (get, insert, patch with ``If-Match`` etags, delete), load jobs by
multipart and resumable upload of parquet files, query jobs, jobs.get and getQueryResults, with
BigQuery's status codes and error shapes (404 notFound, 409 duplicate, 412 etag). What a load
does is modelled on BigQuery's documented behaviour: ``table$YYYYMMDD`` with WRITE_TRUNCATE
replaces that day only and refuses rows of another day; a column the table lacks is added only
with ALLOW_FIELD_ADDITION on a partition load; an optional parquet column does not load into a
REQUIRED one; CREATE_NEVER on a missing table fails the job. Rows are kept in DuckDB, and query
jobs run there after their quoting and parameters are translated (`` `p`.`d`.`t` `` -> one quoted
name, ``@x`` -> ``$x``): that checks what a MERGE statement does, not that BigQuery parses it.

Faults, per route (consumed in order, one per request): an HTTP status (``503``, ``500``,
``429``, ``400``...; with BigQuery's reason for it), ``reset`` (the connection drops without an
answer) and ``lost`` (the request is carried out, then answered 503: the client never hears it
worked). Routes: ``get_table``, ``create_table``, ``patch_table``, ``delete_table``, ``upload``
(a multipart upload or a resumable upload's start), ``upload_chunk``, ``insert_job`` (query jobs),
``get_job``, ``query_results``. ``fail_job(kind, reason)`` makes the next load or query job run
and fail with that reason.
"""

from __future__ import annotations

import io
import json
import re
import threading
import urllib.parse
from collections import defaultdict, deque
from datetime import date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

__all__ = ["FakeBigQuery"]

_REASONS = {400: "invalid", 404: "notFound", 409: "duplicate", 412: "conditionNotMet", 429: "rateLimitExceeded",
            500: "internalError", 502: "badGateway", 503: "backendError"}  # fmt: skip
_DUCK = {"STRING": "VARCHAR", "INT64": "BIGINT", "INTEGER": "BIGINT", "FLOAT64": "DOUBLE", "FLOAT": "DOUBLE",
         "BOOL": "BOOLEAN", "BOOLEAN": "BOOLEAN", "NUMERIC": "DECIMAL(38, 9)", "BIGNUMERIC": "DECIMAL(38, 18)",
         "TIMESTAMP": "TIMESTAMPTZ", "DATE": "DATE", "TIME": "TIME", "BYTES": "BLOB"}  # fmt: skip
_SAME = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL"}


def _kind_of(t: pa.DataType) -> set[str]:
    """The BigQuery column types a parquet column of Arrow type ``t`` loads into."""
    if pa.types.is_string(t):
        return {"STRING"}
    if pa.types.is_integer(t):
        return {"INT64"}
    if pa.types.is_floating(t):
        return {"FLOAT64"}
    if pa.types.is_boolean(t):
        return {"BOOL"}
    if pa.types.is_decimal(t):
        return {"NUMERIC", "BIGNUMERIC"}
    if pa.types.is_timestamp(t):
        return {"TIMESTAMP"}
    if pa.types.is_date(t):
        return {"DATE"}
    return {str(t)}


class _LoadFailed(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class FakeBigQuery:
    """The API server; see the module doc.

    Args:
        datasets: ``project.dataset`` names that exist (a table in another is 404 notFound).
        pending_polls: How many jobs.get calls see a new job still RUNNING before it is DONE.
        verbose: Print a line per table made or changed, job run and fault answered.
    """

    def __init__(self, datasets=("proj-1.sales",), pending_polls: int = 0, verbose: bool = False):
        self.datasets = set(datasets)
        self.pending_polls, self.verbose = pending_polls, verbose
        self.tables: dict[str, dict] = {}  # "p.d.t" -> table resource
        self.jobs: dict[str, dict] = {}  # job id -> job resource
        self.loads: list[dict] = []  # {"job_id", "configuration", "rows", "upload"} per load job run
        self.queries: list[dict] = []  # {"job_id", "query", "parameters"} per query job run
        self.requests: list[tuple[str, str]] = []  # (route, path)
        self.faults: dict[str, deque] = defaultdict(deque)
        self.job_faults: dict[str, deque] = defaultdict(deque)
        self._polls: dict[str, int] = {}
        self._uploads: dict[str, dict] = {}
        self._db = duckdb.connect()
        self._db.execute("SET TimeZone = 'UTC'")
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None

    # -- test controls --------------------------------------------------------------------------

    def fail(self, route: str, *faults) -> FakeBigQuery:
        self.faults[route].extend(faults)
        return self

    def fail_job(self, kind: str, reason: str = "backendError") -> FakeBigQuery:
        self.job_faults[kind].append(reason)
        return self

    def rows(self, table: str) -> pa.Table:
        """What ``table`` holds, as an Arrow table (its columns in the table's order)."""
        with self._lock:
            return self._db.sql(f"SELECT * FROM {_duck_name(table)}").to_arrow_table()

    def create(self, table: str, schema: list[dict], partition_field: str | None = None) -> dict:
        """Makes a table as another writer would have (``schema``: BigQuery field resources)."""
        project, dataset, table_id = table.split(".")
        resource = {"tableReference": {"projectId": project, "datasetId": dataset, "tableId": table_id},
                    "schema": {"fields": schema}}  # fmt: skip
        if partition_field:
            resource["timePartitioning"] = {"type": "DAY", "field": partition_field}
        with self._lock:
            self._create(resource)
        return resource

    def routes(self) -> list[str]:
        return [route for route, _ in self.requests]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self, port: int = 0) -> FakeBigQuery:
        api = self

        class Handler(_Handler):
            fake = api

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._db.close()

    def __enter__(self) -> FakeBigQuery:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _log(self, text: str) -> None:
        if self.verbose:
            print(text, flush=True)

    # -- tables ---------------------------------------------------------------------------------

    def _create(self, resource: dict) -> dict:
        ref = resource["tableReference"]
        name = f"{ref['projectId']}.{ref['datasetId']}.{ref['tableId']}"
        if f"{ref['projectId']}.{ref['datasetId']}" not in self.datasets:
            raise _HttpError(404, f"Not found: Dataset {ref['projectId']}:{ref['datasetId']}")
        if name in self.tables:
            raise _HttpError(409, f"Already Exists: Table {name}")
        fields = resource.get("schema", {}).get("fields", [])
        columns = ", ".join(f'"{f["name"]}" {_DUCK[f["type"].upper()]}' for f in fields)
        self._db.execute(f"CREATE TABLE {_duck_name(name)} ({columns})")
        stored = {**resource, "id": f"{ref['projectId']}:{ref['datasetId']}.{ref['tableId']}", "etag": "1",
                  "kind": "bigquery#table", "type": "TABLE", "numRows": "0"}  # fmt: skip
        self.tables[name] = stored
        part = resource.get("timePartitioning")
        self._log(
            f"table {name} created: {len(fields)} columns" + (f", DAY partitions on {part['field']}" if part else "")
        )
        return stored

    def _patch(self, name: str, patch: dict, etag: str | None) -> dict:
        table = self._table(name)
        if etag is not None and etag != table["etag"]:
            raise _HttpError(412, "Precondition check failed.")
        if "schema" in patch:
            old = {f["name"].lower(): f for f in table["schema"]["fields"]}
            for f in patch["schema"]["fields"]:
                before = old.get(f["name"].lower())
                if before is None:
                    if f.get("mode") == "REQUIRED":
                        raise _HttpError(400, f"Provided Schema does not match Table {name}. Cannot add required "
                                              f"fields to an existing schema. (field: {f['name']})")  # fmt: skip
                    self._db.execute(f'ALTER TABLE {_duck_name(name)} ADD COLUMN "{f["name"]}" {_DUCK[f["type"]]}')
                elif _SAME.get(before["type"], before["type"]) != _SAME.get(f["type"], f["type"]):
                    raise _HttpError(400, f"Provided Schema does not match Table {name}. Field {f['name']} has "
                                          f"changed type from {before['type']} to {f['type']}")  # fmt: skip
                elif before.get("mode") != "REQUIRED" and f.get("mode") == "REQUIRED":
                    raise _HttpError(400, f"Field {f['name']} has changed mode from NULLABLE to REQUIRED")
            missing = set(old) - {f["name"].lower() for f in patch["schema"]["fields"]}
            if missing:
                raise _HttpError(400, f"Provided Schema does not match Table {name}. Field {sorted(missing)[0]} "
                                      "is missing in new schema")  # fmt: skip
        if "schema" in patch:
            added = [f["name"] for f in patch["schema"]["fields"] if f["name"].lower() not in old]
            self._log(f"table {name} schema updated: added {added}")
        table.update({k: v for k, v in patch.items() if k != "etag"})
        table["etag"] = str(int(table["etag"]) + 1)
        return table

    def _table(self, name: str) -> dict:
        if name not in self.tables:
            raise _HttpError(404, f"Not found: Table {name.replace('.', ':', 1)}")
        return self.tables[name]

    def _delete(self, name: str) -> None:
        self._table(name)
        del self.tables[name]
        self._db.execute(f"DROP TABLE {_duck_name(name)}")
        self._log(f"table {name} dropped")

    # -- jobs -----------------------------------------------------------------------------------

    def _new_job(self, resource: dict, kind: str) -> dict:
        ref = resource["jobReference"]
        job_id = ref["jobId"]
        if job_id in self.jobs:
            raise _HttpError(409, f"Already Exists: Job {ref['projectId']}:{ref.get('location', 'US')}.{job_id}")
        job = {**resource, "kind": "bigquery#job", "id": f"{ref['projectId']}:{ref.get('location', 'US')}.{job_id}",
               "status": {"state": "DONE"}, "statistics": {}}  # fmt: skip
        job["jobReference"] = {**ref, "location": ref.get("location", "US")}
        reason = self.job_faults[kind].popleft() if self.job_faults[kind] else None
        if reason is not None:
            job["status"] = {"state": "DONE", "errorResult": {"reason": reason, "message": f"the job met {reason}"},
                             "errors": [{"reason": reason, "message": f"the job met {reason}"}]}  # fmt: skip
        self.jobs[job_id] = job
        if self.pending_polls:
            self._polls[job_id] = self.pending_polls
        return job

    def _load(self, metadata: dict, data: bytes, upload: str) -> dict:
        job = self._new_job(metadata, "load")
        if "errorResult" in job["status"]:
            return job
        config = metadata["configuration"]["load"]
        try:
            rows = pq.read_table(io.BytesIO(data))
            self._apply_load(config, rows)
        except _LoadFailed as e:
            job["status"] = {"state": "DONE", "errorResult": {"reason": e.reason, "message": str(e)},
                             "errors": [{"reason": e.reason, "message": str(e)}]}  # fmt: skip
            self._log(f"load job {job['jobReference']['jobId']} failed: {e}")
            return job
        job["statistics"] = {"load": {"outputRows": str(rows.num_rows), "inputFileBytes": str(len(data))}}
        self.loads.append({"job_id": job["jobReference"]["jobId"], "configuration": metadata["configuration"],
                           "rows": rows, "upload": upload})  # fmt: skip
        ref = config["destinationTable"]
        self._log(f"load {ref['projectId']}.{ref['datasetId']}.{ref['tableId']} {config.get('writeDisposition')} "
                  f"{rows.num_rows} rows ({upload} upload, {len(data):,} bytes of parquet)")  # fmt: skip
        return job

    def _apply_load(self, config: dict, rows: pa.Table) -> None:
        ref = config["destinationTable"]
        table_id, _, partition = ref["tableId"].partition("$")
        name = f"{ref['projectId']}.{ref['datasetId']}.{table_id}"
        if name not in self.tables:
            raise _LoadFailed("notFound", f"Not found: Table {name}")
        table = self.tables[name]
        fields = {f["name"].lower(): f for f in table["schema"]["fields"]}
        allowed = set(config.get("schemaUpdateOptions", ()))
        for field in rows.schema:
            have = fields.get(field.name.lower())
            if have is None:
                if not (partition and "ALLOW_FIELD_ADDITION" in allowed):
                    raise _LoadFailed("invalid", f"Provided Schema does not match Table {name}. Cannot add fields "
                                                 f"(field: {field.name})")  # fmt: skip
                added = {"name": field.name, "type": sorted(_kind_of(field.type))[-1], "mode": "NULLABLE"}
                table["schema"]["fields"].append(added)
                self._db.execute(f'ALTER TABLE {_duck_name(name)} ADD COLUMN "{field.name}" {_DUCK[added["type"]]}')
                continue
            if _SAME.get(have["type"], have["type"]) not in _kind_of(field.type):
                raise _LoadFailed("invalid", f"Provided Schema does not match Table {name}. Field {field.name} has "
                                             f"changed type from {have['type']} to {field.type}")  # fmt: skip
            if have.get("mode") == "REQUIRED" and field.nullable:
                raise _LoadFailed("invalid", f"Provided Schema does not match Table {name}. Field {field.name} has "
                                             "changed mode from REQUIRED to NULLABLE")  # fmt: skip
        target = _duck_name(name)
        where = "TRUE"
        if partition:
            column = table.get("timePartitioning", {}).get("field")
            if column is None:
                raise _LoadFailed("invalid", f"{name} is not partitioned by a column")
            days = pc.strftime(pc.cast(rows.column(column), pa.timestamp("us", tz="UTC")), "%Y%m%d").unique()
            if days.to_pylist() not in ([], [partition]):
                raise _LoadFailed("invalid", f"Some rows belong to different partitions rather than destination "
                                             f"partition {partition}")  # fmt: skip
            where = f"strftime(\"{column}\", '%Y%m%d') = '{partition}'"
        self._db.register("incoming", rows)
        try:
            if config.get("writeDisposition", "WRITE_APPEND") == "WRITE_TRUNCATE":
                self._db.execute(f"DELETE FROM {target} WHERE {where}")
            self._db.execute(f"INSERT INTO {target} BY NAME SELECT * FROM incoming")
        finally:
            self._db.unregister("incoming")

    def _query(self, metadata: dict) -> dict:
        job = self._new_job(metadata, "query")
        config = metadata["configuration"]["query"]
        self.queries.append({"job_id": job["jobReference"]["jobId"], "query": config["query"],
                             "parameters": config.get("queryParameters", [])})  # fmt: skip
        if "errorResult" in job["status"]:
            return job
        params = {p["name"]: _param_value(p) for p in config.get("queryParameters", [])}
        try:
            (affected,) = self._db.execute(_duck_sql(config["query"]), params).fetchone()
        except duckdb.Error as e:
            job["status"] = {"state": "DONE", "errorResult": {"reason": "invalidQuery", "message": str(e)},
                             "errors": [{"reason": "invalidQuery", "message": str(e)}]}  # fmt: skip
            return job
        job["statistics"] = {"query": {"numDmlAffectedRows": str(affected), "statementType": "MERGE"}}
        self._log(f"query {config['query'].splitlines()[0]} ... {affected} rows affected")
        return job

    def _inserted(self, job: dict) -> dict:
        """The answer to a job's insert: still RUNNING while it has polls to wait."""
        if self._polls.get(job["jobReference"]["jobId"]):
            return {**job, "status": {"state": "RUNNING"}}
        return job

    def _get_job(self, job_id: str) -> dict:
        if job_id not in self.jobs:
            raise _HttpError(404, f"Not found: Job {job_id}")
        job = self.jobs[job_id]
        if self._polls.get(job_id):
            self._polls[job_id] -= 1
            return {**job, "status": {"state": "RUNNING"}}
        return job


def _duck_name(table: str) -> str:
    return '"' + table.replace('"', "") + '"'


def _duck_sql(sql: str) -> str:
    sql = re.sub(r"`([^`]+)`\.`([^`]+)`\.`([^`]+)`", lambda m: _duck_name(".".join(m.groups())), sql)
    sql = re.sub(r"`([^`]+)`", r'"\1"', sql)
    return re.sub(r"@(\w+)", r"$\1", sql)


def _param_value(p: dict):
    value = p["parameterValue"]["value"]
    kind = p["parameterType"]["type"]
    if kind == "TIMESTAMP":
        return datetime.fromisoformat(value)
    if kind == "DATE":
        return date.fromisoformat(value)
    return value


class _HttpError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


class _Handler(BaseHTTPRequestHandler):
    fake: FakeBigQuery
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, code: int, obj: dict | None, headers: dict | None = None) -> None:
        data = b"" if obj is None else json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, code: int, message: str) -> None:
        reason = _REASONS.get(code, "invalid")
        body = {"error": {"code": code, "message": message, "errors": [{"reason": reason, "message": message}]}}
        self._send(code, body)

    def _route(self, method: str) -> tuple[str, dict]:
        parsed = urllib.parse.urlsplit(self.path)
        path, query = parsed.path, dict(urllib.parse.parse_qsl(parsed.query))
        m = re.fullmatch(r"/bigquery/v2/projects/([^/]+)/datasets/([^/]+)/tables(?:/([^/]+))?", path)
        if m:
            project, dataset, table = m.groups()
            route = {"GET": "get_table", "POST": "create_table", "PATCH": "patch_table", "PUT": "patch_table",
                     "DELETE": "delete_table"}[method]  # fmt: skip
            return route, {"table": f"{project}.{dataset}.{urllib.parse.unquote(table or '')}"}
        if path.startswith("/upload/bigquery/v2/projects/"):
            return ("upload_chunk" if method == "PUT" else "upload"), query
        m = re.fullmatch(r"/bigquery/v2/projects/([^/]+)/jobs(?:/([^/]+))?", path)
        if m:
            return ("get_job" if m.group(2) else "insert_job"), {"job_id": m.group(2)}
        m = re.fullmatch(r"/bigquery/v2/projects/([^/]+)/queries/([^/]+)", path)
        if m:
            return "query_results", {"job_id": m.group(2)}
        return "unknown", {}

    def _handle(self, method: str) -> None:
        body = self._body()
        route, args = self._route(method)
        fake = self.fake
        with fake._lock:
            fake.requests.append((route, self.path))
            fault = fake.faults[route].popleft() if fake.faults[route] else None
        if fault == "reset":
            fake._log(f"connection dropped on {route} (injected)")
            self.close_connection = True
            self.connection.close()
            return
        if isinstance(fault, int):
            fake._log(f"{fault} answered to {route} (injected)")
            self._error(fault, f"injected {fault}")
            return
        try:
            with fake._lock:
                code, obj, headers = self._answer(method, route, args, body)
        except _HttpError as e:
            self._error(e.code, str(e))
            return
        if fault == "lost":
            self._error(503, "the answer was lost")
            return
        self._send(code, obj, headers)

    def _answer(self, method: str, route: str, args: dict, body: bytes):
        fake = self.fake
        if route == "get_table":
            return 200, fake._table(args["table"]), None
        if route == "create_table":
            return 200, fake._create(json.loads(body)), None
        if route == "patch_table":
            return 200, fake._patch(args["table"], json.loads(body), self.headers.get("If-Match")), None
        if route == "delete_table":
            fake._delete(args["table"])
            return 204, None, None
        if route == "upload" and args.get("uploadType") == "multipart":
            metadata, data = _multipart(self.headers["Content-Type"], body)
            return 200, fake._inserted(fake._load(metadata, data, "multipart")), None
        if route == "upload":  # a resumable upload starts: its metadata now, its bytes in chunks
            upload_id = f"u{len(fake._uploads)}"
            fake._uploads[upload_id] = {"metadata": json.loads(body), "data": bytearray()}
            location = f"{fake.url}/upload/bigquery/v2/projects/p/jobs?uploadType=resumable&upload_id={upload_id}"
            return 200, None, {"Location": location}
        if route == "upload_chunk":
            upload = fake._uploads[args["upload_id"]]
            m = re.fullmatch(r"bytes (?:(\d+)-(\d+)|\*)/(\d+|\*)", self.headers.get("Content-Range", ""))
            if m is None:
                raise _HttpError(400, f"bad Content-Range {self.headers.get('Content-Range')!r}")
            if m.group(1) is not None and int(m.group(1)) == len(upload["data"]):
                upload["data"] += body
            total = m.group(3)
            if total == "*" or int(total) > len(upload["data"]):
                return 308, None, {"Range": f"bytes=0-{len(upload['data']) - 1}"}
            return 200, fake._inserted(fake._load(upload["metadata"], bytes(upload["data"]), "resumable")), None
        if route == "insert_job":
            return 200, fake._inserted(fake._query(json.loads(body))), None
        if route == "get_job":
            return 200, fake._get_job(args["job_id"]), None
        if route == "query_results":
            job = fake._get_job(args["job_id"])
            if job["status"]["state"] != "DONE":
                return 200, {"jobReference": job["jobReference"], "jobComplete": False}, None
            if "errorResult" in job["status"]:
                raise _HttpError(400, job["status"]["errorResult"]["message"])
            stats = job["statistics"].get("query", {})
            return 200, {"kind": "bigquery#getQueryResultsResponse", "jobReference": job["jobReference"],
                         "jobComplete": True, "totalRows": "0", "schema": {"fields": []},
                         "numDmlAffectedRows": stats.get("numDmlAffectedRows", "0")}, None  # fmt: skip
        raise _HttpError(404, f"no route for {method} {self.path}")

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_PATCH(self):
        self._handle("PATCH")

    def do_PUT(self):
        self._handle("PUT")

    def do_DELETE(self):
        self._handle("DELETE")


def _multipart(content_type: str, body: bytes) -> tuple[dict, bytes]:
    boundary = re.search(r'boundary="?([^";]+)"?', content_type).group(1).encode()
    parts = [p for p in body.split(b"--" + boundary) if p not in (b"", b"--", b"--\r\n", b"\r\n")]
    metadata, data = (p.split(b"\r\n\r\n", 1)[1].removesuffix(b"\r\n") for p in parts[:2])
    return json.loads(metadata), data


def main(argv: list[str] | None = None) -> None:
    """Serves the API until interrupted: ``python -m tests.bigquery_api --port 9050 --dataset proj-1.sales``."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=9050)
    ap.add_argument("--dataset", action="append", default=[], help="project.dataset that exists (repeatable)")
    ap.add_argument("--fail", action="append", default=[], metavar="ROUTE:FAULT[,FAULT]",
                    help="faults for a route, e.g. upload:503,reset")  # fmt: skip
    args = ap.parse_args(argv)
    api = FakeBigQuery(args.dataset or ["proj-1.sales"], verbose=True)
    for spec in args.fail:
        route, faults = spec.split(":", 1)
        api.fail(route, *(int(f) if f.isdigit() else f for f in faults.split(",")))
    api.start(args.port)
    print(f"BigQuery API stand-in on {api.url} (datasets: {', '.join(sorted(api.datasets))})", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        api.stop()


if __name__ == "__main__":
    main()
