"""Path traversal: every path a spec or a command gives is refused with one error line (a spec's
naming its place) when it would lead outside the output, or cannot escape: '..', absolute
paths, '%2e%2e', NUL bytes, a trailing newline, s3 keys with '..', symbolic links under the
output that lead outside it, and secrets files whose content must not show in the error.
README: Security."""

from __future__ import annotations

import io
import os
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from beam_pipelines import datagen, erase
from beam_pipelines.contracts import ContractError
from beam_pipelines.errors import RunError, UsageError
from beam_pipelines.lakehouse import maintain
from beam_pipelines.main import run
from beam_pipelines.spec.compile import compile_spec
from beam_pipelines.spec.config import EventsConfig
from beam_pipelines.spec.yamlsrc import SpecError
from tests.e2e.helpers import ROOT

LAKEHOUSE = ROOT / "examples" / "lakehouse" / "orders.yaml"
POSTGRES = ROOT / "examples" / "postgres" / "orders.yaml"
UTC = timezone.utc
HOSTILE_PATHS = ["../x", "a/../../x", "..", "lake/..", "/etc", "/tmp/x", "%2e%2e/x", "a\x00b", "curated\n",
                 "ok\\..\\x", "./x", "a//b", "_audit", "~/x", "C:\\x"]  # fmt: skip
# step name -> its index in the example's transforms, and the config key holding the path
SINKS = {"WriteCurated": 8, "WriteDeadLetters": 10, "Silver": 12}


def doc() -> dict:
    return yaml.safe_load(LAKEHOUSE.read_text())


