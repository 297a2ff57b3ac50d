"""Build the offline demo corpus: real speech synthesizers in the MLAAD v5 layout, plus MUSAN and
RIRS_NOISES stand-ins, so the real loaders and steps run without any download.

    python scripts/make_demo_corpus.py --out data/demo               # default size (< 5 min, 2 cores)
    python scripts/make_demo_corpus.py --out /tmp/tiny --small --engines pip
    python scripts/make_demo_corpus.py --plan hard --out data/demo_hard   # near-twins + channels

The hard plan adds near-twin systems (one model or voice with different settings) and passes a
share of every system's clips through a channel (codec, low sample rate, level, noise), listed in
clips.csv.

Reruns skip the files that exist and rewrite the protocols identically.
"""

from __future__ import annotations

import argparse
import sys

try:
    from sourcetracing.cli import ListOption
    from sourcetracing_tools.demo.corpus import PLANS, CorpusError, build_corpus
    from sourcetracing_tools.demo.engines import ENGINE_GROUPS, ENGINES
except ModuleNotFoundError as err:
    sys.exit(
        f"error: {err.name} is not importable from {sys.executable}; run `make install` and use "
        ".venv/bin/python (or ./run.sh, which finds it)"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="data/demo", help="output folder (default: data/demo)")
    parser.add_argument(
        "--plan",
        choices=sorted(PLANS),
        default="default",
        help="; ".join(f"{name}: {plan.description}" for name, plan in PLANS.items()).replace("%", "%%")
        + " (default: default)",
    )
    parser.add_argument(
        "--small",
        action="store_true",
        help="tiny corpus for tests: {}/{}/{} train/dev/eval clips per known system".format(
            *PLANS["default"].sizes["small"].known
        ),
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of texts, noises, rooms and model noise")
    parser.add_argument(
        "--engines",
        action=ListOption,
        item=str.lower,
        choices=[*ENGINE_GROUPS, *ENGINES],
        default=["all"],
        metavar="ENGINE",
        help=f"engines or groups, comma-separated: all (default), pip, debian, {', '.join(ENGINES)} "
        f"(pip = {','.join(ENGINE_GROUPS['pip'])}; missing engines are skipped)",
    )
    parser.add_argument("--jobs", type=int, default=None, help="worker processes (default: all cores)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    try:
        report = build_corpus(
            args.out,
            size="small" if args.small else "default",
            plan=args.plan,
            seed=args.seed,
            engines=args.engines,
            jobs=args.jobs,
            progress=not args.no_progress,
        )
    except (CorpusError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 1 if any(k for k, v in report.skipped.items() if v.startswith("failed")) else 0


if __name__ == "__main__":
    sys.exit(main())
