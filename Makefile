# The two commands of the README: `make demo` and `make test`. Everything else is a convenience.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# the course's edition: LAB_LANG=es runs/opens notebooks/es (not LANG: that is the locale every tool reads)
LAB_LANG ?=
export LAB_LANG

.PHONY: help install lock test-latest demo test test-notebooks test-all test-under-load lint unit nbval lab up down status doctor notebooks \
	bench clean translations translations-check book

help:
	@echo "make demo [DATASET=path.csv] [FAILURE_RATE=0.3]  run the whole series locally, write build/run-summary.json"
	@echo "make test                                         ruff + the suite but the tests that run or show notebooks (~4.5 min)"
	@echo "make test-notebooks | test-all                    the tests that run or show notebooks | both (what CI runs)"
	@echo "make unit | test-under-load                       no Java needed | make test-all 3x beside two CPU hogs"
	@echo "make bench [BENCH_ARGS=\"--quick | --only 1 2 | --fresh-setup\"]  performance figures -> build/bench/results.json"
	@echo "make lock | test-latest                           refresh requirements/lock.txt | the suite on the newest versions"
	@echo "make lab | up | down | status | doctor | notebooks | clean"
	@echo "make demo LAB_LANG=es | make lab LAB_LANG=es                 the Spanish edition (notebooks/es)"
	@echo "make translations | translations-check | book               PO catalogs -> notebooks/es; the static site"

# One locked, hashed set of versions (requirements/lock.txt, every extra, every platform); `make lock` refreshes it.
# uv installs it (fast); INSTALLER=pip does the same with pip alone.
LOCK := requirements/lock.txt
INSTALLER ?= $(if $(wildcard $(VENV)/conda-meta),pip,uv)  # never `uv pip sync` over a conda env's own packages
UV := $(BIN)/uv

$(STAMP): pyproject.toml $(LOCK)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
ifeq ($(INSTALLER),pip)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
else
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements/uv.txt
	$(UV) pip sync --quiet --python $(BIN)/python --require-hashes $(LOCK)
	$(UV) pip install --quiet --python $(BIN)/python --no-deps -e .
endif
	@touch $(STAMP)

install: $(STAMP)

# the newest versions pyproject.toml allows, every extra, for every platform, hashed; uv.txt bootstraps the installer
lock: install
	$(UV) pip compile --quiet pyproject.toml --all-extras --universal --python-version 3.11 --generate-hashes \
	  --upgrade -o $(LOCK)
	awk '/^uv==/{p=1} p{print} p && !/\\$$/{exit}' $(LOCK) > requirements/uv.txt

# the whole suite on the newest versions pyproject.toml allows (no lock), in a venv of its own; see README
LATEST_VENV ?= build/venv-latest
test-latest: install
	rm -rf $(LATEST_VENV) && $(PYTHON) -m venv $(LATEST_VENV)
	$(UV) pip install --quiet --python $(LATEST_VENV)/bin/python --refresh --upgrade -r pyproject.toml --all-extras
	$(UV) pip install --quiet --python $(LATEST_VENV)/bin/python --no-deps -e .
	$(UV) pip freeze --python $(LATEST_VENV)/bin/python > build/latest-versions.txt
	@$(PYTHON) requirements/newer_than_lock.py $(LOCK) build/latest-versions.txt
	@touch $(LATEST_VENV)/.installed-stamp
	$(MAKE) test-all VENV=$(LATEST_VENV)

demo: install
	$(BIN)/kinesis-lab demo $(if $(DATASET),--dataset "$(abspath $(DATASET))") $(if $(FAILURE_RATE),--simulated-failure-rate $(FAILURE_RATE)) $(if $(LAB_LANG),--lang $(LAB_LANG))

# two workers, each module on one of them (the in-process Spark ones together), the longest first (tests/conftest.py)
XDIST_ARGS ?= -n 2 --dist loadgroup --no-loadscope-reorder

# every Spark JVM of the suite maps one class archive (src/kinesis_lab/local/pipeline/class_archive.py): made once
# for this JDK and these jars (~25 s), it saves each JVM start several seconds of CPU; CLASS_ARCHIVE= turns it off
CLASS_ARCHIVE ?= build/spark-class-archive
ARCHIVE_ENV = KINESIS_LAB_SPARK_CLASS_ARCHIVE=$(if $(CLASS_ARCHIVE),$$($(BIN)/python -m kinesis_lab.local.pipeline.spark_cli class-archive $(CLASS_ARCHIVE)))

# The suite in two parts, both on two workers. `make test`, the developer loop (~4.5 min on 2 cores): every test not
# marked `notebooks`. `make test-notebooks` (~5.5 min): the 25 that run notebooks in a kernel (nbval, the Spanish
# demo, the CLI blocks, Databricks mode, the AWS target, single notebooks) or show them in a browser (JupyterLab, the
# book). CI (.ci/run) runs both, and so do test-all, test-latest and test-under-load (tests/test_suite_split.py).
test: install lint
	$(ARCHIVE_ENV) $(BIN)/python -m pytest tests $(XDIST_ARGS) -m "not notebooks" $(PYTEST_ARGS)

test-notebooks: install
	$(ARCHIVE_ENV) $(BIN)/python -m pytest tests $(XDIST_ARGS) -m notebooks $(PYTEST_ARGS)

test-all: test test-notebooks

lint: install
	$(BIN)/ruff check .

unit: install
	$(BIN)/python -m pytest tests -m "not spark and not notebooks" $(PYTEST_ARGS)

# the whole suite (`make test-all`) three times in a row with two CPU-bound processes alongside (the README's
# robustness check)
test-under-load: install
	@yes > /dev/null & hog1=$$!; yes > /dev/null & hog2=$$!; trap 'kill $$hog1 $$hog2' EXIT; \
	for run in 1 2 3; do \
	  echo "== make test-all, run $$run of 3, with two CPU-bound processes alongside (pids $$hog1 $$hog2)"; \
	  started=$$(date +%s); $(MAKE) test-all || { echo "== run $$run FAILED"; exit 1; }; \
	  echo "== run $$run passed in $$(( $$(date +%s) - started )) s"; \
	done

nbval: install
	$(ARCHIVE_ENV) $(BIN)/python -m pytest tests/test_nbval.py $(PYTEST_ARGS)

# JupyterLab on the repository root (the notebooks' ../images/ resolve), 00_setup open; on local it starts the stack
lab: install
	$(BIN)/kinesis-lab lab $(LAB_ARGS)

up: install
	$(BIN)/kinesis-lab up

down:
	@test -x $(BIN)/kinesis-lab && $(BIN)/kinesis-lab down || true

status: install
	$(BIN)/kinesis-lab status

doctor: install
	$(BIN)/kinesis-lab doctor

notebooks: install
	$(BIN)/kinesis-lab demo --in-place $(if $(DATASET),--dataset "$(abspath $(DATASET))")

bench: install
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

# the Spanish edition: English changes -> new/fuzzy entries in notebooks/locale/es/*.po, notebooks/es regenerated
translations: install
	$(BIN)/python -m kinesis_lab.course.translations update

translations-check: install
	$(BIN)/python -m kinesis_lab.course.translations check

# both editions as a static, searchable site (stored outputs, nothing executed, offline) -> build/book/site
book: install
	$(BIN)/python -m kinesis_lab.course.book

clean: down
	rm -rf build .lab
