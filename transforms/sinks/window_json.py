"""WriteWindowJson: one JSON file per window (and firing) of a PCollection of dicts."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindow

from transforms.sinks.files import join_path

__all__ = ["WriteWindowJson"]


class _WriteFn(beam.DoFn):
    def __init__(self, root: str, filename: str):
        self._root, self._filename = root, filename

    def process(self, obj: dict, window=beam.DoFn.WindowParam):
        if isinstance(window, GlobalWindow):
            path = join_path(self._root, self._filename)
        else:
            start = datetime.fromtimestamp(window.start.micros / 1e6, tz=timezone.utc)
            path = join_path(self._root, f"window={start:%Y-%m-%dT%H:%M:%SZ}", self._filename)
        # Each firing of a window carries its complete value so far: the file is replaced.
        with FileSystems.create(path, mime_type="application/json") as fh:
            fh.write(json.dumps(obj, indent=2, sort_keys=True, default=str).encode() + b"\n")
        yield path


class WriteWindowJson(beam.PTransform):
    """Writes each dict to ``<root>/window=<start>/<filename>`` (``<root>/<filename>`` in the
    global window); a later firing of the same window replaces the file.

    Args:
        root: Directory on any Beam filesystem.
        filename: File name inside each window's directory.
    """

    def __init__(self, root: str, filename: str, label: str | None = None):
        super().__init__(label)
        if not root or not filename or "/" in filename:
            raise ValueError("root and a plain filename are required")
        self._fn = _WriteFn(root, filename)

    def expand(self, dicts):
        return dicts | "Write" >> beam.ParDo(self._fn).with_input_types(dict).with_output_types(str)
