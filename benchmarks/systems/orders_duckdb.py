"""The ``orders`` spec (``beam_pipelines/pipelines/orders.yaml``) in DuckDB SQL.

    python -m benchmarks.systems.orders_duckdb --input 'DIR/*.jsonl' --format jsonl --output OUT [--threads N]

Each format becomes one relation of *slots*, as in ``benchmarks.systems.duckdb``: per field ``f``
the contract reads (its eleven fields and the v1 name ``coupon``) its kind ``f_k`` ('s' string,
'i' integer, 'f' float or decimal, 'b' boolean, 'o' object/array, 't' timestamp; NULL when
missing or null) and its text ``f_t``, typed values where the input has them (``amount_d``,
``created_at_us``, ``updated_at_us``), plus ``raw`` (the record's text) or ``row`` (a typed
row), ``source``, ``parsed`` and ``extras``. One SQL pipeline then upcasts v1 (``coupon`` fills an absent
``promo_code``), validates every field by the contract's rules (the first failing field in
declaration order names the dead letter), keeps the latest version of each order, adds
``is_open`` and ``order_hour``, and aggregates per day, region and status.

- jsonl: lines read as one VARCHAR each and decoded with the JSON functions; lines that are not
  strict JSON objects are malformed. Known differences from the project's parser (orjson): a
  repeated key gives its first value (the project: the last), and a lone CR inside a line ends it.
- csv: read_csv with every column VARCHAR (one read per distinct header: v1 and v2 files);
  rows with the wrong column count, bad quoting or invalid UTF-8 are rejected by the reader
  (malformed). ``raw`` is the fields joined by commas; an empty field is null, as in the project.
- parquet, avro: typed columns (avro through DuckDB's extension when installed, else fastavro ->
  Arrow); ``raw`` is the row as JSON (DuckDB's ``to_json``).

Deduplication keeps the greatest (updated_at, raw) per order_id: for text input that is the
project's rule exactly. For typed input the tie-break between two *different* rows of one order
with the same updated_at compares the rows' values column by column, where the project compares
its JSON text of the rows: to rebuild that text byte for byte (orjson's escaping, Arrow's decimal
and timestamp text) in SQL is impractical, and such ties do not occur in generated data (its
duplicates are exact copies).
"""

from __future__ import annotations

import os
import sys
import time

import duckdb

from benchmarks.systems import common as c
from benchmarks.systems import orders_common as oc
from benchmarks.systems.duckdb import MACROS, MAX_LINE, _files, _ident, _q, avro_relation

ORDERS_MACROS = f"""
CREATE MACRO int_is_ms(n) AS n >= {oc.MILLIS_FROM};  -- an integer timestamp: milliseconds, else seconds
"""


_DECIMAL = f"DECIMAL({oc.AMOUNT_PRECISION}, {oc.AMOUNT_SCALE})"
# Text records carry no typed values (see typed_source).
NO_TYPED = f"NULL::{_DECIMAL} AS amount_d, NULL::BIGINT AS created_at_us, NULL::BIGINT AS updated_at_us"


