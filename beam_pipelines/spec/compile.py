"""A pipeline spec (YAML, Beam YAML's shape) -> a checked plan of the project's composites.

Everything here runs before any data is read: the file's shape, each step's config, the
parameters it takes from flags, the inputs between steps, which columns reach each step and
their types, and that every error output is consumed. Each mistake is one SpecError naming
its place in the file (``pipeline.transforms[3].config.window.size: ...``).

The records flow as one chain (source -> parse -> validate -> ... -> the curated records);
aggregates take the curated records; sinks take the curated records, an aggregate, or error
outputs (dead letters); a sink may also take the source's records as received (a bronze table)
or a step's named output (streamed features' ``online`` rows).
So every record read ends in exactly one place: curated, a dead letter, a counted duplicate, or
(streaming) late.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field

from beam_pipelines.orchestrate.schedule import SCHEDULE_SCHEMA, schedule_of
from beam_pipelines.pii.policy import PII_SCHEMA, policy_of
from beam_pipelines.spec import contract_ref
from beam_pipelines.spec.shape import check
from beam_pipelines.spec.steps import STEP_TYPES, Context, Step
from beam_pipelines.spec.yamlsrc import Map, SpecError, did_you_mean, line_of, place_of

__all__ = ["Node", "Plan", "SPEC_SCHEMA", "compile_spec", "params_of"]

_NAME = r"^[A-Za-z][A-Za-z0-9_]*$"
_REF = r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$"
TRANSFORM_SCHEMA = {
    "type": "object",
    "properties": {
        "type": {"type": "string", "description": "The step type (see `python -m beam_pipelines.spec types`)."},
        "name": {"type": "string", "pattern": _NAME, "description": "The step's label (stable: update compatibility)."},
        "input": {
            "anyOf": [
                {"type": "string", "pattern": _REF},
                {"type": "array", "minItems": 1, "items": {"type": "string", "pattern": _REF}},
            ],
            "description": "Step name, or <step>.<output> for an error output; a list to take several. "
            "Default: the transform before it.",
        },
        "mode": {"enum": ["batch", "streaming"], "description": "Only in this mode. Default: both."},
        "doc": {"type": "string"},
        "config": {"type": "object", "additionalProperties": True},
    },
    "required": ["type"],
}
SPEC_SCHEMA = {
    "type": "object",
    "properties": {
        "pipeline": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "pattern": r"^[a-z][a-z0-9_]*$"},
                "doc": {"type": "string"},
                "contract": {
                    "anyOf": [{"type": "string"}, {"type": "object", "additionalProperties": True}],
                    "description": "The record contract: name, name@version or name/vN from schemas/ beside the "
                    "spec or the packaged ones; or the contract inline.",
                },
                "transforms": {"type": "array", "minItems": 1, "items": TRANSFORM_SCHEMA},
                "schedule": SCHEDULE_SCHEMA,
                "pii": PII_SCHEMA,
            },
            "required": ["name", "contract", "transforms"],
        }
    },
    "required": ["pipeline"],
}


def params_of(cfg) -> dict:
    """Flag values a spec takes as ``${name}`` (``${name:-default}`` when the flag is unset)."""
    return {
        "input": cfg.input,
        "input_format": cfg.input_format,
        "output": cfg.output,
        "schema_policy": cfg.schema_policy,
        "window_seconds": cfg.window_seconds,
        "allowed_lateness": cfg.allowed_lateness_seconds,
        "kafka_bootstrap": cfg.kafka_bootstrap,
        "kafka_topic": cfg.kafka_topic,
        "kafka_stop_at_end": cfg.kafka_stop_at_end,
        "pg_dsn": cfg.pg_dsn,
        "pg_table": cfg.pg_table,
        "early_firing_seconds": cfg.early_firing_seconds,
        "dlq_topic": cfg.dlq_topic,
        "expectations": cfg.expectations,
    }


_PARAM = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _substitute(node, params: dict, place: str, file: str | None, parent=None, key=None):
    """``node`` with ``${name}`` replaced by flag values (a whole-string reference keeps the
    value's type; one inside text is formatted into it)."""
    if isinstance(node, dict):
        for k in list(node):
            node[k] = _substitute(node[k], params, place_of(place, k), file, node, k)
        return node
    if isinstance(node, list):
        for i in range(len(node)):
            node[i] = _substitute(node[i], params, place_of(place, i), file, node, i)
        return node
    if not isinstance(node, str) or "${" not in node:
        return node

    def value(m: re.Match):
        name, default = m.group(1), m.group(2)
        if name not in params:
            hint = did_you_mean(name, params) or f" (known: {', '.join(sorted(params))})"
            raise SpecError(place, f"unknown parameter ${{{name}}}{hint}", file, line_of(parent, key))
        v = params[name]
        return default if v is None and default is not None else v

    whole = _PARAM.fullmatch(node)
    if whole:
        v = value(whole)
        return _Unset(whole.group(1)) if v is None else v
    out = []
    pos = 0
    for m in _PARAM.finditer(node):
        v = value(m)
        if v is None:
            raise SpecError(place, f"parameter ${{{m.group(1)}}} has no value here", file, line_of(parent, key))
        out += [node[pos : m.start()], str(v)]
        pos = m.end()
    return "".join(out + [node[pos:]])


@dataclass(frozen=True)
class _Unset:
    """A ``${name}`` whose flag has no value: its key is left out, so the step's default applies."""

    param: str


@dataclass
class Node:
    """One active step of a plan: the step, its inputs (``(step name, output or None)``), and
    the columns of its main output."""

    step: Step
    inputs: list
    columns: dict | None = None


@dataclass
class Plan:
    """A checked spec for one mode: what ``build`` composes.

    Args:
        name: The pipeline's name.
        file: The spec file.
        ctx: The shared step context (mode, run config, contract, event time).
        nodes: Active steps in file order.
        source: The source node.
        chain: The records steps from the source on, in order; the last one's output is the
            curated records.
        aggregates: The aggregate nodes.
        sinks: The sink nodes (each with a ``role``: curated, aggregates or dead_letters).
        errors: Every error output, as ``(step name, output name)``.
        pii: The PII policy (``beam_pipelines.pii.policy``), or None when the contract has no
            personal-data field.
    """

    name: str
    file: str | None
    ctx: Context
    nodes: list
    source: Node
    chain: list
    aggregates: list
    sinks: list
    errors: list = field(default_factory=list)
    pii: object = None

    @property
    def curated(self) -> Node:
        return self.chain[-1]

    def check_io(self) -> None:
        """Raises the first SpecError of a source or sink missing a flag (e.g. --input)."""
        for n in self.nodes:
            if n.step.unset:
                raise n.step.unset[0]

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.step.name == name)


