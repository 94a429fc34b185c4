"""The ``events`` spec in DuckDB SQL.

    python -m benchmarks.systems.duckdb --input 'DIR/*.jsonl' --format jsonl --output OUT [--threads N]

Each format becomes one relation of *slots*: per declared field ``f`` its kind ``f_k`` ('s' string,
'i' integer, 'f' float, 'b' boolean, 'o' object/array, 't' timestamp; NULL when missing or null) and
its text ``f_t``, plus ``raw`` (the record's text) or ``row`` (a typed row, whose JSON is the raw
text) for the dedup tie-break, ``source`` and ``extras``. One SQL pipeline then validates,
cleanses, deduplicates, adds features and aggregates.

- jsonl: each line read as one VARCHAR (read_csv, no delimiter/quote) and decoded with the JSON
  functions; lines that are not strict JSON objects are malformed (DuckDB's JSON reader also takes
  NaN/Infinity and trailing commas, which Python's does not: those lines are checked again). Known
  differences from Python's json: a repeated key gives its first value (Python: the last), and a
  lone CR inside a line ends the line.
- csv: read_csv with every column VARCHAR; rows with the wrong column count, bad quoting or
  invalid UTF-8 are rejected by the reader (malformed). ``raw`` is the fields joined by commas.
- parquet: read_parquet, typed columns; ``raw`` is the row as JSON.
- avro: DuckDB's avro extension when it is installed, else fastavro -> Arrow -> DuckDB.
"""

from __future__ import annotations

import csv
import os
import sys
import time

import duckdb

from benchmarks.systems import common as c

MAX_LINE = 1 << 30


def _q(s: str) -> str:
    """A SQL string literal."""
    return "'" + s.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _files(files: list[str]) -> str:
    return "[" + ", ".join(_q(f) for f in files) + "]"


MACROS = f"""
CREATE MACRO ptrim(s) AS CASE  -- trim(s, chars) is slow: only call it when an end is whitespace
    WHEN contains({_q(c.WHITESPACE)}, left(s, 1)) OR contains({_q(c.WHITESPACE)}, right(s, 1))
    THEN trim(s, {_q(c.WHITESPACE)}) ELSE s END;
CREATE MACRO jkind(v) AS CASE
    WHEN v IS NULL OR v = 'null' THEN NULL
    WHEN left(v, 1) = '"' THEN 's'
    WHEN left(v, 1) IN ('t', 'f') THEN 'b'
    WHEN left(v, 1) IN ('{{', '[') THEN 'o'
    WHEN regexp_full_match(v, '-?[0-9]+') THEN 'i'
    ELSE 'f' END;
CREATE MACRO epoch_int_us(n) AS CASE WHEN n >= {c.MILLIS_FROM} THEN n * 1000 ELSE n * 1000000 END;
CREATE MACRO tz_minutes(tz) AS CASE WHEN tz IN ('', 'Z') THEN 0 ELSE
    (CASE WHEN left(tz, 1) = '-' THEN -1 ELSE 1 END)
    * (CAST(substr(replace(tz, ':', ''), 2, 2) AS INTEGER) * 60
       + coalesce(TRY_CAST(nullif(substr(replace(tz, ':', ''), 4), '') AS INTEGER), 0)) END;
"""


def jsonl_source(con, files: list[str]) -> str:
    paths = "[" + ", ".join(_q("$." + f) for f in c.DECLARED) + "]"
    unset = "{" + ",".join(f'"{f}":null' for f in c.DECLARED) + "}"  # a merge patch removing the declared keys
    slots = ", ".join(f"jkind(j[{i + 1}]) AS {f}_k, s[{i + 1}] AS {f}_t" for i, f in enumerate(c.DECLARED))
    return f"""
    -- store_rejects: with ignore_errors alone, DuckDB 2.0.1 silently stops reading a file at its
    -- first bad row (e.g. invalid UTF-8); with it, only the bad rows are skipped.
    WITH lines AS (
        SELECT rtrim(line, chr(13)) AS raw, _source AS source
        FROM read_csv({_files(files)}, columns = {{'line': 'VARCHAR'}}, header = false, auto_detect = false,
                      delim = '\x01', quote = '', escape = '', new_line = '\\n', strict_mode = false,
                      ignore_errors = true, store_rejects = true, max_line_size = {MAX_LINE}, filename = '_source')
        WHERE trim(line, {_q(c.ASCII_WHITESPACE)}) <> ''
    ), objects AS (
        SELECT raw, source, json_extract(raw, {paths}) AS j, json_extract_string(raw, {paths}) AS s
        FROM lines
        WHERE json_valid(raw) AND starts_with(ltrim(raw, ' ' || chr(9) || chr(13)), '{{')  -- a JSON object
          AND CASE WHEN raw ILIKE '%nan%' OR raw ILIKE '%inf%' OR regexp_matches(raw, ',[ \t\n\r]*[\\]}}]')
                   THEN NOT regexp_matches(regexp_replace(raw, {_q(c.JSON_STRING_RE)}, '""', 'g'), {_q(c.NON_STRICT_JSON_RE)})
                   ELSE true END
    )
    SELECT raw, NULL AS row, source, {slots}, nullif(json_merge_patch(raw, {_q(unset)}), '{{}}') AS extras
    FROM objects"""


