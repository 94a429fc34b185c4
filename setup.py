"""beam-pipelines: production data pipelines on Apache Beam with Arrow batches."""

from setuptools import find_packages, setup

with open("requirements.txt") as fh:
    REQUIRES = [line.strip() for line in fh if line.strip() and not line.startswith("#")]

setup(
    name="beam-pipelines",
    version="0.1.0",
    description="Composite Apache Beam transforms and reference pipelines over Arrow batches",
    python_requires=">=3.10",
    packages=find_packages(include=["beam_pipelines", "beam_pipelines.*", "transforms", "transforms.*"]),
    # Each pipeline's default expectations ship beside it (Dataflow workers and Flex Template images).
    package_data={"beam_pipelines.pipelines": ["*.expectations.yaml"]},
    install_requires=REQUIRES,
    entry_points={"console_scripts": ["beam-pipelines=beam_pipelines.main:main"]},
)
