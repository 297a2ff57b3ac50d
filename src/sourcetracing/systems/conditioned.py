"""Raw-audio clips that pass through a channel condition (seeded per clip) before the crop: what a
raw-audio encoder reads under a robustness condition."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from sourcetracing.data.audio import crop_or_pad, load_audio
from sourcetracing.features.store import StoreCondition
from sourcetracing.training.ge2e_data import AudioClips, ClipSource


class ConditionedAudioClips(AudioClips):
    """``AudioClips`` whose waves pass through a condition (seeded per clip) before the crop."""

    def __init__(self, rows: pd.DataFrame, condition: StoreCondition, **kwargs: Any):
        super().__init__(rows, **kwargs)
        self.condition = condition
        self.clip_ids = list(self.rows["clip_id"])

    def _read(self, pos: int, rng: np.random.Generator | None) -> np.ndarray:
        wave = self.condition.apply(
            load_audio(self.paths[pos], self.sample_rate), self.sample_rate, self.clip_ids[pos]
        )
        return np.asarray(crop_or_pad(wave, self.num_samples, rng=rng), dtype=np.float32)


@dataclass
class ConditionedAudioSource(ClipSource):
    """A raw-audio source whose clips pass through a condition."""

    condition: StoreCondition | None = None

    def dataset(self, rows: pd.DataFrame, train: bool) -> ConditionedAudioClips:
        return ConditionedAudioClips(rows, condition=self.condition, train=train, **self.audio)


__all__ = ["ConditionedAudioClips", "ConditionedAudioSource"]