def csv_source(con, files: list[str]) -> str:
    with open(files[0], newline="", encoding="utf-8", errors="replace") as fh:
        header = [h.strip() for h in next(csv.reader(line for line in fh if line.strip()))]
    columns = "{" + ", ".join(f"{_q(h)}: 'VARCHAR'" for h in header) + "}"
    slots = ", ".join(
        f"CASE WHEN {_ident(f)} IS NOT NULL THEN 's' END AS {f}_k, {_ident(f)} AS {f}_t"
        if f in header
        else f"NULL AS {f}_k, NULL AS {f}_t"
        for f in c.DECLARED
    )
    others = [h for h in header if h not in c.DECLARED]
    entries = ", ".join(f"struct_pack(k := {_q(h)}, v := {_ident(h)})" for h in others)
    extras = (
        f"nullif(to_json(map_from_entries(list_filter([{entries}], lambda e: e.v IS NOT NULL))), '{{}}')"
        if others
        else "NULL"
    )
    raw = "concat_ws(',', " + ", ".join(f"coalesce({_ident(h)}, '')" for h in header) + ")"
    return f"""
    SELECT {raw} AS raw, NULL AS row, _source AS source, {slots}, {extras} AS extras
    FROM read_csv({_files(files)}, columns = {columns}, header = true, auto_detect = false, delim = ',',
                  quote = '"', escape = '"', strict_mode = true, ignore_errors = true, store_rejects = true,
                  max_line_size = {MAX_LINE}, filename = '_source')"""


def _typed_slot(name: str, sql_type: str) -> str:
    col = _ident(name)
    t = sql_type.upper()
    if t == "VARCHAR":
        kind, text = "'s'", col
    elif t.endswith("INT") or t in ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UHUGEINT"):
        kind, text = "'i'", f"CAST({col} AS VARCHAR)"
    elif t in ("FLOAT", "DOUBLE") or t.startswith("DECIMAL"):
        kind, text = "'f'", f"CAST(CAST({col} AS DOUBLE) AS VARCHAR)"
    elif t == "BOOLEAN":
        kind, text = "'b'", f"CAST({col} AS VARCHAR)"
    elif t.startswith("TIMESTAMP") or t == "DATE":
        kind, text = "'t'", f"CAST(epoch_us(CAST({col} AS TIMESTAMP)) AS VARCHAR)"
    else:
        kind, text = "'o'", f"CAST({col} AS VARCHAR)"
    return f"CASE WHEN {col} IS NOT NULL THEN {kind} END AS {name}_k, {text} AS {name}_t"


def typed_source(con, relation: str) -> str:
    """Slots from a typed relation (parquet, avro) that has a ``_source`` column."""
    schema = [(r[0], r[1]) for r in con.sql(f"DESCRIBE SELECT * FROM {relation}").fetchall() if r[0] != "_source"]
    types = dict(schema)
    slots = ", ".join(_typed_slot(f, types[f]) if f in types else f"NULL AS {f}_k, NULL AS {f}_t" for f in c.DECLARED)
    others = [n for n, _ in schema if n not in c.DECLARED]
    extras = "json_object(" + ", ".join(f"{_q(n)}, {_ident(n)}" for n in others) + ")" if others else "NULL"
    row = "struct_pack(" + ", ".join(f"{_ident(n)} := {_ident(n)}" for n, _ in schema) + ")"
    return f"SELECT NULL AS raw, {row} AS row, _source AS source, {slots}, {extras} AS extras FROM {relation}"


def avro_relation(con, files: list[str]) -> str:
    try:
        con.sql("LOAD avro")
        return f"read_avro({_files(files)}, filename = '_source')"
    except duckdb.Error:
        con.register("avro_input", c.read_avro(files))  # no extension offline: fastavro -> Arrow
        return "avro_input"


