"""Pipeline specs: YAML in Beam YAML's shape, checked and compiled to the project's composites.

``config`` holds the run config built from flags; ``compile`` checks a spec and makes a plan;
``build`` composes a plan into a Beam pipeline.
"""

from beam_pipelines.spec.config import ConfigError, EventsConfig
from beam_pipelines.spec.yamlsrc import SpecError

__all__ = ["ConfigError", "EventsConfig", "SpecError"]
