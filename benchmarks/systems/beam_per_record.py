"""The ``events`` spec written the way Beam tutorials do it: one Python dict per record.

    python -m benchmarks.systems.beam_per_record --input 'DIR/*.jsonl' --format jsonl --output OUT

Reads with Beam's own IO (``ReadFromTextWithFilename`` for jsonl/csv, ``ReadAllFromParquet`` /
``ReadAllFromAvro`` for the typed formats, which yield one dict per row), validates and
normalises each record in plain Python in a ``DoFn`` (dead letters on a tagged output),
deduplicates by ``event_id`` with ``CombinePerKey`` (earliest ``ts``, ties by the smallest raw
text), then assigns event-time timestamps, windows into ``FixedWindows(3600)`` and aggregates
per (event_type, country) with another ``CombinePerKey``. Both combines are ``CombineFn``s, so
the runner lifts them into partial combines before the shuffle.

Writes ``OUT/curated/part-*.parquet``, ``OUT/aggregates/part-*.parquet`` (``WriteToParquet``)
and ``OUT/dlq/part-*.jsonl``. Runs on Beam's in-process FnApiRunner (the DirectRunner default
would try to download prism). Shares no code with the project's transforms.

Limitations (the project handles these, datagen never produces them): a CSV record whose quoted
field spans several lines is read line by line (so dead-lettered), and the CSV header must be
each file's first line.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import shutil
import sys
import time
from datetime import date, datetime, timedelta, timezone

import apache_beam as beam
import pyarrow as pa
from apache_beam.coders import BytesCoder
from apache_beam.io.avroio import ReadAllFromAvro
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.parquetio import ReadAllFromParquet, WriteToParquet
from apache_beam.io.textio import ReadFromTextWithFilename, WriteToText
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.transforms.window import FixedWindows, TimestampedValue
from apache_beam.utils.timestamp import Timestamp

FORMATS = ("jsonl", "csv", "avro", "parquet")
DECLARED = ("event_id", "user_id", "event_type", "amount", "currency", "ts", "email", "country")
EVENT_TYPES = frozenset(("view", "click", "add_to_cart", "purchase", "refund"))
PAID_TYPES = frozenset(("purchase", "refund"))
WINDOW_SECONDS = 3600
DEAD = "dead_letters"

NUMBER_RE = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", re.ASCII)
INT_RE = re.compile(r"[+-]?\d+", re.ASCII)
CURRENCY_RE = re.compile(r"[A-Za-z]{3}", re.ASCII)
ISO_RE = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})"
    r"(?:[T ](?P<hm>\d{2}:\d{2})(?::(?P<s>\d{2})(?:\.(?P<frac>\d+))?)?"
    r"(?P<tz>Z|[+-]\d{2}(?::?\d{2})?)?)?",
    re.ASCII,
)
EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
COUNTRY_RE = re.compile(r"[A-Z]{2}", re.ASCII)

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_US = timedelta(microseconds=1)
TS_MIN_US = 946_684_800_000_000  # 2000-01-01T00:00:00Z
TS_MAX_US = 4_102_444_800_000_000  # 2100-01-01T00:00:00Z
US_PER_HOUR = 3_600_000_000
US_PER_DAY = 86_400_000_000

TS_TYPE = pa.timestamp("us", tz="UTC")
CURATED_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("user_id", pa.string()),
        ("event_type", pa.string()),
        ("amount", pa.float64()),
        ("currency", pa.string()),
        ("ts", TS_TYPE),
        ("email", pa.string()),
        ("email_domain", pa.string()),
        ("country", pa.string()),
        ("hour_of_day", pa.int32()),
        ("day_of_week", pa.int32()),
        ("is_weekend", pa.bool_()),
        ("extras", pa.string()),
    ]
)
AGGREGATE_SCHEMA = pa.schema(
    [
        ("window_start", TS_TYPE),
        ("window_end", TS_TYPE),
        ("event_type", pa.string()),
        ("country", pa.string()),
        ("events", pa.int64()),
        ("users", pa.int64()),
        ("amount_sum", pa.float64()),
    ]
)


class Invalid(Exception):
    """A record that fails a rule: its dead-letter reason, field and message."""

    def __init__(self, reason: str, field: str | None, error: str):
        super().__init__(error)
        self.reason, self.field, self.error = reason, field, error


def dead_letter(stage: str, reason: str, field: str | None, error: str, raw: str, source: str) -> dict:
    return {"stage": stage, "reason": reason, "field": field, "error": error, "raw": raw, "source": source}


# ---------------------------------------------------------------- field rules (one record at a time)


def _id(rec: dict, name: str) -> str:
    v = rec.get(name)
    if v is None:
        raise Invalid("missing_field", name, f"{name} is missing")
    if type(v) is int:
        return str(v)
    if type(v) is str:
        s = v.strip()
        if not s:
            raise Invalid("invalid_value", name, f"{name} is empty")
        return s
    raise Invalid("invalid_value", name, f"{name} must be a string or an integer")


def _event_type(rec: dict) -> str:
    v = rec.get("event_type")
    if v is None:
        raise Invalid("missing_field", "event_type", "event_type is missing")
    if type(v) is str:
        s = v.strip().lower()
        if s in EVENT_TYPES:
            return s
    raise Invalid("invalid_value", "event_type", "unknown event_type")


def _amount(rec: dict, event_type: str) -> float | None:
    v = rec.get("amount")
    if v is None:
        if event_type in PAID_TYPES:
            raise Invalid("missing_field", "amount", f"amount is required for {event_type}")
        return None
    try:
        if type(v) is float or type(v) is int:
            x = float(v)
        elif type(v) is str and NUMBER_RE.fullmatch(v.strip()):
            x = float(v.strip())
        else:
            raise Invalid("invalid_value", "amount", "amount is not a number")
    except OverflowError:  # an integer beyond float range
        x = math.inf
    if math.isnan(x) or math.isinf(x):
        raise Invalid("invalid_value", "amount", "amount is not finite")
    if x < 0:
        raise Invalid("invalid_value", "amount", "amount is negative")
    return math.floor(x * 100 + 0.5) / 100


def _currency(rec: dict) -> str:
    v = rec.get("currency")
    if v is None:
        return "USD"
    if type(v) is str and CURRENCY_RE.fullmatch(v.strip()):
        return v.strip().upper()
    raise Invalid("invalid_value", "currency", "currency must be 3 letters")


def _epoch_int_us(n: int) -> int:
    return n * 1000 if n >= 10**11 else n * 1_000_000


def _epoch_float_us(x: float) -> int:
    if math.isnan(x) or math.isinf(x) or abs(x) > 1e12:
        raise ValueError("epoch out of range")
    return round(x * 1_000_000)


def _iso_us(s: str) -> int:
    m = ISO_RE.fullmatch(s)
    if not m:
        raise ValueError("not ISO-8601")
    text = m["date"]
    if m["hm"]:
        text += "T" + m["hm"] + ":" + (m["s"] or "00")
        if m["frac"]:
            text += "." + m["frac"][:6].ljust(6, "0")
        tz = m["tz"]
        if tz and tz != "Z":
            digits = tz[1:].replace(":", "")
            text += tz[0] + digits[:2] + ":" + (digits[2:] or "00")
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - EPOCH) // ONE_US


def _ts_us(rec: dict) -> int:
    """Event time as epoch microseconds (UTC)."""
    v = rec.get("ts")
    if v is None:
        raise Invalid("missing_field", "ts", "ts is missing")
    try:
        t = type(v)
        if t is int:
            us = _epoch_int_us(v)
        elif t is float:
            us = _epoch_float_us(v)
        elif t is str:
            s = v.strip()
            if INT_RE.fullmatch(s):
                us = _epoch_int_us(int(s))
            elif NUMBER_RE.fullmatch(s):
                us = _epoch_float_us(float(s))
            else:
                us = _iso_us(s)
        elif isinstance(v, datetime):  # typed formats (parquet, avro): a timestamp column
            us = ((v if v.tzinfo else v.replace(tzinfo=UTC)) - EPOCH) // ONE_US
        elif isinstance(v, date) and t is not bool:
            us = (v - date(1970, 1, 1)).days * US_PER_DAY
        else:
            raise ValueError(f"unsupported ts type {t.__name__}")
    except (ValueError, OverflowError) as exc:
        raise Invalid("invalid_value", "ts", f"unparseable ts: {exc}") from None
    if not TS_MIN_US <= us < TS_MAX_US:
        raise Invalid("invalid_value", "ts", "ts outside [2000-01-01, 2100-01-01)")
    return us


def _as_text(v) -> str | None:
    if v is None or type(v) is str:
        return v
    if type(v) is int:
        return str(v)
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False, default=str)


def _email(v) -> tuple[str | None, bool]:
    """(cleansed email, whether it was present but invalid)."""
    s = _as_text(v)
    if s is None:
        return None, False
    s = s.strip().lower()
    return (s, False) if EMAIL_RE.fullmatch(s) else (None, True)


def _country(v) -> tuple[str | None, bool]:
    s = _as_text(v)
    if s is None:
        return None, False
    s = s.strip().upper()
    return (s, False) if COUNTRY_RE.fullmatch(s) else (None, True)


def _reject_constant(name: str):
    raise ValueError(f"not JSON: {name}")


def _raw_text(record: dict) -> str:
    """The text a typed (parquet/avro) row is ordered by when two copies tie on ts."""
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False, default=str)


# ---------------------------------------------------------------- DoFns


class ParseJsonLines(beam.DoFn):
    """(source, line bytes) -> (record dict, raw text, source); malformed lines to ``DEAD``."""

    def setup(self):
        self.read = Metrics.counter("events", "read")
        self.malformed = Metrics.counter("events", "malformed")

    def process(self, element):
        source, line = element
        if line.strip():  # blank lines are skipped and not counted
            yield from self._parse(line, source)

    def _parse(self, line: bytes, source: str):
        self.read.inc()
        try:
            raw = line.decode("utf-8")
            rec = json.loads(raw, parse_constant=_reject_constant)
            if type(rec) is not dict:
                raise ValueError("not a JSON object")
            json.dumps(rec, ensure_ascii=False).encode("utf-8")  # a lone surrogate cannot be stored
        except (ValueError, RecursionError) as exc:  # UnicodeError is a ValueError
            self.malformed.inc()
            text = line.decode("utf-8", errors="backslashreplace")
            yield beam.pvalue.TaggedOutput(DEAD, dead_letter("parse", "malformed", None, str(exc), text, source))
        else:
            yield rec, raw, source


class ParseCsvLines(beam.DoFn):
    """(source, row bytes) -> (record dict, raw text, source), by each file's header.

    Every CSV value is text; an empty value is null (CSV cannot tell it from a missing one).
    Undeclared columns with a value become extras.
    """

    def __init__(self, headers: dict[str, list[str]]):
        self._headers = headers

    def setup(self):
        self.read = Metrics.counter("events", "read")
        self.malformed = Metrics.counter("events", "malformed")

    def process(self, element):
        source, line = element
        if line.strip():  # blank lines are skipped and not counted
            yield from self._parse(line, source)

    def _parse(self, line: bytes, source: str):
        self.read.inc()
        header = self._headers[source]
        try:
            raw = line.decode("utf-8")
            values = next(csv.reader([raw], strict=True))
            if len(values) != len(header):
                raise ValueError(f"expected {len(header)} columns, got {len(values)}")
        except (ValueError, csv.Error, StopIteration) as exc:
            self.malformed.inc()
            text = line.decode("utf-8", errors="backslashreplace")
            yield beam.pvalue.TaggedOutput(DEAD, dead_letter("parse", "malformed", None, str(exc), text, source))
        else:
            yield {name: value or None for name, value in zip(header, values) if value or name in DECLARED}, raw, source


class KeepTypedRow(beam.DoFn):
    """(source, row dict) from a typed reader -> (record dict, raw text, source)."""

    def setup(self):
        self.read = Metrics.counter("events", "read")

    def process(self, element):
        source, rec = element
        self.read.inc()
        yield rec, _raw_text(rec), source


class ValidateAndCleanse(beam.DoFn):
    """(record, raw, source) -> (event_id, (ts_us, raw, curated row)); invalid records to ``DEAD``.

    Required fields are checked in declared order (the first failure names the dead letter);
    email and country are cleansed (null when invalid, counted, never dead-lettered).
    """

    def setup(self):
        self.dead = Metrics.counter("events", "dead_lettered_validate")
        self.valid = Metrics.counter("events", "valid")
        self.bad_email = Metrics.counter("events", "invalid_email")
        self.bad_country = Metrics.counter("events", "invalid_country")

    def process(self, element):
        rec, raw, source = element
        try:
            row = self._curated_row(rec)
        except Invalid as bad:
            self.dead.inc()
            yield beam.pvalue.TaggedOutput(DEAD, dead_letter("validate", bad.reason, bad.field, bad.error, raw, source))
        else:
            self.valid.inc()
            yield row["event_id"], (row["ts"], raw, row)

    def _curated_row(self, rec: dict) -> dict:
        """The curated row, or Invalid for the first failing required field (declared order)."""
        event_id = _id(rec, "event_id")
        user_id = _id(rec, "user_id")
        event_type = _event_type(rec)
        amount = _amount(rec, event_type)
        currency = _currency(rec)
        ts = _ts_us(rec)
        email, bad_email = _email(rec.get("email"))
        country, bad_country = _country(rec.get("country"))
        if bad_email:
            self.bad_email.inc()
        if bad_country:
            self.bad_country.inc()
        extras = {k: v for k, v in rec.items() if k not in DECLARED}
        day_of_week = (ts // US_PER_DAY + 3) % 7  # 1970-01-01 was a Thursday
        return {
            "event_id": event_id,
            "user_id": user_id,
            "event_type": event_type,
            "amount": amount,
            "currency": currency,
            "ts": ts,
            "email": email,
            "email_domain": email.rsplit("@", 1)[1] if email is not None else None,
            "country": country,
            "hour_of_day": ts // US_PER_HOUR % 24,
            "day_of_week": day_of_week,
            "is_weekend": day_of_week >= 5,
            "extras": json.dumps(extras, separators=(",", ":"), ensure_ascii=False, default=str) if extras else None,
        }


class EarliestCopy(beam.CombineFn):
    """Keeps the (ts_us, raw, row) with the smallest (ts_us, raw)."""

    def create_accumulator(self):
        return None

    def add_input(self, best, candidate):
        if best is None or (candidate[0], candidate[1]) < (best[0], best[1]):
            return candidate
        return best

    def merge_accumulators(self, accumulators):
        best = None
        for acc in accumulators:
            if acc is not None:
                best = self.add_input(best, acc)
        return best

    def extract_output(self, best):
        return best


class HourlyStats(beam.CombineFn):
    """(user_id, amount in cents) -> (events, distinct users, cents)."""

    def create_accumulator(self):
        return [0, set(), 0]

    def add_input(self, acc, value):
        user_id, cents = value
        acc[0] += 1
        acc[1].add(user_id)
        acc[2] += cents
        return acc

    def merge_accumulators(self, accumulators):
        out = [0, set(), 0]
        for events, users, cents in accumulators:
            out[0] += events
            out[1] |= users
            out[2] += cents
        return out

    def extract_output(self, acc):
        return acc[0], len(acc[1]), acc[2]


class ToAggregateRow(beam.DoFn):
    def process(self, element, window=beam.DoFn.WindowParam):
        (event_type, country), (events, users, cents) = element
        yield {
            "window_start": window.start.micros,
            "window_end": window.end.micros,
            "event_type": event_type,
            "country": country,
            "events": events,
            "users": users,
            "amount_sum": round(cents / 100, 2),
        }


def _by_type_and_country(row: dict):
    amount = row["amount"]
    return (row["event_type"], row["country"]), (row["user_id"], round(amount * 100) if amount is not None else 0)


# ---------------------------------------------------------------- pipeline


def csv_headers(pattern: str) -> dict[str, list[str]]:
    """Each matched file's header (its first line), read when the pipeline is built."""
    headers = {}
    for meta in FileSystems.match([pattern])[0].metadata_list:
        with FileSystems.open(meta.path) as fh:
            first = fh.readline().rstrip(b"\r\n")
        headers[meta.path] = [n.strip() for n in next(csv.reader([first.decode("utf-8", "replace")]), [])]
    return headers


