# Two commands set everything up on a fresh clone: `make demo` and `make test`.
# Both install from the committed lock (requirements/lock.txt), so every machine gets
# exactly the packages CI tested; `make lock` refreshes it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ARGS ?=
STAMP := $(VENV)/.installed
LOCK := requirements/lock.txt
UV_VERSION := 0.13.9
UV := build/uv-$(UV_VERSION)/bin/uv
# where the CPU build of torch 2.13.0 lies as a wheel (the lock resolves torch's dependencies from it)
TORCH_WHEELS ?= /opt/wheels

.PHONY: demo test test-fast lint format bench lock clean browser

# torch first (the CPU build where one lies on disk), then every other package exactly as
# locked and hash-checked (this also sets torch's own dependencies to the locked versions),
# then cnnlens itself without resolving anything.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q --no-deps --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/cnnlens demo $(ARGS)

# ruff, then the import contract (pyproject.toml's [tool.importlinter]; docs/ARCHITECTURE.md):
# an import from a lower layer into a higher one fails here.
lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/lint-imports

# Debian's chromium for the explorer's browser tests, installed when missing and we may (root,
# apt-get); where it cannot be, those tests are skipped with a message saying so.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	  || echo "chromium is not installed and could not be: the browser tests will be skipped"

# The whole suite at the default thread count, then the numerics-sensitive tests once more on
# one thread (other summation orders; see the `numerics` marker in pyproject.toml).
test: lint browser
	$(BIN)/python -m pytest $(ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -m numerics -p no:cacheprovider $(ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" -x $(ARGS)

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/attribution.py

# Re-resolve every dependency (pyproject.toml's runtime + dev, requirements/peers.in) to the
# newest versions the ranges allow, pinned with hashes; then `make test` installs and checks them.
$(UV):
	$(PYTHON) -m pip install -q --target build/uv-$(UV_VERSION) uv==$(UV_VERSION)

lock: $(UV)
	$(UV) pip compile pyproject.toml requirements/peers.in --extra dev \
	  --overrides requirements/overrides.txt --no-emit-package torch \
	  --find-links $(TORCH_WHEELS) --generate-hashes --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 --custom-compile-command "make lock" -o $(LOCK)

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache .import_linter_cache
