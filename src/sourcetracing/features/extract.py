"""Stage 1: crop, augment and extract features of every split into the float16 feature store.

Plan: per split, the clips in protocol order are grouped into shards of
``max(1, features.shard_size // n_versions)`` clips (all versions of a clip in one shard), named
``<split>-00000``, ... Shard k of the global list goes to rank ``k % world_size`` under torchrun.
A DataLoader decodes, crops and augments clips in worker processes (which die with their parent)
while the front end runs batched in the main process; finished shards are written by a writer
thread so the front end never waits for the disk.

Each shard carries a fingerprint of what its features depend on; a rerun recomputes exactly the
shards whose fingerprint changed (another shard size, a changed clip list, a changed file, another
augmentation corpus) and keeps the others, so an interrupted run resumes and gives the identical
store. The index is rebuilt from the current protocols every time. Before any shard changes, the
store's ``meta.json`` (its completeness marker) is withdrawn, so a run killed mid-way leaves a store
that reads as unfinished, never an old index over new shard arrays. Unusable clips go to
``skipped.csv`` with the reason; a split with too many of them stops the step before the index is
written, naming a file that lists them.

With a :class:`~sourcetracing.features.store.StoreCondition` the same path builds a condition
store: only the condition's splits, each clip decoded, passed through the condition (seeded per
clip), then cropped deterministically and stored as the ``original`` version; a clip the condition
cannot process is skipped with reason ``transform_failed``.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from sourcetracing.config import Config, config_hash, resolve_device
from sourcetracing.data.audio import AudioError, clip_samples, crop_or_pad, load_audio
from sourcetracing.data.augment import VERSION_IDS, Augmenter, AugmentError, crop_rng, list_audio_files
from sourcetracing.data.protocols import prepare_splits, protocol_digest, split_summary
from sourcetracing.distributed import DistInfo, barrier, die_with_parent, init_distributed, rank_device
from sourcetracing.errors import ConfigError, DataError
from sourcetracing.features.frontends import FrontEnd, build_frontend
from sourcetracing.features.store import (
    SKIPPED_COLUMNS,
    StoreCondition,
    clean_shard_leftovers,
    finalize_store,
    mark_unfinished,
    shard_fingerprint,
    store_dir,
    store_settings,
    to_store_dtype,
    write_shard,
)
from sourcetracing.features.windows import is_window_set, window_crops, window_versions
from sourcetracing.progress import progress
from sourcetracing.provenance import data_digest, step_lock

log = logging.getLogger(__name__)


class ExtractionError(DataError):
    """Feature extraction cannot finish (too many bad clips, missing shards, bad settings)."""


@dataclass(frozen=True)
class ExtractionStats:
    """What one rank extracted: clips read, feature rows stored (clips x versions) and seconds from
    the first clip to the last shard written (model loading, planning and the index excluded)."""

    clips: int
    rows: int
    seconds: float

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("nan")


@dataclass
class ShardPlan:
    """One shard: its name, split, clips (annotated protocol rows), versions and fingerprint."""

    name: str
    split: str
    clips: pd.DataFrame
    versions: list[str]
    random_crop: bool
    fingerprint: str = ""


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
    if split == "train":
        return ["original"]
    return window_versions(int(cfg.features.test_windows))  # dev/eval: one crop, or test-time windows


def _file_stamp(path: Path) -> list:
    try:
        st = path.stat()
    except OSError:
        return [None, None]
    return [st.st_size, st.st_mtime_ns]


def augmentation_sources(cfg: Config) -> str:
    """A digest of the augmentation corpora (file names and sizes under MUSAN and RIRS_NOISES)."""
    folders = [Path(cfg.augment.musan) / v for v in ("noise", "music", "speech")]
    folders.append(Path(cfg.augment.rirs) / "simulated_rirs")
    listing = []
    for folder in folders:
        for f in list_audio_files(str(folder)):
            listing.append([os.path.relpath(f, folder.parent), _file_stamp(Path(f))[0]])
    return data_digest(listing)


def plan_shards(
    cfg: Config, splits: dict[str, pd.DataFrame], condition: StoreCondition | None = None
) -> list[ShardPlan]:
    """The global, ordered list of shards (splits in config order, clips in protocol order), fingerprinted."""
    settings = config_hash(store_settings(cfg, condition))
    root = Path(cfg.data.root)
    sources = None
    plans = []
    for split, df in splits.items():
        versions = ["original"] if condition is not None else split_versions(cfg, split)
        random_crop = split == "train" and condition is None
        augmented = versions != ["original"]
        if augmented and sources is None:
            sources = augmentation_sources(cfg)
        per_shard = max(1, int(cfg.features.shard_size) // len(versions))
        df = df.reset_index(drop=True)
        for k, start in enumerate(range(0, len(df), per_shard)):
            clips = df.iloc[start : start + per_shard]
            stamps = [
                [c, p, *_file_stamp(root / p)] for c, p in zip(clips["clip_id"], clips["path"], strict=True)
            ]
            name = f"{split}-{k:05d}"
            fingerprint = data_digest(
                [settings, name, versions, random_crop, stamps, sources if augmented else None]
            )
            plans.append(ShardPlan(name, split, clips, versions, random_crop, fingerprint))
    return plans


@dataclass(frozen=True)
class ClipJob:
    """What a worker needs to make the waves of one clip."""

    path: str
    clip_id: str
    versions: tuple[str, ...]
    random_crop: bool
    windows: int = 1  # > 1: the versions are test-time windows of the clip, not augmented copies


class ClipDataset(Dataset):
    """Decodes, crops and augments clips: item ``i`` -> ``(i, waves [V, S] or None, reason, detail)``."""

    def __init__(
        self,
        jobs: list[ClipJob],
        augmenter: Augmenter,
        sample_rate: int,
        num_samples: int,
        seed: int,
        min_len_s: float = 0.0,
        condition: StoreCondition | None = None,
    ):
        self.jobs = jobs
        self.augmenter = augmenter
        self.sample_rate = sample_rate
        self.num_samples = num_samples
        self.seed = seed
        self.min_len_s = min_len_s
        self.condition = condition

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, i: int):
        job = self.jobs[i]
        try:
            wave = load_audio(job.path, self.sample_rate, min_len_s=self.min_len_s)
        except AudioError as err:
            return i, None, err.reason, err.detail
        if self.condition is not None:
            from sourcetracing.data.transforms import TransformError

            try:
                wave = self.condition.apply(wave, self.sample_rate, job.clip_id)
            except (TransformError, AugmentError, AudioError) as err:
                return i, None, "transform_failed", f"{self.condition.name}: {err}"
        if job.windows > 1:
            return i, np.stack(window_crops(wave, self.num_samples, job.windows)), None, ""
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
    features: list[np.ndarray | _HostCopy] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    seen: int = 0

    def n_pending(self) -> int:
        return sum(len(w) for w in self.pending)


class _HostCopy:
    """Features on their way from the GPU to pinned host memory (the copy runs behind later work)."""

    def __init__(self, features: torch.Tensor):
        self.host = torch.empty(features.shape, dtype=features.dtype, pin_memory=True)
        self.host.copy_(features, non_blocking=True)
        self.done = torch.cuda.Event()
        self.done.record()

    def numpy(self) -> np.ndarray:
        """The features in ordinary host memory, once the copy has finished."""
        self.done.synchronize()
        return self.host.numpy().copy()  # frees the pinned block for the next batches


def _settle(state: _ShardState, keep_last: bool) -> None:
    """Turn finished GPU->host copies into arrays (all of them, or all but the newest)."""
    stop = len(state.features) - 1 if keep_last else len(state.features)
    for k in range(stop):
        if isinstance(state.features[k], _HostCopy):
            state.features[k] = state.features[k].numpy()


def _run_frontend(frontend: FrontEnd, state: _ShardState, batch_size: int, final: bool) -> None:
    """Run full batches of the pending waves (and the remainder when ``final``).

    On CUDA the waves go up through pinned memory and the features come back by an asynchronous
    copy that is collected one batch later, so the GPU computes while the host gathers the next
    batch; at the end of a shard every copy is collected.
    """
    if not state.pending:
        if final:
            _settle(state, keep_last=False)
        return
    waves = np.concatenate(state.pending)
    n_full = len(waves) if final else (len(waves) // batch_size) * batch_size
    for start in range(0, n_full, batch_size):
        batch = torch.from_numpy(waves[start : min(start + batch_size, n_full)])
        try:
            feats = to_store_dtype(frontend(batch))
            state.features.append(_HostCopy(feats) if feats.is_cuda else feats.numpy())
        except torch.OutOfMemoryError as err:
            raise ExtractionError(
                f"out of GPU memory at features.batch_size={batch_size} (clip versions per batch): try "
                f"features.batch_size={max(1, batch_size // 2)}"
            ) from err
        _settle(state, keep_last=True)
    state.pending = [waves[n_full:]] if n_full < len(waves) else []
    if final:
        _settle(state, keep_last=False)


def _write(directory: Path, state: _ShardState, shape: tuple[int, int]) -> None:
    feats = np.concatenate(state.features) if state.features else np.zeros((0, *shape), dtype=np.float16)
    rows = pd.DataFrame(state.rows, columns=["clip_id", "split", "version"])
    skipped = pd.DataFrame(state.skipped, columns=SKIPPED_COLUMNS)
    write_shard(directory, state.plan.name, feats, rows, skipped, fingerprint=state.plan.fingerprint)


def broadcast_from_main(info: DistInfo, value):
    """Rank 0's ``value`` on every rank (a no-op in a single process)."""
    if not info.enabled:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class _Writer:
    """Writes finished shards on a background thread (at most ``depth`` waiting), errors re-raised."""

    def __init__(self, depth: int = 2):
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-writer")
        self.pending: list[Future] = []
        self.depth = depth

    def submit(self, fn, *args) -> None:
        self.pending.append(self.pool.submit(fn, *args))
        while len(self.pending) > self.depth:
            self.pending.pop(0).result()

    def close(self) -> None:
        try:
            for f in self.pending:
                f.result()
        finally:
            self.pool.shutdown(wait=True)


