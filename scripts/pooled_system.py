#!/usr/bin/env python
"""The training-free pooled-embedding system (TADA-style): a frozen front end over the whole clip,
pooled over time, k-NN attribution and a k-NN OOD score, judged like every system.

    python scripts/pooled_system.py --config configs/mlaad_tada.yaml [pooled.k=auto] [--jobs N]
    python scripts/pooled_system.py --config X --if-enabled    # in a stage list: only with pooled.enabled

Needs no feature store and no training: it reads the protocols and the audio. Writes
<exp_dir>/pooled/outputs/ (pooled embeddings, k-NN vote log-probabilities and a predicted column),
then results/ and ood_step/ (the knn scorer alone, at the k chosen without dev or eval: pooled.k,
auto = a hold-out of known systems on train). Settings: the config's pooled section (frontend,
pooling, crop, k, ood_k, augment; see sourcetracing.systems.pooled). Re-export and re-scoring
(export_outputs.py / ood_detector.py --system pooled) need pooled.enabled=true.
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
    if args.if_enabled and not cfg.pooled.enabled:
        print("pooled system: skipped (pooled.enabled is false)")
        return 0
    from sourcetracing.judge import judge_system
    from sourcetracing.systems.pooled import SYSTEM, export_pooled, pooled_config

    export_pooled(cfg, args.jobs)
    judge_system(pooled_config(cfg), SYSTEM)
    return 0


def main(argv=None) -> int:
    parser = step_parser("pooled_system.py", __doc__)
    parser.add_argument(
        "--jobs", type=int, default=None, help="audio reader threads (default: features.num_workers)"
    )
    parser.add_argument(
        "--if-enabled", action="store_true", help="do nothing unless pooled.enabled is true (for run.sh)"
    )
    return run(parser, argv, body)


if __name__ == "__main__":
    sys.exit(main())
