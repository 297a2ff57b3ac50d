#!/usr/bin/env python
"""Stage 4: the OOD detector: every scorer (NSD with the right sign, MSP, MaxLogit, Energy, k-NN,
Mahalanobis, centroid) fitted on the train outputs, thresholds and calibrations on dev, report on eval.

    python scripts/ood_detector.py [--config configs/refd_mlaad.yaml] [--system aasist] [--scorers nsd,knn]
    python scripts/ood_detector.py --feature-extraction-step     # the original's command
                                                                 # (its --feature_extraction_step works too)

--feature-extraction-step (the original's flag: extract the model's hidden states and logits
first) re-exports the system's outputs before scoring, with the system's own exporter (as
scripts/export_outputs.py --system does; --checkpoint for the trained systems); without it the
step reads the outputs the system's step exported. Writes <exp_dir>/<system>/ood_step/.
"""

import sys
from pathlib import Path

try:
    from sourcetracing.cli import ListOption, add_alias, run, step_parser
    from sourcetracing.judge import ood_step, print_ood
except ModuleNotFoundError as err:
    sys.exit(
        f"error: {err.name} is not importable from {sys.executable}; run `make install` and use "
        ".venv/bin/python (or ./run.sh, which finds it)"
    )


def body(cfg, args) -> int:
    from sourcetracing.errors import ConfigError
    from sourcetracing.layout import ExperimentLayout
    from sourcetracing.systems.handle import export_system, system_config

    system = args.system or cfg.model.name
    if args.feature_extraction_step or args.checkpoint:
        export_system(cfg, system, checkpoint=args.checkpoint)
    try:  # a statistics variant's or the plain reference's own settings
        own = system_config(cfg, system)
    except ConfigError:  # a system no step of this config makes (a user's own): the config's settings
        own = cfg
    summary = ood_step(own, system, args.scorers)
    print_ood(system, summary)
    print(f"OOD report written to {ExperimentLayout.of(cfg).system(system).ood}")
    return 0


def main(argv=None) -> int:
    parser = step_parser("ood_detector.py", __doc__)
    parser.add_argument(
        "--system",
        default=None,
        help="trained system to score: its folder under exp_dir (default: model.name)",
    )
    parser.add_argument(
        "--scorers",
        action=ListOption,
        default=None,
        metavar="SCORER",
        help="OOD scorers to run, comma-separated: a subset of ood.scorers (default: all of them)",
    )
    parser.add_argument(
        "--feature-extraction-step",
        action="store_true",
        help="re-export the outputs from the checkpoint first (the original's --feature_extraction_step)",
    )
    add_alias(parser, "--feature_extraction_step", of="--feature-extraction-step")
    parser.add_argument(
        "--checkpoint", type=Path, default=None, help="export with this checkpoint first (default: best.pt)"
    )
    return run(parser, argv, body)


if __name__ == "__main__":
    sys.exit(main())