def read_records(p: beam.Pipeline, pattern: str, fmt: str):
    """(records, dead letters): records are (dict, raw text, source) tuples."""
    if fmt == "jsonl":
        lines = p | "ReadLines" >> ReadFromTextWithFilename(pattern, coder=BytesCoder())
        parsed = lines | "ParseJson" >> beam.ParDo(ParseJsonLines()).with_outputs(DEAD, main="records")
        return parsed.records, parsed[DEAD]
    if fmt == "csv":
        lines = p | "ReadRows" >> ReadFromTextWithFilename(pattern, coder=BytesCoder(), skip_header_lines=1)
        parsed = lines | "ParseCsv" >> beam.ParDo(ParseCsvLines(csv_headers(pattern))).with_outputs(
            DEAD, main="records"
        )
        return parsed.records, parsed[DEAD]
    reader = ReadAllFromParquet(with_filename=True) if fmt == "parquet" else ReadAllFromAvro(with_filename=True)
    rows = p | "Pattern" >> beam.Create([pattern]) | "ReadRows" >> reader
    return rows | "KeepRaw" >> beam.ParDo(KeepTypedRow()), None


def build(p: beam.Pipeline, pattern: str, fmt: str, out: str) -> None:
    records, parse_dead = read_records(p, pattern, fmt)
    checked = records | "Validate" >> beam.ParDo(ValidateAndCleanse()).with_outputs(DEAD, main="valid")

    curated = (
        checked.valid
        | "EarliestPerEventId" >> beam.CombinePerKey(EarliestCopy())
        | "CuratedRow" >> beam.Map(lambda kv: kv[1][2])
    )
    curated | "WriteCurated" >> WriteToParquet(
        f"{out}/curated/part", CURATED_SCHEMA, codec="snappy", file_name_suffix=".parquet"
    )

    (
        curated
        | "EventTime" >> beam.Map(lambda row: TimestampedValue(row, Timestamp(micros=row["ts"])))
        | "HourlyWindows" >> beam.WindowInto(FixedWindows(WINDOW_SECONDS))
        | "KeyByTypeCountry" >> beam.Map(_by_type_and_country)
        | "HourlyStats" >> beam.CombinePerKey(HourlyStats())
        | "AggregateRow" >> beam.ParDo(ToAggregateRow())
        | "WriteAggregates"
        >> WriteToParquet(
            f"{out}/aggregates/part", AGGREGATE_SCHEMA, codec="snappy", file_name_suffix=".parquet", num_shards=1
        )
    )

    dead = [checked[DEAD]] + ([parse_dead] if parse_dead is not None else [])
    (
        dead
        | "AllDeadLetters" >> beam.Flatten()
        | "DeadLetterJson" >> beam.Map(lambda d: json.dumps(d, ensure_ascii=False))
        | "WriteDeadLetters" >> WriteToText(f"{out}/dlq/part", file_name_suffix=".jsonl")
    )


