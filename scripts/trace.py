#!/usr/bin/env python
"""Stage 11: trace new clips: predicted system, top-k, OOD score, calibrated P(unseen), known/unknown.

python scripts/trace.py --config configs/demo.yaml clip.wav more_clips/ [--system aasist] [--top-k 3]
                                      # without --system: the system chosen on dev (printed, with why)
python scripts/trace.py --bundle bundles/demo clip.wav   # a bundle of scripts/export_bundle.py, from any folder
python scripts/trace.py --exp exp/demo clip.wav                         # the experiment's saved config
python scripts/trace.py --config configs/demo.yaml --sample-eval 20 [--seed 0]   # eval clips of the protocols (stage 11)
"""

import sys

try:
    from sourcetracing.trace import main
except ModuleNotFoundError as err:
    sys.exit(
        f"error: {err.name} is not importable from {sys.executable}; run `make install` and use "
        ".venv/bin/python (or ./run.sh, which finds it)"
    )

if __name__ == "__main__":
    sys.exit(main())
