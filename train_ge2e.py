#!/usr/bin/env python
"""Step 6: train the GE2E embedding baseline on the train split, then evaluate it.

python train_ge2e.py --config configs/demo.yaml [--resume] [--no-eval] [ge2e.epochs=5 ...]
torchrun --nproc_per_node=2 train_ge2e.py --config configs/demo.yaml
"""

from __future__ import annotations

import sys

from sourcetracing.ge2e.train import main

if __name__ == "__main__":
    sys.exit(main())
