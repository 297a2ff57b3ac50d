#!/usr/bin/env python
"""Stage 5: train the GE2E embedding baseline on the train split, export its embeddings, evaluate them.

python train_ge2e.py --config configs/config_ge2e.yaml           # the original's GE2E recipe
python train_ge2e.py --config configs/demo.yaml [--resume | --force] [--no-eval] [ge2e.epochs=5 ...]
torchrun --nproc_per_node=2 train_ge2e.py --config configs/demo.yaml
"""

import sys

try:
    from sourcetracing.training.ge2e import main
except ModuleNotFoundError as err:
    sys.exit(
        f"error: {err.name} is not importable from {sys.executable}; run `make install` and use "
        ".venv/bin/python (or ./run.sh, which finds it)"
    )

if __name__ == "__main__":
    sys.exit(main())
