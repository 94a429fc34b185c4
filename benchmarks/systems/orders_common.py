"""What the ``orders`` peers share: the contract's constants, the CLI, and reading inputs.

The peers implement ``beam_pipelines/pipelines/orders.yaml`` over its contract
``pipelines/schemas/orders/v2.yaml`` (v1 records upcast: ``coupon`` read as ``promo_code``,
``channel`` absent means web, quantity a long). The constants below are that contract's, and
``tests/e2e/test_peers_orders.py`` checks them against the YAML. The regular expressions are
written for both RE2 (DuckDB) and Rust's regex (Polars), like those of ``common``.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil

from benchmarks.systems import common as c

# Contract v2, in declaration order: a record's first failing field names its dead letter.
FIELDS = (
    "order_id", "customer_id", "region", "status", "amount", "quantity", "is_gift", "promo_code", "created_at",
    "updated_at", "channel",
)  # fmt: skip
ALIASES = {"promo_code": "coupon"}  # a field -> its former (v1) name
READ = FIELDS + tuple(ALIASES.values())  # the fields a record is read for: former names are not undeclared
REGIONS = ("north", "south", "east", "west", "central")
STATUSES = ("placed", "paid", "shipped", "delivered", "cancelled", "returned")
CHANNELS = ("web", "app", "store", "phone")
DEFAULT_CHANNEL = "web"
AMOUNT_PRECISION, AMOUNT_SCALE = 18, 2
QUANTITY_MIN, QUANTITY_MAX = 1, 1000
PROMO_RE = r"^[A-Za-z0-9]{3,32}$"
TRUE_WORDS = ("true", "1", "yes", "t", "y")
FALSE_WORDS = ("false", "0", "no", "f", "n")
# The spec's AddColumns and aggregate.
OPEN_STATUSES = ("placed", "paid", "shipped")
DAY_US = c.DAY_US

# Number shapes: as the project's rules read them (``\d`` is ASCII in RE2 and spelled out for Rust).
NUMBER_RE = c.NUMBER_RE
INT_RE = c.INT_RE
INT18_RE = r"^[+-]?[0-9]{1,18}$"  # integer strings a timestamp reads as epoch seconds/milliseconds
# ISO-8601 as the timestamp rule takes it, a group per part (date, hh, mi, ss, fraction, zone):
# T or space, optional seconds and fraction, Z or an offset; T and Z in either case.
ISO_RE = (
    r"^([0-9]{4}-[0-9]{2}-[0-9]{2})"
    r"(?:[Tt ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]+))?)?([Zz]|[+-][0-9]{2}(?::?[0-9]{2})?)?)?$"
)
TS_MIN_US, TS_MAX_US = c.TS_MIN_US, c.TS_MAX_US
MILLIS_FROM = c.MILLIS_FROM
FLOAT_INTS = 2**53  # a float beyond this no longer stands for one integer

CURATED_COLUMNS = (
    "order_id", "customer_id", "region", "status", "amount", "quantity", "is_gift", "promo_code", "channel",
    "created_at", "updated_at", "is_open", "order_hour", "extras",
)  # fmt: skip


def parse_args(prog: str, argv: list[str] | None = None) -> argparse.Namespace:
    return c.parse_args(prog, argv, "The orders pipeline (orders.yaml) as a peer system.",
                        "curated/, aggregates/, dlq/, _run/")  # fmt: skip


def prepare_output(out: str) -> None:
    c.prepare_output(out)
    shutil.rmtree(os.path.join(out, "dlq"), ignore_errors=True)
    os.makedirs(os.path.join(out, "dlq"), exist_ok=True)


def csv_header(path: str) -> tuple[str, ...]:
    """A CSV file's column names (its first non-blank line), stripped as the project strips them."""
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        return tuple(h.strip() for h in next(csv.reader(line for line in fh if line.strip()), []))


def by_header(files: list[str]) -> dict[tuple[str, ...], list[str]]:
    """CSV files grouped by header: v1 and v2 files of one run have different columns."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for path in files:
        groups.setdefault(csv_header(path), []).append(path)
    return groups
