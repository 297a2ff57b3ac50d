#!/usr/bin/env python
"""Step 2: train the AASIST classifier on the extracted features.

python train_refd.py --config configs/demo.yaml [key.sub=value ...] [--resume]
torchrun --nproc_per_node=2 train_refd.py --config configs/refd_mlaad.yaml   # DDP
"""

from __future__ import annotations

import sys

from sourcetracing.training.refd import main

if __name__ == "__main__":
    sys.exit(main())
