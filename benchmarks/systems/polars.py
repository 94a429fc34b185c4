"""The ``events`` spec with the Polars lazy API.

    python -m benchmarks.systems.polars --input 'DIR/*.jsonl' --format jsonl --output OUT [--threads N]

Each format becomes a LazyFrame of *slots*: per declared field its text (``<f>``, String), for the
two ids whether the value was a string or an integer, the typed float ``amount_x`` and timestamp
``ts_typed_us`` when the input has such columns, plus ``raw`` (the record's text) or ``row`` (a
typed row, whose JSON is the raw text) for the dedup tie-break, ``source`` and ``extras``. One lazy
plan then validates, cleanses, deduplicates, adds features and aggregates.

- jsonl: lines read as one String column (scan_csv, no separator/quote, utf8-lossy: a line with
  U+FFFD is taken as undecodable, i.e. malformed); fields decoded with ``str.json_path_match``
  (serde_json: strict JSON, so NaN, trailing commas, lone surrogates and non-objects give no
  fields). json_path_match returns strings unquoted, so for the ids a regex on the line tells a
  string from a float/boolean/object; ``extras`` is not computed. Known differences from Python's
  json: a number beyond float range (1e999) makes the line malformed (Python reads inf), a float
  with more than ~15 significant digits may be read 1 ulp off, and a raw U+FFFD is malformed.
- csv: Polars' CSV reader has no per-row error handling (a ragged or badly quoted row fails the
  scan, or is silently truncated), so lines are read as above, joined while a quote is open, and
  split by one strict-CSV regex (a capture group per header column): records that do not match
  are malformed.
- parquet: scan_parquet, typed columns; ``raw`` is the row as JSON.
- avro: Polars' own avro reader (read_avro), typed like parquet.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time

from benchmarks.systems import common as c

# A CSV field as Python's csv module reads it (excel dialect, strict): quoted, unquoted or empty.
CSV_FIELD = r'"(?:[^"]|"")*"|[^",\n][^,\n]*|'
JSON_WS = r"[ \t\n\r]*"


def _div(pl, expr, divisor: float):
    """``expr / divisor`` exactly: Polars divides by a scalar as a multiplication by its reciprocal
    (``z * 0.01 != z / 100`` for many z), so the divisor is made a column."""
    return expr / (pl.int_range(pl.len()) * 0 + float(divisor))


def _lines(pl, files: list[str]):
    """Non-blank lines as ``raw`` with their ``source``; undecodable lines flagged ``bad_utf8``."""
    lf = pl.scan_csv(
        files, has_header=False, separator="\x01", quote_char=None, schema={"line": pl.String},
        encoding="utf8-lossy", truncate_ragged_lines=True, empty_string_is_null=False,
        include_file_paths="source", raise_if_empty=False,
    )  # fmt: skip
    raw = pl.col("line").str.strip_chars_end("\r")
    return (
        lf.select(raw.alias("raw"), "source")
        .filter(pl.col("raw").str.strip_chars(c.ASCII_WHITESPACE) != "")
        .with_columns(bad_utf8=pl.col("raw").str.contains("\ufffd", literal=True))
    )


def jsonl_slots(pl, files: list[str]):
    raw = pl.col("raw")
    fields = [raw.str.json_path_match(f"$.{f}").alias(f) for f in c.DECLARED]
    # json_path_match gives a string value unquoted, and an integer beyond 64 bits as a float: for the
    # ids, the line itself tells a string value from another, and gives an integer's exact digits.
    ids = []
    for f in ("event_id", "user_id"):
        ids.append(raw.str.contains(rf'"{f}"{JSON_WS}:{JSON_WS}"').alias(f"{f}_is_str"))
        ids.append(raw.str.extract(rf'"{f}"{JSON_WS}:{JSON_WS}(-?[0-9]+){JSON_WS}[,}}]', 1).alias(f"{f}_digits"))
    return (
        _lines(pl, files)
        .filter(~pl.col("bad_utf8"))
        .with_columns(*fields, *ids)
        .with_columns(
            *[
                (pl.col(f).is_not_null() & pl.col(f"{f}_digits").is_not_null() & ~pl.col(f"{f}_is_str")).alias(
                    f"{f}_is_int"
                )
                for f in ("event_id", "user_id")
            ],
            amount_x=pl.lit(None, pl.Float64),
            ts_typed_us=pl.lit(None, pl.Int64),
            extras=pl.lit(None, pl.String),
        )
        .with_columns(
            pl.when(pl.col(f"{f}_is_int")).then(pl.col(f"{f}_digits").str.replace(r"^-0$", "0")).otherwise(f).alias(f)
            for f in ("event_id", "user_id")
        )
    )


def csv_slots(pl, files: list[str]):
    with open(files[0], newline="", encoding="utf-8", errors="replace") as fh:
        header = [h.strip() for h in next(csv.reader(line for line in fh if line.strip()))]
    row_re = "^" + ",".join(f"(?<c{i}>{CSV_FIELD})" for i in range(len(header))) + "$"
    cells = pl.col("cells")

    def cell(i: int):
        v = cells.struct.field(f"c{i}")
        unquoted = v.str.slice(1, v.str.len_chars() - 2).str.replace_all('""', '"', literal=True)
        v = pl.when(v.str.starts_with('"')).then(unquoted).otherwise(v)
        return pl.when(v != "").then(v)  # an empty value is null, as in the project

    position = {h: i for i, h in enumerate(header)}
    fields = [cell(position[f]).alias(f) if f in position else pl.lit(None, pl.String).alias(f) for f in c.DECLARED]
    others = [h for h in header if h not in c.DECLARED]
    extras = pl.lit(None, pl.String)
    if others:  # a JSON object of the non-empty undeclared values, as the project writes it
        pairs = []
        for h in others:
            encoded = pl.struct(cell(position[h]).alias("v")).struct.json_encode()  # {"v":<value>}
            value = encoded.str.slice(5, encoded.str.len_chars() - 6)
            pairs.append(pl.when(cell(position[h]).is_not_null()).then(pl.lit(json.dumps(h) + ":") + value))
        body = pl.concat_str(pairs, separator=",", ignore_nulls=True)
        extras = pl.when(body != "").then(pl.lit("{") + body + pl.lit("}"))
    return (
        _lines(pl, files)
        .with_columns(pl.int_range(pl.len()).over("source").alias("line_no"))
        .filter(pl.col("line_no") > 0)  # each file's first line is its header
        # A record goes on over the next lines while a quote is open (the project's rule).
        .with_columns(pl.col("raw").str.count_matches('"', literal=True).mod(2).alias("odd"))
        .with_columns(((pl.col("odd").cum_sum() - pl.col("odd")).over("source") % 2 == 0).alias("starts"))
        .with_columns(pl.col("starts").cast(pl.Int64).cum_sum().over("source").alias("record"))
        .group_by("source", "record", maintain_order=True)
        .agg(pl.col("raw").str.join("\n"), pl.col("bad_utf8").any())
        .filter(~pl.col("bad_utf8"))
        .with_columns(pl.col("raw").str.extract_groups(row_re).alias("cells"))
        .filter(cells.struct.field("c0").is_not_null())  # the row is strict CSV with the right width
        .with_columns(*fields, extras=extras)
        .with_columns(
            event_id_is_str=pl.lit(True),
            user_id_is_str=pl.lit(True),
            event_id_is_int=pl.lit(False),
            user_id_is_int=pl.lit(False),
            amount_x=pl.lit(None, pl.Float64),
            ts_typed_us=pl.lit(None, pl.Int64),
        )
    )


def typed_slots(pl, lf):
    """Slots from a typed LazyFrame (parquet, avro) that has a ``source`` column."""
    schema = {k: v for k, v in lf.collect_schema().items() if k != "source"}

    def text(name: str):
        if name not in schema or (name == "ts" and (schema[name] == pl.Date or isinstance(schema[name], pl.Datetime))):
            return pl.lit(None, pl.String).alias(name)
        if schema[name] == pl.String:
            return pl.col(name)
        return pl.col(name).cast(pl.String, strict=False).alias(name)

    def is_kind(name: str, test) -> pl.Expr:
        return pl.lit(name in schema and test(schema[name]))

    amount_x = pl.lit(None, pl.Float64)
    if "amount" in schema and (schema["amount"].is_numeric()):
        amount_x = pl.col("amount").cast(pl.Float64)
    ts_typed = pl.lit(None, pl.Int64)
    if "ts" in schema and schema["ts"] == pl.Date:
        ts_typed = pl.col("ts").cast(pl.Int64) * c.DAY_US
    elif "ts" in schema and isinstance(schema["ts"], pl.Datetime):
        ts_typed = pl.col("ts").dt.epoch("us")
    others = [n for n in schema if n not in c.DECLARED]
    return lf.select(
        pl.lit(None, pl.String).alias("raw"),  # the row as JSON, made only where an event_id repeats (dedup)
        pl.struct(list(schema)).alias("row"),
        "source",
        *[text(f) for f in c.DECLARED],
        *[is_kind(f, lambda t: t == pl.String).alias(f"{f}_is_str") for f in ("event_id", "user_id")],
        *[is_kind(f, lambda t: t.is_integer()).alias(f"{f}_is_int") for f in ("event_id", "user_id")],
        amount_x.alias("amount_x"),
        ts_typed.alias("ts_typed_us"),
        (pl.struct(others).struct.json_encode() if others else pl.lit(None, pl.String)).alias("extras"),
    )


def _with_timestamp(pl, lf):
    """Adds ``ts_us``: event time in epoch microseconds (null when unparseable) from the stripped ``ts_s``
    text or the typed column. In stages, so that each regex runs once per row."""
    s = pl.col("ts_s")
    lf = lf.with_columns(
        pl.when(s.str.contains(c.INT_RE)).then(s.str.to_integer(strict=False)).alias("_n"),
        pl.when(s.str.contains(c.NUMBER_RE) & ~s.str.contains(c.INT_RE))
        .then(s.cast(pl.Float64, strict=False))
        .alias("_x"),
        s.str.extract_groups(c.ISO_RE).struct.rename_fields([f"_{g}" for g in c.ISO_GROUPS]).alias("_iso"),
    ).unnest("_iso")
    lf = lf.with_columns(
        pl.col("_date").str.to_date("%Y-%m-%d", strict=False).cast(pl.Int64).alias("_days"),
        *[pl.col(f"_{g}").cast(pl.Int64, strict=False).fill_null(0) for g in ("hh", "mi", "ss")],
        pl.col("_frac").str.slice(0, 6).str.pad_end(6, "0").cast(pl.Int64, strict=False).fill_null(0),
        pl.col("_tz").fill_null("").str.replace_all(":", "", literal=True),
    )
    tz = pl.col("_tz")
    sign = pl.when(tz.str.starts_with("-")).then(-1).otherwise(1)
    hours, mins = tz.str.slice(1, 2).cast(pl.Int64, strict=False), tz.str.slice(3).cast(pl.Int64, strict=False)
    minutes = hours * 60 + mins.fill_null(0)
    lf = lf.with_columns(pl.when(tz.is_in(["", "Z"])).then(0).otherwise(sign * minutes).alias("_tz_min"))
    n, x, hh, mi, ss, tz_min = (pl.col(k) for k in ("_n", "_x", "_hh", "_mi", "_ss", "_tz_min"))
    n = pl.when((n > -(10**13)) & (n < 10**13)).then(n)
    from_int = pl.when(n >= c.MILLIS_FROM).then(n * 1000).otherwise(n * 1_000_000)
    from_float = pl.when(x.is_finite() & (x.abs() <= 1e12)).then((x * 1e6).round(0, mode="half_to_even").cast(pl.Int64))
    from_iso = pl.when((hh < 24) & (mi < 60) & (ss < 60) & (tz_min.abs() < 1440)).then(
        pl.col("_days") * c.DAY_US
        + hh * 3_600_000_000
        + mi * 60_000_000
        + ss * 1_000_000
        + pl.col("_frac")
        - tz_min * 60_000_000
    )
    return lf.with_columns(pl.coalesce(pl.col("ts_typed_us"), from_int, from_float, from_iso).alias("ts_us"))


def validate(pl, slots):
    stripped = slots.with_columns(pl.col(f).str.strip_chars(c.WHITESPACE).alias(f"{f}_s") for f in c.DECLARED)
    ids = {}
    for f in ("event_id", "user_id"):
        v = pl.col(f"{f}_s")
        ok = pl.col(f).is_not_null() & (v != "") & (pl.col(f"{f}_is_str") | pl.col(f"{f}_is_int"))
        ids[f] = pl.when(ok).then(pl.when(pl.col(f"{f}_is_str")).then(v).otherwise(pl.col(f)))
    amount_s, currency_s = pl.col("amount_s"), pl.col("currency_s")
    amount_x = pl.coalesce(
        pl.col("amount_x"), pl.when(amount_s.str.contains(c.NUMBER_RE)).then(amount_s.cast(pl.Float64, strict=False))
    )
    currency = (
        pl.when(pl.col("currency").is_null())
        .then(pl.lit("USD"))
        .when(currency_s.str.contains(c.CURRENCY_RE))
        .then(currency_s.str.to_uppercase())
    )
    typed = stripped.with_columns(
        ids["event_id"].alias("event_id"),
        ids["user_id"].alias("user_id"),
        pl.col("event_type_s").str.to_lowercase().alias("event_type"),
        pl.col("amount").is_null().alias("amount_absent"),
        amount_x.alias("amount_x"),
        currency.alias("currency"),
        pl.col("email_s").str.to_lowercase().alias("email_c"),
        pl.col("country_s").str.to_uppercase().alias("country_c"),
    )
    typed = _with_timestamp(pl, typed).with_columns(
        pl.col("email_c").str.contains(c.EMAIL_RE).alias("email_ok"),
        pl.col("country_c").str.contains(c.COUNTRY_RE).alias("country_ok"),
    )
    x = pl.col("amount_x")
    amount_ok = pl.when(pl.col("amount_absent")).then(~pl.col("event_type").is_in(c.PAID_TYPES))
    amount_ok = amount_ok.otherwise(x.is_finite() & (x >= 0))
    email_ok, country_ok = pl.col("email_ok"), pl.col("country_ok")
    return typed.filter(
        pl.col("event_id").is_not_null(),
        pl.col("user_id").is_not_null(),
        pl.col("event_type").is_in(c.EVENT_TYPES),
        amount_ok,
        pl.col("currency").is_not_null(),
        pl.col("ts_us").is_between(c.TS_MIN_US, c.TS_MAX_US, closed="left"),
    ).select(
        "event_id",
        "user_id",
        "event_type",
        _div(pl, ((x * 100) + 0.5).floor(), 100).alias("amount"),
        "currency",
        "ts_us",
        pl.when(email_ok).then(pl.col("email_c")).alias("email"),
        pl.when(country_ok).then(pl.col("country_c")).alias("country"),
        (pl.col("email_c").is_not_null() & ~email_ok).alias("bad_email"),
        (pl.col("country_c").is_not_null() & ~country_ok).alias("bad_country"),
        "extras",
        "raw",
        *(["row"] if "row" in slots.collect_schema() else []),
    )


def deduplicate(pl, valid):
    """One row per event_id: the earliest ts, ties broken by the smallest raw text (sorting only
    the rows whose event_id repeats)."""
    repeated = valid.filter(pl.len().over("event_id") > 1)
    if "row" in valid.columns:
        repeated = repeated.with_columns(pl.coalesce("raw", pl.col("row").struct.json_encode()).alias("raw"))
    first = repeated.sort("event_id", "ts_us", "raw").unique(subset="event_id", keep="first", maintain_order=True)
    return pl.concat([valid.filter(pl.len().over("event_id") == 1), first.select(valid.columns)])


def main(argv: list[str] | None = None) -> int:
    args = c.parse_args("python -m benchmarks.systems.polars", argv)
    os.environ["POLARS_MAX_THREADS"] = str(args.threads)  # read once, when polars is first imported
    import polars as pl

    started = time.perf_counter()
    c.prepare_output(args.output)
    if args.format == "jsonl":
        slots = jsonl_slots(pl, args.files)
    elif args.format == "csv":
        slots = csv_slots(pl, args.files)
    elif args.format == "parquet":
        slots = typed_slots(pl, pl.scan_parquet(args.files, include_file_paths="source"))
    else:
        frames = [pl.read_avro(f).with_columns(source=pl.lit(f)) for f in args.files]
        slots = typed_slots(pl, pl.concat(frames, how="diagonal_relaxed").lazy())
    valid = validate(pl, slots).collect()
    curated = (
        deduplicate(pl, valid)
        .lazy()
        .with_columns(pl.col("ts_us").cast(pl.Datetime("us", "UTC")).alias("ts"))
        .select(
            *c.CURATED_COLUMNS[:6],
            "email",
            pl.col("email").str.extract("@([^@]+)$", 1).str.to_lowercase().alias("email_domain"),
            "country",
            pl.col("ts").dt.hour().cast(pl.Int32).alias("hour_of_day"),
            (pl.col("ts").dt.weekday() - 1).cast(pl.Int32).alias("day_of_week"),
            (pl.col("ts").dt.weekday() >= 6).alias("is_weekend"),
            "extras",
            pl.col("ts").dt.strftime("%Y-%m-%d").alias("dt"),
            "ts_us",
        )
        .collect()
    )
    curated.lazy().drop("ts_us").sink_parquet(
        pl.PartitionBy(os.path.join(args.output, "curated"), key="dt", include_key=False), mkdir=True
    )
    window = pl.col("ts_us") - pl.col("ts_us") % c.HOUR_US
    aggregates = (
        curated.lazy()
        .group_by(window.alias("w"), "event_type", "country")
        .agg(
            pl.len().cast(pl.Int64).alias("events"),
            pl.col("user_id").n_unique().cast(pl.Int64).alias("users"),
            (pl.col("amount") * 100).round(0).cast(pl.Int128).fill_null(0).sum().alias("cents"),
        )
        .select(
            pl.col("w").cast(pl.Datetime("us", "UTC")).alias("window_start"),
            (pl.col("w") + c.HOUR_US).cast(pl.Datetime("us", "UTC")).alias("window_end"),
            "event_type",
            "country",
            "events",
            "users",
            _div(pl, pl.col("cents").cast(pl.Float64), 100).alias("amount_sum"),
        )
        .sort("window_start", "event_type", "country", nulls_last=True)
        .collect()
    )
    aggregates.write_parquet(os.path.join(args.output, "aggregates", "part-0.parquet"))
    counts = {
        "valid": valid.height,
        "curated": curated.height,
        "duplicates": valid.height - curated.height,
        "aggregates": aggregates.height,
        "invalid_email": int(valid["bad_email"].sum()),
        "invalid_country": int(valid["bad_country"].sum()),
    }
    c.finish("polars", args, started, counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
