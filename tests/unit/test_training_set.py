"""Point-in-time training sets: the as-of join against a plain-Python one over random labels and
feature rows, the leakage trap (a feature row one microsecond after the label is never taken),
and the CLI's flags, defaults and errors."""

import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_pipelines.features.__main__ import main
from beam_pipelines.features.training import FEATURE_TIME, TrainingSetError, as_of_join, feature_layout
from transforms.feature_defs import FeatureSet, Trailing
from transforms.feature_kernels import features_as_of

UTC = timezone.utc
T = datetime(2024, 3, 1, 12, tzinfo=UTC)
US = pa.timestamp("us", tz="UTC")
FEATURES_SCHEMA = pa.schema([("user", pa.string()), ("ts", US), ("score", pa.int64()), ("tag", pa.string())])
LAYOUT = feature_layout(FEATURES_SCHEMA, "user", "ts")


def features(rows) -> pa.Table:
    return pa.Table.from_pylist([dict(zip(FEATURES_SCHEMA.names, r)) for r in rows], FEATURES_SCHEMA)


def labels(rows, time_type=US) -> pa.Table:
    schema = pa.schema([("user", pa.string()), ("ts", time_type), ("label", pa.bool_())])
    return pa.Table.from_pylist([dict(zip(schema.names, r)) for r in rows], schema)


def test_the_leakage_trap_a_row_one_microsecond_after_the_label_is_never_taken():
    table = features(
        [
            ("u", T - timedelta(seconds=10), 1, "past"),
            ("u", T + timedelta(microseconds=1), 999, "future"),  # the trap
            ("v", T, 2, "at the label's time"),
            ("v", T + timedelta(hours=1), 998, "future"),
        ]
    )
    got = as_of_join(labels([("u", T, True), ("v", T, False), ("w", T, True)]), table, LAYOUT, "ts").to_pylist()
    assert [(r["user"], r["score"], r["tag"], r[FEATURE_TIME]) for r in got] == [
        ("u", 1, "past", T - timedelta(seconds=10)),
        ("v", 2, "at the label's time", T),  # at or before: the row at the label's own time counts
        ("w", None, None, None),  # no rows of this entity
    ]
    # One microsecond later the trap row is the latest at or before the label: it is taken.
    later = as_of_join(labels([("u", T + timedelta(microseconds=1), True)]), table, LAYOUT, "ts")
    assert later.column("score").to_pylist() == [999]


def test_as_of_join_equals_a_plain_python_one_and_keeps_the_labels_order():
    rng = random.Random(3)
    users = ["a", "b", "c", "d", None]
    rows = [(rng.choice(users[:4]), T + timedelta(minutes=rng.randrange(0, 300)), i, f"r{i}") for i in range(400)]
    rows = [r for r in rows if (r[0], r[1]) not in {(x[0], x[1]) for x in rows[: rows.index(r)]}]  # one row per time
    lab = [(rng.choice(users), T + timedelta(minutes=rng.randrange(-30, 330), microseconds=rng.choice([0, 1, -1])),
            bool(i % 2)) for i in range(300)]  # fmt: skip
    lab.append(("a", None, True))
    got = as_of_join(labels(lab), features(rows), LAYOUT, "ts").to_pylist()
    expected = []
    for user, ts, _ in lab:
        before = [r for r in rows if user is not None and ts is not None and r[0] == user and r[1] <= ts]
        best = max(before, key=lambda r: r[1]) if before else None
        expected.append((best[2], best[1]) if best else (None, None))
    assert [(r["score"], r[FEATURE_TIME]) for r in got] == expected
    assert [(r["user"], r["ts"], r["label"]) for r in got] == lab


