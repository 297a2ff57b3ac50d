#!/usr/bin/env bash
# The pipeline's one stage list: every stage reads the same experiment YAML.
#
#   ./run.sh --config configs/demo.yaml --corpus data/demo            # the whole demo
#   ./run.sh --config configs/refd_mlaad.yaml --stage 1 --stop-stage 4  # features .. OOD step on MLAAD
#   ./run.sh --config configs/demo.yaml --stage 2 -- train.epochs=3     # overrides after --
#
# Training stages resume an earlier run of the same experiment (a finished one is kept and only
# re-exported); --force retrains from scratch instead.
#
# Stages (the README, the scripts' docstrings and `make demo` use the same numbers):
#   0  data: the offline demo corpus (--corpus DIR [--corpus-args "..."]) or the MLAAD downloads
#   1  data check + augmentation + features        scripts/preprocess_dataset.py
#   2  train the classifier (AASIST), export       train_refd.py
#   3  known-class metrics                         scripts/get_classification_metrics.py
#   4  OOD detection (every scorer)                scripts/ood_detector.py
#   5  GE2E: train, export, judge                  train_ge2e.py
#   6  the MFCC reference system: export, judge    scripts/reference_baseline.py
#   7  the utterance-statistics systems            scripts/stats_system.py (with hybrid.enabled also the
#      hybrid system), scripts/pooled_system.py (with pooled.enabled)
#   8  score fusion (fitted on dev), judge          scripts/fusion.py
#   9  embeddings and 2-D maps                     scripts/generate_embeddings.py, scripts/plot_embeddings.py
#  10  summary of every system and scorer          scripts/summarize_results.py
#  11  trace a sample of eval clips                scripts/trace.py --sample-eval N
#  12  robustness report card (codecs, channels,   scripts/robustness.py
#      short clips); after the default range: ask for it with --stop-stage 12
#
# Stage 9 maps every system whose exported outputs carry embeddings. Stage 11 traces a seeded
# sample of eval clips drawn from the protocols (--trace-sample N, default 20); --trace "FILES"
# traces those files or folders instead.
#
# The Python interpreter: --python PATH, else $PYTHON, else the project's .venv/bin/python (what
# `make install` makes) when it exists, else python3.
set -euo pipefail
cd "$(dirname "$0")"

PY=${PYTHON:-}
config=""
stage=0
stop_stage=11
corpus=""
corpus_args=""
trace_inputs=""
trace_sample=20
train_mode="--resume"
overrides=()
while [ $# -gt 0 ]; do
  case "$1" in
    --config) config=$2; shift 2 ;;
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --corpus) corpus=$2; shift 2 ;;
    --corpus-args) corpus_args=$2; shift 2 ;;
    --trace) trace_inputs=$2; shift 2 ;;
    --trace-sample) trace_sample=$2; shift 2 ;;
    --python) PY=$2; shift 2 ;;
    --force) train_mode="--force"; shift ;;
    --) shift; overrides=("$@"); break ;;
    -h|--help) sed -n '2,/^[^#]/{/^#/p}' "$0"; exit 0 ;;
    *) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$config" ] || { echo "run.sh: --config is required" >&2; exit 2; }
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
echo "run.sh: python $PY"
cfg=(--config "$config" "${overrides[@]}")

run_stage() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }
banner() { echo; echo "== stage $1: $2"; }

if run_stage 0; then
  if [ -n "$corpus" ]; then
    banner 0 "demo corpus in $corpus"
    # shellcheck disable=SC2086
    $PY scripts/make_demo_corpus.py --out "$corpus" $corpus_args
  else
    banner 0 "downloads (MLAAD v5, protocols, MUSAN, RIRS_NOISES)"
    $PY scripts/download_resources.py
  fi
fi
if run_stage 1; then
  banner 1 "data check, augmentation and features"
  $PY scripts/preprocess_dataset.py "${cfg[@]}" --check
  $PY scripts/preprocess_dataset.py "${cfg[@]}"
fi
if run_stage 2; then
  banner 2 "train the classifier and export its outputs"
  $PY train_refd.py "${cfg[@]}" "$train_mode"
fi
if run_stage 3; then
  banner 3 "known-class metrics"
  $PY scripts/get_classification_metrics.py "${cfg[@]}"
fi
if run_stage 4; then
  banner 4 "OOD detection"
  $PY scripts/ood_detector.py "${cfg[@]}"
fi
if run_stage 5; then
  banner 5 "GE2E: train, export, judge"
  $PY train_ge2e.py "${cfg[@]}" "$train_mode"
fi
if run_stage 6; then
  banner 6 "the MFCC reference system"
  $PY scripts/reference_baseline.py "${cfg[@]}"
fi
if run_stage 7; then
  banner 7 "the utterance-statistics system"
  $PY scripts/stats_system.py "${cfg[@]}"
  $PY scripts/pooled_system.py --if-enabled "${cfg[@]}"
fi
if run_stage 8; then
  banner 8 "score fusion"
  $PY scripts/fusion.py "${cfg[@]}"
fi
if run_stage 9; then
  banner 9 "embeddings and 2-D maps"
  $PY scripts/generate_embeddings.py "${cfg[@]}" --system all
  $PY scripts/plot_embeddings.py "${cfg[@]}" --system all
fi
if run_stage 10; then
  banner 10 "summary"
  $PY scripts/summarize_results.py "${cfg[@]}"
fi
if run_stage 11; then
  banner 11 "trace a few clips"
  if [ -n "$trace_inputs" ]; then
    # shellcheck disable=SC2086
    $PY scripts/trace.py "${cfg[@]}" $trace_inputs
  else
    $PY scripts/trace.py "${cfg[@]}" --sample-eval "$trace_sample"
  fi
fi
if run_stage 12; then
  banner 12 "robustness report card: every system under codecs, channels and short clips"
  $PY scripts/robustness.py "${cfg[@]}"
fi
