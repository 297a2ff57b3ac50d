#!/usr/bin/env python
"""Draw a 2-D map (UMAP if umap-learn is installed, else t-SNE) of exported embeddings.

    python scripts/plot_embeddings.py --embeddings exp/demo/ge2e/embeddings [--out map.png] [--method tsne]
    python scripts/plot_embeddings.py --embeddings exp/demo/refd/embeddings --max-points 2000

Colour per system, marker per split (train o, dev ^, eval s), unseen systems outlined in black.
"""

from __future__ import annotations

import sys

from sourcetracing.ge2e.embeddings import plot_main

if __name__ == "__main__":
    sys.exit(plot_main())
