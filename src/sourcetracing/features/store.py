"""The feature store: float16 shards (``.npy``, memory-mappable) plus an index and metadata.

Layout of one store (one folder per front-end configuration, named ``<frontend>-<hash>``)::

    meta.json              front end, layer, frame shape, dtype, config hash, counts
    index.csv              one row per stored clip x version (merged from the shard indexes)
    skipped.csv            clips that could not be used (path, reason)
    shards/<name>.npy      float16 [rows, frames, dim]
    shards/<name>.csv      the index rows of that shard (row = position inside the shard)
    shards/<name>.skipped.csv

Every shard file is written under a temporary name and renamed, so a shard is either complete
or absent; an interrupted run resumes by redoing only the absent shards.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from sourcetracing.config import Config, config_hash, features_dir

INDEX_COLUMNS = [
    "clip_id",
    "split",
    "model_name",
    "label",
    "known",
    "language",
    "language_seen",
    "cell",
    "version",
    "shard",
    "row",
    "path",
]
SKIPPED_COLUMNS = ["split", "clip_id", "path", "reason"]


FLOAT16_MAX = float(np.finfo(np.float16).max)


def to_store_dtype(features):
    """Front-end output as the store holds it: clamped to the float16 range, then float16 (torch tensor)."""
    import torch

    return features.clamp(-FLOAT16_MAX, FLOAT16_MAX).to(torch.float16)


class MissingFeaturesError(FileNotFoundError):
    """The feature store an experiment needs has not been built yet."""


def store_settings(cfg: Config) -> dict:
    """Everything that changes the stored features; its hash names the store folder."""
    return {
        "frontend": dict(cfg.frontend),
        "sample_rate": cfg.data.sample_rate,
        "max_len_s": cfg.data.max_len_s,
        "augment": {k: v for k, v in cfg.augment.items() if k not in ("musan", "rirs")},
        "seed": cfg.seed,
    }


def store_dir(cfg: Config) -> Path:
    """The folder of the store that matches this config's front-end settings."""
    return features_dir(cfg) / f"{cfg.frontend.name}-{config_hash(store_settings(cfg))}"


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    write(tmp)
    os.replace(tmp, path)


def write_shard(
    directory: str | Path,
    name: str,
    features: np.ndarray,
    rows: pd.DataFrame,
    skipped: pd.DataFrame | None = None,
) -> None:
    """Write one complete shard atomically: the array, its index rows, then its skipped list.

    The ``.csv`` is renamed last, so its presence marks the shard complete.
    """
    shard_dir = Path(directory) / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    if len(rows) != len(features):
        raise ValueError(f"shard {name}: {len(features)} feature rows but {len(rows)} index rows")
    rows = rows.copy()
    rows["shard"] = name
    rows["row"] = np.arange(len(rows))
    arr = np.ascontiguousarray(features, dtype=np.float16)

    def save_npy(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, arr)

    _atomic_write(shard_dir / f"{name}.npy", save_npy)
    skipped = skipped if skipped is not None else pd.DataFrame(columns=SKIPPED_COLUMNS)
    _atomic_write(shard_dir / f"{name}.skipped.csv", lambda tmp: skipped.to_csv(tmp, index=False))
    _atomic_write(shard_dir / f"{name}.csv", lambda tmp: rows[INDEX_COLUMNS].to_csv(tmp, index=False))


def shard_complete(directory: str | Path, name: str) -> bool:
    shard_dir = Path(directory) / "shards"
    return all((shard_dir / f"{name}{ext}").is_file() for ext in (".npy", ".csv", ".skipped.csv"))


