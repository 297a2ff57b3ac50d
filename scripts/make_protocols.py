#!/usr/bin/env python
"""Build source-tracing protocols (v5 format) from any MLAAD release, or add a newer release's systems.

    python scripts/make_protocols.py --root data/MLAAD_v9 --out data/MLAAD_v9_protocols
    python scripts/make_protocols.py --root data/MLAAD_v9 --out data/MLAAD_v9_protocols \\
        --seed 1 --known-systems 40 --dev-unseen-systems 0.2 --clip-shares 0.6,0.1,0.3
    python scripts/make_protocols.py --root data/MLAAD_v9 --out data/v5_plus_v9 \\
        --keep-protocols data/MLAAD_v5_protocols --newer-to dev-eval

--root is the folder that holds fake/<lang>/<system_folder>/ with one meta.csv per folder: the
unpacked release archive, a Hugging Face snapshot of mueller91/MLAAD, or its hub cache folder.
Writes train.csv, dev.csv, eval.csv (header path,model_name; paths relative to the release root),
fine/ cell files as in the official v5 zip, systems.csv, summary.csv and summary.md. The same
inputs and --seed give identical files. Then set data.root to the printed release root and
data.protocols to --out.

With --keep-protocols the existing protocols are kept byte for byte and the release's systems they
lack are appended as unseen systems of eval (or of dev and eval with --newer-to dev-eval).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

try:
    from sourcetracing.cli import ListOption, report_error
    from sourcetracing.data.mlaad_release import LAYOUTS, SplitOptions, extend_protocols, make_protocols
    from sourcetracing.errors import SourceTracingError
except ModuleNotFoundError as err:
    sys.exit(
        f"error: {err.name} is not importable from {sys.executable}; run `make install` and use "
        ".venv/bin/python (or ./run.sh, which finds it)"
    )


def _amount(text: str) -> float:
    """A share in [0, 1] or a whole count."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a share (0.3) or a count (12), got {text!r}") from None
    if value < 0 or (value > 1 and value != int(value)):
        raise argparse.ArgumentTypeError(f"expected a share in [0, 1] or a whole count, got {text!r}")
    return value


def _shares(values: list[float]) -> tuple[float, float, float]:
    """Three clip shares (train, dev, eval) summing to 1, train > 0."""
    parts = tuple(values)
    if len(parts) != 3 or any(x < 0 for x in parts) or abs(sum(parts) - 1) > 1e-6 or parts[0] <= 0:
        text = ",".join(f"{x:g}" for x in parts)
        raise argparse.ArgumentTypeError(
            f"expected train,dev,eval shares summing to 1 with train > 0, got {text}"
        )
    return parts  # type: ignore[return-value]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        prog="make_protocols.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", required=True, type=Path, help="MLAAD release folder (holds fake/)")
    parser.add_argument("--out", required=True, type=Path, help="output folder for the protocol files")
    parser.add_argument(
        "--release-layout",
        choices=LAYOUTS,
        default="auto",
        help="layout of the release under --root: archive tree or Hugging Face (default: auto)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every draw (default: 0)")
    parser.add_argument(
        "--known-systems",
        type=_amount,
        default=0.3,
        help="known (train) systems: share or count (default: 0.3)",
    )
    parser.add_argument(
        "--dev-unseen-systems",
        type=_amount,
        default=0.2,
        help="systems only in dev: share or count (default: 0.2)",
    )
    parser.add_argument(
        "--eval-unseen-systems",
        type=_amount,
        default=None,
        help="systems only in eval: share or count (default: all the rest)",
    )
    parser.add_argument(
        "--clip-shares",
        action=ListOption,
        item=float,
        default=[0.5, 0.2, 0.3],
        metavar="SHARE",
        help="train, dev and eval shares of a known system's clips in train languages, comma-separated "
        "(default: 0.5,0.2,0.3)",
    )
    parser.add_argument(
        "--unseen-languages",
        type=_amount,
        default=0.25,
        help="languages held out of train: share or count (default: 0.25); each known system keeps one train language",
    )
    parser.add_argument(
        "--max-clips-per-folder",
        type=int,
        default=None,
        help="use at most N clips per system folder (default: all)",
    )
    parser.add_argument(
        "--known",
        action=ListOption,
        default=[],
        metavar="SYSTEM",
        help="synthesizers to make known, comma-separated",
    )
    parser.add_argument(
        "--exclude",
        action=ListOption,
        default=[],
        metavar="SYSTEM",
        help="synthesizers to leave out, comma-separated",
    )
    parser.add_argument("--no-fine", action="store_true", help="do not write the fine/ cell files")
    parser.add_argument(
        "--no-audio-check",
        action="store_true",
        help="trust meta.csv without checking that each wav file exists",
    )
    parser.add_argument(
        "--keep-protocols",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep these protocols (e.g. MLAAD v5's) and add only the release's systems they lack, as unseen",
    )
    parser.add_argument(
        "--newer-to",
        choices=("eval", "dev-eval"),
        default="eval",
        help="with --keep-protocols: new systems go to eval, or split between dev and eval (default: eval)",
    )
    parser.add_argument(
        "--newer-dev-systems",
        type=_amount,
        default=0.3,
        help="with --newer-to dev-eval: share or count of the new systems that go to dev (default: 0.3)",
    )
    parser.add_argument("--force", action="store_true", help="replace protocol files already in --out")
    args = parser.parse_args(argv)
    try:
        args.clip_shares = _shares(args.clip_shares)
    except argparse.ArgumentTypeError as err:
        parser.error(f"argument --clip-shares: {err}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.keep_protocols is not None:
            table, report = extend_protocols(
                args.root,
                args.keep_protocols,
                args.out,
                seed=args.seed,
                newer_to=args.newer_to,
                dev_systems=args.newer_dev_systems,
                layout=args.release_layout,
                check_audio=not args.no_audio_check,
                force=args.force,
            )
        else:
            options = SplitOptions(
                seed=args.seed,
                known=args.known_systems,
                dev_unseen=args.dev_unseen_systems,
                eval_unseen=args.eval_unseen_systems,
                clip_shares=args.clip_shares,
                unseen_languages=args.unseen_languages,
                max_clips_per_folder=args.max_clips_per_folder,
                exclude=tuple(args.exclude),
                force_known=tuple(args.known),
            )
            table, report = make_protocols(
                args.root,
                args.out,
                options,
                layout=args.release_layout,
                fine=not args.no_fine,
                check_audio=not args.no_audio_check,
                force=args.force,
            )
    except SourceTracingError as err:
        return report_error(err)
    print(table.to_string(index=False))
    print(f"protocols written to {args.out} (summary in {args.out / 'summary.md'})")
    print(f"use: data.root={report.root} data.protocols={args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
