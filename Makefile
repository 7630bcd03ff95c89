# `make demo` and `make test` bootstrap .venv themselves on a fresh clone.
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	  if command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then echo $$p; break; fi; done)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test replay eval contracts bench bench-mcp bench-parsing bench-tui seed clean

$(STAMP): requirements.txt requirements-dev.txt requirements-eval.txt pyproject.toml
	@test -n "$(PYTHON)" || { echo "error: Python 3.11+ is required (none found on PATH)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-dev.txt -r requirements-eval.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) demo_rich_agentic.py

test: $(STAMP)
	$(PY) -m pytest -q

replay: $(STAMP)
	$(PY) -m safety_governor replay scenarios

eval: $(STAMP)
	$(PY) -m safety_governor eval

contracts: $(STAMP)
	$(PY) -m safety_governor contracts

seed: $(STAMP)
	$(PY) load_to_elastic.py

bench: $(STAMP)
	$(PY) bench/bench_pipeline.py

bench-mcp: $(STAMP)
	$(PY) bench/bench_mcp.py

bench-parsing: $(STAMP)
	$(PY) bench/bench_parsing.py

bench-tui: $(STAMP)
	$(PY) bench/bench_tui.py

clean:
	rm -rf $(VENV) output/*.jsonl output/*.jsonl.* output/*.db*