def _extract_shards(
    cfg: Config,
    plans: list[ShardPlan],
    directory: Path,
    device: torch.device,
    split_sizes: dict[str, int],
    info: DistInfo,
    condition: StoreCondition | None = None,
) -> ExtractionStats:
    """Compute and write the given shards on this rank; returns how many clips and rows took how long."""
    sample_rate = int(cfg.data.sample_rate)
    num_samples = clip_samples(cfg)
    frontend = build_frontend(cfg.frontend, device, sample_rate=sample_rate)
    shape = frontend.output_shape(num_samples)
    root = Path(cfg.data.root)
    jobs, owner, last_of = [], [], set()
    for s, plan in enumerate(plans):
        for path, clip_id in zip(plan.clips["path"], plan.clips["clip_id"], strict=True):
            windows = len(plan.versions) if is_window_set(plan.versions) else 1
            jobs.append(ClipJob(str(root / path), clip_id, tuple(plan.versions), plan.random_crop, windows))
            owner.append(s)
        last_of.add(len(jobs) - 1)
    states = {s: _ShardState(plan) for s, plan in enumerate(plans)}
    writer = _Writer()
    for s in [s for s, plan in enumerate(plans) if len(plan.clips) == 0]:
        writer.submit(_write, directory, states.pop(s), shape)
    dataset = ClipDataset(
        jobs, Augmenter.from_config(cfg), sample_rate, num_samples, int(cfg.seed), float(cfg.data.min_len_s),
        condition,
    )  # fmt: skip
    workers = int(cfg.features.num_workers)
    loader = DataLoader(
        dataset,
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        collate_fn=_identity,
        prefetch_factor=4 if workers > 0 else None,
        worker_init_fn=die_with_parent if workers > 0 else None,
    )
    batch_size = int(cfg.features.batch_size)
    max_bad = float(cfg.data.max_bad_fraction)
    bad = Counter()
    bad_rows: list[dict] = []
    checked_shape = False
    bar = progress(
        loader, total=len(jobs), desc=f"features (rank {info.rank})", unit="clip", position=info.rank
    )
    rows = 0
    start = time.perf_counter()
    try:
        for i, waves, reason, detail in bar:
            state = states[owner[i]]
            plan = state.plan
            clip = plan.clips.iloc[state.seen]
            state.seen += 1
            if reason is not None:
                row = {
                    "split": plan.split,
                    "clip_id": clip["clip_id"],
                    "path": clip["path"],
                    "reason": reason,
                    "detail": detail,
                }
                state.skipped.append(row)
                bad_rows.append(row)
                log.debug("skipped %s: %s %s", clip["path"], reason, detail)
                bad[plan.split] += 1
                if bad[plan.split] > max_bad * split_sizes[plan.split]:
                    partial = directory / f"skipped_partial_rank{info.rank}.csv"
                    pd.DataFrame(bad_rows, columns=SKIPPED_COLUMNS).to_csv(partial, index=False)
                    raise ExtractionError(
                        f"split '{plan.split}': {bad[plan.split]} of {split_sizes[plan.split]} clips are unusable "
                        f"(more than data.max_bad_fraction={max_bad}); last one {clip['path']}: {reason}: {detail}. "
                        f"The unusable clips found so far are listed in {partial}. Fix the data or raise "
                        "data.max_bad_fraction."
                    )
            else:
                state.rows.extend(
                    {"clip_id": clip["clip_id"], "split": plan.split, "version": v} for v in plan.versions
                )
                rows += len(plan.versions)
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
                writer.submit(_write, directory, states.pop(owner[i]), shape)
    finally:
        bar.close()
        writer.close()
    return ExtractionStats(clips=len(jobs), rows=rows, seconds=time.perf_counter() - start)


