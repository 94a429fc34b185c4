"""The ``orders`` spec (``beam_pipelines/pipelines/orders.yaml``) with the Polars API.

    python -m benchmarks.systems.orders_polars --input 'DIR/*.jsonl' --format jsonl --output OUT [--threads N]

Each format becomes a frame of *slots*: per field the contract reads (its eleven fields and the
v1 name ``coupon``) its text (``<f>``, String) and, where a rule depends on it, its kind
(``<f>_k``: 's' string, 'i' integer, 'f' float, 'b' boolean, 'o' object/array; null when missing
or null), typed values where the input has them (``amount_cents``, ``<time>_typed_us``), plus
``raw`` (the record's text) or ``row`` (a typed row), ``source``, ``parsed`` and ``extras``.
One plan then upcasts v1 (``coupon`` fills an absent ``promo_code``), validates every field by
the contract's rules (the first failing field in declaration order names the dead letter),
keeps the latest version of each order, adds ``is_open`` and ``order_hour``, and aggregates
per day, region and status. Money is held in integer cents.

- jsonl: lines read as one String column. Flat objects of scalars without escapes (nearly every
  line) are decoded at once with ``str.json_decode`` into String fields (whole floats come out as
  integers, "5"), the kinds the rules need taken from the line by one regex per field; other
  lines go through ``str.json_path_match`` per field, and those that are not strict JSON objects
  (serde_json) are malformed, as are undecodable ones (U+FFFD). ``extras`` is not computed.
  Known differences from the project's parser (orjson): a repeated key gives its first value
  (the project: the last); in a line with nested values, a nested key of a declared name can
  decide that field's kind. Enum values are lower-cased with Unicode's full mapping ("İ" becomes
  two characters; the project maps it to "i").
- csv: lines joined while a quote is open and split by one strict-CSV regex per header (as in
  ``benchmarks.systems.polars``); rows that do not match are malformed.
- parquet, avro: typed columns (scan_parquet per file, read_avro), v1 and v2 files concatenated
  by name; ``raw`` is the row as JSON (dead letters only).

Deduplication keeps the greatest (updated_at, raw) per order_id: for text input the project's
rule exactly; for typed input a tie of updated_at between two different rows compares the rows'
values column by column (the project compares its JSON text of the rows; generated data has no
such ties, its duplicates being exact copies). Amounts in exponent form are read through a
Decimal(38, 16) cast, so more than 16 decimal places can round twice there.
"""

from __future__ import annotations

import os
import sys
import time

from benchmarks.systems import common as c
from benchmarks.systems import orders_common as oc
from benchmarks.systems.polars import CSV_FIELD, JSON_WS, _lines

# A flat JSON object of scalars whose strings need no unescaping, with numbers that are always
# finite doubles: what ``str.json_decode`` reads into String fields without failing the batch.
_STR = r'"[^"\\\x00-\x1f]*"'
_NUM = r"-?(?:0|[1-9][0-9]{0,17})(?:\.[0-9]{1,17})?(?:[eE][+-]?[0-9]{1,2})?"
_PAIR = JSON_WS + _STR + JSON_WS + ":" + JSON_WS + "(?:" + _STR + "|" + _NUM + "|true|false|null)" + JSON_WS
FLAT = "^" + JSON_WS + r"\{(?:" + _PAIR + "(?:," + _PAIR + ")*|" + JSON_WS + r")\}" + JSON_WS + "$"
# The fields whose rules tell kinds apart beyond their text: ids (string or integer only), is_gift
# (not a float), promo codes (strings only) and timestamps (a float is always epoch seconds).
KINDED = ("order_id", "customer_id", "is_gift", "promo_code", "coupon", "created_at", "updated_at")
# A plain decimal number: sign, integer digits without leading zeros, two decimals and the third.
PLAIN_AMOUNT = r"^([+-]?)0*([0-9]*)(?:\.([0-9]{0,2})([0-9]?)[0-9]*)?$"
MAX_CENTS = 10**oc.AMOUNT_PRECISION - 1  # 16 integer digits and 2 decimals


