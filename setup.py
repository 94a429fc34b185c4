"""beam-pipelines: production data pipelines on Apache Beam with Arrow batches."""

from setuptools import Extension, find_packages, setup

with open("requirements.txt") as fh:
    REQUIRES = [line.strip() for line in fh if line.strip() and not line.startswith("#")]

setup(
    name="beam-pipelines",
    version="0.1.0",
    description="Composite Apache Beam transforms and reference pipelines over Arrow batches",
    python_requires=">=3.10",
    packages=find_packages(include=["beam_pipelines", "beam_pipelines.*", "transforms", "transforms.*"]),
    # Each packaged pipeline ships its spec, contracts and expectations (Dataflow workers, Flex Template images).
    package_data={"beam_pipelines.pipelines": ["*.yaml", "schemas/*/*.yaml"]},
    install_requires=REQUIRES,
    # The compiled jsonl scanner and HLL hash; where no C compiler is at hand the package
    # installs without them, and Arrow and numpy do the same work (transforms/ingest/flatjson.py,
    # transforms/quality/hll.py).
    ext_modules=[
        Extension(
            f"transforms.{name}",
            [f"transforms/{name.replace('.', '/')}.c"],
            extra_compile_args=["-O2", "-std=c99", "-Wall"],
            optional=True,
        )
        for name in ("ingest._flatscan", "_colscan")
    ],
    entry_points={"console_scripts": ["beam-pipelines=beam_pipelines.main:main"]},
)
