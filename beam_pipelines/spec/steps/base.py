"""What every spec step type is: a config shape, a column check, and a composite.

A step type declares its ``config`` as a JSON Schema fragment (checked by ``shape.check`` and
published in the spec's JSON Schema), says which columns it reads and produces (``columns``:
the checker runs it over the spec before any data is read, so a missing column or a wrong type
is an error naming its place), and builds the project's composite (``build``). Steps are small
classes registered by their ``type`` name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import pyarrow as pa

from beam_pipelines.spec.yamlsrc import SpecError, did_you_mean, line_of, place_of

__all__ = ["Columns", "Context", "Outputs", "STEP_TYPES", "Step", "register", "type_name"]

# Column name -> Arrow type of the tables a step emits; None for raw or slot tables, which
# have no record columns yet (before Validate).
Columns = dict

STEP_TYPES: dict[str, type[Step]] = {}

_TYPE_NAMES = [
    (pa.types.is_string, "string"),
    (pa.types.is_large_string, "string"),
    (pa.types.is_boolean, "boolean"),
    (pa.types.is_integer, "integer"),
    (pa.types.is_floating, "double"),
    (pa.types.is_decimal, "decimal"),
    (pa.types.is_timestamp, "timestamp"),
    (pa.types.is_struct, "record"),
]


def type_name(t: pa.DataType) -> str:
    """The spec's word for an Arrow type (``string``, ``integer``, ``double``, ``timestamp``...)."""
    for test, name in _TYPE_NAMES:
        if test(t):
            return name
    return str(t)


def register(cls: type[Step]) -> type[Step]:
    """Class decorator: makes ``cls`` available as ``type: <cls.type>`` in specs."""
    STEP_TYPES[cls.type] = cls
    return cls


@dataclass
class Context:
    """What a step may know about the run and the pipeline while it is checked and built.

    Args:
        mode: ``batch`` or ``streaming``.
        cfg: The run config (flags; see ``config.EventsConfig``).
        contract: The pipeline's record contract.
        file: The spec file, for error messages.
        base_dir: The spec file's directory: relative paths in a spec are relative to it.
        event_time: ``(time column, window seconds, allowed lateness seconds)`` of the
            pipeline's first windowed aggregate (without one, of the first step that has an
            ``event_time()``: streamed features), or None: streaming sources judge lateness by
            it, and per-window outputs (profiles, expectations, files) use its windows.
        source_format: The source's record format (set when the source is checked).
        live: Whether the source is a live stream (early firings make sense): a streaming source
            that does not stop at the end offsets it saw at start.
        record_key: The Deduplicate step's key (set when it is checked): the column that is
            unique in the curated records.
        record_order: The Deduplicate step's ``(order_by, keep)``: which of a key's records wins.
        tables: Table paths under --output that sinks have claimed so far (path -> step name).
        change_source: The ReadPostgresChanges step, when the records are a change stream.
        change_consumers: ``(dsn, consumer)`` of the sinks applying that stream (set as they are
            checked): the source confirms its slot up to what all of them applied.
    """

    mode: str
    cfg: object
    contract: object
    file: str | None
    base_dir: str
    event_time: tuple[str, int, int] | None = None
    source_format: str | None = None
    live: bool = False
    record_key: str | None = None
    record_order: tuple | None = None
    tables: dict = field(default_factory=dict)
    change_source: object = None
    change_consumers: list = field(default_factory=list)


@dataclass
class Outputs:
    """What a built step hands on: its main output, its error outputs by name, count dicts for
    the run report, and other named outputs the launcher may use (e.g. expectation results)."""

    main: object
    errors: dict = field(default_factory=dict)
    stats: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)


class Step:
    """Base of the spec step types; see the module doc.

    Subclasses set ``type``, ``kind`` (``source``, ``records``, ``aggregate`` or ``sink``),
    ``doc``, ``config_schema`` and, when records can fail there, ``error_outputs``.
    """

    type: ClassVar[str]
    kind: ClassVar[str]
    doc: ClassVar[str]
    config_schema: ClassVar[dict] = {"type": "object", "properties": {}}
    error_outputs: ClassVar[tuple[str, ...]] = ()
    modes: ClassVar[tuple[str, ...]] = ("batch", "streaming")

    def __init__(self, name: str, config: dict, place: str, ctx: Context):
        self.name, self.config, self.place, self.ctx = name, config, place, ctx
        self.later_reads: set[str] = set()  # record columns some later step reads (set by the checker)
        self.unset: list = []  # SpecErrors of required keys whose flag was not given (sources, sinks)

    # -- checking -----------------------------------------------------------------------------

    def error(self, key: str | None, message: str) -> SpecError:
        """A SpecError at ``config.<key>`` of this step (the step itself when key is None)."""
        if key is None:
            return SpecError(self.place, message, self.ctx.file, getattr(self.config, "line", 0))
        parent, node, at = self.config, self.config, place_of(self.place, "config")
        for part in key.split("."):
            name: str | int = int(part) if part.isdigit() else part
            parent = node
            at = place_of(at, name)
            node = node[name] if isinstance(node, (dict, list)) and _has(node, name) else None
        return SpecError(at, message, self.ctx.file, line_of(parent, name))

    def need(self, columns: Columns, column: str, key: str, kinds: tuple[str, ...] = (), what: str = "") -> pa.DataType:
        """The type of ``column``, checked to exist (and be one of ``kinds``), else SpecError at ``key``."""
        if columns is None:
            raise self.error(key, "no record columns here yet: this step must come after a Validate step")
        if column not in columns:
            hint = did_you_mean(column, columns)
            raise self.error(key, f"no column {column!r} reaches this step{hint}; columns: {', '.join(columns)}")
        t = columns[column]
        if kinds and type_name(t) not in kinds:
            raise self.error(
                key, f"{what or 'column'} {column!r} must be {' or '.join(kinds)}, but it is {type_name(t)}"
            )
        return t

    def columns(self, inputs: list[Columns]) -> Columns:
        """Checks this step against the columns reaching it; returns the columns it emits."""
        return inputs[0] if inputs else None

    def reads(self) -> set[str]:
        """Record columns this step reads (so earlier steps keep them)."""
        return set()

    def outputs(self) -> tuple[str, ...]:
        """Named record outputs besides the main and error ones, for sinks (``<step>.<name>``)."""
        return ()

    def output_columns(self, name: str) -> Columns:
        """The columns of the named output ``name`` (once ``columns`` has run)."""
        raise KeyError(name)

    # -- building -------------------------------------------------------------------------------

    def build(self, inputs: list, io) -> Outputs:
        """Applies the composite to its input PCollections (labelled ``self.name``)."""
        raise NotImplementedError


def _has(node, name) -> bool:
    return name in node if isinstance(node, dict) else isinstance(name, int) and 0 <= name < len(node)