def _with_kinds(pl, lf, names: tuple[str, ...]):
    """Adds ``<name>_k`` per field: its kind, from the start of its value after ``"name":`` in
    the line (one regex per field)."""
    value = f'{JSON_WS}:{JSON_WS}("|true|false|null|-?[0-9]+[.eE]?|[{{\\[])'
    lf = lf.with_columns(pl.col("raw").str.extract(f'"{n}"' + value, 1).alias(f"_{n}_start") for n in names)
    kinds = []
    for n in names:
        start = pl.col(f"_{n}_start")
        kind = (
            pl.when(start == '"')
            .then(pl.lit("s"))
            .when(start.is_in(["true", "false"]))
            .then(pl.lit("b"))
            .when(start.is_in(["{", "["]))
            .then(pl.lit("o"))
            .when(start.str.contains("[.eE]$"))
            .then(pl.lit("f"))
            .when(start != "null")
            .then(pl.lit("i"))
        )
        kinds.append(kind.alias(f"{n}_k"))
    return lf.with_columns(kinds).drop([f"_{n}_start" for n in names])


def _no_typed(pl):
    return [pl.lit(None, pl.Int64).alias("amount_cents")] + [
        pl.lit(None, pl.Int64).alias(f"{t}_typed_us") for t in ("created_at", "updated_at")
    ]


def jsonl_slots(pl, files: list[str]):
    lines = _lines(pl, files).collect()
    raw = pl.col("raw")
    flat = ~pl.col("bad_utf8") & raw.str.contains(FLAT)
    lines = lines.with_columns(flat.alias("flat"))
    decoded = pl.Struct({f: pl.String for f in oc.READ})
    fast = _with_kinds(pl, lines.lazy().filter("flat").with_columns(raw.str.json_decode(decoded).alias("_j")), KINDED)
    fast = fast.unnest("_j").with_columns(pl.lit(True).alias("parsed"))
    # The rest, a few lines: malformed ones, and objects with escapes or nested values.
    rest = lines.lazy().filter(~pl.col("flat"))
    rest = (
        _with_kinds(pl, rest, oc.READ)
        .with_columns(
            (~pl.col("bad_utf8") & raw.str.json_path_match("$").str.starts_with("{").fill_null(False)).alias("parsed"),
            *[raw.str.json_path_match(f"$.{f}").alias(f) for f in oc.READ],
        )
        .with_columns(  # a whole float as json_decode writes it ("5"), which the quantity rule reads
            pl.when((pl.col("quantity_k") == "f") & (pl.col("quantity").cast(pl.Float64, strict=False).abs() < 2**63))
            .then(pl.col("quantity").cast(pl.Float64, strict=False))
            .otherwise(None)
            .alias("_q")
        )
        .with_columns(
            pl.when(pl.col("_q").is_not_null() & (pl.col("_q") == pl.col("_q").floor()))
            .then(pl.col("_q").cast(pl.Int64).cast(pl.String))
            .otherwise(pl.col("quantity"))
            .alias("quantity")
        )
        .drop("_q")
        .with_columns(  # an integer id's exact digits (json_path_match writes one beyond 64 bits as a float)
            pl.when(pl.col(f"{f}_k") == "i")
            .then(raw.str.extract(f'"{f}"{JSON_WS}:{JSON_WS}(-?[0-9]+)', 1).str.replace(r"^-0$", "0"))
            .otherwise(pl.col(f))
            .alias(f)
            for f in ("order_id", "customer_id")
        )
    )
    columns = ["raw", "source", "parsed", *oc.READ, *[f"{f}_k" for f in KINDED]]
    return pl.concat([fast.select(columns), rest.select(columns)], how="vertical").with_columns(
        pl.lit(None, pl.String).alias("extras"), *_no_typed(pl)
    )


