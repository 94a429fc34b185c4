"""EntityFeaturesStream (unbounded input): a FeatureSet kept up to date per entity, with keyed state.

The same definitions and kernels as the batch composite (``transforms.entity_features``): each
batch's events without features become dead letters, the rest are reduced to the columns the
features read (``feature_kernels.prepare``) and split by the same stable hash of the entity into
``partitions``. Each partition keeps, in Beam state, its entities' recent events: those a row
still to come can read (``feature_horizon.retained``: the longest trailing range and the open
sessions). Two outputs:

- ``online``: as each batch arrives, every entity it touches gets its features as of its latest
  event, computed by ``feature_kernels.compute`` over its kept events plus the new ones (an event
  arriving out of order is counted as soon as it comes: the entity's latest row is recomputed).
  Each row carries ``_version``, increasing per partition, so a store keeping the highest version
  keeps the newest computation whatever order the rows reach it in.
- ``features``: each event's row, once, when it is final: an event-time timer per partition fires
  when the watermark passes ``closing_us`` of its earliest pending event (its window's end plus
  the allowed lateness, the source's own lateness rule), and the rows of every event before
  ``closed_before(watermark)`` are computed over the kept events, which by then hold every event
  of the entity at or before them. So an out-of-order event within the allowed lateness counts
  exactly as in batch, and a late one never reaches here (the source sends it to its ``late``
  output). The rows are those of ``EntityFeatures`` over the same on-time events.

An event that reaches this step at or before a time already final (a source that does not hold
its watermark behind its records) cannot be counted any more: it is a dead letter, reason
``late``, rather than a silent change of rows already written.

State per partition: the kept events (a bag of prepared tables, compacted when it grows to many
pieces; each instance keeps them in memory too, see ``state_copies``), the final horizon, the pending timer and the version; old events are dropped at each
timer firing. Prism fires the event-time timers as the watermark passes (tested with a real
Kafka topic: tests/integration/test_streaming_features.py).
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.coders import VarIntCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MAX_TIMESTAMP, Timestamp

from transforms.entity_features import _PartitionFn
from transforms.feature_defs import FeatureSet
from transforms.feature_horizon import closed_before, closing_us, latest_rows, retained, times_us
from transforms.feature_kernels import compute
from transforms.records import ArrowTableCoder, as_array, dead_letters, json_text, typed
from transforms.state_copies import StateCopies

__all__ = ["EntityFeaturesStream", "VERSION"]

VERSION = "_version"  # online rows: the partition's computation count (higher is newer)
_COMPACT_PIECES = 32  # the kept events are rewritten as one table past this many pieces
_END_US = MAX_TIMESTAMP.micros  # the horizon once the input has ended


def _of_entities(events: pa.Table, fs: FeatureSet, entities: pa.Array) -> pa.Table:
    return events.filter(pc.is_in(events.column(fs.entity), value_set=entities))


class _Kept:
    """A partition's kept events as this DoFn instance last wrote them, with the state token then
    written and the number of pieces the bag holds."""

    def __init__(self, token: int | None, events: pa.Table | None, pieces: int):
        self.token, self.events, self.pieces = token, events, pieces


class _KeepEntitiesFn(beam.DoFn):
    EVENTS = BagStateSpec("events", ArrowTableCoder())
    TOKEN = ReadModifyWriteStateSpec("token", VarIntCoder())  # changes with every write of EVENTS
    CLOSED = ReadModifyWriteStateSpec("closed", VarIntCoder())  # µs: every event before it is final
    ALARM = ReadModifyWriteStateSpec("alarm", VarIntCoder())  # µs: when the close timer is set to fire
    VERSION = ReadModifyWriteStateSpec("version", VarIntCoder())
    CLOSE = TimerSpec("close", TimeDomain.WATERMARK)
    FLUSH = TimerSpec("flush", TimeDomain.WATERMARK)  # at the end of the input

    def __init__(self, fs: FeatureSet, window_us: int, lateness_us: int, stage: str):
        self._fs, self._window_us, self._lateness_us, self._stage = fs, window_us, lateness_us, stage

    def setup(self):
        self._final = beam.metrics.Metrics.counter(self._stage, "feature_rows")
        self._online = beam.metrics.Metrics.counter(self._stage, "online_rows")
        self._late = beam.metrics.Metrics.counter(self._stage, "late")
        # Reading the whole bag per element would cost time in proportion to every kept event.
        self._kept = StateCopies()  # partition -> kept events as last written here

    def _events(self, pid: int, events_state, token_state) -> _Kept:
        token = token_state.read()

        def load() -> _Kept:
            pieces = list(events_state.read())
            return _Kept(token, pa.concat_tables(pieces) if pieces else None, len(pieces))

        return self._kept.get(pid, token, load)

    def _write(self, kept: _Kept, events_state, token_state, added: pa.Table | None = None) -> None:
        """Appends ``added`` to the bag, or (None) replaces the bag with ``kept.events``."""
        if added is not None and kept.pieces < _COMPACT_PIECES:
            events_state.add(added)
            kept.pieces += 1
        else:
            events_state.clear()
            kept.pieces = 0
            if kept.events is not None and kept.events.num_rows:
                kept.events = kept.events.combine_chunks()
                events_state.add(kept.events)
                kept.pieces = 1
        token_state.write(self._kept.written(kept))

    def process(
        self,
        element,
        events_state=beam.DoFn.StateParam(EVENTS),
        token_state=beam.DoFn.StateParam(TOKEN),
        closed_state=beam.DoFn.StateParam(CLOSED),
        alarm_state=beam.DoFn.StateParam(ALARM),
        version_state=beam.DoFn.StateParam(VERSION),
        close=beam.DoFn.TimerParam(CLOSE),
        flush=beam.DoFn.TimerParam(FLUSH),
    ):
        pid, new = element
        if new.num_rows == 0:
            return
        fs = self._fs
        t = times_us(new.column(fs.time))
        closed = closed_state.read()
        if closed is not None and (t < closed).any():
            too_late = t < closed
            yield beam.pvalue.TaggedOutput("dead_letters", self._late_letters(new.filter(pa.array(too_late)), closed))
            new, t = new.filter(pa.array(~too_late)), t[~too_late]
            if new.num_rows == 0:
                return
        kept = self._events(pid, events_state, token_state)
        kept.events = new if kept.events is None else pa.concat_tables([kept.events, new])
        self._write(kept, events_state, token_state, added=new)
        entities = pc.unique(as_array(new.column(fs.entity)))
        latest = latest_rows(compute(_of_entities(kept.events, fs, entities), fs), fs)
        version = (version_state.read() or 0) + 1
        version_state.write(version)
        self._online.inc(latest.num_rows)
        yield beam.pvalue.TaggedOutput("online", latest.append_column(VERSION, pa.array(
            np.full(latest.num_rows, version, dtype=np.int64))))  # fmt: skip
        due = int(closing_us(int(t.min()), self._window_us, self._lateness_us))
        alarm = alarm_state.read()
        if alarm is None or due < alarm:
            close.set(Timestamp(micros=due))
            alarm_state.write(due)
            flush.set(GlobalWindow().max_timestamp())

    @on_timer(CLOSE)
    def _close(
        self,
        pid=beam.DoFn.KeyParam,
        fired=beam.DoFn.TimestampParam,
        events_state=beam.DoFn.StateParam(EVENTS),
        token_state=beam.DoFn.StateParam(TOKEN),
        closed_state=beam.DoFn.StateParam(CLOSED),
        alarm_state=beam.DoFn.StateParam(ALARM),
        close=beam.DoFn.TimerParam(CLOSE),
    ):
        now = closed_before(fired.micros, self._window_us, self._lateness_us)
        states = (events_state, token_state, closed_state, alarm_state)
        yield from self._finalize(pid, now, states, close)

    @on_timer(FLUSH)
    def _flush(
        self,
        pid=beam.DoFn.KeyParam,
        events_state=beam.DoFn.StateParam(EVENTS),
        token_state=beam.DoFn.StateParam(TOKEN),
        closed_state=beam.DoFn.StateParam(CLOSED),
        alarm_state=beam.DoFn.StateParam(ALARM),
        close=beam.DoFn.TimerParam(CLOSE),
    ):
        # The input has ended: every event is final. (Close timers set while the watermark
        # jumps to the end would each hold only their own firing; this one holds them all.)
        close.clear()
        yield from self._finalize(pid, _END_US, (events_state, token_state, closed_state, alarm_state), close)

    def _finalize(self, pid: int, now: int, states: tuple, close):
        """Emits the rows of the events before ``now`` not emitted yet; drops what no row to come
        reads; sets the close timer for the earliest event still pending."""
        events_state, token_state, closed_state, alarm_state = states
        fs = self._fs
        was = closed_state.read()
        if was is not None and now <= was:
            return
        closed_state.write(now)
        alarm_state.clear()
        kept = self._events(pid, events_state, token_state)
        events = kept.events
        if events is None or events.num_rows == 0:
            return
        t = times_us(events.column(fs.time))
        final = t < now
        if was is not None:
            final &= t >= was
        if final.any():
            entities = pc.unique(as_array(events.column(fs.entity)).filter(pa.array(final)))
            rows = compute(_of_entities(events, fs, entities), fs)
            rt = times_us(rows.column(fs.time))
            done = (rt < now) if was is None else (rt < now) & (rt >= was)
            rows = rows.filter(pa.array(done))
            self._final.inc(rows.num_rows)
            yield rows
        keep = retained(events, fs, now)
        if not keep.all():
            kept.events = events.filter(pa.array(keep))
            self._write(kept, events_state, token_state)
        pending = t[keep & (t >= now)]
        if len(pending):
            due = int(closing_us(int(pending.min()), self._window_us, self._lateness_us))
            close.set(Timestamp(micros=due))
            alarm_state.write(due)

    def _late_letters(self, rows: pa.Table, closed_us: int) -> pa.Table:
        fs = self._fs
        raw = json_text(rows.select([fs.entity, fs.time, *fs.keep]))
        horizon = pa.scalar(closed_us, pa.int64()).cast(pa.timestamp("us", tz="UTC")).as_py().isoformat()
        error = (
            f"event time is before {horizon}, when its entity's features became final (the source let it through "
            "after its watermark had passed: it cannot be counted any more)"
        )
        self._late.inc(rows.num_rows)
        return dead_letters(self._stage, "late", fs.time, error, raw, pa.nulls(rows.num_rows, pa.string()))


class EntityFeaturesStream(beam.PTransform):
    """Features of each event's entity as of the event's time (``transforms.feature_defs``), over
    an unbounded input, with the batch composite's values (see the module doc).

    Args:
        features: The FeatureSet (entity, time, features, kept columns).
        window_seconds: The event-time window the source judges lateness by (``ReadKafka``'s
            ``window_seconds``): an event is final once its window's end plus the allowed
            lateness has passed.
        allowed_lateness_seconds: The source's allowed lateness.
        partitions: Hash partitions of the entity, each with its own state (parallelism).
        stage: The dead letters' stage and the metrics' namespace.

    Returns a dict: ``features`` (each event's row once final, as ``EntityFeatures`` makes it),
    ``online`` (per batch, each touched entity's row as of its latest event, with ``_version``)
    and ``dead_letters``.
    """

    def __init__(
        self,
        features: FeatureSet,
        window_seconds: int,
        allowed_lateness_seconds: int,
        partitions: int = 8,
        stage: str = "features",
        label: str | None = None,
    ):
        super().__init__(label)
        if not isinstance(features, FeatureSet):
            raise ValueError(f"features must be a FeatureSet, got {type(features).__name__}")
        for name, value, least in (("window_seconds", window_seconds, 1), ("partitions", partitions, 1),
                                   ("allowed_lateness_seconds", allowed_lateness_seconds, 0)):  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
        if not stage:
            raise ValueError("stage is required")
        self._fs, self._partitions, self._stage = features, partitions, stage
        self._window_us, self._lateness_us = window_seconds * 1_000_000, allowed_lateness_seconds * 1_000_000

    def expand(self, tables):
        part_type = beam.typehints.KV[int, pa.Table]
        parts = tables | "PartitionByEntity" >> beam.ParDo(
            _PartitionFn(self._fs, self._partitions, None, self._stage)
        ).with_input_types(pa.Table).with_output_types(part_type).with_outputs("dead_letters", main="parts")
        kept = typed(parts.parts, part_type) | "KeepEntities" >> beam.ParDo(
            _KeepEntitiesFn(self._fs, self._window_us, self._lateness_us, self._stage)
        ).with_outputs("online", "dead_letters", main="features")
        dead = (typed(parts.dead_letters), typed(kept.dead_letters)) | "DeadLetters" >> beam.Flatten()
        return {"features": typed(kept.features), "online": typed(kept.online), "dead_letters": typed(dead)}
