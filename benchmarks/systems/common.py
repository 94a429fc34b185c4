"""What the peer systems share: the CLI, the spec's constants, and avro -> Arrow.

The regular expressions are written for both RE2 (DuckDB) and Rust's regex (Polars): ASCII digits
spelled ``[0-9]`` and Python's ``\\s`` spelled out, so both engines accept exactly what
``tests/reference_events.py`` accepts.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import sys
import time

import pyarrow as pa

FORMATS = ("jsonl", "csv", "avro", "parquet")
DECLARED = ("event_id", "user_id", "event_type", "amount", "currency", "ts", "email", "country")
EVENT_TYPES = ("view", "click", "add_to_cart", "purchase", "refund")
PAID_TYPES = ("purchase", "refund")

# What Python's str.strip() removes (str.isspace), and what bytes.strip() removes (blank lines).
WHITESPACE = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B)))
WHITESPACE += "\u2028\u2029\u202f\u205f\u3000"
ASCII_WHITESPACE = " \t\n\r\x0b\x0c"
_WS_CLASS = r"\t\n\x0b\x0c\r\x1c-\x1f \x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}"

NUMBER_RE = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$"
INT_RE = r"^[+-]?[0-9]+$"
ISO_RE = (
    r"^([0-9]{4}-[0-9]{2}-[0-9]{2})"
    r"(?:[T ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]+))?)?(Z|[+-][0-9]{2}(?::?[0-9]{2})?)?)?$"
)
ISO_GROUPS = ("date", "hh", "mi", "ss", "frac", "tz")
CURRENCY_RE = r"^[A-Za-z]{3}$"
EMAIL_RE = rf"^[^@{_WS_CLASS}]+@[^@{_WS_CLASS}]+\.[^@{_WS_CLASS}]+$"
COUNTRY_RE = r"^[A-Z]{2}$"
# Tokens a lenient JSON parser accepts and Python's json module rejects (checked outside strings).
NON_STRICT_JSON_RE = r"(?i)nan|inf|,[ \t\n\r]*[\]}]"
JSON_STRING_RE = r'"(?:[^"\\]|\\.)*"'

TS_MIN_US = 946_684_800_000_000  # 2000-01-01T00:00:00Z
TS_MAX_US = 4_102_444_800_000_000  # 2100-01-01T00:00:00Z
MILLIS_FROM = 10**11
HOUR_US = 3_600_000_000
DAY_US = 86_400_000_000

CURATED_COLUMNS = (
    "event_id", "user_id", "event_type", "amount", "currency", "ts", "email", "email_domain", "country",
    "hour_of_day", "day_of_week", "is_weekend", "extras",
)  # fmt: skip
AGG_COLUMNS = ("window_start", "window_end", "event_type", "country", "events", "users", "amount_sum")


def parse_args(
    prog: str,
    argv: list[str] | None = None,
    description: str = "The events pipeline (SPEC-events.md) as a peer system.",
    outputs: str = "curated/, aggregates/, _run/",
) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--input", required=True, help="Input file pattern (a local glob).")
    parser.add_argument("--format", required=True, choices=FORMATS, help="Input format.")
    parser.add_argument("--output", required=True, help=f"Output directory ({outputs}).")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="Worker threads (default: all cores).")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be >= 1")
    args.files = sorted(glob.glob(args.input, recursive=True))
    if not args.files:
        parser.error(f"no file matches {args.input!r}")
    return args


def prepare_output(out: str) -> None:
    for sub in ("curated", "aggregates", "_run"):
        shutil.rmtree(os.path.join(out, sub), ignore_errors=True)
    os.makedirs(os.path.join(out, "aggregates"), exist_ok=True)
    os.makedirs(os.path.join(out, "_run"), exist_ok=True)


def finish(system: str, args: argparse.Namespace, started: float, counts: dict) -> None:
    """Writes ``_run/report.json`` (counts and wall time) and prints a one-line summary."""
    seconds = time.perf_counter() - started
    report = {"system": system, "format": args.format, "threads": args.threads, "seconds": round(seconds, 3)}
    report["counts"] = {k: int(v) for k, v in counts.items()}
    with open(os.path.join(args.output, "_run", "report.json"), "w") as fh:
        json.dump(report, fh, indent=2, sort_keys=True)
    summary = ", ".join(f"{k} {v:,}" for k, v in report["counts"].items())
    print(f"{system}: {args.format} -> {args.output}: {summary} in {seconds:.2f}s", file=sys.stderr)


_AVRO_TYPES = {
    "string": pa.string(), "long": pa.int64(), "int": pa.int32(), "double": pa.float64(), "float": pa.float32(),
    "boolean": pa.bool_(), "timestamp-micros": pa.timestamp("us", tz="UTC"), "timestamp-millis": pa.timestamp("ms", tz="UTC"),
}  # fmt: skip


def _avro_arrow_type(t) -> pa.DataType | None:
    if isinstance(t, list):  # a union: the one non-null branch
        branches = [b for b in t if b != "null"]
        return _avro_arrow_type(branches[0]) if len(branches) == 1 else None
    if isinstance(t, dict):
        return _AVRO_TYPES.get(t.get("logicalType")) or _AVRO_TYPES.get(t.get("type"))
    return _AVRO_TYPES.get(t)


def read_avro(files: list[str]) -> pa.Table:
    """Avro files -> one Arrow table (typed by the writer schema), with a ``_source`` column."""
    import fastavro

    tables = []
    for path in files:
        with open(path, "rb") as fh:
            reader = fastavro.reader(fh)
            records = list(reader)
            fields = reader.writer_schema["fields"]
        columns = {}
        for f in fields:
            values = [r.get(f["name"]) for r in records]
            t = _avro_arrow_type(f["type"])
            columns[f["name"]] = pa.array(values, t) if t is not None else pa.array(values)
        columns["_source"] = pa.array([path] * len(records), pa.string())
        tables.append(pa.table(columns))
    return pa.concat_tables(tables, promote_options="permissive")
