#!/usr/bin/env python
"""Stage 2: train the classifier (AASIST, the original's recipe by default) and export its outputs.

python train_refd.py                                   # configs/refd_mlaad.yaml, as the original
python train_refd.py --config configs/demo.yaml [key.sub=value ...] [--resume | --force]
torchrun --nproc_per_node=2 train_refd.py --config configs/refd_mlaad.yaml   # DDP
"""

import sys

try:
    from sourcetracing.cli import run, step_parser
    from sourcetracing.training import classifier
except ModuleNotFoundError as err:
    sys.exit(
        f"error: {err.name} is not importable from {sys.executable}; run `make install` and use "
        ".venv/bin/python (or ./run.sh, which finds it)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = step_parser("train_refd.py", classifier.__doc__)
    parser.add_argument("--resume", action="store_true", help="continue from trained_models/last.pt")
    parser.add_argument(
        "--force", action="store_true", help="start over, deleting an earlier run of this system"
    )
    parser.add_argument("--no-export", action="store_true", help="do not export the outputs after training")

    def body(cfg, args) -> int:
        classifier.train_classifier(cfg, args.resume, args.force, not args.no_export)
        return 0

    return run(parser, argv, body)


if __name__ == "__main__":
    sys.exit(main())
