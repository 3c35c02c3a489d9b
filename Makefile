# Two entry points do all the set-up on a fresh machine:
#   make quickstart   fine-tune the bundled Gemma 3 270M on the bundled dataset (no downloads)
#   make test         run the test suite
# Both create .venv and install the pinned stack (constraints.txt) on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: quickstart test test-slow

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@echo "Installing the pinned stack (torch, transformers, ...): a few minutes on first use."
	$(BIN)/pip install --progress-bar on -c constraints.txt -e '.[dev]'
	touch $(STAMP)

quickstart: $(STAMP)
	$(BIN)/gemmaforge quickstart

# Google's Gemma 4 chat template, for the template-equality tests (not committed: taken from
# the llama-cpp-python source package on PyPI; tools/official_templates.py).
TEMPLATES := .cache/templates/google-gemma-4-31B-it.jinja
$(TEMPLATES): tools/official_templates.py | $(STAMP)
	$(BIN)/python tools/official_templates.py

test: $(STAMP) $(TEMPLATES)
	$(BIN)/ruff check src tests tools
	$(BIN)/ruff format --check src tests tools
	$(BIN)/python -m pytest -m "not slow" -q --durations=15

# The real Gemma 3 270M end to end; the GGUF checks need `pip install -e '.[export-check]'`
# (llama-cpp-python builds from source) and skip without it.
test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow -q --durations=15
