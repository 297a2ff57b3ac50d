#!/usr/bin/env python
"""Trace new clips with a trained experiment: predicted system, top-k, OOD score, known/unknown.

    python scripts/trace.py --exp exp/demo clip.wav more_clips/ [--top-k 3] [--scorer nsd] [--out out.csv]

Needs <exp>/trained_models/best.pt and the OOD step (scripts/ood_detector.py) to have run.
"""

from __future__ import annotations

import sys

from sourcetracing.trace import main

if __name__ == "__main__":
    sys.exit(main())
