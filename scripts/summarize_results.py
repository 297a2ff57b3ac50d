#!/usr/bin/env python
"""Stage 10: every system and OOD scorer in one table, from the files the judging steps wrote.

python scripts/summarize_results.py --config configs/demo.yaml              # -> <exp_dir>/summary.md
python scripts/summarize_results.py --exp exp/demo_s0 exp/demo_s1 exp/demo_s2 --out exp/seeds.md   # mean ± sd
"""

import sys

try:
    from sourcetracing.summary import main
except ModuleNotFoundError as err:
    sys.exit(
        f"error: {err.name} is not importable from {sys.executable}; run `make install` and use "
        ".venv/bin/python (or ./run.sh, which finds it)"
    )

if __name__ == "__main__":
    sys.exit(main())