def _inputs(t: dict, place: str, file: str | None, previous: str | None) -> list:
    given = t.get("input")
    if given is None:
        return [] if previous is None else [(previous, None)]
    refs = [given] if isinstance(given, str) else list(given)
    return [(r.split(".", 1)[0], r.split(".", 1)[1] if "." in r else None) for r in refs]


def compile_spec(doc, cfg, file: str | None = None) -> Plan:
    """Checks a loaded spec against the run's mode and flags; SpecError at the first mistake."""
    check(doc, SPEC_SCHEMA, "", file)
    schedule_of(doc, file or "<spec>")  # what runs it (Airflow) is checked with the rest
    pipe = doc["pipeline"]
    mode = "streaming" if cfg.streaming else "batch"
    base_dir = os.path.dirname(os.path.abspath(file)) if file else os.getcwd()
    contract = contract_ref.resolve(pipe["contract"], base_dir, file, "pipeline.contract", line_of(pipe, "contract"))
    ctx = Context(mode=mode, cfg=cfg, contract=contract, file=file, base_dir=base_dir)
    params = params_of(cfg)
    nodes: list[Node] = []
    seen: dict[str, int] = {}
    previous = None
    transforms = pipe["transforms"]
    for i, t in enumerate(transforms):
        place = f"pipeline.transforms[{i}]"
        kind = t["type"]
        if kind not in STEP_TYPES:
            hint = did_you_mean(kind, STEP_TYPES) or f" (known: {', '.join(sorted(STEP_TYPES))})"
            raise SpecError(place_of(place, "type"), f"unknown transform type {kind!r}{hint}", file, line_of(t, "type"))
        cls = STEP_TYPES[kind]
        if t.get("mode", mode) != mode:
            continue
        if mode not in cls.modes:
            raise SpecError(
                place_of(place, "type"),
                f"{kind} runs in {' and '.join(cls.modes)} mode only; give it mode: {cls.modes[0]} and add a "
                f"{mode} alternative",
                file,
                line_of(t, "type"),
            )
        config = _substitute(
            copy.deepcopy(t.get("config", Map())), params, place_of(place, "config"), file, t, "config"
        )
        schema = cls.config_schema
        unset = {
            k: SpecError(
                place_of(place_of(place, "config"), k),
                f"--{v.param} is required (this spec takes it as ${{{v.param}}})",
                file,
                line_of(config, k) or line_of(t, "config"),
            )
            for k, v in config.items()
            if isinstance(v, _Unset) and k in schema.get("required", ())
        }
        config = _drop_nulls(config)
        if unset and cls.kind not in ("source", "sink"):
            raise next(iter(unset.values()))
        # A source or sink may do without: a test passes its IO in (see Plan.check_io).
        schema = {**schema, "required": [k for k in schema.get("required", ()) if k not in unset]}
        check(config, schema, place_of(place, "config"), file, t, "config")
        name = t.get("name", kind)
        if name in seen:
            raise SpecError(
                place_of(place, "name"),
                f"step name {name!r} is already used by transforms[{seen[name]}] (names are labels: unique per mode)",
                file,
                line_of(t, "name" if "name" in t else "type"),
            )
        seen[name] = i
        step = cls(name, config, place, ctx)
        step.unset = list(unset.values())
        inputs = [] if cls.kind == "source" else _inputs(t, place, file, previous)
        if cls.kind == "source" and "input" in t:
            raise SpecError(place_of(place, "input"), "a source takes no input", file, line_of(t, "input"))
        if cls.kind != "source" and not inputs:
            raise SpecError(place, "needs an input (no transform comes before it)", file, t.line)
        nodes.append(Node(step, inputs))
        previous = name
    return _link(nodes, ctx, file, transforms, pipe)