def _csv_group(pl, files: list[str], header: tuple[str, ...]):
    row_re = "^" + ",".join(f"(?<c{i}>{CSV_FIELD})" for i in range(len(header))) + "$"
    cells = pl.col("cells")

    def cell(i: int):
        v = cells.struct.field(f"c{i}")
        unquoted = v.str.slice(1, v.str.len_chars() - 2).str.replace_all('""', '"', literal=True)
        v = pl.when(v.str.starts_with('"')).then(unquoted).otherwise(v)
        return pl.when(v != "").then(v)  # an empty value is null, as in the project

    position = {h: i for i, h in enumerate(header)}
    fields = [cell(position[f]).alias(f) if f in position else pl.lit(None, pl.String).alias(f) for f in oc.READ]
    others = [h for h in header if h not in oc.READ]
    extras = pl.lit(None, pl.String)
    if others:  # the non-empty undeclared values as a JSON object
        pairs = []
        for h in others:
            encoded = pl.struct(cell(position[h]).alias("v")).struct.json_encode()  # {"v":<value>}
            value = encoded.str.slice(5, encoded.str.len_chars() - 6)
            pairs.append(pl.when(cell(position[h]).is_not_null()).then(pl.lit(f'"{h}":') + value))
        body = pl.concat_str(pairs, separator=",", ignore_nulls=True)
        extras = pl.when(body != "").then(pl.lit("{") + body + pl.lit("}"))
    records = (
        _lines(pl, files)
        .with_columns(pl.int_range(pl.len()).over("source").alias("line_no"))
        .filter(pl.col("line_no") > 0)  # each file's first line is its header
        # A record goes on over the next lines while a quote is open (the project's rule).
        .with_columns(pl.col("raw").str.count_matches('"', literal=True).mod(2).alias("odd"))
        .with_columns(((pl.col("odd").cum_sum() - pl.col("odd")).over("source") % 2 == 0).alias("starts"))
        .with_columns(pl.col("starts").cast(pl.Int64).cum_sum().over("source").alias("record"))
        .group_by("source", "record", maintain_order=True)
        .agg(pl.col("raw").str.join("\n"), pl.col("bad_utf8").any())
        .with_columns(pl.col("raw").str.extract_groups(row_re).alias("cells"))
        .with_columns((~pl.col("bad_utf8") & cells.struct.field("c0").is_not_null()).alias("parsed"))
    )
    return records.with_columns(
        *[pl.when("parsed").then(f).alias(f.meta.output_name()) for f in fields],
        pl.when("parsed").then(extras).alias("extras"),
    ).with_columns(*[pl.when(pl.col(f).is_not_null()).then(pl.lit("s")).alias(f"{f}_k") for f in KINDED])


def csv_slots(pl, files: list[str]):
    columns = ["raw", "source", "parsed", "extras", *oc.READ, *[f"{f}_k" for f in KINDED]]
    groups = [_csv_group(pl, group, header).select(columns) for header, group in oc.by_header(files).items()]
    return pl.concat(groups).with_columns(*_no_typed(pl))


def typed_slots(pl, lf):
    """Slots from a typed LazyFrame (parquet, avro) that has a ``source`` column."""
    schema = {k: v for k, v in lf.collect_schema().items() if k != "source"}

    def kind(t) -> str:
        if t == pl.String:
            return "s"
        if t.is_integer():
            return "i"
        if t.is_float() or t.is_decimal():
            return "f"
        if t == pl.Boolean:
            return "b"
        return "o"

    def text(name: str):
        t = schema.get(name)
        if t is None or isinstance(t, pl.Datetime) or t == pl.Date:
            return pl.lit(None, pl.String).alias(name)
        if t.is_float() or t.is_decimal():  # a whole number as json_decode writes it ("5"), for the integer rules
            x = pl.col(name).cast(pl.Float64)
            whole = (x == x.floor()) & (x.abs() < 2**63)
            return pl.when(whole).then(x.cast(pl.Int64).cast(pl.String)).otherwise(pl.col(name).cast(pl.String))
        return pl.col(name).cast(pl.String, strict=False).alias(name)

    def kinded(name: str):
        if name not in schema:
            return pl.lit(None, pl.String).alias(f"{name}_k")
        t = schema[name]
        k = "t" if isinstance(t, pl.Datetime) or t == pl.Date else kind(t)
        return pl.when(pl.col(name).is_not_null()).then(pl.lit(k)).alias(f"{name}_k")

    def typed_us(name: str):
        t = schema.get(name)
        if isinstance(t, pl.Datetime):
            return pl.col(name).dt.epoch("us").alias(f"{name}_typed_us")
        if t == pl.Date:
            return (pl.col(name).cast(pl.Int64) * oc.DAY_US).alias(f"{name}_typed_us")
        return pl.lit(None, pl.Int64).alias(f"{name}_typed_us")

    amount = schema.get("amount")
    cents = pl.lit(None, pl.Int64)
    if amount is not None and amount.is_decimal():  # exact: rounded half away from zero to cents
        rounded = pl.col("amount").round(oc.AMOUNT_SCALE, mode="half_away_from_zero")
        cents = (rounded * 100).cast(pl.Int128, strict=False)
        cents = pl.when(cents.abs() <= MAX_CENTS).then(cents.cast(pl.Int64))
    elif amount is not None and amount.is_integer():
        cents = pl.when(pl.col("amount").cast(pl.Int128).abs() * 100 <= MAX_CENTS).then(
            pl.col("amount").cast(pl.Int64) * 100
        )
    others = [n for n in schema if n not in oc.READ]
    return lf.select(
        pl.lit(None, pl.String).alias("raw"),
        pl.struct(list(schema)).alias("row"),
        "source",
        pl.lit(True).alias("parsed"),
        *[text(f) for f in oc.READ],
        *[kinded(f) for f in KINDED],
        cents.alias("amount_cents"),
        typed_us("created_at"),
        typed_us("updated_at"),
        (pl.struct(others).struct.json_encode() if others else pl.lit(None, pl.String)).alias("extras"),
    )


