"""Finding a spec's record contract: a reference into the registries, or the contract inline."""

from __future__ import annotations

import os
from types import SimpleNamespace

from beam_pipelines.spec.yamlsrc import SpecError, load

__all__ = ["PACKAGED", "resolve"]

PACKAGED = os.path.join(os.path.dirname(os.path.dirname(__file__)), "pipelines", "schemas")
_KEYS = ("type", "required", "default", "aliases", "values", "pattern", "case", "minimum", "maximum", "decimals",
         "precision", "scale", "required_if", "doc")  # fmt: skip


def _as_contract(doc: dict):
    fields = tuple(SimpleNamespace(name=f["name"], **{k: f.get(k) for k in _KEYS}) for f in doc.get("fields", ()))
    evolution = SimpleNamespace(**{"columns": "evolve", "data_type": "discard_row", **doc.get("evolution", {})})
    return SimpleNamespace(name=doc.get("name"), version=doc.get("version"), fields=fields, evolution=evolution)


def _roots(base_dir: str) -> list[str]:
    return [os.path.join(base_dir, "schemas"), PACKAGED]


def _path(ref: str, base_dir: str) -> str | None:
    name, version = ref, None
    for sep in ("@", "/v"):
        if sep in ref:
            name, version = ref.split(sep, 1)
    for root in _roots(base_dir):
        folder = os.path.join(root, name)
        if not os.path.isdir(folder):
            continue
        if version is None:
            found = sorted(
                int(f[1:-5])
                for f in os.listdir(folder)
                if f.startswith("v") and f.endswith(".yaml") and f[1:-5].isdigit()
            )
            if found:
                return os.path.join(folder, f"v{found[-1]}.yaml")
        elif os.path.exists(os.path.join(folder, f"v{version}.yaml")):
            return os.path.join(folder, f"v{version}.yaml")
    return None


def resolve(ref, base_dir: str, file: str | None, place: str, line: int):
    """The contract a spec names (``name``, ``name@3``, ``name/v3``) or holds inline."""
    if isinstance(ref, dict):
        return _as_contract(ref)
    path = _path(ref, base_dir)
    if path is None:
        roots = " or ".join(_roots(base_dir))
        raise SpecError(place, f"no contract {ref!r} in {roots}", file, line)
    return _as_contract(load(path))
