# Two commands do all the set-up on a fresh machine:  make demo   and   make test
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_CONFIG ?= configs/demo.yaml
DEMO_DATA ?= data/demo

.PHONY: install test test-fast lint demo demo-corpus clean-demo

$(VENV)/.installed: requirements.txt requirements-demo.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt -r requirements-demo.txt
	$(PY) -m pip install -q --no-deps samtts==0.3.0
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q src tests

test-fast: install
	$(PY) -m pytest -q -m "not slow" src tests

lint: install
	$(VENV)/bin/ruff check src scripts tests *.py
	$(VENV)/bin/ruff format --check src scripts tests *.py

demo-corpus: install
	$(PY) scripts/make_demo_corpus.py --out $(DEMO_DATA)

demo: demo-corpus
	$(PY) scripts/preprocess_dataset.py --config $(DEMO_CONFIG) --check

clean-demo:
	rm -rf $(DEMO_DATA) exp/demo
