#!/usr/bin/env python
"""Evaluate per-clip score files against a key: the toolkit's own reports for anyone's detector.

    python scripts/evaluate_scores.py --scores my_dev.tsv my_eval.tsv --key exp/mlaad/key.tsv [--out DIR]
                                      [--name NAME] [--prior 0.5] [--default SCORE] [--allow-missing]

A score file is a TSV with a header: clip_id, one or more score columns (higher = more likely from
an unseen system) and optionally predicted (the known system the clip is attributed to). The key
comes from scripts/write_key.py. Thresholds (dev EER) and calibrations are fitted on dev and
applied to eval. Results under DIR/NAME/: outputs/, ood_step/ (ood_summary.csv, OOD_eval_results.txt,
thresholds.json, ROC/DET), results/ (known-class metrics, with predicted), posteriors/ (llr and
P(unseen) at --prior per clip, detection costs). DIR defaults to the score file's folder, NAME to
its name without extension.
"""

import sys

try:
    from sourcetracing.score_files import main
except ModuleNotFoundError as err:
    sys.exit(
        f"error: {err.name} is not importable from {sys.executable}; run `make install` and use "
        ".venv/bin/python (or ./run.sh, which finds it)"
    )

if __name__ == "__main__":
    sys.exit(main())
