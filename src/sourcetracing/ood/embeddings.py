"""Model outputs (logits and penultimate-layer embeddings) for rows of a feature store."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from sourcetracing.features.store import FeatureStore
from sourcetracing.training.data import predict


def model_outputs(
    model: torch.nn.Module,
    store: FeatureStore,
    rows: pd.DataFrame,
    device: torch.device | str,
    batch_size: int = 256,
    desc: str = "outputs",
) -> tuple[np.ndarray, np.ndarray]:
    """Logits ``[n, K]`` and embeddings ``[n, E]`` (float32), exactly one row per input row, in order.

    The model must return ``(logits, embedding)`` from ``forward(x [B, T, D])``; the batches are
    concatenated as they come, so no padding row exists (the original pre-allocated
    ``len(loader) * batch_size`` rows and never trimmed them).
    """
    if len(rows) == 0:
        raise ValueError("model_outputs: no rows given")
    return predict(model, store, rows, torch.device(device), batch_size, progress=True, desc=desc)
