# The README's two commands: `make demo` and `make test`. Everything installs into .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STORE ?= runs/harness.duckdb

.PHONY: demo demo-all test test-slow lint bench gpu-check data clean

# Debian ships venv separately (python3-venv); install it when we may
$(BIN)/python:
	@$(PYTHON) -m venv $(VENV) || { \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    rm -rf $(VENV); apt-get update -qq && apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); \
	  else echo "error: $(PYTHON) -m venv failed; install python3-venv" >&2; exit 1; fi; }

# runtime install (torch comes from pyproject's dependencies)
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# Fashion-MNIST: found where it is (data root, Debian's package, cache), else Debian's package when
# we may install it, else torchvision's download.
data: $(VENV)/.installed
	@$(BIN)/harness data fetch fashion_mnist || { \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist && $(BIN)/harness data fetch fashion_mnist; \
	  else exit 1; fi; }

demo: data
	$(BIN)/harness sweep run sweeps/quickstart.toml --store $(STORE)
	$(BIN)/harness report figures --store $(STORE) --out reports
	$(BIN)/harness db query "SELECT numerics, alpha, gamma, round(hoyer, 3) AS hoyer, round(elbo, 1) AS elbo FROM runs WHERE sweep = 'quickstart' ORDER BY ALL" --store $(STORE)

# the other experiments, reduced to minutes each (sweeps/demo/), then every figure, the claims and index.html
demo-all: demo
	$(BIN)/harness data fetch mnist
	$(BIN)/harness sweep run sweeps/demo/clustering.toml --store $(STORE)
	$(BIN)/harness sweep run sweeps/demo/independence.toml --store $(STORE)
	$(BIN)/harness sweep run sweeps/demo/rotated_mnist.toml --store $(STORE)
	$(BIN)/harness eval --metric tsne sweeps/demo/rotated_mnist.toml --store $(STORE)
	$(BIN)/harness report figures --store $(STORE) --out reports
	-$(BIN)/harness report claims --store $(STORE)

# the fast suite (minutes on 2 cores); test-slow runs the end-to-end tests with real processes and signals
test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q -m slow

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check harness tests

# run the suites into the store, then compare with the previous run on this machine (none yet: exit 2, fine)
bench: $(VENV)/.installed-dev
	$(BIN)/harness bench run --store $(STORE)
	$(BIN)/harness bench compare --store $(STORE) || [ $$? -eq 2 ]

# one table for a short GPU lease (pack against alone, determinism, speed by pack size, the beta = 1 row);
# on a CPU: make gpu-check GPU_CHECK_ARGS=--tiny
gpu-check: $(VENV)/.installed
	$(BIN)/python scripts/gpu_check.py $(GPU_CHECK_ARGS)

clean:
	rm -rf $(VENV) runs reports .pytest_cache .benchmarks
