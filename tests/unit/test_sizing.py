"""Shuffle partitions and curated buckets grow with the input unless the flags fix them."""

from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipelines.main import sized
from beam_pipelines.options import EventsOptions
from beam_pipelines.spec import EventsConfig


def cfg(fmt="parquet", **given):
    return EventsConfig(input="in/*", input_format=fmt, output="out", **given)


def test_partitions_and_buckets_follow_the_input_size():
    ev = PipelineOptions([]).view_as(EventsOptions)
    small = sized(cfg(), ev, 28 * 1_000_000)  # ~1M parquet rows
    big = sized(cfg(), ev, 28 * 20_000_000)  # ~20M
    assert (small.shuffle_partitions, small.curated_buckets) == (8, 1)
    assert (big.shuffle_partitions, big.curated_buckets) == (100, 8)
    jsonl = sized(cfg("jsonl"), ev, 165 * 20_000_000)
    assert (jsonl.shuffle_partitions, jsonl.curated_buckets) == (100, 8)
    five = sized(cfg(), ev, 28 * 5_000_000)
    assert five.shuffle_partitions == 25  # ~200k rows per merge, whatever the size


def test_flags_win_over_the_size():
    ev = PipelineOptions(["--shuffle_partitions=3", "--curated_buckets=2"]).view_as(EventsOptions)
    fixed = sized(cfg(shuffle_partitions=3, curated_buckets=2), ev, 28 * 20_000_000)
    assert (fixed.shuffle_partitions, fixed.curated_buckets) == (3, 2)
