"""Rows of the feature store used for training and export, labelled by the experiment's label map."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from sourcetracing.config import Config
from sourcetracing.data.protocols import LabelMap, ProtocolError, protocol_digest, read_protocol
from sourcetracing.errors import StaleInputError
from sourcetracing.features.store import FeatureDataset, FeatureStore, collate_batch
from sourcetracing.layout import ExperimentLayout
from sourcetracing.progress import progress
from sourcetracing.provenance import require_same


def experiment_label_map(cfg: Config, store: FeatureStore) -> LabelMap:
    """The experiment's label map (``label_map.csv``), checked against the store's train systems.

    Without ``label_map.csv`` (a store built elsewhere) it is derived from the store's train rows.
    A store older than the protocol files (edited labels, renamed systems) is :class:`StaleInputError`.
    """
    check_store_protocols(cfg, store)
    index = store.index
    train_systems = set(index.loc[index["split"] == "train", "model_name"])
    if not train_systems:
        raise ProtocolError(f"the feature store {store.directory} has no train rows")
    path = ExperimentLayout.of(cfg).label_map
    if path.is_file():
        label_map = LabelMap.read(cfg.exp_dir)
        if set(label_map.known) != train_systems:
            extra = sorted(train_systems - set(label_map.known))[:5]
            gone = sorted(set(label_map.known) - train_systems)[:5]
            raise StaleInputError(
                f"{path} and the feature store {store.directory} disagree on the train systems "
                f"(only in the store: {extra}, only in the label map: {gone}): rerun scripts/preprocess_dataset.py"
            )
        return label_map
    ood = sorted(set(index["model_name"]) - train_systems)
    return LabelMap(known=sorted(train_systems), ood=ood)


def check_store_protocols(cfg: Config, store: FeatureStore) -> None:
    """Stop when a protocol file changed since the store's index was built from it (when the file is at hand)."""
    recorded = store.meta.get("protocols") or {}
    for split, fname in cfg.data.splits.items():
        path = Path(cfg.data.protocols) / fname
        if split in recorded and path.is_file():
            require_same(
                recorded[split], protocol_digest(read_protocol(path)), f"the protocol {path}",
                "python scripts/preprocess_dataset.py --config <your config> (it relabels the store)",
            )  # fmt: skip


def labelled(rows: pd.DataFrame, label_map: LabelMap) -> pd.DataFrame:
    """The rows with ``label`` recomputed from the label map (-1 = OOD)."""
    rows = rows.copy()
    rows["label"] = rows["model_name"].map(label_map.label).astype(int)
    return rows


def train_rows(store: FeatureStore, label_map: LabelMap, versions: Sequence[str] | None) -> pd.DataFrame:
    """Training rows of known systems (all stored versions unless ``versions`` is given)."""
    rows = labelled(store.select(split="train", versions=versions), label_map)
    rows = rows[rows["label"] >= 0]
    if rows.empty:
        have = sorted(store.select(split="train")["version"].unique())
        raise ProtocolError(
            f"no training rows for versions {versions} in {store.directory} (stored versions: {have})"
        )
    return rows.reset_index(drop=True)


def known_rows(store: FeatureStore, label_map: LabelMap, split: str) -> pd.DataFrame:
    """Clean (``original`` version) rows of ``split`` from known systems."""
    rows = labelled(store.select(split=split, versions=["original"]), label_map)
    return rows[rows["label"] >= 0].reset_index(drop=True)


@torch.no_grad()
def run_over_rows(
    forward: Callable[[torch.Tensor], torch.Tensor | tuple[torch.Tensor, ...]],
    store: FeatureStore,
    rows: pd.DataFrame,
    device: torch.device,
    batch_size: int = 256,
    show_progress: bool = False,
    desc: str = "outputs",
) -> list[np.ndarray]:
    """Every output of ``forward`` for the rows, in their order, one row per input row (float32 arrays)."""
    loader = DataLoader(
        FeatureDataset(store, rows), batch_size=batch_size, shuffle=False, collate_fn=collate_batch
    )
    parts: list[list[np.ndarray]] = []
    for x, _, _ in progress(loader, show=show_progress, desc=desc, unit="batch", leave=False):
        out = forward(x.to(device))
        out = out if isinstance(out, tuple) else (out,)
        parts.append([o.float().reshape(len(x), -1).cpu().numpy() for o in out])
    if not parts:
        return []
    return [np.concatenate(col) for col in zip(*parts, strict=True)]


def predict(
    model: torch.nn.Module,
    store: FeatureStore,
    rows: pd.DataFrame,
    device: torch.device,
    batch_size: int = 256,
    show_progress: bool = False,
    desc: str = "predict",
) -> tuple[np.ndarray, np.ndarray]:
    """``(logits [n, K], embeddings [n, E])`` of a classifier for the rows, in their order (eval mode)."""
    model.eval()
    out = run_over_rows(model, store, rows, device, batch_size, show_progress, desc)
    if not out:
        return np.zeros((0, 0), dtype=np.float32), np.zeros((0, 0), dtype=np.float32)
    return out[0], out[1]
