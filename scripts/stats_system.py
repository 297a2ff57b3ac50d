#!/usr/bin/env python
"""Stage 7: the utterance-statistics system (MFCC, prosody and long-term spectrum of the whole clip,
a discriminant projection learned on the known systems), judged like every system.

    python scripts/stats_system.py [--config configs/demo_hard.yaml] [--jobs N]

Writes <exp_dir>/stats/outputs/ (projected statistics as embeddings, logistic-regression
log-probabilities as logits), then results/ and ood_step/; the same for each system named in
stats.variants (e.g. <exp_dir>/stats_duration/); with hybrid.enabled, also the hybrid system
(scripts/hybrid_system.py; it needs the feature store of stage 1).
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
    from sourcetracing.systems.stats import export_stats_systems, stats_systems

    export_stats_systems(cfg, args.jobs)
    for name, system_cfg in stats_systems(cfg).items():
        judge_system(system_cfg, name)
    if cfg.hybrid.enabled:  # statistics and the store's frame features in one network
        from sourcetracing.systems.hybrid import export_hybrid, system_name

        export_hybrid(cfg, args.jobs)
        judge_system(cfg, system_name(cfg))
    return 0


def main(argv=None) -> int:
    parser = step_parser("stats_system.py", __doc__)
    parser.add_argument("--jobs", type=int, default=None, help="parallel audio workers (default: stats.jobs)")
    return run(parser, argv, body)


if __name__ == "__main__":
    sys.exit(main())
