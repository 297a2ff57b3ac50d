#!/usr/bin/env python
"""Stage 9: a 2-D map (UMAP if umap-learn is installed, else t-SNE) of a system's embeddings.

    python scripts/plot_embeddings.py [--config configs/demo.yaml] --system ge2e [--method tsne]

Reads <exp_dir>/<system>/outputs/ and writes <exp_dir>/<system>/embeddings/embedding_map.png.
Colour per system, marker per split (train o, dev ^, eval s), unseen systems outlined in black.
"""

import sys
from pathlib import Path

from sourcetracing.cli import run, step_parser


def body(cfg, args) -> int:
    from sourcetracing.embedding_maps import map_from_outputs
    from sourcetracing.judge import load_outputs
    from sourcetracing.layout import ExperimentLayout

    outputs = load_outputs(cfg, args.system)
    out = args.out or ExperimentLayout.of(cfg).system(args.system).embeddings / "embedding_map.png"
    map_from_outputs(outputs, out, args.method, args.max_points, args.seed, args.splits)
    print(f"map written to {out}")
    return 0


def main(argv=None) -> int:
    parser = step_parser("plot_embeddings.py", __doc__)
    parser.add_argument("--system", default="ge2e", help="system folder under exp_dir (default: ge2e)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--method", choices=["auto", "umap", "tsne"], default="auto")
    parser.add_argument("--max-points", type=int, default=3000)
    parser.add_argument("--splits", nargs="*", default=None)
    parser.add_argument("--seed", type=int, default=0)
    return run(parser, argv, body)


if __name__ == "__main__":
    sys.exit(main())
