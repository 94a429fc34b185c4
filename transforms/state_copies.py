"""In-memory copies of keyed state, trusted while nobody else has written the state.

Prism gives the SDK no state cache tokens, so nothing the SDK reads from state is cached across
bundles: a stateful DoFn that read its whole bag for every element would spend time in
proportion to everything the bag holds. So a DoFn instance keeps what it last wrote per key in
memory too, together with a random token it also wrote to state. The copy is trusted while the
state's token is still that one; another instance, or a failed bundle whose writes the runner
discarded, leaves another token (or none), and the state is read again.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable
from typing import Protocol, TypeVar

__all__ = ["StateCopies"]


class _Copy(Protocol):
    token: int | None


C = TypeVar("C", bound=_Copy)


class StateCopies:
    """One DoFn instance's copies, by key (e.g. ``(partition, window)``); make it in ``setup``."""

    def __init__(self):
        self._copies: dict[Hashable, _Copy] = {}
        self._tokens = random.Random()

    def get(self, at: Hashable, stored: int | None, load: Callable[[], C]) -> C:
        """The copy of ``at`` when its token is ``stored`` (the token read from state), else the
        one ``load`` reads from state (whose token ``load`` sets to ``stored``)."""
        copy = self._copies.get(at)
        if copy is None or stored is None or copy.token != stored:
            copy = self._copies[at] = load()
        return copy

    def peek(self, at: Hashable) -> _Copy | None:
        """The copy of ``at``, unchecked (for a caller that checked it earlier in the bundle)."""
        return self._copies.get(at)

    def forget(self, at: Hashable) -> None:
        """Drops the copy of ``at`` (its state is cleared, or kept only in state from now)."""
        self._copies.pop(at, None)

    def __len__(self) -> int:
        return len(self._copies)

    def written(self, copy: _Copy) -> int:
        """Gives ``copy`` a new token, to be written to state with the copy's other writes."""
        copy.token = self._tokens.getrandbits(62)
        return copy.token
