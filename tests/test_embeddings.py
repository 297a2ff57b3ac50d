"""Embedding export (both layouts, GE2E and REFD) and the 2-D map."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from sourcetracing.data.protocols import LabelMap
from sourcetracing.embedding_maps import (
    load_embeddings,
    plot_map,
    write_original_layout,
    write_split,
)


def _frame(models: list[str], split: str) -> pd.DataFrame:
    lm = LabelMap(known=["a", "b"], ood=["x"])
    return pd.DataFrame(
        {
            "clip_id": [f"fake/en/{m}/{split}_{i}.wav" for i, m in enumerate(models)],
            "model_name": models,
            "label": [lm.label(m) for m in models],
            "known": [lm.label(m) >= 0 for m in models],
            "language": "en",
            "cell": ["seen_lang/" + ("seen_model" if lm.label(m) >= 0 else "unseen_model") for m in models],
        }
    )


def test_write_split_both_layouts_and_tsne_map(tmp_path: Path) -> None:
    from threadpoolctl import threadpool_limits

    lm = LabelMap(known=["a", "b"], ood=["x"])
    rng = np.random.default_rng(0)
    out = tmp_path / "emb"
    for split, models in {"train": ["a"] * 6 + ["b"] * 6, "dev": ["a", "b", "x", "x"] * 3}.items():
        frame = _frame(models, split)
        emb = rng.normal(size=(len(frame), 5)) + np.array([lm.label(m) * 3 for m in models])[:, None]
        index = write_split(out, split, emb, frame, lm)
        write_original_layout(out / "original", split, emb, index)
    data = np.load(out / "dev.npz")
    assert data["embeddings"].shape == (12, 5) and data["system_ids"].tolist()[:3] == [0, 1, 2]
    assert len(list((out / "original" / "dev" / "2").glob("*.npy"))) == 6
    emb, frame = load_embeddings(out)
    assert list(dict.fromkeys(frame["split"])) == ["train", "dev"] and len(emb) == 24
    with threadpool_limits(1):
        png = plot_map(emb, frame, tmp_path / "map.png", method="tsne", max_points=20)
    assert png.stat().st_size > 5000


def test_generate_and_plot_from_outputs_alone(tmp_path: Path) -> None:
    """The scripts read a system's outputs folder: no checkpoint, no feature store needed."""
    import subprocess
    import sys

    import yaml

    from sourcetracing.systems.outputs import SplitOutputs, SystemOutputs

    lm = LabelMap(known=["a", "b"], ood=["x"])
    exp = tmp_path / "exp"
    lm.write(exp)
    rng = np.random.default_rng(0)
    splits = {}
    for split, models in {
        "train": ["a"] * 8 + ["b"] * 8,
        "dev": ["a", "b", "x"] * 4,
        "eval": ["a", "x"] * 5,
    }.items():
        frame = _frame(models, split).assign(path=lambda f: "./" + f["clip_id"], language_seen=True)
        emb = rng.normal(size=(len(frame), 6)) + np.array([lm.label(m) * 3 for m in models])[:, None]
        splits[split] = SplitOutputs(frame, embeddings=emb)
    SystemOutputs("mine", lm.known, splits).write(exp / "mine" / "outputs")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"exp_dir": str(exp)}))
    repo = Path(__file__).resolve().parents[1]
    for script, extra in (
        ("generate_embeddings.py", ["--layout", "original"]),
        ("plot_embeddings.py", ["--method", "tsne"]),
    ):
        proc = subprocess.run(
            [sys.executable, str(repo / "scripts" / script), "--config", str(config), "--system", "mine", *extra],
            capture_output=True, text=True, timeout=300, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
    emb_dir = exp / "mine" / "embeddings"
    assert np.load(emb_dir / "eval.npz")["embeddings"].shape == (10, 6)
    assert len(list((emb_dir / "original" / "eval" / "2").glob("*.npy"))) == 5  # the unseen system x: id 2
    assert (emb_dir / "embedding_map.png").stat().st_size > 5000
