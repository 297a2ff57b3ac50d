#!/usr/bin/env python
"""Stage 3: known-system classification metrics (dev and eval) of a system, from its exported outputs.

    python scripts/get_classification_metrics.py [--config configs/refd_mlaad.yaml] [--system aasist]

Writes <exp_dir>/<system>/results/: dev_in_domain_results.txt, eval_in_domain_results.txt (the
original's files), metrics.json, confusion_{dev,eval}.{csv,png}. Only clean clips of the systems
seen in training are scored. No model runs here: the outputs were exported by the training step.
"""

import sys

try:
    from sourcetracing.cli import run, step_parser
    from sourcetracing.judge import known_class_metrics, print_known
except ModuleNotFoundError as err:
    sys.exit(
        f"error: {err.name} is not importable from {sys.executable}; run `make install` and use "
        ".venv/bin/python (or ./run.sh, which finds it)"
    )


def body(cfg, args) -> int:
    system = args.system or cfg.model.name
    results = known_class_metrics(cfg, system)
    print_known(system, results)
    return 0


def main(argv=None) -> int:
    parser = step_parser("get_classification_metrics.py", __doc__)
    parser.add_argument(
        "--system",
        default=None,
        help="trained system to judge: its folder under exp_dir (default: model.name)",
    )
    return run(parser, argv, body)


if __name__ == "__main__":
    sys.exit(main())
