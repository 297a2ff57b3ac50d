#!/usr/bin/env python
"""Stage 6: the reference systems, judged like every system.

    python scripts/reference_baseline.py [--config configs/demo.yaml] [--jobs N]

- ``mfcc``: MFCC statistics + logistic regression. Writes <exp_dir>/mfcc/outputs/ (standardised
  statistics as embeddings, log-probabilities as logits), then results/ and ood_step/ with every
  applicable scorer (k-NN cosine, Mahalanobis, centroid, MSP, ...); ood.default: auto picks its
  best scorer on dev.
- ``plain_mfcc`` (``mfcc.plain: true``): the plain reference, with fixed settings and one scorer
  (30 MFCCs of the first 4 s, mean + std, standardised, cosine distance to the 5th-nearest train
  clip); every system is reported against it and no dev choice picks it.
"""

import sys

try:
    from sourcetracing.cli import run, step_parser
except ModuleNotFoundError as err:
    sys.exit(
        f"error: {err.name} is not importable from {sys.executable}; run `make install` and use "
        ".venv/bin/python (or ./run.sh, which finds it)"
    )


def body(cfg, args) -> int:
    from sourcetracing.judge import judge_system
    from sourcetracing.systems.mfcc import SYSTEM, export_mfcc
    from sourcetracing.systems.plain_reference import SYSTEM as PLAIN
    from sourcetracing.systems.plain_reference import export_plain, plain_config

    export_mfcc(cfg, args.jobs)
    judge_system(cfg, SYSTEM)
    if cfg.mfcc.plain:
        export_plain(cfg, args.jobs)
        judge_system(plain_config(cfg), PLAIN)
    return 0


def main(argv=None) -> int:
    parser = step_parser("reference_baseline.py", __doc__)
    parser.add_argument("--jobs", type=int, default=None, help="parallel audio workers (default: mfcc.jobs)")
    return run(parser, argv, body)


if __name__ == "__main__":
    sys.exit(main())
