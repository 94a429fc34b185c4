"""Contracts by name and version: folders of ``<name>/v<N>.yaml`` files, looked up in order."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from beam_pipelines.contracts.checks import ContractError
from beam_pipelines.contracts.loader import load_contract
from beam_pipelines.contracts.model import CONTRACT_NAME, Contract
from beam_pipelines.spec.yamlsrc import did_you_mean

__all__ = ["PACKAGED_SCHEMAS", "Registry", "UnknownContract", "parse_ref"]

PACKAGED_SCHEMAS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pipelines", "schemas")
_FILE = re.compile(r"^v([1-9][0-9]*)\.yaml$")
_REF = re.compile(r"^(?P<name>[a-z][a-z0-9_]*)(?:@(?P<at>[1-9][0-9]*)|/v(?P<v>[1-9][0-9]*))?$")


class UnknownContract(ContractError):
    """A registry has no such contract name or version."""


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``name`` -> (name, None) (the latest); ``name@3`` and ``name/v3`` -> (name, 3).

    Raises:
        ValueError: ``ref`` is none of these forms.
    """
    m = _REF.match(ref.strip()) if isinstance(ref, str) else None
    if not m:
        raise ValueError(f"contract reference {ref!r} must be name, name@<version> or name/v<version>")
    version = m.group("at") or m.group("v")
    return m.group("name"), None if version is None else int(version)


class Registry:
    """Contracts under one or more roots, each holding ``<name>/v<N>.yaml``.

    Roots are looked up in order and a name belongs to the first root that has a folder for it
    (so a spec's own ``schemas/`` can shadow a packaged contract of the same name, whole).
    Contract files are read and checked when first asked for; a file's name and version must
    match its path.

    Args:
        root: One root folder, or several in lookup order.
    """

    def __init__(self, root: str | Sequence[str]):
        self.roots = (root,) if isinstance(root, (str, os.PathLike)) else tuple(root)
        self._cache: dict[tuple[str, int], Contract] = {}

    @classmethod
    def for_spec(cls, spec_dir: str) -> Registry:
        """The lookup order of a spec: its own ``schemas/`` folder, then the packaged contracts."""
        return cls([os.path.join(spec_dir, "schemas"), PACKAGED_SCHEMAS])

    def names(self) -> list[str]:
        """Every contract name in any root, sorted."""
        return sorted({name for name, *_ in self.listing()})

    def root_of(self, name: str) -> str | None:
        """The first root holding versions of ``name`` (None when none does)."""
        for root in self.roots:
            if self._versions_in(root, name):
                return root
        return None

    def versions(self, name: str) -> list[int]:
        """The versions of ``name``, ascending ([] when it is unknown)."""
        root = self.root_of(name)
        return self._versions_in(root, name) if root else []

    def path(self, name: str, version: int) -> str:
        """The file of ``name`` at ``version`` (it need not exist)."""
        return os.path.join(self.root_of(name) or self.roots[0], name, f"v{version}.yaml")

    def get(self, name: str, version: int | None = None) -> Contract:
        """The contract ``name`` at ``version`` (the latest when None).

        Raises:
            UnknownContract: No such contract or version.
            ContractError: The contract's file is invalid.
        """
        versions = self.versions(name)
        if not versions:
            known = self.names()
            hint = did_you_mean(name, known) or f" (known: {', '.join(known) or 'none'})"
            raise UnknownContract("", f"no contract {name!r} in {' or '.join(self.roots)}{hint}")
        if version is None:
            version = versions[-1]
        if version not in versions:
            listed = ", ".join(str(v) for v in versions)
            raise UnknownContract("", f"no version {version} of {name!r} (versions: {listed})")
        key = (name, version)
        if key not in self._cache:
            self._cache[key] = load_contract(self.path(name, version), expect_name=name, expect_version=version)
        return self._cache[key]

    def resolve(self, ref: str, *, file: str | None = None, place: str = "", line: int = 0) -> Contract:
        """The contract a reference names: ``name`` (latest), ``name@3`` or ``name/v3``.

        Args:
            ref: The reference.
            file, place, line: Where the reference stands (a spec), for the error of an unknown one.

        Raises:
            ContractError: A malformed reference, an unknown one (``UnknownContract``), both at
                ``place`` of ``file``; or an invalid contract file, at its own place.
        """
        try:
            name, version = parse_ref(ref)
        except ValueError as e:
            raise ContractError(place, str(e), file, line) from None
        try:
            return self.get(name, version)
        except UnknownContract as e:
            raise UnknownContract(place, e.message, file, line) from None

    def listing(self) -> list[tuple[str, str, list[int], bool]]:
        """(name, root, versions, shadowed) for every name in every root, in lookup order; a
        name is shadowed in a root when an earlier root has it too."""
        out, seen = [], set()
        for root in self.roots:
            if not os.path.isdir(root):
                continue
            for name in sorted(os.listdir(root)):
                versions = self._versions_in(root, name)
                if re.fullmatch(CONTRACT_NAME, name) and versions:
                    out.append((name, root, versions, name in seen))
                    seen.add(name)
        return out

    def history(self, name: str, upto: int | None = None) -> list[Contract]:
        """Every version of ``name`` up to ``upto`` (all when None), oldest first."""
        return [self.get(name, v) for v in self.versions(name) if upto is None or v <= upto]

    @staticmethod
    def _versions_in(root: str, name: str) -> list[int]:
        folder = os.path.join(root, name)
        if not os.path.isdir(folder):
            return []
        return sorted(int(m.group(1)) for m in map(_FILE.match, os.listdir(folder)) if m)