def jsonl_source(files: list[str]) -> str:
    paths = "[" + ", ".join(_q("$." + f) for f in oc.READ) + "]"
    unset = "{" + ",".join(f'"{f}":null' for f in oc.READ) + "}"  # a merge patch removing the read keys
    slots = ", ".join(f"jkind(j[{i + 1}]) AS {f}_k, s[{i + 1}] AS {f}_t" for i, f in enumerate(oc.READ))
    return f"""
    WITH lines AS (
        SELECT rtrim(line, chr(13)) AS raw, _source AS source
        FROM read_csv({_files(files)}, columns = {{'line': 'VARCHAR'}}, header = false, auto_detect = false,
                      delim = '\x01', quote = '', escape = '', new_line = '\\n', strict_mode = false,
                      ignore_errors = true, store_rejects = true, max_line_size = {MAX_LINE}, filename = '_source')
        WHERE trim(line, {_q(c.ASCII_WHITESPACE)}) <> ''
    ), marked AS (
        SELECT raw, source,
            json_valid(raw) AND starts_with(ltrim(raw, ' ' || chr(9) || chr(13)), '{{')  -- a JSON object
            AND CASE WHEN raw ILIKE '%nan%' OR raw ILIKE '%inf%' OR regexp_matches(raw, ',[ \t\n\r]*[\\]}}]')
                     THEN NOT regexp_matches(regexp_replace(raw, {_q(c.JSON_STRING_RE)}, '""', 'g'),
                                             {_q(c.NON_STRICT_JSON_RE)})
                     ELSE true END AS parsed
        FROM lines
    ), objects AS MATERIALIZED (  -- each record's values extracted once, not once per use
        SELECT raw, source, parsed,
            CASE WHEN parsed THEN json_extract(raw, {paths}) END AS j,
            CASE WHEN parsed THEN json_extract_string(raw, {paths}) END AS s
        FROM marked
    )
    SELECT raw, NULL AS row, source, parsed, {slots}, {NO_TYPED},
        CASE WHEN parsed THEN nullif(CAST(json_merge_patch(raw, {_q(unset)}) AS VARCHAR), '{{}}') END AS extras
    FROM objects"""


def csv_source(files: list[str]) -> str:
    """Slots of CSV files, one read_csv per distinct header (v1 and v2 files differ)."""
    parts = []
    for header, group in oc.by_header(files).items():
        columns = "{" + ", ".join(f"{_q(h)}: 'VARCHAR'" for h in header) + "}"
        # CSV cannot tell an empty string from a missing value: both are null, as in the project.
        slots = ", ".join(
            f"CASE WHEN nullif({_ident(f)}, '') IS NOT NULL THEN 's' END AS {f}_k, nullif({_ident(f)}, '') AS {f}_t"
            if f in header
            else f"NULL AS {f}_k, NULL AS {f}_t"
            for f in oc.READ
        )
        others = [h for h in header if h not in oc.READ]
        entries = ", ".join(f"struct_pack(k := {_q(h)}, v := nullif({_ident(h)}, ''))" for h in others)
        extras = (
            "nullif(CAST(to_json(map_from_entries(list_filter("
            f"[{entries}], lambda e: e.v IS NOT NULL))) AS VARCHAR), '{{}}')"
            if others
            else "NULL"
        )
        raw = "concat_ws(',', " + ", ".join(f"coalesce({_ident(h)}, '')" for h in header) + ")"
        parts.append(f"""
        SELECT {raw} AS raw, NULL AS row, _source AS source, true AS parsed, {slots}, {NO_TYPED}, {extras} AS extras
        FROM read_csv({_files(group)}, columns = {columns}, header = true, auto_detect = false, delim = ',',
                      quote = '"', escape = '"', strict_mode = true, ignore_errors = true, store_rejects = true,
                      max_line_size = {MAX_LINE}, filename = '_source')""")
    return " UNION ALL BY NAME ".join(parts)


# Lines the CSV reader rejected while the records were read (invalid UTF-8; for csv also a wrong
# column count or bad quoting): malformed records. A line is reported once per error it has.
ADD_REJECTED = """
INSERT INTO checked BY NAME
SELECT any_value(e.csv_line) AS raw, any_value(s.file_path) AS source, false AS parsed, 'malformed' AS reason
FROM reject_errors e JOIN reject_scans s USING (scan_id, file_id)
GROUP BY e.scan_id, e.file_id, e.line
"""


def _typed_slot(name: str, sql_type: str) -> str:
    col = _ident(name)
    t = sql_type.upper()
    if t == "VARCHAR":
        kind, text = "'s'", col
    elif t.endswith("INT") or t in ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UHUGEINT"):
        kind, text = "'i'", f"CAST({col} AS VARCHAR)"
    elif t.startswith("DECIMAL"):
        kind, text = "'f'", f"CAST({col} AS VARCHAR)"  # the exact decimal text, as the project reads it
    elif t in ("FLOAT", "DOUBLE"):
        kind, text = "'f'", f"CAST(CAST({col} AS DOUBLE) AS VARCHAR)"
    elif t == "BOOLEAN":
        kind, text = "'b'", f"CAST({col} AS VARCHAR)"
    elif t.startswith("TIMESTAMP") or t == "DATE":
        kind, text = "'t'", "NULL"  # the instant is in <name>_us (typed_source)
    else:
        kind, text = "'o'", f"CAST({col} AS VARCHAR)"
    return f"CASE WHEN {col} IS NOT NULL THEN {kind} END AS {name}_k, {text} AS {name}_t"