def _drop_nulls(node):
    # A parameter without a value (an unset flag) leaves its key out: the step's default applies.
    if isinstance(node, dict):
        for k in [k for k, v in node.items() if isinstance(v, _Unset)]:
            del node[k]
        for v in node.values():
            _drop_nulls(v)
    elif isinstance(node, list):
        node[:] = [_drop_nulls(v) for v in node if not isinstance(v, _Unset)]
    return node


def _link(nodes: list[Node], ctx: Context, file, transforms, pipe) -> Plan:
    by_name = {n.step.name: n for n in nodes}
    order = {n.step.name: i for i, n in enumerate(nodes)}

    def fail(node: Node, key: str | None, message: str):
        t = transforms[int(node.step.place.rsplit("[", 1)[1].rstrip("]"))]
        at = place_of(node.step.place, key) if key else node.step.place
        raise SpecError(at, message, file, line_of(t, key) if key else t.line)

    sources = [n for n in nodes if n.step.kind == "source"]
    if len(sources) != 1:
        where = ", ".join(n.step.name for n in sources) or "none"
        raise SpecError("pipeline.transforms", f"needs exactly one source in {ctx.mode} mode, found {where}", file,
                        line_of(pipe, "transforms"))  # fmt: skip
    # Every input names an earlier step and one of its outputs.
    for n in nodes:
        for ref, output in n.inputs:
            if ref not in by_name:
                hint = did_you_mean(ref, by_name) or f" (steps: {', '.join(by_name)})"
                fail(n, "input", f"no step named {ref!r} in {ctx.mode} mode{hint}")
            if order[ref] >= order[n.step.name]:
                fail(n, "input", f"{ref!r} comes later in the file: inputs are defined before use")
            target = by_name[ref].step
            outputs = _error_names(target)
            named = target.outputs()
            if output is not None and output not in outputs and output not in named:
                known = ", ".join(outputs) or "none"
                also = f"; outputs: {', '.join(named)}" if named else ""
                fail(
                    n,
                    "input",
                    f"{ref} has no output {output!r}{did_you_mean(output, [*outputs, *named])} (error outputs: "
                    f"{known}{also})",
                )
            if output in named and n.step.kind != "sink":
                fail(n, "input", f"{ref}.{output} goes to a sink (records flow as one chain)")
    # The event time (streaming sources judge lateness by it) comes from the first aggregate.
    aggregates = [n for n in nodes if n.step.kind == "aggregate"]
    if aggregates:
        ctx.event_time = aggregates[0].step.event_time()
    else:  # streamed features judge lateness as a window does
        ctx.event_time = next((t for n in nodes if (t := _event_time(n.step)) is not None), None)
    # The records chain, and the columns reaching every step.
    chain = [sources[0]]
    consumers: dict[tuple, list] = {}
    for n in nodes:
        for ref, output in n.inputs:
            consumers.setdefault((ref, output), []).append(n)
    for n in nodes:
        ins = [(by_name[r], o) for r, o in n.inputs]
        kind = n.step.kind
        if kind in ("records", "aggregate") or (kind == "sink" and n.step.role != "dead_letters"):
            if len(ins) != 1 or (ins[0][1] is not None and ins[0][1] not in ins[0][0].step.outputs()):
                fail(n, "input", f"{n.step.type} takes one input: the records (or aggregate) of one step")
        if kind == "records":
            src = ins[0][0]
            if src is not chain[-1]:
                fail(n, "input", f"records flow as one chain: {n.step.name} must take {chain[-1].step.name}, "
                                 f"the step before it in the chain, not {src.step.name}")  # fmt: skip
            chain.append(n)
        if kind == "sink":
            _sink_role(n, ins, fail)
        n.columns = n.step.columns([_columns_of(i, o) for i, o in ins] if kind != "source" else [])
    curated = chain[-1]
    if curated.columns is None:
        fail(curated, None, "the records must be validated against the contract: add Parse and Validate steps")
    for n in nodes:
        for src, output in ((by_name[r], o) for r, o in n.inputs):
            kind = n.step.kind
            if output is None and src.step.kind == "records" and src is not curated and kind != "records":
                fail(n, "input", f"{n.step.type} takes the final records ({curated.step.name}) or an aggregate, "
                                 f"not {src.step.name}'s")  # fmt: skip
            if kind == "aggregate" and src is not curated:
                fail(n, "input", f"an aggregate takes the final records ({curated.step.name})")
    errors = []
    for n in nodes:
        for output in _error_names(n.step):
            errors.append((n.step.name, output))
            takers = consumers.get((n.step.name, output), [])
            if not any(t.step.role == "dead_letters" for t in takers if t.step.kind == "sink"):
                fail(n, "config.error_handling.output",
                     f"error output {n.step.name}.{output} is not consumed: add it to a WriteDeadLetters step's "
                     "input (records must never be dropped silently)")  # fmt: skip
    sinks = [n for n in nodes if n.step.kind == "sink"]
    if ctx.mode == "streaming" and not any(s.step.role == "dead_letters" for s in sinks):
        fail(sources[0], None, "a streaming source's late records need a WriteDeadLetters step")
    # What later steps read: earlier steps keep those columns (e.g. the record text for quarantines).
    later: set[str] = set()
    for n in reversed(nodes):
        n.step.later_reads = set(later)
        later |= n.step.reads()
    pii = policy_of(pipe, ctx.contract, sinks, file)
    return Plan(pipe["name"], file, ctx, nodes, sources[0], chain, aggregates, sinks, errors, pii)


def _event_time(step: Step):
    given = getattr(step, "event_time", None)
    return given() if given is not None else None


def _columns_of(node: Node, output: str | None):
    """The columns reaching a step from ``node`` (its main output's, or a named output's)."""
    if output is not None and output in node.step.outputs():
        return node.step.output_columns(output)
    return node.columns


def _error_names(step: Step) -> list[str]:
    eh = step.config.get("error_handling")
    # A streaming source's late records are not listed: they go to every WriteDeadLetters step.
    return [eh["output"]] if eh else []


def _sink_role(n: Node, ins: list, fail) -> None:
    outputs = [(src, o) for src, o in ins]
    if n.step.role == "dead_letters":
        for src, o in outputs:
            if o is None:
                fail(
                    n, "input", f"WriteDeadLetters takes error outputs (<step>.<output>), not {src.step.name}'s records"
                )
        return
    src, output = outputs[0]
    if output is not None:  # a step's named output (e.g. streamed features' online rows)
        n.step.role = "output"
        return
    n.step.role = {"aggregate": "aggregates", "source": "received"}.get(src.step.kind, "curated")
