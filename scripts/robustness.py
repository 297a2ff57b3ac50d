#!/usr/bin/env python
"""Stage 12: the robustness report card: every trained system under codecs, channels and short clips.

    python scripts/robustness.py --config configs/demo.yaml                         # every condition and system
    python scripts/robustness.py --config configs/demo.yaml --conditions clean,mp3_32k,noise_10db --systems aasist
    torchrun --nproc_per_node=2 scripts/robustness.py --config X                    # extraction split over processes
    python scripts/robustness.py --list-conditions
    python scripts/robustness.py --compare exp/demo exp/demo_codec                  # two experiments side by side

For each condition (robustness.conditions; defaults: clean, MP3 32/64/128 kbit/s, Opus 12/32 kbit/s,
Vorbis q0/q6, telephone, low-pass, noise at 20/10/0 dB SNR, reverb, level -20 dB, clipping, first
1 s and 2 s) the dev and eval clips are transformed on the fly, their features cached in a
condition store (a rerun reuses them), every system runs as trace.py would, and its clean OOD
step's scorers judge the result at the clean-dev threshold and at the condition's own dev
threshold. Writes <exp_dir>/robustness/ (robustness.csv, card.md, robustness_eer.png,
robustness_macro_f1.png) and <exp_dir>/robustness/<condition>/<system>/outputs/.
"""

import sys

try:
    from sourcetracing.cli import ListOption, report_error, run, step_parser
except ModuleNotFoundError as err:
    sys.exit(
        f"error: {err.name} is not importable from {sys.executable}; run `make install` and use "
        ".venv/bin/python (or ./run.sh, which finds it)"
    )


def body(cfg, args) -> int:
    from sourcetracing.robustness import run_robustness

    run_robustness(cfg, args.conditions, args.systems)
    return 0


def list_conditions() -> int:
    from sourcetracing.data.transforms import DEFAULT_CONDITIONS

    for name, spec in DEFAULT_CONDITIONS.items():
        params = ", ".join(f"{k}={v}" for k, v in spec.items() if k != "transform")
        print(f"{name:14s} {spec['transform']}" + (f" ({params})" if params else ""))
    return 0


def show_comparison(base: str, other: str) -> int:
    import pandas as pd

    from sourcetracing.errors import SourceTracingError
    from sourcetracing.robustness import compare

    try:
        table = compare(base, other)
    except SourceTracingError as err:
        return report_error(err)
    shown = table.copy()
    for col in shown.columns:
        if col.startswith(("eer", "hter")):
            shown[col] = 100 * shown[col]
    print(f"eval, default scorers; base {base}, other {other}; delta = other - base (EER and @clean in %)")
    with pd.option_context("display.width", 200, "display.max_rows", 500):
        print(shown.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    return 0


def main(argv=None) -> int:
    parser = step_parser("robustness.py", __doc__)
    parser.add_argument(
        "--conditions",
        action=ListOption,
        default=None,
        metavar="CONDITION",
        help="conditions to run, comma-separated (default: robustness.conditions; see --list-conditions)",
    )
    parser.add_argument(
        "--systems",
        action=ListOption,
        default=None,
        metavar="SYSTEM",
        help="trained systems to run, comma-separated (default: robustness.systems, else every runnable one)",
    )
    parser.add_argument("--list-conditions", action="store_true", help="list the default conditions and exit")
    parser.add_argument(
        "--compare", nargs=2, metavar=("BASE", "OTHER"), default=None,
        help="print two experiments' cards side by side (experiment folders or robustness.csv files) and exit",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.list_conditions:
        return list_conditions()
    if args.compare:
        return show_comparison(*args.compare)
    return run(parser, argv, body)


if __name__ == "__main__":
    sys.exit(main())
