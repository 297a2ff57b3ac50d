#!/usr/bin/env python
"""Step 1: check the data, then augment and extract features into the feature store.

python scripts/preprocess_dataset.py --config configs/demo.yaml --check   # validate only
python scripts/preprocess_dataset.py --config configs/demo.yaml           # check + extract
torchrun --nproc_per_node=2 scripts/preprocess_dataset.py --config ...    # clips split over ranks
"""

from __future__ import annotations

import argparse
import sys

from sourcetracing.config import add_config_args, config_from_args, save_resolved
from sourcetracing.data.check import run_check


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_args(parser)
    parser.add_argument(
        "--check", action="store_true", help="validate protocols, files and corpora, then stop"
    )
    parser.add_argument("--skip-file-check", action="store_true", help="do not stat every audio file first")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)

    problems, table = run_check(cfg, check_files=not args.skip_file_check)
    if not table.empty:
        print(table.to_string())
        print(f"label assignment written to {cfg.exp_dir}/label_assignment.txt and label_map.csv")
    if problems:
        print(f"data check FAILED ({len(problems)} problem(s)):", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    save_resolved(cfg)
    if args.check:
        print("data check passed")
        return 0
    from sourcetracing.features.extract import run_extraction

    run_extraction(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
