"""The streaming benchmark's peers: the contract's checks the Python peers share, folded the way
the loop peer folds them, give the aggregates the harness expects; and the launchers' plumbing
(the PyFlink JDBC URL keeps the password off the command line; every system is registered)."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timezone
from decimal import Decimal

import orjson
import pytest

from benchmarks.stream_events import backlog, expected_rows
from benchmarks.stream_peers import SYSTEMS
from benchmarks.stream_peers.loop import _key
from benchmarks.stream_peers.pyflink import jdbc_url
from benchmarks.stream_peers.records import check


def _fold(messages: list[bytes]) -> list[tuple]:
    seen: set[str] = set()
    aggs: dict[tuple, list] = defaultdict(lambda: [0, set(), 0])
    for m in messages:
        try:
            parsed = _key(orjson.loads(m), 3600)
        except orjson.JSONDecodeError:
            continue
        if parsed is None or parsed[0] in seen:
            continue
        event_id, key, user, cents = parsed
        seen.add(event_id)
        agg = aggs[key]
        agg[0] += 1
        agg[1].add(user)
        agg[2] += cents
    return sorted((datetime.fromtimestamp(k[0], timezone.utc), k[1], k[2], a[0], len(a[1]), Decimal(a[2]).scaleb(-2))
                  for k, a in aggs.items())  # fmt: skip


def test_checks_and_dedup_give_the_expected_aggregates():
    messages = backlog(3000, 1_700_000_000_000_000, 86_400, seed=5)
    assert any(not m.startswith(b"{") or not m.endswith(b"}") for m in messages)  # lines that are not events
    assert len(set(messages)) < len(messages)  # repeats
    assert _fold(messages) == expected_rows(messages)


GOOD = {"event_id": "e1", "user_id": "u1", "event_type": "purchase", "ts": "2026-01-01T10:00:00Z", "amount": 12.34}


@pytest.mark.parametrize(
    "change",
    [
        {"event_type": "teleport"},
        {"user_id": 7},
        {"event_id": None},
        {"ts": "yesterday"},
        {"amount": None},
        {"amount": -1},
        {"amount": True},
        {"amount": "12.34"},
    ],
)
def test_check_rejects_what_the_contract_rejects(change):
    assert check(GOOD) is not None
    assert check({**GOOD, **change}) is None


def test_check_reads_the_fields_the_aggregates_need():
    event = check({**GOOD, "country": None})
    assert (event.country, event.cents, event.seconds) == ("", 1234, 1767261600.0)
    assert check({**GOOD, "event_type": "view", "amount": None}).cents == 0
    assert check(["not", "an", "object"]) is None


def test_jdbc_url_keeps_the_password_apart():
    url, user, password = jdbc_url("postgresql://bp:s3cret@127.0.0.1:5433/bench")
    assert (url, user, password) == ("jdbc:postgresql://127.0.0.1:5433/bench", "bp", "s3cret")
    assert jdbc_url("host=db port=6543 dbname=x user=u") == ("jdbc:postgresql://db:6543/x", "u", "")


def test_every_system_is_a_module_with_the_contracts_flags():
    assert {"beam_pipelines", "loop", "quix", "pyflink"} <= set(SYSTEMS)
    for system in SYSTEMS.values():
        assert system.module.startswith("benchmarks.stream_peers.")
