"""Redrive: dead letters replayed through a pipeline's current spec (``python -m beam_pipelines.redrive``)."""
