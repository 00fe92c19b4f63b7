# af2jobs: `make demo` predicts a structure end to end on this machine; `make test` runs the whole suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
AF2 := $(VENV)/bin/af2
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo-out

.PHONY: demo test venv db clean help

help:
	@echo "make demo   set up everything and predict the bundled example (ubiquitin) on this machine"
	@echo "make test   set up and run the whole test suite"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[pipeline,local,dev]'
	touch $@

venv: $(STAMP)

# The small real sequence database (UniProt sample + HMMER's globins), from Debian's package registry.
db: $(STAMP)
	$(AF2) db fetch-demo

demo: db
	$(AF2) predict --example ubiquitin --out $(DEMO_OUT) --strategy best
	@echo
	@echo "Results: $(abspath $(DEMO_OUT))/ubiquitin  (ranked_0.pdb, ranked_0.cif, ranking_debug.json, timings.json, versions.json)"

test: db
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
