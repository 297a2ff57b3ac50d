"""A tiny synthetic feature store (learnable: class-dependent means) and experiment for tests.

``make_toy_store(cfg)`` writes a finished store at ``store_dir(cfg)``; ``write_toy_experiment(root)``
writes a config (small AASIST and GE2E settings), the label map and the store, and returns the
config path. Known systems appear in train (several versions), dev and eval; unseen ones in dev
and/or eval only, one of them in an unseen language.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from sourcetracing.config import Config, load_config
from sourcetracing.data.protocols import LabelMap
from sourcetracing.features.store import finalize_store, store_dir, write_shard

SMALL_AASIST = {
    "in_proj_dim": 12,
    "first_pool": [2, 2],
    "filts": [[1, 4], [4, 8]],
    "gat_dims": [8, 8],
    "embedding_dim": 16,
    "node_attention_dim": 8,
    "dropout": 0.2,
}
SMALL_GE2E = {
    "encoder": {"name": "features", "features": {"hidden_dims": [16, 8], "channels": 16}},
    "n_systems": 3,
    "n_clips": 3,
    "epochs": 2,
    "steps_per_epoch": 4,
    "lr": 3e-3,
    "batch_size": 32,
    "select_clips_per_system": 5,
}


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


def write_store(directory: Path, parts: list[tuple[str, list[dict], np.ndarray]], meta: dict) -> Path:
    """Write one shard per ``(split, index rows, features)`` part and finalize the store."""
    names, annotated = [], []
    for split, rows, feats in parts:
        frame = pd.DataFrame(rows)
        write_shard(directory, split, feats, frame, fingerprint=f"toy-{split}")
        names.append(split)
        annotated.append(frame.drop(columns="version").drop_duplicates(["split", "clip_id"]))
    finalize_store(directory, names, {"config_hash": "toy", **meta}, pd.concat(annotated, ignore_index=True))
    return directory


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
    dev_ood: tuple[str, ...] | None = None,
    eval_ood: tuple[str, ...] | None = None,
) -> tuple[Path, LabelMap]:
    """Write a finished store at ``store_dir(cfg)``; returns its folder and the label map.

    Known systems ``sys_k0..`` appear in train, dev and eval; OOD systems ``sys_o0..`` in dev and
    eval (or in the ``dev_ood`` / ``eval_ood`` lists). Each system has its own mean feature vector
    (scaled by ``separation``) plus noise; OOD systems with an odd index speak an unseen language.
    """
    rng = np.random.default_rng(seed)
    known = [f"sys_k{i}" for i in range(n_known)]
    ood = [f"sys_o{i}" for i in range(n_ood)]
    label_map = LabelMap(known=known, ood=ood)
    means = {s: separation * rng.normal(size=dim).astype(np.float32) for s in known + ood}
    plan = [("train", known, train_per_class, train_versions)]
    plan.append(("dev", known + list(ood if dev_ood is None else dev_ood), eval_per_class, ("original",)))
    plan.append(("eval", known + list(ood if eval_ood is None else eval_ood), eval_per_class, ("original",)))
    parts = []
    for split, systems, per_class, versions in plan:
        rows, feats = [], []
        for s in systems:
            lang = "xx" if s in ood and int(s[-1]) % 2 else "en"
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
        parts.append((split, rows, np.stack(feats)))
    meta = {
        "shape": [frames, dim],
        "frontend": {"name": cfg.frontend.name, "toy": True},
        "sample_rate": 16000,
        "num_samples": 16000,
    }
    directory = write_store(store_dir(cfg), parts, meta)
    return directory, label_map


def write_toy_experiment(root: Path, overrides: dict | None = None, **store_options) -> Path:
    """A config (lfcc front end, small AASIST and GE2E), the label map and a toy store; returns the config path."""
    root = Path(root)
    cfg_dict: dict = {
        "name": "toy",
        "exp_dir": str(root / "exp"),
        "device": "cpu",
        "frontend": {"name": "lfcc"},
        "model": {"name": "aasist", "aasist": dict(SMALL_AASIST)},
        "train": {"epochs": 2, "batch_size": 16, "lr": 0.01, "lr_step": 2},
        "ge2e": dict(SMALL_GE2E),
        "ood": {"knn": {"k": 3}},
    }
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(cfg_dict.get(key), dict):
            cfg_dict[key] = {**cfg_dict[key], **value}
        else:
            cfg_dict[key] = value
    path = root / "toy.yaml"
    root.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg_dict, sort_keys=False))
    cfg = load_config(path)
    _, label_map = make_toy_store(cfg, **store_options)
    label_map.write(cfg.exp_dir)
    return path
