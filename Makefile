# forgeml developer commands. `make demo` and `make test` set up .venv themselves.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check

.PHONY: demo quickstart test chromium slurm lint format type-check bench docs clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip

# The package alone: enough for the demo.
$(VENV)/.base: pyproject.toml | $(PY)
	$(PIP) -e .
	@touch $@

# The demo's frameworks (torch pinned to the local CPU wheel, tensorflow-cpu, scikit-learn,
# XGBoost, ONNX Runtime) and the evaluation extras (matplotlib for the report).
$(VENV)/.demo: pyproject.toml | $(PY)
	$(PIP) -e '.[torch,tensorflow,sklearn,xgboost,onnx,eval]'
	@touch $@ $(VENV)/.base

# Everything the test suite needs: every framework (torch pinned to the local CPU
# wheel, tensorflow-cpu), S3 and hub clients, and the tools.
$(VENV)/.dev: pyproject.toml | $(PY)
	$(PIP) -e '.[dev,torch,tensorflow,sklearn,xgboost,keras,onnx,eval,tracking,secrets,s3,hub,serve,trace,jobs,tune,template]'
	@touch $@ $(VENV)/.base $(VENV)/.demo

# The main job: every digits model of the zoo on every framework at batch sizes 1 and 64;
# the comparison table and examples/digits_demo/out/report.html (see its README).
demo: $(VENV)/.demo
	PATH="$(abspath $(BIN)):$$PATH" examples/digits_demo/run.sh

quickstart: $(VENV)/.base
	cd examples/quickstart && ../../$(PY) program.py --cfg configs/app.yml
	$(BIN)/forgeml config show examples/quickstart/configs/app.yml

# Debian's chromium, for tests/test_report.py (it opens a report in headless Chromium).
# Installed with apt-get when missing and run as root; otherwise that test skips, saying so.
chromium:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "Installing Debian chromium for tests/test_report.py (apt-get) ..."; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends chromium >/dev/null; } \
	  || echo "warning: could not install chromium; tests/test_report.py skips its browser check"; \
	else \
	  echo "note: chromium is missing (installing it needs root and apt-get);" \
	       "tests/test_report.py skips its browser check"; \
	fi

# Debian's slurm-wlm and munge, for the local Slurm cluster of tests/test_jobs.py
# (scripts/slurm-local). Installed with apt-get when missing and run as root; otherwise
# those tests skip, saying so.
slurm:
	@if command -v slurmctld >/dev/null 2>&1 || [ -x /usr/sbin/slurmctld ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "Installing Debian slurm-wlm and munge for tests/test_jobs.py (apt-get) ..."; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends slurm-wlm munge >/dev/null; } \
	  || echo "warning: could not install slurm-wlm and munge; tests/test_jobs.py skips its cluster tests"; \
	else \
	  echo "note: slurm-wlm and munge are missing (installing them needs root and apt-get);" \
	       "tests/test_jobs.py skips its cluster tests"; \
	fi

test: $(VENV)/.dev chromium slurm
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

type-check: $(VENV)/.dev
	$(BIN)/mypy

docs: $(VENV)/.dev
	$(PIP) -e '.[docs]'
	$(BIN)/mkdocs build --strict

bench: $(VENV)/.dev
	@for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist site