def _enum(pl, name: str, values: tuple[str, ...]):
    v = pl.col(f"{name}_s").str.to_lowercase()
    return pl.when(v.is_in(values)).then(v)


def _timestamp(pl, lf, name: str, out: str):
    """Adds ``out``: epoch microseconds within [2000, 2100) from a typed timestamp, ISO-8601 text
    (no offset means UTC; hours, minutes, seconds and offsets in range; more than 6 fractional
    digits cut), an integer (epoch seconds, or milliseconds from 10^11) or another number (epoch
    seconds, rounded half to even, in range before rounding as the project judges it, and after
    as the contract says); null otherwise. In stages, so that each regex runs once per row."""
    s, k = pl.col(f"{name}_s"), pl.col(f"{name}_k")
    g = f"_{name}"
    lf = lf.with_columns(
        pl.when((k != "f").fill_null(True) & s.str.contains(oc.INT18_RE))
        .then(s.str.to_integer(strict=False))
        .alias(f"{g}_n"),
        pl.when(s.str.contains(oc.NUMBER_RE) & ((k == "f") | ~s.str.contains(oc.INT18_RE)))
        .then(s.cast(pl.Float64, strict=False))
        .alias(f"{g}_x"),
        s.str.extract_groups(oc.ISO_RE)
        .struct.rename_fields([f"{g}_{p}" for p in ("date", "hh", "mi", "ss", "frac", "tz")])
        .alias(f"{g}_iso"),
    ).unnest(f"{g}_iso")
    tz = pl.col(f"{g}_tz").fill_null("").str.to_uppercase().str.replace_all(":", "", literal=True)
    lf = lf.with_columns(
        pl.col(f"{g}_date").str.to_date("%Y-%m-%d", strict=False).cast(pl.Int64).alias(f"{g}_days"),
        *[pl.col(f"{g}_{p}").cast(pl.Int64, strict=False).fill_null(0) for p in ("hh", "mi", "ss")],
        pl.col(f"{g}_frac").str.slice(0, 6).str.pad_end(6, "0").cast(pl.Int64, strict=False).fill_null(0),
        tz.alias(f"{g}_tz"),
    )
    tz = pl.col(f"{g}_tz")
    sign = pl.when(tz.str.starts_with("-")).then(-1).otherwise(1)
    tz_h, tz_m = tz.str.slice(1, 2).cast(pl.Int64, strict=False), tz.str.slice(3).cast(pl.Int64, strict=False)
    tz_m = tz_m.fill_null(0)
    n, x = pl.col(f"{g}_n"), pl.col(f"{g}_x")
    n = pl.when(n.abs() < 10**13).then(n)  # beyond: past 2100 as seconds or milliseconds (no overflow below)
    hh, mi, ss = (pl.col(f"{g}_{p}") for p in ("hh", "mi", "ss"))
    zone_ok = tz.is_in(["", "Z"]) | ((tz_h < 24) & (tz_m < 60))
    zone = pl.when(tz.is_in(["", "Z"])).then(0).otherwise(sign * (tz_h * 60 + tz_m))
    from_iso = pl.when((hh < 24) & (mi < 60) & (ss < 60) & zone_ok).then(
        pl.col(f"{g}_days") * oc.DAY_US
        + hh * 3_600_000_000
        + mi * 60_000_000
        + ss * 1_000_000
        + pl.col(f"{g}_frac")
        - zone * 60_000_000
    )
    scale = pl.when(n >= oc.MILLIS_FROM).then(1000).otherwise(1_000_000)
    in_range = [float(oc.TS_MIN_US), float(oc.TS_MAX_US)]
    as_float = pl.coalesce(pl.col(f"{name}_typed_us").cast(pl.Float64), from_iso.cast(pl.Float64),
                           n.cast(pl.Float64) * scale, x * 1e6)  # fmt: skip
    exact = pl.coalesce(pl.col(f"{name}_typed_us"), from_iso, n * scale, (x * 1e6).round(0, mode="half_to_even"))
    ok = (as_float >= in_range[0]) & (as_float < in_range[1]) & (exact >= in_range[0]) & (exact < in_range[1])
    return lf.with_columns(pl.when(ok).then(exact.cast(pl.Int64, strict=False)).alias(out)).drop(
        [f"{g}_{p}" for p in ("n", "x", "date", "hh", "mi", "ss", "frac", "tz", "days")]
    )


