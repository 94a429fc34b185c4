"""Object-store helpers: one-line errors, moves and deletes, and --no_auth for gs://."""

from __future__ import annotations

import pytest
from apache_beam.internal.gcp import auth
from apache_beam.io.filesystem import BeamIOError
from apache_beam.options.pipeline_options import PipelineOptions
from azure.core.exceptions import ResourceNotFoundError

from beam_pipelines import object_stores


def test_plain_error_is_the_innermost_first_line():
    e = BeamIOError(
        "Match operation failed", {"gs://b/in/*": BeamIOError("List failed", {"gs://b/in/": KeyError("x")})}
    )
    assert object_stores.plain_error(e) == "'x'"
    assert object_stores.plain_error(ValueError("\n  first line  \nsecond")) == "first line"
    assert object_stores.plain_error(ValueError()) == "ValueError"


def test_plain_error_of_an_azure_error_names_its_code():
    e = ResourceNotFoundError(message="The specified container does not exist.\nRequestId:1\nTime:2")
    e.error_code = "ContainerNotFound"
    assert object_stores.plain_error(e) == "The specified container does not exist. (ContainerNotFound)"


def test_move_and_delete_on_local_files(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ("x", "y"):
        (tmp_path / "a" / name).write_text(name)
    (tmp_path / "b").mkdir()
    sources = [str(tmp_path / "a" / n) for n in ("x", "y")]
    targets = [str(tmp_path / "b" / n) for n in ("x", "y")]
    object_stores.move(sources, targets)
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["x", "y"]
    assert not list((tmp_path / "a").iterdir())
    assert (tmp_path / "b" / "y").read_text() == "y"
    object_stores.delete(targets[:1])
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["y"]


def test_move_refuses_unpaired_lists():
    with pytest.raises(ValueError, match="1 sources but 0 targets"):
        object_stores.move(["gs://b/x"], [])


def test_no_auth_records_no_gcs_credentials(monkeypatch):
    monkeypatch.setattr(auth._Credentials, "_credentials_init", False)
    monkeypatch.setattr(auth._Credentials, "_credentials", "untouched")
    object_stores.use_options(PipelineOptions([]))
    assert auth._Credentials._credentials_init is False  # without the flag Beam looks them up as usual
    object_stores.use_options(PipelineOptions(["--no_auth"]))
    assert auth._Credentials._credentials_init is True and auth._Credentials._credentials is None
    assert auth.get_service_credentials(PipelineOptions([])) is None  # so GcsIO makes an anonymous client
