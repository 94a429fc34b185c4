"""A redrive's accounting: the published run report brought up to date, the redrive's own
section and history line, and the summary the CLI prints.

Counts stay those of the original run's records: ``read`` is unchanged, a replayed letter that
now passes moves from ``dead_lettered`` to ``curated`` (or to ``duplicates`` when its key was
already curated), one that still fails stays a dead letter. So conservation
(``read == curated + dead_lettered + duplicates + late``) holds across the run and its redrives,
and it is computed again, never assumed.
"""

from __future__ import annotations

from beam_pipelines.spec.build import make_report
from beam_pipelines.summary import lakehouse_lines
from transforms.sinks.files import join_path

__all__ = ["files_match", "notes", "redrive_section", "render", "updated_report", "updated_summary"]


def _prefixed(counts: dict, prefix: str) -> dict:
    return {k[len(prefix) :]: v for k, v in counts.items() if k.startswith(prefix)}


def redrive_section(run: dict, selected: int, letters: int, meta: dict, results: list | None = None) -> dict:
    """The ``redrive`` section of the report.

    Args:
        run: The redrive pipeline's counts (``read``, ``curated``, ``duplicates``,
            ``merge_duplicates``, ``dead_lettered[.<reason>]``, ...).
        selected: Letters selected for the replay.
        letters: Letters read from ``--dlq``.
        meta: Run id, time, pipeline, spec, dlq, filters and unmatched filter values.
        results: Expectation results on the replayed records, if the spec checks any.
    """
    merge_dups = int(run.get("merge_duplicates", 0))
    passed = int(run.get("curated", 0)) - merge_dups
    duplicates = int(run.get("duplicates", 0)) + merge_dups
    failing = int(run.get("dead_lettered", 0))
    section = {
        **meta,
        "letters": letters,
        "selected": selected,
        "passed": passed,
        "duplicates": duplicates,
        "still_failing": failing,
        "still_failing_reasons": dict(sorted(_prefixed(run, "dead_lettered.").items())),
        "conservation_ok": int(run.get("read", 0)) == selected == passed + duplicates + failing,
    }
    if results is not None:
        section["expectations"] = results
    return section


def updated_report(original: dict, run: dict, kept_reasons: dict, section: dict) -> dict:
    """The run report after a redrive.

    Args:
        original: The published ``_run/report.json``.
        run: The redrive pipeline's counts (see :func:`redrive_section`).
        kept_reasons: Reason -> count of the letters left as they were (``late`` included).
        section: The redrive section (:func:`redrive_section`).
    """
    before = original["counts"]
    reasons = {k: v for k, v in kept_reasons.items() if k != "late"}
    for reason, n in _prefixed(run, "dead_lettered.").items():
        reasons[reason] = reasons.get(reason, 0) + n
    flat = {
        "read": before["read"],
        "curated": run.get("merged", 0),
        "dead_lettered": sum(reasons.values()),
        "duplicates": before["duplicates"] + run.get("duplicates", 0) + run.get("merge_duplicates", 0),
        "late": before.get("late", 0),
        "aggregates": run.get("aggregates", 0),
        **{f"dead_lettered.{k}": v for k, v in reasons.items()},
        **{f"quality.{k}": v for k, v in original.get("quality", {}).items()},
    }
    # Replayed records that reached cleansing add their nulled values, as they would in a fresh run.
    for k, v in _prefixed(run, "quality.").items():
        flat[f"quality.{k}"] = flat.get(f"quality.{k}", 0) + v
    made = make_report(flat)
    report = {k: v for k, v in original.items() if k != "redrive"}
    for key in ("counts", "dead_letter_reasons", "quality", "conservation_ok"):
        report[key] = made[key]
    report["redrive"] = section
    return report


def files_match(counts: dict, published: dict) -> bool:
    """Whether the published files hold the counted rows (late letters are in dlq/ too)."""
    return (
        published["curated_rows"] == counts["curated"]
        and published["dead_letter_rows"] == counts["dead_lettered"] + counts["late"]
        and published["aggregate_rows"] == counts["aggregates"]
    )