def _finalize(
    cfg: Config,
    plans: list[ShardPlan],
    directory: Path,
    splits: dict[str, pd.DataFrame],
    shape: tuple[int, int],
    condition: StoreCondition | None = None,
) -> dict:
    """Check completeness and bad-clip fractions, then merge the index and write meta.json."""
    missing = [p.name for p in plans if shard_fingerprint(directory, p.name) != p.fingerprint]
    if missing:
        raise ExtractionError(
            f"{len(missing)} shard(s) missing after extraction (first: {missing[:3]}); rerun the step"
        )
    shard_dir = directory / "shards"
    counts: dict[str, dict] = {}
    problems = []
    unusable = []
    for split, df in splits.items():
        names = [p.name for p in plans if p.split == split]
        skipped = [pd.read_csv(shard_dir / f"{n}.skipped.csv", keep_default_na=False) for n in names]
        unusable.extend(s for s in skipped if len(s))
        n_skipped = sum(len(s) for s in skipped)
        reasons = Counter(r for s in skipped for r in s["reason"])
        counts[split] = {"clips": len(df), "skipped_reasons": dict(sorted(reasons.items()))}
        if len(df) and n_skipped > float(cfg.data.max_bad_fraction) * len(df):
            problems.append(f"split '{split}': {n_skipped} of {len(df)} clips unusable ({dict(reasons)})")
    if problems:
        listing = directory / "skipped_partial.csv"
        table = pd.concat(unusable, ignore_index=True) if unusable else pd.DataFrame(columns=SKIPPED_COLUMNS)
        table[SKIPPED_COLUMNS].to_csv(listing, index=False)
        raise ExtractionError(
            f"too many unusable clips (data.max_bad_fraction={cfg.data.max_bad_fraction}); no index written: "
            + "; ".join(problems)
            + f". The clips and reasons are listed in {listing}. Fix the data or raise data.max_bad_fraction."
        )
    settings = store_settings(cfg, condition)
    annotated = pd.concat(list(splits.values()), ignore_index=True)
    meta = {
        "frontend": settings["frontend"],
        "shape": list(shape),
        "dtype": "float16",
        "config_hash": config_hash(settings),
        "settings": settings,
        "sample_rate": int(cfg.data.sample_rate),
        "num_samples": clip_samples(cfg),
        "versions": {
            split: ["original"] if condition is not None else split_versions(cfg, split) for split in splits
        },
        "protocols": {split: protocol_digest(df) for split, df in splits.items()},
        "counts": counts,
    }
    for stale in directory.glob("skipped_partial*.csv"):
        stale.unlink()
    return finalize_store(directory, [p.name for p in plans], meta, annotated)


