"""Finding a spec's record contract: a reference into the registries (the spec's own
``schemas/`` folder, then the packaged contracts), or the contract inline."""

from __future__ import annotations

from beam_pipelines.contracts import Contract, Registry, contract_from_doc

__all__ = ["resolve"]


def resolve(ref, base_dir: str, file: str | None, place: str, line: int) -> Contract:
    """The contract a spec names (``name``, ``name@3``, ``name/v3``) or holds inline."""
    if isinstance(ref, dict):
        return contract_from_doc(ref, file, place)
    return Registry.for_spec(base_dir).resolve(ref, file=file, place=place, line=line)
