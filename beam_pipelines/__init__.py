"""beam-pipelines: production data pipelines on Apache Beam, with Arrow batches as the unit
of work and no record lost without saying where it went."""

__version__ = "0.1.0"
