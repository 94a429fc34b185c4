"""Secrets kept out of the job graph and out of error lines, without a service: a PostgreSQL sink's
password is refused in its spec ``dsn`` (it would travel pickled in the graph) and taken from
dsn_env / dsn_file on the worker; a malformed connection string is hidden piece by piece in the
driver's message. The end-to-end scan is tests/e2e/test_security_canary.py; README: Security."""

from __future__ import annotations

import pytest
import yaml

from beam_pipelines.spec.compile import compile_spec
from beam_pipelines.spec.config import EventsConfig
from beam_pipelines.spec.yamlsrc import SpecError
from tests.e2e.helpers import ROOT
from transforms.ingest.pg_sql import scrub
from transforms.sinks.postgres import UpsertPostgres

from tests.unit.test_security_sql import SCHEMA  # isort: skip

SECRET = "s3cr3t-pw"
BATCH = EventsConfig(input="in", input_format="jsonl", output="/tmp/out")


def orders_with_sink(config: str) -> dict:
    doc = yaml.safe_load((ROOT / "beam_pipelines" / "pipelines" / "orders.yaml").read_text())
    doc["pipeline"]["transforms"].append(
        {"name": "Upsert", "type": "UpsertPostgres", "input": "DailyRevenue",
         "config": {**yaml.safe_load(config), "table": "rev", "keys": ["window_start", "region", "status"]}}
    )  # fmt: skip
    return doc


@pytest.mark.parametrize(
    "dsn",
    [
        f"postgresql://bp:{SECRET}@db/bp",
        f"host=db user=bp password={SECRET}",
        f"postgresql://bp@db/bp?password={SECRET}",
    ],
)
def test_a_password_in_a_sinks_dsn_is_refused_naming_its_place(dsn):
    with pytest.raises(SpecError) as e:
        compile_spec(orders_with_sink(yaml.safe_dump({"dsn": dsn})), BATCH, "orders.yaml")
    text = str(e.value)
    assert "config.dsn: holds a password, which would travel in the job graph" in text and SECRET not in text


def test_the_mirror_refuses_a_password_in_pg_dsn():
    doc = yaml.safe_load((ROOT / "examples" / "cdc" / "orders.yaml").read_text())
    cfg = EventsConfig(input=None, input_format="jsonl", output="/tmp/out", streaming=True, kafka_bootstrap="k:9092",
                       kafka_topic="t", pg_dsn=f"postgresql://bp:{SECRET}@db/bp")  # fmt: skip
    with pytest.raises(SpecError, match="config.dsn: holds a password") as e:
        compile_spec(doc, cfg, str(ROOT / "examples" / "cdc" / "orders.yaml"))
    assert SECRET not in str(e.value)
    compile_spec(doc, EventsConfig(**{**cfg.__dict__, "pg_dsn": "postgresql://bp@db/bp"}), "orders.yaml")


@pytest.mark.parametrize(
    "config, ok",
    [("{dsn: 'postgresql://bp@db/bp'}", True), ("{dsn_env: PG_SINK_DSN}", True), ("{dsn_file: pg.dsn}", True),
     ("{}", False), ("{dsn_env: A, dsn_file: b}", False), ("{dsn: 'postgresql://bp@db/bp', dsn_env: A}", False),
     ("{dsn_env: 'A; rm -rf /'}", False)],
)  # fmt: skip
def test_a_sink_takes_its_connection_string_from_exactly_one_place(config, ok):
    doc = orders_with_sink(config)
    if ok:
        compile_spec(doc, BATCH, "orders.yaml")
    else:
        with pytest.raises(SpecError, match=r"transforms\[\d+\]"):
            compile_spec(doc, BATCH, "orders.yaml")
    with pytest.raises(ValueError, match="exactly one"):
        UpsertPostgres(None, "t", ("id",), SCHEMA)
    with pytest.raises(ValueError, match="dsn_env"):
        UpsertPostgres(None, "t", ("id",), SCHEMA, dsn_env="X; echo")


@pytest.mark.parametrize(
    "dsn, shown",
    [(f"{SECRET} is-not-a-dsn", f'missing "=" after "{SECRET}" in connection info string'),
     (f"postgresql://bp:{SECRET}@db:1/bp", f"connection to postgresql://bp:{SECRET}@db:1/bp failed"),
     (f"host=db password={SECRET}", f"password {SECRET} rejected")],
)  # fmt: skip
def test_scrub_hides_the_connection_string_and_its_pieces(dsn, shown):
    assert SECRET not in scrub(shown + "\nHINT: a second line", dsn)
    assert "\n" not in scrub(shown + "\nHINT: a second line", dsn)
