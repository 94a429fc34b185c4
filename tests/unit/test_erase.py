"""The erasure command's parts that need no output: a value matches only as a whole word (in
Python and in the Delta predicate, the same pattern), the command line recorded in the audit log
hides the subject, the salted digest can be checked, and bad flags are usage errors.
(End to end: tests/e2e/test_erase.py.)"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pyarrow as pa
import pytest

from beam_pipelines import erase
from beam_pipelines.errors import UsageError
from beam_pipelines.lakehouse import erasure, tables, tiers

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "lakehouse" / "orders.yaml"
RECORDS = [
    '{"order_id":"o-1","customer_id":"c-000041"}',
    '{"order_id":"o-2","customer_id":"c-0000412"}',  # a longer id that starts with it
    '{"order_id":"o-3","customer_id":"xc-000041"}',
    "o-4,c-000041,2024-03-01",  # CSV as received
    '{"order_id":"o-5","email":"jo.doe+x@mail.example"}',
    '{"order_id":"o-6","email":"joXdoe+x@mail.example"}',  # "." is not a wildcard
    '{"order_id":"o-7", not json c-000041',  # a record that failed to parse
]


def test_a_value_matches_only_as_a_whole_word_in_python_and_in_a_delta_delete(tmp_path):
    wanted = {"o-1", "o-4", "o-5", "o-7"}
    values = ["c-000041", "jo.doe+x@mail.example"]
    pattern = re.compile("|".join(f"(?:{erasure.word_pattern(v)})" for v in values))
    assert {r.split('"')[3] if r.startswith("{") else r.split(",")[0] for r in RECORDS if pattern.search(r)} == wanted
    uri = str(tmp_path / "bronze")
    tables.append(uri, pa.table({"record": RECORDS, "ingest_date": pa.array([date(2024, 3, 1)] * 7, pa.date32())}),
                  ["ingest_date"])  # fmt: skip
    done = erasure.delete(uri, erasure.raw_predicate(values), "erase-test")
    assert done["rows_deleted"] == 4
    kept = tiers.read(uri)["record"].to_pylist()
    assert sorted(kept) == sorted(r for r in RECORDS if not pattern.search(r))


def test_the_recorded_command_line_hides_the_subject():
    argv = ["--pipeline=p.yaml", "--subject", "customer_id=c-1", "--identifier=jo@x.org", "--identifier", "Jo Doe"]
    shown = erase._hidden(argv, "customer_id=<sha256:abc>")
    assert shown == ["--pipeline=p.yaml", "--subject", "customer_id=<sha256:abc>", "--identifier=<hidden>",
                     "--identifier", "<hidden>"]  # fmt: skip
    assert erase._hidden(["--subject=customer_id=c-1"], "T") == ["--subject=T"]


def test_the_subjects_digest_is_salted_and_checkable():
    a = erase.subject_digest("customer_id", "c-000041", "salt1")
    assert a == erase.subject_digest("customer_id", "c-000041", "salt1")
    assert a != erase.subject_digest("customer_id", "c-000041", "salt2") and "c-000041" not in a


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--output=o"], "--pipeline and --output are required"),
        ([f"--pipeline={EXAMPLE}", "--output=o"], "--subject=COLUMN=VALUE is required"),
        ([f"--pipeline={EXAMPLE}", "--output=o", "--subject=customer id=c-1"], "not a plain column name"),
        ([f"--pipeline={EXAMPLE}", "--output=o", "--subject=customer_id=c1"], "fewer than 3 characters"),
        ([f"--pipeline={EXAMPLE}", "--output=o", "--subject=nope=c-000041"], "not a column of the curated records"),
        ([f"--pipeline={EXAMPLE}", "--output=s3://b/o", "--subject=customer_id=c-000041"], "local disks"),
        (["--pipeline=events", "--output=o", "--subject=user_id=u-000041"], "no silver WriteLakehouse step"),
        ([f"--pipeline={EXAMPLE}", "--output=o", "--subject=customer_id=c-000041", "--nope"], "unknown flags"),
    ],
)
def test_bad_flags_are_usage_errors(argv, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match=re.escape(message)):
        erase.run(argv)
    assert not (tmp_path / "o").exists()  # nothing written, not even an audit entry


def test_the_command_prints_its_usage_and_one_error_line():
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    ok = subprocess.run([sys.executable, "-m", "beam_pipelines.erase", "--help"], cwd=root, capture_output=True,
                        text=True, timeout=120)  # fmt: skip
    assert ok.returncode == 0 and ok.stdout.startswith("usage: python -m beam_pipelines.erase")
    bad = subprocess.run([sys.executable, "-m", "beam_pipelines.erase", f"--pipeline={EXAMPLE}", "--output=o"],
                         cwd=root, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "error: --subject=COLUMN=VALUE is required (e.g. --subject customer_id=c-000123)  (see --help)"
    ]
