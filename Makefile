# The repo's commands. `make demo` and `make test` are the two the README promises; both set up what they
# need and are safe to run twice.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed-stamp
TRAIN_VENV := .venv-train
TRAIN_STAMP := $(TRAIN_VENV)/.installed-stamp
LLAMA_VENV := .venv-llama
LLAMA_STAMP := $(LLAMA_VENV)/.installed-stamp
export CBNANO_HOME ?= $(CURDIR)/var
export PATH := $(BIN):$(PATH)
# These machines set PYTHONDONTWRITEBYTECODE=1, so every process would compile every module it imports from
# source again: `import torch, transformers, sentence_transformers` took 13-14 s that way and 5.6 s with the
# bytecode cached; Airflow's imports 5.4 s and 1.9 s (BENCHMARKS, "Where make test's time goes"). The
# project's commands let Python write the cache into the venvs on first import (nothing is compiled ahead).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: setup setup-train setup-llama test-llama lock system-deps demo test test-unit test-dags test-integration test-milvus-server test-cluster test-browser lint format check bench airflow clean

setup: $(STAMP) $(TRAIN_STAMP)  ## create .venv (Airflow + ingestion) and .venv-train (axolotl) from the lock files; idempotent

# Both environments are installed from lock files (requirements/*.lock: every package pinned, what the last
# green run used) with uv, which installs them in a fraction of pip's time. uv does not read pip's
# configuration, so scripts/uv_sources.py hands it the same indexes and wheel folders (the CPU torch wheel).
UV_VERSION := 0.13.9
UV := $(BIN)/uv
UV_SOURCES = $(shell $(PY) scripts/uv_sources.py)

$(UV):
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q uv==$(UV_VERSION)

$(STAMP): pyproject.toml requirements/main.lock | $(UV)
	$(UV) pip install -q --python $(BIN)/python $(UV_SOURCES) -r requirements/main.lock
	$(UV) pip install -q --python $(BIN)/python --no-deps -e .
	@touch $@

setup-train: $(TRAIN_STAMP)  ## create .venv-train with axolotl 0.19.0 (its pins cannot share Airflow's env)

$(TRAIN_STAMP): requirements/train.lock requirements/train-nodeps.txt | $(UV)
	@test -x $(TRAIN_VENV)/bin/python || $(PY) -m venv $(TRAIN_VENV)
	$(UV) pip install -q --python $(TRAIN_VENV)/bin/python $(UV_SOURCES) -r requirements/train.lock
	$(UV) pip install -q --python $(TRAIN_VENV)/bin/python $(UV_SOURCES) --no-deps -r requirements/train-nodeps.txt
	@touch $@

setup-llama: $(LLAMA_STAMP)  ## create .venv-llama with llama-cpp-python (compiles llama.cpp) for the llama tier

# llama-cpp-python is published as source only, so uv compiles llama.cpp here: the library alone (no tools,
# server, tests or multimodal part), for any x86-64 (not -march=native), on every core. Minutes; uv keeps the
# built wheel in its cache, so a second set-up on the same machine does not compile again.
LLAMA_CMAKE_ARGS := -DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
	-DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF
$(LLAMA_STAMP): requirements/llama.lock | $(UV)
	@test -x $(LLAMA_VENV)/bin/python || $(PY) -m venv $(LLAMA_VENV)
	@echo "setup-llama: compiling llama.cpp for llama-cpp-python (several minutes on 2 cores)"
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
		$(UV) pip install -q --python $(LLAMA_VENV)/bin/python $(UV_SOURCES) -r requirements/llama.lock
	@touch $@

# Re-resolve both lock files from pyproject.toml and requirements-train.txt (newest allowed versions), then
# `make setup` installs them; commit the lock files with the change that needed them once `make test` passes.
lock: | $(UV)  ## re-resolve requirements/main.lock, train.lock and llama.lock
	$(UV) pip compile -q pyproject.toml --extra airflow --extra system-b --extra system-c --extra dev \
		--python-version 3.11 $(UV_SOURCES) --annotation-style line --custom-compile-command "make lock" \
		-o requirements/main.lock
	$(UV) pip compile -q requirements-train.txt --python-version 3.11 $(UV_SOURCES) --annotation-style line \
		--custom-compile-command "make lock" -o requirements/train.lock
	$(UV) pip compile -q requirements/llama.txt --python-version 3.11 $(UV_SOURCES) --annotation-style line \
		--custom-compile-command "make lock" -o requirements/llama.lock

system-deps:  ## Debian's postgresql, redis-server and chromium, which the cluster and browser tiers start
	bash scripts/system_deps.sh

demo: setup  ## ingest the samples through the DAGs, search, retrain one domain on CPU
	$(BIN)/python scripts/demo.py

# Plain `pytest` runs the tiers that need nothing outside the venvs (pyproject's addopts); `make test` names
# every tier, the root-only cluster and the chromium browser tiers included.
ALL_TIERS := unit or dags or integration or milvus_server or cluster or browser or llama

test: setup setup-llama system-deps  ## every tier: unit, dags, integration (real axolotl), milvus_server, cluster (Celery lab), browser, llama
	$(BIN)/python -m pytest -m "$(ALL_TIERS)" --durations=40 $(PYTEST_ARGS)

test-unit: setup
	$(BIN)/python -m pytest -m unit $(PYTEST_ARGS)

test-dags: setup
	$(BIN)/python -m pytest -m dags $(PYTEST_ARGS)

test-integration: setup
	$(BIN)/python -m pytest -m integration $(PYTEST_ARGS)

test-milvus-server: setup  ## a real Milvus standalone server (PyPI's milvus 2.3.5), no Docker
	$(BIN)/python -m pytest -m milvus_server $(PYTEST_ARGS)

test-browser: setup system-deps  ## the Airflow UI in chromium (Playwright): trigger form, registry page
	$(BIN)/python -m pytest -m browser $(PYTEST_ARGS)

test-llama: setup setup-llama  ## a GGUF export answering in llama.cpp (llama-cpp-python, compiled by setup-llama)
	$(BIN)/python -m pytest -m llama $(PYTEST_ARGS)

test-cluster: setup system-deps  ## the lab topology natively: Postgres, Redis, CeleryExecutor, 3 workers
	$(BIN)/python -m pytest -m cluster $(PYTEST_ARGS)

SOURCES := pipelines dags plugins tests bench scripts

lint: setup  ## ruff (AIR rules on dags/, banned Airflow import in pipelines/) and mypy on pipelines/
	$(BIN)/ruff check $(SOURCES)
	$(BIN)/mypy

format: setup  ## rewrite the sources in the project's format (ruff format) and sort imports
	$(BIN)/ruff check --select I --fix $(SOURCES)
	$(BIN)/ruff format $(SOURCES)

check: lint  ## what a change must pass: lint and types clean (make lint), the format unchanged
	$(BIN)/ruff format --check $(SOURCES)

bench: setup  ## benchmarks; figures go to docs/BENCHMARKS.md
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/search.py
	$(BIN)/python bench/retrieval.py
	$(BIN)/python bench/pubchem.py

airflow: setup  ## airflow standalone with this project's dags/, plugins/, pools and settings
	bash scripts/airflow_standalone.sh

clean:
	rm -rf var .pytest_cache .ruff_cache .mypy_cache
