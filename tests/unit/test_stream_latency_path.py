"""In streaming, the curated file writes and per-window profiles hang off a Reshuffle (a fusion
break on Prism), so their work is not part of each firing's latency; the aggregates take the
curated records directly. Batch has no such break. Checked on the built job graph (not run)."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from beam_pipelines.spec import EventsConfig
from beam_pipelines.spec.build import build, file_io, plan_for, stream_io
from tests.e2e.helpers import ROOT

STREAM = dict(streaming=True, kafka_bootstrap="k:9092", kafka_topic="t", pg_dsn="postgresql://x")


def consumers(p: beam.Pipeline) -> dict[str, set[str]]:
    """Full label of each transform -> full labels of the leaf transforms reading its outputs."""
    producers, readers = {}, {}
    for t in _walk(p._root_transform()):
        for out in t.outputs.values():
            producers[id(out)] = t.full_label
    for t in _walk(p._root_transform()):
        if t.parts:
            continue
        for pc in t.main_inputs.values():
            readers.setdefault(producers.get(id(pc)), set()).add(t.full_label)
    return readers


def _walk(t):
    yield t
    for part in t.parts:
        yield from _walk(part)


def built(tmp_path, **kw) -> beam.Pipeline:
    kw.setdefault("pipeline", "events")
    cfg = EventsConfig(input=str(tmp_path / "in.jsonl"), input_format="jsonl", output=str(tmp_path / "out"), **kw)
    plan = plan_for(cfg)
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = bool(kw.get("streaming"))
    p = beam.Pipeline(options=options)
    io = (stream_io if kw.get("streaming") else file_io)(cfg, str(tmp_path / "out"), plan)
    build(p, cfg, io, plan)
    return p


def test_streaming_writes_and_profiles_read_the_curated_records_after_a_fusion_break(tmp_path):
    readers = consumers(built(tmp_path, **STREAM))
    off = {r for label, rs in readers.items() if label and label.startswith("OffLatencyPath/") for r in rs}
    off = {r for r in off if not r.startswith("OffLatencyPath/")}  # the steps after the break
    assert any(label.startswith("WriteCurated/") for label in off), off
    assert any(label.startswith("ProfileCurated/") or label.startswith("WindowCurated/") for label in off), off
    curated = next(label for label in readers if label and label.startswith("SelectCurated"))
    direct = readers[curated]
    assert any(label.startswith("HourlyAggregate/") for label in direct)  # the latency path: no break
    assert not any(label.startswith("WriteCurated/") for label in direct)


def test_batch_has_no_break(tmp_path):
    readers = consumers(built(tmp_path))
    assert not any(label and "OffLatencyPath" in label for label in readers)


def _early_delay_ms(p: beam.Pipeline, window_label: str) -> int | None:
    """The processing-time delay of the early firings of the WindowInto labelled ``window_label``."""
    proto = p.to_runner_api()
    for t in proto.components.transforms.values():
        if t.unique_name == window_label:
            out = proto.components.pcollections[next(iter(t.outputs.values()))]
            trigger = proto.components.windowing_strategies[out.windowing_strategy_id].trigger
            early = trigger.after_end_of_window.early_firings
            stack = [early]
            while stack:  # the delay sits some levels down (AfterEach, Repeatedly)
                node = stack.pop()
                if node.HasField("after_processing_time"):
                    return node.after_processing_time.timestamp_transforms[0].delay.delay_millis
                stack.extend(node.repeat.subtrigger for _ in [0] if node.HasField("repeat"))
                stack.extend(node.after_each.subtriggers if node.HasField("after_each") else ())
            return None
    raise AssertionError(f"no transform {window_label}")


def test_a_windows_profile_fires_early_less_often_than_its_aggregates(tmp_path):
    # The profile re-merges every partial sketch of its window at each firing.
    p = built(tmp_path, early_firing_seconds=1, **STREAM)
    labels = {t.unique_name for t in p.to_runner_api().components.transforms.values()}
    assert "HourlyAggregate/Running" in labels  # the aggregates: a running value, emitted every second
    assert _early_delay_ms(p, "WindowCurated/Window") == 10_000


def _upstream(p: beam.Pipeline, label: str) -> set[str]:
    """Full labels of every leaf transform ``label`` reads from, directly or not."""
    producers, leaves = {}, {}
    for t in _walk(p._root_transform()):
        if not t.parts:
            leaves[t.full_label] = t
            for out in t.outputs.values():
                producers[id(out)] = t.full_label
    seen, todo = set(), [label]
    while todo:
        for pc in leaves[todo.pop()].main_inputs.values():
            if (up := producers.get(id(pc))) is not None and up not in seen:
                seen.add(up)
                todo.append(up)
    return seen


@pytest.mark.parametrize("spec, mirror", [("orders.yaml", "Mirror/Apply"), ("orders_lake.yaml", "Mirror/")])
def test_a_change_mirror_takes_its_batches_in_the_order_they_were_read(tmp_path, monkeypatch, spec, mirror):
    # A fusion break would let the runner apply a later batch first: the mirror's LSN guard would
    # then skip the earlier one as applied, and its changes would be lost.
    monkeypatch.setenv("PG_SOURCE_DSN", "postgresql://x@localhost/x")
    p = built(tmp_path, streaming=True, pg_dsn="postgresql://x@localhost/x",
              pipeline=str(ROOT / "examples" / "cdc" / spec))  # fmt: skip
    labels = {t.full_label for t in _walk(p._root_transform()) if not t.parts}
    sink = next(label for label in sorted(labels) if label.startswith(mirror))
    path = _upstream(p, sink)
    assert any(label.startswith("Read/") for label in path), path
    assert not [label for label in path if "OffLatencyPath" in label or "GroupByKey" in label]
