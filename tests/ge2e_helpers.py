"""Helpers for the GE2E tests: a tiny synthetic feature store and the loop (reference) GE2E loss."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from sourcetracing.config import load_config
from sourcetracing.data.protocols import LabelMap
from sourcetracing.features.store import finalize_store, store_dir, write_shard
from toy_store import toy_index_row

KNOWN = ["sys_a", "sys_b", "sys_c", "sys_d"]
UNSEEN = ["sys_x", "sys_y", "sys_z"]


def write_synthetic_experiment(
    root: Path,
    frames: int = 16,
    dim: int = 10,
    per_system: int = 10,
    seed: int = 0,
    extra: dict | None = None,
) -> Path:
    """A config + finished feature store with learnable, class-dependent frame features.

    Train: 4 known systems (versions original + noise); dev: known + sys_x, sys_y; eval: known +
    sys_x, sys_z. Returns the config path.
    """
    rng = np.random.default_rng(seed)
    exp = root / "exp"
    cfg_dict = {
        "name": "synthetic",
        "exp_dir": str(exp),
        "device": "cpu",
        "frontend": {"name": "lfcc"},
        "ge2e": {
            "encoder": "features",
            "n_systems": 3,
            "n_clips": 3,
            "epochs": 2,
            "steps_per_epoch": 4,
            "lr": 3e-3,
            "hidden_dims": [16, 8],
            "channels": 16,
            "batch_size": 32,
            "knn_k": 3,
            "select_clips_per_system": 5,
        },
    }
    for key, value in (extra or {}).items():
        cfg_dict.setdefault(key, {}).update(value) if isinstance(value, dict) else cfg_dict.update(
            {key: value}
        )
    cfg_path = root / "synthetic.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg_dict))
    cfg = load_config(cfg_path)

    systems = KNOWN + UNSEEN
    means = {s: rng.normal(0, 2.0, size=dim) for s in systems}
    label_map = LabelMap(known=list(KNOWN), ood=list(UNSEEN))
    label_map.write(exp)
    layout = {
        "train": KNOWN,
        "dev": KNOWN + ["sys_x", "sys_y"],
        "eval": KNOWN + ["sys_x", "sys_z"],
    }
    directory = store_dir(cfg)
    names = []
    for split, split_systems in layout.items():
        versions = ["original", "noise"] if split == "train" else ["original"]
        rows, feats = [], []
        for s in split_systems:
            lang = "en" if s != "sys_z" else "xx"
            for i in range(per_system):
                for v in versions:
                    noise = 1.0 if v == "original" else 1.5
                    feats.append(means[s][None, :] + rng.normal(0, noise, size=(frames, dim)))
                    rows.append(toy_index_row(split, s, lang, v, i, label_map, seen_language=lang == "en"))
        write_shard(directory, split, np.stack(feats), pd.DataFrame(rows))
        names.append(split)
    finalize_store(directory, names, {"shape": [frames, dim], "frontend": {"name": "lfcc"}})
    return cfg_path