def finalize_store(directory: str | Path, shard_names: Sequence[str], meta: dict) -> None:
    """Merge the shard indexes (in the given order) into ``index.csv`` and write ``meta.json``."""
    directory = Path(directory)
    shard_dir = directory / "shards"
    parts = [pd.read_csv(shard_dir / f"{n}.csv", keep_default_na=False) for n in shard_names]
    index = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=INDEX_COLUMNS)
    skipped_parts = [pd.read_csv(shard_dir / f"{n}.skipped.csv", keep_default_na=False) for n in shard_names]
    skipped_parts = [p for p in skipped_parts if len(p)]
    skipped = (
        pd.concat(skipped_parts, ignore_index=True)
        if skipped_parts
        else pd.DataFrame(columns=SKIPPED_COLUMNS)
    )
    _atomic_write(directory / "index.csv", lambda tmp: index.to_csv(tmp, index=False))
    _atomic_write(directory / "skipped.csv", lambda tmp: skipped.to_csv(tmp, index=False))
    meta = dict(meta, rows=len(index), skipped=len(skipped), shards=list(shard_names))
    _atomic_write(directory / "meta.json", lambda tmp: tmp.write_text(json.dumps(meta, indent=2)))


class FeatureStore:
    """Read access to a finished store: ``index`` (a DataFrame), ``meta`` and row loading."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        meta_path = self.directory / "meta.json"
        if not meta_path.is_file():
            raise MissingFeaturesError(
                f"no finished feature store in {self.directory}: run scripts/preprocess_dataset.py first"
            )
        self.meta = json.loads(meta_path.read_text())
        self.index = pd.read_csv(self.directory / "index.csv", keep_default_na=False)
        for col in ("known", "language_seen"):
            self.index[col] = self.index[col].astype(str).str.lower() == "true"
        self.index["label"] = self.index["label"].astype(int)
        self._arrays: dict[str, np.ndarray] = {}

    @classmethod
    def for_config(cls, cfg: Config) -> FeatureStore:
        """The store built for this config; a clear error naming the step to run when absent."""
        path = store_dir(cfg)
        if not (path / "meta.json").is_file():
            others = sorted(p.name for p in features_dir(cfg).glob("*-*") if (p / "meta.json").is_file())
            hint = f" (stores of other front-end settings exist: {others})" if others else ""
            raise MissingFeaturesError(
                f"features for this config not found in {path}{hint}: run "
                f"`python scripts/preprocess_dataset.py --config <your config>` first"
            )
        return cls(path)

    @property
    def frame_shape(self) -> tuple[int, int]:
        return tuple(self.meta["shape"])  # type: ignore[return-value]

    def array(self, shard: str) -> np.ndarray:
        if shard not in self._arrays:
            self._arrays[shard] = np.load(self.directory / "shards" / f"{shard}.npy", mmap_mode="r")
        return self._arrays[shard]

    def select(
        self,
        split: str | None = None,
        versions: Sequence[str] | None = None,
        known: bool | None = None,
    ) -> pd.DataFrame:
        """Index rows filtered by split, version list and known/unseen status."""
        df = self.index
        if split is not None:
            df = df[df["split"] == split]
        if versions is not None:
            df = df[df["version"].isin(list(versions))]
        if known is not None:
            df = df[df["known"] == known]
        return df

    def load(self, rows: pd.DataFrame) -> np.ndarray:
        """The float16 features of the given index rows, in their order: ``[n, frames, dim]``."""
        out = np.empty((len(rows), *self.frame_shape), dtype=np.float16)
        for i, (shard, row) in enumerate(zip(rows["shard"], rows["row"], strict=True)):
            out[i] = self.array(shard)[row]
        return out

    def __getstate__(self) -> dict:  # DataLoader workers reopen the memory maps themselves
        state = self.__dict__.copy()
        state["_arrays"] = {}
        return state


class FeatureDataset:
    """A torch-style dataset over some rows of a store: yields ``(float32 [T, D] tensor, label, position)``."""

    def __init__(self, store: FeatureStore, rows: pd.DataFrame):
        self.store = store
        self.rows = rows.reset_index(drop=True)
        self._shards = self.rows["shard"].to_numpy()
        self._row = self.rows["row"].to_numpy()
        self.labels = self.rows["label"].to_numpy()

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        import torch

        x = torch.from_numpy(np.asarray(self.store.array(self._shards[i])[self._row[i]], dtype=np.float32))
        return x, int(self.labels[i]), i
