#!/usr/bin/env python
"""Stage 11: trace new clips: predicted system, top-k, OOD score, calibrated P(unseen), known/unknown.

python scripts/trace.py --config configs/demo.yaml clip.wav more_clips/ [--system aasist] [--top-k 3]
python scripts/trace.py --exp exp/demo clip.wav                         # the experiment's saved config
"""

import sys

from sourcetracing.trace import main

if __name__ == "__main__":
    sys.exit(main())
