# The two contract commands: `make demo` and `make test`. Each works alone on a fresh machine.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
# torch==2.13.0 is the CPU build; a user with CUDA installs their own torch into .venv first.
TORCH ?= torch==2.13.0

.PHONY: demo test venv dev clean

$(VENV)/.core: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.dev: $(VENV)/.core
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

venv: $(VENV)/.core
dev: $(VENV)/.dev

demo: $(VENV)/.core
	$(VENV)/bin/loopexpose demo --out demo-output

test: $(VENV)/.dev
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) demo-output build *.egg-info src/*.egg-info