def typed_source(con, relation: str) -> str:
    """Slots from a typed relation (parquet, avro) that has a ``_source`` column."""
    schema = [(r[0], r[1]) for r in con.sql(f"DESCRIBE SELECT * FROM {relation}").fetchall() if r[0] != "_source"]
    types = dict(schema)
    slots = ", ".join(_typed_slot(f, types[f]) if f in types else f"NULL AS {f}_k, NULL AS {f}_t" for f in oc.READ)
    # Typed values the rules take as they are: a decimal amount (rounded half away from zero by the
    # cast) and timestamps; their text is not needed.
    amount = f"TRY_CAST(amount AS {_DECIMAL})" if types.get("amount", "").startswith("DECIMAL") else "NULL"
    instants = [
        f"epoch_us(CAST({_ident(f)} AS TIMESTAMP))" if types.get(f, "").startswith(("TIMESTAMP", "DATE")) else "NULL"
        for f in ("created_at", "updated_at")
    ]
    typed = f"{amount} AS amount_d, {instants[0]} AS created_at_us, {instants[1]} AS updated_at_us"
    others = [n for n, _ in schema if n not in oc.READ]
    extras = (
        "CAST(json_object(" + ", ".join(f"{_q(n)}, {_ident(n)}" for n in others) + ") AS VARCHAR)" if others else "NULL"
    )
    row = "struct_pack(" + ", ".join(f"{_ident(n)} := {_ident(n)}" for n, _ in schema) + ")"
    return (
        f"SELECT NULL AS raw, {row} AS row, _source AS source, true AS parsed, {slots}, {typed}, {extras} AS extras "
        f"FROM {relation}"
    )


def _enum(name: str, values: tuple[str, ...]) -> str:
    return f"CASE WHEN {name}_k = 's' AND lower({name}_s) IN {values} THEN lower({name}_s) END"


def _timestamp_parts(name: str) -> str:
    """The parts of a timestamp each rule reads, one regex each: ``<name>_iso`` (ISO-8601 groups;
    all empty when the text is not ISO-8601), ``<name>_n`` (an integer of up to 18 digits: epoch
    seconds, or milliseconds from 10^11) and ``<name>_x`` (another number: epoch seconds)."""
    k, s = f"{name}_k", f"{name}_s"
    groups = "['date', 'hh', 'mi', 'ss', 'frac', 'tz']"
    return f"""
        CASE WHEN {k} = 's' AND substr({s}, 5, 1) = '-' THEN regexp_extract({s}, {_q(oc.ISO_RE)}, {groups}) END
            AS {name}_iso,
        CASE WHEN {k} IN ('i', 's') AND regexp_full_match({s}, {_q(oc.INT18_RE)}) THEN TRY_CAST({s} AS HUGEINT) END
            AS {name}_n,
        CASE WHEN {k} IN ('i', 'f', 's') AND NOT regexp_full_match({s}, {_q(oc.INT18_RE)})
                  AND regexp_full_match({s}, {_q(oc.NUMBER_RE)}) THEN TRY_CAST({s} AS DOUBLE) END AS {name}_x"""


