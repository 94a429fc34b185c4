"""Fixes applied to prism's Go source before the project builds it (``artifacts.build_prism``).

Each patch replaces one exact passage of one file of the ``github.com/apache/beam/sdks/v2``
module at ``artifacts.PRISM_VERSION``; a passage that is missing or found twice fails the build
(with the patch's name) rather than building a prism other than the one described here. The
cache directory of the binary names the patch level, so a cache built without a patch is not
reused.

- ``select-spin`` (prism/internal/stage.go, ``stage.Execute``): while a bundle runs, prism waits
  on a select over the bundle's response, a progress ticker and the channel that closes when the
  bundle's data outputs have ended. Once that channel is closed, the select returns at once on
  every turn, so prism spins on a core until the response comes. For a stage with no outputs
  (a sink: files, PostgreSQL, the report) the channel is closed from the start, so every such
  bundle spun for its whole length. Measured on the streaming ``events`` pipeline at 2,000
  events/s on 2 cores: prism used 40-70 % of a core, 60 % of it in that select, and the SDK's
  bundles took about three times as long for want of CPU (the keyed stage's p90 507 ms -> 79 ms
  with the fix). The fix stops selecting the channel once it has closed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["PATCHES", "PrismPatchError", "apply_patches"]


class PrismPatchError(RuntimeError):
    """A patch's passage is not found exactly once in the source it patches."""


@dataclass(frozen=True)
class Patch:
    name: str
    path: str  # relative to the module root
    before: str
    after: str


_STAGE = "go/pkg/beam/runners/prism/internal/stage.go"

PATCHES = (
    Patch(
        "select-spin",
        _STAGE,
        "\t\tdataFinished = true\n\t}\n\tvar resp *fnpb.ProcessBundleResponse\n",
        "\t\tdataFinished = true\n\t}\n\tif dataFinished {\n"
        "\t\tdataReady = nil // closed already: selecting it would return at once, every turn\n"
        "\t}\n\tvar resp *fnpb.ProcessBundleResponse\n",
    ),
    Patch(
        "select-spin",
        _STAGE,
        "\t\tcase <-dataReady:\n\t\t\tdataFinished = true\n",
        "\t\tcase <-dataReady:\n\t\t\tdataFinished = true\n"
        "\t\t\tdataReady = nil // closed: selecting it again would spin until the response\n",
    ),
)


def apply_patches(root: Path, patches: tuple[Patch, ...] = PATCHES) -> None:
    """Applies ``patches`` to the module source under ``root`` (a writable copy)."""
    for patch in patches:
        path = root / patch.path
        text = path.read_text()
        found = text.count(patch.before)
        if found != 1:
            raise PrismPatchError(
                f"prism patch {patch.name!r}: its passage occurs {found} times in {patch.path}, not once"
            )
        path.write_text(text.replace(patch.before, patch.after))
