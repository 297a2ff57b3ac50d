"""Training input speed: the float16 feature store vs one float32 ``.pt`` file per sample (the original).

    python scripts/benchmark.py train-io [--samples 2000] [--frames 199] [--dim 768] [--batch-size 128]
                                         [--workers 0] [--train-batches 4] [--dir TMP]

Writes the same random features both ways into a temporary folder, then measures, in one run:

- a pure data pass (no model): a shuffled DataLoader over all samples: the IO comparison;
- training steps (AASIST with the ``model`` defaults, mixup doubling the batch) over the first
  ``--train-batches`` batches: how much of it survives when the model computes.

Each data pass runs twice: with a cold page cache (this benchmark's own files are evicted with
``posix_fadvise(DONTNEED)`` first; nothing else on the machine is touched) and warm (just read).
A real run over 100k+ files that do not fit in memory reads cold.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset


class PtFileDataset(Dataset):
    """The original layout: one float32 tensor file per sample, read with ``torch.load``."""

    def __init__(self, files: list[Path], labels: np.ndarray):
        self.files = files
        self.labels = labels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        return torch.load(self.files[i], map_location="cpu", weights_only=True), int(self.labels[i]), i


def _write_both(root: Path, n: int, frames: int, dim: int, shard_size: int, seed: int):
    from sourcetracing.features.store import FeatureStore, finalize_store, write_shard
    from sourcetracing.progress import progress

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 24, size=n)
    store_dir, pt_dir = root / "store", root / "pt"
    pt_dir.mkdir(parents=True, exist_ok=True)
    files, shards = [], []
    for start in progress(range(0, n, shard_size), desc="writing both layouts"):
        stop = min(start + shard_size, n)
        feats = rng.standard_normal((stop - start, frames, dim), dtype=np.float32)
        rows = pd.DataFrame(
            {
                "clip_id": [f"c{i:06d}" for i in range(start, stop)],
                "split": "train",
                "model_name": "m",
                "label": labels[start:stop],
                "known": True,
                "language": "en",
                "language_seen": True,
                "cell": "seen_lang/seen_model",
                "version": "original",
                "path": "",
            }
        )
        name = f"train-{start // shard_size:05d}"
        write_shard(store_dir, name, feats, rows)
        shards.append(name)
        for i in range(stop - start):
            path = pt_dir / f"{start + i:06d}.pt"
            torch.save(torch.from_numpy(feats[i].copy()), path)
            files.append(path)
    annotated = pd.DataFrame(
        {"clip_id": [f"c{i:06d}" for i in range(n)], "split": "train", "model_name": "m", "label": labels,
         "known": True, "language": "en", "language_seen": True, "cell": "seen_lang/seen_model", "path": ""}
    )  # fmt: skip
    finalize_store(store_dir, shards, {"shape": [frames, dim], "frontend": {"name": "random"}}, annotated)
    store = FeatureStore(store_dir)
    store_bytes = sum(p.stat().st_size for p in (store_dir / "shards").glob("*.npy"))
    pt_bytes = sum(p.stat().st_size for p in files)
    return store, PtFileDataset(files, labels), store_bytes / n, pt_bytes / n


def evict(paths) -> None:
    """Drop these files from the page cache (flushed first), so the next read comes from disk."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _data_pass(loader: DataLoader) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = 0
    for x, _, _ in loader:
        n += x.shape[0]
    return time.perf_counter() - t0, n


