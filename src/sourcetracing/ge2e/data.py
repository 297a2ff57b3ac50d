"""What the GE2E encoders read: cached frame features (``features``) or raw audio (``hf_ssl``).

:func:`build_source` returns a :class:`ClipSource` with the train rows used for training (all
stored versions for the features encoder), the clean rows of every split for evaluation, the
label map, and a ``dataset(rows, train)`` factory whose items are ``(tensor, label)``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from sourcetracing.config import Config
from sourcetracing.data.audio import clip_samples
from sourcetracing.data.protocols import LabelMap, ProtocolError
from sourcetracing.features.store import FeatureDataset, FeatureStore, MissingFeaturesError

log = logging.getLogger(__name__)

EVAL_VERSION = "original"
FRAME_COLUMNS = ["clip_id", "model_name", "label", "known", "language", "cell"]


def _position(item) -> tuple[int, int | None]:
    """Dataset items are plain positions or ``(position, crop_seed)`` pairs from the batch sampler."""
    if isinstance(item, (tuple, list)):
        return int(item[0]), int(item[1])
    return int(item), None


class FeatureClips(Dataset):
    """Rows of the feature store as ``(float32 [T, D], label)``."""

    def __init__(self, store: FeatureStore, rows: pd.DataFrame):
        self.inner = FeatureDataset(store, rows)

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, item):
        pos, _ = _position(item)
        x, label, _ = self.inner[pos]
        return x, label


class AudioClips(Dataset):
    """Protocol rows as raw waveforms ``(float32 [samples], label)``, cropped/padded to ``num_samples``.

    ``train=True``: random crop seeded by the sampler's per-item seed; an unreadable clip is replaced
    by another clip of the same system (with a warning). ``train=False``: deterministic crop; an
    unreadable clip yields an all-NaN wave that :func:`sourcetracing.ge2e.evaluate.embed_rows` drops.
    """

    def __init__(self, rows: pd.DataFrame, root: str | Path, sample_rate: int, num_samples: int, train: bool):
        self.rows = rows.reset_index(drop=True)
        self.paths = [str(Path(root) / p) for p in self.rows["path"]]
        self.labels = self.rows["label"].to_numpy().astype(int)
        self.sample_rate = int(sample_rate)
        self.num_samples = int(num_samples)
        self.train = train
        self._by_label = {lab: np.flatnonzero(self.labels == lab) for lab in np.unique(self.labels)}

    def __len__(self) -> int:
        return len(self.rows)

    def _read(self, pos: int, rng: np.random.Generator | None) -> np.ndarray:
        from sourcetracing.data.audio import crop_or_pad, load_audio

        wave = load_audio(self.paths[pos], self.sample_rate)
        return np.asarray(crop_or_pad(wave, self.num_samples, rng=rng), dtype=np.float32)

    def __getitem__(self, item):
        from sourcetracing.data.audio import AudioError

        pos, seed = _position(item)
        rng = np.random.default_rng(seed) if (self.train and seed is not None) else None
        try:
            wave = self._read(pos, rng)
        except AudioError as err:
            if not self.train:
                log.warning("skipping unreadable clip %s: %s", self.paths[pos], err)
                return torch.full((self.num_samples,), float("nan")), int(self.labels[pos])
            alternatives = self._by_label[self.labels[pos]]
            pick = np.random.default_rng(seed)
            for _ in range(10):
                other = int(alternatives[pick.integers(len(alternatives))])
                try:
                    wave = self._read(other, rng)
                    log.warning(
                        "unreadable clip %s (%s): used %s instead", self.paths[pos], err, self.paths[other]
                    )
                    break
                except AudioError:
                    continue
            else:
                raise RuntimeError(f"no readable clip found for system of {self.paths[pos]}") from err
        return torch.from_numpy(wave), int(self.labels[pos])


@dataclass
class ClipSource:
    """Rows and datasets for one encoder kind."""

    kind: str  # features | audio
    label_map: LabelMap
    train_rows: pd.DataFrame  # rows GE2E trains on
    frames: dict[str, pd.DataFrame]  # split -> clean rows (evaluation, embeddings)
    input_dim: int | None = None
    store_meta: dict | None = None
    store: FeatureStore | None = None
    audio: dict = field(default_factory=dict)

    def dataset(self, rows: pd.DataFrame, train: bool) -> Dataset:
        if self.kind == "features":
            assert self.store is not None
            return FeatureClips(self.store, rows)
        return AudioClips(rows, train=train, **self.audio)


def _label_map_for(cfg: Config, index: pd.DataFrame) -> LabelMap:
    """The experiment's label map (``label_map.csv``), else the one implied by the rows' train split."""
    try:
        return LabelMap.read(cfg.exp_dir)
    except ProtocolError:  # not written yet (e.g. a store built elsewhere): derive it the same way
        train = index[index["split"] == "train"]
        return LabelMap.from_train(train, [index[index["split"] != "train"]])


def build_source(cfg: Config) -> ClipSource:
    """The GE2E data of this experiment (raises a clear error when a needed step has not run)."""
    if cfg.ge2e.encoder == "features":
        store = FeatureStore.for_config(cfg)
        index = store.index
        train_rows = store.select(split="train", versions=cfg.ge2e.versions)
        train_rows = train_rows[train_rows["label"] >= 0]
        if train_rows.empty:
            raise MissingFeaturesError(f"the feature store {store.directory} holds no train rows")
        frames = {
            split: store.select(split=split, versions=[EVAL_VERSION]).reset_index(drop=True)
            for split in _split_order(index["split"].unique())
        }
        label_map = _label_map_for(cfg, index)
        _check_labels(label_map, index)
        input_dim = int(store.frame_shape[1])
        return ClipSource(
            "features", label_map, train_rows.reset_index(drop=True), frames, input_dim, store.meta, store
        )
    if cfg.ge2e.encoder == "hf_ssl":
        from sourcetracing.data.protocols import prepare_splits

        splits, label_map = prepare_splits(cfg)
        skipped: set[str] = set()
        try:  # leave out clips the feature extraction found unreadable, when that step has run
            store = FeatureStore.for_config(cfg)
            skipped_csv = store.directory / "skipped.csv"
            if skipped_csv.is_file():
                skipped = set(pd.read_csv(skipped_csv, keep_default_na=False)["clip_id"].astype(str))
        except MissingFeaturesError:
            pass
        frames = {s: df[~df["clip_id"].isin(skipped)].reset_index(drop=True) for s, df in splits.items()}
        audio = {
            "root": cfg.data.root,
            "sample_rate": cfg.data.sample_rate,
            "num_samples": clip_samples(cfg),
        }
        return ClipSource("audio", label_map, frames["train"], frames, audio=audio)
    raise ValueError(f"unknown ge2e.encoder {cfg.ge2e.encoder!r}; choose 'features' or 'hf_ssl'")


def _split_order(names) -> list[str]:
    order = {"train": 0, "dev": 1, "eval": 2}
    return sorted(names, key=lambda s: (order.get(s, 3), s))


def _check_labels(label_map: LabelMap, index: pd.DataFrame) -> None:
    """The store's labels must agree with the label map (else the store is from another train split)."""
    sample = index.drop_duplicates("model_name")
    wrong = [
        m for m, lab in zip(sample["model_name"], sample["label"], strict=True) if label_map.label(m) != lab
    ]
    if wrong:
        raise ValueError(
            f"the feature store's labels disagree with the experiment's label map for {wrong[:5]}: "
            "rebuild the features or point exp_dir at the right experiment"
        )


def subsample_per_system(rows: pd.DataFrame, per_system: int, seed: int) -> pd.DataFrame:
    """At most ``per_system`` rows of each system (seeded); ``0`` keeps everything."""
    if per_system <= 0 or rows.empty:
        return rows
    parts = [
        grp.sample(n=min(per_system, len(grp)), random_state=seed)
        for _, grp in rows.groupby("model_name", sort=True)
    ]
    return pd.concat(parts).sort_index()
