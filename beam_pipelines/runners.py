"""Runner profiles: the short names users type, resolved to a runner with sane defaults.

``direct`` runs batch pipelines on Beam's in-process FnApiRunner directly: Beam's own
DirectRunner first tries to download a prism binary from the internet, which the default
path must never wait on.
"""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

PROFILES = {
    "direct": "direct",
    "directrunner": "direct",
    "fnapirunner": "direct",
}


class RunnerError(ValueError):
    """The requested runner is unknown or misconfigured."""


def profile_name(runner: str | None) -> str:
    key = (runner or "direct").strip().lower()
    if key not in PROFILES:
        known = "direct (DirectRunner)"
        raise RunnerError(f"unknown or unsupported runner {runner!r}; available: {known}")
    return PROFILES[key]


def make_runner(options: PipelineOptions):
    """A runner instance for the options' ``--runner`` (default: direct)."""
    standard = options.view_as(StandardOptions)
    name = profile_name(standard.runner)
    if name == "direct":
        if standard.streaming:
            raise RunnerError("--streaming is not supported by this version's direct profile")
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        return FnApiRunner()
    raise RunnerError(f"runner profile {name!r} is not available")
