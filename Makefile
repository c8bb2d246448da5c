# attnviz: the two commands. `make run` serves the app, `make test` runs every test.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test test-fast lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): requirements.txt | $(PY)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -r requirements.txt
	touch $(STAMP)

# `make run RAY=HEAD:6379` runs the models on that Ray cluster (README: Scaling out).
run: $(STAMP)
	$(PY) -m streamlit run app.py $(if $(RAY),-- --ray $(RAY))

# Every test, slow ones included (what CI runs).
test: $(STAMP)
	$(PY) -m pytest -m "" $(PYTEST_ARGS)

# The quick loop for development: skips tests marked slow.
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# Style, the import-layer contract (pyproject.toml) and the type checker over the library.
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports
	$(PY) -m mypy

clean:
	rm -rf $(VENV) .pytest_cache
