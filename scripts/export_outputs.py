#!/usr/bin/env python
"""Export a trained system's outputs again (the training steps do it once at their end).

    python scripts/export_outputs.py --config configs/demo.yaml [--system aasist|ge2e|mfcc] [--checkpoint PATH]

Writes <exp_dir>/<system>/outputs/ (the file contract every judging step reads).
"""

import sys
from pathlib import Path

from sourcetracing.cli import run, step_parser


def body(cfg, args) -> int:
    from sourcetracing.systems.export import export_classifier, export_ge2e
    from sourcetracing.systems.mfcc import export_mfcc

    system = args.system or cfg.model.name
    if system == "mfcc":
        export_mfcc(cfg)
    elif system == "ge2e":
        export_ge2e(cfg, checkpoint=args.checkpoint)
    else:
        export_classifier(cfg, checkpoint=args.checkpoint)
    return 0


def main(argv=None) -> int:
    parser = step_parser("export_outputs.py", __doc__)
    parser.add_argument("--system", default=None, help="default: model.name")
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the system's best.pt")
    return run(parser, argv, body)


if __name__ == "__main__":
    sys.exit(main())
