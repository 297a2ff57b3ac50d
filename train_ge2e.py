#!/usr/bin/env python
"""Stage 5: train the GE2E embedding baseline on the train split, export its embeddings, evaluate them.

python train_ge2e.py --config configs/config_ge2e.yaml           # the original's GE2E recipe
python train_ge2e.py --config configs/demo.yaml [--resume | --force] [--no-eval] [ge2e.epochs=5 ...]
torchrun --nproc_per_node=2 train_ge2e.py --config configs/demo.yaml
"""

import os
import sys

try:
    from sourcetracing.cli import run, step_parser
    from sourcetracing.judge import judge_system
    from sourcetracing.training import ge2e
except ModuleNotFoundError as err:
    sys.exit(
        f"error: {err.name} is not importable from {sys.executable}; run `make install` and use "
        ".venv/bin/python (or ./run.sh, which finds it)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = step_parser("train_ge2e.py", ge2e.__doc__)
    parser.add_argument("--resume", action="store_true", help="continue from ge2e/trained_models/last.pt")
    parser.add_argument("--force", action="store_true", help="start over, deleting an earlier GE2E run")
    parser.add_argument("--no-eval", action="store_true", help="skip the evaluation after training")

    def body(cfg, args) -> int:
        ge2e.train_ge2e(cfg, args.resume, args.force)
        if int(os.environ.get("RANK", "0")) == 0 and not args.no_eval:
            judge_system(cfg, ge2e.SYSTEM)
        return 0

    return run(parser, argv, body)


if __name__ == "__main__":
    sys.exit(main())
