"""The ``events`` spec with PySpark DataFrames on ``local[2]``.

    python -m benchmarks.systems.pyspark --input 'DIR/*.jsonl' --format jsonl --output OUT

Every rule is a DataFrame expression (no Python UDFs):

- jsonl: ``spark.read.text`` (``lineSep`` ``\\n``, so a lone ``\\r`` is not a line break), then one
  ``from_json`` per line into a ``map<string, variant>`` (null unless the line is a JSON object; the
  options make it as strict as ``json.loads``). Each declared field's Variant type gives its JSON
  kind (a string ``"7"`` and a number ``7`` follow different rules); values are cast with
  ``try_cast`` after a regex check. from_json ignores text after the first value, so the line with
  its strings blanked out must also hold exactly one object. ``is_valid_utf8`` finds undecodable
  lines.
- csv: read as text lines too, each file's header taken on the driver; a line is checked
  against strict CSV syntax (Python's ``csv`` with ``strict=True``) by regex, then split into
  fields with ``regexp_extract_all``. All values are text; an empty value is null.
- parquet: ``spark.read.parquet``, typed: each column's Spark type gives the value kind.
- avro: ``spark.read.format("avro")`` when spark-avro is on the classpath; otherwise (it is not
  bundled with pyspark, and packages cannot be fetched offline) fastavro -> Arrow -> Spark.

Deduplication is ``min_by`` per event_id on (ts, raw text); aggregates are a ``groupBy`` over
1-hour windows (epoch micros floored to the hour) with exact ``count_distinct``. Writes
``OUT/curated/dt=YYYY-MM-DD/*.parquet`` (TIMESTAMP_MICROS), ``OUT/dlq/*.json`` and
``OUT/aggregates/part-0.parquet`` (collected with ``toArrow`` and written with pyarrow, so the
column types are exact: timestamp[us, UTC], int64, float64).

Repeat ``--input/--format/--output`` to run several jobs in one Spark session (one JVM start).

Limitations (datagen never produces these): a CSV record whose quoted field spans several lines is
read line by line (so dead-lettered), a CSV data line that is byte-for-byte its file's header line
is dropped as a header, and nested objects in jsonl ``extras`` come out with their keys sorted
(Variant order) rather than as written.
"""

from __future__ import annotations

import argparse
import csv
import glob
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

FORMATS = ("jsonl", "csv", "avro", "parquet")
DECLARED = ("event_id", "user_id", "event_type", "amount", "currency", "ts", "email", "country")
EVENT_TYPES = ("view", "click", "add_to_cart", "purchase", "refund")
PAID_TYPES = ("purchase", "refund")
TS_MIN_US = 946_684_800_000_000  # 2000-01-01T00:00:00Z
TS_MAX_US = 4_102_444_800_000_000  # 2100-01-01T00:00:00Z
HOUR_US = 3_600_000_000
DAY_US = 86_400_000_000

# The characters Python's str.strip() removes (str.isspace()), for btrim.
WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
# Java regexes.
BLANK_RE = r"^[ \t\n\r\x0b\x0c]*$"  # bytes.strip() whitespace
NUMBER_RE = r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\z"
INT_RE = r"^[+-]?\d+\z"
ISO_RE = r"^(\d{4}-\d{2}-\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?(Z|([+-])(\d{2})(?::?(\d{2}))?)?)?\z"
CURRENCY_RE = r"^[A-Za-z]{3}\z"
EMAIL_RE = r"(?U)^[^@\s\x1c-\x1f]+@[^@\s\x1c-\x1f]+\.[^@\s\x1c-\x1f]+\z"
COUNTRY_RE = r"^[A-Z]{2}\z"
JSON_STRING_RE = r'(?s)"(?:[^"\\]++|\\.)*+"'
ISO_PARTS = "$1|$2|$3|$4|$5|$6|$7|$8|$9"
ONE_OBJECT_RE = r"(?s)^[ \t\r\n]*\{.*\}[ \t\r\n]*\z"
# A CSV line behind a leading comma: fields are quoted ("" escapes a quote, nothing may follow
# the closing quote) or unquoted (no line breaks; a quote is literal unless it comes first).
CSV_LINE_RE = r'^(?:,(?:"(?:[^"]++|"")*+"|[^,"\r\n][^,\r\n]*+|))*+\z'
CSV_FIELD_RE = r'\G,("(?:[^"]++|"")*+"|[^,]*+)'

