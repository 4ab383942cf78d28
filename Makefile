# Two commands do everything, each setting itself up on a fresh machine:
#   make demo   create .venv, install pinned dependencies, run `addpatch run` on the shipped model
#   make test   the same set-up plus Chromium (for the report test), then the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RAY_STAMP := $(VENV)/.installed-ray

.PHONY: demo test setup lint chromium

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Ray is an optional extra for users; the tests of `addpatch sweep --ray` need it
$(RAY_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,ray]'
	touch $(RAY_STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/addpatch run

chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Chromium (Debian package) for the report test"; \
	  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || \
	  { echo "could not install chromium: run 'apt-get install -y chromium' as root"; exit 1; }; }

test: $(RAY_STAMP) chromium
	$(BIN)/ruff check addpatch cli tests migrations benchmarks
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check addpatch cli tests migrations benchmarks
	$(BIN)/ruff format --check addpatch cli tests migrations benchmarks
