# metaverse-kit: `make lab` to work in JupyterLab, `make test` to run everything CI runs.
# Everything is installed into ./.venv and ./.cache; nothing outside the repository is touched
# except Debian's chromium and postgresql, which the browser and ingestion tests need (installed
# with apt when missing).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CACHE := .cache
AZURITE := $(CACHE)/node/node_modules/.bin/azurite-blob
DATAHUB_WHEEL := $(CACHE)/acryl_datahub-1.7.0.17-py3-none-any.whl
# Spark 3.5 (Databricks 15.4 LTS, Synapse, Fabric): pyspark 3.5 beside the venv's pyspark 4.
SPARK35 := $(CACHE)/pyspark-3.5
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export METAVERSE_HOME ?= $(CURDIR)/.metaverse
# root (containers, CI machines) must say so to Jupyter.
LAB_ARGS ?= $(if $(filter 0,$(shell id -u)),--allow-root)
LINTED := $(wildcard metaverse_kit tests benchmarks)

.PHONY: help env workspace lab demo test test-deps lint chromium postgresql java bench clean

help:
	@echo "make lab    create .venv, install, prepare the local workspace, open JupyterLab"
	@echo "make test   install what the tests need (Azurite, Chromium, PostgreSQL, Java for Spark), run the suite"
	@echo "make demo   the whole flow headless in a fresh workspace"
	@echo "make bench  replay, emit, ingest and scale-out benchmarks (print ratios against their baselines)"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,ingest,spark,dask]"
	touch $(STAMP)

env: $(STAMP)

workspace: env
	$(BIN)/metaverse init --sample

lab: workspace
	cd notebooks && ../$(BIN)/jupyter lab $(LAB_ARGS)

demo: env
	$(BIN)/metaverse demo

bench: env java
	$(BIN)/python benchmarks/replay.py
	$(BIN)/python benchmarks/emit.py
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/scale_out.py

chromium:
	@[ -x /usr/bin/chromium ] || { $(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

# The ingestion tests start their own PostgreSQL server (initdb in a temporary folder).
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; }

# Spark (the spark extra) runs on the machine's Java 17; installed with apt when missing.
java:
	@command -v java >/dev/null || { $(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless; }

$(AZURITE):
	mkdir -p $(CACHE)/node
	npm install --prefix $(CACHE)/node --no-audit --no-fund --silent azurite@3.35.0

$(DATAHUB_WHEEL): $(STAMP)
	$(BIN)/python -m pip download --quiet --no-deps acryl-datahub==1.7.0.17 -d $(CACHE)

$(SPARK35)/.stamp: $(STAMP)
	rm -rf $(SPARK35)
	$(BIN)/python -m pip install --quiet --no-deps --target $(SPARK35) "pyspark==3.5.*"
	touch $@

test-deps: env chromium postgresql java $(AZURITE) $(DATAHUB_WHEEL) $(SPARK35)/.stamp

lint: env
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy metaverse_kit

test: test-deps lint
	$(BIN)/python -m pytest --durations=15
	@echo "The Spark tests again on pyspark 3.5 (its own warnings: distutils, sockets it leaves to GC)"
	PYTHONPATH=$(SPARK35) METAVERSE_TEST_PYSPARK=3.5. $(BIN)/python -m pytest -q tests/distributed -k "spark and not connect" \
		-p no:unraisableexception -W "ignore::ResourceWarning" \
		-W "ignore:distutils Version classes are deprecated:DeprecationWarning"

clean:
	rm -rf $(VENV) $(CACHE) .pytest_cache .mypy_cache .ruff_cache test-artifacts
