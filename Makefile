# Two commands do all the set-up on a fresh machine:  make demo   and   make test
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_CONFIG ?= configs/demo.yaml
DEMO_DATA ?= data/demo
DEMO_EXP ?= exp/demo

.PHONY: install test test-fast lint demo demo-corpus clean-demo benchmarks

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

# The whole main job on the offline demo corpus: corpus -> data check -> features -> AASIST ->
# known-class metrics -> OOD detection -> tracing a few clips -> reference -> GE2E -> embeddings.
demo: demo-corpus
	$(PY) scripts/preprocess_dataset.py --config $(DEMO_CONFIG) --check
	$(PY) scripts/preprocess_dataset.py --config $(DEMO_CONFIG)
	$(PY) train_refd.py --config $(DEMO_CONFIG)
	$(PY) scripts/get_classification_metrics.py --config $(DEMO_CONFIG)
	$(PY) scripts/ood_detector.py --config $(DEMO_CONFIG)
	$(PY) scripts/trace.py --exp $(DEMO_EXP) $(DEMO_DATA)/MLAAD_v5/fake/*/*/*_eval_0000.wav
	$(PY) scripts/reference_baseline.py --config $(DEMO_CONFIG)
	$(PY) train_ge2e.py --config $(DEMO_CONFIG)
	$(PY) scripts/generate_embeddings.py --config $(DEMO_CONFIG) --model ge2e
	$(PY) scripts/plot_embeddings.py --embeddings $(DEMO_EXP)/ge2e/embeddings
	$(PY) scripts/generate_embeddings.py --config $(DEMO_CONFIG) --model refd
	$(PY) scripts/plot_embeddings.py --embeddings $(DEMO_EXP)/refd/embeddings
	$(PY) scripts/summarize_results.py --config $(DEMO_CONFIG)
	@echo
	@echo "Results: exp/demo/summary.md (all systems), exp/demo/results/ (known-class metrics),"
	@echo "  exp/demo/ood_step/ (OOD reports, scores, ROC/DET), exp/demo/trace_results.csv,"
	@echo "  exp/demo/ge2e/, exp/demo/reference/, exp/demo/*/embeddings/embedding_map.png"

clean-demo:
	rm -rf $(DEMO_DATA) $(DEMO_EXP)

benchmarks: install
	$(PY) scripts/benchmark.py extract
	$(PY) scripts/benchmark.py ood
	$(PY) scripts/benchmark.py train-io
	$(PY) scripts/benchmark.py ge2e-loss
