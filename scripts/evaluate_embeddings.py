#!/usr/bin/env python
"""Evaluate a trained GE2E model: nearest-centroid tracing of known systems + OOD detection.

    python scripts/evaluate_embeddings.py --config configs/demo.yaml [--checkpoint exp/demo/ge2e/best.pt]

Writes <exp_dir>/ge2e/results/ (classification reports, confusion matrices, metrics.json) and
<exp_dir>/ge2e/ood_step/ (the same files as the REFD OOD step, scorers `centroid` and `knn`).
"""

from __future__ import annotations

import sys

from sourcetracing.ge2e.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
