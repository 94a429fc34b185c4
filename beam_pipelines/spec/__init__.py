"""Pipeline specs: YAML in Beam YAML's shape, checked and compiled to the project's composites.

``config`` holds the run config built from flags; ``compile`` checks a spec and makes a plan;
``build`` composes a plan into a Beam pipeline.
"""

from beam_pipelines.spec.yamlsrc import SpecError

__all__ = ["ConfigError", "EventsConfig", "SpecError"]


def __getattr__(name: str):
    # The run config imports the transforms (pyarrow); reading a spec's YAML (the Airflow DAG
    # factory does, where neither is installed) must not.
    if name in ("ConfigError", "EventsConfig"):
        from beam_pipelines.spec import config

        return getattr(config, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