def _timestamp(name: str) -> str:
    """Epoch microseconds (HUGEINT; the caller keeps those in [2000, 2100)) from a typed timestamp,
    ISO-8601 text (no offset means UTC; hours, minutes, seconds and offsets in range; more than 6
    fractional digits cut), an integer (seconds, or milliseconds from 10^11) or another number
    (seconds, rounded half to even, in range before rounding as the project judges it, and after
    as the contract says); NULL otherwise."""
    k, iso, n, x = f"{name}_k", f"{name}_iso", f"{name}_n", f"{name}_x"
    tz = f"replace(upper({iso}.tz), ':', '')"
    iso_ok = (
        f"TRY_CAST({iso}.date AS DATE) IS NOT NULL AND coalesce(nullif({iso}.hh, ''), '00') < '24' "
        f"AND coalesce(nullif({iso}.mi, ''), '00') < '60' AND coalesce(nullif({iso}.ss, ''), '00') < '60' "
        f"AND ({tz} IN ('', 'Z') "
        f"OR (substr({tz}, 2, 2) < '24' AND coalesce(nullif(substr({tz}, 4, 2), ''), '00') < '60'))"
    )
    iso_us = (
        f"CAST(TRY_CAST({iso}.date AS DATE) - DATE '1970-01-01' AS HUGEINT) * {oc.DAY_US} "
        f"+ coalesce(TRY_CAST(nullif({iso}.hh, '') AS HUGEINT), 0) * 3600000000 "
        f"+ coalesce(TRY_CAST(nullif({iso}.mi, '') AS HUGEINT), 0) * 60000000 "
        f"+ coalesce(TRY_CAST(nullif({iso}.ss, '') AS HUGEINT), 0) * 1000000 "
        f"+ coalesce(TRY_CAST(nullif(rpad(left({iso}.frac, 6), 6, '0'), '000000') AS HUGEINT), 0) "
        f"- CAST(tz_minutes(upper({iso}.tz)) AS HUGEINT) * 60000000"
    )
    micros = f"""CASE
        WHEN {k} = 't' THEN {name}_us
        WHEN {iso}.date <> '' THEN CASE WHEN {iso_ok} THEN {iso_us} END
        WHEN {n} IS NOT NULL THEN {n} * CASE WHEN int_is_ms({n}) THEN 1000 ELSE 1000000 END
        WHEN {x} * 1000000 >= {oc.TS_MIN_US} AND {x} * 1000000 < {oc.TS_MAX_US}
        THEN CAST(round_even({x} * 1000000, 0) AS HUGEINT)
    END"""
    return micros


# (field, missing, invalid): the conditions that make a record's dead letter, in declaration order.
CHECKS = (
    ("order_id", "order_id_k IS NULL", "order_id IS NULL"),
    ("customer_id", "customer_id_k IS NULL", "customer_id IS NULL"),
    ("region", "region_k IS NULL", "region IS NULL"),
    ("status", "status_k IS NULL", "status IS NULL"),
    ("amount", "amount_k IS NULL", "NOT coalesce(amount >= 0, false)"),
    (
        "quantity",
        "quantity_k IS NULL",
        f"NOT coalesce(quantity BETWEEN {oc.QUANTITY_MIN} AND {oc.QUANTITY_MAX}, false)",
    ),
    ("is_gift", "false", "is_gift IS NULL"),
    ("promo_code", "false", "promo_code_k IS NOT NULL AND promo_code IS NULL"),
    ("created_at", "created_at_k IS NULL", "created_us IS NULL"),
    ("updated_at", "updated_at_k IS NULL", "updated_us IS NULL"),
    ("channel", "false", "channel IS NULL"),
)


