# Each target creates .venv on first use: torch==2.13.0 first (the CPU build on disk), then qfx with its test extras.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.qfx-installed

.PHONY: test demo bench clean

$(STAMP): pyproject.toml setup.py passes/support/_histogram_kernel.c lowering/support/_quantize_kernel.c passes/swap_modules/_range_kernel.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile

demo: $(STAMP)
	$(VENV)/bin/qfx demo

bench: $(STAMP)
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis *.egg-info