def updated_summary(original: dict | None, report: dict, published: dict, elapsed: float, runner: str) -> dict:
    """``_run/summary.json`` after a redrive: the run's summary with the counts of now, and the
    last redrive."""
    summary = dict(original or {})
    summary.update(
        counts=report["counts"],
        dead_letter_reasons=report["dead_letter_reasons"],
        quality=report["quality"],
        conservation_ok=report["conservation_ok"],
        published=published,
        files_match=files_match(report["counts"], published),
        last_redrive={**report["redrive"], "elapsed_s": round(elapsed, 3), "runner": runner},
    )
    summary["last_redrive"].pop("expectations", None)
    return summary


def notes(section: dict) -> list[str]:
    """Lines about what the filters did not select: values no letter has, letters that cannot be replayed."""
    out = [f"note: no dead letter has {kind} {', '.join(repr(v) for v in values)}: selects nothing"
           for kind, values in section.get("unmatched_filters", {}).items()]  # fmt: skip
    if section.get("not_replayable"):
        out.append(f"note: {section['not_replayable']:,} matching letter(s) left as they are: their records were "
                   "not UTF-8 and the letters hold escaped text, not the original bytes")  # fmt: skip
    return out


def _table(rows: list[tuple[str, int]]) -> list[str]:
    width = max(len(f"{v:,}") for _, v in rows)
    return [f"  {name:<14}{v:>{width + 2},}" for name, v in rows]


def _filters(filters: dict) -> str:
    given = [f"{kind} {', '.join(values)}" for kind, values in filters.items() if values]
    return "; ".join(given) if given else "all but late"


def render(summary: dict, output: str, history: int) -> str:
    """The one-screen summary of a redrive."""
    r = summary["last_redrive"]
    c = summary["counts"]
    lines = [
        f"{r['pipeline']} redrive on {r['runner']}: {r['selected']:,} of {r['letters']:,} dead letters replayed "
        f"in {r['elapsed_s']:.1f} s (selected: {_filters(r['filters'])})",
    ]
    lines += ["  " + n for n in notes(r)]
    lines += ["", "  letters         rows"]
    lines += _table([("selected", r["selected"]), ("passed", r["passed"]), ("duplicates", r["duplicates"]),
                     ("still failing", r["still_failing"])])  # fmt: skip
    if r["still_failing_reasons"]:
        lines += [
            "",
            "  still failing by reason: " + ", ".join(f"{k} {v:,}" for k, v in r["still_failing_reasons"].items()),
        ]
    lines += ["", "  stage           rows"]
    lines += _table([(k, c[k]) for k in ("read", "curated", "dead_lettered", "duplicates", "late", "aggregates")])
    if summary["dead_letter_reasons"]:
        lines += [
            "",
            "  dead letters by reason: " + ", ".join(f"{k} {v:,}" for k, v in summary["dead_letter_reasons"].items()),
        ]
    check = "OK" if summary["conservation_ok"] else "FAILED"
    lines += [
        "",
        f"  conservation {check}: read {c['read']:,} = curated {c['curated']:,} + dead_lettered "
        f"{c['dead_lettered']:,} + duplicates {c['duplicates']:,} + late {c['late']:,}",
        f"  files {'match' if summary['files_match'] else 'DO NOT match'} the counts "
        f"({summary['published']['curated_files']} curated parquet files)",
        f"  redrives so far: {history} (_run/redrives.jsonl)",
        "",
        "  outputs:",
    ]
    for name, what in (("curated", "curated records"), ("aggregates", "aggregates, recomputed"),
                       ("dlq", "dead letters, JSON lines"), ("_run/report.json", "run report, with its redrive"),
                       ("_run/redrives.jsonl", "redrive history")):  # fmt: skip
        lines.append(f"    {join_path(output, name):<40} {what}")
    lines += lakehouse_lines(summary.get("lakehouse") or [])
    return "\n".join(lines) + "\n"