def write_spec(tmp_path: Path, d: dict, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return path


def compile_file(path: Path):
    return compile_spec(yaml.safe_load(path.read_text()), EventsConfig(input="in", input_format="jsonl",
                        output="/tmp/out"), str(path))  # fmt: skip


def one_line(e: BaseException) -> str:
    text = str(e)
    assert len(text.splitlines()) == 1, text
    return text


@pytest.mark.parametrize("value", HOSTILE_PATHS)
@pytest.mark.parametrize("step", SINKS)
def test_a_sink_or_table_path_leading_out_of_the_output_is_refused_naming_its_place(tmp_path, step, value):
    d = doc()
    d["pipeline"]["transforms"][SINKS[step]]["config"]["path"] = value
    with pytest.raises(SpecError) as e:
        compile_file(write_spec(tmp_path, d))
    assert one_line(e.value).startswith(f"{tmp_path / 'spec.yaml'}:")
    assert f"pipeline.transforms[{SINKS[step]}].config.path:" in str(e.value)


@pytest.mark.parametrize("location", ["../cold", "/tmp/cold", "s3://bucket/../x", "s3://bucket/a/./b",
                                      "s3://bucket/a/..", "file:///tmp/x", "cold\n", "%2e%2e", "c\x00"])  # fmt: skip
def test_a_cold_location_leading_out_is_refused(tmp_path, location):
    d = doc()
    d["pipeline"]["transforms"][SINKS["Silver"]]["config"]["cold"] = {"after_days": 30, "location": location}
    with pytest.raises(SpecError) as e:
        compile_file(write_spec(tmp_path, d))
    assert "pipeline.transforms[12].config.cold.location:" in one_line(e.value)


def test_safe_paths_still_pass(tmp_path):
    d = doc()
    d["pipeline"]["transforms"][SINKS["Silver"]]["config"]["cold"] = {"after_days": 30, "location": "cold/silver"}
    d["pipeline"]["transforms"][SINKS["WriteCurated"]]["config"]["path"] = "out.v1/curated=x"
    compile_file(write_spec(tmp_path, d))
    d["pipeline"]["transforms"][SINKS["Silver"]]["config"]["cold"]["location"] = "s3://cold-bucket/lake/silver"
    compile_file(write_spec(tmp_path, d))


@pytest.mark.parametrize("ref", ["../../etc/passwd", "/etc/passwd", "orders@../2", "orders/v2/../../x",
                                 "%2e%2e/orders", "orders\x00", "orders\n/../x"])  # fmt: skip
def test_a_contract_reference_is_a_name_never_a_path(tmp_path, ref):
    d = doc()
    d["pipeline"]["contract"] = ref
    with pytest.raises(ContractError) as e:
        compile_file(write_spec(tmp_path, d))
    assert "pipeline.contract: contract reference" in one_line(e.value)


def test_an_expectations_file_that_is_not_one_is_refused_without_showing_its_content(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("CANARY-EXPECT-8c1 is what this file holds\n")
    d = doc()
    config = d["pipeline"]["transforms"][5]["config"]
    config.pop("expectations")
    for path in (str(secret), "secret.txt", "../" * 12 + str(secret).lstrip("/"), str(tmp_path), "missing.yaml"):
        config["path"] = path
        with pytest.raises(SpecError) as e:
            compile_file(write_spec(tmp_path, d))
        assert "pipeline.transforms[5].config.path:" in one_line(e.value)
        assert "CANARY-EXPECT" not in str(e.value)


@pytest.mark.parametrize("content", ["CANARYtoken-5d2 is-not-a-dsn", "host=127.0.0.1 port=1 password=CANARYpw-5d2",
                                     "postgresql://bp:CANARYurl-5d2@127.0.0.1:1/bp"])  # fmt: skip
def test_a_dsn_file_content_never_shows_in_the_error(tmp_path, content):
    (tmp_path / "pg.dsn").write_text(content + "\n")
    d = yaml.safe_load(POSTGRES.read_text())
    read = d["pipeline"]["transforms"][0]["config"]
    read.pop("dsn_env")
    read["dsn_file"] = "pg.dsn"
    spec = write_spec(tmp_path, d)
    with pytest.raises(RunError) as e:
        run(
            [f"--pipeline={spec}", f"--output={tmp_path / 'out'}", "--history=none", "--lineage=none"],
            out=io.StringIO(),
        )
    assert "cannot connect to PostgreSQL" in one_line(e.value) and "CANARY" not in str(e.value)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    assert datagen.main(["--dataset=orders", "--rows=50", f"--out={root}", "--seed=1"]) == 0
    return root


def _run(data: Path, out: Path, *extra: str) -> dict:
    argv = [f"--pipeline={LAKEHOUSE}", f"--input={data}/*.jsonl", f"--output={out}", "--history=none",
            "--lineage=none", *extra]  # fmt: skip
    return run(argv, clock=lambda: datetime(2026, 5, 1, 6, tzinfo=UTC), out=io.StringIO())


@pytest.mark.parametrize("link", ["lakehouse", "lakehouse/silver", "curated", "dlq", "_staging", "_audit"])
def test_a_symbolic_link_under_the_output_leading_out_of_it_is_refused_before_anything_is_written(tmp_path, data, link):
    out, outside = tmp_path / "out", tmp_path / "outside"
    (out / link).parent.mkdir(parents=True)
    outside.mkdir()
    os.symlink(outside, out / link)
    for extra in ((), ("--dry_run",)):
        with pytest.raises(UsageError) as e:
            _run(data, out, *extra)
        assert "through a symbolic link, outside the output" in one_line(e.value) and link in str(e.value)
    assert list(outside.iterdir()) == []
    assert sorted(p.name for p in out.iterdir()) == [link.split("/")[0]]
    with pytest.raises(UsageError, match="through a symbolic link"):
        erase.run([f"--pipeline={LAKEHOUSE}", f"--output={out}", "--subject=customer_id=c-000001"], out=io.StringIO())
    with pytest.raises(UsageError, match="through a symbolic link"):
        maintain.run([f"--pipeline={LAKEHOUSE}", f"--output={out}", "--dry_run"], out=io.StringIO())
    assert list(outside.iterdir()) == []


def test_a_symbolic_link_that_stays_inside_the_output_is_fine(tmp_path, data):
    out = tmp_path / "out"
    (out / "real").mkdir(parents=True)
    os.symlink(out / "real", out / "lakehouse")
    _run(data, out)
    assert (out / "real" / "silver" / "_delta_log").is_dir()


def test_a_nul_byte_in_the_output_is_one_usage_error(tmp_path, data):
    with pytest.raises(UsageError) as e:
        _run(data, Path(f"{tmp_path}/o\x00ut"))
    assert "NUL byte" in one_line(e.value)
    with pytest.raises(UsageError, match="NUL byte"):
        erase.run([f"--pipeline={LAKEHOUSE}", f"--output={tmp_path}/o\x00", "--subject=customer_id=c-000001"],
                  out=io.StringIO())  # fmt: skip


def test_the_erasure_subject_and_output_cannot_name_paths(tmp_path):
    with pytest.raises(UsageError, match="--subject"):
        erase.run(
            [f"--pipeline={LAKEHOUSE}", f"--output={tmp_path}", "--subject=../../etc/passwd=x"], out=io.StringIO()
        )
    with pytest.raises(UsageError, match="local disks"):
        erase.run([f"--pipeline={LAKEHOUSE}", "--output=s3://b/../x", "--subject=customer_id=c-000001"],
                  out=io.StringIO())  # fmt: skip
