# fentry: see README.md. `make demo` and `make test` are the two entry points.
#
# Variables (all optional):
#   PYTHON=/path/to/python3.X   interpreter for .venv (default: scripts/find-pythons --one)
#   PYTHONS="/p/py3.12 /p/py3.13"  interpreters for test/bench (default: scripts/find-pythons)
#   PYTEST_ARGS="-x -k kprobe"  extra pytest arguments for `make test`
#   BENCH_ARGS=...              extra arguments for bench/run.py in `make bench`
#   BENCH_JSON_DIR=DIR          where `make bench` writes its tables as JSON (default bench/results)
#   DEMO_ARGS=...               fentry options for `make demo`

VENV        := .venv
PYTHON      ?=
DEMO_ARGS   ?= -t function_graph -l 'shop:*'
DEMO_SCRIPT ?= examples/demo.py
PYTEST_ARGS ?=
BENCH_ARGS  ?=

export PYTHONS PYTEST_ARGS BENCH_ARGS BENCH_JSON_DIR

.PHONY: help demo test bench viewer clean

help:
	@echo "make demo    run fentry (function_graph) on the bundled example program"
	@echo "make test    the test suite on every installed Python >= 3.12"
	@echo "make bench   the benchmarks on every installed Python >= 3.12 (also as JSON, in bench/results)"
	@echo "make viewer  install fentry view's viewer (speedscope, npm) and chromium (apt, as root)"
	@echo "make clean   remove .venv, .venvs and build artifacts"

demo: $(VENV)/bin/fentry
	$(VENV)/bin/fentry run $(DEMO_ARGS) $(DEMO_SCRIPT)

# The main venv: (re)installed whenever the packaging or the C hot path changes.
$(VENV)/bin/fentry: pyproject.toml setup.py $(wildcard src/fentry/ctrampolines/*.[ch])
	@set -e; \
	if ! $(VENV)/bin/python -c '' 2>/dev/null; then \
	  py="$(PYTHON)"; [ -n "$$py" ] || py=$$(scripts/find-pythons --one); \
	  echo "creating $(VENV) with $$py"; \
	  rm -rf $(VENV); \
	  "$$py" -m venv $(VENV); \
	fi; \
	echo "installing fentry (editable) into $(VENV)"; \
	$(VENV)/bin/python -m pip install -q --disable-pip-version-check -e .
	@$(VENV)/bin/python -m compileall -q src >/dev/null 2>&1 || true
	@# pip -q hides the build's output: this line says whether the C hot path was built
	@$(VENV)/bin/fentry --version
	@touch $@

test:
	scripts/test-all

viewer:
	scripts/install-viewer

bench:
	scripts/bench-all

clean:
	rm -rf $(VENV) .venvs build dist src/*.egg-info *.egg-info .pytest_cache .hypothesis .mypy_cache .ruff_cache viewer/node_modules
	find . -path ./.git -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
