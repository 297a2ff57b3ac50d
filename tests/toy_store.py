"""A tiny synthetic feature store (learnable: class-dependent means) for tests and benchmarks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from sourcetracing.config import Config
from sourcetracing.data.protocols import LabelMap
from sourcetracing.features.store import finalize_store, store_dir, write_shard


def toy_index_row(
    split: str,
    system: str,
    language: str,
    version: str,
    number: int,
    label_map: LabelMap,
    seen_language: bool,
) -> dict:
    """The store index row of one synthetic clip ``./fake/<language>/<system>/<split>_<number>.wav``."""
    label = label_map.label(system)
    path = f"./fake/{language}/{system}/{split}_{number:04d}.wav"
    lang_cell = "seen_lang" if seen_language else "unseen_lang"
    return {
        "clip_id": path[2:],
        "split": split,
        "model_name": system,
        "label": label,
        "known": label >= 0,
        "language": language,
        "language_seen": seen_language,
        "cell": f"{lang_cell}/{'seen' if label >= 0 else 'unseen'}_model",
        "version": version,
        "path": path,
    }


def make_toy_store(
    cfg: Config,
    n_known: int = 4,
    n_ood: int = 2,
    frames: int = 20,
    dim: int = 12,
    train_per_class: int = 16,
    eval_per_class: int = 8,
    train_versions: tuple[str, ...] = ("original", "noise"),
    separation: float = 1.0,
    seed: int = 0,
) -> tuple[Path, LabelMap]:
    """Write a finished store at ``store_dir(cfg)``; returns its folder and the label map.

    Known systems ``sys_k0..`` appear in train, dev and eval; OOD systems ``sys_o0..`` only in dev
    and eval. Each system has its own mean feature vector (scaled by ``separation``) plus noise.
    """
    rng = np.random.default_rng(seed)
    known = [f"sys_k{i}" for i in range(n_known)]
    ood = [f"sys_o{i}" for i in range(n_ood)]
    label_map = LabelMap(known=known, ood=ood)
    means = {s: separation * rng.normal(size=dim).astype(np.float32) for s in known + ood}
    directory = store_dir(cfg)
    shard_names = []
    plan = [("train", known, train_per_class, train_versions)]
    plan += [(split, known + ood, eval_per_class, ("original",)) for split in ("dev", "eval")]
    for split, systems, per_class, versions in plan:
        rows, feats = [], []
        for s in systems:
            lang = "en" if s.endswith(("0", "2")) or split == "train" else "xx"
            for j in range(per_class):
                base = means[s] + rng.normal(scale=1.0, size=(frames, dim)).astype(np.float32)
                for v in versions:
                    x = (
                        base
                        if v == "original"
                        else base + rng.normal(scale=0.5, size=base.shape).astype(np.float32)
                    )
                    rows.append(toy_index_row(split, s, lang, v, j, label_map, seen_language=lang == "en"))
                    feats.append(x)
        write_shard(directory, split, np.stack(feats), pd.DataFrame(rows))
        shard_names.append(split)
    meta = {"shape": [frames, dim], "frontend": {"name": cfg.frontend.name, "toy": True}}
    finalize_store(directory, shard_names, meta)
    return directory, label_map
