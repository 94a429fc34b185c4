"""Declaring data-quality expectations: one dataclass per kind, validated at pipeline build.

Expectations come from Python (``Between(name="amount_range", column="amount", min=0)``) or from
a YAML file next to the pipeline module (:func:`load_expectations`)::

    expectations:
      - name: amount_not_negative
        kind: between
        column: amount
        min: 0
        severity: error
        action: quarantine

Every mistake (unknown kind or key, missing key, unknown column, type mismatch, bad regex or
expression, duplicate name, bad severity/action, malformed YAML) raises :class:`ExpectationError`
with one line naming the file, the expectation and the culprit.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc
import yaml

from transforms.quality.expect_expr import Expr, parse_expression, to_datetime

__all__ = [
    "AcceptedValues",
    "Between",
    "Expectation",
    "ExpectationError",
    "Expression",
    "Freshness",
    "KINDS",
    "NotNull",
    "Regex",
    "RowCountBetween",
    "Unique",
    "expectations_path",
    "load_expectations",
]

_NAME = re.compile(r"^[a-z0-9_]+$")
_AGE = re.compile(r"(\d+)([wdhms])")
_AGE_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}


class ExpectationError(ValueError):
    """A declared expectation is invalid; the message names the file, expectation and culprit."""


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _is_numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)


def _literal(value, dtype: pa.DataType, what: str) -> pa.Scalar:
    """``value`` as a scalar of column type ``dtype``, or ValueError naming ``what`` (a key)."""
    try:
        if _is_numeric(dtype):
            # YAML 1.1 reads `1e9` as a string, so numeric strings are accepted too.
            number = float(value) if isinstance(value, str) else value
            if not _is_number(number):
                raise TypeError
            return pa.scalar(number)
        if pa.types.is_timestamp(dtype):
            dt = to_datetime(value)
            return pa.scalar(dt if dtype.tz else dt.replace(tzinfo=None), dtype)
        if pa.types.is_date(dtype):
            d = value if isinstance(value, date) else date.fromisoformat(value)
            return pa.scalar(d, dtype)
        if _is_string(dtype) and isinstance(value, str):
            return pa.scalar(value, dtype)
        if pa.types.is_boolean(dtype) and isinstance(value, bool):
            return pa.scalar(value)
    except (TypeError, ValueError, AttributeError, pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    raise ValueError(f"{what} {value!r} does not fit column type {dtype}")


def _column_type(columns: Mapping[str, pa.DataType], column: str) -> pa.DataType:
    if column not in columns:
        raise ValueError(f"column {column!r} does not exist (columns: {', '.join(columns)})")
    return columns[column]


@dataclass(frozen=True, kw_only=True)
class Expectation:
    """Base of every expectation kind.

    Args:
        name: Unique name, ``[a-z0-9_]+``; dead letters carry reason ``expectation:<name>``.
        severity: ``warn`` or ``error`` (error failures are what :func:`failed_errors` returns).
    """

    kind: ClassVar[str] = ""
    row_level: ClassVar[bool] = False
    name: str
    severity: str = "error"

    def __post_init__(self):
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ExpectationError(f"expectation {self.name!r}: name must match [a-z0-9_]+")
        try:
            if self.severity not in ("warn", "error"):
                raise ValueError(f"severity {self.severity!r} must be 'warn' or 'error'")
            self._validate()
        except ValueError as e:
            raise ExpectationError(f"expectation {self.name!r}: {e}") from None

    def _validate(self) -> None:
        """Checks what needs no schema; raises ValueError."""

    def _check(self, columns: Mapping[str, pa.DataType]) -> None:
        """Checks columns and types against a schema; raises ValueError."""

    @property
    def field(self) -> str | None:
        """The column the expectation is about (None for expressions and row counts)."""
        return getattr(self, "column", None)

    def reads(self) -> frozenset[str] | None:
        """The columns the expectation reads, or None when it cannot say (a callable)."""
        return frozenset((self.field,)) if self.field else frozenset()

    @property
    def quarantines(self) -> bool:
        """Whether failing rows leave the output as dead letters (with their record text)."""
        return False

    def check(self, columns: Mapping[str, pa.DataType]) -> None:
        """Validates against the columns (name -> type) of the tables it will see.

        Raises:
            ExpectationError: naming the expectation and the culprit.
        """
        try:
            self._check(columns)
        except ValueError as e:
            raise ExpectationError(f"expectation {self.name!r}: {e}") from None


@dataclass(frozen=True, kw_only=True)
class _RowLevel(Expectation):
    row_level: ClassVar[bool] = True
    action: str = "count"

    def _validate(self) -> None:
        if self.action not in ("count", "quarantine"):
            raise ValueError(f"action {self.action!r} must be 'count' or 'quarantine'")

    @property
    def quarantines(self) -> bool:
        return self.action == "quarantine"


@dataclass(frozen=True, kw_only=True)
class NotNull(_RowLevel):
    """Rows pass when ``column`` is not null.

    Args:
        column: The column checked.
        action: ``count`` failing rows, or ``quarantine`` them (dead letters, removed from output).
    """

    kind: ClassVar[str] = "not_null"
    column: str

    def _check(self, columns):
        _column_type(columns, self.column)


@dataclass(frozen=True, kw_only=True)
class AcceptedValues(_RowLevel):
    """Rows pass when ``column`` is one of ``values`` (nulls pass unless ``allow_null`` is False).

    Args:
        column: The column checked.
        values: The accepted values (of the column's type).
        allow_null: Whether null passes.
        action: ``count`` or ``quarantine``.
    """

    kind: ClassVar[str] = "accepted_values"
    column: str
    values: tuple
    allow_null: bool = True

    def _validate(self):
        super()._validate()
        if isinstance(self.values, (str, bytes)) or not isinstance(self.values, Sequence) or not self.values:
            raise ValueError("values must be a non-empty list")
        object.__setattr__(self, "values", tuple(self.values))
        if not isinstance(self.allow_null, bool):
            raise ValueError(f"allow_null {self.allow_null!r} must be true or false")

    def value_set(self, dtype: pa.DataType) -> pa.Array:
        """The accepted values as an array of the column's type."""
        return pa.array([_literal(v, dtype, "value").as_py() for v in self.values], dtype)

    def _check(self, columns):
        self.value_set(_column_type(columns, self.column))


@dataclass(frozen=True, kw_only=True)
class Regex(_RowLevel):
    """Rows pass when string ``column`` matches ``pattern`` (RE2, searched; anchor with ^$); nulls pass.

    Args:
        column: A string column.
        pattern: An RE2 regular expression.
        action: ``count`` or ``quarantine``.
    """

    kind: ClassVar[str] = "regex"
    column: str
    pattern: str

    def _validate(self):
        super()._validate()
        if not isinstance(self.pattern, str) or not self.pattern:
            raise ValueError("pattern must be a non-empty string")
        try:
            pc.match_substring_regex(pa.array([""]), self.pattern)
        except pa.ArrowInvalid as e:
            raise ValueError(f"pattern {self.pattern!r}: {str(e).splitlines()[0]}") from None

    def _check(self, columns):
        t = _column_type(columns, self.column)
        if not _is_string(t):
            raise ValueError(f"regex needs a string column, {self.column!r} is {t}")


@dataclass(frozen=True, kw_only=True)
class Between(_RowLevel):
    """Rows pass when ``min <= column <= max`` (strict when ``inclusive`` is False); nulls pass.

    Args:
        column: A numeric, timestamp or date column.
        min: Lower bound (numbers; ISO-8601 strings for timestamp/date columns), or None.
        max: Upper bound, or None; at least one bound is required.
        inclusive: Whether the bounds themselves pass.
        action: ``count`` or ``quarantine``.
    """

    kind: ClassVar[str] = "between"
    column: str
    min: Any = None
    max: Any = None
    inclusive: bool = True

    def _validate(self):
        super()._validate()
        if self.min is None and self.max is None:
            raise ValueError("between needs 'min' and/or 'max'")
        if not isinstance(self.inclusive, bool):
            raise ValueError(f"inclusive {self.inclusive!r} must be true or false")

    def bounds(self, dtype: pa.DataType) -> tuple[pa.Scalar | None, pa.Scalar | None]:
        """``(min, max)`` as scalars comparable with a column of ``dtype`` (None when absent)."""
        if not (_is_numeric(dtype) or pa.types.is_timestamp(dtype) or pa.types.is_date(dtype)):
            raise ValueError(f"between needs a numeric, timestamp or date column, {self.column!r} is {dtype}")
        lo = None if self.min is None else _literal(self.min, dtype, "min")
        hi = None if self.max is None else _literal(self.max, dtype, "max")
        if lo is not None and hi is not None and lo.as_py() > hi.as_py():
            raise ValueError(f"min {self.min!r} is greater than max {self.max!r}")
        return lo, hi

    def _check(self, columns):
        self.bounds(_column_type(columns, self.column))


@dataclass(frozen=True, kw_only=True)
class Expression(_RowLevel):
    """Rows pass when ``expr`` is true (null or false fails).

    Args:
        expr: An expression string (see ``expect_expr``), or a callable ``table -> pa.BooleanArray``.
        action: ``count`` or ``quarantine``.
    """

    kind: ClassVar[str] = "expression"
    expr: str | Callable[[pa.Table], pa.Array]

    def _validate(self):
        super()._validate()
        if isinstance(self.expr, str):
            object.__setattr__(self, "expr", parse_expression(self.expr))
        elif not isinstance(self.expr, Expr) and not callable(self.expr):
            raise ValueError("expr must be an expression string or a callable table -> BooleanArray")

    def _check(self, columns):
        if isinstance(self.expr, Expr):
            self.expr.check(columns)

    def reads(self) -> frozenset[str] | None:
        return frozenset(self.expr.columns) if isinstance(self.expr, Expr) else None


@dataclass(frozen=True, kw_only=True)
class Unique(Expectation):
    """Passes when no non-null value of ``column`` occurs twice in the whole input (per window).

    Args:
        column: The column checked.
        action: Only ``count``: duplicates are reported, never quarantined.
    """

    kind: ClassVar[str] = "unique"
    column: str
    action: str = "count"

    def _validate(self):
        if self.action != "count":
            raise ValueError(f"action {self.action!r}: unique only allows 'count'")

    def _check(self, columns):
        _column_type(columns, self.column)


@dataclass(frozen=True, kw_only=True)
class RowCountBetween(Expectation):
    """Passes when the number of rows is within ``[min, max]``.

    Args:
        min: Least rows, or None.
        max: Most rows, or None; at least one bound is required.
    """

    kind: ClassVar[str] = "row_count_between"
    min: int | None = None
    max: int | None = None

    def _validate(self):
        if self.min is None and self.max is None:
            raise ValueError("row_count_between needs 'min' and/or 'max'")
        for key in ("min", "max"):
            v = getattr(self, key)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                raise ValueError(f"{key} {v!r} must be a non-negative integer")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}")