def _with_cents(pl, lf):
    """Adds ``cents``: the exact cents of ``amount_s`` (or the typed ``amount_cents``), rounded half
    away from zero; null when it is no number or has more than 16 integer digits. Plain numbers
    are split by one regex; exponent forms, rare, are read through a Decimal cast."""
    s = pl.col("amount_s")
    lf = lf.with_columns(
        s.str.extract_groups(PLAIN_AMOUNT).struct.rename_fields(["_sign", "_int", "_two", "_third"]).alias("_plain"),
        s.str.contains(oc.NUMBER_RE).alias("_numeric"),
    ).unnest("_plain")
    int_digits = pl.col("_int")
    units = pl.when(int_digits == "").then(0).otherwise(int_digits.str.to_integer(strict=False))
    two = pl.col("_two").fill_null("").str.pad_end(2, "0").str.to_integer(strict=False)
    up = (pl.col("_third").fill_null("") >= "5").cast(pl.Int64)
    plain = units * 100 + two + up
    fits = (int_digits.str.len_chars() <= oc.AMOUNT_PRECISION - oc.AMOUNT_SCALE) & (plain <= MAX_CENTS)
    plain = pl.when(fits).then(pl.when(pl.col("_sign") == "-").then(-plain).otherwise(plain))
    exponent = (
        s.cast(pl.Decimal(38, 16), strict=False)
        .round(oc.AMOUNT_SCALE, mode="half_away_from_zero")
        .mul(100)
        .cast(pl.Int128, strict=False)
    )
    exponent = pl.when(exponent.abs() <= MAX_CENTS).then(exponent.cast(pl.Int64))
    numeric = pl.col("_numeric")
    cents = pl.when(numeric & int_digits.is_not_null()).then(plain).when(numeric).then(exponent)
    cents = pl.when(pl.col("amount").is_not_null()).then(pl.coalesce(pl.col("amount_cents"), cents))
    return lf.with_columns(cents.alias("cents")).drop("_sign", "_int", "_two", "_third", "_numeric")


def _checks(pl) -> tuple:
    """(field, missing, invalid) per field in declaration order, over the typed columns: the
    first that holds names a record's dead letter. None: the field has a default or is optional."""

    def missing(f: str):
        return pl.col(f"missing_{f}")

    quantity_ok = pl.col("quantity_n").is_between(oc.QUANTITY_MIN, oc.QUANTITY_MAX).fill_null(False)
    return (
        ("order_id", missing("order_id"), pl.col("order_id").is_null()),
        ("customer_id", missing("customer_id"), pl.col("customer_id").is_null()),
        ("region", missing("region"), pl.col("region").is_null()),
        ("status", missing("status"), pl.col("status").is_null()),
        ("amount", missing("amount"), ~(pl.col("cents") >= 0).fill_null(False)),
        ("quantity", missing("quantity"), ~quantity_ok),
        ("is_gift", None, pl.col("is_gift").is_null()),
        ("promo_code", None, ~missing("promo_code") & pl.col("promo_code").is_null()),
        ("created_at", missing("created_at"), pl.col("created_us").is_null()),
        ("updated_at", missing("updated_at"), pl.col("updated_us").is_null()),
        ("channel", None, pl.col("channel").is_null()),
    )


