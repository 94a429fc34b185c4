"""Whether one contract version can read data written under another, after Confluent Schema
Registry's compatibility modes for Avro.

BACKWARD: the new contract reads data written under the old; FORWARD: the old reads data
written under the new; FULL: both. A ``_transitive`` mode checks against every earlier version,
the plain one against the latest only. Every rule is one question: can a reader contract read
what a writer contract let through? The rules are listed in ``contracts/README.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from beam_pipelines.contracts.checks import iso_instant
from beam_pipelines.contracts.model import Contract, Field

__all__ = ["MODES", "Problem", "check_compatibility", "check_history", "is_compatible"]

MODES = ("backward", "backward_transitive", "forward", "forward_transitive", "full", "full_transitive")
# Reading a value of the writer's type as the reader's: the same column type, or a promotion.
_READS = {
    ("int", "long"),
    ("int", "double"),
    ("long", "double"),
    ("id", "string"),
    ("string", "id"),
}
_NUMERIC = ("int", "long", "double", "decimal")
# What a reader's evolution.columns does with a field it does not declare, where that breaks reading.
_REFUSES = {"discard_row": "dead-letters records that carry it", "freeze": "fails the run on records that carry it"}


@dataclass(frozen=True)
class Problem:
    """One reason two contracts are not (or may not be) compatible.

    Args:
        place: Where, in the contracts' terms (``fields.amount.type``).
        message: What breaks, which data, which direction.
        severity: ``error`` (incompatible) or ``warning`` (data that passed before may now fail).
    """

    place: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        return f"{self.severity}: {self.place}: {self.message}"


def is_compatible(problems: Sequence[Problem]) -> bool:
    """True when no problem is an error (warnings allowed)."""
    return not any(p.severity == "error" for p in problems)


def check_compatibility(old: Contract, new: Contract, mode: str = "backward") -> list[Problem]:
    """The problems of replacing ``old`` by ``new`` under ``mode`` (a transitive mode, given two
    contracts, is its plain mode; see ``check_history``)."""
    base = _base(mode)
    w_old, w_new = _labels(old, new)
    problems = []
    if old.name != new.name:
        problems.append(Problem("name", f"comparing different contracts {old.name!r} and {new.name!r}", "warning"))
    elif new.version <= old.version:
        problems.append(Problem("version", f"v{new.version} is not after v{old.version}", "warning"))
    if base in ("backward", "full"):
        problems += _read(writer=old, reader=new, direction="backward", w=w_old, r=w_new)
    if base in ("forward", "full"):
        problems += _read(writer=new, reader=old, direction="forward", w=w_new, r=w_old)
    return problems


def check_history(earlier: Sequence[Contract], new: Contract, mode: str = "backward") -> list[Problem]:
    """The problems of adding ``new`` after ``earlier`` (oldest first): against every earlier
    version in a ``_transitive`` mode, else against the last one."""
    if not earlier:
        raise ValueError("check_history needs at least one earlier contract")
    base = _base(mode)
    against = earlier if mode.endswith("_transitive") else earlier[-1:]
    seen, out = set(), []
    for old in against:
        for p in check_compatibility(old, new, base):
            if p not in seen:
                seen.add(p)
                out.append(p)
    return out


def _base(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    return mode.removesuffix("_transitive")


def _labels(old: Contract, new: Contract) -> tuple[str, str]:
    if old.version != new.version:
        return f"v{old.version}", f"v{new.version}"
    return "the old contract", "the new contract"


@dataclass(frozen=True)
class _Pair:
    """A reading direction: data written under ``w`` read by ``r`` (labels), for messages."""

    w: str
    r: str
    direction: str

    def cannot(self) -> str:
        return f"data written under {self.w} cannot be read by {self.r} ({self.direction})"

    def may_fail(self) -> str:
        return f"data written under {self.w} may fail {self.r} ({self.direction})"


def _match(reader: Field, writer: Contract) -> Field | None:
    """The writer's field the reader's field reads: the same name, else one of its aliases."""
    by_name = {f.name: f for f in writer.fields}
    if reader.name in by_name:
        return by_name[reader.name]
    return next((by_name[a] for a in reader.aliases if a in by_name), None)


def _read(writer: Contract, reader: Contract, direction: str, w: str, r: str) -> list[Problem]:
    """What keeps ``reader`` from reading data written under ``writer``."""
    pair = _Pair(w, r, direction)
    problems: list[Problem] = []
    matched: set[str] = set()
    for rf in reader.fields:
        wf = _match(rf, writer)
        if wf is None:
            problems += _absent(rf, pair)
            continue
        matched.add(wf.name)
        name = rf.name if direction == "backward" else wf.name  # the new contract's name for the field
        problems += _field(wf, rf, f"fields.{name}", pair)
    for wf in writer.fields:
        if wf.name not in matched:
            problems += _undeclared(wf, reader, pair)
    return problems


def _absent(rf: Field, pair: _Pair) -> list[Problem]:
    """The reader has a field the writer's data lacks (added in backward, removed in forward)."""
    if rf.default is not None or not (rf.required or rf.required_if):
        return []
    change = "added" if pair.direction == "backward" else "removed"
    need = "required" if rf.required else f"required when {rf.required_if.describe()}"
    return [Problem(f"fields.{rf.name}", f"{change}; {pair.r} has it {need} without a default, so {pair.cannot()}")]


