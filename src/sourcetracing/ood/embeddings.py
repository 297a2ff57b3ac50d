"""Model outputs (logits and penultimate-layer embeddings) for rows of a feature store."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from sourcetracing.features.store import FeatureStore


@torch.no_grad()
def model_outputs(
    model: torch.nn.Module,
    store: FeatureStore,
    rows: pd.DataFrame,
    device: torch.device | str,
    batch_size: int = 256,
    desc: str = "outputs",
) -> tuple[np.ndarray, np.ndarray]:
    """Logits ``[n, K]`` and embeddings ``[n, E]`` (float32), exactly one row per input row, in order.

    The model must return ``(logits, embedding)`` from ``forward(x [B, T, D])``. Arrays are
    allocated from the first batch's widths and filled batch by batch, so no padding row exists.
    """
    model.eval()
    device = torch.device(device)
    n = len(rows)
    logits_out: np.ndarray | None = None
    emb_out: np.ndarray | None = None
    for start in tqdm(range(0, n, batch_size), desc=desc, unit="batch", leave=False):
        chunk = rows.iloc[start : start + batch_size]
        x = torch.from_numpy(store.load(chunk).astype(np.float32)).to(device)
        logits, emb = model(x)
        logits = logits.float().cpu().numpy()
        emb = emb.float().reshape(len(chunk), -1).cpu().numpy()
        if logits_out is None or emb_out is None:
            logits_out = np.empty((n, logits.shape[1]), dtype=np.float32)
            emb_out = np.empty((n, emb.shape[1]), dtype=np.float32)
        logits_out[start : start + len(chunk)] = logits
        emb_out[start : start + len(chunk)] = emb
    if logits_out is None or emb_out is None:
        raise ValueError("model_outputs: no rows given")
    return logits_out, emb_out
