"""Embedding export (both layouts, GE2E and REFD) and the 2-D map."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ge2e_helpers import write_synthetic_experiment

from sourcetracing.data.protocols import LabelMap
from sourcetracing.ge2e.embeddings import (
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


def test_refd_embeddings_from_an_aasist_checkpoint(tmp_path: Path) -> None:
    pytest.importorskip("sourcetracing.training.checkpoint")
    from sourcetracing.config import load_config
    from sourcetracing.features.store import FeatureStore
    from sourcetracing.ge2e.embeddings import generate_main
    from sourcetracing.training.checkpoint import build_model, save_checkpoint

    cfg_path = write_synthetic_experiment(tmp_path)
    cfg = load_config(cfg_path)
    store = FeatureStore.for_config(cfg)
    lm = LabelMap.read(cfg.exp_dir)
    model = build_model({"name": "aasist"}, store.frame_shape[1], lm.num_classes)
    save_checkpoint(
        tmp_path / "exp" / "trained_models" / "best.pt",
        model,
        model_config={"name": "aasist"},
        input_dim=store.frame_shape[1],
        label_map=lm,
        feature_store=store.meta,
        epoch=1,
    )
    assert generate_main(["--config", str(cfg_path), "--model", "refd", "--layout", "original"]) == 0
    out = tmp_path / "exp" / "refd" / "embeddings"
    data = np.load(out / "eval.npz")
    assert data["embeddings"].shape[0] == 60 and data["logits"].shape == (60, 4)
    assert len(pd.read_csv(out / "eval.csv")) == 60
    assert len(list((out / "original" / "train").glob("*/*.npy"))) == 40
