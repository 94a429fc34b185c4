"""Using a feature table: point-in-time training sets (``training.py``; the CLI is
``python -m beam_pipelines.features``)."""
