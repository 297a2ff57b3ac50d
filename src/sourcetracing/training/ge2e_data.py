"""What the GE2E encoders read: cached frame features (``needs = "features"``) or raw audio (``"audio"``).

:func:`build_source` returns a :class:`ClipSource` with the train rows used for training (all
stored versions for a features encoder), the clean rows of every split for export, the label
map, and a ``dataset(rows, train)`` factory whose items are ``(tensor, label)``. :func:`embed_rows`
runs an encoder over rows of a source (the dev check during training, the export of embeddings).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from sourcetracing.components import ENCODERS
from sourcetracing.config import Config
from sourcetracing.data.audio import AudioError, clip_samples, crop_or_pad, load_audio
from sourcetracing.data.protocols import LabelMap
from sourcetracing.distributed import die_with_parent
from sourcetracing.features.store import FeatureDataset, FeatureStore, MissingFeaturesError
from sourcetracing.progress import progress
from sourcetracing.systems.outputs import split_order
from sourcetracing.training.data import experiment_label_map, labelled

log = logging.getLogger(__name__)

SYSTEM = "ge2e"
EVAL_VERSION = "original"


class FeatureClips(Dataset):
    """Rows of the feature store as ``(float32 [T, D], label)``; items may be ``(position, seed)`` pairs."""

    def __init__(self, store: FeatureStore, rows: pd.DataFrame):
        self.inner = FeatureDataset(store, rows)

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, item):
        x, label, _ = self.inner[item]
        return x, label


class AudioClips(Dataset):
    """Protocol rows as raw waveforms ``(float32 [samples], label)``, cropped/padded to ``num_samples``.

    ``train=True``: random crop seeded by the sampler's per-item seed; an unreadable clip is replaced
    by another clip of the same system (with a warning). ``train=False``: deterministic crop; an
    unreadable clip yields an all-NaN wave that the export drops.
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
        wave = load_audio(self.paths[pos], self.sample_rate)
        return np.asarray(crop_or_pad(wave, self.num_samples, rng=rng), dtype=np.float32)

    def __getitem__(self, item):
        pos, seed = (int(item[0]), int(item[1])) if isinstance(item, (tuple, list)) else (int(item), None)
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
    """Rows and datasets for one encoder input kind."""

    kind: str  # features | audio
    label_map: LabelMap
    train_rows: pd.DataFrame  # rows GE2E trains on
    frames: dict[str, pd.DataFrame]  # split -> clean rows (dev check, export)
    input_dim: int | None = None
    store: FeatureStore | None = None
    audio: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)

    def dataset(self, rows: pd.DataFrame, train: bool) -> Dataset:
        if self.kind == "features":
            assert self.store is not None
            return FeatureClips(self.store, rows)
        return AudioClips(rows, train=train, **self.audio)


def build_source(cfg: Config) -> ClipSource:
    """The GE2E data of this experiment (a clear error when a needed step has not run)."""
    needs = ENCODERS.get(cfg.ge2e.encoder.name).needs
    if needs == "features":
        store = FeatureStore.for_config(cfg)
        label_map = experiment_label_map(cfg, store)
        train_rows = labelled(store.select(split="train", versions=cfg.ge2e.versions), label_map)
        train_rows = train_rows[train_rows["label"] >= 0]
        if train_rows.empty:
            raise MissingFeaturesError(
                f"the feature store {store.directory} holds no train rows of known systems"
            )
        frames = {
            split: labelled(store.select(split=split, versions=[EVAL_VERSION]), label_map).reset_index(
                drop=True
            )
            for split in split_order(store.index["split"].unique())
        }
        provenance = {**store.provenance(), "label_map": label_map.digest()}
        return ClipSource(
            "features", label_map, train_rows.reset_index(drop=True), frames, int(store.frame_shape[1]), store,
            provenance=provenance,
        )  # fmt: skip
    from sourcetracing.data.protocols import prepare_splits, protocol_digest

    splits, label_map = prepare_splits(cfg)
    audio = {"root": cfg.data.root, "sample_rate": cfg.data.sample_rate, "num_samples": clip_samples(cfg)}
    provenance = {
        "protocols": {s: protocol_digest(df) for s, df in splits.items()},
        "label_map": label_map.digest(),
        "sample_rate": int(cfg.data.sample_rate),
        "num_samples": clip_samples(cfg),
    }
    frames = {s: df.reset_index(drop=True) for s, df in splits.items()}
    return ClipSource("audio", label_map, frames["train"], frames, audio=audio, provenance=provenance)


def subsample_per_system(rows: pd.DataFrame, per_system: int, seed: int) -> pd.DataFrame:
    """At most ``per_system`` rows of each system (seeded); ``0`` keeps everything."""
    if per_system <= 0 or rows.empty:
        return rows
    parts = [
        grp.sample(n=min(per_system, len(grp)), random_state=seed)
        for _, grp in rows.groupby("model_name", sort=True)
    ]
    return pd.concat(parts).sort_index()


def collate_pairs(batch):
    xs, labels = zip(*batch, strict=True)
    return torch.stack(xs), torch.tensor(labels)


@torch.no_grad()
def embed_rows(
    encoder: torch.nn.Module,
    source: ClipSource,
    rows,
    device: torch.device,
    batch_size: int,
    num_workers: int = 0,
    desc: str = "embeddings",
    show_progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings ``[n_valid, E]`` of the rows and the mask of rows kept (unreadable audio is dropped)."""
    was_training = encoder.training
    encoder.eval()
    loader = DataLoader(
        source.dataset(rows, train=False),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        worker_init_fn=die_with_parent if num_workers else None,
        collate_fn=collate_pairs,
    )
    parts, valid = [], []
    for x, _ in progress(loader, show=show_progress, desc=desc, leave=False):
        ok = ~torch.isnan(x.flatten(1)).any(dim=1)
        valid.append(ok.numpy())
        if ok.any():
            parts.append(encoder(x[ok].to(device)).float().cpu().numpy())
    encoder.train(was_training)
    dim = int(getattr(encoder, "embedding_dim", 0))
    emb = np.concatenate(parts) if parts else np.zeros((0, dim), dtype=np.float32)
    mask = np.concatenate(valid) if valid else np.zeros(0, dtype=bool)
    return emb.astype(np.float32), mask
