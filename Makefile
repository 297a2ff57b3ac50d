# Two commands do all the set-up on a fresh machine:  make demo   and   make test
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_CONFIG ?= configs/demo.yaml
DEMO_DATA ?= data/demo
DEMO_EXP ?= exp/demo

.PHONY: install test test-fast lint demo demo-seeds demo-hard demo-hard-seeds demo-hard-rotations demo-corpus clean-demo benchmarks gpu-check robustness-demo enrolment-demo

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

# The whole pipeline on the offline demo corpus, stage by stage (run.sh holds the one stage list):
# corpus -> features -> AASIST -> known-class metrics -> OOD -> GE2E -> MFCC reference -> statistics system
# -> fusion -> maps -> summary -> trace.
demo: install
	PYTHON=$(PY) ./run.sh --config $(DEMO_CONFIG) --corpus $(DEMO_DATA) -- exp_dir=$(DEMO_EXP)
	@echo
	@echo "Results: $(DEMO_EXP)/summary.md (every system and scorer); per system ($(DEMO_EXP)/aasist, ge2e, mfcc, stats, fusion):"
	@echo "  outputs/ (exported once), results/ (known-class metrics), ood_step/ (OOD reports, scores, ROC/DET),"
	@echo "  embeddings/embedding_map.png; traced clips in $(DEMO_EXP)/trace/"

# The training and judging stages for three seeds, then mean ± sd of every number.
SEEDS ?= 0 1 2
demo-seeds: install
	PYTHON=$(PY) ./run.sh --config $(DEMO_CONFIG) --corpus $(DEMO_DATA) --stop-stage 0
	for s in $(SEEDS); do PYTHON=$(PY) ./run.sh --config $(DEMO_CONFIG) --stage 1 --stop-stage 10 -- seed=$$s exp_dir=$(DEMO_EXP)_s$$s || exit 1; done
	$(PY) scripts/summarize_results.py --exp $(foreach s,$(SEEDS),$(DEMO_EXP)_s$(s)) --out $(DEMO_EXP)_seeds.md

# The hard demo: near-twin synthesizers and channel variation (the corpus takes ~4-8 min to build).
HARD_CONFIG ?= configs/demo_hard.yaml
HARD_DATA ?= data/demo_hard
HARD_EXP ?= exp/demo_hard
demo-hard: install
	PYTHON=$(PY) ./run.sh --config $(HARD_CONFIG) --corpus $(HARD_DATA) --corpus-args "--plan hard"
	@echo
	@echo "Results: $(HARD_EXP)/summary.md (every system and scorer, the near-twin table)"

demo-hard-seeds: install
	PYTHON=$(PY) ./run.sh --config $(HARD_CONFIG) --corpus $(HARD_DATA) --corpus-args "--plan hard" --stop-stage 0
	for s in $(SEEDS); do PYTHON=$(PY) ./run.sh --config $(HARD_CONFIG) --stage 1 --stop-stage 10 -- seed=$$s exp_dir=$(HARD_EXP)_s$$s || exit 1; done
	$(PY) scripts/summarize_results.py --exp $(foreach s,$(SEEDS),$(HARD_EXP)_s$(s)) --twins $(HARD_DATA)/corpus_summary.csv --out $(HARD_EXP)_seeds.md

# After `make demo`: the demo's robustness card (stage 12), then the same pipeline trained with the
# codec augmentation version in $(DEMO_EXP)_codec, its card, and the two cards side by side
# (delta = codec-trained - baseline; the MFCC reference, trained without augmentation, is the control).
# The two experiments share one features folder: the condition stores of dev/eval do not depend on
# the training augmentation, so the second card reuses them (the clean stores differ by their hash).
CODEC_OVERRIDES ?= exp_dir=$(DEMO_EXP)_codec features.dir=$(DEMO_EXP)/features \
	'augment.versions=[original,reverb,noise,music,speech,codec]'
