"""WriteLakehouse in a spec: the example spec's plan (examples/lakehouse/orders.yaml) and the tables it commits,
and a case per kind of mistake, each a SpecError naming its place."""

from pathlib import Path

import pytest

from beam_pipelines.lakehouse import table_entries
from beam_pipelines.spec import EventsConfig, SpecError
from beam_pipelines.spec.compile import compile_spec
from beam_pipelines.spec.yamlsrc import load

SPEC = Path(__file__).resolve().parents[2] / "examples" / "lakehouse" / "orders.yaml"
TEXT = SPEC.read_text()
SILVER = "config: {layer: silver, path: lakehouse/silver, partition_by: created_at, retention: 400d}"
GOLD = "config: {layer: gold, path: lakehouse/gold}"
BRONZE = "config: {layer: bronze, path: lakehouse/bronze, retention: 30d}"


def compile_text(text: str, tmp_path: Path, output: str = "out"):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    cfg = EventsConfig(input="in/*.jsonl", input_format="jsonl", output=output)
    return compile_spec(load(str(path)), cfg, str(path))


def edited(old: str, new: str) -> str:
    assert TEXT.count(old) == 1, old
    return TEXT.replace(old, new)


def test_the_example_spec_plans_three_tables_with_the_deduplicate_key_and_order(tmp_path):
    plan = compile_text(TEXT, tmp_path)
    roles = {n.step.name: n.step.role for n in plan.sinks if n.step.type == "WriteLakehouse"}
    assert roles == {"Bronze": "received", "Silver": "curated", "Gold": "aggregates"}
    entries = {e["step"]: e for e in (n.step.table_entry("out", "out/_staging/r") for n in plan.sinks
                                       if n.step.type == "WriteLakehouse")}  # fmt: skip
    assert entries["Silver"] == {
        "step": "Silver", "layer": "silver", "table": "out/lakehouse/silver", "staged": "out/_staging/r/_lakehouse/Silver",
        "partition_by": "created_at", "key": "order_id", "newer": ["updated_at", "last"],
    }  # fmt: skip
    assert entries["Gold"]["partition_by"] == "window_start" and entries["Bronze"]["partition_by"] is None
    # Staged nothing yet: each table's entry has no rows to commit.
    assert [e["rows"] for e in table_entries(plan, str(tmp_path / "out"), str(tmp_path / "stage"), "r")] == [0, 0, 0]


CASES = [
    (
        SILVER,
        SILVER.replace("partition_by", "partiton_by"),
        "transforms[12].config.partiton_by",
        "unknown key (did you mean 'partition_by'?)",
    ),
    (
        SILVER,
        SILVER.replace("layer: silver", "layer: silvr"),
        "transforms[12].config.layer",
        "must be one of bronze, silver, gold; got 'silvr' (did you mean 'silver'?)",
    ),
    (
        "      input: Curated\n      " + SILVER,
        "      input: Read\n      " + SILVER,
        "transforms[12]",
        "layer silver takes the curated records: give the last records step as its input",
    ),
    (
        "      input: Read\n      " + BRONZE,
        "      input: Curated\n      " + BRONZE,
        "transforms[11]",
        "layer bronze takes the records as received: give the source step as its input",
    ),
    (
        SILVER,
        SILVER.replace("}", ", key: customer_id}"),
        "transforms[12].config.key",
        "silver merges on the Deduplicate step's key 'order_id', the one column unique in the curated records; "
        "got 'customer_id'",
    ),
    (
        SILVER,
        SILVER.replace("}", ", key: order_idd}"),
        "transforms[12].config.key",
        "no column 'order_idd' reaches this step (did you mean 'order_id'?)",
    ),
    (
        SILVER,
        SILVER.replace("created_at", "status"),
        "transforms[12].config.partition_by",
        "column 'status' must be timestamp, but it is string",
    ),
    (
        SILVER,
        SILVER.replace("}", ", order_by: region}"),
        "transforms[12].config.order_by",
        "column 'region' must be timestamp or integer or double or decimal, but it is string",
    ),
    (GOLD, GOLD.replace("}", ", key: region}"), "transforms[13].config.key", "key applies to layer silver only"),
    (
        BRONZE,
        BRONZE.replace("}", ", partition_by: ts}"),
        "transforms[11].config.partition_by",
        "bronze is partitioned by the day the records were received (ingest_date)",
    ),
    (
        SILVER,
        SILVER.replace("lakehouse/silver", "curated/silver"),
        "transforms[12].config.path",
        "'curated/silver' is under the published output 'curated', which each run replaces whole",
    ),
    (
        GOLD,
        GOLD.replace("lakehouse/gold", "lakehouse/silver/gold"),
        "transforms[13].config.path",
        "'lakehouse/silver/gold' overlaps table 'lakehouse/silver' of step Silver",
    ),
    (
        SILVER,
        SILVER.replace("lakehouse/silver", "../silver"),
        "transforms[12].config.path",
        "The table's directory under --output (relative, no '..' or '.' parts, not starting with '_'; not curated, aggregates "
        "or dlq, which are replaced whole); got '../silver'",
    ),
]


@pytest.mark.parametrize("old, new, place, message", CASES, ids=[c[2] + ":" + c[3][:20] for c in CASES])
def test_each_mistake_is_one_error_naming_its_place(tmp_path, old, new, place, message):
    with pytest.raises(SpecError) as info:
        compile_text(edited(old, new), tmp_path)
    assert info.value.place == "pipeline." + place
    assert message in info.value.message
    assert info.value.line > 0


def test_silver_needs_a_deduplicate_step(tmp_path):
    dedup = "    - name: LatestVersion\n      type: Deduplicate\n      config: {key: order_id, order_by: [updated_at, _raw], keep: last}\n"
    with pytest.raises(SpecError, match="silver is merged on a key unique in the curated records: add a Deduplicate"):
        compile_text(edited(dedup, ""), tmp_path)


def test_another_sink_cannot_take_the_records_as_received(tmp_path):
    text = edited(
        "      input: Curated\n      config: {path: curated,", "      input: Read\n      config: {path: curated,"
    )
    with pytest.raises(SpecError, match="not the source's records as received"):
        compile_text(text, tmp_path)


def test_tables_on_an_object_store_are_refused_for_now(tmp_path):
    with pytest.raises(SpecError, match="Delta tables are written on local disks only for now; --output is s3://b/out"):
        compile_text(TEXT, tmp_path, output="s3://b/out")


def test_the_maintenance_of_each_table_comes_from_its_step(tmp_path):
    plan = compile_text(TEXT, tmp_path)
    got = {n.step.name: n.step.maintenance("out") for n in plan.sinks if n.step.type == "WriteLakehouse"}
    assert got["Bronze"] == {"step": "Bronze", "layer": "bronze", "table": "out/lakehouse/bronze", "retention_days": 30,
                             "keep_versions_hours": 168, "target_bytes": 128 * 1024 * 1024}  # fmt: skip
    assert got["Silver"]["retention_days"] == 400 and got["Gold"]["retention_days"] is None
    custom = compile_text(edited(SILVER, SILVER.replace("}", ", keep_versions: 36h, target_file_mb: 32}")), tmp_path)
    silver = custom.node("Silver").step.maintenance("out")
    assert (silver["keep_versions_hours"], silver["target_bytes"]) == (36, 32 * 1024 * 1024)
    with pytest.raises(SpecError) as e:
        compile_text(edited(SILVER, SILVER.replace("retention: 400d", "retention: forever")), tmp_path)
    assert "retention" in str(e.value)
