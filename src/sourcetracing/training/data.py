"""Rows of the feature store used for training and evaluation, labelled by the experiment's label map."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from sourcetracing.config import Config
from sourcetracing.data.protocols import LabelMap, ProtocolError
from sourcetracing.features.store import FeatureDataset, FeatureStore


class BatchedFeatureDataset(FeatureDataset):
    """``FeatureDataset`` that also reads whole batches at once (``DataLoader`` calls ``__getitems__``).

    The rows of a batch are gathered per shard in sorted order from the memory map and converted to
    float32 in one step, instead of one row at a time plus a stacking collate. Use it with
    ``collate_fn=collate_batch``; the samples and their order are exactly those of ``FeatureDataset``.
    """

    def __getitems__(self, indices) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        idx = np.asarray(indices, dtype=np.int64)
        out = np.empty((len(idx), *self.store.frame_shape), dtype=np.float32)
        shards, rows = self._shards[idx], self._row[idx]
        for shard in np.unique(shards):
            sel = np.flatnonzero(shards == shard)
            order = np.argsort(rows[sel], kind="stable")
            out[sel[order]] = self.store.array(shard)[rows[sel][order]]
        labels = torch.from_numpy(np.asarray(self.labels[idx], dtype=np.int64))
        return torch.from_numpy(out), labels, torch.from_numpy(idx)


def collate_batch(batch):
    """The collate function for :class:`BatchedFeatureDataset` (batches arrive already stacked)."""
    return batch


def experiment_label_map(cfg: Config, store: FeatureStore) -> LabelMap:
    """The experiment's label map (``<exp_dir>/label_map.csv``), else one built from the store's train rows.

    Raises a clear error when the store holds train systems the label map does not know.
    """
    index = store.index
    train_systems = set(index.loc[index["split"] == "train", "model_name"])
    if not train_systems:
        raise ProtocolError(f"the feature store {store.directory} has no train rows")
    if (Path(cfg.exp_dir) / "label_map.csv").is_file():
        label_map = LabelMap.read(cfg.exp_dir)
        unknown = sorted(train_systems - set(label_map.known))
        if unknown:
            raise ProtocolError(
                f"{cfg.exp_dir}/label_map.csv does not list train systems {unknown[:5]} of the feature store "
                f"{store.directory}: the label map and the features come from different protocols; rerun "
                "scripts/preprocess_dataset.py"
            )
        return label_map
    known = sorted(train_systems)
    ood = sorted(set(index["model_name"]) - train_systems)
    return LabelMap(known=known, ood=ood)


def labelled(rows: pd.DataFrame, label_map: LabelMap) -> pd.DataFrame:
    """The rows with ``label`` recomputed from the label map (-1 = OOD)."""
    rows = rows.copy()
    rows["label"] = rows["model_name"].map(label_map.label).astype(int)
    return rows


def train_rows(store: FeatureStore, label_map: LabelMap, versions: Sequence[str] | None) -> pd.DataFrame:
    """Training rows (all stored versions unless ``versions`` is given)."""
    rows = labelled(store.select(split="train", versions=versions), label_map)
    rows = rows[rows["label"] >= 0]
    if rows.empty:
        have = sorted(store.select(split="train")["version"].unique())
        raise ProtocolError(
            f"no training rows for versions {versions} in {store.directory} (stored versions: {have})"
        )
    return rows


def known_rows(store: FeatureStore, label_map: LabelMap, split: str) -> pd.DataFrame:
    """Clean (``original`` version) rows of ``split`` from known systems."""
    rows = labelled(store.select(split=split, versions=["original"]), label_map)
    return rows[rows["label"] >= 0]


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    store: FeatureStore,
    rows: pd.DataFrame,
    device: torch.device,
    batch_size: int = 256,
    progress: bool = False,
    desc: str = "predict",
) -> tuple[np.ndarray, np.ndarray]:
    """``(logits [n, K], embeddings [n, E])`` for the rows, in their order (eval mode, no padding rows)."""
    from tqdm import tqdm

    model.eval()
    loader = DataLoader(
        BatchedFeatureDataset(store, rows), batch_size=batch_size, shuffle=False, collate_fn=collate_batch
    )
    logits, embs = [], []
    for x, _, _ in tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False):
        out, emb = model(x.to(device))
        logits.append(out.float().cpu().numpy())
        embs.append(emb.float().reshape(len(x), -1).cpu().numpy())
    if not logits:
        return np.zeros((0, 0), dtype=np.float32), np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(logits), np.concatenate(embs)