def _counter(result, name: str) -> int:
    found = result.metrics().query(MetricsFilter().with_namespace("events").with_name(name))["counters"]
    return sum(c.committed or 0 for c in found)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.systems.beam_per_record", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--input", required=True, help="File pattern, e.g. 'DIR/*.jsonl'.")
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--output", required=True, help="Output directory.")
    args, beam_args = parser.parse_known_args(argv)
    if not FileSystems.match([args.input])[0].metadata_list:
        print(f"error: no file matches {args.input!r}", file=sys.stderr)
        return 1
    out = args.output.rstrip("/")
    for sub in ("curated", "aggregates", "dlq"):
        shutil.rmtree(f"{out}/{sub}", ignore_errors=True)

    started = time.perf_counter()
    p = beam.Pipeline(runner=FnApiRunner(), options=PipelineOptions(beam_args))
    build(p, args.input, args.format, out)
    result = p.run()
    result.wait_until_finish()
    seconds = time.perf_counter() - started

    read = _counter(result, "read")
    valid = _counter(result, "valid")
    dead = _counter(result, "malformed") + _counter(result, "dead_lettered_validate")
    print(
        f"beam_per_record: read {read:,}, dead-lettered {dead:,}, valid {valid:,} "
        f"in {seconds:.1f} s ({read / max(seconds, 1e-9):,.0f} rows/s); outputs under {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
