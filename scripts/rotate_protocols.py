#!/usr/bin/env python
"""Protocol rotation: K seeded partitions of a corpus's systems into known / dev-unseen / eval-unseen.

    python scripts/rotate_protocols.py --protocols data/demo_hard/protocols \
        --families data/demo_hard/corpus_summary.csv --out data/demo_hard/rotations --rotations 5 --seed 0

Writes <out>/rot<i>/{train,dev,eval}.csv (the v5 format, paths unchanged), <out>/rot<i>/roles.csv
and <out>/rotations.md (each system's role in each rotation). Run the pipeline on a rotation with
the overrides ``data.protocols=<out>/rot<i> exp_dir=<exp>_rot<i>`` (``make demo-hard-rotations``
does it for every rotation and then summarises them). Dev-unseen and eval-unseen are disjoint;
every system is unseen in at least one rotation; near-twin families (``--families``: a corpus
summary with ``twin_of``) keep a known and an unseen member. See sourcetracing.data.rotation.
"""

import argparse
import sys
from pathlib import Path

try:
    from sourcetracing.cli import report_error
    from sourcetracing.errors import SourceTracingError
except ModuleNotFoundError as err:
    sys.exit(
        f"error: {err.name} is not importable from {sys.executable}; run `make install` and use "
        ".venv/bin/python (or ./run.sh, which finds it)"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="rotate_protocols.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--protocols", type=Path, required=True, help="folder with train.csv, dev.csv, eval.csv"
    )
    parser.add_argument("--out", type=Path, required=True, help="folder to write rot<i>/ into")
    parser.add_argument("--rotations", type=int, default=5, help="number of rotations K (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draw (default 0)")
    parser.add_argument("--families", type=Path, default=None, help="corpus summary CSV with system, twin_of")
    parser.add_argument(
        "--dev-unseen", type=int, default=None, help="unseen systems in dev (default: as the source)"
    )
    parser.add_argument(
        "--eval-unseen", type=int, default=None, help="unseen systems in eval (default: as the source)"
    )
    parser.add_argument(
        "--max-unseen-clips", type=int, default=None,
        help="clips per unseen system at most (default: the source's median per unseen system)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    from sourcetracing.data.rotation import rotate, rotation_summary, twin_families

    try:
        families = twin_families(args.families) if args.families else None
        rotations = rotate(
            args.protocols,
            args.rotations,
            args.seed,
            args.dev_unseen,
            args.eval_unseen,
            families,
            args.max_unseen_clips,
        )
    except SourceTracingError as err:
        return report_error(err)
    for rotation in rotations:
        rotation.write(args.out / f"rot{rotation.index}")
    text = rotation_summary(rotations, families)
    (args.out / "rotations.md").write_text(text)
    print(text)
    print(f"{len(rotations)} rotations written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
