# Two commands: `make demo` runs the main job, `make test` runs the whole suite. Both install first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test lint typecheck unit catalog openapi bench clean gpu-lock test-comfyui test-comfyui-suite lambda-bundle synth test-ui-oracle

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt gpu_container/requirements-nodeps.txt
	@echo "Installing comfyserve into $(VENV): a few minutes on the first run; skipped afterwards until pyproject.toml or constraints.txt change."
	@echo "[1/4] the virtual environment $(VENV)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "[2/4] pip itself"
	$(PY) -m pip install --quiet --upgrade pip
	@echo "[3/4] torch, the largest dependency (the version constraints.txt pins)"
	$(PY) -m pip install --progress-bar on -c constraints.txt torch
	@echo "[4/4] comfyserve and the rest: model libraries (diffusers, transformers), AWS and CDK, test and lint tools"
	$(PY) -m pip install --quiet -c constraints.txt -e '.[worker,infra,dev]'
	$(PY) -m pip install --quiet --require-hashes --no-deps -r gpu_container/requirements-nodeps.txt
	@echo "Installed: $(VENV)/bin/comfyserve"
	touch $(STAMP)

demo: install
	$(PY) -m comfyserve.demo

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/hadolint gpu_container/Dockerfile

typecheck: install
	$(VENV)/bin/mypy

unit: install lambda-bundle
	$(VENV)/bin/pytest tests -m "not comfyui"

# The ComfyUI backend against a real ComfyUI on the CPU (docs/COMFYUI_BACKEND.md): never part of `make test`.
test-comfyui: install
	test -n "$(COMFYUI_DIR)" || { echo "usage: make test-comfyui COMFYUI_DIR=<a ComfyUI checkout>"; exit 2; }
	COMFYUI_DIR="$(COMFYUI_DIR)" $(VENV)/bin/pytest tests/comfyui_real -m comfyui -p no:cacheprovider

test: lint typecheck unit

# The Lambda bundle for arm64 Lambda, built by pip without Docker (infra/lambda_bundle.py; needs the package index).
lambda-bundle: install
	$(PY) -m infra.lambda_bundle

# The CloudFormation template in cdk.out (no AWS credentials, no Docker), then cfn-lint on it.
synth: lambda-bundle
	JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION=1 $(PY) app.py
	$(VENV)/bin/cfn-lint cdk.out/*.template.json

catalog: install
	$(PY) -m comfyserve catalog > comfyserve/engine/catalog.json

openapi: install
	$(PY) -m comfyserve.api.openapi

bench: install
	for script in bench/bench_*.py; do $(PY) $$script || exit 1; done
	$(PY) bench/report.py

# Pin the GPU image's requirements for Linux x86_64 (needs PyPI); tests check the committed lock offline.
gpu-lock: install
	$(PY) gpu_container/lock.py

# The UI -> API oracle pairs (tests/data/ui_oracle), regenerated with ComfyUI's own editor in Debian's headless
# chromium (apt-get install chromium) against the ComfyUI at COMFYUI_DIR: never part of `make test`. Playwright and
# the pinned templates go into their own venv; COMFYUI_COMMIT is recorded when the checkout has no .git.
ORACLE_VENV ?= .venv-ui-oracle
test-ui-oracle:
	test -n "$(COMFYUI_DIR)" || { echo "usage: make test-ui-oracle COMFYUI_DIR=<a ComfyUI checkout with its venv>"; exit 2; }
	command -v chromium >/dev/null || { echo "needs Debian's chromium: apt-get install -y chromium"; exit 2; }
	test -x $(ORACLE_VENV)/bin/python || $(PYTHON) -m venv $(ORACLE_VENV)
	$(ORACLE_VENV)/bin/pip install --quiet "playwright==1.65.3" "comfyui-workflow-templates-json==0.1.123"
	$(ORACLE_VENV)/bin/python tests/ui_oracle/generate.py --comfyui-dir "$(COMFYUI_DIR)" $(if $(COMFYUI_COMMIT),--comfyui-commit $(COMFYUI_COMMIT))

# ComfyUI's own execution suite against `comfyserve serve` (docs/COMFYUI_SUITE.md): never part of `make test`.
# Copies the suite out of a ComfyUI checkout into SUITE_DIR; nothing is fetched. SUITE_ARGS go to pytest.
SUITE_DIR ?= .comfyui-suite
test-comfyui-suite: install
	test -d "$(COMFYUI_DIR)/tests/execution" || { echo "usage: make test-comfyui-suite COMFYUI_DIR=<a ComfyUI checkout>"; exit 2; }
	rm -rf "$(SUITE_DIR)" && mkdir -p "$(SUITE_DIR)/tests"
	cp -R "$(COMFYUI_DIR)/tests/execution" "$(COMFYUI_DIR)/tests/conftest.py" "$(SUITE_DIR)/tests/"
	cp tests/comfyui_suite/pytest.ini "$(SUITE_DIR)/"
	cd "$(SUITE_DIR)" && PYTHONPATH="$(CURDIR)/tests/comfyui_suite" "$(CURDIR)/$(PY)" -m pytest tests/execution $(SUITE_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
