#!/usr/bin/env python
"""Stage 2: train the classifier (AASIST, the original's recipe by default) and export its outputs.

python train_refd.py                                   # configs/refd_mlaad.yaml, as the original
python train_refd.py --config configs/demo.yaml [key.sub=value ...] [--resume | --force]
torchrun --nproc_per_node=2 train_refd.py --config configs/refd_mlaad.yaml   # DDP
"""

import sys

try:
    from sourcetracing.training.classifier import main
except ModuleNotFoundError as err:
    sys.exit(
        f"error: {err.name} is not importable from {sys.executable}; run `make install` and use "
        ".venv/bin/python (or ./run.sh, which finds it)"
    )

if __name__ == "__main__":
    sys.exit(main())
