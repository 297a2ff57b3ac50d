#!/usr/bin/env bash
# One command that checks and measures the CUDA paths on a GPU machine, in under 10 minutes:
#   1. the test suite's CUDA-marked tests (pytest -m cuda),
#   2. the extraction benchmark  (scripts/benchmark.py extract --device cuda),
#   3. the training benchmark    (scripts/benchmark.py train --device cuda),
# then one combined table of every step and performance target, printed and written to
# <out>/gpu_check.md beside the raw logs (tests.log, extract.log, train.log) and the benchmark
# reports (extract.md, train.md).
#
#   scripts/gpu_check.sh [--out DIR]        (default DIR: exp/gpu_check)
#
# Environment: PYTHON (default python3), GPU_CHECK_TESTS (test paths, default tests), and per-step
# time limits GPU_CHECK_TESTS_S, GPU_CHECK_EXTRACT_S, GPU_CHECK_TRAIN_S (seconds; 200, 240, 110).
# Without CUDA it runs the tests (all skipped), reports that CUDA is absent and exits 0. With CUDA
# the exit status is 1 when a step failed or timed out (the report is written either way).
set -u
OUT=
while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || { echo "error: --out needs a folder" >&2; exit 2; }
           mkdir -p "$2" && OUT=$(cd "$2" && pwd) || { echo "error: cannot create --out $2" >&2; exit 2; }
           shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
OUT=${OUT:-exp/gpu_check}
PYTHON=${PYTHON:-python3}
TESTS=${GPU_CHECK_TESTS:-tests}
mkdir -p "$OUT"
: > "$OUT/steps.tsv"
rm -f "$OUT/extract.md" "$OUT/train.md"
failed=0

# step NAME LOG LIMIT_S COMMAND...: run it with a time limit, log its output, record one line
step() {
  local name=$1 log=$2 limit=$3; shift 3
  echo "== $name (limit ${limit} s; log $OUT/$log)"
  local start=$SECONDS status summary rc
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$log" 2>&1
  rc=$?
  case $rc in
    0) status=passed; [[ $cuda == CUDA:* ]] || status="passed (all skipped: CUDA absent)" ;;
    124|137) status="timed out after ${limit} s"; failed=1 ;;
    *) status="failed (exit $rc)"; failed=1 ;;
  esac
  summary=$(grep -v '^\s*$' "$OUT/$log" | tail -n 1 | tr '\t|' '  ' | cut -c1-160)
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - start))" "$log" "$summary" >> "$OUT/steps.tsv"
  echo "   $status: $summary"
}

cuda=$("$PYTHON" -c "
import torch
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f'CUDA: {torch.cuda.device_count()} x {p.name} ({p.total_memory / 2**30:.0f} GiB), torch {torch.__version__}, CUDA {torch.version.cuda}')
else:
    print(f'CUDA absent (torch {torch.__version__} sees no CUDA device)')
" 2>&1 | tail -n 1)
echo "$cuda"
case $cuda in
  CUDA:*|"CUDA absent"*) ;;
  *) echo "error: $PYTHON cannot tell whether CUDA is present: $cuda" >&2; exit 2 ;;
esac

step "CUDA tests (pytest -m cuda)" tests.log "${GPU_CHECK_TESTS_S:-200}" \
  "$PYTHON" -m pytest -q -m cuda -rs -p no:cacheprovider $TESTS
if [[ $cuda == CUDA:* ]]; then
  step "extraction benchmark" extract.log "${GPU_CHECK_EXTRACT_S:-240}" \
    "$PYTHON" scripts/benchmark.py extract --device cuda --out "$OUT/extract.md"
  step "training benchmark" train.log "${GPU_CHECK_TRAIN_S:-110}" \
    "$PYTHON" scripts/benchmark.py train --device cuda --out "$OUT/train.md"
else
  for name in "extraction benchmark" "training benchmark"; do
    printf '%s\tskipped\t0\t-\t%s\n' "$name" "CUDA absent; CPU numbers: scripts/benchmark.py extract (or train) --device cpu" \
      >> "$OUT/steps.tsv"
  done
  failed=0  # nothing on this machine can fail a CUDA check
fi

"$PYTHON" -m sourcetracing_tools.bench.gpu_check "$OUT" --cuda "$cuda" || failed=1
exit $failed