def _train_pass(loader: DataLoader, model, batches: int) -> tuple[float, int]:
    from sourcetracing.training.classifier import criterion, mixup_step

    opt = torch.optim.Adam(model.parameters(), lr=5e-4)
    crit = criterion("ce", 24)
    rng = np.random.default_rng(0)
    model.train()
    t0 = time.perf_counter()
    n = 0
    for k, (x, y, _) in enumerate(loader):
        if k >= batches:
            break
        loss, _ = mixup_step(model, x, y, 0.5, rng, crit)
        opt.zero_grad()
        loss.backward()
        opt.step()
        n += x.shape[0]
    return time.perf_counter() - t0, n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="benchmark.py train-io",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--samples", type=int, default=2000, help="samples written in each layout (default 2000)"
    )
    parser.add_argument("--frames", type=int, default=199, help="feature frames per sample (default 199)")
    parser.add_argument("--dim", type=int, default=768, help="feature dimension (default 768)")
    parser.add_argument("--batch-size", type=int, default=128, help="samples per batch (default 128)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (default 0)")
    parser.add_argument(
        "--shard-size", type=int, default=1024, help="samples per float16 shard (default 1024)"
    )
    parser.add_argument(
        "--train-batches", type=int, default=2, help="training steps timed per layout (0 = skip)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to write the data (default: a temp folder)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random features (default 0)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from sourcetracing.features.store import FeatureDataset, FeatureStore, collate_batch
    from sourcetracing.models.aasist import AASIST_DEFAULTS
    from sourcetracing.training.checkpoint import build_model

    class PerItem(torch.utils.data.Dataset):
        """The store read one row at a time (a DataLoader with the default collate)."""

        def __init__(self, inner: FeatureDataset):
            self.inner = inner

        def __len__(self) -> int:
            return len(self.inner)

        def __getitem__(self, i: int):
            return self.inner[i]

    root = Path(tempfile.mkdtemp(prefix="train_io_", dir=args.dir))
    try:
        store, pt_ds, store_bps, pt_bps = _write_both(
            root, args.samples, args.frames, args.dim, args.shard_size, args.seed
        )
        store_files = sorted((store.directory / "shards").glob("*.npy"))
        # name -> (fresh dataset, collate_fn, its files); fresh = new memory maps after an eviction
        layouts = {
            "pt": (lambda: pt_ds, None, pt_ds.files),
            "store": (
                lambda: PerItem(FeatureDataset(FeatureStore(store.directory), store.index)),
                None,
                store_files,
            ),
            "batched": (
                lambda: FeatureDataset(FeatureStore(store.directory), store.index),
                collate_batch,
                store_files,
            ),
        }
        titles = {"pt": ".pt per sample", "store": "f16 store", "batched": "f16 store, batch"}

        def loader(name: str, seed: int) -> DataLoader:
            make, collate, _ = layouts[name]
            return DataLoader(
                make(),
                batch_size=args.batch_size,
                shuffle=True,
                num_workers=args.workers,
                collate_fn=collate,
                generator=torch.Generator().manual_seed(seed),
            )

        results: dict[str, dict] = {}
        for name, (_, _, files) in layouts.items():
            evict(files)
            cold_s, n = _data_pass(loader(name, 1))
            warm_s, _ = _data_pass(loader(name, 2))
            results[name] = {"cold": n / cold_s, "warm": n / warm_s}
            print(
                f"{titles[name]:18s} data pass: {n} samples, cold cache {cold_s:.2f} s, warm {warm_s:.2f} s"
            )
        if args.train_batches > 0:
            for name in ("pt", "batched"):  # the trainer reads batches
                torch.manual_seed(0)
                model = build_model("classifier", {"name": "aasist", **AASIST_DEFAULTS}, args.dim, 24)
                secs, n = _train_pass(loader(name, 3), model, args.train_batches)
                results[name]["train"] = n / secs
                print(f"{titles[name]:18s} training: {n} samples in {secs:.2f} s", flush=True)

        ref = results["pt"]
        w = 34
        print()
        print(
            f"train-io: {args.samples} samples of [{args.frames}, {args.dim}], batch {args.batch_size}, "
            f"{args.workers} DataLoader workers, torch threads {torch.get_num_threads()}"
        )
        print(f"{'':{w}s}" + "".join(f"{titles[k]:>18s}" for k in layouts) + "   store/pt   batched/pt")
        print(
            f"{'bytes on disk / sample':{w}s}{pt_bps:18,.0f}{store_bps:18,.0f}{store_bps:18,.0f}"
            f"{store_bps / pt_bps:10.2f}x{store_bps / pt_bps:12.2f}x"
        )
        n_files = len(store_files) * 3 + 3
        print(f"{'files':{w}s}{args.samples:18,d}{n_files:18,d}{n_files:18,d}")
        rows = [("cold", "data pass, cold cache (samples/s)"), ("warm", "data pass, warm cache (samples/s)")]
        if "train" in ref:
            rows.append(("train", "AASIST training (samples/s)"))
        for key, label in rows:
            vals = [results[k].get(key) for k in layouts]
            cells = "".join(f"{v:18,.1f}" if v is not None else f"{'-':>18s}" for v in vals)
            ratios = "".join(
                f"{results[k][key] / ref[key]:10.2f}x" if key in results[k] else f"{'-':>11s}"
                for k in ("store", "batched")
            )
            print(f"{label:{w}s}{cells}{ratios}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
