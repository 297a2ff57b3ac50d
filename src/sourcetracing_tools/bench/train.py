"""Benchmark: training speed of the default AASIST on [199, 768] features, float32 vs bf16 (and fp16 on CUDA).

    python scripts/benchmark.py train [--device auto|cpu|cuda] [--precisions float32,bf16,fp16]
        [--batch-size 128] [--steps N] [--workers W] [--out FILE]

Everything runs through the toolkit's one training loop (``Trainer.train_epoch`` with the
classifier task's step: mixup doubles every batch, cross-entropy, Adam, the gradient scaler for
fp16), on a random float16 feature store of ``batch-size x steps`` rows and 24 classes written to a
temporary folder. Two rows per precision:

- **step**: the same batches, already on the device, replayed (the loop and the model alone);
- **full**: an epoch over the store through the task's own DataLoader (memory-mapped shards,
  float32 conversion, pinned memory on CUDA), as ``train_refd.py`` runs it.

Printed: samples/s (store rows per second; each is forwarded twice with mixup), the ratio to
float32 in the same mode and the peak GPU memory (``torch.cuda.max_memory_allocated``). Target:
bf16 step >= 1.5x float32 step. ``float32`` uses PyTorch's default math (cuDNN convolutions may
use TF32 on recent GPUs). The full rows' samples/s and peak memory per precision are recorded for
this machine in ``--rates`` (default ``exp/benchmarks/rates.json``) for ``preprocess_dataset.py --check``.
"""

from __future__ import annotations

import argparse
import itertools
import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sourcetracing.cli import ListOption
from sourcetracing.costs import RATES_FILE, save_rates
from sourcetracing_tools.bench.report import (
    Target,
    emit,
    fmt_rate,
    free_device_memory,
    machine_line,
    markdown_table,
    peak_memory,
    pick_device,
    targets_table,
    timed,
)

TARGET_BF16_VS_FLOAT32 = 1.5
CLASSES = 24


def write_random_store(directory: Path, rows: int, frames: int, dim: int, seed: int = 0, shard: int = 1024):
    """A finished feature store of ``rows`` random float16 train rows over :data:`CLASSES` systems."""
    from sourcetracing.features.store import FeatureStore, finalize_store, write_shard

    rng = np.random.default_rng(seed)
    names, tables = [], []
    for k, start in enumerate(range(0, rows, shard)):
        stop = min(start + shard, rows)
        feats = rng.standard_normal((stop - start, frames, dim), dtype=np.float32).astype(np.float16)
        systems = [f"bench/sys_{i % CLASSES:02d}" for i in range(start, stop)]
        table = pd.DataFrame(
            {
                "clip_id": [
                    f"fake/en/{s.replace('/', '_')}/{i:06d}.wav"
                    for i, s in zip(range(start, stop), systems, strict=True)
                ],
                "split": "train",
                "model_name": systems,
                "label": [i % CLASSES for i in range(start, stop)],
                "known": True,
                "language": "en",
                "language_seen": True,
                "cell": "seen_lang/seen_model",
                "version": "original",
                "path": "",
            }
        )
        name = f"train-{k:05d}"
        write_shard(directory, name, feats, table)
        names.append(name)
        tables.append(table)
    annotated = pd.concat(tables, ignore_index=True).drop(columns="version")
    finalize_store(directory, names, {"shape": [frames, dim], "frontend": {"name": "random"}}, annotated)
    return FeatureStore(directory)


def _trainer(store, exp: Path, args: argparse.Namespace, precision: str, device: torch.device):
    """A classifier task and the one loop's trainer for it (nothing is written until an epoch ends)."""
    from sourcetracing.config import load_config
    from sourcetracing.distributed import DistInfo
    from sourcetracing.layout import ExperimentLayout
    from sourcetracing.training.classifier import ClassifierTask, recipe_of, seed_everything
    from sourcetracing.training.loop import Trainer

    cfg = load_config(
        None,
        [
            f"exp_dir={exp}",
            f"device={device}",
            f"train.batch_size={args.batch_size}",
            f"train.num_workers={args.workers}",
            f"train.precision={precision}",
            f"train.log_every={10**6}",
        ],
    )
    seed_everything(0)
    task = ClassifierTask(cfg, store)
    system = ExperimentLayout.of(cfg).system(cfg.model.name)
    return task, Trainer(task, recipe_of(cfg.train), system, DistInfo(), device, 0, cfg)


def measure(task, trainer, device: torch.device, steps: int, replay: bool) -> tuple[float, float]:
    """(samples/s, peak MiB) of one timed epoch after a warm-up epoch of two batches."""
    from sourcetracing.distributed import DistInfo

    loader_batches = task.batches
    if replay:
        first = []
        for x, y, idx in loader_batches(1, DistInfo()):
            first.append((x.to(device), y.to(device), idx))
            if len(first) == steps:
                break
        batches = {"warm": first[:2], "timed": first}
    else:
        batches = {"warm": None, "timed": None}
    samples = sum(len(b[1]) for b in batches["timed"]) if replay else len(task.dataset)

    def epoch(name: str, number: int) -> None:
        if replay:
            task.batches = lambda epoch, info: batches[name]
        else:
            task.batches = loader_batches
        trainer.train_epoch(number, trainer.model)

    if replay:
        epoch("warm", 1)
    else:  # warm the page cache and the kernels on a short epoch
        task.batches = lambda epoch, info: itertools.islice(loader_batches(epoch, info), 2)
        trainer.train_epoch(1, trainer.model)
    with peak_memory(device) as peak:
        seconds = timed(device, lambda: epoch("timed", 2))
    task.batches = loader_batches
    return samples / seconds, peak.mib


