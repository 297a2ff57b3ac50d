#!/usr/bin/env python
"""Step 1: check the data, then augment and extract features into the feature store.

python scripts/preprocess_dataset.py --config configs/demo.yaml --check   # validate only
python scripts/preprocess_dataset.py --config configs/demo.yaml           # check + extract
torchrun --nproc_per_node=2 scripts/preprocess_dataset.py --config ...    # clips split over ranks
"""

from __future__ import annotations

import argparse
import sys

from sourcetracing.config import add_config_args, config_from_args, resolve_device, save_resolved
from sourcetracing.data.check import run_check
from sourcetracing.distributed import cleanup, init_distributed


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

    from sourcetracing.data.augment import AugmentError
    from sourcetracing.features.extract import ExtractionError, broadcast_from_main, run_extraction
    from sourcetracing.features.frontends import FrontEndError

    info = init_distributed(resolve_device(cfg.device))  # a no-op without torchrun
    ok = True
    if info.is_main:  # one rank checks, prints and writes the label assignment
        problems, table = run_check(cfg, check_files=not args.skip_file_check)
        if not table.empty:
            print(table.to_string())
            print(f"label assignment written to {cfg.exp_dir}/label_assignment.txt and label_map.csv")
        if problems:
            print(f"data check FAILED ({len(problems)} problem(s)):", file=sys.stderr)
            for p in problems:
                print(f"  - {p}", file=sys.stderr)
            ok = False
        else:
            save_resolved(cfg)
    if not broadcast_from_main(info, ok):
        cleanup(info)
        return 1
    if args.check:
        if info.is_main:
            print("data check passed")
        cleanup(info)
        return 0
    try:
        run_extraction(cfg, info)
    except (ExtractionError, AugmentError, FrontEndError) as err:
        print(f"feature extraction FAILED: {err}", file=sys.stderr)
        return 1  # under torchrun the launcher stops the other ranks
    cleanup(info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