robustness-demo: install
	PYTHON=$(PY) ./run.sh --config $(DEMO_CONFIG) --stage 12 --stop-stage 12 -- exp_dir=$(DEMO_EXP)
	PYTHON=$(PY) ./run.sh --config $(DEMO_CONFIG) --stage 1 --stop-stage 7 -- $(CODEC_OVERRIDES)
	PYTHON=$(PY) ./run.sh --config $(DEMO_CONFIG) --stage 12 --stop-stage 12 -- $(CODEC_OVERRIDES)
	$(PY) scripts/robustness.py --compare $(DEMO_EXP) $(DEMO_EXP)_codec | tee $(DEMO_EXP)_codec/robustness/compare.txt

# After `make demo` (or demo-seeds with DEMO_EXP=exp/demo_s0): enrol each dev-unseen system from
# 1, 3, 5, 10 of its dev clips in turn, from the exported outputs (no model runs, no retraining).
enrolment-demo: install
	$(PY) scripts/enroll.py --config $(DEMO_CONFIG) --measure exp_dir=$(DEMO_EXP)

clean-demo:
	rm -rf $(DEMO_DATA) $(DEMO_EXP) $(DEMO_EXP)_codec

benchmarks: install
	$(PY) scripts/benchmark.py extract
	$(PY) scripts/benchmark.py train
	$(PY) scripts/benchmark.py ood
	$(PY) scripts/benchmark.py train-io
	$(PY) scripts/benchmark.py ge2e-loss

# On a GPU machine, in under 10 minutes: the CUDA tests, then the extraction and training benchmarks
# on the GPU; one combined table in exp/gpu_check/gpu_check.md beside the raw logs. Without CUDA it
# reports that and exits 0.
gpu-check: install
	PYTHON=$(PY) scripts/gpu_check.sh --out exp/gpu_check

# Protocol rotations of the hard demo: ROTATIONS seeded partitions of its systems into known /
# dev-unseen / eval-unseen (scripts/rotate_protocols.py), stages 1-8 and 10 on each, then one table of
# mean ± sd over the rotations (the dev-chosen system against the plain MFCC 5-NN reference).
ROTATIONS ?= 5
ROTATION_SEED ?= 0
ROT_DIR ?= $(HARD_DATA)/rotations
# every system the toolkit offers offline takes part (and may be chosen on dev): the hybrid (on the
# statistics, anchored on their LDA, proxy-anchor loss) and the pooled-embedding system besides the
# demo config's systems; then each rotation's robustness card (level -20 dB, MP3 128 kbit/s) of the
# systems that run on audio
ROT_OVERRIDES ?= hybrid.enabled=true hybrid.loss=proxy_anchor hybrid.inputs=stats hybrid.anchor=lda pooled.enabled=true
ROT_ROBUSTNESS ?= robustness.conditions=[clean,level_-20db,mp3_128k]
demo-hard-rotations: install
	PYTHON=$(PY) ./run.sh --config $(HARD_CONFIG) --corpus $(HARD_DATA) --corpus-args "--plan hard" --stop-stage 0
	$(PY) scripts/rotate_protocols.py --protocols $(HARD_DATA)/protocols --families $(HARD_DATA)/corpus_summary.csv \
		--out $(ROT_DIR) --rotations $(ROTATIONS) --seed $(ROTATION_SEED)
	for r in $$(seq 0 $$(($(ROTATIONS) - 1))); do \
		PYTHON=$(PY) ./run.sh --config $(HARD_CONFIG) --stage 1 --stop-stage 8 -- data.protocols=$(ROT_DIR)/rot$$r exp_dir=$(HARD_EXP)_rot$$r $(ROT_OVERRIDES) || exit 1; \
		PYTHON=$(PY) ./run.sh --config $(HARD_CONFIG) --stage 10 --stop-stage 10 -- data.protocols=$(ROT_DIR)/rot$$r exp_dir=$(HARD_EXP)_rot$$r $(ROT_OVERRIDES) || exit 1; \
		PYTHON=$(PY) ./run.sh --config $(HARD_CONFIG) --stage 12 --stop-stage 12 -- data.protocols=$(ROT_DIR)/rot$$r exp_dir=$(HARD_EXP)_rot$$r $(ROT_OVERRIDES) $(ROT_ROBUSTNESS) || exit 1; \
	done
	$(PY) scripts/summarize_results.py --exp $$(for r in $$(seq 0 $$(($(ROTATIONS) - 1))); do echo $(HARD_EXP)_rot$$r; done) --out $(HARD_EXP)_rotations.md
