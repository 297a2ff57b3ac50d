#!/usr/bin/env python
"""Reference baseline: MFCC mean/std statistics + logistic regression, same splits and metrics.

    python scripts/reference_baseline.py --config configs/demo.yaml

Writes <exp_dir>/reference/ (known-class reports and an OOD report with MSP and 5-NN scorers).
"""

from __future__ import annotations

import sys

from sourcetracing.reference import main

if __name__ == "__main__":
    sys.exit(main())
