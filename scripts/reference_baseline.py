#!/usr/bin/env python
"""Stage 6: the MFCC reference system: utterance statistics + logistic regression, judged like every system.

    python scripts/reference_baseline.py [--config configs/demo.yaml] [--jobs N]

Writes <exp_dir>/mfcc/outputs/ (standardised statistics as embeddings, log-probabilities as
logits), then results/ and ood_step/ with every applicable scorer (k-NN cosine, Mahalanobis,
centroid, MSP, ...); ood.default: auto picks its best scorer on dev.
"""

import sys

from sourcetracing.cli import run, step_parser


def body(cfg, args) -> int:
    from sourcetracing.judge import judge_system
    from sourcetracing.systems.mfcc import SYSTEM, export_mfcc

    export_mfcc(cfg, args.jobs)
    judge_system(cfg, SYSTEM)
    return 0


def main(argv=None) -> int:
    parser = step_parser("reference_baseline.py", __doc__)
    parser.add_argument("--jobs", type=int, default=None, help="parallel audio workers (default: mfcc.jobs)")
    return run(parser, argv, body)


if __name__ == "__main__":
    sys.exit(main())