VALIDATE = f"""
CREATE TABLE valid AS
WITH trimmed AS (
    SELECT *, {", ".join(f"ptrim({f}_t) AS {f}_s" for f in c.DECLARED)} FROM slots
), norm AS (
    SELECT raw, row, source, extras,
        CASE event_id_k WHEN 's' THEN nullif(event_id_s, '') WHEN 'i' THEN event_id_t END AS event_id,
        CASE user_id_k WHEN 's' THEN nullif(user_id_s, '') WHEN 'i' THEN user_id_t END AS user_id,
        CASE WHEN event_type_k = 's' THEN lower(event_type_s) END AS event_type,
        amount_k IS NULL AS amount_absent,
        CASE WHEN amount_k IN ('i', 'f') OR (amount_k = 's' AND regexp_full_match(amount_s, {_q(c.NUMBER_RE)}))
             THEN TRY_CAST(amount_s AS DOUBLE) END AS amount_x,
        CASE WHEN currency_k IS NULL THEN 'USD'
             WHEN currency_k = 's' AND regexp_full_match(currency_s, {_q(c.CURRENCY_RE)}) THEN upper(currency_s) END
            AS currency,
        ts_k, ts_s AS ts_t,
        lower(email_s) AS email_c,
        upper(country_s) AS country_c
    FROM trimmed
), parts AS (
    SELECT *,
        CASE WHEN ts_k = 's' AND regexp_full_match(ts_t, {_q(c.ISO_RE)})
             THEN regexp_extract(ts_t, {_q(c.ISO_RE)}, {list(c.ISO_GROUPS)}) END AS iso,
        regexp_full_match(email_c, {_q(c.EMAIL_RE)}) AS email_ok,
        regexp_full_match(country_c, {_q(c.COUNTRY_RE)}) AS country_ok
    FROM norm
), timed AS (
    SELECT *, CASE
        WHEN ts_k = 't' THEN TRY_CAST(ts_t AS HUGEINT)
        WHEN ts_k = 'i' OR (ts_k = 's' AND regexp_full_match(ts_t, {_q(c.INT_RE)}))
        THEN epoch_int_us(CAST(TRY_CAST(ts_t AS BIGINT) AS HUGEINT))
        WHEN ts_k = 'f' OR (ts_k = 's' AND regexp_full_match(ts_t, {_q(c.NUMBER_RE)}))
        THEN CASE WHEN abs(TRY_CAST(ts_t AS DOUBLE)) <= 1e12
                  THEN CAST(round_even(TRY_CAST(ts_t AS DOUBLE) * 1000000, 0) AS HUGEINT) END
        WHEN iso IS NOT NULL AND TRY_CAST(iso.date AS DATE) IS NOT NULL
             AND coalesce(TRY_CAST(nullif(iso.hh, '') AS INTEGER), 0) < 24
             AND coalesce(TRY_CAST(nullif(iso.mi, '') AS INTEGER), 0) < 60
             AND coalesce(TRY_CAST(nullif(iso.ss, '') AS INTEGER), 0) < 60
             AND abs(tz_minutes(iso.tz)) < 1440
        THEN CAST(TRY_CAST(iso.date AS DATE) - DATE '1970-01-01' AS HUGEINT) * {c.DAY_US}
             + coalesce(TRY_CAST(nullif(iso.hh, '') AS HUGEINT), 0) * 3600000000
             + coalesce(TRY_CAST(nullif(iso.mi, '') AS HUGEINT), 0) * 60000000
             + coalesce(TRY_CAST(nullif(iso.ss, '') AS HUGEINT), 0) * 1000000
             + coalesce(TRY_CAST(nullif(rpad(left(iso.frac, 6), 6, '0'), '000000') AS HUGEINT), 0)
             - CAST(tz_minutes(iso.tz) AS HUGEINT) * 60000000
        END AS ts_us
    FROM parts
)
SELECT event_id, user_id, event_type,
    floor(amount_x * 100 + 0.5::DOUBLE) / 100 AS amount,
    currency, CAST(ts_us AS BIGINT) AS ts_us,
    CASE WHEN email_ok THEN email_c END AS email,
    CASE WHEN country_ok THEN country_c END AS country,
    email_c IS NOT NULL AND NOT email_ok AS bad_email,
    country_c IS NOT NULL AND NOT country_ok AS bad_country,
    extras, raw, row, source
FROM timed
WHERE event_id IS NOT NULL AND user_id IS NOT NULL
  AND event_type IN {tuple(c.EVENT_TYPES)}
  AND CASE WHEN amount_absent THEN event_type NOT IN {tuple(c.PAID_TYPES)}
           ELSE isfinite(amount_x) AND amount_x >= 0 END
  AND currency IS NOT NULL
  AND ts_us >= {c.TS_MIN_US} AND ts_us < {c.TS_MAX_US};

-- One row per event_id: the earliest ts, ties broken by the smallest raw text (the row as JSON for
-- typed input, computed only where an event_id repeats).
CREATE TABLE curated AS
WITH repeated AS (SELECT event_id FROM valid GROUP BY event_id HAVING count(*) > 1),
keyed AS (
    SELECT v.* EXCLUDE (bad_email, bad_country, raw, row, source),
        CASE WHEN v.event_id IN (SELECT event_id FROM repeated) THEN coalesce(v.raw, CAST(to_json(v.row) AS VARCHAR)) END
            AS tie
    FROM valid v
)
SELECT unnest(arg_min(k, (k.ts_us, k.tie))), make_timestamp(min(k.ts_us)) AS t
FROM keyed k GROUP BY k.event_id;
"""