def _defaults(args: argparse.Namespace, device: torch.device) -> None:
    cuda = device.type == "cuda"
    for name, on_cuda, on_cpu in (("batch_size", 128, 4), ("steps", 20, 2), ("workers", 4, 0)):
        if getattr(args, name) is None:
            setattr(args, name, on_cuda if cuda else on_cpu)
    if args.precisions is None:
        args.precisions = ["float32", "bf16", "fp16"] if cuda else ["float32", "bf16"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmark.py train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA when present) | cpu | cuda | cuda:N")
    parser.add_argument(
        "--precisions",
        action=ListOption,
        choices=("float32", "bf16", "fp16"),
        default=None,
        metavar="PRECISION",
        help="train.precision values to measure, comma-separated (default: float32,bf16,fp16 on CUDA, "
        "float32,bf16 on CPU)",
    )
    parser.add_argument("--batch-size", type=int, default=None, help="train.batch_size (128 in the recipe)")
    parser.add_argument(
        "--steps", type=int, default=None, help="timed steps per row (store rows = batch x steps)"
    )
    parser.add_argument("--workers", type=int, default=None, help="train.num_workers of the full rows")
    parser.add_argument("--frames", type=int, default=199, help="feature frames per sample (default 199)")
    parser.add_argument("--dim", type=int, default=768, help="feature dimension (default 768)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--dir", type=Path, default=None, help="scratch folder (default: a temp folder)")
    parser.add_argument("--out", type=Path, default=None, help="also write the report (Markdown) here")
    parser.add_argument(
        "--rates",
        type=Path,
        default=RATES_FILE,
        help=f"record the full rows' samples/s here for preprocess_dataset.py --check (default {RATES_FILE})",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = pick_device(args.device)
    _defaults(args, device)
    if args.threads:
        torch.set_num_threads(args.threads)
    precisions = args.precisions
    rows: list[dict] = []
    rates: dict[tuple[str, str], float] = {}
    peaks: dict[str, float] = {}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        tmp = Path(tmp)
        store = write_random_store(tmp / "store", args.batch_size * args.steps, args.frames, args.dim)
        for mode, replay in (("step", True), ("full", False)):
            for precision in precisions:
                task, trainer = _trainer(store, tmp / f"exp_{mode}_{precision}", args, precision, device)
                rate, mib = measure(task, trainer, device, args.steps, replay)
                rates[mode, precision] = rate
                if mode == "full":
                    peaks[precision] = mib
                rows.append(
                    {
                        "mode": mode,
                        "precision": precision,
                        "batch": args.batch_size,
                        "samples/s": rate,
                        "× float32": rate / rates.get((mode, "float32"), math.nan),
                        "peak GPU MiB": mib,
                    }
                )
                del task, trainer
                free_device_memory(device)
    target = Target(
        "bf16 training step vs float32",
        rates.get(("step", "bf16"), math.nan) / rates.get(("step", "float32"), math.nan),
        TARGET_BF16_VS_FLOAT32,
        device.type == "cuda",
    )
    formats = {"samples/s": fmt_rate, "× float32": ".2f", "peak GPU MiB": ",.0f"}
    text = "\n".join(
        [
            f"## AASIST training on {device} (default model, features [{args.frames}, {args.dim}], "
            f"{CLASSES} classes, mixup)",
            "",
            machine_line(device),
            "",
            f"{args.steps} timed steps of batch {args.batch_size} per row (after a two-step warm-up); "
            f"full rows read the store with {args.workers} DataLoader worker(s).",
            "",
            markdown_table(
                rows, ["mode", "precision", "batch", "samples/s", "× float32", "peak GPU MiB"], formats
            ),
            "",
            targets_table([target]),
        ]
    )
    emit(text, args.out)
    record_rates(args, device, {p: rates["full", p] for p in precisions}, peaks)
    return 0


def record_rates(
    args: argparse.Namespace, device: torch.device, rates: dict[str, float], peaks: dict[str, float]
) -> None:
    """Save the full rows' samples/s and peak GPU MiB per precision for ``preprocess_dataset.py --check``."""
    from sourcetracing.provenance import machine_description

    values = {
        "samples_per_s": rates,
        "peak_gpu_mib": {k: v for k, v in peaks.items() if math.isfinite(v)},
        "batch_size": args.batch_size,
        "frames": args.frames,
        "dim": args.dim,
    }
    path = save_rates(args.rates, machine_description(), device.type, "train", values)
    print(f"rates recorded: {path}")
