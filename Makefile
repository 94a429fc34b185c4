# beam-pipelines: every command a user or CI needs. `make demo` and `make test` set up
# everything they use on a fresh machine (venv, install, sample data).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_ROWS ?= 200000
DEMO_FORMAT ?= jsonl

.PHONY: help venv demo demo-streaming demo-features test unit e2e lint format clean bench

help:
	@echo "make demo    - set up, generate $(DEMO_ROWS) sample events, run the events pipeline, print a summary"
	@echo "make test    - set up, lint, run all tests"
	@echo "make demo-streaming - Kafka + PostgreSQL + Prism: the events pipeline in streaming mode"
	@echo "make demo-features - per-user features as of every event (the user_features spec) into out-features/"
	@echo "make lint    - ruff check and format check"
	@echo "make bench   - the events workload on this project and its peers (benchmarks/README.md)"
	@echo "make format  - ruff format and autofix"
	@echo "make spec-schema - regenerate templates/spec.schema.json from the spec format"
	@echo "make clean   - remove venv, sample data and outputs"

$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-bench.txt setup.py transforms/ingest/_flatscan.c transforms/_colscan.c
	$(PYTHON) -m venv $(VENV)
	# uv resolves and installs the pinned set in seconds where pip takes minutes.
	$(BIN)/pip install -q uv
	# Bytecode compiled at install: where PYTHONDONTWRITEBYTECODE is set, every job (and every
	# test's job) would otherwise compile Beam's modules again as it starts (about 5 s).
	$(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python -r requirements-bench.txt
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	$(BIN)/python -m compileall -q -j 0 beam_pipelines transforms benchmarks > /dev/null
	touch $@

venv: $(VENV)/.installed

demo: venv
	rm -rf data/in
	$(BIN)/python -m beam_pipelines.datagen --rows $(DEMO_ROWS) --format $(DEMO_FORMAT) \
		--dirty-fraction 0.05 --out data/in --seed 7
	$(BIN)/python -m beam_pipelines.main --pipeline=events --runner=DirectRunner \
		--input='data/in/*.$(DEMO_FORMAT)' --input_format=$(DEMO_FORMAT) --output=out/

demo-features: venv
	rm -rf data/sessions
	$(BIN)/python -m beam_pipelines.datagen --dataset sessions --rows $(DEMO_ROWS) --format jsonl \
		--dirty-fraction 0.05 --out data/sessions --seed 7
	$(BIN)/python -m beam_pipelines.main --pipeline=user_features --runner=DirectRunner \
		--input='data/sessions/*.jsonl' --input_format=jsonl --output=out-features/

demo-streaming: venv
	PYTHON=$(BIN)/python scripts/demo_streaming.sh

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Two workers on two cores (up to four on bigger machines): many tests wait on a server or a subprocess.
# Each worker starts its own servers on free ports; a test file stays on one worker (--dist loadfile).
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); [ $$n -lt 2 ] && n=2; [ $$n -gt 4 ] && n=4; echo $$n)

test: lint
	PYTHON=$(BIN)/python scripts/test_services.sh
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=25

unit: venv
	$(BIN)/python -m pytest -q tests/unit

e2e: venv
	$(BIN)/python -m pytest -q tests/e2e

clean:
	rm -rf $(VENV) data out out-stream out-features .pytest_cache .ruff_cache

# Runner artifacts (prism built with Go; Flink/Spark job-server jars from Maven Central) into
# .cache/runners/. `make runners RUNNERS=--prism` fetches only prism.
RUNNERS ?=

.PHONY: runners flex-template spec-schema

runners: venv
	$(BIN)/python -m beam_pipelines.artifacts fetch $(RUNNERS)

# Regenerates templates/flex/events/metadata.json and prints the docker/gcloud commands that
# build and run the Dataflow Flex Template (they need GCP, so nothing here runs them).
flex-template: venv
	$(BIN)/python -m beam_pipelines.flex metadata
	$(BIN)/python -m beam_pipelines.flex commands

# Regenerates templates/spec.schema.json, the JSON Schema the packaged specs point editors at.
spec-schema: venv
	$(BIN)/python -m beam_pipelines.spec schema --out templates/spec.schema.json

BENCH_ROWS ?= 1000000,5000000
BENCH_FORMATS ?= parquet,jsonl
BENCH_REPEAT ?= 3

bench: venv
	$(BIN)/python -m benchmarks.run --rows $(BENCH_ROWS) --format $(BENCH_FORMATS) \
		--repeat $(BENCH_REPEAT) --json benchmarks/results/results.json