@dataclass(frozen=True, kw_only=True)
class Freshness(Expectation):
    """Passes when ``max(column) >= run_time - max_age``.

    Args:
        column: A timestamp column.
        max_age: How old the newest value may be, e.g. ``"36h"``, ``"90m"``, ``"7d"``, ``"1d12h"``.
    """

    kind: ClassVar[str] = "freshness"
    column: str
    max_age: str

    def _validate(self):
        self.age()

    def age(self) -> timedelta:
        """``max_age`` as a timedelta."""
        text = self.max_age if isinstance(self.max_age, str) else ""
        if not text or not re.fullmatch(r"(\d+[wdhms])+", text):
            raise ValueError(f"max_age {self.max_age!r} must look like '36h', '90m', '7d' or '1d12h'")
        return timedelta(seconds=sum(int(n) * _AGE_UNITS[u] for n, u in _AGE.findall(text)))

    def _check(self, columns):
        t = _column_type(columns, self.column)
        if not pa.types.is_timestamp(t):
            raise ValueError(f"freshness needs a timestamp column, {self.column!r} is {t}")


KINDS: dict[str, type[Expectation]] = {
    k.kind: k for k in (NotNull, AcceptedValues, Regex, Between, Expression, Unique, RowCountBetween, Freshness)
}


