"""Plain stand-ins for a DoFn's Beam state, kept as the runner keeps it between bundles: tests
call a stateful DoFn's methods directly with these."""

from __future__ import annotations


class Bag:
    """A BagState."""

    def __init__(self):
        self.items = []

    def read(self):
        return list(self.items)

    def add(self, value):
        self.items.append(value)

    def clear(self):
        self.items = []


class Value:
    """A ReadModifyWriteState."""

    def __init__(self):
        self.value = None

    def read(self):
        return self.value

    def write(self, value):
        self.value = value
