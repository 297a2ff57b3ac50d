#!/usr/bin/env python
"""Write the evaluation key of an experiment's protocols: one row per clip of every split.

    python scripts/write_key.py --config configs/refd_mlaad.yaml [--out key.tsv]   # default <exp_dir>/key.tsv

Columns: clip_id, system, split, status (known = a train system, else unseen), language,
language_seen, cell. The label map comes from the train split, as everywhere in the toolkit. Score
files are evaluated against it with scripts/evaluate_scores.py.
"""

import sys
from pathlib import Path

try:
    import pandas as pd

    from sourcetracing.cli import run, step_parser
    from sourcetracing.score_files import write_key
except ModuleNotFoundError as err:
    sys.exit(
        f"error: {err.name} is not importable from {sys.executable}; run `make install` and use "
        ".venv/bin/python (or ./run.sh, which finds it)"
    )


def body(cfg, args) -> int:
    path = write_key(cfg, args.out)
    key = pd.read_csv(path, sep="\t", keep_default_na=False)
    counts = key.groupby(["split", "status"], sort=False).size().unstack(fill_value=0)
    print(counts.to_string())
    print(f"key of {len(key)} clips written to {path}")
    return 0


def main(argv=None) -> int:
    parser = step_parser("write_key.py", __doc__)
    parser.add_argument("--out", type=Path, default=None, help="key TSV (default: <exp_dir>/key.tsv)")
    return run(parser, argv, body)


if __name__ == "__main__":
    sys.exit(main())