AGGREGATE_SCHEMA = pa.schema(
    [
        ("window_start", pa.timestamp("us", tz="UTC")),
        ("window_end", pa.timestamp("us", tz="UTC")),
        ("event_type", pa.string()),
        ("country", pa.string()),
        ("events", pa.int64()),
        ("users", pa.int64()),
        ("amount_sum", pa.float64()),
    ]
)
# Errors only. org.apache has its own entry so that Spark does not announce a change of log level.
LOG4J2 = """rootLogger.level = error
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n
logger.apache.name = org.apache
logger.apache.level = error
logger.sparkproject.name = org.sparkproject
logger.sparkproject.level = error
logger.netty.name = io.netty
logger.netty.level = error
"""


def spark_session() -> SparkSession:
    log_conf = os.path.join(tempfile.mkdtemp(prefix="events-spark-"), "log4j2.properties")
    with open(log_conf, "w") as fh:
        fh.write(LOG4J2)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = (
        SparkSession.builder.master("local[2]")
        .appName("events-pyspark")
        .config("spark.driver.memory", "4g")
        # The validation stage compiles to one large method; let HotSpot JIT-compile it anyway.
        .config(
            "spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile=file:{log_conf} -XX:-DontCompileHugeMethods"
        )
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", "8")
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        .config("spark.sql.variant.allowDuplicateKeys", "true")  # nested objects: like json.loads, the last wins
        .config("spark.sql.mapKeyDedupPolicy", "LAST_WIN")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


# ---------------------------------------------------------------- readers -> one frame of field slots
#
# Every reader yields: for each declared field f, `f__k` (kind: missing, null, str, int, float,
# bool, ts, other), `f__s` (text), `f__n` (double, for numbers) and `f__t` (epoch micros, for typed
# timestamps); plus `ok` (parsed), `raw` (record text), `source` and `extras` (JSON or null).


def _trim(c: Column) -> Column:
    return F.btrim(c, F.lit(WHITESPACE))


def _slots(f: str, kind: Column, text: Column, num: Column | None = None, ts: Column | None = None) -> list[Column]:
    return [
        kind.alias(f"{f}__k"),
        text.alias(f"{f}__s"),
        (num if num is not None else F.lit(None).cast("double")).alias(f"{f}__n"),
        (ts if ts is not None else F.lit(None).cast("long")).alias(f"{f}__t"),
    ]


def _lines(spark: SparkSession, paths: list[str]) -> DataFrame:
    """Non-blank lines without their line ending, with ``utf8`` (valid UTF-8) and ``source``."""
    return (
        spark.read.option("lineSep", "\n")
        .text(paths)
        .select(
            F.is_valid_utf8("value").alias("utf8"),
            F.regexp_replace("value", "\r$", "").alias("line"),
            F.col("_metadata.file_path").alias("source"),
        )
        .where(~F.col("line").rlike(BLANK_RE))
    )


def read_jsonl(spark: SparkSession, pattern: str) -> DataFrame:
    line = F.col("line")
    # One parse per line: a map of Variants is null unless the line is a JSON object (the options
    # make it as strict as json.loads); map_from_entries applies LAST_WIN to repeated keys.
    strict = {"allowNonNumericNumbers": "false", "allowSingleQuotes": "false", "mode": "PERMISSIVE"}
    docs = _lines(spark, [pattern]).select(
        "utf8",
        "line",
        "source",
        F.map_from_entries(F.map_entries(F.from_json(line, "map<string, variant>", strict))).alias("fields"),
        # from_json ignores what follows the first value: with strings blanked out, the line must
        # be one {...} whose brackets only balance at its last character.
        F.regexp_replace(line, JSON_STRING_RE, "s").alias("shape"),
    )
    brackets = F.regexp_replace("shape", r"[^\[\]{}]", "")
    typed = docs.select(
        "utf8",
        "line",
        "source",
        "shape",
        brackets.alias("brackets"),
        F.map_filter("fields", lambda k, _: ~k.isin(*DECLARED)).alias("undeclared"),
        F.col("fields").isNotNull().alias("parsed"),
        *[F.col("fields")[f].alias(f"{f}__v") for f in DECLARED],
    )

    def step(c: Column) -> Column:
        return F.when(c.isin("{", "["), 1).otherwise(-1)

    closes_last = F.aggregate(
        F.slice(F.split("brackets", ""), 1, F.greatest(F.length("brackets") - 1, F.lit(0))),
        F.struct(F.lit(0).alias("d"), F.lit(True).alias("ok")),
        lambda acc, c: F.struct((acc.d + step(c)).alias("d"), (acc.ok & (acc.d + step(c) > 0)).alias("ok")),
        lambda acc: acc.ok,
    )
    numeric = r"^(BIGINT|INT|SMALLINT|TINYINT|DECIMAL.*|DOUBLE|FLOAT)$"
    texts = []
    for f in DECLARED:
        v = F.col(f"{f}__v")
        t = F.schema_of_variant(v)
        text = F.variant_get(v, "$", "string")
        if f in ("event_id", "user_id", "ts"):
            # Whether a number is an integer is in its JSON text (the Variant turns 2.0 into DECIMAL(1,0) and
            # integers beyond 38 digits into DOUBLE): read the literal for these fields.
            text = F.when(t.rlike(numeric), F.get_json_object(line, f"$.{f}")).otherwise(text)
        texts += [t.alias(f"{f}__vt"), text.alias(f"{f}__s")]
        if f in ("amount", "ts"):
            texts.append(F.try_variant_get(v, "$", "double").alias(f"{f}__n"))
    typed = typed.select("utf8", "line", "source", "shape", "brackets", "undeclared", "parsed", *texts)
    slots = []
    for f in DECLARED:
        t, text = F.col(f"{f}__vt"), F.col(f"{f}__s")
        kind = (
            F.when(t.isNull(), "missing")
            .when(t == "VOID", "null")
            .when(t == "STRING", "str")
            .when(t == "BOOLEAN", "bool")
            .when(~t.rlike(numeric), "other")
            .when(text.rlike(r"^-?[0-9]+$"), "int")
            .otherwise("float")
        )
        slots += _slots(f, kind, text, F.col(f"{f}__n") if f in ("amount", "ts") else None)
    ok = F.col("utf8") & F.col("parsed") & F.col("shape").rlike(ONE_OBJECT_RE) & closes_last
    return typed.select(
        ok.alias("ok"),
        F.when(F.col("utf8"), line).otherwise(F.make_valid_utf8(line)).alias("raw"),
        "source",
        F.when(F.size("undeclared") > 0, F.to_json("undeclared")).alias("extras"),
        *slots,
    )


def _csv_header(path: str) -> tuple[bytes, list[str]] | None:
    with open(path, "rb") as fh:
        for line in fh:
            line = line.rstrip(b"\n").rstrip(b"\r")
            if line.strip():
                return line, [n.strip() for n in next(csv.reader([line.decode("utf-8", "replace")]))]
    return None


def read_csv(spark: SparkSession, pattern: str) -> DataFrame:
    by_header: dict[tuple[bytes, tuple[str, ...]], list[str]] = defaultdict(list)
    for path in sorted(glob.glob(pattern)):
        header = _csv_header(path)
        if header is not None:
            by_header[(header[0], tuple(header[1]))].append(path)
    frames = []
    for (header_line, names), paths in by_header.items():
        lines = _lines(spark, paths).where(F.col("line") != header_line.decode("utf-8", "replace"))
        line = F.concat(F.lit(","), F.col("line"))
        cells = F.transform(
            F.regexp_extract_all(line, F.lit(CSV_FIELD_RE), 1),
            lambda x: F.when(
                x.startswith('"'), F.replace(F.substring(x, F.lit(2), F.length(x) - 2), F.lit('""'), F.lit('"'))
            ).otherwise(x),
        )
        rows = lines.select("utf8", "line", "source", cells.alias("cells"), line.rlike(CSV_LINE_RE).alias("strict"))
        value = {n: F.nullif(F.get("cells", i), F.lit("")) for i, n in enumerate(names)}
        slots = []
        for f in DECLARED:
            if f in value:
                slots += _slots(f, F.when(value[f].isNull(), "null").otherwise("str"), value[f])
            else:
                slots += _slots(f, F.lit("missing"), F.lit(None).cast("string"))
        undeclared = [n for n in names if n not in DECLARED]
        extras = F.lit(None).cast("string")
        if undeclared:
            kv = F.map_filter(
                F.create_map(*[c for n in undeclared for c in (F.lit(n), value[n])]), lambda _, v: v.isNotNull()
            )
            extras = F.when(F.size(kv) > 0, F.to_json(kv))
        ok = F.col("utf8") & F.col("strict") & (F.size("cells") == len(names))
        frames.append(
            rows.select(
                ok.alias("ok"),
                F.when(F.col("utf8"), F.col("line")).otherwise(F.make_valid_utf8("line")).alias("raw"),
                "source",
                extras.alias("extras"),
                *slots,
            )
        )
    if not frames:
        raise SystemExit(f"error: no file matches {pattern!r}")
    out = frames[0]
    for frame in frames[1:]:
        out = out.unionByName(frame)
    return out


def typed_frame(df: DataFrame) -> DataFrame:
    """Slots from a typed (parquet, avro) frame: each column's type gives its kind."""
    columns = [c for c in df.columns if c != "_source"]
    types = {f.name: f.dataType for f in df.schema.fields}
    slots = []
    for f in DECLARED:
        if f not in types:
            slots += _slots(f, F.lit("missing"), F.lit(None).cast("string"))
            continue
        c, t = F.col(f"`{f}`"), types[f]
        if isinstance(t, T.StringType):
            slots += _slots(f, F.when(c.isNull(), "null").otherwise("str"), c)
        elif isinstance(t, T.IntegralType):
            slots += _slots(f, F.when(c.isNull(), "null").otherwise("int"), c.cast("string"), c.cast("double"))
        elif isinstance(t, (T.FloatType, T.DoubleType, T.DecimalType)):
            slots += _slots(f, F.when(c.isNull(), "null").otherwise("float"), c.cast("string"), c.cast("double"))
        elif isinstance(t, T.BooleanType):
            slots += _slots(f, F.when(c.isNull(), "null").otherwise("bool"), c.cast("string"))
        elif isinstance(t, (T.TimestampType, T.TimestampNTZType, T.DateType)):
            micros = F.unix_micros(c.cast("timestamp"))
            slots += _slots(f, F.when(c.isNull(), "null").otherwise("ts"), c.cast("string"), ts=micros)
        else:
            slots += _slots(f, F.when(c.isNull(), "null").otherwise("other"), F.to_json(F.struct(c)))
    undeclared = [c for c in columns if c not in DECLARED]
    extras = F.lit(None).cast("string")
    if undeclared:
        # Like json.dumps of the undeclared fields: nulls are kept; null when there are none.
        extras = F.to_json(F.struct(*[F.col(f"`{c}`") for c in undeclared]), {"ignoreNullFields": "false"})
    source = F.col("_source") if "_source" in df.columns else F.col("_metadata.file_path")
    return df.select(
        F.lit(True).alias("ok"),
        F.to_json(F.struct(*[F.col(f"`{c}`") for c in columns]), {"ignoreNullFields": "false"}).alias("raw"),
        source.alias("source"),
        extras.alias("extras"),
        *slots,
    )


def read_avro(spark: SparkSession, pattern: str) -> tuple[DataFrame, str]:
    try:
        return typed_frame(spark.read.format("avro").load(pattern)), "spark-avro"
    except Exception as exc:  # noqa: BLE001 - AnalysisException: the data source is not on the classpath
        if "avro" not in str(exc).lower():
            raise
    import fastavro

    tables = []
    for path in sorted(glob.glob(pattern)):
        with open(path, "rb") as fh:
            table = pa.Table.from_pylist(list(fastavro.reader(fh)))
        tables.append(table.append_column("_source", pa.array([path] * table.num_rows, pa.string())))
    table = pa.concat_tables(tables, promote_options="permissive")
    table = table.cast(pa.schema([f.with_type(pa.string()) if pa.types.is_null(f.type) else f for f in table.schema]))
    return typed_frame(spark.createDataFrame(table)), "fastavro -> Arrow -> Spark"


# ---------------------------------------------------------------- validation and cleansing
#
# In stages (one select each), so every expression is built once and referenced by name.


def validate(parsed: DataFrame) -> DataFrame:
    """Normalised fields, ``reason``/``field`` of the first failing rule, cleansing flags."""

    def k(f: str) -> Column:
        return F.col(f"{f}__k")

    def absent(f: str) -> Column:
        return k(f).isin("missing", "null")

    keep = [F.col(c) for c in ("ok", "raw", "source", "extras")]
    # 1. trimmed texts, and which form ts takes
    trimmed = parsed.select(
        *keep,
        *[F.col(c) for c in parsed.columns if c.endswith(("__k", "__n", "__t"))],
        *[_trim(F.col(f"{f}__s")).alias(f"{f}__s") for f in DECLARED[:6]],
        F.lower(_trim(F.col("email__s"))).alias("email__s"),
        F.col("email__s").isNotNull().alias("email__present"),
        F.upper(_trim(F.col("country__s"))).alias("country__s"),
        F.col("country__s").isNotNull().alias("country__present"),
    )
    # 2. the forms ts and amount take, and the regex checks (each computed once)
    s = {f: F.col(f"{f}__s") for f in DECLARED}
    ts_s = s["ts"]
    is_str = k("ts") == "str"
    int_text = F.when(k("ts") == "int", ts_s).when(is_str & ts_s.rlike(INT_RE), ts_s)
    amount_numeric = k("amount").isin("int", "float")
    amount_text = (k("amount") == "str") & s["amount"].rlike(NUMBER_RE)
    staged = trimmed.select(
        "*",
        int_text.try_cast("decimal(38,0)").alias("ts__int"),
        F.when(k("ts") == "float", F.col("ts__n"))
        .when(is_str & ~ts_s.rlike(INT_RE) & ts_s.rlike(NUMBER_RE), ts_s.try_cast("double"))
        .alias("ts__float"),
        F.when(is_str & ts_s.rlike(ISO_RE), F.split(F.regexp_replace(ts_s, ISO_RE, ISO_PARTS), r"\|")).alias("ts__iso"),
        F.when(amount_numeric, F.col("amount__n")).when(amount_text, s["amount"].try_cast("double")).alias("amount__x"),
        (amount_numeric | amount_text).alias("amount__numeric"),
        s["currency"].rlike(CURRENCY_RE).alias("currency__ok"),
        s["email"].rlike(EMAIL_RE).alias("email__ok"),
        s["country"].rlike(COUNTRY_RE).alias("country__ok"),
    )
    staged = staged.select("*", *_iso_fields(F.col("ts__iso")))
    ts_us = F.coalesce(
        F.when(k("ts") == "ts", F.col("ts__t")),
        _epoch_int_micros(F.col("ts__int")),
        _epoch_float_micros(F.col("ts__float")),
        _iso_micros(),
    )
    staged = staged.select("*", ts_us.alias("ts__us"))
    # 3. values and per-field reasons (null when fine)
    x = F.col("amount__x")
    y = x * 100 + 0.5  # half away from zero on x * 100, like floor(x * 100 + 0.5) / 100
    ts_us = F.col("ts__us")
    email_ok, country_ok = F.col("email__ok"), F.col("country__ok")
    values = staged.select(
        *keep,
        F.when(k("event_id") == "int", s["event_id"]).when(k("event_id") == "str", s["event_id"]).alias("event_id"),
        F.when(k("user_id") == "int", s["user_id"]).when(k("user_id") == "str", s["user_id"]).alias("user_id"),
        F.lower(s["event_type"]).alias("event_type"),
        x.alias("x"),
        F.when(y < 9e18, F.floor(y).cast("double")).otherwise(x * 100).alias("cents"),
        F.when(absent("currency"), F.lit("USD")).otherwise(F.upper(s["currency"])).alias("currency"),
        F.when((ts_us >= TS_MIN_US) & (ts_us < TS_MAX_US), ts_us).alias("ts_us"),
        F.when(email_ok, s["email"]).alias("email"),
        F.when(country_ok, s["country"]).alias("country"),
        (F.col("email__present") & ~email_ok).alias("bad_email"),
        (F.col("country__present") & ~country_ok).alias("bad_country"),
        *[F.when(absent(f), "missing_field").alias(f"{f}__r") for f in ("event_id", "user_id", "event_type", "ts")],
        *[k(f).alias(f"{f}__k") for f in ("event_id", "user_id", "event_type", "amount", "currency")],
        "amount__numeric",
        "currency__ok",
    )
    x = F.col("x")
    reasons = {
        f: F.coalesce(
            F.col(f"{f}__r"),
            F.when(~((k(f) == "int") | ((k(f) == "str") & (F.length(f) > 0))), "invalid_value"),
        )
        for f in ("event_id", "user_id")
    }
    reasons["event_type"] = F.coalesce(
        F.col("event_type__r"),
        F.when(~((k("event_type") == "str") & F.col("event_type").isin(*EVENT_TYPES)), "invalid_value"),
    )
    finite = x.isNotNull() & ~F.isnan(x) & (F.abs(x) != float("inf"))
    reasons["amount"] = (
        F.when(absent("amount") & F.col("event_type").isin(*PAID_TYPES), "missing_field")
        .when(absent("amount"), None)
        .when(~F.col("amount__numeric") | ~finite | (x < 0), "invalid_value")
    )
    reasons["currency"] = F.when(
        ~absent("currency") & ~((k("currency") == "str") & F.col("currency__ok")), "invalid_value"
    )
    reasons["ts"] = F.coalesce(F.col("ts__r"), F.when(F.col("ts_us").isNull(), "invalid_value"))
    # 4. the first failing rule in declared order
    checked = values.select(
        *keep,
        "event_id",
        "user_id",
        "event_type",
        F.when(x.isNotNull(), F.col("cents") / 100).alias("amount"),
        "currency",
        "ts_us",
        "email",
        "country",
        "bad_email",
        "bad_country",
        *[r.alias(f"{f}__r") for f, r in reasons.items()],
    )
    reason = F.coalesce(*[F.col(f"{f}__r") for f in reasons])
    field = F.coalesce(*[F.when(F.col(f"{f}__r").isNotNull(), F.lit(f)) for f in reasons])
    return checked.select(
        *keep,
        "event_id",
        "user_id",
        "event_type",
        "amount",
        "currency",
        "ts_us",
        "email",
        "country",
        F.when(F.col("ok"), reason).otherwise("malformed").alias("reason"),
        F.when(F.col("ok"), field).alias("field"),
        "bad_email",
        "bad_country",
    )


def _epoch_int_micros(n: Column) -> Column:
    """Integer epoch seconds, or milliseconds from 10^11 on (a decimal(38,0)); null when outside the range."""
    in_ms = (n >= 10**11) & (n >= TS_MIN_US // 1000) & (n < TS_MAX_US // 1000)
    in_s = (n < 10**11) & (n >= TS_MIN_US // 1_000_000) & (n < TS_MAX_US // 1_000_000)
    return F.when(in_ms, n.cast("long") * 1000).when(in_s, n.cast("long") * 1_000_000)


def _epoch_float_micros(x: Column) -> Column:
    ok = x.isNotNull() & ~F.isnan(x) & (F.abs(x) <= 1e12)
    return F.when(ok, F.rint(x * 1_000_000).cast("long"))


def _iso_fields(parts: Column) -> list[Column]:
    """ISO-8601 parts (date, hour, minute, second, fraction, zone, sign, offset h, offset m) -> ``iso_day``
    (days since the epoch), ``iso_time`` (micros of the day), ``iso_offset`` (minutes) and ``iso_ok``."""

    def number(i: int) -> Column:
        return F.coalesce(F.nullif(F.get(parts, i), F.lit("")).cast("long"), F.lit(0).cast("long"))

    day = F.unix_date(F.try_to_date(F.get(parts, 0), "yyyy-MM-dd"))
    hour, minute, second = number(1), number(2), number(3)
    offset = number(7) * 60 + number(8)
    return [
        day.alias("iso_day"),
        (
            ((hour * 60 + minute) * 60 + second) * 1_000_000
            + F.rpad(F.substring(F.get(parts, 4), 1, 6), 6, "0").cast("long")
        ).alias("iso_time"),
        F.when(F.get(parts, 6) == "-", -offset).otherwise(offset).alias("iso_offset"),
        (day.isNotNull() & (hour < 24) & (minute < 60) & (second < 60) & (offset < 1440)).alias("iso_ok"),
    ]


def _iso_micros() -> Column:
    local = F.col("iso_day").cast("long") * DAY_US + F.col("iso_time")
    return F.when(F.col("iso_ok"), local - F.col("iso_offset") * 60_000_000)


# ---------------------------------------------------------------- pipeline


def curated_rows(valid: DataFrame) -> DataFrame:
    """One row per event_id: the earliest ts, ties broken by the smallest raw text."""
    kept = ("event_id", "user_id", "event_type", "amount", "currency", "ts_us", "email", "country", "extras")
    unique = valid.groupBy("event_id").agg(F.min_by(F.struct(*kept), F.struct("ts_us", "raw")).alias("r")).select("r.*")
    ts = F.timestamp_micros("ts_us")
    dow = (F.dayofweek(ts) + 5) % 7  # Spark: Sunday = 1; spec: Monday = 0
    return unique.select(
        "event_id",
        "user_id",
        "event_type",
        "amount",
        "currency",
        ts.alias("ts"),
        "email",
        F.lower(F.substring_index("email", "@", -1)).alias("email_domain"),
        "country",
        F.hour(ts).alias("hour_of_day"),
        dow.alias("day_of_week"),
        (dow >= 5).alias("is_weekend"),
        "extras",
        F.date_format(ts, "yyyy-MM-dd").alias("dt"),
    )


def write_aggregates(spark: SparkSession, curated_dir: str, out_dir: str) -> int:
    """Hourly (event_type, country) aggregates of the written curated rows -> one parquet file."""
    ts_us = F.unix_micros("ts")
    cents = F.rint(F.coalesce(F.col("amount"), F.lit(0.0)) * 100)
    agg = (
        spark.read.parquet(curated_dir)
        .groupBy((ts_us - F.pmod(ts_us, F.lit(HOUR_US))).alias("start"), "event_type", "country")
        .agg(F.count("*").alias("events"), F.count_distinct("user_id").alias("users"), F.sum(cents).alias("cents"))
        .toArrow()
    )
    start = agg.column("start").cast(pa.int64())
    table = pa.table(
        [
            start.cast(pa.timestamp("us", tz="UTC")),
            pc.add(start, HOUR_US).cast(pa.timestamp("us", tz="UTC")),
            agg.column("event_type").cast(pa.string()),
            agg.column("country").cast(pa.string()),
            agg.column("events").cast(pa.int64()),
            agg.column("users").cast(pa.int64()),
            pc.divide(agg.column("cents").cast(pa.float64()), 100.0),
        ],
        schema=AGGREGATE_SCHEMA,
    ).sort_by([("window_start", "ascending"), ("event_type", "ascending"), ("country", "ascending")])
    os.makedirs(out_dir, exist_ok=True)
    pq.write_table(table, os.path.join(out_dir, "part-0.parquet"))
    return table.num_rows


def run(spark: SparkSession, pattern: str, fmt: str, out: str) -> dict:
    how = "spark"
    if fmt == "jsonl":
        parsed = read_jsonl(spark, pattern)
    elif fmt == "csv":
        parsed = read_csv(spark, pattern)
    elif fmt == "parquet":
        parsed = typed_frame(spark.read.parquet(pattern))
    else:
        parsed, how = read_avro(spark, pattern)
    checked = validate(parsed).persist(StorageLevel.MEMORY_AND_DISK)

    dead = checked.where(F.col("reason").isNotNull()).select(
        F.when(F.col("reason") == "malformed", "parse").otherwise("validate").alias("stage"),
        "reason",
        "field",
        F.concat_ws(" ", "reason", "field").alias("error"),
        "raw",
        "source",
    )
    dead.write.mode("overwrite").json(f"{out}/dlq")
    curated_rows(checked.where(F.col("reason").isNull())).write.mode("overwrite").partitionBy("dt").parquet(
        f"{out}/curated"
    )
    shutil.rmtree(f"{out}/aggregates", ignore_errors=True)
    n_aggregates = write_aggregates(spark, f"{out}/curated", f"{out}/aggregates")

    valid = F.col("reason").isNull()
    counts = checked.agg(
        F.count("*").alias("read"),
        F.count("reason").alias("dead_lettered"),
        F.count_if(valid & F.col("bad_email")).alias("invalid_email"),
        F.count_if(valid & F.col("bad_country")).alias("invalid_country"),
    ).first()
    checked.unpersist()
    curated = spark.read.parquet(f"{out}/curated").count()
    return {
        "read": counts["read"],
        "curated": curated,
        "dead_lettered": counts["dead_lettered"],
        "duplicates": counts["read"] - counts["dead_lettered"] - curated,
        "aggregates": n_aggregates,
        "invalid_email": counts["invalid_email"] or 0,
        "invalid_country": counts["invalid_country"] or 0,
        "reader": how,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.systems.pyspark",
        description=__doc__.split("\n")[0]
        + " Repeat --input/--format/--output to run several jobs in one Spark session (one JVM start).",
    )
    parser.add_argument("--input", required=True, action="append", help="File pattern, e.g. 'DIR/*.jsonl'.")
    parser.add_argument("--format", required=True, action="append", choices=FORMATS)
    parser.add_argument("--output", required=True, action="append", help="Output directory.")
    args = parser.parse_args(argv)
    if not len(args.input) == len(args.format) == len(args.output):
        parser.error("--input, --format and --output must be given the same number of times")
    for pattern in args.input:
        if not glob.glob(pattern):
            print(f"error: no file matches {pattern!r}", file=sys.stderr)
            return 1
    started = time.perf_counter()
    spark = spark_session()
    try:
        for pattern, fmt, output in zip(args.input, args.format, args.output):
            out = os.path.abspath(output)
            job_started = time.perf_counter()
            c = run(spark, os.path.abspath(pattern), fmt, out)
            seconds = time.perf_counter() - job_started
            print(
                f"pyspark: read {c['read']:,}, curated {c['curated']:,}, dead-lettered {c['dead_lettered']:,}, "
                f"duplicates {c['duplicates']:,}, aggregates {c['aggregates']:,} ({fmt} via {c['reader']}) "
                f"in {seconds:.1f} s ({c['read'] / max(seconds, 1e-9):,.0f} rows/s); outputs under {out}"
            )
    finally:
        spark.stop()
    print(f"pyspark: {time.perf_counter() - started:.1f} s in all, Spark session start included")
    return 0


if __name__ == "__main__":
    sys.exit(main())
