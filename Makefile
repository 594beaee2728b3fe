# The two commands of the README: `make demo` and `make test`. Everything else is a convenience.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
comma := ,
NBVAL_ARGS := --nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider
# nbval re-runs the committed notebooks on a private stack and build folder, then compares the checked outputs
NBVAL_ENV := LAB_BUILD_DIR=$(CURDIR)/build/nbval LAB_STATE_DIR=$(CURDIR)/build/nbval/stack

# the course's edition: LAB_LANG=es runs/opens notebooks/es (not LANG: that is the locale every tool reads)
LAB_LANG ?=
export LAB_LANG

.PHONY: help install demo test test-under-load lint unit nbval lab up down status doctor notebooks bench clean \
	translations translations-check book

help:
	@echo "make demo [DATASET=path.csv] [FAILURE_RATE=0.3]  run the whole series locally, write build/run-summary.json"
	@echo "make test                                         ruff + the whole pytest suite (stack, Spark, notebooks)"
	@echo "make unit | test-under-load                       no Java needed | make test 3x beside two CPU hogs"
	@echo "make bench [BENCH_ARGS=\"--quick | --only 1 2 | --fresh-setup\"]  performance figures -> build/bench/results.json"
	@echo "make lab | up | down | status | doctor | notebooks | clean"
	@echo "make demo LAB_LANG=es | make lab LAB_LANG=es                 the Spanish edition (notebooks/es)"
	@echo "make translations | translations-check | book               PO catalogs -> notebooks/es; the static site"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/kinesis-lab demo $(if $(DATASET),--dataset "$(abspath $(DATASET))") $(if $(FAILURE_RATE),--simulated-failure-rate $(FAILURE_RATE)) $(if $(LAB_LANG),--lang $(LAB_LANG))

# two workers, each module on one of them, the longest modules first (see tests/conftest.py)
XDIST_ARGS ?= -n 2 --dist loadscope --no-loadscope-reorder

test: install lint
	$(BIN)/python -m pytest tests $(XDIST_ARGS) $(PYTEST_ARGS)
	$(MAKE) nbval

lint: install
	$(BIN)/ruff check .

unit: install
	$(BIN)/python -m pytest tests -m "not spark and not notebooks" $(PYTEST_ARGS)

# `make test` three times in a row with two CPU-bound processes alongside (the README's robustness check)
test-under-load: install
	@yes > /dev/null & hog1=$$!; yes > /dev/null & hog2=$$!; trap 'kill $$hog1 $$hog2' EXIT; \
	for run in 1 2 3; do \
	  echo "== make test, run $$run of 3, with two CPU-bound processes alongside (pids $$hog1 $$hog2)"; \
	  started=$$(date +%s); $(MAKE) test || { echo "== run $$run FAILED"; exit 1; }; \
	  echo "== run $$run passed in $$(( $$(date +%s) - started )) s"; \
	done

nbval: install
	rm -rf build/nbval
	$(NBVAL_ENV) $(BIN)/python -m pytest $(NBVAL_ARGS) notebooks; status=$$?; \
	  $(NBVAL_ENV) $(BIN)/kinesis-lab down >/dev/null; exit $$status

# JupyterLab on the repository root (the notebooks' ../images/ resolve), 00_setup open; on local it starts the stack
lab: install
	$(BIN)/python -m pip install --quiet -e '.[dev,lab$(if $(filter es,$(LAB_LANG)),$(comma)lab-es)]'
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
	$(BIN)/python -m pip install --quiet -e '.[dev,book]'
	$(BIN)/python -m kinesis_lab.course.book

clean: down
	rm -rf build .lab
