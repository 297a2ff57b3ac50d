#!/usr/bin/env python
"""How separable some synthesizers are under the statistics system's whole-clip statistics.

    python scripts/separability.py --config configs/demo_hard.yaml \\
        --synthesizers espeak-ng/en-us/m3,espeak-ng/en-us/m3-slow [--splits train,dev] [--out FILE]

Reads the clean clips of the named synthesizers (the protocols' model_name) from the config's protocols (the chosen splits, default
all), computes the groups of ``stats.features`` for each (override with e.g.
``"stats.features=[mfcc,prosody,spectrum,duration]"``), and prints the k-fold accuracy of a
standardised logistic regression at a few strengths against chance, and the statistics that differ
most (d′ for two synthesizers). A diagnostic: nothing is trained or written into the experiment.
"""

import sys
from pathlib import Path

try:
    import pandas as pd

    from sourcetracing.cli import ListOption, run, step_parser
    from sourcetracing.errors import DataError
except ModuleNotFoundError as err:
    sys.exit(
        f"error: {err.name} is not importable from {sys.executable}; run `make install` and use "
        ".venv/bin/python (or ./run.sh, which finds it)"
    )


def body(cfg, args) -> int:
    from sourcetracing.data.protocols import prepare_splits
    from sourcetracing.separability import separability
    from sourcetracing.systems.mfcc import mfcc_jobs, split_features
    from sourcetracing.systems.stats import stats_settings
    from sourcetracing.systems.utterance_features import statistic_names

    raw, _ = prepare_splits(cfg)
    splits = args.splits or list(raw)
    unknown_splits = sorted(set(splits) - set(raw))
    if unknown_splits:
        raise DataError(f"no split {unknown_splits} in the protocols (there are {sorted(raw)})")
    rows = pd.concat([raw[s] for s in splits], ignore_index=True)
    rows = rows[rows["model_name"].isin(args.synthesizers)].reset_index(drop=True)
    missing = [s for s in args.synthesizers if s not in set(rows["model_name"])]
    if missing:
        raise DataError(f"no clips of {missing} in the {'/'.join(splits)} split(s)")
    settings = stats_settings(cfg)
    x, kept, bad = split_features(rows, cfg.data.root, settings, mfcc_jobs(cfg, args.jobs))
    if len(bad):
        print(f"{len(bad)} unusable clip(s) left out (first: {bad['path'].iloc[0]}: {bad['reason'].iloc[0]})")
    names = statistic_names(settings["sample_rate"], settings["groups"], settings["n_mfcc"])
    report = separability(x, kept["model_name"].tolist(), names, n_folds=args.folds, top=args.top)
    text = (
        f"Statistics groups {settings['groups']} ({len(names)} values), clean clips of the "
        f"{'/'.join(splits)} split(s).\n\n" + report.to_markdown()
    )
    print(text, end="")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"written to {args.out}")
    return 0


def main(argv=None) -> int:
    parser = step_parser("separability.py", __doc__)
    parser.add_argument(
        "--synthesizers",
        action=ListOption,
        required=True,
        metavar="NAME",
        help="two or more synthesizers (the protocols' model_name), comma-separated",
    )
    parser.add_argument(
        "--splits",
        action=ListOption,
        default=None,
        metavar="SPLIT",
        help="protocol splits to take clips from, comma-separated (default: all)",
    )
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    parser.add_argument("--top", type=int, default=8, help="how many statistics to list (default 8)")
    parser.add_argument("--jobs", type=int, default=None, help="parallel audio workers (default: mfcc.jobs)")
    parser.add_argument("--out", type=Path, default=None, help="also write the report to this file")
    return run(parser, argv, body)


if __name__ == "__main__":
    sys.exit(main())