def validate_sql(tie: str) -> str:
    """The checked records (``reason`` and ``field`` null for valid ones) and the curated ones;
    ``tie`` breaks a tie of updated_at between versions of one order (``raw``, or ``row``)."""
    reason = " ".join(f"WHEN {m} THEN 'missing_field' WHEN {i} THEN 'invalid_value'" for _, m, i in CHECKS)
    field = " ".join(f"WHEN ({m}) OR ({i}) THEN '{f}'" for f, m, i in CHECKS)
    int_re = _q(oc.INT_RE)
    parts = ", ".join(f"{t}_{p}" for t in ("created_at", "updated_at") for p in ("s", "us", "iso", "n", "x"))
    in_range = ", ".join(
        f"CASE WHEN {t}_m >= {oc.TS_MIN_US} AND {t}_m < {oc.TS_MAX_US} THEN CAST({t}_m AS BIGINT) END AS {t}_us"
        for t in ("created", "updated")
    )
    return f"""
CREATE TABLE checked AS
WITH upcast AS (  -- v1: coupon fills an absent or null promo_code
    SELECT * EXCLUDE (promo_code_k, promo_code_t, coupon_k, coupon_t),
        CASE WHEN promo_code_k IS NULL THEN coupon_k ELSE promo_code_k END AS promo_code_k,
        CASE WHEN promo_code_k IS NULL THEN coupon_t ELSE promo_code_t END AS promo_code_t
    FROM slots
), trimmed AS (
    SELECT *, {", ".join(f"ptrim({f}_t) AS {f}_s" for f in oc.FIELDS)} FROM upcast
), typed AS (
    SELECT raw, row, source, parsed, extras, {", ".join(f"{f}_k" for f in oc.FIELDS)}, created_at_s, updated_at_s,
        created_at_us, updated_at_us,
        CASE order_id_k WHEN 's' THEN nullif(order_id_s, '') WHEN 'i' THEN order_id_t END AS order_id,
        CASE customer_id_k WHEN 's' THEN nullif(customer_id_s, '') WHEN 'i' THEN customer_id_t END AS customer_id,
        {_enum("region", oc.REGIONS)} AS region,
        {_enum("status", oc.STATUSES)} AS status,
        CASE WHEN amount_d IS NOT NULL THEN amount_d
             WHEN amount_k IN ('s', 'i', 'f') AND regexp_full_match(amount_s, {_q(oc.NUMBER_RE)})
             THEN TRY_CAST(amount_s AS {_DECIMAL}) END AS amount,  -- rounded half away from zero
        CASE quantity_k
            WHEN 'i' THEN TRY_CAST(quantity_t AS BIGINT)
            WHEN 's' THEN CASE WHEN regexp_full_match(quantity_s, {int_re}) THEN TRY_CAST(quantity_s AS BIGINT) END
            WHEN 'f' THEN CASE WHEN TRY_CAST(quantity_t AS DOUBLE) = floor(TRY_CAST(quantity_t AS DOUBLE))
                                    AND abs(TRY_CAST(quantity_t AS DOUBLE)) <= {oc.FLOAT_INTS}
                               THEN CAST(TRY_CAST(quantity_t AS DOUBLE) AS BIGINT) END
        END AS quantity,
        CASE WHEN is_gift_k IS NULL THEN false
             WHEN is_gift_k IN ('b', 's', 'i') THEN CASE WHEN lower(is_gift_s) IN {oc.TRUE_WORDS} THEN true
                                                         WHEN lower(is_gift_s) IN {oc.FALSE_WORDS} THEN false END
        END AS is_gift,
        CASE WHEN promo_code_k = 's' AND regexp_full_match(promo_code_s, {_q(oc.PROMO_RE)}) THEN upper(promo_code_s) END
            AS promo_code,
        CASE WHEN channel_k IS NULL THEN {_q(oc.DEFAULT_CHANNEL)} ELSE {_enum("channel", oc.CHANNELS)} END AS channel,
        {_timestamp_parts("created_at")},
        {_timestamp_parts("updated_at")}
    FROM trimmed
), timed AS (
    SELECT * EXCLUDE ({parts}),
        {_timestamp("created_at")} AS created_m,
        {_timestamp("updated_at")} AS updated_m
    FROM typed
), ranged AS (
    SELECT * EXCLUDE (created_m, updated_m), {in_range}
    FROM timed
)
SELECT *, CASE WHEN NOT parsed THEN 'malformed' {reason} END AS reason,
    CASE WHEN parsed THEN CASE {field} END END AS field
FROM ranged;

-- The latest version of each order: the greatest (updated_at, {tie}).
CREATE TABLE curated AS
SELECT unnest(arg_max(k, (k.updated_us, {tie})))
FROM (
    SELECT struct_pack(order_id, customer_id, region, status, amount, quantity, is_gift, promo_code, channel,
                       created_us, updated_us, extras) AS k, {tie}
    FROM checked WHERE reason IS NULL
) GROUP BY k.order_id;
"""


