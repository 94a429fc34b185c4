"""CLI: ``python -m beam_pipelines.features training-set|lookup ...`` (see USAGE)."""

from __future__ import annotations

import argparse
import os
import sys

from beam_pipelines.errors import RunError, UsageError, parse_flags

USAGE = """usage: python -m beam_pipelines.features training-set --labels=LABELS --features=FEATURES --output=OUT.parquet
                                       [--entity=COLUMN] [--time=COLUMN] [--label_time=COLUMN]

Point-in-time training set: each label row (an entity and a time, plus the columns a model
learns from) joined to its entity's feature row with the greatest time at or before the label's
time, never a later one. Labels keep their order; a label with no such row gets null features.
Adds the feature columns and feature_time (the time of the feature row taken).

  --labels      labels: a parquet file or a directory of them
  --features    the feature table: an EntityFeatures pipeline's output directory (e.g. OUT/curated,
                dt= folders included) or parquet files
  --output      the training set: a .parquet file (written whole, replaced if present)
  --entity      the entity column, in both; default: the one the feature table was written with
  --time        the feature table's time column; default: the one it was written with
  --label_time  the labels' time column (timestamp, UTC); default: the feature table's time column

Errors are one error: line; exit status 2 for bad flags or inputs that cannot be joined, 1 for
files that cannot be read or written.

usage: python -m beam_pipelines.features lookup --dsn=DSN --table=TABLE --entity=ID [--entity=ID ...]

Online store: each entity's latest features, as a streaming EntityFeatures job upserts them into
PostgreSQL (the spec's <step>.online output). One JSON object per --entity, in the order given:
its row with "found": true, or just the entity with "found": false.

  --dsn     postgresql://user@host:port/db
  --table   the online table (user_features: --pg_table, default user_features_online)
  --entity  an entity key; repeat it for several

Exit status 1 when the server cannot be reached or the table is not an online table, 2 for bad
flags.
"""

_COMMANDS = ("training-set", "lookup")


def _first_unknown(rest: list[str]) -> str:
    return f"unknown argument {rest[0]!r}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    for flag in ("--labels", "--features", "--output", "--entity", "--time", "--label_time"):
        parser.add_argument(flag)
    return parser


def training_set(argv: list[str], out=None) -> dict:
    """Runs ``training-set`` from its flags; returns its summary."""
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    from beam_pipelines.features.training import TrainingSetError, as_of_join, read_features

    ns = parse_flags(_parser(), argv, _first_unknown)
    for flag in ("labels", "features", "output"):
        if not getattr(ns, flag):
            raise UsageError(f"--{flag} is required")
    if not ns.output.endswith(".parquet"):
        raise UsageError(f"--output must name a .parquet file, got {ns.output!r}")
    for flag in ("labels", "features"):
        if not os.path.exists(getattr(ns, flag)):
            raise UsageError(f"--{flag}: no such file or directory: {getattr(ns, flag)}")
    try:
        labels = ds.dataset(ns.labels, format="parquet").to_table()
        entity = ns.entity
        if entity is None:  # the feature table says; its entity must be a label column
            from beam_pipelines.features.training import feature_layout

            entity = feature_layout(ds.dataset(ns.features, format="parquet").schema, None, ns.time).entity
        if entity not in labels.column_names:
            raise TrainingSetError(f"the labels have no column {entity!r} (the entity); columns: "
                                   f"{', '.join(labels.column_names)}")  # fmt: skip
        layout, features = read_features(ns.features, entity, ns.time, labels.column(entity))
        joined = as_of_join(labels, features, layout, ns.label_time or layout.time)
    except TrainingSetError as e:
        raise UsageError(str(e)) from e
    except (OSError, pa.ArrowInvalid) as e:
        raise RunError(f"cannot read the inputs: {e}") from e
    try:
        parent = os.path.dirname(os.path.abspath(ns.output))
        os.makedirs(parent, exist_ok=True)
        tmp = ns.output + ".tmp"
        pq.write_table(joined, tmp, compression="zstd")
        os.replace(tmp, ns.output)  # a reader never sees half a file
    except OSError as e:
        raise RunError(f"cannot write {ns.output}: {e}") from e
    matched = joined.num_rows - joined.column("feature_time").null_count
    summary = {"labels": joined.num_rows, "with_features": matched, "without_features": joined.num_rows - matched,
               "features": list(layout.features), "output": ns.output}  # fmt: skip
    print(
        f"training set: {summary['labels']:,} labels, {matched:,} with features as of their time, "
        f"{summary['without_features']:,} without (no feature row at or before it) -> {ns.output}",
        file=out or sys.stdout,
    )
    return summary


def lookup(argv: list[str], out=None) -> list[dict]:
    """Runs ``lookup`` from its flags; returns the objects printed."""
    import json

    from beam_pipelines.features.online import OnlineStore, json_value

    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    parser.add_argument("--dsn")
    parser.add_argument("--table")
    parser.add_argument("--entity", action="append")
    ns = parse_flags(parser, argv, _first_unknown)
    for flag in ("dsn", "table", "entity"):
        if not getattr(ns, flag):
            raise UsageError(f"--{flag} is required")
    with OnlineStore(ns.dsn, ns.table) as store:
        try:
            wanted = [store.entity_value(e) for e in ns.entity]
        except ValueError as e:
            raise UsageError(f"--entity: {store.entity} is an integer column: {e}") from e
        rows = store.get_many(wanted)
    printed = []
    for entity in wanted:
        row = rows.get(entity)
        obj = {store.entity: entity, "found": row is not None}
        obj.update({k: json_value(v) for k, v in (row or {}).items() if k != store.entity})
        printed.append(obj)
        print(json.dumps(obj), file=out or sys.stdout)
    return printed


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    try:
        if command not in _COMMANDS:
            raise UsageError(f"unknown command {command!r} (commands: {', '.join(_COMMANDS)})")
        (training_set if command == "training-set" else lookup)(rest)
    except UsageError as e:
        print(f"error: {e}  (see --help)", file=sys.stderr)
        return 2
    except RunError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
