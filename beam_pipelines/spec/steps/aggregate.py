"""The windowed aggregate as a spec step: event-time windows, group keys, measures."""

from __future__ import annotations

import pyarrow as pa

from beam_pipelines.spec.shape import DURATION, duration, duration_seconds
from beam_pipelines.spec.steps.base import Outputs, Step, register, type_name
from beam_pipelines.spec.steps.derive import add_columns, expression_columns
from transforms.sinks.files import join_path
from transforms.windows import WindowedAggregate

__all__ = ["FUNCTIONS"]

_US = pa.timestamp("us", tz="UTC")
# fn -> the column types it takes (None: no column).
FUNCTIONS = {
    "count": None,
    "count_distinct": ("string", "integer", "double", "decimal", "boolean", "timestamp"),
    "sum": ("integer", "double", "decimal", "boolean"),  # a boolean sum counts the trues
    "mean": ("integer", "double", "decimal"),
    "min": ("string", "integer", "double", "decimal", "timestamp", "boolean"),
    "max": ("string", "integer", "double", "decimal", "timestamp", "boolean"),
}
_SIZE = {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "string", "pattern": DURATION}]}
_WINDOW = {
    "type": "object",
    "description": "fixed (size), sliding (size, period: size a multiple of period) or sessions (gap).",
    "properties": {
        "type": {"enum": ["fixed", "sliding", "sessions"]},
        "size": {**_SIZE, "description": "Window length. Seconds, or a string like 90s, 15m, 1h, 1d."},
        "period": {**_SIZE, "description": "Sliding: how often a window starts."},
        "gap": {**_SIZE, "description": "Sessions: the silence that closes a session."},
    },
    "required": ["type"],
}
_MEASURE = {
    "type": "object",
    "properties": {
        "fn": {"enum": list(FUNCTIONS)},
        "column": {"type": "string", "description": "The measured column (not for count)."},
        "decimals": {
            "type": "integer",
            "minimum": 0,
            "maximum": 6,
            "description": "sum of a double: summed exactly in units of 10^-decimals, rounded to it.",
        },
    },
    "required": ["fn"],
}


