#!/usr/bin/env python
"""Stage 9: write a system's embeddings of every split from its exported outputs.

    python scripts/generate_embeddings.py [--config configs/demo.yaml] [--system ge2e] [--layout original]
    python scripts/generate_embeddings.py --config configs/demo.yaml --system all   # every system with embeddings

Writes <exp_dir>/<system>/embeddings/<split>.npz + <split>.csv; with --layout original also
<root>/<split>/<system_id>/<file>.npy as the original baseline did (root: --layout-root, default
<exp_dir>/<system>/embeddings/original). --system all: each system of exp_dir whose exported
outputs carry embeddings, whatever its name (what stage 9 of run.sh runs).
"""

import json
import sys
from pathlib import Path

try:
    from sourcetracing.cli import run, step_parser
except ModuleNotFoundError as err:
    sys.exit(
        f"error: {err.name} is not importable from {sys.executable}; run `make install` and use "
        ".venv/bin/python (or ./run.sh, which finds it)"
    )


def export_one(cfg, args, system: str) -> None:
    """Write one system's embedding files."""
    from sourcetracing.data.protocols import LabelMap
    from sourcetracing.embedding_maps import export_embeddings
    from sourcetracing.judge import load_outputs
    from sourcetracing.layout import ExperimentLayout

    layout = ExperimentLayout.of(cfg)
    outputs = load_outputs(cfg, system)
    out = args.out or layout.system(system).embeddings
    root = (args.layout_root or out / "original") if args.layout == "original" else None
    label_map = LabelMap.read(cfg.exp_dir) if layout.label_map.is_file() else LabelMap(outputs.class_names)
    counts = export_embeddings(outputs, label_map, out, root)
    (out / "info.json").write_text(
        json.dumps({"system": system, "splits": counts, "outputs": outputs.outputs_id}, indent=2)
    )
    for split, n in counts.items():
        print(f"{system} {split}: {n} embeddings")
    print(f"{system} embeddings in {out}" + (f"; original layout in {root}" if root else ""))


def body(cfg, args) -> int:
    from sourcetracing.embedding_maps import chosen_systems
    from sourcetracing.errors import ConfigError

    systems = chosen_systems(cfg, args.system)
    if len(systems) > 1 and (args.out or args.layout_root):
        raise ConfigError("--out and --layout-root name one system's folder: give --system NAME with them")
    for system in systems:
        export_one(cfg, args, system)
    return 0


def main(argv=None) -> int:
    parser = step_parser("generate_embeddings.py", __doc__)
    parser.add_argument(
        "--system",
        "--model",
        default="ge2e",
        help="trained system whose embeddings to write: its folder under exp_dir, or all: every system "
        "with embeddings (default: ge2e)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder to write into (default: <exp_dir>/<system>/embeddings); one --system only",
    )
    parser.add_argument(
        "--layout",
        choices=["npz", "original"],
        default="npz",
        help="npz: <split>.npz + <split>.csv (default); original: also one .npy per clip as the original did",
    )
    parser.add_argument(
        "--layout-root",
        type=Path,
        default=None,
        help="with --layout original: the root of the .npy files (default: <out>/original)",
    )
    return run(parser, argv, body)


if __name__ == "__main__":
    sys.exit(main())