def test_join_errors_name_the_problem():
    table = features([("u", T, 1, "x")])
    with pytest.raises(TrainingSetError, match="no column 'when'"):
        as_of_join(labels([("u", T, True)]), table, LAYOUT, "when")
    with pytest.raises(TrainingSetError, match="no time zone"):
        as_of_join(labels([("u", T.replace(tzinfo=None), True)], pa.timestamp("us")), table, LAYOUT, "ts")
    clash = labels([("u", T, True)]).append_column("score", pa.array([1]))
    with pytest.raises(TrainingSetError, match="already have column 'score'"):
        as_of_join(clash, table, LAYOUT, "ts")
    with pytest.raises(TrainingSetError, match="give --entity and --time"):
        feature_layout(FEATURES_SCHEMA)


def _feature_dir(tmp_path: Path) -> Path:
    """A feature table as EntityFeatures writes it (the FeatureSet in its schema), in dt= folders."""
    events = pa.table({"user_id": ["a", "a", "b", "a"], "ts": pa.array([T, T + timedelta(hours=1), T,
                       T + timedelta(hours=3)], US), "amount": [1.0, 2.0, 4.0, 8.0]})  # fmt: skip
    fs = FeatureSet("user_id", "ts", (Trailing("n_2h", "count", 7200), Trailing("amount_2h", "sum", 7200, "amount",
                                                                               decimals=2)))  # fmt: skip
    table = features_as_of(events, fs)
    (tmp_path / "features" / "dt=2024-03-01").mkdir(parents=True)
    pq.write_table(table.slice(0, 2), tmp_path / "features" / "dt=2024-03-01" / "part-00000.parquet")
    pq.write_table(table.slice(2), tmp_path / "features" / "dt=2024-03-01" / "part-00001.parquet")
    return tmp_path / "features"


def test_cli_joins_with_the_feature_tables_own_entity_and_time(tmp_path, capsys):
    feats = _feature_dir(tmp_path)
    lab = pa.table({"user_id": ["a", "a", "b", "c"], "ts": pa.array([T + timedelta(minutes=90), T - timedelta(
        microseconds=1), T + timedelta(hours=5), T], US), "bought": [True, False, True, False]})  # fmt: skip
    pq.write_table(lab, tmp_path / "labels.parquet")
    out = tmp_path / "sets" / "train.parquet"
    args = ["training-set", f"--labels={tmp_path / 'labels.parquet'}", f"--features={feats}", f"--output={out}"]
    assert main(args) == 0
    assert "4 labels, 2 with features as of their time, 2 without" in capsys.readouterr().out
    got = pq.read_table(out)
    assert got.column_names == ["user_id", "ts", "bought", "n_2h", "amount_2h", FEATURE_TIME]
    assert [(r["n_2h"], r["amount_2h"]) for r in got.to_pylist()] == [(2, 3.0), (None, None), (1, 4.0), (None, None)]


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "--labels is required"),
        (["--labels=L"], "--features is required"),
        (["--labels=L", "--features=F", "--output=o.csv"], "--output must name a .parquet file"),
        (["--labels=missing.parquet", "--features=F", "--output=o.parquet"], "--labels: no such file or directory"),
        (["--labels=L", "--features=F", "--output=o.parquet", "--label_time=when"], "no column 'when'"),
        (["--labels=L", "--features=F", "--output=o.parquet", "--entity=customer"], "no column 'customer'"),
        (["--labels=L", "--features=F", "--output=o.parquet", "--lables=x"], "unknown argument '--lables=x'"),
    ],
)
def test_cli_errors_are_one_line_and_exit_2(tmp_path, capsys, args, message):
    feats = _feature_dir(tmp_path)
    pq.write_table(pa.table({"user_id": ["a"], "ts": pa.array([T], US)}), tmp_path / "L.parquet")
    subst = {"L": str(tmp_path / "L.parquet"), "F": str(feats), "o.parquet": str(tmp_path / "o.parquet")}
    args = [a.split("=")[0] + "=" + subst.get(a.split("=", 1)[1], a.split("=", 1)[1]) for a in args]
    assert main(["training-set", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


def test_cli_help_and_unknown_command(capsys):
    assert main(["--help"]) == 0
    assert "never a later one" in capsys.readouterr().out
    assert main(["train-set"]) == 2
    assert "unknown command 'train-set'" in capsys.readouterr().err
