#!/usr/bin/env python
"""Evaluate per-clip score files against a key: the toolkit's own reports for anyone's detector.

    python scripts/evaluate_scores.py --scores my_dev.tsv my_eval.tsv --key exp/mlaad/key.tsv [--out DIR]
                                      [--name NAME] [--prior 0.5] [--default SCORE] [--allow-missing]

A score file is a TSV with a header: clip_id, one or more score columns (higher = more likely from
an unseen system) and optionally predicted (the known system the clip is attributed to). The key
comes from scripts/write_key.py. Thresholds (dev EER) and calibrations are fitted on dev and
applied to eval. Results under DIR/NAME/: outputs/, ood_step/ (ood_summary.csv, OOD_eval_results.txt,
thresholds.json, ROC/DET), results/ (known-class metrics, with predicted), posteriors/ (llr and
P(unseen) at --prior per clip, detection costs). DIR defaults to the score file's folder, NAME to
its name without extension.
"""

import argparse
import sys
from pathlib import Path

try:
    from sourcetracing import score_files
    from sourcetracing.cli import ListOption, report_error
    from sourcetracing.errors import SourceTracingError
    from sourcetracing.judge import print_known, print_ood
except ModuleNotFoundError as err:
    sys.exit(
        f"error: {err.name} is not importable from {sys.executable}; run `make install` and use "
        ".venv/bin/python (or ./run.sh, which finds it)"
    )


def main(argv: list[str] | None = None) -> int:
    """Every input problem is one line and an exit code."""
    parser = argparse.ArgumentParser(
        prog="evaluate_scores.py",
        description=score_files.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--scores",
        action=ListOption,
        item=Path,
        required=True,
        metavar="TSV",
        help="score TSV file(s), comma-separated, read as one",
    )
    parser.add_argument("--key", required=True, type=Path, help="key TSV (scripts/write_key.py)")
    parser.add_argument(
        "--out", type=Path, default=None, help="results folder (default: the first score file's)"
    )
    parser.add_argument(
        "--name",
        default=None,
        help="name of the evaluated detector in the results (default: score file stem)",
    )
    parser.add_argument(
        "--prior", type=float, default=0.5, help="expected fraction of unseen clips (default 0.5)"
    )
    parser.add_argument(
        "--default", default="auto", help="score column of OOD_eval_results.txt (default: lowest dev EER)"
    )
    parser.add_argument(
        "--allow-missing", action="store_true", help="evaluate the clips in both files when they differ"
    )
    args = parser.parse_args(argv)
    try:
        report = score_files.evaluate_scores(
            args.scores,
            args.key,
            args.out or args.scores[0].parent,
            args.name,
            args.prior,
            args.default,
            args.allow_missing,
        )
    except SourceTracingError as err:
        return report_error(err)
    what = {
        "not_in_key": "scored clip(s) not in the key",
        "not_scored": "dev/eval clip(s) of the key without a score",
        "train_ignored": "train clip(s) ignored",
    }
    left = [f"{report[k]} {text}" for k, text in what.items() if report[k]]
    if left:
        print("note: left out " + ", ".join(left))
    if report["known_class"]:
        print_known(report["system"], report["known_class"])
    print_ood(report["system"], report["summary"], report["default"])
    print(f"results in {report['folder']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
