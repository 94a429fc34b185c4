"""Runner artifacts: build, fetch and find what Prism, Flink and Spark need, in one cache.

Everything comes from the package registries through their own clients: prism is built from
its source on the Go module proxy (``go mod download``, with the fixes in ``prism_patches``,
``go build``), the job-server jars come from Maven Central through ``mvn``. Nothing is fetched from anywhere else (Beam itself downloads prism from the internet
when a runner starts without one; the launch layer always passes the cached binary).

    python -m beam_pipelines.artifacts fetch [--prism] [--flink] [--spark] [--flink_version=1.20]
    python -m beam_pipelines.artifacts status

The cache is ``.cache/runners/`` in the project (``BEAM_PIPELINES_CACHE`` overrides it):
``prism/v<prism>-p<patch level>/prism`` and ``jars/<artifact>-<beam>.jar``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from apache_beam.version import __version__ as BEAM_VERSION

from beam_pipelines.prism_patches import PATCHES, PrismPatchError, apply_patches

__all__ = [
    "ArtifactError",
    "DEFAULT_FLINK_VERSION",
    "FLINK_VERSIONS",
    "cache_dir",
    "build_prism",
    "fetch_jar",
    "flink_job_server",
    "prism_path",
    "spark_job_server",
]

PRISM_MODULE = "github.com/apache/beam/sdks/v2"
PRISM_PACKAGE = "./go/cmd/prism"  # within the module
# The Flink versions Beam's FlinkRunner publishes job servers for (FlinkRunnerOptions).
FLINK_VERSIONS = ("1.19", "1.20", "2.0", "2.1", "2.2")
# The Flink whose distribution PyPI ships (apache-flink-libraries), for a standalone cluster.
DEFAULT_FLINK_VERSION = "1.20"
# Prism is a runner binary, not part of the SDK: a newer one serves the 2.75 Python SDK. 2.75's
# prism holds early (processing-time) panes back until its input ends, so a stream never shows
# early results; 2.77's fires them in real time.
PRISM_VERSION = "2.77.0"
GO_MIN = (1, 26)  # prism's go.mod

_ROOT = Path(__file__).resolve().parents[1]


class ArtifactError(RuntimeError):
    """An artifact is missing or could not be built/fetched; the message is one line."""


def cache_dir() -> Path:
    env = os.environ.get("BEAM_PIPELINES_CACHE")
    if env:
        return Path(env).expanduser().resolve()
    # A source checkout keeps its cache beside the code, wherever the command runs from.
    base = _ROOT if (_ROOT / "setup.py").exists() else Path.cwd()
    return base / ".cache" / "runners"


def prism_path() -> Path:
    # The patch level names the build: a binary built without this set of fixes is not reused.
    return cache_dir() / "prism" / f"v{PRISM_VERSION}-p{len({p.name for p in PATCHES})}" / "prism"


def flink_job_server(flink_version: str = DEFAULT_FLINK_VERSION) -> tuple[str, Path]:
    """Maven coordinates and cache path of the Flink job-server jar for ``flink_version``."""
    if flink_version not in FLINK_VERSIONS:
        raise ArtifactError(f"unsupported Flink version {flink_version!r}; Beam supports {', '.join(FLINK_VERSIONS)}")
    return _jar(f"beam-runners-flink-{flink_version}-job-server")


def spark_job_server() -> tuple[str, Path]:
    """Maven coordinates and cache path of the Spark 3 job-server jar."""
    return _jar("beam-runners-spark-3-job-server")


def _jar(artifact: str) -> tuple[str, Path]:
    return f"org.apache.beam:{artifact}:{BEAM_VERSION}", cache_dir() / "jars" / f"{artifact}-{BEAM_VERSION}.jar"


def _go_env() -> dict:
    env = dict(os.environ)
    # Guards against the caller's Go settings: a global -mod=vendor or a go.work would break an
    # `install pkg@version`.
    env["GOFLAGS"] = (env.get("GOFLAGS", "") + " -mod=mod").strip()
    env["GOWORK"] = "off"
    # Only the module proxy: "direct" would clone repositories from their hosts instead.
    proxy = subprocess.run(["go", "env", "GOPROXY"], capture_output=True, text=True, env=env).stdout.strip()
    kept = [p for p in re.split(r"[,|]", proxy) if p and p not in ("direct", "off")]
    if kept:
        env["GOPROXY"] = ",".join(kept)
    return env


def _go_version() -> tuple[int, int] | None:
    out = subprocess.run(["go", "env", "GOVERSION"], capture_output=True, text=True).stdout
    m = re.match(r"go(\d+)\.(\d+)", out.strip())
    return (int(m.group(1)), int(m.group(2))) if m else None


def _go(args: list[str], env: dict, timeout: float, cwd: Path | None = None) -> str:
    try:
        proc = subprocess.run(["go", *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd)
    except subprocess.TimeoutExpired as e:
        raise ArtifactError(f"`go {' '.join(args)}` did not finish in {timeout:.0f} s") from e
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("go: downloading")]
        raise ArtifactError(f"`go {' '.join(args)}` failed: {(lines or ['exit ' + str(proc.returncode)])[-1]}")
    return proc.stdout


def build_prism(force: bool = False, timeout: int = 1800) -> Path:
    """Builds prism for this Beam version into the cache; returns its path.

    The module's source comes from the Go module proxy; its ``go`` tree is copied out of the
    (read-only) module cache, patched (``prism_patches``) and built.
    """
    target = prism_path()
    if target.exists() and not force:
        return target
    if not shutil.which("go"):
        raise ArtifactError(
            f"go not found: prism is built from source with Go >= {GO_MIN[0]}.{GO_MIN[1]}; "
            "install Go (Debian: apt-get install golang-go, if recent enough) and run `make runners`"
        )
    have = _go_version()
    if have is not None and have < GO_MIN:
        raise ArtifactError(
            f"go {have[0]}.{have[1]} is too old: prism v{PRISM_VERSION} needs Go >= {GO_MIN[0]}.{GO_MIN[1]}"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    env = _go_env()
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as tmp:
        listed = _go(["mod", "download", "-json", f"{PRISM_MODULE}@v{PRISM_VERSION}"], env, timeout, cwd=Path(tmp))
        module = Path(json.loads(listed)["Dir"])
        src = Path(tmp) / "src"
        src.mkdir()
        for name in ("go.mod", "go.sum"):
            shutil.copyfile(module / name, src / name)
        # copyfile, not copy: the module cache's files are read-only, the copies must be patched.
        shutil.copytree(module / "go", src / "go", copy_function=shutil.copyfile)
        for folder, _, _ in os.walk(src):
            os.chmod(folder, 0o755)
        try:
            apply_patches(src)
        except PrismPatchError as e:
            raise ArtifactError(str(e)) from e
        left = max(1.0, timeout - (time.monotonic() - started))
        _go(["build", "-trimpath", "-o", str(Path(tmp) / "prism"), PRISM_PACKAGE], env, left, cwd=src)
        # Moved into place whole, so an interrupted build never leaves a half-written binary.
        os.replace(Path(tmp) / "prism", target)
    return target


def fetch_jar(coords: str, target: Path, force: bool = False, timeout: int = 1800) -> Path:
    """Copies ``group:artifact:version`` from Maven (Central) to ``target`` with ``mvn``."""
    if target.exists() and not force:
        return target
    missing = [tool for tool in ("java", "mvn") if not shutil.which(tool)]
    if missing:
        raise ArtifactError(
            f"{' and '.join(missing)} not found: the job-server jar {coords} is fetched with Maven and runs on "
            "Java 11+; install them (Debian: apt-get install default-jdk-headless maven)"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fetch-") as tmp:
        # -U: Maven otherwise remembers a refused artifact and does not ask again for a day.
        cmd = ["mvn", "-B", "-q", "-U", "dependency:copy", f"-Dartifact={coords}:jar", f"-DoutputDirectory={tmp}"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=tmp)
        except subprocess.TimeoutExpired as e:
            raise ArtifactError(f"mvn did not fetch {coords} in {timeout} s") from e
        out = proc.stdout + proc.stderr
        _, artifact, version = coords.split(":")
        got = Path(tmp) / f"{artifact}-{version}.jar"
        if proc.returncode != 0 or not got.exists():
            if any(s in out for s in ("Could not find artifact", "Unable to find artifact", "was not found in")):
                raise ArtifactError(f"Maven Central refused {coords} (artifact not found); this runner needs it")
            errors = [ln.replace("[ERROR]", "").strip() for ln in out.splitlines() if ln.startswith("[ERROR]")]
            raise ArtifactError(
                f"mvn could not fetch {coords}: {next((e for e in errors if e), 'exit ' + str(proc.returncode))}"
            )
        os.replace(got, target)
    return target


def _tool(name: str, args: list[str]) -> str:
    if not shutil.which(name):
        return "missing"
    proc = subprocess.run([name, *args], capture_output=True, text=True)
    first = (proc.stdout + proc.stderr).strip().splitlines()
    return re.sub(r"\x1b\[[0-9;]*m", "", first[0]) if first else "present"


def status(flink_version: str = DEFAULT_FLINK_VERSION) -> list[str]:
    """One line per tool and artifact: what is there, and where."""
    lines = [f"beam {BEAM_VERSION} (prism {PRISM_VERSION}); cache {cache_dir()}"]
    lines.append(f"  go     {_tool('go', ['version'])}")
    lines.append(f"  java   {_tool('java', ['-version'])}")
    lines.append(f"  mvn    {_tool('mvn', ['-v'])}")
    prism = prism_path()
    lines.append(f"  prism  {'ok     ' if prism.exists() else 'missing'} {prism}")
    for name, (coords, path) in (("flink", flink_job_server(flink_version)), ("spark", spark_job_server())):
        lines.append(f"  {name:<6} {'ok     ' if path.exists() else 'missing'} {path}  ({coords})")
    return lines


def fetch(prism: bool, flink: bool, spark: bool, flink_version: str, force: bool = False, out=sys.stdout) -> int:
    """Fetches what is asked for; prints one line per artifact; returns the exit status."""
    jobs = []
    if prism:
        jobs.append(("prism", lambda: build_prism(force=force)))
    if flink:
        coords, path = flink_job_server(flink_version)
        jobs.append((f"flink {flink_version} job server", lambda c=coords, p=path: fetch_jar(c, p, force)))
    if spark:
        coords, path = spark_job_server()
        jobs.append(("spark job server", lambda c=coords, p=path: fetch_jar(c, p, force)))
    failed = 0
    for name, job in jobs:
        started = time.monotonic()
        try:
            path = job()
        except ArtifactError as e:
            failed += 1
            print(f"error: {name}: {e}", file=sys.stderr)
            continue
        print(f"{name}: {path} ({time.monotonic() - started:.0f} s)", file=out)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m beam_pipelines.artifacts", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fetch", help="build prism and fetch the job-server jars (all three when none is named)")
    for name in ("prism", "flink", "spark"):
        f.add_argument(f"--{name}", action="store_true", help=f"only (also) {name}")
    f.add_argument("--force", action="store_true", help="rebuild/refetch even when cached")
    s = sub.add_parser("status", help="print what is cached and which tools are present")
    for p in (f, s):
        p.add_argument("--flink_version", default=DEFAULT_FLINK_VERSION, choices=FLINK_VERSIONS)
    args = parser.parse_args(argv)
    if args.command == "status":
        print("\n".join(status(args.flink_version)))
        return 0
    every = not (args.prism or args.flink or args.spark)
    return fetch(args.prism or every, args.flink or every, args.spark or every, args.flink_version, force=args.force)


if __name__ == "__main__":
    sys.exit(main())
