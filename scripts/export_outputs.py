#!/usr/bin/env python
"""Export a system's outputs again (the steps that make a system do it once at their end).

    python scripts/export_outputs.py --config configs/demo.yaml [--system S] [--checkpoint PATH] [--jobs N]

S (default: model.name) is routed to its own exporter: the classifier (model.name) and ge2e run
their checkpoint (--checkpoint: another one than best.pt), mfcc, plain_mfcc (with mfcc.plain) and
stats (and each name in stats.variants) recompute their statistics and refit, fusion refits on
dev. Any other name is refused with the reason. Writes <exp_dir>/<S>/outputs/ (the file contract every judging step reads).
"""

import sys
from pathlib import Path

try:
    from sourcetracing.cli import run, step_parser
except ModuleNotFoundError as err:
    sys.exit(
        f"error: {err.name} is not importable from {sys.executable}; run `make install` and use "
        ".venv/bin/python (or ./run.sh, which finds it)"
    )


def body(cfg, args) -> int:
    from sourcetracing.systems.handle import export_system

    export_system(cfg, args.system or cfg.model.name, checkpoint=args.checkpoint, n_jobs=args.jobs)
    return 0


def main(argv=None) -> int:
    parser = step_parser("export_outputs.py", __doc__)
    parser.add_argument(
        "--system",
        default=None,
        help="trained system to export: its folder under exp_dir (default: model.name)",
    )
    parser.add_argument(
        "--checkpoint", type=Path, default=None, help="trained systems only (default: the system's best.pt)"
    )
    parser.add_argument("--jobs", type=int, default=None, help="statistics systems: parallel audio workers")
    return run(parser, argv, body)


if __name__ == "__main__":
    sys.exit(main())
