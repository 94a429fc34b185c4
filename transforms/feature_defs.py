"""Per-entity feature definitions: what a feature means, once, for every way of computing it.

A :class:`FeatureSet` is plain data (JSON-able with :meth:`FeatureSet.to_dict`): the entity key
column, the event-time column, the features and the columns carried along. The batch composite
(``transforms.entity_features``) computes it over history; a streaming computation reads the
same object, and both must give identical values. So the meaning is fixed here, precisely.

**As of an event.** Each event's features are computed as of its own time ``t``: from the
events of the same entity with time ``<= t``, the event itself and every other event at exactly
``t`` included (events at the same time are one instant: they get identical feature values).
Events later than ``t`` never count, whatever order the events arrived in.

**Trailing aggregates** (:class:`Trailing`) take the entity's events in ``(t - range, t]``: the
lower bound is exclusive (an event exactly ``range`` before ``t`` is out), the upper inclusive.
``where`` (an expression over the event's columns, see ``transforms.quality.expect_expr``) keeps
the events for which it is true (null counts as false).

- ``count``: events;
- ``sum``: of ``column`` (null as 0). Integers and booleans (trues) sum exactly as int64; a
  decimal sums exactly in its own scale; a double is first rounded to whole units of
  ``10**-decimals`` (half to even), summed exactly as int64 and divided back (one IEEE division),
  so the result does not depend on the order the values were added in;
- ``count_distinct``: distinct non-null values of ``column``;
- ``last``: the value of the latest event with a non-null value; of several such events at that
  same latest time, the largest value (Arrow's order), so arrival order never matters. Null
  when no event in the range has a value.

**Session features** (:class:`SessionFeature`): an entity's session is a run of events each less
than ``gap`` after the one before (a silence of ``gap`` or more starts a new session: Beam's
session windows, ``[first, last + gap)``, merged). As of ``t``, the session holding the event:

- ``session_length``: seconds from the session's first event to ``t`` (float64);
- ``session_events``: its events with time ``<= t``;
- ``session_converted``: whether one of them matches ``where``.

**Ratios** (:class:`Ratio`): ``numerator / denominator`` of two features defined before it,
float64; null when the denominator is 0 or null.

Events without an entity or a time have no features: the composites send them to the dead
letters (``missing_entity``, ``missing_time``), as they do a double to sum that is not finite
or too large for its units (``invalid_value``).

**What a streaming computation needs to match.** An event's features are final once every event
of its entity with a time ``<= t`` has been seen: a stream emits them when the watermark passes
``t`` (an event-time timer per entity), so events arriving out of order within the allowed
lateness count exactly as in batch. The events that can still matter for an entity are those in
``(watermark - max_range_seconds, ...]`` and those of its current session (a session can be
longer than every range); ``feature_kernels.prepare`` and ``compute`` applied to those events
plus the new ones give the new events' rows, the same functions the batch composite runs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import pyarrow as pa

__all__ = [
    "AGGREGATE_FNS",
    "FeatureError",
    "FeatureSet",
    "Ratio",
    "SESSION_FNS",
    "SessionFeature",
    "Trailing",
    "feature_from_dict",
]

AGGREGATE_FNS = ("count", "sum", "count_distinct", "last")
SESSION_FNS = ("session_length", "session_events", "session_converted")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# fn -> the spec's type words of the columns it takes.
_TAKES = {
    "sum": ("integer", "boolean", "double", "decimal"),
    "count_distinct": ("string", "integer", "double", "decimal", "boolean", "timestamp"),
    "last": ("string", "integer", "double", "decimal", "boolean", "timestamp"),
}
_KINDS = [
    (pa.types.is_string, "string"),
    (pa.types.is_large_string, "string"),
    (pa.types.is_boolean, "boolean"),
    (pa.types.is_integer, "integer"),
    (pa.types.is_floating, "double"),
    (pa.types.is_decimal, "decimal"),
    (pa.types.is_timestamp, "timestamp"),
]
_NUMERIC = ("integer", "double", "decimal")
MAX_DECIMAL_PRECISION = 18  # decimals sum in int64 units of their scale


class FeatureError(ValueError):
    """A definition is unusable; ``key`` is where, as a dotted path (``features.revenue_7d.column``)."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key, self.message = key, message


