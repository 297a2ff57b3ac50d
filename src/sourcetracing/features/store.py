"""The feature store: float16 shards (``.npy``, memory-mappable) plus an index and metadata.

Layout of one store (one folder per front-end and audio setting, named ``<frontend>-<hash>``)::

    meta.json              store id, settings, frame shape, dtype, per-split counts of what was stored
    index.csv              one row per stored clip x version, labelled from the current protocols
    skipped.csv            clips that could not be used (split, clip_id, path, reason, detail)
    shards/<name>.npy      float16 [rows, frames, dim]
    shards/<name>.csv      the rows of that shard (clip_id, split, version, row)
    shards/<name>.skipped.csv
    shards/<name>.json     the shard's fingerprint, written last: its presence marks the shard complete

A shard's fingerprint covers everything its features depend on (the clips' paths, sizes and
modification times, crop and augmentation settings, the seed, the augmentation corpora), never
the system labels: a rerun reuses a shard only when its features would be identical, and the index
is rebuilt from the current protocols every time, so a relabelled or renamed system never leaves
a stale label behind.

A *condition store* (:class:`StoreCondition`) holds some splits (dev, eval) with every clip passed
through a channel condition (a codec, noise, a short clip, ...) before its deterministic crop, in
the same format, under ``<features root>/conditions/<condition>-<frontend>-<hash>/``; its hash
covers the front end, crop settings and the condition's transform, parameters, seed and splits.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sourcetracing.config import Config, config_hash
from sourcetracing.errors import MissingInputError
from sourcetracing.layout import ExperimentLayout
from sourcetracing.provenance import atomic_write_text, data_digest

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
SHARD_COLUMNS = ["clip_id", "split", "version", "row"]
SKIPPED_COLUMNS = ["split", "clip_id", "path", "reason", "detail"]
FLOAT16_MAX = float(np.finfo(np.float16).max)
CONDITIONS_DIR = "conditions"  # condition stores, inside the features root
CORPUS_PARAMS = ("musan", "rirs")  # transform parameters naming a corpus folder (hashed by content listing)


def to_store_dtype(features):
    """Front-end output as the store holds it: clamped to the float16 range, then float16 (torch tensor)."""
    import torch

    return features.clamp(-FLOAT16_MAX, FLOAT16_MAX).to(torch.float16)


class MissingFeaturesError(MissingInputError):
    """The feature store an experiment needs has not been built yet."""


def corpus_digest(folder: str | Path) -> str:
    """A digest of the audio files under a folder (relative names and sizes), so moving it changes nothing."""
    from sourcetracing.data.augment import list_audio_files

    root = Path(folder)
    return data_digest([[os.path.relpath(f, root), os.path.getsize(f)] for f in list_audio_files(str(root))])


@dataclass(frozen=True)
class StoreCondition:
    """A channel condition applied to every clip of ``splits`` before its crop (a condition store).

    ``condition`` is a :class:`sourcetracing.data.transforms.Condition`; each clip's random draws
    (noise segment, RIR, ...) come from ``condition_rng(seed, clip_id, condition name)``.
    """

    condition: Any
    seed: int
    splits: tuple[str, ...]

    @property
    def name(self) -> str:
        return str(self.condition.name)

    def apply(self, wave: np.ndarray, sample_rate: int, clip_id: str) -> np.ndarray:
        """The clip through the condition, seeded per clip and condition."""
        from sourcetracing.data.transforms import condition_rng

        return self.condition(wave, sample_rate, condition_rng(self.seed, clip_id, self.name))

    def settings(self) -> dict:
        """Plain data of everything the transformed audio depends on (corpus folders by their file listing)."""
        from sourcetracing.data.transforms import TRANSFORM_RECIPE

        params = {
            k: corpus_digest(v) if k in CORPUS_PARAMS else v for k, v in sorted(self.condition.params.items())
        }
        return {
            "name": self.name,
            "transform": self.condition.transform,
            "params": params,
            "seed": int(self.seed),
            "splits": list(self.splits),
            "recipe": TRANSFORM_RECIPE,
        }


def store_settings(cfg: Config, condition: StoreCondition | None = None) -> dict:
    """Everything that changes the stored features, apart from the clips themselves; its hash names the folder.

    A condition store stores no augmented versions: its settings are the front end, the crop and
    the condition's.
    """
    from sourcetracing.data.augment import AUGMENT_RECIPE
    from sourcetracing.features.frontends import frontend_settings

    audio = {
        "frontend": frontend_settings(cfg.frontend),
        "sample_rate": int(cfg.data.sample_rate),
        "max_len_s": float(cfg.data.max_len_s),
        "min_len_s": float(cfg.data.min_len_s),
    }
    if condition is not None:
        return {**audio, "condition": condition.settings()}
    if int(cfg.features.test_windows) > 1:  # absent at the default, so one-crop stores keep their folder
        audio["test_windows"] = int(cfg.features.test_windows)
    augment = {k: v for k, v in cfg.augment.items() if k not in ("musan", "rirs")}
    augment["recipe"] = AUGMENT_RECIPE
    return {**audio, "augment": augment, "seed": int(cfg.seed)}


def store_dir(cfg: Config, condition: StoreCondition | None = None) -> Path:
    """The folder of the store that matches this config's front-end, audio and augmentation settings
    (or, with ``condition``, of the condition store)."""
    root = ExperimentLayout.of(cfg).features_root
    name = f"{cfg.frontend.name}-{config_hash(store_settings(cfg, condition))}"
    return root / name if condition is None else root / CONDITIONS_DIR / f"{condition.name}-{name}"


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    write(tmp)
    os.replace(tmp, path)


def clean_shard_leftovers(directory: str | Path) -> int:
    """Remove temporary files of interrupted writes (shards, index, meta); returns how many were removed.

    Call it with the store's lock held: every temporary file then belongs to a dead writer.
    """
    directory = Path(directory)
    removed = 0
    for folder in (directory, directory / "shards"):
        for p in folder.glob(".*.tmp*") if folder.is_dir() else ():
            if p.is_file():
                p.unlink(missing_ok=True)
                removed += 1
    return removed


def mark_unfinished(directory: str | Path) -> None:
    """Withdraw a store's ``meta.json`` (its completeness marker) and index before anything in it changes.

    A step killed while shards are being replaced then leaves a store that reads as unfinished
    ("run preprocess_dataset.py") instead of an old index over new shard arrays.
    """
    directory = Path(directory)
    (directory / "meta.json").unlink(missing_ok=True)
    (directory / "index.csv").unlink(missing_ok=True)


def write_shard(
    directory: str | Path,
    name: str,
    features: np.ndarray,
    rows: pd.DataFrame,
    skipped: pd.DataFrame | None = None,
    fingerprint: str = "",
) -> None:
    """Write one complete shard atomically: array, rows, skipped list, then the fingerprint file.

    ``rows`` needs ``clip_id``, ``split`` and ``version``; the row number inside the shard is added.
    """
    shard_dir = Path(directory) / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    if len(rows) != len(features):
        raise ValueError(f"shard {name}: {len(features)} feature rows but {len(rows)} index rows")
    rows = rows.copy()
    rows["row"] = np.arange(len(rows))
    arr = np.ascontiguousarray(features, dtype=np.float16)

    def save_npy(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, arr)

    (shard_dir / f"{name}.json").unlink(missing_ok=True)  # incomplete until the fingerprint is back
    _atomic_write(shard_dir / f"{name}.npy", save_npy)
    skipped = skipped if skipped is not None else pd.DataFrame(columns=SKIPPED_COLUMNS)
    _atomic_write(shard_dir / f"{name}.skipped.csv", lambda tmp: skipped.to_csv(tmp, index=False))
    _atomic_write(shard_dir / f"{name}.csv", lambda tmp: rows[SHARD_COLUMNS].to_csv(tmp, index=False))
    info = {"name": name, "fingerprint": fingerprint, "rows": len(rows), "shape": list(arr.shape[1:])}
    _atomic_write(shard_dir / f"{name}.json", lambda tmp: tmp.write_text(json.dumps(info)))


def shard_fingerprint(directory: str | Path, name: str) -> str | None:
    """The fingerprint a complete shard was written with (None when the shard is absent or incomplete)."""
    shard_dir = Path(directory) / "shards"
    info = shard_dir / f"{name}.json"
    if not info.is_file() or not all(
        (shard_dir / f"{name}{e}").is_file() for e in (".npy", ".csv", ".skipped.csv")
    ):
        return None
    return json.loads(info.read_text()).get("fingerprint")


def finalize_store(
    directory: str | Path,
    shard_names: Sequence[str],
    meta: dict,
    annotated: pd.DataFrame | None = None,
) -> dict:
    """Merge the shards' rows (in order) into ``index.csv``, labelled from ``annotated``; write ``meta.json``.

    ``annotated`` holds the current protocol rows of every split (columns of :data:`INDEX_COLUMNS`
    apart from version/shard/row); without it the shard rows must carry those columns themselves.
    Shards of the folder that are not in ``shard_names`` (an older plan) are deleted. ``meta.json`` is
    withdrawn first and written last, so an interrupted call leaves a store that reads as unfinished.
    Returns the meta written (with ``store_id`` and per-split ``counts`` of what was stored).
    """
    directory = Path(directory)
    shard_dir = directory / "shards"
    mark_unfinished(directory)  # the old meta must never describe a new index or a pruned shard list
    keep = set(shard_names)
    for p in shard_dir.glob("*") if shard_dir.is_dir() else ():
        stem = p.name.split(".")[0]
        if stem and stem not in keep and not p.name.startswith("."):
            p.unlink()
    parts = []
    for n in shard_names:
        part = pd.read_csv(shard_dir / f"{n}.csv", keep_default_na=False)
        part["shard"] = n
        parts.append(part)
    rows = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=[*SHARD_COLUMNS, "shard"])
    if annotated is not None:
        labels = annotated[[c for c in INDEX_COLUMNS if c not in ("version", "shard", "row")]]
        index = rows[["clip_id", "split", "version", "shard", "row"]].merge(
            labels, on=["split", "clip_id"], how="left", validate="many_to_one"
        )
        missing = index["model_name"].isna()
        if missing.any():
            raise ValueError(f"{int(missing.sum())} stored rows are not in the protocols (stale shards)")
    else:
        index = rows
    index = index[INDEX_COLUMNS]
    skipped_parts = [pd.read_csv(shard_dir / f"{n}.skipped.csv", keep_default_na=False) for n in shard_names]
    skipped_parts = [p for p in skipped_parts if len(p)]
    skipped = (
        pd.concat(skipped_parts, ignore_index=True)
        if skipped_parts
        else pd.DataFrame(columns=SKIPPED_COLUMNS)
    )
    counts = {}
    for split, part in index.groupby("split", sort=False):
        counts[str(split)] = {
            "stored_clips": int(part["clip_id"].nunique()),
            "rows": len(part),
            "skipped": int((skipped["split"] == split).sum()) if len(skipped) else 0,
        }
    fingerprints = [shard_fingerprint(directory, n) for n in shard_names]
    index_text = index.to_csv(index=False)
    store_id = data_digest([meta.get("config_hash"), fingerprints, index_text])
    base = meta.get("counts", {})
    merged = {
        s: {**base.get(s, {}), **counts.get(s, {})} for s in [*base, *[s for s in counts if s not in base]]
    }
    meta = dict(
        meta,
        store_id=store_id,
        rows=len(index),
        skipped=len(skipped),
        shards=list(shard_names),
        counts=merged,
    )
    _atomic_write(directory / "index.csv", lambda tmp: tmp.write_text(index_text))
    _atomic_write(directory / "skipped.csv", lambda tmp: skipped.to_csv(tmp, index=False))
    atomic_write_text(directory / "meta.json", json.dumps(meta, indent=2, default=str))
    return meta


class FeatureStore:
    """Read access to a finished store: ``index`` (a DataFrame), ``meta``, ``store_id`` and row loading."""

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
            root = ExperimentLayout.of(cfg).features_root
            others = sorted(p.name for p in root.glob("*-*") if (p / "meta.json").is_file())
            hint = f" (stores of other settings exist: {others})" if others else ""
            raise MissingFeaturesError(
                f"features for this config not found in {path}{hint}: run "
                f"`python scripts/preprocess_dataset.py --config <your config>` first"
            )
        return cls(path)

    @property
    def store_id(self) -> str:
        return str(self.meta.get("store_id", ""))

    def read_lock(self):
        """A shared lock on the store for readers (training, export): an extraction cannot rewrite it meanwhile."""
        from sourcetracing.provenance import step_lock

        return step_lock(self.directory / ".lock", f"the feature store {self.directory}", shared=True)

    def provenance(self) -> dict:
        """What a model trained on this store records: the store id and how to compute its features again."""
        return {
            "store_id": self.store_id,
            "frontend": self.meta.get("frontend"),
            "sample_rate": self.meta.get("sample_rate"),
            "num_samples": self.meta.get("num_samples"),
        }

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
        shards, idx = rows["shard"].to_numpy(), rows["row"].to_numpy()
        for shard in pd.unique(shards):
            sel = np.flatnonzero(shards == shard)
            out[sel] = self.array(shard)[idx[sel]]
        return out

    def __getstate__(self) -> dict:  # DataLoader workers reopen the memory maps themselves
        state = self.__dict__.copy()
        state["_arrays"] = {}
        return state


class FeatureDataset:
    """A torch-style dataset over some rows of a store: ``(float32 [T, D] tensor, label, position)``.

    It also reads whole batches at once (``DataLoader`` calls ``__getitems__``): the rows of a batch
    are gathered per shard in sorted order from the memory map and converted to float32 in one
    step. Use it with ``collate_fn=collate_batch``.
    """

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

        pos = int(i[0]) if isinstance(i, (tuple, list)) else int(i)
        x = torch.from_numpy(
            np.asarray(self.store.array(self._shards[pos])[self._row[pos]], dtype=np.float32)
        )
        return x, int(self.labels[pos]), pos

    def __getitems__(self, indices):
        import torch

        idx = np.asarray(
            [int(i[0]) if isinstance(i, (tuple, list)) else int(i) for i in indices], dtype=np.int64
        )
        out = np.empty((len(idx), *self.store.frame_shape), dtype=np.float32)
        shards, rows = self._shards[idx], self._row[idx]
        for shard in np.unique(shards):
            sel = np.flatnonzero(shards == shard)
            order = np.argsort(rows[sel], kind="stable")
            out[sel[order]] = self.store.array(shard)[rows[sel][order]]
        labels = torch.from_numpy(np.asarray(self.labels[idx], dtype=np.int64))
        return torch.from_numpy(out), labels, torch.from_numpy(idx)


def collate_batch(batch):
    """The collate function for :class:`FeatureDataset` batches (they arrive already stacked)."""
    return batch