def _undeclared(wf: Field, reader: Contract, pair: _Pair) -> list[Problem]:
    """The writer's data carries a field the reader does not declare: its evolution.columns decides."""
    policy = reader.evolution.columns
    change = "removed" if pair.direction == "backward" else "added"
    place = f"fields.{wf.name}"
    if policy in _REFUSES:
        why = f"{pair.r} {_REFUSES[policy]} (evolution.columns: {policy})"
        return [Problem(place, f"{change}; {why}, so {pair.cannot()}")]
    if policy == "discard_value":
        return [Problem(place, f"{change}; {pair.r} drops its values (evolution.columns: discard_value)", "warning")]
    return []


def _field(wf: Field, rf: Field, place: str, pair: _Pair) -> list[Problem]:
    """A field both declare: its type, then whether the reader accepts every value the writer did."""
    typed = _type(wf, rf, place, pair)
    if typed:
        return typed
    return _required(wf, rf, place, pair) + _values(wf, rf, place, pair) + _narrowing(wf, rf, place, pair)


def _type(wf: Field, rf: Field, place: str, pair: _Pair) -> list[Problem]:
    if wf.type == rf.type == "decimal":
        shown = f"{wf.type_text} -> {rf.type_text}"
        if wf.scale != rf.scale:
            return [Problem(f"{place}.scale", f"{shown} changes the scale; {pair.cannot()}")]
        if rf.precision < wf.precision:
            return [Problem(f"{place}.precision", f"{shown} narrows the precision; {pair.cannot()}")]
        return []
    if wf.type == rf.type or (wf.type, rf.type) in _READS:
        return []
    shown = f"{wf.type_text} -> {rf.type_text}"
    if (rf.type, wf.type) in _READS:
        return [Problem(f"{place}.type", f"{shown} narrows; {pair.cannot()}")]
    return [Problem(f"{place}.type", f"{shown} changes the type; {pair.cannot()}")]


def _required(wf: Field, rf: Field, place: str, pair: _Pair) -> list[Problem]:
    if rf.default is not None or not wf.may_be_null:
        return []
    if rf.required:
        return [
            Problem(
                f"{place}.required",
                f"{pair.r} requires it without a default but {pair.w} lets it be null, so {pair.cannot()}",
            )
        ]
    ri, wi = rf.required_if, wf.required_if
    if ri and not (wi and wi.field == ri.field and set(ri.values) <= set(wi.values)):
        return [
            Problem(
                f"{place}.required_if",
                f"{pair.r} requires it when {ri.describe()} but {pair.w} does not, so {pair.cannot()}",
            )
        ]
    return []


def _values(wf: Field, rf: Field, place: str, pair: _Pair) -> list[Problem]:
    out = []
    if rf.values is not None:
        if wf.values is None:
            msg = f"{pair.w} accepts any text but {pair.r} only {', '.join(rf.values)}"
        else:
            unknown = [v for v in wf.values if v not in rf.values]
            msg = f"{pair.r} does not know {', '.join(unknown)}, which {pair.w} accepts" if unknown else ""
        if msg:
            # Unlike Avro's enum default, a default here stands in only for an absent value.
            note = " (its default fills only absent values)" if rf.default is not None else ""
            out.append(Problem(f"{place}.values", f"{msg}{note}; {pair.cannot()}"))
    if rf.pattern is not None and rf.pattern != wf.pattern:
        was = f"{wf.pattern} -> {rf.pattern}" if wf.pattern else f"{rf.pattern} added"
        out.append(
            Problem(f"{place}.pattern", f"{was}: text {pair.w} accepted may not match; {pair.may_fail()}", "warning")
        )
    return out


def _narrowing(wf: Field, rf: Field, place: str, pair: _Pair) -> list[Problem]:
    """Bounds and rounding: readable, but values that passed the writer may fail or change."""
    out = []
    if rf.type in _NUMERIC + ("timestamp",) and wf.type in _NUMERIC + ("timestamp",):
        key = iso_instant if rf.type == "timestamp" else (lambda b: b)
        (w_lo, w_hi), (r_lo, r_hi) = wf.bounds(), rf.bounds()
        if r_lo is not None and (w_lo is None or key(r_lo) > key(w_lo)):
            was = "none" if w_lo is None else w_lo
            out.append(
                Problem(
                    f"{place}.minimum",
                    f"{was} -> {r_lo} narrows: values {pair.w} accepted may be below it; {pair.may_fail()}",
                    "warning",
                )
            )
        if r_hi is not None and (w_hi is None or key(r_hi) < key(w_hi)):
            was = "none" if w_hi is None else w_hi
            out.append(
                Problem(
                    f"{place}.maximum",
                    f"{was} -> {r_hi} narrows: values {pair.w} accepted may be above it; {pair.may_fail()}",
                    "warning",
                )
            )
    if rf.type == wf.type == "double" and rf.decimals is not None:
        if wf.decimals is None or rf.decimals < wf.decimals:
            was = "unrounded" if wf.decimals is None else f"{wf.decimals} places"
            out.append(
                Problem(
                    f"{place}.decimals",
                    f"{was} -> {rf.decimals} places: values {pair.w} wrote are rounded further ({pair.direction})",
                    "warning",
                )
            )
    return out
