#!/usr/bin/env python
"""The hybrid system: pooled frame features of the feature store and utterance statistics in one
gated network (part of stage 7 when hybrid.enabled is true), judged like every system.

    python scripts/hybrid_system.py --config configs/demo_hard.yaml [hybrid.loss=proxy_anchor] [--jobs N]

Needs the feature store (stage 1). Writes <exp_dir>/hybrid/{trained_models,outputs,results,ood_step}/.
Settings: the config's hybrid section (inputs, fusion, loss, outliers, ...; see
sourcetracing.systems.hybrid).
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
    from sourcetracing.systems.hybrid import export_hybrid, system_name

    export_hybrid(cfg, args.jobs)
    judge_system(cfg, system_name(cfg))
    return 0


def main(argv=None) -> int:
    parser = step_parser("hybrid_system.py", __doc__)
    parser.add_argument("--jobs", type=int, default=None, help="parallel audio workers (default: stats.jobs)")
    return run(parser, argv, body)


if __name__ == "__main__":
    sys.exit(main())
