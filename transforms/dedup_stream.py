"""DeduplicateStream: one row per key over an unbounded input, with keyed state.

Batch deduplication (``transforms.dedup``) groups the whole input once. A stream never ends,
so here each hash partition of the key keeps, in Beam state, the keys it has already let
through; a later row with a seen key is counted as a duplicate and dropped. A key is forgotten
``horizon_seconds`` of event time after its row's time, once an element timestamped later than
that has arrived: a copy arriving later belongs to a window already closed (use window size +
allowed lateness), so it could not change a result.

Element timestamps, not the newest event time seen, decide, because the source stamps each
batch at or below its watermark (ReadKafka: at or below the lowest watermark over the topic's
partitions). A source read unevenly (one Kafka partition hours of event time ahead of another
while catching up) brings copies whose originals are far older than the newest row; they are
still recognised, since the slowest partition holds the stamps back. (An event-time timer
would say the same, but Prism delays a stateful stage's elements behind its pending timers.)

The survivor is the first copy to arrive, not the earliest by ``order_by`` as in batch: a
stream cannot wait for copies that may never come. Within one table, ``order_by`` still
chooses.
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.coders import VarIntCoder
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec
from apache_beam.utils.timestamp import MIN_TIMESTAMP

from transforms.dedup import keep_first
from transforms.records import ArrowTableCoder, hash_partition, typed
from transforms.state_copies import StateCopies

__all__ = ["DeduplicateStream"]

_SEEN = pa.schema([("key", pa.string()), ("until_us", pa.int64())])
_NO_STAMP = MIN_TIMESTAMP.micros


class _PartitionFn(beam.DoFn):
    def __init__(self, key: str, order_by: tuple[str, ...], partitions: int):
        self._key, self._order_by, self._partitions = key, order_by, partitions

    def process(self, table: pa.Table):
        deduped = keep_first(table, self._key, self._order_by)
        removed = table.num_rows - deduped.num_rows
        if removed:
            yield beam.pvalue.TaggedOutput("stats", {"duplicates": removed})
        pids = hash_partition(deduped.column(self._key), self._partitions)
        for pid in np.unique(pids):
            yield int(pid), deduped.filter(pa.array(pids == pid))


class _Seen:
    """One partition's remembered keys as this DoFn instance last wrote them: key -> until (µs)."""

    def __init__(self, token: int, until: dict[str, int], pruned_at: int):
        self.token, self.until, self.pruned_at = token, until, pruned_at


