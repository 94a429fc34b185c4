"""Spec step types that derive columns: vectorised expressions, and user functions on Arrow
tables when an expression is not enough."""

from __future__ import annotations

import importlib

import apache_beam as beam
import pyarrow as pa

from beam_pipelines.spec.steps.base import Outputs, Step, register
from beam_pipelines.spec.steps.records import _ERRORS, _error_outputs
from beam_pipelines.spec.yamlsrc import SpecError
from transforms.quality.expect_expr import parse_expression
from transforms.records import dead_letters, typed

__all__ = ["TYPES", "add_columns", "allowed", "expression_columns"]

# The contract's type words -> Arrow types, for columns a function declares it adds.
TYPES = {
    "string": pa.string(),
    "int": pa.int32(),
    "long": pa.int64(),
    "double": pa.float64(),
    "boolean": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}
_CALLABLE = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"


def _empty(columns: dict) -> pa.Table:
    return pa.table({c: pa.array([], t) for c, t in columns.items()})


def expression_columns(step: Step, cols: dict, exprs: dict, key: str) -> tuple[dict, dict]:
    """The columns after adding ``exprs`` (name -> expression text) to ``cols``, each checked
    (SpecError at ``config.<key>.<name>``) and typed by evaluating it over an empty batch."""
    out, parsed = dict(cols), {}
    for name, text in exprs.items():
        try:
            expr = parse_expression(text)
            for c in expr.columns:
                step.need(out, c, f"{key}.{name}")
            out[name] = expr.evaluate(_empty(out)).type
        except SpecError:
            raise
        except (ValueError, TypeError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise step.error(f"{key}.{name}", str(e)) from None
        parsed[name] = expr
    return out, parsed


def add_columns(step: Step, pcoll, exprs: dict, label: str):
    """``pcoll``'s tables with ``exprs`` (name -> expression text) added, labelled ``label``."""
    fn = _AddColumnsFn(tuple(exprs.items()))
    return pcoll | label >> beam.ParDo(fn).with_input_types(pa.Table).with_output_types(pa.Table)


@register
class AddColumns(Step):
    type = "AddColumns"
    kind = "records"
    doc = (
        "Adds (or replaces) columns computed by expressions over each batch, vectorised: columns, literals, "
        "comparisons, and/or/not, + - * /, in, is_null, is_valid, length, lower, upper, abs, hour, coalesce, "
        "seconds (of a duration, e.g. the difference of two timestamps)."
    )
    config_schema = {
        "type": "object",
        "properties": {
            "columns": {
                "type": "object",
                "description": "New column -> expression, e.g. revenue: amount * quantity.",
                "additionalProperties": {"type": "string"},
            }
        },
        "required": ["columns"],
    }

    def columns(self, inputs):
        cols = inputs[0]
        if cols is None:
            raise self.error(None, "no record columns here yet: this step must come after a Validate step")
        out, self._exprs = expression_columns(self, cols, self.config["columns"], "columns")
        return out

    def reads(self):
        return {c for expr in self._exprs.values() for c in expr.columns}

    def build(self, inputs, io):
        return Outputs(add_columns(self, inputs[0], self.config["columns"], self.name))


class _AddColumnsFn(beam.DoFn):
    def __init__(self, columns: tuple):
        self._columns = columns

    def setup(self):
        self._exprs = [(name, parse_expression(text)) for name, text in self._columns]

    def process(self, table: pa.Table):
        for name, expr in self._exprs:
            value = expr.evaluate(table)
            i = table.schema.get_field_index(name)
            table = table.set_column(i, name, value) if i >= 0 else table.append_column(name, value)
        yield table


def allowed(module: str, allow: tuple[str, ...]) -> bool:
    """Whether ``module`` is one of ``allow`` or inside one of them (a package allows its modules)."""
    return any(module == a or module.startswith(a + ".") for a in allow)


@register
class PythonFunction(Step):
    type = "PythonFunction"
    kind = "records"
    doc = (
        "Calls a Python function on each batch: it takes a pyarrow.Table and returns one with the same rows "
        "(columns added, replaced or dropped as declared). If it raises, that batch's rows become dead letters "
        "(stage: this step's name, reason udf_error) and the run goes on. Its module must be allowed with "
        "--python_modules."
    )
    error_outputs = ("error_handling",)
    config_schema = {
        "type": "object",
        "properties": {
            "callable": {"type": "string", "pattern": _CALLABLE, "description": "module.path:function"},
            "adds": {
                "type": "object",
                "description": "Columns the function adds or replaces -> their type.",
                "additionalProperties": {"enum": sorted(TYPES)},
            },
            "drops": {"type": "array", "items": {"type": "string"}, "description": "Columns the function removes."},
            "error_handling": _ERRORS,
        },
        "required": ["callable", "error_handling"],
    }

    def _module(self) -> str:
        return self.config["callable"].split(":", 1)[0]

    def columns(self, inputs):
        cols = inputs[0]
        if cols is None:
            raise self.error(None, "no record columns here yet: this step must come after a Validate step")
        allow = tuple(getattr(self.ctx.cfg, "python_modules", ()) or ())
        module = self._module()
        if not allowed(module, allow):
            raise self.error(
                "callable",
                f"module {module!r} is not allowed: a spec imports only modules the run allows "
                f"(--python_modules={module})",
            )
        try:
            fn = getattr(importlib.import_module(module), self.config["callable"].split(":", 1)[1])
        except (ImportError, AttributeError) as e:
            raise self.error("callable", f"cannot import {self.config['callable']}: {e}") from None
        if not callable(fn):
            raise self.error("callable", f"{self.config['callable']} is not callable")
        out = dict(cols)
        for i, c in enumerate(self.config.get("drops", ())):
            self.need(cols, c, f"drops.{i}")
            del out[c]
        for c, t in self.config.get("adds", {}).items():
            out[c] = TYPES[t]
        self._out = out
        return out

    def reads(self):
        # Rows that fail become dead letters with their record text and origin.
        return {"_raw", "_source"} | set(self._out)

    def build(self, inputs, io):
        fn = _FunctionFn(self.config["callable"], self.name, tuple(self.config.get("adds", {}).items()),
                         tuple(self.config.get("drops", ())))  # fmt: skip
        out = inputs[0] | self.name >> beam.ParDo(fn).with_outputs("dead_letters", main="out").with_input_types(
            pa.Table
        )
        parts = {"dead_letters": typed(out.dead_letters)}
        return Outputs(typed(out.out), _error_outputs(self, parts))


class UdfResultError(ValueError):
    """A user function returned something other than the table it declared."""


class _FunctionFn(beam.DoFn):
    def __init__(self, path: str, stage: str, adds: tuple, drops: tuple):
        self._path, self._stage, self._adds, self._drops = path, stage, adds, drops

    def setup(self):
        module, name = self._path.split(":", 1)
        self._fn = getattr(importlib.import_module(module), name)
        self._failed = beam.metrics.Metrics.counter(self._stage, "udf_failed_rows")

    def _checked(self, table: pa.Table, out) -> pa.Table:
        if not isinstance(out, pa.Table):
            raise UdfResultError(f"returned {type(out).__name__}, not a pyarrow.Table")
        if out.num_rows != table.num_rows:
            raise UdfResultError(f"returned {out.num_rows} rows for {table.num_rows}: rows may not be added or removed")
        for c, t in self._adds:
            if c not in out.column_names:
                raise UdfResultError(f"did not return the declared column {c!r}")
            if out.schema.field(c).type != TYPES[t]:
                out = out.set_column(out.schema.get_field_index(c), c, out.column(c).cast(TYPES[t]))
        for c in ("_raw", "_source"):  # the record's text and origin ride along whatever the function did
            if c in table.column_names and c not in out.column_names:
                out = out.append_column(c, table.column(c))
        return out.drop_columns([c for c in self._drops if c in out.column_names])

    def process(self, table: pa.Table):
        try:
            yield self._checked(table, self._fn(table))
        except Exception as e:  # a user function may raise anything: its batch becomes dead letters, never lost
            self._failed.inc(table.num_rows)
            source = (
                table.column("_source") if "_source" in table.column_names else pa.nulls(table.num_rows, pa.string())
            )
            message = f"{type(e).__name__}: {e}"
            yield beam.pvalue.TaggedOutput(
                "dead_letters",
                dead_letters(self._stage, "udf_error", None, message[:500], table.column("_raw"), source),
            )
