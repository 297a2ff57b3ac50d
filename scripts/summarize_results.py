#!/usr/bin/env python
"""Stage 10: every system and OOD scorer in one table, from the files the judging steps wrote.

python scripts/summarize_results.py --config configs/demo.yaml              # -> <exp_dir>/summary.md
python scripts/summarize_results.py --exp exp/demo_s0 exp/demo_s1 exp/demo_s2 --out exp/seeds.md   # mean ± sd
"""

import sys

from sourcetracing.summary import main

if __name__ == "__main__":
    sys.exit(main())