def kind_of(t: pa.DataType) -> str:
    """The spec's word for an Arrow type (string, integer, double, decimal, boolean, timestamp)."""
    for test, name in _KINDS:
        if test(t):
            return name
    return str(t)


def _whole(value, what: str, key: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise FeatureError(key, f"{what} must be a whole number of seconds >= {minimum}, got {value!r}")
    return value


@dataclass(frozen=True)
class Trailing:
    """An aggregate of the entity's events in ``(t - range_seconds, t]`` (see the module doc).

    Args:
        name: Output column.
        fn: ``count``, ``sum``, ``count_distinct`` or ``last``.
        range_seconds: The trailing range.
        column: The aggregated column (all but ``count``).
        where: An expression: only events for which it is true count.
        decimals: ``sum`` of a double only (required there): whole units summed.
    """

    name: str
    fn: str
    range_seconds: int
    column: str | None = None
    where: str | None = None
    decimals: int | None = None

    def __post_init__(self):
        key = f"features.{self.name}"
        if self.fn not in AGGREGATE_FNS:
            raise FeatureError(f"{key}.fn", f"unknown trailing aggregate {self.fn!r} ({', '.join(AGGREGATE_FNS)})")
        _whole(self.range_seconds, "range", f"{key}.range")
        if self.fn == "count" and self.column is not None:
            raise FeatureError(f"{key}.column", "count counts events: it takes no column (use where to choose them)")
        if self.fn != "count" and not self.column:
            raise FeatureError(key, f"{self.fn} needs a column")
        if self.decimals is not None:
            if self.fn != "sum":
                raise FeatureError(f"{key}.decimals", "decimals applies to a sum of a double column")
            if isinstance(self.decimals, bool) or not isinstance(self.decimals, int) or not 0 <= self.decimals <= 6:
                raise FeatureError(f"{key}.decimals", "must be a whole number from 0 to 6")


@dataclass(frozen=True)
class SessionFeature:
    """A feature of the entity's current session as of ``t`` (see the module doc).

    Args:
        name: Output column.
        fn: ``session_length``, ``session_events`` or ``session_converted``.
        gap_seconds: The silence that ends a session.
        where: ``session_converted`` only (required there): the converting event's condition.
    """

    name: str
    fn: str
    gap_seconds: int
    where: str | None = None

    def __post_init__(self):
        key = f"features.{self.name}"
        if self.fn not in SESSION_FNS:
            raise FeatureError(f"{key}.fn", f"unknown session feature {self.fn!r} ({', '.join(SESSION_FNS)})")
        _whole(self.gap_seconds, "gap", f"{key}.gap")
        if self.fn == "session_converted" and not self.where:
            raise FeatureError(key, "session_converted needs where: the condition of a converting event")
        if self.fn != "session_converted" and self.where is not None:
            raise FeatureError(f"{key}.where", f"{self.fn} takes no where (every event of the session counts)")


@dataclass(frozen=True)
class Ratio:
    """``numerator / denominator`` of two features defined before this one."""

    name: str
    numerator: str
    denominator: str


Feature = Trailing | SessionFeature | Ratio


def feature_from_dict(name: str, d: Mapping) -> Feature:
    """One feature from its spec form (``{fn, range, column, where, decimals, gap, numerator,
    denominator}``; durations already in seconds)."""
    fn = d.get("fn")
    allowed = {
        **{f: {"fn", "range", "column", "where", "decimals"} for f in AGGREGATE_FNS},
        **{f: {"fn", "gap", "where"} for f in SESSION_FNS},
        "ratio": {"fn", "numerator", "denominator"},
    }
    if fn not in allowed:
        known = ", ".join([*AGGREGATE_FNS, *SESSION_FNS, "ratio"])
        raise FeatureError(f"features.{name}.fn", f"unknown feature function {fn!r} ({known})")
    for k in d:
        if k not in allowed[fn]:
            raise FeatureError(f"features.{name}.{k}", f"{fn} takes no {k}")
    if fn in AGGREGATE_FNS:
        if "range" not in d:
            raise FeatureError(f"features.{name}", f"{fn} needs a range (e.g. 1h, 24h, 7d)")
        return Trailing(name, fn, d["range"], d.get("column"), d.get("where"), d.get("decimals"))
    if fn in SESSION_FNS:
        if "gap" not in d:
            raise FeatureError(f"features.{name}", f"{fn} needs a gap (e.g. 30m)")
        return SessionFeature(name, fn, d["gap"], d.get("where"))
    for k in ("numerator", "denominator"):
        if not isinstance(d.get(k), str):
            raise FeatureError(f"features.{name}", f"ratio needs a {k}: the name of a feature defined before it")
    return Ratio(name, d["numerator"], d["denominator"])


def _feature_dict(f: Feature) -> dict:
    if isinstance(f, Trailing):
        d = {"fn": f.fn, "range": f.range_seconds, "column": f.column, "where": f.where, "decimals": f.decimals}
    elif isinstance(f, SessionFeature):
        d = {"fn": f.fn, "gap": f.gap_seconds, "where": f.where}
    else:
        d = {"fn": "ratio", "numerator": f.numerator, "denominator": f.denominator}
    return {k: v for k, v in d.items() if v is not None}


@dataclass(frozen=True)
class FeatureSet:
    """Features of one entity kind, as of every event (see the module doc).

    Args:
        entity: The entity key column (string or integer).
        time: The event-time column (a timestamp).
        features: The features, in output order; a ratio refers to features before it.
        keep: Input columns carried into each feature row (e.g. the event's id).
    """

    entity: str
    time: str
    features: tuple[Feature, ...]
    keep: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "features", tuple(self.features))
        object.__setattr__(self, "keep", tuple(self.keep))
        for what, c in (("entity", self.entity), ("time", self.time)):
            if not isinstance(c, str) or not c:
                raise FeatureError(what, "must name a column")
        if self.entity == self.time:
            raise FeatureError("time", "must differ from the entity column")
        if not self.features:
            raise FeatureError("features", "needs at least one feature")
        taken = {self.entity: "the entity column", self.time: "the time column"}
        for i, c in enumerate(self.keep):
            if c in taken:
                raise FeatureError(f"keep.{i}", f"{c!r} is already {taken[c]}")
            taken[c] = "a kept column"
        defined: dict[str, Feature] = {}
        for f in self.features:
            if not isinstance(f.name, str) or not _NAME.fullmatch(f.name) or f.name.startswith("_"):
                raise FeatureError(f"features.{f.name}", "a feature name is a plain column name, not starting with _")
            if f.name in taken or f.name in defined:
                raise FeatureError(f"features.{f.name}", f"{f.name!r} is already {taken.get(f.name, 'a feature')}")
            if isinstance(f, Ratio):
                for part in ("numerator", "denominator"):
                    ref = getattr(f, part)
                    if ref not in defined:
                        later = (
                            " (features are defined before use)" if any(g.name == ref for g in self.features) else ""
                        )
                        raise FeatureError(f"features.{f.name}.{part}", f"no feature {ref!r} before it{later}")
            defined[f.name] = f

    # -- what it reads and writes -------------------------------------------------------------

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    @property
    def max_range_seconds(self) -> int:
        """The longest trailing range: how much of an entity's history a feature can see."""
        return max((f.range_seconds for f in self.features if isinstance(f, Trailing)), default=0)

    def expressions(self) -> dict[str, str]:
        """Feature name -> its ``where`` expression text."""
        return {f.name: f.where for f in self.features if getattr(f, "where", None)}

    def columns_read(self) -> tuple[str, ...]:
        """Input columns the features take directly (expression columns not included)."""
        cols = [self.entity, self.time, *self.keep]
        cols += [f.column for f in self.features if isinstance(f, Trailing) and f.column]
        return tuple(dict.fromkeys(cols))

    def output_types(self, inputs: Mapping[str, pa.DataType], where_types: Mapping[str, pa.DataType] = {}) -> dict:
        """Output column -> Arrow type, checking every column against ``inputs`` (FeatureError
        at the first mistake). ``where_types``: the type each ``where`` evaluates to (the caller
        parses the expressions; each must be boolean)."""

        def need(column: str, key: str, kinds: tuple[str, ...] = (), what: str = "column") -> pa.DataType:
            if column not in inputs:
                raise FeatureError(key, f"no column {column!r} reaches this step; columns: {', '.join(inputs)}")
            t = inputs[column]
            if kinds and kind_of(t) not in kinds:
                raise FeatureError(key, f"{what} {column!r} must be {' or '.join(kinds)}, but it is {kind_of(t)}")
            return t

        out = {
            self.entity: need(self.entity, "entity", ("string", "integer"), "the entity column"),
            self.time: need(self.time, "time", ("timestamp",), "the time column"),
        }
        for i, c in enumerate(self.keep):
            out[c] = need(c, f"keep.{i}", _TAKES["last"], "a kept column")
        for name, t in where_types.items():
            if not pa.types.is_boolean(t) and not pa.types.is_null(t):
                raise FeatureError(f"features.{name}.where", f"must be a condition (true or false), not {kind_of(t)}")
        for f in self.features:
            key = f"features.{f.name}"
            if isinstance(f, Trailing):
                if f.fn == "count":
                    out[f.name] = pa.int64()
                    continue
                t = need(f.column, f"{key}.column", _TAKES[f.fn], f"{f.fn} of")
                if f.fn == "count_distinct":
                    out[f.name] = pa.int64()
                elif f.fn == "last":
                    out[f.name] = t
                else:
                    out[f.name] = _sum_type(f, t, key)
            elif isinstance(f, SessionFeature):
                out[f.name] = {"session_length": pa.float64(), "session_events": pa.int64(),
                               "session_converted": pa.bool_()}[f.fn]  # fmt: skip
            else:
                for part in ("numerator", "denominator"):
                    ref = getattr(f, part)
                    if kind_of(out[ref]) not in _NUMERIC:
                        raise FeatureError(f"{key}.{part}", f"{ref!r} is {kind_of(out[ref])}, not a number")
                out[f.name] = pa.float64()
        return out

    # -- as data --------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """JSON-able form (durations in seconds); :meth:`from_dict` reads it back."""
        return {
            "entity": self.entity,
            "time": self.time,
            "keep": list(self.keep),
            "features": {f.name: _feature_dict(f) for f in self.features},
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> FeatureSet:
        features = tuple(feature_from_dict(name, spec) for name, spec in d["features"].items())
        return cls(d["entity"], d["time"], features, tuple(d.get("keep", ())))


def _sum_type(f: Trailing, t: pa.DataType, key: str) -> pa.DataType:
    kind = kind_of(t)
    if kind == "double":
        if f.decimals is None:
            raise FeatureError(
                key, f"a sum of the double column {f.column!r} needs decimals (it is summed exactly in whole units "
                "of 10^-decimals, so every way of computing it gives the same value)"
            )  # fmt: skip
        return pa.float64()
    if f.decimals is not None:
        raise FeatureError(f"{key}.decimals", "decimals applies to a sum of a double column")
    if kind == "decimal":
        if t.precision > MAX_DECIMAL_PRECISION:
            raise FeatureError(f"{key}.column", f"a decimal to sum has at most {MAX_DECIMAL_PRECISION} digits, "
                                                f"{f.column!r} has {t.precision}")  # fmt: skip
        return pa.decimal128(38, t.scale)
    return pa.int64()
