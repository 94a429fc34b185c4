"""Dataflow Flex Template files, generated from the options classes and the pipeline spec so
nothing is written twice.

    python -m beam_pipelines.flex metadata [--template NAME]   # (re)writes templates/flex/NAME/metadata.json
    python -m beam_pipelines.flex metadata --check             # exit 1 when a committed file is stale
    python -m beam_pipelines.flex commands [--template NAME]   # the docker/gcloud commands to build and run it

One template per packaged pipeline spec (``--template`` defaults to events). Each parameter's
help text is the flag's ``--help`` text; choices and integer flags become validation regexes.
A template offers the launch flags and the pipeline flags its spec takes (``${flag}``) or every
spec uses (sizes, profiles); those a spec requires are required.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from beam_pipelines.options import EventsOptions, RunOptions
from beam_pipelines.spec.build import packaged, spec_path
from beam_pipelines.spec.yamlsrc import load

ROOT = Path(__file__).resolve().parents[1]
# Pipeline flags every spec uses, whether or not it names them.
GENERAL = ("shuffle_partitions", "curated_buckets", "dlq_shards", "read_chunk_kb", "profile")
_PARAM = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")


def _spec(template: str) -> dict:
    doc = load(spec_path(template))["pipeline"]
    text = Path(spec_path(template)).read_text()
    used = {m.group(1) for m in _PARAM.finditer(text)}
    # A flag the spec takes without a default in a batch source is one the job cannot run without.
    required = {"output"} | ({"input"} if "${input}" in text else set())
    return {
        "dir": ROOT / "templates" / "flex" / template,
        "name": f"beam-pipelines {doc['name']}",
        "description": " ".join(doc.get("doc", doc["name"]).split()),
        "used": used,
        "required": tuple(sorted(required)),
    }


# Launch-layer flags that make no sense for a template job (it must run the one pipeline, for real,
# on Dataflow: local_workers is for the direct runner).
EXCLUDED = ("pipeline", "dry_run", "dry_run_out", "local_workers")


def parameters(options_classes, required: tuple[str, ...], used: set | None = None) -> list[dict]:
    params = []
    for cls in options_classes:
        parser = argparse.ArgumentParser(add_help=False)
        cls._add_argparse_args(parser)
        for action in parser._actions:
            name = action.dest
            if name in EXCLUDED:
                continue
            if cls is EventsOptions and used is not None and name not in used and name not in GENERAL:
                continue
            param = {
                "name": name,
                "label": name.replace("_", " ").capitalize(),
                "helpText": action.help,
                "isOptional": name not in required,
            }
            if action.choices:
                param["regexes"] = ["^(" + "|".join(re.escape(str(c)) for c in action.choices) + ")$"]
            elif action.type is int:
                param["regexes"] = ["^[0-9]+$"]
            params.append(param)
    return params


def metadata(template: str = "events") -> dict:
    t = _spec(template)
    return {
        "name": t["name"],
        "description": t["description"],
        "parameters": parameters((EventsOptions, RunOptions), t["required"], t["used"]),
    }


def metadata_text(template: str = "events") -> str:
    return json.dumps(metadata(template), indent=2) + "\n"


def metadata_path(template: str = "events") -> Path:
    return _spec(template)["dir"] / "metadata.json"


COMMANDS = """\
# Dataflow Flex Template for the {template} pipeline: build the launcher image, publish the
# template spec, run a job. Needs docker, gcloud, a GCP project with Dataflow and Artifact
# Registry enabled, and a bucket; not run by this project's tests (no GCP here).
PROJECT=my-project REGION=europe-west1 BUCKET=my-bucket REPO=beam-pipelines
IMAGE=$REGION-docker.pkg.dev/$PROJECT/$REPO/{template}:$(python -c 'import beam_pipelines; print(beam_pipelines.__version__)')

python -m beam_pipelines.flex metadata --check --template {template}
docker build -f {dockerfile} --build-arg PIPELINE={template} -t $IMAGE .
docker push $IMAGE
gcloud dataflow flex-template build gs://$BUCKET/templates/{template}.json \\
    --image $IMAGE --sdk-language PYTHON --metadata-file {metadata}
gcloud dataflow flex-template run "{template}-$(date -u +%Y%m%d-%H%M%S)" \\
    --project $PROJECT --region $REGION \\
    --template-file-gcs-location gs://$BUCKET/templates/{template}.json \\
    --temp-location gs://$BUCKET/tmp \\
    --parameters "input=gs://$BUCKET/in/*.jsonl,output=gs://$BUCKET/out"

# Check the job graph first, without GCP credentials (writes it as JSON, submits nothing):
python -m beam_pipelines.main --pipeline={template} --runner=DataflowRunner --project $PROJECT --region $REGION \\
    --temp_location gs://$BUCKET/tmp --input "gs://$BUCKET/in/*.jsonl" --output gs://$BUCKET/out \\
    --dry_run --dry_run_out {template}-pipeline.json
"""


def commands(template: str = "events") -> str:
    d = _spec(template)["dir"].relative_to(ROOT)
    dockerfile = ROOT.joinpath("templates", "flex", "events", "Dockerfile").relative_to(ROOT)
    return COMMANDS.format(template=template, dockerfile=dockerfile, metadata=d / "metadata.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m beam_pipelines.flex", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("metadata", help="write the template's metadata.json from the options classes")
    m.add_argument("--check", action="store_true", help="do not write; exit 1 when the file is stale")
    sub.add_parser("commands", help="print the docker and gcloud commands that build and run the template")
    for p in sub.choices.values():
        p.add_argument("--template", default=None, choices=packaged(),
                       help="The packaged pipeline. Default: events (metadata: every packaged pipeline).")  # fmt: skip
    args = parser.parse_args(argv)
    if args.command == "commands":
        print(commands(args.template or "events"), end="")
        return 0
    status = 0
    for template in [args.template] if args.template else packaged():
        path, text = metadata_path(template), metadata_text(template)
        if args.check:
            if not path.exists() or path.read_text() != text:
                print(f"error: {path} is stale; run `python -m beam_pipelines.flex metadata`", file=sys.stderr)
                status = 1
            else:
                print(f"{path} is current")
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path} ({len(metadata(template)['parameters'])} parameters)")
    return status


if __name__ == "__main__":
    sys.exit(main())