def summary_table(meta: dict) -> pd.DataFrame:
    """Per-split counts of a finished store: protocol clips, stored clips and rows, skipped clips and why."""
    table = pd.DataFrame(meta["counts"]).T
    for col in ("stored_clips", "rows", "skipped"):
        if col not in table:
            table[col] = 0
    table[["stored_clips", "rows", "skipped"]] = (
        table[["stored_clips", "rows", "skipped"]].fillna(0).astype(int)
    )
    table["skipped_reasons"] = table["skipped_reasons"].map(
        lambda d: ", ".join(f"{k}: {v}" for k, v in d.items()) or "-"
    )
    return table[["clips", "stored_clips", "rows", "skipped", "skipped_reasons"]]


def run_extraction(
    cfg: Config,
    info: DistInfo | None = None,
    condition: StoreCondition | None = None,
    stats: list | None = None,
) -> Path:
    """Build (or bring up to date) the feature store of ``cfg`` for all splits; returns its folder.

    With ``condition``: the condition store of its splits. Under ``torchrun`` each rank computes
    its shards and rank 0 finalizes the merged index. ``stats``, when given, receives this rank's
    :class:`ExtractionStats` (nothing when every shard was up to date).
    """
    device = resolve_device(cfg.device)
    info = info if info is not None else init_distributed(device)
    device = rank_device(device, info)
    splits, _ = prepare_splits(cfg)
    if condition is not None:
        unknown = [s for s in condition.splits if s not in splits]
        if unknown:
            raise ConfigError(f"splits {unknown} are not among data.splits ({', '.join(splits)})")
        splits = {s: splits[s] for s in condition.splits}
    directory = store_dir(cfg, condition)
    directory.mkdir(parents=True, exist_ok=True)
    lock = step_lock(directory / ".lock", f"the feature store {directory}") if info.is_main else None
    if lock is not None:
        lock.__enter__()
    try:
        barrier(info)
        plans = plan_shards(cfg, splits, condition)
        if info.is_main:
            clean_shard_leftovers(directory)
            if any(shard_fingerprint(directory, p.name) != p.fingerprint for p in plans):
                mark_unfinished(directory)  # shards are about to change: the old index no longer holds
        barrier(info)
        mine = [p for k, p in enumerate(plans) if k % info.world_size == info.rank]
        todo = [p for p in mine if shard_fingerprint(directory, p.name) != p.fingerprint]
        if info.is_main and condition is None:
            who = f"rank 0 of {info.world_size}" if info.enabled else "this run"
            print(
                f"feature store {directory}: {len(plans)} shard(s); {who} computes {len(todo)} of {len(mine)} (the rest are up to date)"
            )
        if todo:
            split_sizes = {s: len(df) for s, df in splits.items()}
            done = _extract_shards(cfg, todo, directory, device, split_sizes, info, condition)
            if stats is not None:
                stats.append(done)
            if info.is_main:
                print(
                    f"rank 0 extracted {done.clips} clip(s), {done.rows} feature row(s) in {done.seconds:.1f} s "
                    f"({done.rows_per_s:.3g} rows/s on {device})"
                )
        barrier(info)
        if info.is_main:
            frontend_shape = _store_shape(cfg, directory, plans)
            meta = _finalize(cfg, plans, directory, splits, frontend_shape, condition)
            if condition is None:
                print(summary_table(meta).to_string())
                print(
                    f"feature store written: {directory} ({meta['rows']} rows of {meta['shape'][0]}x{meta['shape'][1]} "
                    f"float16, {meta['skipped']} clip(s) skipped -> skipped.csv)"
                )
            else:
                print(
                    f"condition '{condition.name}': {len(todo)} of {len(mine)} shard(s) computed here, "
                    f"{meta['rows']} rows, {meta['skipped']} clip(s) skipped -> {directory}"
                )
        barrier(info)
    finally:
        if lock is not None:
            lock.__exit__(None, None, None)
    return directory


def _store_shape(cfg: Config, directory: Path, plans: list[ShardPlan]) -> tuple[int, int]:
    """The frame shape of the stored features (from a non-empty shard, else from the front end)."""
    for p in plans:
        arr = np.load(directory / "shards" / f"{p.name}.npy", mmap_mode="r")
        if arr.shape[0]:
            return int(arr.shape[1]), int(arr.shape[2])
    frontend = build_frontend(cfg.frontend, "cpu", sample_rate=int(cfg.data.sample_rate))
    return tuple(frontend.output_shape(clip_samples(cfg)))  # type: ignore[return-value]


__all__ = [
    "ExtractionError",
    "ExtractionStats",
    "plan_shards",
    "run_extraction",
    "split_summary",
    "summary_table",
]
