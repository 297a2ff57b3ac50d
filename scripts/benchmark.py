#!/usr/bin/env python
"""Benchmarks that print the toolkit's speed/memory beside a reference, as ratios, in one run.

python scripts/benchmark.py extract     # feature extraction vs the original's way [--device cuda]
python scripts/benchmark.py train       # AASIST training, float32 vs bf16 [--device cuda]
python scripts/benchmark.py ood         # OOD scoring at MLAAD scale: dense matrix vs chunked
python scripts/benchmark.py train-io    # float16 shards vs one float32 .pt per sample
python scripts/benchmark.py ge2e-loss   # vectorised GE2E loss vs a loop version
"""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "extract": "sourcetracing_tools.bench.extract",
    "train": "sourcetracing_tools.bench.train",
    "ood": "sourcetracing_tools.bench.ood",
    "train-io": "sourcetracing_tools.bench.train_io",
    "ge2e-loss": "sourcetracing_tools.bench.ge2e_loss",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in BENCHMARKS:
        print(__doc__)
        print(f"choose one of: {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(BENCHMARKS[argv[0]])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
