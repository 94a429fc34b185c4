"""Run with Airflow's interpreter (scripts/airflow.sh python): parses every DAG file of the DAGs
folder with Airflow's own DagBag, timing each file, and prints one JSON document."""

import json
import os
import sys
import time

from airflow.dag_processing.dagbag import DagBag

folder = os.environ["AIRFLOW__CORE__DAGS_FOLDER"]
bag = DagBag(folder, collect_dags=False)
seconds = {}
for entry in sorted(os.listdir(folder)):
    if entry.endswith(".py"):
        start = time.perf_counter()
        bag.process_file(os.path.join(folder, entry), only_if_updated=False)
        seconds[entry] = time.perf_counter() - start
dags = {
    d.dag_id: {
        "tasks": sorted(t.task_id for t in d.tasks),
        "edges": sorted([t.task_id, u] for t in d.tasks for u in t.downstream_task_ids),
        "schedule": type(d.timetable).__name__,
        "summary": repr(d.timetable),
        "retries": d.default_args.get("retries"),
        "backoff": d.default_args.get("retry_exponential_backoff"),
        "outlets": sorted(a.name for t in d.tasks for a in t.outlets),
    }
    for d in bag.dags.values()
}
errors = {os.path.basename(k): v for k, v in bag.import_errors.items()}
heavy = sorted(m for m in ("apache_beam", "pyarrow", "transforms") if m in sys.modules)
print(json.dumps({"dags": dags, "errors": errors, "seconds": seconds, "heavy_modules": heavy}))
