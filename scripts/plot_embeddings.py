#!/usr/bin/env python
"""Stage 9: a 2-D map (UMAP if umap-learn is installed, else t-SNE) of a system's embeddings.

    python scripts/plot_embeddings.py [--config configs/demo.yaml] --system ge2e [--method tsne]
    python scripts/plot_embeddings.py --config configs/demo.yaml --system all   # every system with embeddings

Reads <exp_dir>/<system>/outputs/ and writes <exp_dir>/<system>/embeddings/embedding_map.png.
Colour per system, marker per split (train o, dev ^, eval s), unseen systems outlined in black.
--system all maps each system of exp_dir whose exported outputs carry embeddings.
"""

import sys
from pathlib import Path

try:
    from sourcetracing.cli import ListOption, run, step_parser
except ModuleNotFoundError as err:
    sys.exit(
        f"error: {err.name} is not importable from {sys.executable}; run `make install` and use "
        ".venv/bin/python (or ./run.sh, which finds it)"
    )


def body(cfg, args) -> int:
    from sourcetracing.embedding_maps import chosen_systems, map_from_outputs
    from sourcetracing.errors import ConfigError
    from sourcetracing.judge import load_outputs
    from sourcetracing.layout import ExperimentLayout

    layout = ExperimentLayout.of(cfg)
    systems = chosen_systems(cfg, args.system)
    if args.out and len(systems) > 1:
        raise ConfigError("--out names one map: give --system NAME with it")
    for system in systems:
        outputs = load_outputs(cfg, system)
        out = args.out or layout.system(system).embeddings / "embedding_map.png"
        map_from_outputs(outputs, out, args.method, args.max_points, args.seed, args.splits)
        print(f"{system} map written to {out}")
    return 0


def main(argv=None) -> int:
    parser = step_parser("plot_embeddings.py", __doc__)
    parser.add_argument(
        "--system",
        default="ge2e",
        help="trained system to map: its folder under exp_dir, or all: every system with embeddings "
        "(default: ge2e)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="PNG file (default: <exp_dir>/<system>/embeddings/embedding_map.png); one --system only",
    )
    parser.add_argument(
        "--method",
        choices=["auto", "umap", "tsne"],
        default="auto",
        help="2-D projection (default auto: UMAP when umap-learn is installed, else t-SNE)",
    )
    parser.add_argument(
        "--max-points", type=int, default=3000, help="clips drawn at most, a seeded sample (default 3000)"
    )
    parser.add_argument(
        "--splits",
        action=ListOption,
        default=None,
        metavar="SPLIT",
        help="protocol splits to draw, comma-separated (default: all)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the sample and the projection (default 0)"
    )
    return run(parser, argv, body)


if __name__ == "__main__":
    sys.exit(main())