def write_outputs(con, out: str) -> None:
    curated = os.path.join(out, "curated")
    con.sql(f"""
    COPY (
        SELECT event_id, user_id, event_type, amount, currency, CAST(t AS TIMESTAMPTZ) AS ts, email,
            lower(regexp_extract(email, '@([^@]+)$', 1)) AS email_domain, country,
            CAST(hour(t) AS INTEGER) AS hour_of_day, CAST(isodow(t) - 1 AS INTEGER) AS day_of_week,
            isodow(t) >= 6 AS is_weekend, extras, strftime(t, '%Y-%m-%d') AS dt
        FROM curated
    ) TO {_q(curated)} (FORMAT parquet, PARTITION_BY (dt), OVERWRITE_OR_IGNORE)""")
    con.sql(f"""
    COPY (
        SELECT CAST(make_timestamp(w) AS TIMESTAMPTZ) AS window_start,
            CAST(make_timestamp(w + {c.HOUR_US}) AS TIMESTAMPTZ) AS window_end, event_type, country,
            CAST(count(*) AS BIGINT) AS events, CAST(count(DISTINCT user_id) AS BIGINT) AS users,
            CAST(sum(coalesce(CAST(round(amount * 100) AS HUGEINT), 0)) AS DOUBLE) / 100 AS amount_sum
        FROM (SELECT *, ts_us - ts_us % {c.HOUR_US} AS w FROM curated)
        GROUP BY w, event_type, country
        ORDER BY window_start, event_type, country
    ) TO {_q(os.path.join(out, "aggregates", "part-0.parquet"))} (FORMAT parquet)""")


def main(argv: list[str] | None = None) -> int:
    args = c.parse_args("python -m benchmarks.systems.duckdb", argv)
    started = time.perf_counter()
    c.prepare_output(args.output)
    con = duckdb.connect()
    con.sql(f"SET threads = {args.threads}")
    con.sql("SET TimeZone = 'UTC'")
    con.sql("SET preserve_insertion_order = false")
    con.sql(MACROS)
    if args.format == "jsonl":
        source = jsonl_source(con, args.files)
    elif args.format == "csv":
        source = csv_source(con, args.files)
    elif args.format == "parquet":
        source = typed_source(con, f"read_parquet({_files(args.files)}, union_by_name = true, filename = '_source')")
    else:
        source = typed_source(con, avro_relation(con, args.files))
    con.sql(f"CREATE TEMP VIEW slots AS {source}")
    con.sql(VALIDATE)
    write_outputs(con, args.output)
    counts = con.sql(f"""
        SELECT (SELECT count(*) FROM valid) AS valid, (SELECT count(*) FROM curated) AS curated,
            (SELECT count(*) FROM valid) - (SELECT count(*) FROM curated) AS duplicates,
            (SELECT count(*) FROM (SELECT DISTINCT ts_us - ts_us % {c.HOUR_US}, event_type, country FROM curated))
                AS aggregates,
            (SELECT count_if(bad_email) FROM valid) AS invalid_email,
            (SELECT count_if(bad_country) FROM valid) AS invalid_country""").fetchall()[0]
    names = ("valid", "curated", "duplicates", "aggregates", "invalid_email", "invalid_country")
    c.finish("duckdb", args, started, dict(zip(names, counts)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
