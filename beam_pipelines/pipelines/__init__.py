"""The registry of pipelines the CLI can run: name -> module with ``build(p, cfg, io)``."""

from __future__ import annotations

import importlib

PIPELINES = {"events": "beam_pipelines.pipelines.events"}


def load(name: str):
    """The pipeline module for ``name``; ValueError naming the known ones otherwise."""
    if name not in PIPELINES:
        raise ValueError(f"unknown pipeline {name!r}; known: {', '.join(sorted(PIPELINES))}")
    return importlib.import_module(PIPELINES[name])