def validate(pl, slots):
    """Slots -> every record: its ``raw`` or ``row``, ``source``, ``reason`` and ``field`` (null when
    valid) and its typed fields (amount as ``cents``)."""
    p, a = "promo_code", oc.ALIASES["promo_code"]
    upcast = slots.with_columns(  # v1: coupon fills an absent or null promo_code
        pl.when(pl.col(p).is_null()).then(pl.col(a)).otherwise(pl.col(p)).alias(p),
        pl.when(pl.col(p).is_null()).then(pl.col(f"{a}_k")).otherwise(pl.col(f"{p}_k")).alias(f"{p}_k"),
    )
    s = {f: pl.col(f"{f}_s") for f in oc.FIELDS}
    trimmed = upcast.with_columns(pl.col(f).str.strip_chars(c.WHITESPACE).alias(f"{f}_s") for f in oc.FIELDS)

    def ident(name: str):
        k = pl.col(f"{name}_k")
        return pl.when((k == "s") & (s[name] != "")).then(s[name]).when(k == "i").then(pl.col(name))

    q = s["quantity"].str.to_integer(strict=False)
    gift = s["is_gift"].str.to_lowercase()
    typed = _with_cents(pl, trimmed).with_columns(
        ident("order_id").alias("order_id"),
        ident("customer_id").alias("customer_id"),
        _enum(pl, "region", oc.REGIONS).alias("region"),
        _enum(pl, "status", oc.STATUSES).alias("status"),
        pl.when(s["quantity"].str.contains(oc.INT_RE)).then(q).alias("quantity_n"),
        pl.when(pl.col("is_gift").is_null())
        .then(False)
        .when((pl.col("is_gift_k") != "f") & gift.is_in(oc.TRUE_WORDS))
        .then(True)
        .when((pl.col("is_gift_k") != "f") & gift.is_in(oc.FALSE_WORDS))
        .then(False)
        .alias("is_gift"),
        pl.when((pl.col(f"{p}_k") == "s") & s[p].str.contains(oc.PROMO_RE)).then(s[p].str.to_uppercase()).alias(p),
        pl.when(pl.col("channel").is_null())
        .then(pl.lit(oc.DEFAULT_CHANNEL))
        .otherwise(_enum(pl, "channel", oc.CHANNELS))
        .alias("channel"),
        # Absent or null: no text, and no kind (typed timestamps have a kind and no text).
        *[
            (pl.col(f).is_null() & (pl.col(f"{f}_k").is_null() if f in KINDED else pl.lit(True))).alias(f"missing_{f}")
            for f in oc.FIELDS
        ],
    )
    checked = _timestamp(pl, _timestamp(pl, typed, "created_at", "created_us"), "updated_at", "updated_us")
    reason = pl.when(~pl.col("parsed")).then(pl.lit("malformed"))
    field = pl.when(~pl.col("parsed")).then(pl.lit(None, pl.String))
    for name, missing, invalid in _checks(pl):
        if missing is not None:
            reason = reason.when(missing).then(pl.lit("missing_field"))
            field = field.when(missing).then(pl.lit(name))
        reason = reason.when(invalid).then(pl.lit("invalid_value"))
        field = field.when(invalid).then(pl.lit(name))
    record = [c for c in ("raw", "row") if c in slots.collect_schema()]
    return checked.select(
        *record, "source", reason.alias("reason"), field.alias("field"), "order_id", "customer_id", "region",
        "status", "cents", pl.col("quantity_n").alias("quantity"), "is_gift", "promo_code", "channel", "created_us",
        "updated_us", "extras",
    )  # fmt: skip


def deduplicate(pl, valid, tie: str):
    """One row per order_id: the greatest updated_at, ties broken by the greatest ``tie``
    (sorting only the rows that tie)."""
    latest = valid.filter(pl.col("updated_us") == pl.col("updated_us").max().over("order_id"))
    tied = pl.len().over("order_id") > 1
    resolved = (
        latest.filter(tied)
        .sort("order_id", tie, descending=[False, True], nulls_last=False)
        .unique(subset="order_id", keep="first", maintain_order=True)
    )
    return pl.concat([latest.filter(~tied), resolved])


