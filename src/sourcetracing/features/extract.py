"""Step 1: crop, augment and extract features of every split into the float16 feature store.

Plan: per split, the clips in protocol order are grouped into shards of
``max(1, features.shard_size // n_versions)`` clips (all versions of a clip in one shard), named
``<split>-00000``, ... Shard k of the global list goes to rank ``k % world_size`` under torchrun.
A DataLoader decodes, crops and augments clips in worker processes while the front end runs
batched in the main process. Complete shards are kept on a rerun, so an interrupted run resumes;
batches never cross shard boundaries, so the result is identical to an uninterrupted run.
Unusable clips go to ``skipped.csv``; a split with too many of them stops the step before the
index is written.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from sourcetracing.config import Config, config_hash, resolve_device
from sourcetracing.data.audio import AudioError, clip_samples, crop_or_pad, load_audio
from sourcetracing.data.augment import VERSION_IDS, Augmenter, crop_rng
from sourcetracing.data.protocols import prepare_splits
from sourcetracing.distributed import DistInfo, barrier, init_distributed, rank_device
from sourcetracing.features.frontends import FrontEnd, build_frontend
from sourcetracing.features.store import (
    INDEX_COLUMNS,
    SKIPPED_COLUMNS,
    finalize_store,
    shard_complete,
    store_dir,
    store_settings,
    to_store_dtype,
    write_shard,
)

log = logging.getLogger(__name__)

# the index columns that come from the protocol (version, shard and row are added per stored row)
ROW_COLUMNS = [c for c in INDEX_COLUMNS if c not in ("version", "shard", "row")]


class ExtractionError(RuntimeError):
    """Feature extraction cannot finish (too many bad clips, missing shards, bad settings)."""


@dataclass
class ShardPlan:
    """One shard: its name, split, clips (annotated protocol rows) and the versions of each clip."""

    name: str
    split: str
    clips: pd.DataFrame
    versions: list[str]
    random_crop: bool


def split_versions(cfg: Config, split: str) -> list[str]:
    """The versions stored for a split: all configured ones when the split is augmented, else original."""
    if split in cfg.augment.splits:
        versions = list(cfg.augment.versions)
        unknown = [v for v in versions if v not in VERSION_IDS]
        if unknown:
            raise ExtractionError(f"unknown augment.versions {unknown}; known: {', '.join(VERSION_IDS)}")
        if len(set(versions)) != len(versions) or not versions:
            raise ExtractionError(
                f"augment.versions must be a non-empty list without repeats, got {versions}"
            )
        return versions
    return ["original"]


def plan_shards(cfg: Config, splits: dict[str, pd.DataFrame]) -> list[ShardPlan]:
    """The global, ordered list of shards (splits in config order, clips in protocol order)."""
    plans = []
    for split, df in splits.items():
        versions = split_versions(cfg, split)
        per_shard = max(1, int(cfg.features.shard_size) // len(versions))
        df = df.reset_index(drop=True)
        for k, start in enumerate(range(0, len(df), per_shard)):
            plans.append(
                ShardPlan(
                    f"{split}-{k:05d}", split, df.iloc[start : start + per_shard], versions, split == "train"
                )
            )
    return plans


@dataclass(frozen=True)
class ClipJob:
    """What a worker needs to make the waves of one clip."""

    path: str
    clip_id: str
    versions: tuple[str, ...]
    random_crop: bool


class ClipDataset(Dataset):
    """Decodes, crops and augments clips: item ``i`` -> ``(i, waves [V, S] or None, reason, detail)``."""

    def __init__(
        self, jobs: list[ClipJob], augmenter: Augmenter, sample_rate: int, num_samples: int, seed: int
    ):
        self.jobs = jobs
        self.augmenter = augmenter
        self.sample_rate = sample_rate
        self.num_samples = num_samples
        self.seed = seed

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, i: int):
        job = self.jobs[i]
        try:
            wave = load_audio(job.path, self.sample_rate)
        except AudioError as err:
            return i, None, err.reason, err.detail
        rng = crop_rng(self.seed, job.clip_id) if job.random_crop else None
        clean = crop_or_pad(wave, self.num_samples, rng)
        waves = self.augmenter.make_versions(clean, list(job.versions), self.seed, job.clip_id)
        return i, np.stack(waves), None, ""


def _identity(item):
    return item


@dataclass
class _ShardState:
    plan: ShardPlan
    pending: list[np.ndarray] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)
    features: list[np.ndarray] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)

    def n_pending(self) -> int:
        return sum(len(w) for w in self.pending)


def _run_frontend(frontend: FrontEnd, state: _ShardState, batch_size: int, final: bool) -> None:
    """Run full batches of the pending waves (and the remainder when ``final``)."""
    if not state.pending:
        return
    waves = np.concatenate(state.pending)
    n_full = len(waves) if final else (len(waves) // batch_size) * batch_size
    for start in range(0, n_full, batch_size):
        feats = frontend(torch.from_numpy(waves[start : min(start + batch_size, n_full)]))
        feats = to_store_dtype(feats).cpu().numpy()
        state.features.append(feats)
    state.pending = [waves[n_full:]] if n_full < len(waves) else []


def _write(directory: Path, state: _ShardState, shape: tuple[int, int]) -> None:
    feats = np.concatenate(state.features) if state.features else np.zeros((0, *shape), dtype=np.float16)
    rows = pd.DataFrame(state.rows, columns=[*ROW_COLUMNS, "version"])
    skipped = pd.DataFrame(state.skipped, columns=SKIPPED_COLUMNS)
    write_shard(directory, state.plan.name, feats, rows, skipped)


def broadcast_from_main(info: DistInfo, value):
    """Rank 0's ``value`` on every rank (a no-op in a single process)."""
    if not info.enabled:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _extract_shards(
    cfg: Config,
    plans: list[ShardPlan],
    directory: Path,
    device: torch.device,
    split_sizes: dict[str, int],
    info: DistInfo,
) -> None:
    """Compute and write the given shards (all of them missing) on this rank."""
    sample_rate = int(cfg.data.sample_rate)
    num_samples = clip_samples(cfg)
    frontend = build_frontend(cfg.frontend, device, sample_rate=sample_rate)
    shape = frontend.output_shape(num_samples)
    root = Path(cfg.data.root)
    jobs, owner, last_of = [], [], set()
    for s, plan in enumerate(plans):
        for path, clip_id in zip(plan.clips["path"], plan.clips["clip_id"], strict=True):
            jobs.append(ClipJob(str(root / path), clip_id, tuple(plan.versions), plan.random_crop))
            owner.append(s)
        last_of.add(len(jobs) - 1)
    states = {s: _ShardState(plan) for s, plan in enumerate(plans)}
    empty = [s for s, plan in enumerate(plans) if len(plan.clips) == 0]
    for s in empty:
        _write(directory, states.pop(s), shape)
    dataset = ClipDataset(jobs, Augmenter.from_config(cfg), sample_rate, num_samples, int(cfg.seed))
    workers = int(cfg.features.num_workers)
    loader = DataLoader(
        dataset,
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        collate_fn=_identity,
        prefetch_factor=4 if workers > 0 else None,
    )
    batch_size = max(1, int(cfg.features.batch_size))
    max_bad = float(cfg.data.max_bad_fraction)
    bad = Counter()
    checked_shape = False
    bar = tqdm(loader, total=len(jobs), desc=f"features (rank {info.rank})", unit="clip", position=info.rank)
    for i, waves, reason, detail in bar:
        state = states[owner[i]]
        plan = state.plan
        clip = plan.clips.iloc[len(state.rows) // len(plan.versions) + len(state.skipped)]
        if reason is not None:
            state.skipped.append(
                {"split": plan.split, "clip_id": clip["clip_id"], "path": clip["path"], "reason": reason}
            )
            log.debug("skipped %s: %s %s", clip["path"], reason, detail)
            bad[plan.split] += 1
            if bad[plan.split] > max_bad * split_sizes[plan.split]:
                raise ExtractionError(
                    f"split '{plan.split}': {bad[plan.split]} of {split_sizes[plan.split]} clips are unusable (more than "
                    f"data.max_bad_fraction={max_bad}); last one {clip['path']}: {reason} {detail}. "
                    "Fix the data (see the shards' .skipped.csv) or raise data.max_bad_fraction."
                )
        else:
            base = {c: clip[c] for c in ROW_COLUMNS}
            state.rows.extend({**base, "version": v} for v in plan.versions)
            state.pending.append(waves)
            if state.n_pending() >= batch_size:
                _run_frontend(frontend, state, batch_size, final=False)
        if i in last_of:
            _run_frontend(frontend, state, batch_size, final=True)
            if not checked_shape and state.features:
                got = tuple(state.features[0].shape[1:])
                if got != tuple(shape):
                    raise ExtractionError(f"front end produced frames {got}, expected {tuple(shape)}")
                checked_shape = True
            _write(directory, states.pop(owner[i]), shape)
    bar.close()


def _shard_shape(directory: Path, name: str) -> tuple[int, int]:
    arr = np.load(directory / "shards" / f"{name}.npy", mmap_mode="r")
    return int(arr.shape[1]), int(arr.shape[2])


def _finalize(cfg: Config, plans: list[ShardPlan], directory: Path, splits: dict[str, pd.DataFrame]) -> dict:
    """Check completeness and bad-clip fractions, then merge the index and write meta.json."""
    missing = [p.name for p in plans if not shard_complete(directory, p.name)]
    if missing:
        raise ExtractionError(
            f"{len(missing)} shard(s) missing after extraction (first: {missing[:3]}); rerun the step"
        )
    shard_dir = directory / "shards"
    counts: dict[str, dict] = {}
    problems = []
    for split, df in splits.items():
        names = [p.name for p in plans if p.split == split]
        skipped = [pd.read_csv(shard_dir / f"{n}.skipped.csv", keep_default_na=False) for n in names]
        rows = [
            pd.read_csv(shard_dir / f"{n}.csv", keep_default_na=False, usecols=["clip_id"]) for n in names
        ]
        n_skipped = sum(len(s) for s in skipped)
        reasons = Counter(r for s in skipped for r in s["reason"])
        counts[split] = {
            "clips": len(df),
            "stored_clips": len(df) - n_skipped,
            "rows": sum(len(r) for r in rows),
            "skipped": n_skipped,
            "skipped_reasons": dict(sorted(reasons.items())),
        }
        if len(df) and n_skipped > float(cfg.data.max_bad_fraction) * len(df):
            problems.append(f"split '{split}': {n_skipped} of {len(df)} clips unusable ({dict(reasons)})")
    if problems:
        raise ExtractionError(
            "too many unusable clips (data.max_bad_fraction="
            f"{cfg.data.max_bad_fraction}); no index written:\n  "
            + "\n  ".join(problems)
            + f"\nSee {shard_dir}/*.skipped.csv."
        )
    settings = store_settings(cfg)
    shape = _shard_shape(directory, plans[0].name) if plans else (0, 0)
    meta = {
        "frontend": dict(cfg.frontend),
        "layer": cfg.frontend.layer if cfg.frontend.name == "hf_ssl" else None,
        "shape": list(shape),
        "dtype": "float16",
        "config_hash": config_hash(settings),
        "settings": settings,
        "sample_rate": int(cfg.data.sample_rate),
        "num_samples": clip_samples(cfg),
        "versions": {split: split_versions(cfg, split) for split in splits},
        "counts": counts,
    }
    finalize_store(directory, [p.name for p in plans], meta)
    return meta


def summary_table(meta: dict) -> pd.DataFrame:
    """Per-split counts of a finished store (clips, stored clips, rows, skipped clips and why)."""
    table = pd.DataFrame(meta["counts"]).T
    table["skipped_reasons"] = table["skipped_reasons"].map(
        lambda d: ", ".join(f"{k}: {v}" for k, v in d.items()) or "-"
    )
    return table


def run_extraction(cfg: Config, info: DistInfo | None = None) -> Path:
    """Build (or resume) the feature store of ``cfg`` for all splits; returns its folder.

    Under ``torchrun`` each rank computes its shards and rank 0 finalizes the merged index.
    """
    device = resolve_device(cfg.device)
    info = info if info is not None else init_distributed(device)
    device = rank_device(device, info)
    splits, _ = prepare_splits(cfg)
    directory = store_dir(cfg)
    plans = plan_shards(cfg, splits)
    mine = [p for k, p in enumerate(plans) if k % info.world_size == info.rank]
    todo = [p for p in mine if not shard_complete(directory, p.name)]
    if info.is_main:
        who = f"rank 0 of {info.world_size}" if info.enabled else "this run"
        print(
            f"feature store {directory}: {len(plans)} shard(s); {who} computes {len(todo)} of {len(mine)} (the rest are done)"
        )
    if todo:
        split_sizes = {s: len(df) for s, df in splits.items()}
        _extract_shards(cfg, todo, directory, device, split_sizes, info)
    barrier(info)
    meta = None
    if info.is_main:
        meta = _finalize(cfg, plans, directory, splits)
        print(summary_table(meta).to_string())
        total_skipped = sum(c["skipped"] for c in meta["counts"].values())
        rows = sum(c["rows"] for c in meta["counts"].values())
        print(
            f"feature store written: {directory} ({rows} rows of {meta['shape'][0]}x{meta['shape'][1]} float16, "
            f"{total_skipped} clip(s) skipped -> skipped.csv)"
        )
    barrier(info)
    return directory
