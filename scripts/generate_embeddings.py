#!/usr/bin/env python
"""Step 7: write the embeddings of every split (clean 'original' rows) for the GE2E or the REFD model.

    python scripts/generate_embeddings.py --config configs/demo.yaml                 # GE2E encoder
    python scripts/generate_embeddings.py --config configs/demo.yaml --model refd    # AASIST penultimate layer
    python scripts/generate_embeddings.py --config configs/demo.yaml --layout original

Writes <exp_dir>/<model>/embeddings/<split>.npz + <split>.csv (+ info.json); with --layout original
also <root>/<split>/<system_id>/<file>.npy as the original baseline did.
"""

from __future__ import annotations

import sys

from sourcetracing.ge2e.embeddings import generate_main

if __name__ == "__main__":
    sys.exit(generate_main())