def main(argv: list[str] | None = None) -> int:
    args = oc.parse_args("python -m benchmarks.systems.orders_polars", argv)
    os.environ["POLARS_MAX_THREADS"] = str(args.threads)  # read once, when polars is first imported
    import polars as pl

    started = time.perf_counter()
    oc.prepare_output(args.output)
    if args.format == "jsonl":
        slots = jsonl_slots(pl, args.files)
    elif args.format == "csv":
        slots = csv_slots(pl, args.files)
    elif args.format == "parquet":
        frames = [pl.scan_parquet(f).with_columns(source=pl.lit(f)) for f in args.files]
        slots = typed_slots(pl, pl.concat(frames, how="diagonal_relaxed"))
    else:
        frames = [pl.read_avro(f).with_columns(source=pl.lit(f)) for f in args.files]
        slots = typed_slots(pl, pl.concat(frames, how="diagonal_relaxed").lazy())
    text = args.format in ("jsonl", "csv")
    checked = validate(pl, slots).collect()
    valid = checked.filter(pl.col("reason").is_null()).drop("source", "reason", "field")
    curated = deduplicate(pl, valid, "raw" if text else "row").drop("raw" if text else "row")
    day = pl.col("updated_us") - pl.col("updated_us") % oc.DAY_US
    created = pl.col("created_us").cast(pl.Datetime("us", "UTC"))
    out = curated.lazy().select(
        *oc.CURATED_COLUMNS[:4],
        pl.col("cents").cast(pl.Decimal(38, oc.AMOUNT_SCALE)).truediv(100).cast(pl.Decimal(18, 2)).alias("amount"),
        *oc.CURATED_COLUMNS[5:9],
        created.alias("created_at"),
        pl.col("updated_us").cast(pl.Datetime("us", "UTC")).alias("updated_at"),
        pl.col("status").is_in(oc.OPEN_STATUSES).alias("is_open"),
        created.dt.hour().cast(pl.Int64).alias("order_hour"),
        "extras",
        pl.col("updated_us").cast(pl.Datetime("us", "UTC")).dt.strftime("%Y-%m-%d").alias("dt"),
    )
    out.sort("order_id").sink_parquet(
        pl.PartitionBy(os.path.join(args.output, "curated"), key="dt", include_key=False), mkdir=True
    )
    aggregates = (
        curated.lazy()
        .group_by(day.alias("w"), "region", "status")
        .agg(
            pl.len().cast(pl.Int64).alias("orders"),
            pl.col("customer_id").n_unique().cast(pl.Int64).alias("customers"),
            pl.col("cents").sum().alias("cents"),
            pl.col("quantity").sum().cast(pl.Int64).alias("items"),
            pl.col("cents").count().alias("priced"),
            pl.col("cents").max().alias("largest"),
        )
        .select(
            pl.col("w").cast(pl.Datetime("us", "UTC")).alias("window_start"),
            (pl.col("w") + oc.DAY_US).cast(pl.Datetime("us", "UTC")).alias("window_end"),
            "region",
            "status",
            "orders",
            "customers",
            pl.col("cents").cast(pl.Decimal(38, oc.AMOUNT_SCALE)).truediv(100).alias("revenue"),
            "items",
            (pl.col("cents").cast(pl.Float64) / 100 / pl.col("priced")).alias("average_order"),
            pl.col("largest").cast(pl.Decimal(38, oc.AMOUNT_SCALE)).truediv(100).cast(pl.Decimal(18, 2))
            .alias("largest_order"),
        )
        .sort("window_start", "region", "status")
        .collect()
    )  # fmt: skip
    aggregates.write_parquet(os.path.join(args.output, "aggregates", "part-0.parquet"))
    dead = checked.filter(pl.col("reason").is_not_null())
    dead_raw = pl.col("raw") if text else pl.col("row").struct.json_encode()
    dead.select(
        pl.when(pl.col("reason") == "malformed").then(pl.lit("parse")).otherwise(pl.lit("validate")).alias("stage"),
        "reason",
        "field",
        dead_raw.alias("raw"),
        "source",
    ).write_parquet(os.path.join(args.output, "dlq", "part-0.parquet"))
    reasons = dead.get_column("reason").value_counts()
    by_reason = dict(zip(reasons.get_column("reason").to_list(), reasons.get_column("count").to_list()))
    counts = {
        "read": checked.height,
        "malformed": by_reason.get("malformed", 0),
        "missing_field": by_reason.get("missing_field", 0),
        "invalid_value": by_reason.get("invalid_value", 0),
        "valid": valid.height,
        "curated": curated.height,
        "aggregates": aggregates.height,
        "dead_lettered": dead.height,
        "duplicates": valid.height - curated.height,
    }
    c.finish("orders_polars", args, started, counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
