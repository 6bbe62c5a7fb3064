# Two commands do all the set-up on a fresh machine:
#   make run    builds .venv on first use, then runs the main job
#   make test   builds .venv on first use, then runs the test suite
# and one more builds the documentation on the same .venv:
#   make docs   HTML in docs/_build/html (tutorials executed, warnings are errors), doctests
#               (then `.venv/bin/python docs/check_offline.py`: the HTML loads nothing
#               from the network; add `--browser chromium` to check it in a browser)
# and, on a GPU machine, with its own .venv-gpu (torch for CUDA, not the pin below):
#   make gpu    the GPU run: every CUDA figure as JSON under OUT (default results/gpu)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch first, pinned to the CPU build the machine carries, so that pip never
# resolves a newer torch (with GBs of CUDA wheels) for the project's range.
TORCH ?= torch==2.13.0
MOLSETS ?= molsets==0.3.1

.PHONY: run test speed molecules docs clean gpu

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test,study]"
	# MOSES' ZINC molecules as package data; --no-deps: its pinned dependencies
	# (pomegranate 0.12, fcd-torch, pandas, seaborn) do not build and are not needed
	$(BIN)/pip install --quiet --no-deps "$(MOLSETS)"
	touch $@

run: $(BIN)/.installed
	$(BIN)/python benchmarks/oversquash.py $(ARGS)

speed: $(BIN)/.installed
	$(BIN)/python benchmarks/speed.py $(ARGS)

molecules: $(BIN)/.installed
	$(BIN)/python benchmarks/molecules.py $(ARGS)

test: $(BIN)/.installed
	$(BIN)/python -m pytest $(ARGS)

# The docs extra (Sphinx, sphinx-gallery, the theme, myst-parser, and MathJax to ship with
# the HTML, which then reads right offline), with torch held at the pinned build.
# SPHINXOPTS adds options to both builds, e.g. SPHINXOPTS="-D key=value".
SPHINXOPTS ?=
DOCS_OUT := docs/_build
$(BIN)/.installed-docs: $(BIN)/.installed
	$(BIN)/pip install --quiet "$(TORCH)" -e ".[docs]"
	touch $@

docs: $(BIN)/.installed-docs
	$(BIN)/sphinx-build -W --keep-going -b html -d $(DOCS_OUT)/doctrees docs $(DOCS_OUT)/html $(SPHINXOPTS)
	$(BIN)/sphinx-build -W --keep-going -b doctest -d $(DOCS_OUT)/doctrees docs $(DOCS_OUT)/doctest $(SPHINXOPTS)

clean:
	rm -rf $(VENV) build *.egg-info docs/_build docs/auto_examples docs/gen_modules

# The GPU run on a GPU machine (its own .venv-gpu with torch for CUDA, not the CPU pin
# above): every figure as JSON under OUT, in 10 minutes. `make gpu ARGS=--dry-run`
# rehearses it on the CPU. See docs/gpu.md.
OUT ?= results/gpu
gpu:
	bash benchmarks/gpu.sh $(OUT) $(ARGS)
