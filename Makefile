# forgeml developer commands. `make demo` and `make test` set up .venv themselves.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check

.PHONY: demo test lint format type-check bench docs clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip

# The package alone: enough for the demo.
$(VENV)/.base: pyproject.toml | $(PY)
	$(PIP) -e .
	@touch $@

# Everything the test suite needs: every framework (torch pinned to the local CPU
# wheel, tensorflow-cpu), S3 and hub clients, and the tools.
$(VENV)/.dev: pyproject.toml | $(PY)
	$(PIP) -e '.[dev,torch,tensorflow,sklearn,xgboost,keras,onnx,eval,tracking,secrets,s3,hub]'
	@touch $@ $(VENV)/.base

demo: $(VENV)/.base
	cd examples/quickstart && ../../$(PY) program.py --cfg configs/app.yml
	$(BIN)/forgeml config show examples/quickstart/configs/app.yml

test: $(VENV)/.dev
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
