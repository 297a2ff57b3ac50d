#!/usr/bin/env python
"""Stage 1: check the data, then augment and extract features into the feature store.

    python scripts/preprocess_dataset.py [--config configs/refd_mlaad.yaml] --check   # validate + cost estimate
    python scripts/preprocess_dataset.py --config configs/demo.yaml                   # check + extract
    torchrun --nproc_per_node=2 scripts/preprocess_dataset.py --config ...             # shards split over ranks

--check also prints the cost before the work: the feature store's size on disk, per-stage times from
the rates `make benchmarks` measured on this machine (exp/benchmarks/rates.json), and on CUDA the GPU
memory per batch.

Writes <exp_dir>/label_assignment.txt, label_map.csv, config.yaml and the feature store
<exp_dir>/features/<frontend>-<hash>/ (float16 shards, index.csv, meta.json, skipped.csv).
"""

from __future__ import annotations

import sys

try:
    from sourcetracing.cli import run, step_parser
    from sourcetracing.config import resolve_device, save_resolved
    from sourcetracing.costs import RATES_FILE
    from sourcetracing.data.check import run_check
    from sourcetracing.distributed import cleanup, init_distributed
except ModuleNotFoundError as err:
    sys.exit(
        f"error: {err.name} is not importable from {sys.executable}; run `make install` and use "
        ".venv/bin/python (or ./run.sh, which finds it)"
    )


def print_costs(cfg, rates: str) -> None:
    """The feature store's size, stage times from this machine's benchmark rates, GPU memory per batch."""
    from sourcetracing.costs import cost_lines
    from sourcetracing.data.protocols import prepare_splits

    splits, _ = prepare_splits(cfg)
    print("\n".join(cost_lines(cfg, splits, rates)))


def preprocess(cfg, args) -> int:
    from sourcetracing.features.extract import broadcast_from_main, run_extraction

    info = init_distributed(resolve_device(cfg.device))  # a no-op without torchrun
    try:
        ok = True
        if info.is_main:  # one rank checks, prints and writes the label assignment
            problems, table = run_check(cfg, check_files=not args.skip_file_check)
            if not table.empty:
                print(table.to_string())
                print(f"label assignment written to {cfg.exp_dir}/label_assignment.txt and label_map.csv")
                if cfg.data.get("label", "system") != "system":
                    print(
                        f"label level: {cfg.data.label} (each class merges the systems of one {cfg.data.label})"
                    )
            if problems:
                print(f"data check FAILED ({len(problems)} problem(s)):", file=sys.stderr)
                for p in problems:
                    print(f"  - {p}", file=sys.stderr)
                ok = False
            else:
                save_resolved(cfg)
        if not broadcast_from_main(info, ok):
            return 1
        if args.check:
            if info.is_main:
                print("data check passed")
                print_costs(cfg, args.rates)
            return 0
        run_extraction(cfg, info)
        return 0
    finally:
        cleanup(info)


def main(argv: list[str] | None = None) -> int:
    parser = step_parser("preprocess_dataset.py", __doc__)
    parser.add_argument(
        "--check", action="store_true", help="validate protocols, files and corpora, then stop"
    )
    parser.add_argument(
        "--rates",
        default=str(RATES_FILE),
        help=f"measured rates for --check's time estimates (default {RATES_FILE}, written by make benchmarks)",
    )
    parser.add_argument("--skip-file-check", action="store_true", help="do not stat every audio file first")
    return run(parser, argv, preprocess)


if __name__ == "__main__":
    sys.exit(main())
