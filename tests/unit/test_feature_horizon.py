"""What a feature stream keeps and when a row is final: the events ``retained`` keeps give the same
rows at or after the horizon as the whole history, with any later events added; the horizon
arithmetic agrees with the source's lateness rule."""

import random
from datetime import timedelta

import numpy as np
import pyarrow as pa
import pytest

from tests.unit.test_feature_kernels import BASE, FEATURES, SCHEMA, events
from transforms.feature_defs import FeatureSet, SessionFeature, Trailing
from transforms.feature_horizon import closed_before, closing_us, latest_rows, retained, times_us
from transforms.feature_kernels import compute, prepare
from transforms.ingest.kafka_time import late_mask

H = 3600 * 1_000_000


def rows_from(table: pa.Table, fs: FeatureSet, horizon_us: int) -> list[dict]:
    rows = compute(table, fs)
    return rows.filter(pa.array(times_us(rows.column(fs.time)) >= horizon_us)).to_pylist()


@pytest.mark.parametrize("seed", range(6))
def test_kept_events_give_the_rows_the_whole_history_gives(seed):
    rng = random.Random(seed)
    history = prepare(pa.Table.from_pylist(events(seed, n=400, users=tuple("abcde")), SCHEMA), FEATURES)
    later = prepare(pa.Table.from_pylist(events(seed + 100, n=200, users=tuple("abcdef")), SCHEMA), FEATURES)
    t0 = int(times_us(history.column("ts")).min())
    for _ in range(4):
        horizon = t0 + rng.randrange(0, 26) * H + rng.choice([0, 1, -1, 180_000_000])
        past = history.filter(pa.array(times_us(history.column("ts")) < horizon))
        future = later.filter(pa.array(times_us(later.column("ts")) >= horizon))
        keep = retained(past, FEATURES, horizon)
        assert not keep.all() or past.num_rows == 0 or horizon - t0 < 24 * H
        whole = pa.concat_tables([past, future])
        kept = pa.concat_tables([past.filter(pa.array(keep)), future])
        assert rows_from(kept, FEATURES, horizon) == rows_from(whole, FEATURES, horizon)


def test_a_long_session_is_kept_whole_and_a_closed_one_is_dropped():
    fs = FeatureSet("user", "ts", (Trailing("n", "count", 60), SessionFeature("s", "session_length", 600)))

    def table(user_minutes):
        return pa.table({"user": [u for u, _ in user_minutes],
                         "ts": pa.array([BASE + timedelta(minutes=m) for _, m in user_minutes],
                                        pa.timestamp("us", tz="UTC"))})  # fmt: skip

    # a: an event every 5 minutes for 2 hours (one session); b: one session ended 20 minutes before the horizon.
    t = table([("a", m) for m in range(0, 121, 5)] + [("b", 30), ("b", 35), ("b", 100)])
    horizon = int(times_us(t.column("ts")).min()) + 121 * 60_000_000
    keep = retained(t, fs, horizon)
    assert [u for u, k in zip(t.column("user").to_pylist(), keep) if k] == ["a"] * 25
    late = table([("a", 123), ("b", 125)])
    assert rows_from(pa.concat_tables([t.filter(pa.array(keep)), late]), fs, horizon) == rows_from(
        pa.concat_tables([t, late]), fs, horizon
    )


def test_a_time_before_the_horizon_is_exactly_one_the_source_now_calls_late():
    rng = np.random.default_rng(3)
    window, lateness = 600 * 1_000_000, 120 * 1_000_000
    for _ in range(200):
        watermark = int(rng.integers(10**15, 10**15 + 10**11))
        t = watermark - rng.integers(-(10**9), 2 * 10**9, size=500)
        before = t < closed_before(watermark, window, lateness)
        late = late_mask(t, np.full(len(t), watermark), window // 1_000_000, lateness // 1_000_000)
        assert (before == late).all()
        assert (before == (closing_us(t, window, lateness) <= watermark)).all()


def test_latest_rows_take_each_entity_last_row():
    table = prepare(pa.Table.from_pylist(events(9, n=300), SCHEMA), FEATURES)
    rows = compute(table, FEATURES)
    latest = latest_rows(rows, FEATURES).to_pylist()
    assert [r["user"] for r in latest] == sorted({r["user"] for r in rows.to_pylist()})
    for r in latest:
        mine = [x for x in rows.to_pylist() if x["user"] == r["user"]]
        assert r == max(mine, key=lambda x: (x["ts"], x["id"]))
