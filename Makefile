# Two commands do all the set-up on a fresh machine:
#   make run    builds .venv on first use, then runs the main job
#   make test   builds .venv on first use, then runs the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch first, pinned to the CPU build the machine carries, so that pip never
# resolves a newer torch (with GBs of CUDA wheels) for the project's range.
TORCH ?= torch==2.13.0

.PHONY: run test speed docs clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

run: $(BIN)/.installed
	$(BIN)/python benchmarks/oversquash.py $(ARGS)

speed: $(BIN)/.installed
	$(BIN)/python benchmarks/speed.py $(ARGS)

test: $(BIN)/.installed
	$(BIN)/python -m pytest $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
