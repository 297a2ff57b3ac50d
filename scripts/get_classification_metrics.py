#!/usr/bin/env python
"""Step 3: known-system classification metrics (dev and eval) of the trained classifier.

python scripts/get_classification_metrics.py --config configs/demo.yaml [--checkpoint PATH]
"""

from __future__ import annotations

import sys

from sourcetracing.training.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
