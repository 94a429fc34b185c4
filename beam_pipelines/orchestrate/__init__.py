"""Orchestration: Airflow DAGs made from pipeline specs (README: Orchestration).

``schedule`` reads and checks a spec's ``pipeline.schedule`` (PyYAML only); ``dags`` is the DAG
factory Airflow imports; ``operators`` runs the CLI and waits for inputs; ``alerts`` posts
failures and missed deadlines to the run alerts' webhook; ``audit`` checks a published partition
(run with the project's own Python). Nothing here imports Beam at DAG parse time.
"""
