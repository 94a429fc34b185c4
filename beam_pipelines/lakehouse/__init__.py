"""The lakehouse: medallion layers (bronze, silver, gold) as Delta Lake tables (README: Lakehouse).

``tables`` holds the Delta writes; ``commit`` commits a run's staged rows at publish time;
``maintain`` keeps the tables (with ``tiers``, the cold tier); ``erasure`` removes a data subject
(README.md here has the map).
"""

from __future__ import annotations

__all__ = ["table_entries"]


def table_entries(plan, output: str, staging: str, run_id: str) -> list[dict]:
    """What publishing run ``run_id`` of ``plan`` commits: one journal entry per WriteLakehouse
    step (see ``commit.prepare``). Raises ``publish.NotPublished`` when a table cannot take the
    run's rows."""
    entries = [n.step.table_entry(output, staging) for n in plan.sinks if n.step.type == "WriteLakehouse"]
    if not entries:
        return []
    from beam_pipelines import publish
    from beam_pipelines.lakehouse import commit

    try:
        return commit.prepare(entries, run_id)
    except OSError as e:
        raise publish.NotPublished(f"nothing published: {e}") from e
