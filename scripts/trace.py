#!/usr/bin/env python
"""Stage 11: trace new clips: predicted system, top-k, OOD score, calibrated P(unseen), known/unknown.

python scripts/trace.py --config configs/demo.yaml clip.wav more_clips/ [--system aasist] [--top-k 3]
                                      # without --system: the system chosen on dev (printed, with why)
python scripts/trace.py --bundle bundles/demo clip.wav   # a bundle of scripts/export_bundle.py, from any folder
python scripts/trace.py --exp exp/demo clip.wav                         # the experiment's saved config
python scripts/trace.py --config configs/demo.yaml --sample-eval 20 [--seed 0]   # eval clips of the protocols (stage 11)
"""

import sys
from pathlib import Path

try:
    import pandas as pd

    from sourcetracing import trace
    from sourcetracing.cli import (
        exp_config,
        exp_parser,
        parse_command,
        positive_count,
        report_error,
        split_overrides,
    )
except ModuleNotFoundError as err:
    sys.exit(
        f"error: {err.name} is not importable from {sys.executable}; run `make install` and use "
        ".venv/bin/python (or ./run.sh, which finds it)"
    )


def parser():
    parser = exp_parser(
        None, trace.__doc__, "audio files or folders (searched recursively); key=value overrides too"
    )
    parser.add_argument(
        "--bundle",
        default=None,
        help="a tracer bundle (scripts/export_bundle.py: folder, .tar.gz or .zip): trace without the experiment",
    )
    parser.add_argument(
        "--sample-eval",
        type=positive_count,
        default=None,
        metavar="N",
        help="also trace N clips of the eval protocol, drawn with --seed (what stage 11 of run.sh does)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the --sample-eval draw (default 0)")
    parser.add_argument(
        "--system",
        default=None,
        help="trained system to trace with (default: the one chosen on dev, said in the output)",
    )
    parser.add_argument(
        "--top-k", type=int, default=None, help="systems listed per clip (default: trace.top_k)"
    )
    parser.add_argument(
        "--scorer", default=None, help="OOD scorer (default: trace.scorer, else the OOD step's default)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="CSV file (default: <exp_dir>/trace/trace_<time>.csv; with --bundle ./trace_<time>.csv)",
    )
    parser.add_argument("--device", default=None, help="auto | cpu | cuda (default: the config's)")
    parser.add_argument(
        "--batch-size", type=positive_count, default=16, help="clips per batch through the model (default 16)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    from sourcetracing.errors import ConfigError, SourceTracingError, WouldOverwriteError
    from sourcetracing.layout import ExperimentLayout

    args = parse_command(
        parser(), argv, intermixed=True
    )  # clips and overrides may come before or after the options
    inputs, overrides = split_overrides(args.inputs)
    try:
        if args.out is not None and args.out.exists():  # before any work
            raise WouldOverwriteError(f"{args.out} exists; choose another --out")
        if args.bundle:
            given = (
                args.config,
                args.exp,
                overrides,
                args.sample_eval,
                args.system,
                args.scorer,
                args.print_config,
            )
            if any(given):
                raise ConfigError(
                    "--bundle traces with the bundle alone: drop --config, --exp, overrides, --print-config, "
                    "--sample-eval, --system and --scorer"
                )
            tracer = trace.Tracer.from_bundle(args.bundle, args.device)
            why, folder = f"the bundle {args.bundle}", Path.cwd()
            files = trace.find_audio(inputs)
        else:
            cfg = exp_config(args, overrides)
            files = trace.find_audio(inputs)
            if args.sample_eval:
                files += trace.sample_eval_clips(cfg, args.sample_eval, args.seed)
            folder = ExperimentLayout.of(cfg).trace
        if not files:
            what = "in the given inputs" if inputs else "(give clips or folders, or --sample-eval N)"
            print(f"error: no audio files found {what}", file=sys.stderr)
            return 2
        if not args.bundle:
            tracer, why = trace.tracer_for(cfg, args.system, args.scorer, args.device)
        print(f"tracing with {tracer.system} / {tracer.scorer_name}: {why}", flush=True)
        df = tracer.trace(files, args.top_k, args.batch_size)
        out = trace.write_results(df, args.out, folder)
    except SourceTracingError as err:
        return report_error(err)
    show = df[
        ["path", "predicted", "probability", "ood_score", "p_unseen", "decision", "top_k", "error"]
    ].copy()
    show["path"] = show["path"].map(lambda p: p if len(p) <= 40 else "..." + p[-37:])
    with pd.option_context("display.max_colwidth", 60, "display.width", 200):
        print(show.to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep=""))
    n_err = int((df["status"] == "error").sum())
    level = tracer.level
    at_level = f" (classes are {level}s: data.label={level})" if level != "system" else ""
    print(
        f"{len(df) - n_err} clip(s) traced with {tracer.system}/{tracer.scorer_name}{at_level}, {n_err} error(s); "
        f"results in {out}"
    )
    return 0 if len(df) > n_err else 1


if __name__ == "__main__":
    sys.exit(main())
