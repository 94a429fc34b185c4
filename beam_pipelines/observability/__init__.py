"""Run observability for the launcher: metrics history, anomaly detection, alerts, lineage, Prometheus.

Plain Python called by ``beam_pipelines.main`` before and after a pipeline runs; nothing here
runs inside a Beam transform. See README.md for the map.
"""

__all__: list[str] = []
