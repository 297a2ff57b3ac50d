"""Whole-clip embeddings at test time: several windows of a long clip, averaged.

The original judges every dev/eval clip by one ``data.max_len_s`` crop from its start, so most of a
long clip is never seen. With ``features.test_windows: N`` (N > 1) the feature store holds, for
each dev and eval clip, ``N`` crops whose starts are spread evenly from the clip's start to its end
(the first is the original's crop, stored as version ``original``; the others as ``window1`` ...
``window<N-1>``); a clip no longer than the window gives ``N`` copies of its one (wrap-padded) crop.
The exporters run the model over every window and write one row per clip: the mean of its windows'
embeddings and logits. Train rows are unchanged (random crops, augmented copies).

>>> window_versions(3)
['original', 'window1', 'window2']
>>> window_starts(num_total=48000, num_samples=16000, windows=3)
[0, 16000, 32000]
>>> window_starts(num_total=8000, num_samples=16000, windows=3)
[0, 0, 0]
"""

from __future__ import annotations

import numpy as np
import pandas as pd

FIRST = "original"  # the first window is the original's crop from the start
PREFIX = "window"


def window_versions(windows: int) -> list[str]:
    """The store versions of ``windows`` test-time windows (``['original']`` for one)."""
    if windows < 1:
        raise ValueError(f"features.test_windows must be at least 1, got {windows}")
    return [FIRST] + [f"{PREFIX}{k}" for k in range(1, windows)]


def is_window_set(versions: list[str] | tuple[str, ...]) -> bool:
    """Whether these versions are a set of test-time windows (more than one)."""
    return len(versions) > 1 and list(versions) == window_versions(len(versions))


def window_starts(num_total: int, num_samples: int, windows: int) -> list[int]:
    """Start samples of ``windows`` crops of ``num_samples`` spread evenly over a clip of ``num_total``."""
    span = max(0, num_total - num_samples)
    if windows == 1:
        return [0]
    return [int(round(k * span / (windows - 1))) for k in range(windows)]


def window_crops(wave: np.ndarray, num_samples: int, windows: int) -> list[np.ndarray]:
    """The clip's ``windows`` crops (each exactly ``num_samples``; a short clip: wrap-padded copies)."""
    from sourcetracing.data.audio import crop_or_pad

    if len(wave) <= num_samples:
        one = crop_or_pad(wave, num_samples)
        return [one] * windows
    return [
        np.ascontiguousarray(wave[s : s + num_samples], dtype=np.float32)
        for s in window_starts(len(wave), num_samples, windows)
    ]


def stored_windows(meta: dict, split: str) -> list[str]:
    """The window versions a store holds for a split (``['original']`` when it holds one crop)."""
    versions = list(meta.get("versions", {}).get(split, [FIRST]))
    return versions if is_window_set(versions) else [FIRST]


def average_over_windows(rows: pd.DataFrame, *arrays: np.ndarray) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """One row per clip (its ``original`` row, in first-appearance order) and each array averaged over
    the clip's windows. Rows without a ``version`` column, or with one version, pass through."""
    if "version" not in rows or rows["version"].nunique() <= 1:
        return rows.reset_index(drop=True), list(arrays)
    rows = rows.reset_index(drop=True)
    codes, clips = pd.factorize(rows["clip_id"], sort=False)
    counts = np.bincount(codes, minlength=len(clips)).astype(np.float64)
    averaged = []
    for a in arrays:
        total = np.zeros((len(clips), *a.shape[1:]), dtype=np.float64)
        np.add.at(total, codes, a.astype(np.float64))
        averaged.append((total / counts.reshape(-1, *([1] * (a.ndim - 1)))).astype(a.dtype))
    first = rows[rows["version"] == FIRST]
    if len(first) != len(clips):
        raise ValueError("every clip needs its 'original' window to average over windows")
    first = first.set_index("clip_id").loc[clips].reset_index()
    return first[rows.columns], averaged