class _SeenFn(beam.DoFn):
    """Drops rows whose key this partition has let through before.

    The keys live in Beam state as a bag of small (key, until_us) tables, one appended per
    element: a bundle writes only its new keys. Each instance keeps the partition's keys in
    memory too (``StateCopies``): reading the whole bag per element cost time in proportion to
    every key of the horizon and fell behind a live stream. Expired keys leave the bag when the
    stamps have moved a quarter of the horizon since the last pruning.
    """

    KEYS = BagStateSpec("keys", ArrowTableCoder())
    TOKEN = ReadModifyWriteStateSpec("token", VarIntCoder())
    STAMP = ReadModifyWriteStateSpec("stamp", VarIntCoder())  # the latest element timestamp (µs)

    def __init__(self, key: str, time_field: str, horizon_us: int):
        self._key, self._time, self._horizon_us = key, time_field, horizon_us

    def setup(self):
        self._dups = beam.metrics.Metrics.counter("dedup", "duplicates")
        self._seen = StateCopies()  # (partition, window) -> keys as last written here

    def _load(self, keys_state, token: int | None, stamp: int) -> _Seen:
        tables = list(keys_state.read())
        until: dict[str, int] = {}
        if tables:
            kept = pa.concat_tables(tables)
            kept = kept.filter(pc.greater(kept.column("until_us"), stamp))
            until = dict(zip(kept.column("key").to_pylist(), kept.column("until_us").to_pylist()))
        return _Seen(token, until, stamp)

    def process(
        self,
        element,
        timestamp=beam.DoFn.TimestampParam,
        window=beam.DoFn.WindowParam,
        keys_state=beam.DoFn.StateParam(KEYS),
        token_state=beam.DoFn.StateParam(TOKEN),
        stamp_state=beam.DoFn.StateParam(STAMP),
    ):
        pid, table = element
        stamp = max(stamp_state.read() or _NO_STAMP, timestamp.micros)
        stamp_state.write(stamp)
        token = token_state.read()
        seen = self._seen.get((pid, window), token, lambda: self._load(keys_state, token, stamp))
        # One set lookup per row: an Arrow is_in against every remembered key would hash them
        # all for each element.
        keys = table.column(self._key).cast(pa.string()).to_pylist()
        repeated = np.fromiter((k in seen.until for k in keys), bool, len(keys))
        dropped = int(repeated.sum())
        if dropped:
            table = table.filter(pa.array(~repeated))
            self._dups.inc(dropped)
            yield beam.pvalue.TaggedOutput("stats", {"duplicates": dropped})
        changed = False
        if table.num_rows:
            times = table.column(self._time).cast(pa.int64())
            fresh = pa.table(
                {"key": table.column(self._key).cast(pa.string()), "until_us": pc.add(times, self._horizon_us)}
            )
            keys_state.add(fresh)
            seen.until.update(zip(fresh.column("key").to_pylist(), fresh.column("until_us").to_pylist()))
            changed = True
        if stamp - seen.pruned_at >= self._horizon_us // 4:
            seen.until = {k: u for k, u in seen.until.items() if u > stamp}
            seen.pruned_at = stamp
            keys_state.clear()
            if seen.until:
                keys_state.add(pa.table({"key": pa.array(list(seen.until), pa.string()),
                                         "until_us": pa.array(list(seen.until.values()), pa.int64())}))  # fmt: skip
            changed = True
        if changed:
            token_state.write(self._seen.written(seen))
        if table.num_rows:
            yield table


class DeduplicateStream(beam.PTransform):
    """Keeps the first row per key in a stream; counts the others as duplicates.

    Args:
        key: The key column (e.g. ``event_id``).
        time_field: timestamp column giving each row's event time (for forgetting keys).
        horizon_seconds: How long, in event time, a key is remembered after its row.
        order_by: Chooses the survivor among copies inside one table (smallest first).
        partitions: Hash partitions of the key, each with its own state (parallelism).

    Returns a dict: ``unique`` (tables) and ``stats`` (dicts with ``duplicates``).
    """

    def __init__(
        self,
        key: str,
        time_field: str,
        horizon_seconds: int,
        order_by: tuple[str, ...] = (),
        partitions: int = 8,
        label: str | None = None,
    ):
        super().__init__(label)
        if not key or not time_field:
            raise ValueError("key and time_field are required")
        if horizon_seconds <= 0:
            raise ValueError("horizon_seconds must be positive")
        if partitions < 1:
            raise ValueError("partitions must be >= 1")
        self._key, self._time, self._order_by = key, time_field, tuple(order_by)
        self._horizon_us, self._partitions = horizon_seconds * 1_000_000, partitions

    def expand(self, tables):
        parts = tables | "Partition" >> beam.ParDo(
            _PartitionFn(self._key, self._order_by, self._partitions)
        ).with_outputs("stats", main="parts").with_input_types(pa.Table)
        kept = typed(parts.parts, beam.typehints.KV[int, pa.Table]) | "DropSeen" >> beam.ParDo(
            _SeenFn(self._key, self._time, self._horizon_us)
        ).with_outputs("stats", main="unique")
        stats = (typed(parts.stats, dict), typed(kept.stats, dict)) | "Stats" >> beam.Flatten()
        return {"unique": typed(kept.unique), "stats": stats}
