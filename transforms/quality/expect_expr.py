"""A small, safe boolean expression language over table columns, evaluated with pyarrow.compute.

Expressions are Python syntax parsed with :mod:`ast`, never ``eval``-ed: only column names,
literals (numbers, strings, True/False/None), comparisons (chained too), ``and``/``or``/``not``,
``+ - * /``, ``x in [...]`` / ``x not in [...]`` and the functions in :data:`FUNCTIONS` are
accepted. Each node becomes one vectorised compute call on the whole batch.

Null semantics follow SQL: comparisons, arithmetic and ``in`` with a null operand are null,
``and``/``or`` are Kleene (``null or true`` is true). A string literal compared with a timestamp
column is read as ISO-8601 (no offset means UTC).
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timezone

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["FUNCTIONS", "Expr", "parse_expression", "to_datetime"]

_COMPARE = {
    ast.Eq: pc.equal,
    ast.NotEq: pc.not_equal,
    ast.Lt: pc.less,
    ast.LtE: pc.less_equal,
    ast.Gt: pc.greater,
    ast.GtE: pc.greater_equal,
}
_ARITH = {ast.Add: pc.add, ast.Sub: pc.subtract, ast.Mult: pc.multiply, ast.Div: pc.divide}
# name -> (min args, max args or None for any, compute function)
FUNCTIONS = {
    "is_null": (1, 1, pc.is_null),
    "is_valid": (1, 1, pc.is_valid),
    "length": (1, 1, pc.utf8_length),
    "lower": (1, 1, pc.utf8_lower),
    "upper": (1, 1, pc.utf8_upper),
    "abs": (1, 1, pc.abs),
    "hour": (1, 1, pc.hour),
    "coalesce": (2, None, pc.coalesce),
    # A duration (e.g. the difference of two timestamps) in seconds.
    "seconds": (1, 1, lambda d: pc.divide(pc.cast(pc.cast(d, pa.int64()), pa.float64()), 1e6)),
}
_NOT_ALLOWED = {
    ast.Attribute: "attribute access",
    ast.Subscript: "subscript",
    ast.Lambda: "lambda",
    ast.IfExp: "conditional expression",
    ast.NamedExpr: "assignment",
    ast.JoinedStr: "f-string",
    ast.Dict: "dict",
    ast.Set: "set",
    ast.ListComp: "comprehension",
    ast.SetComp: "comprehension",
    ast.DictComp: "comprehension",
    ast.GeneratorExp: "comprehension",
    ast.Starred: "starred argument",
    ast.Await: "await",
}
_ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, TypeError, ValueError)


def to_datetime(value) -> datetime:
    """A timezone-aware UTC datetime (naive input means UTC).

    Args:
        value: An ISO-8601 string, a date (midnight) or a datetime.
    """
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, date):
        dt = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        dt = datetime.fromisoformat(value.strip())
    else:
        raise TypeError(f"{value!r} is not an ISO-8601 timestamp")
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


def _literal_for(value, dtype: pa.DataType) -> pa.Scalar:
    """A Python literal as a scalar of ``dtype``; ISO strings for timestamp/date types."""
    if pa.types.is_timestamp(dtype):
        dt = to_datetime(value)
        return pa.scalar(dt if dtype.tz else dt.replace(tzinfo=None), dtype)
    if pa.types.is_date(dtype) and isinstance(value, str):
        return pa.scalar(date.fromisoformat(value.strip()), dtype)
    return pa.scalar(value, dtype)


class _NodeError(ValueError):
    pass


def _segment(text: str, node: ast.AST) -> str:
    return ast.get_source_segment(text, node) or ast.unparse(node)


def _dtype(value) -> pa.DataType:
    return value.type


def _unify(a, b, a_node: ast.AST, b_node: ast.AST):
    """Gives a null literal the other side's type, and reads a string literal as the other side's
    timestamp/date type."""
    for x, y, x_node, swap in ((a, b, a_node, False), (b, a, b_node, True)):
        if pa.types.is_null(_dtype(x)) and not pa.types.is_null(_dtype(y)):
            x = pa.scalar(None, _dtype(y))
        elif (
            isinstance(x_node, ast.Constant)
            and isinstance(x_node.value, str)
            and (pa.types.is_timestamp(_dtype(y)) or pa.types.is_date(_dtype(y)))
        ):
            x = _literal_for(x_node.value, _dtype(y))
        else:
            continue
        return (y, x) if swap else (x, y)
    return a, b


def _is_literal(node: ast.AST) -> bool:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        return isinstance(node.operand, ast.Constant) and type(node.operand.value) in (int, float)
    return isinstance(node, ast.Constant) and type(node.value) in (int, float, str, bool)


def _literal_value(node: ast.AST):
    if isinstance(node, ast.UnaryOp):
        v = _literal_value(node.operand)
        return -v if isinstance(node.op, ast.USub) else v
    return node.value


@dataclass(frozen=True)
class Expr:
    """A parsed, validated expression; :meth:`evaluate` gives one boolean (or null) per row.

    Args:
        text: The expression source, e.g. ``"event_type not in ['purchase'] or amount > 0"``.
    """

    text: str
    tree: ast.Expression = field(init=False, repr=False, compare=False)
    columns: tuple[str, ...] = field(init=False, compare=False)

    def __post_init__(self):
        if not isinstance(self.text, str) or not self.text.strip():
            raise ValueError("expression must be a non-empty string")
        try:
            tree = ast.parse(self.text.strip(), mode="eval")
        except SyntaxError as e:
            raise ValueError(f"invalid syntax in {self.text!r}: {e.msg}") from None
        in_lists = {
            id(right)
            for n in ast.walk(tree)
            if isinstance(n, ast.Compare)
            for op, right in zip(n.ops, n.comparators)
            if isinstance(op, (ast.In, ast.NotIn))
        }
        for node in ast.walk(tree.body):
            self._check_node(node, in_lists)
        functions = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
        names = sorted(
            (n for n in ast.walk(tree) if isinstance(n, ast.Name) and id(n) not in functions),
            key=lambda n: (n.lineno, n.col_offset),
        )
        object.__setattr__(self, "tree", tree)
        object.__setattr__(self, "columns", tuple(dict.fromkeys(n.id for n in names)))

    def _check_node(self, node: ast.AST, in_lists: set[int]) -> None:
        text = self.text.strip()

        def bad(what: str):
            return ValueError(f"{what} {_segment(text, node)!r} is not allowed in {self.text!r}")

        if type(node) in _NOT_ALLOWED:
            raise bad(_NOT_ALLOWED[type(node)])
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
                raise ValueError(
                    f"call {_segment(text, node)!r} is not allowed in {self.text!r} "
                    f"(functions: {', '.join(sorted(FUNCTIONS))})"
                )
            lo, hi, _ = FUNCTIONS[node.func.id]
            if node.keywords or len(node.args) < lo or (hi is not None and len(node.args) > hi):
                arity = f"{lo}" if hi == lo else f"at least {lo}"
                raise ValueError(f"{_segment(text, node)!r} takes {arity} positional argument(s) in {self.text!r}")
        elif isinstance(node, ast.BinOp) and type(node.op) not in _ARITH:
            raise bad("operator")
        elif isinstance(node, ast.UnaryOp) and not isinstance(node.op, (ast.Not, ast.USub, ast.UAdd)):
            raise bad("operator")
        elif isinstance(node, ast.Compare):
            self._check_compare(node, text)
        elif isinstance(node, ast.Constant) and (
            node.value is not None and type(node.value) not in (int, float, str, bool)
        ):
            raise bad("literal")
        elif isinstance(node, (ast.List, ast.Tuple)):
            if id(node) not in in_lists:
                raise ValueError(f"list {_segment(text, node)!r} is only allowed after 'in' in {self.text!r}")
        elif not isinstance(
            node,
            (ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Call, ast.Name, ast.Constant, ast.Load)
            + tuple(_COMPARE)
            + tuple(_ARITH)
            + (ast.And, ast.Or, ast.Not, ast.USub, ast.UAdd, ast.In, ast.NotIn),
        ):
            raise bad(type(node).__name__)

    def _check_compare(self, node: ast.Compare, text: str) -> None:
        for op, right in zip(node.ops, node.comparators):
            if isinstance(op, (ast.In, ast.NotIn)):
                if len(node.ops) != 1:
                    raise ValueError(f"chained 'in' {_segment(text, node)!r} is not allowed in {self.text!r}")
                if not isinstance(right, (ast.List, ast.Tuple)) or not right.elts:
                    raise ValueError(f"'in' needs a non-empty list of literals, not {_segment(text, right)!r}")
                for elt in right.elts:
                    if not _is_literal(elt):
                        raise ValueError(
                            f"{_segment(text, elt)!r} in {_segment(text, right)!r} is not a literal "
                            "(use is_null(x) for nulls)"
                        )
            elif type(op) not in _COMPARE:
                raise ValueError(f"comparison {_segment(text, node)!r} is not allowed in {self.text!r}")

    def check(self, columns: Mapping[str, pa.DataType]) -> None:
        """Checks column names, function and operand types and a boolean result against a schema.

        Raises:
            ValueError: naming the offending column or sub-expression.
        """
        for name in self.columns:
            if name not in columns:
                raise ValueError(f"column {name!r} does not exist (columns: {', '.join(columns)})")
        empty = pa.schema([(c, columns[c]) for c in self.columns]).empty_table()
        result = self.evaluate(empty)
        if not pa.types.is_boolean(result.type):
            raise ValueError(f"{self.text!r} is {result.type}, not boolean")

    def evaluate(self, table: pa.Table) -> pa.Array:
        """One boolean per row of ``table`` (null where the expression is null)."""
        out = self._eval(self.tree.body, table)
        if isinstance(out, pa.Scalar):
            out = pa.repeat(out, table.num_rows)
        if isinstance(out, pa.ChunkedArray):
            return out.chunk(0) if out.num_chunks == 1 else out.combine_chunks()
        return out

    def _eval(self, node: ast.AST, table: pa.Table):
        try:
            return self._eval_node(node, table)
        except _NodeError:
            raise
        except _ARROW_ERRORS as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise _NodeError(f"{_segment(self.text.strip(), node)!r}: {msg}") from None

    def _eval_node(self, node: ast.AST, table: pa.Table):
        if isinstance(node, ast.Name):
            return table.column(node.id)
        if isinstance(node, ast.Constant):
            return pa.scalar(node.value)
        if isinstance(node, ast.BoolOp):
            combine = pc.and_kleene if isinstance(node.op, ast.And) else pc.or_kleene
            out = self._eval(node.values[0], table)
            for value in node.values[1:]:
                out = combine(out, self._eval(value, table))
            return out
        if isinstance(node, ast.UnaryOp):
            operand = self._eval(node.operand, table)
            if isinstance(node.op, ast.Not):
                return pc.invert(operand)
            return pc.negate(operand) if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.BinOp):
            a, b = _unify(self._eval(node.left, table), self._eval(node.right, table), node.left, node.right)
            if isinstance(node.op, ast.Div) and pa.types.is_integer(a.type) and pa.types.is_integer(b.type):
                a, b = a.cast(pa.float64()), b.cast(pa.float64())  # true division, as in Python
            return _ARITH[type(node.op)](a, b)
        if isinstance(node, ast.Compare):
            return self._compare(node, table)
        if isinstance(node, ast.Call):
            args = [self._eval(a, table) for a in node.args]
            if node.func.id == "coalesce":
                target = next((a.type for a in args if not pa.types.is_null(a.type)), pa.null())
                args = [pa.scalar(None, target) if pa.types.is_null(a.type) else a for a in args]
            return FUNCTIONS[node.func.id][2](*args)
        raise _NodeError(f"{_segment(self.text.strip(), node)!r} cannot be evaluated")

    def _compare(self, node: ast.Compare, table: pa.Table):
        left_node, left = node.left, self._eval(node.left, table)
        out = None
        for op, right_node in zip(node.ops, node.comparators):
            if isinstance(op, (ast.In, ast.NotIn)):
                values = [_literal_value(e) for e in right_node.elts]
                if pa.types.is_timestamp(left.type) or pa.types.is_date(left.type):
                    value_set = pa.array([_literal_for(v, left.type).as_py() for v in values], left.type)
                else:
                    value_set = pa.array(values, left.type)
                found = pc.is_in(left, value_set=value_set)
                if isinstance(op, ast.NotIn):
                    found = pc.invert(found)
                # SQL: a null operand gives null, not False.
                step = pc.if_else(pc.is_valid(left), found, pa.scalar(None, pa.bool_()))
            else:
                right = self._eval(right_node, table)
                a, b = _unify(left, right, left_node, right_node)
                step = _COMPARE[type(op)](a, b)
                left_node, left = right_node, right
            out = step if out is None else pc.and_kleene(out, step)
        return out


def parse_expression(text: str) -> Expr:
    """Parses and structurally validates ``text`` (see the module docstring for the language).

    Args:
        text: The expression source.

    Raises:
        ValueError: naming the offending piece (syntax, attribute access, unknown function, ...).
    """
    return Expr(text)
