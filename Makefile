# The README's two commands: `make search` (the main job) and `make test`. Each sets itself up.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: search test train bench lint clean

# Create the virtualenv if missing and install the project (editable) with its test tools.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# The default search: the generalise space at laptop scale on an embedded local Ray. At the end
# it writes EXPERIMENT_DIR/report (plots, trials.csv, report.md) and prints where it is. Each run
# replaces the bundle of the previous one (--force), as a rerun of `make search` means to.
search: $(STAMP)
	$(VENV)/bin/countnet search --space search_spaces/generalise.yaml --export bundles/best --force

# Two pytest-xdist workers, one per core; a file's tests stay together on one worker (its module
# fixtures run once). tests/conftest.py gives each worker's torch one thread.
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=15

# One training run of the default config (figures: docs/benchmarks.md).
train: $(STAMP)
	$(VENV)/bin/countnet train --out runs/default

# `make bench BENCH_ARGS=--quick` runs the 2-minute sizes.
bench: $(STAMP)
	$(PY) bench/run_all.py $(BENCH_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf runs experiments bundles bench/results .pytest_cache
