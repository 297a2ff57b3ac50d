#!/usr/bin/env python
"""Step 5: OOD detector (NSD and other scorers): thresholds at the dev EER, report on eval.

    python scripts/ood_detector.py --config configs/demo.yaml [--checkpoint PATH] [--scorers nsd,knn]

Writes <exp_dir>/ood_step/ (OOD_eval_results.txt, ood_summary.csv, scores_{dev,eval}.tsv,
thresholds.json, ROC/DET plots, fitted scorers used by scripts/trace.py).
"""

from __future__ import annotations

import sys

from sourcetracing.ood.detector import main

if __name__ == "__main__":
    sys.exit(main())