def _keys(cls: type[Expectation]) -> tuple[list[str], list[str]]:
    fields = [f for f in dataclasses.fields(cls) if f.init]
    required = [f.name for f in fields if f.default is dataclasses.MISSING]
    return required, [f.name for f in fields]


def _from_dict(item: Any, i: int) -> Expectation:
    if not isinstance(item, Mapping):
        raise ExpectationError(f"expectation #{i + 1}: must be a mapping, not {type(item).__name__}")
    name = item.get("name")
    where = f"expectation {name!r}" if name is not None else f"expectation #{i + 1}"
    kind = item.get("kind")
    if kind not in KINDS:
        raise ExpectationError(f"{where}: unknown kind {kind!r} (kinds: {', '.join(KINDS)})")
    cls = KINDS[kind]
    required, allowed = _keys(cls)
    for key in item:
        if key != "kind" and key not in allowed:
            raise ExpectationError(f"{where}: unknown key {key!r} for {kind} (keys: kind, {', '.join(allowed)})")
    for key in required:
        if key not in item:
            raise ExpectationError(f"{where}: missing key {key!r} for {kind}")
    return cls(**{k: v for k, v in item.items() if k != "kind"})


def _read(source) -> tuple[str, Any]:
    """``(label, items)`` from a path, YAML text, or a list of dicts/Expectations."""
    if isinstance(source, (list, tuple)):
        return "expectations", source
    is_path = isinstance(source, os.PathLike) or (
        isinstance(source, str) and "\n" not in source and source.endswith((".yaml", ".yml"))
    )
    label = Path(source).name if is_path else "expectations"
    try:
        text = Path(source).read_text(encoding="utf-8") if is_path else source
        doc = yaml.safe_load(text)
    except OSError as e:
        raise ExpectationError(f"{label}: cannot read {os.fspath(source)}: {e.strerror}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ExpectationError(f"{label}: malformed YAML{at}: {problem}") from None
    if not isinstance(doc, Mapping) or set(doc) != {"expectations"} or not isinstance(doc["expectations"], list):
        raise ExpectationError(f"{label}: must be a mapping with one key 'expectations' holding a list")
    return label, doc["expectations"]


def load_expectations(source, columns: Mapping[str, pa.DataType]) -> tuple[Expectation, ...]:
    """Loads and validates expectations against the columns of the tables they will check.

    Args:
        source: A path to a YAML file (``str`` ending in .yaml/.yml, or ``os.PathLike``), YAML text,
            or a list of dicts (the YAML items) and/or :class:`Expectation` objects.
        columns: Column name -> Arrow type of the tables checked.

    Returns:
        The expectations, in declaration order.

    Raises:
        ExpectationError: one line naming the file, the expectation and the culprit.
    """
    label, items = _read(source)
    out: list[Expectation] = []
    try:
        for i, item in enumerate(items):
            exp = item if isinstance(item, Expectation) else _from_dict(item, i)
            if any(e.name == exp.name for e in out):
                raise ExpectationError(f"expectation {exp.name!r}: duplicate name")
            exp.check(columns)
            out.append(exp)
    except ExpectationError as e:
        raise ExpectationError(f"{label}: {e}") from None
    return tuple(out)


def expectations_path(module_file: str) -> str:
    """The expectations file next to a pipeline module: ``pipelines/events.py`` ->
    ``pipelines/events.expectations.yaml``.

    Args:
        module_file: The module's ``__file__``.
    """
    p = Path(module_file)
    return str(p.with_name(p.stem + ".expectations.yaml"))
