"""The fixes applied to prism's source before it is built (beam_pipelines.prism_patches)."""

from __future__ import annotations

import pytest

from beam_pipelines import artifacts
from beam_pipelines.prism_patches import PATCHES, Patch, PrismPatchError, apply_patches


def _tree(tmp_path, patches=PATCHES):
    for patch in patches:
        path = tmp_path / patch.path
        path.parent.mkdir(parents=True, exist_ok=True)
        text = path.read_text() if path.exists() else "package internal\n"
        path.write_text(text + "\n// ...\n" + patch.before)
    return tmp_path


def test_each_passage_is_replaced_once(tmp_path):
    root = _tree(tmp_path)
    apply_patches(root)
    for patch in PATCHES:
        text = (root / patch.path).read_text()
        assert patch.after in text
        assert text.count("dataReady = nil") == 2


def test_a_passage_not_found_fails_the_build_naming_the_patch(tmp_path):
    root = _tree(tmp_path, PATCHES[:1])
    with pytest.raises(PrismPatchError, match="select-spin.*occurs 0 times"):
        apply_patches(root)


def test_a_passage_found_twice_fails(tmp_path):
    patch = Patch("twice", "a.go", "x := 1\n", "x := 2\n")
    (tmp_path / "a.go").write_text("x := 1\nx := 1\n")
    with pytest.raises(PrismPatchError, match="occurs 2 times"):
        apply_patches(tmp_path, (patch,))


def test_the_cached_binary_is_named_by_its_patch_level(tmp_path, monkeypatch):
    monkeypatch.setenv("BEAM_PIPELINES_CACHE", str(tmp_path))
    assert artifacts.prism_path() == tmp_path / "prism" / f"v{artifacts.PRISM_VERSION}-p1" / "prism"
