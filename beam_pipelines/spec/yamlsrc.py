"""YAML read safely, remembering where each value stood, so every error can name its place.

``load`` returns plain dicts and lists (subclasses that also carry line numbers), built with
PyYAML's safe loader: no tags, no Python objects. Hostile YAML is refused with a SpecError rather
than eating the machine: a text over ``MAX_BYTES``, a document of more than ``MAX_NODES`` values
once its aliases are expanded (each alias of a nested anchor multiplies what later steps walk: the
"billion laughs"), nesting deeper than ``MAX_DEPTH``. ``SpecError`` renders as
``file:line: place: message`` where ``place`` is a path like ``pipeline.transforms[3].config``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

import yaml

__all__ = ["Map", "Seq", "SpecError", "did_you_mean", "line_of", "load", "load_text", "place_of"]

MAX_BYTES = 1 << 20  # a spec or contract is a few kB
MAX_NODES = 100_000  # values, aliases expanded
MAX_DEPTH = 64


class Map(dict):
    """A YAML mapping: a dict whose ``lines`` give each key's line (1-based)."""

    line: int = 0
    lines: dict


class Seq(list):
    """A YAML sequence: a list whose ``lines`` give each item's line (1-based)."""

    line: int = 0
    lines: list


class SpecError(ValueError):
    """A mistake in a YAML file; ``str()`` names the file, line and place.

    Args:
        place: Path of the culprit from the document root (``pipeline.transforms[3].config``).
        message: What is wrong, and what would be right.
        file: The file (None for text not read from a file).
        line: 1-based line number (0 when unknown).
    """

    def __init__(self, place: str, message: str, file: str | None = None, line: int = 0):
        self.place, self.message, self.file, self.line = place, message, file, line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.file or "<spec>"
        if self.line:
            where += f":{self.line}"
        return f"{where}: {self.place}: {self.message}" if self.place else f"{where}: {self.message}"


class _Loader(yaml.SafeLoader):
    """The safe loader, building ``Map``/``Seq`` with line numbers; duplicate keys refused."""

    _depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                line = self.peek_event().start_mark.line + 1
                raise SpecError("", f"YAML nested more than {MAX_DEPTH} levels deep: refused", line=line)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        out = Map()
        out.line, out.lines = node.start_mark.line + 1, {}
        self.flatten_mapping(node)
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                raise SpecError("", f"keys must be strings, got {key!r}", line=key_node.start_mark.line + 1)
            if key in out:
                raise SpecError("", f"duplicate key {key!r}", line=key_node.start_mark.line + 1)
            out[key] = self.construct_object(value_node, deep=True)
            out.lines[key] = key_node.start_mark.line + 1
        return out

    def construct_sequence(self, node, deep=False):
        out = Seq(self.construct_object(child, deep=True) for child in node.value)
        out.line, out.lines = node.start_mark.line + 1, [child.start_mark.line + 1 for child in node.value]
        return out


_Loader.add_constructor("tag:yaml.org,2002:map", _Loader.construct_mapping)
_Loader.add_constructor("tag:yaml.org,2002:seq", _Loader.construct_sequence)


def load_text(text: str, file: str | None = None):
    """Parses YAML text; SpecError (with the line) for malformed YAML or duplicate keys."""
    if len(text) > MAX_BYTES:
        raise SpecError("", f"{len(text):,} characters: more than a spec's {MAX_BYTES:,} (refused)", file)
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_size(node)
        return loader.construct_document(node)
    except SpecError as e:
        raise SpecError(e.place, e.message, file, e.line) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else 0
        raise SpecError("", f"malformed YAML: {e.problem or e.context}", file, line) from None
    except yaml.YAMLError as e:
        raise SpecError("", f"malformed YAML: {e}", file) from None
    finally:
        loader.dispose()


def _check_size(root) -> None:
    """SpecError when the document has more than MAX_NODES values with its aliases expanded."""
    sizes: dict[int, int] = {}

    def size(node) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        children = node.value if isinstance(node, yaml.CollectionNode) else ()
        n = 1
        for child in children:
            for part in child if isinstance(child, tuple) else (child,):
                n += size(part)
                if n > MAX_NODES:
                    break
        sizes[id(node)] = n
        return n

    if size(root) > MAX_NODES:
        raise SpecError("", f"more than {MAX_NODES:,} values once its aliases (*name) are expanded: refused",
                        line=root.start_mark.line + 1)  # fmt: skip


def load(path: str):
    """Reads and parses a YAML file (SpecError when it cannot be read or parsed)."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError("", f"cannot read: {e}", path) from None
    return load_text(text, path)


def line_of(parent, key) -> int:
    """The line of ``parent[key]`` (a Map key or Seq index), else of ``parent``, else 0."""
    lines = getattr(parent, "lines", None)
    if isinstance(parent, Map) and lines and key in lines:
        return lines[key]
    if isinstance(parent, Seq) and lines and isinstance(key, int) and 0 <= key < len(lines):
        return lines[key]
    return getattr(parent, "line", 0)


def place_of(base: str, key) -> str:
    """``base`` extended by a key (``base.key``) or an index (``base[3]``)."""
    if isinstance(key, int):
        return f"{base}[{key}]"
    return f"{base}.{key}" if base else str(key)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or ''."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