@register
class WindowedAggregateStep(Step):
    type = "WindowedAggregate"
    kind = "aggregate"
    doc = (
        "Measures per group keys in event-time windows: one row per (window, keys) with window_start, "
        "window_end, the keys and the measures. Streaming: fires on the watermark, early every early_firing, "
        "and again for late rows within allowed_lateness (panes accumulate: sinks upsert)."
    )
    config_schema = {
        "type": "object",
        "properties": {
            "time": {"type": "string", "description": "The event-time column (a timestamp)."},
            "window": _WINDOW,
            "group_by": {"type": "array", "minItems": 1, "items": {"type": "string"}},
            "measures": {
                "type": "object",
                "description": "Output column -> {fn, column, decimals}.",
                "additionalProperties": _MEASURE,
            },
            "allowed_lateness": duration("How late a row may still update its window (streaming).", 0),
            "derive": {
                "type": "object",
                "description": "Columns computed from each result row by expressions (as AddColumns), e.g. "
                "length_s: seconds(last_event - first_event).",
                "additionalProperties": {"type": "string"},
            },
            "early_firing": {
                "anyOf": [
                    {"type": "null"},
                    {"type": "integer", "minimum": 1},
                    {"type": "string", "pattern": DURATION},
                ],
                "description": "Streaming: also fire every this long of processing time before the window closes.",
            },
        },
        "required": ["time", "window", "group_by", "measures"],
    }

    # -- checking -------------------------------------------------------------------------------

    def window(self) -> tuple[str, int, int | None]:
        """(type, size or gap seconds, period seconds or None), checked."""
        w = self.config["window"]
        kind = w["type"]
        needed = {"fixed": ("size",), "sliding": ("size", "period"), "sessions": ("gap",)}[kind]
        for key in ("size", "period", "gap"):
            if key in needed and key not in w:
                raise self.error("window", f"a {kind} window needs {key}")
            if key not in needed and key in w:
                raise self.error(f"window.{key}", f"a {kind} window takes no {key}")
        if kind == "sessions":
            return kind, duration_seconds(w["gap"]), None
        size = duration_seconds(w["size"])
        if size < 1:
            raise self.error("window.size", "must be at least 1s")
        if kind == "sliding":
            period = duration_seconds(w["period"])
            if period < 1 or size % period:
                raise self.error("window.period", f"must divide the size ({size}s) into whole periods")
            return kind, size, period
        return kind, size, None

    def lateness(self) -> int:
        given = self.config.get("allowed_lateness")
        return duration_seconds(given) if given is not None else 0

    def columns(self, inputs):
        cols = inputs[0]
        if cols is None:
            raise self.error(None, "no record columns here yet: this step must come after a Validate step")
        kind, size, _ = self.window()
        self.need(cols, self.config["time"], "time", ("timestamp",), "the window's time column")
        if self.ctx.mode == "streaming" and kind == "fixed" and 86_400 % size:
            raise self.error("window.size", "must divide a day when streaming (windowed file names)")
        out = {"window_start": _US, "window_end": _US}
        for i, k in enumerate(self.config["group_by"]):
            out[k] = self.need(cols, k, f"group_by.{i}")
        if not self.config["measures"]:
            raise self.error("measures", "needs at least one measure")
        for name, m in self.config["measures"].items():
            if name in out:
                raise self.error(f"measures.{name}", f"{name!r} is already a column of the result")
            out[name] = self._measure_type(name, m, cols)
        if self.config.get("derive"):
            out, _ = expression_columns(self, out, self.config["derive"], "derive")
        return out

    def _measure_type(self, name: str, m: dict, cols) -> pa.DataType:
        fn, column = m["fn"], m.get("column")
        kinds = FUNCTIONS[fn]
        if kinds is None:
            if column is not None:
                raise self.error(f"measures.{name}.column", "count counts rows: it takes no column")
            return pa.int64()
        if column is None:
            raise self.error(f"measures.{name}", f"{fn} needs a column")
        t = self.need(cols, column, f"measures.{name}.column", kinds, f"{fn} of")
        if "decimals" in m and type_name(t) != "double":
            raise self.error(f"measures.{name}.decimals", "decimals applies to a sum of a double column")
        if fn == "count_distinct":
            return pa.int64()
        if fn == "mean":
            return pa.float64()
        if fn == "sum" and (pa.types.is_integer(t) or pa.types.is_boolean(t)):
            return pa.int64()
        if fn == "sum" and pa.types.is_decimal(t):
            return pa.decimal128(38, t.scale)
        return t

    def reads(self):
        used = {self.config["time"], *self.config["group_by"]}
        return used | {m["column"] for m in self.config["measures"].values() if m.get("column")}

    def event_time(self) -> tuple[str, int, int]:
        kind, size, _ = self.window()
        return self.config["time"], size, self.lateness()

    # -- building -------------------------------------------------------------------------------

    def _legacy(self) -> dict | None:
        """The keywords of the original fixed-window aggregate when the measures are its shape
        (a row count, one exact distinct count, one exact sum, in that order)."""
        kind, size, _ = self.window()
        ms = list(self.config["measures"].items())
        if kind != "fixed" or len(ms) != 3:
            return None
        (n1, m1), (n2, m2), (n3, m3) = ms
        if (m1["fn"], m2["fn"], m3["fn"]) != ("count", "count_distinct", "sum") or (n1, n2) != ("events", "users"):
            return None
        if n3 != m3["column"] + "_sum":
            return None
        return {"window_seconds": size, "count_distinct": m2["column"], "sum_field": m3["column"],
                "decimals": m3.get("decimals", 2)}  # fmt: skip

    def _general(self) -> dict:
        from transforms import windows

        kind, size, period = self.window()
        window = {"fixed": lambda: windows.Fixed(size), "sliding": lambda: windows.Sliding(size, period),
                  "sessions": lambda: windows.Sessions(size)}[kind]()  # fmt: skip
        measures = tuple(
            windows.Measure(name, m["fn"], m.get("column"), m.get("decimals"))
            for name, m in self.config["measures"].items()
        )
        return {"window": window, "measures": measures}

    def build(self, inputs, io):
        streaming = self.ctx.mode == "streaming"
        cfg = self.ctx.cfg
        early = self.config.get("early_firing")
        live = streaming and self.ctx.live
        shape = self._legacy() or self._general()
        out = inputs[0] | self.name >> WindowedAggregate(
            time_field=self.config["time"],
            group_by=tuple(self.config["group_by"]),
            allowed_lateness_seconds=self.lateness(),
            # Early firings are for live streams only: a bounded stream fires every window when it ends.
            early_firing_seconds=duration_seconds(early) if early is not None and live else None,
            late_firings=streaming,
            spill_dir=join_path(io.scratch, "aggregate") if io.scratch and not streaming else None,
            partitions=cfg.shuffle_partitions,
            **shape,
        )
        if self.config.get("derive"):
            out = add_columns(self, out, self.config["derive"], f"{self.name}Derive")
        return Outputs(out)
