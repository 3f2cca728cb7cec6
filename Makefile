# The README's two commands: `make demo` and `make test`. Everything installs into .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STORE ?= runs/harness.duckdb

.PHONY: demo demo-all test test-slow lint bench canary canary-baseline reproduce gpu-check data clean plugin-example

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
	$(BIN)/ruff check harness tests examples

# the example plugin (examples/laplace-prior), as a user installs it: its tests, a sweep that mixes its prior with
# a built-in one, and the figures of both; it is uninstalled again, so the harness's own tests see no plugin
PLUGIN_STORE := runs/plugin-example/harness.duckdb
plugin-example: $(VENV)/.installed-dev
	rm -rf runs/plugin-example
	$(BIN)/pip install -q --no-build-isolation ./examples/laplace-prior
	@trap '$(BIN)/pip uninstall -q -y harness-laplace' EXIT; set -e; \
	$(BIN)/harness plugins; \
	$(BIN)/python -m pytest -q -p no:cacheprovider examples/laplace-prior/tests; \
	$(BIN)/harness sweep run examples/laplace-prior/sweep.toml --store $(PLUGIN_STORE); \
	$(BIN)/harness report figures --no-job-images --store $(PLUGIN_STORE) --out runs/plugin-example/reports; \
	$(BIN)/python scripts/check_plugin_example.py $(PLUGIN_STORE) runs/plugin-example/reports

# run the suites into the store, then compare with the previous run on this machine (none yet: exit 2, fine)
bench: $(VENV)/.installed-dev
	$(BIN)/harness bench run --store $(STORE)
	$(BIN)/harness bench compare --store $(STORE) || [ $$? -eq 2 ]

# the science canary (sweeps/canary.toml, about 2 minutes on 2 cores): train it into a fresh store and compare it
# with the committed baseline; exit 1 when a result moved beyond seed noise (docs/claims.md).
# - One thread per worker (--threads 1, which harness.workers also chooses for these small packs; one worker per
#   core): the thread count changes the order of float32 sums, and after 50 steps that moves a job's ELBO by up
#   to 2% and its Hoyer score by up to 0.01 (measured: 1 against 2 threads); pinned, a rerun on the same kind of
#   CPU gives the baseline's bits, however many workers run beside each other.
# - The values in nats may move by 5% (reg 10%) before they count: a quarter to a half of the canary's seed
#   noise (its ELBO scatters by 9% between seeds), twice the largest drift that arithmetic alone caused.
# - Seconds are left out: the baseline was timed on another machine (`make bench` compares speed on one).
CANARY := runs/canary
CANARY_RUN := $(BIN)/harness sweep run sweeps/canary.toml --store $(CANARY)/harness.duckdb --device cpu --threads 1
CANARY_TOLERANCES := --tolerance elbo=5% --tolerance recon=5% --tolerance kl=5% --tolerance loss=5% --tolerance reg=10%
canary: data
	rm -rf $(CANARY)
	$(CANARY_RUN)
	$(BIN)/harness report compare sweeps/canary-baseline.csv $(CANARY)/harness.duckdb $(CANARY_TOLERANCES) \
	  --skip seconds_per_model_epoch --changed --out $(CANARY)/compare.csv --figure $(CANARY)/compare.png || { \
	  echo "the canary moved or could not be compared (see above and $(CANARY)/compare.csv); a change meant to move the"\
	    "numbers bumps harness/numerics.py and runs make canary-baseline (docs/claims.md)" >&2; exit 1; }

# the reproduction of every claim a laptop can run (sweeps/repro/ and its diagnoses; resumes where it stopped):
# trains, evaluates, and writes the figures, claims, budget diagnoses and the rotation table into
# docs/reproduction/ with a CSV of the runs. This release's run: about 3 hours of sweeps on 2 cores that were
# busy with other work too (docs/reproduction/README.md has each sweep's time).
REPRO := runs/repro/harness.duckdb
reproduce: data
	$(BIN)/harness data fetch mnist
	for sweep in clustering rotated_mnist sparsity independence diagnosis/clustering_beta diagnosis/rotated_mnist_40; do \
	  $(BIN)/harness sweep run sweeps/repro/$$sweep.toml --store $(REPRO) || exit 1; done
	$(BIN)/harness sweep run sweeps/canary.toml --store $(REPRO)  # the sparsity claims at a smaller budget
	$(BIN)/harness sweep run sweeps/demo/independence.toml --store $(REPRO)  # and the independence claims
	$(BIN)/harness eval --metric tsne sweeps/repro/rotated_mnist.toml --store $(REPRO)
	$(BIN)/harness eval --metric tsne sweeps/repro/diagnosis/rotated_mnist_40.toml --store $(REPRO)
	$(BIN)/harness eval --metric class_separation sweeps/repro/clustering.toml --store $(REPRO)
	$(BIN)/harness report figures --store $(REPRO) --out docs/reproduction --no-job-images
	# a few MB to commit: PNG and CSV only (the PDFs go, and their links), the two density grids gzipped
	rm -f docs/reproduction/*.pdf
	sed -i -e 's| *<a href="[^"]*\.pdf">PDF</a>||g' -e 's|\(clustering_density-[a-z_]*\.csv\)"|\1.gz"|g' docs/reproduction/index.html
	gzip -f docs/reproduction/clustering_density-*.csv
	$(BIN)/harness report export --store $(REPRO) --out docs/reproduction/runs.csv
	COLUMNS=200 $(BIN)/harness report claims --store $(REPRO) > docs/reproduction/claims.txt || [ $$? -eq 1 ]
	$(BIN)/python -m harness.report.budget $(REPRO) docs/reproduction sweeps/repro/diagnosis/diagnoses.json
	$(BIN)/python -m harness.report.rotation $(REPRO) repro_rotated_mnist docs/reproduction/rotation.csv

# after an intended change of the numbers (a numerics bump) or of sweeps/canary.toml: a new baseline
canary-baseline: data
	rm -rf $(CANARY)
	$(CANARY_RUN)
	$(BIN)/harness report export --sweep canary --store $(CANARY)/harness.duckdb --out sweeps/canary-baseline.csv

# one table for a short GPU lease (pack against alone, determinism, speed by pack size, the beta = 1 row);
# on a CPU: make gpu-check GPU_CHECK_ARGS=--tiny
gpu-check: $(VENV)/.installed
	$(BIN)/python scripts/gpu_check.py $(GPU_CHECK_ARGS)

clean:
	rm -rf $(VENV) runs reports .pytest_cache .benchmarks