def write_outputs(con, out: str) -> None:
    con.sql(f"""
    COPY (
        SELECT order_id, customer_id, region, status, amount, quantity, is_gift, promo_code, channel,
            make_timestamptz(created_us) AS created_at, make_timestamptz(updated_us) AS updated_at,
            status IN {oc.OPEN_STATUSES} AS is_open, CAST(hour(make_timestamptz(created_us)) AS BIGINT) AS order_hour,
            extras, strftime(make_timestamptz(updated_us), '%Y-%m-%d') AS dt
        FROM curated ORDER BY order_id
    ) TO {_q(os.path.join(out, "curated"))} (FORMAT parquet, PARTITION_BY (dt), OVERWRITE_OR_IGNORE)""")
    con.sql(f"""
    COPY (
        SELECT make_timestamptz(w) AS window_start, make_timestamptz(w + {oc.DAY_US}) AS window_end, region, status,
            CAST(count(*) AS BIGINT) AS orders, CAST(count(DISTINCT customer_id) AS BIGINT) AS customers,
            CAST(sum(amount) AS DECIMAL(38, {oc.AMOUNT_SCALE})) AS revenue, CAST(sum(quantity) AS BIGINT) AS items,
            CAST(sum(amount) AS DOUBLE) / count(amount) AS average_order, max(amount) AS largest_order
        FROM (SELECT *, updated_us - updated_us % {oc.DAY_US} AS w FROM curated)
        GROUP BY w, region, status
        ORDER BY window_start, region, status
    ) TO {_q(os.path.join(out, "aggregates", "part-0.parquet"))} (FORMAT parquet)""")
    con.sql(f"""
    COPY (
        SELECT CASE reason WHEN 'malformed' THEN 'parse' ELSE 'validate' END AS stage, reason, field,
            coalesce(raw, CAST(to_json(row) AS VARCHAR)) AS raw, source
        FROM checked WHERE reason IS NOT NULL
    ) TO {_q(os.path.join(out, "dlq", "part-0.parquet"))} (FORMAT parquet)""")


def counts(con) -> dict:
    row = con.sql(f"""
        SELECT (SELECT count(*) FROM checked) AS read,
            (SELECT count_if(reason = 'malformed') FROM checked) AS malformed,
            (SELECT count_if(reason = 'missing_field') FROM checked) AS missing_field,
            (SELECT count_if(reason = 'invalid_value') FROM checked) AS invalid_value,
            (SELECT count_if(reason IS NULL) FROM checked) AS valid,
            (SELECT count(*) FROM curated) AS curated,
            (SELECT count(*) FROM (SELECT DISTINCT updated_us - updated_us % {oc.DAY_US}, region, status FROM curated))
                AS aggregates""").fetchall()[0]
    names = ("read", "malformed", "missing_field", "invalid_value", "valid", "curated", "aggregates")
    out = dict(zip(names, row))
    out["dead_lettered"] = out["malformed"] + out["missing_field"] + out["invalid_value"]
    out["duplicates"] = out["valid"] - out["curated"]
    return out


def main(argv: list[str] | None = None) -> int:
    args = oc.parse_args("python -m benchmarks.systems.orders_duckdb", argv)
    started = time.perf_counter()
    oc.prepare_output(args.output)
    con = duckdb.connect()
    con.sql(f"SET threads = {args.threads}")
    con.sql("SET TimeZone = 'UTC'")
    con.sql("SET preserve_insertion_order = false")
    con.sql(MACROS)
    con.sql(ORDERS_MACROS)
    if args.format == "jsonl":
        source = jsonl_source(args.files)
    elif args.format == "csv":
        source = csv_source(args.files)
    elif args.format == "parquet":
        source = typed_source(con, f"read_parquet({_files(args.files)}, union_by_name = true, filename = '_source')")
    else:
        source = typed_source(con, avro_relation(con, args.files))
    con.sql(f"CREATE TEMP VIEW slots AS {source}")
    text = args.format in ("jsonl", "csv")
    con.sql(validate_sql("raw" if text else "row"))
    if text:
        con.sql(ADD_REJECTED)
    write_outputs(con, args.output)
    c.finish("orders_duckdb", args, started, counts(con))
    return 0


if __name__ == "__main__":
    sys.exit(main())
