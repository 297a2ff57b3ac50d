"""Benchmark: wav2vec2 feature extraction the original's way vs this toolkit's, on a CPU or a GPU.

    python scripts/benchmark.py extract [--device auto|cpu|cuda] [--precisions float32,tf32,bf16,fp16]
        [--clips N] [--ref-clips N] [--full-clips N] [--batch-size B] [--workers W] [--out FILE]

One randomly initialised wav2vec2-base-architecture model (``Wav2Vec2Config()`` defaults: 12
layers, 768 dims; pretrained weights are not needed to measure speed), saved with
``save_pretrained`` to a temporary folder and loaded by path, layer 5. Rows of the table:

- **original style**: batch 1, the full model with ``output_hidden_states=True``, float32 with
  PyTorch's default math, one float32 ``.pt`` per clip (the waves are already in memory: no
  decoding is counted for it);
- **model-only ceiling** per precision: the toolkit's front end (only the first 5 transformer
  layers, batched) on the same batches already on the device; no decoding, augmentation or I/O;
- **full path** per precision: ``run_extraction`` on a generated corpus in the MLAAD layout
  (DataLoader workers decode, resample, crop and augment, the front end runs, a writer thread
  stores float16 shards). The train fifth of the corpus gets the five default versions.

A "clip" is one 4 s wave through the model (one stored feature row): an augmented train clip
counts once per version. Printed per row: clips/s, the ratio to the original style, the share of
the same precision's ceiling reached by the full path, peak GPU memory
(``torch.cuda.max_memory_allocated``, model weights included) and the relative error
``||a - b|| / ||b||`` of the front-end output against the toolkit in float32 (IEEE float32 on
CUDA). Then the targets: the full path at the default precision (``auto``: bf16 on CUDA, float32
on CPU) >= 10x the original style, and >= 50 % of its model-only ceiling. The full path's rows/s
and peak memory per precision are recorded for this machine in ``--rates`` (default
``exp/benchmarks/rates.json``), where ``preprocess_dataset.py --check`` reads them (not with ``--tiny``).
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from sourcetracing.cli import ListOption
from sourcetracing.costs import RATES_FILE, save_rates
from sourcetracing_tools.bench.corpus import speech_like, write_bench_corpus
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

CUDA_PRECISIONS = ("float32", "tf32", "bf16", "fp16")
CPU_PRECISIONS = ("float32",)  # bf16 on request: fast only on CPUs with bf16 matrix units
TARGET_VS_ORIGINAL = 10.0
TARGET_SHARE_OF_CEILING = 0.5


def make_waves(n: int, seconds: float, sample_rate: int = 16000, seed: int = 0) -> np.ndarray:
    """``n`` speech-like test signals ``[n, samples]`` (see :func:`~.corpus.speech_like`)."""
    return speech_like(n, seconds, sample_rate, seed)


def rel_err(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """``||a - b|| / ||b||``.

    >>> rel_err(np.array([1.0, 1.0]), np.array([1.0, 1.0]))
    0.0
    """
    a64 = np.asarray(torch.as_tensor(a).double().cpu())
    b64 = np.asarray(torch.as_tensor(b).double().cpu())
    return float(np.linalg.norm(a64 - b64) / np.linalg.norm(b64))


# A small model of the same architecture and total stride, for smoke tests of this script only.
TINY_CONFIG = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "conv_dim": (16, 16, 16, 16),
    "conv_kernel": (10, 3, 3, 2),
    "conv_stride": (5, 4, 4, 4),
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 2,
}


def save_random_wav2vec2_base(folder: Path, seed: int = 0, tiny: bool = False) -> Path:
    """A randomly initialised wav2vec2-base-sized model (or :data:`TINY_CONFIG`) and its feature
    extractor, saved to ``folder``."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(seed)
    Wav2Vec2Model(Wav2Vec2Config(**(TINY_CONFIG if tiny else {}))).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(folder)
    return folder


class OriginalStyle:
    """The original's way: batch 1, full model, ``hidden_states[layer]``, one float32 ``.pt`` per clip."""

    def __init__(self, model_dir: Path, layer: int, device: torch.device, out: Path):
        from transformers import AutoFeatureExtractor, AutoModel

        from sourcetracing.progress import library_bars_on_terminal_only

        library_bars_on_terminal_only()
        self.model = AutoModel.from_pretrained(model_dir, local_files_only=True).eval().to(device)
        self.fe = AutoFeatureExtractor.from_pretrained(model_dir, local_files_only=True)
        self.layer, self.device, self.out = layer, device, out
        out.mkdir(parents=True, exist_ok=True)
        self.count = 0

    def run(self, waves: np.ndarray) -> torch.Tensor:
        """Extract and save every wave; returns the last clip's features."""
        hidden = None
        for wave in waves:
            inputs = self.fe(wave, sampling_rate=16000, return_tensors="pt")
            with torch.no_grad():
                out = self.model(inputs["input_values"].to(self.device), output_hidden_states=True)
            hidden = out.hidden_states[self.layer][0]
            torch.save(hidden, self.out / f"clip_{self.count:06d}.pt")
            self.count += 1
        return hidden


def _frontend(model_dir: Path, layer: int, precision: str, device: torch.device):
    from sourcetracing.features.frontends import build_frontend

    settings = {"name": "hf_ssl", "model": str(model_dir), "layer": layer, "precision": precision}
    return build_frontend(settings, device)


def model_only(frontend, batch: torch.Tensor, n_batches: int, device: torch.device) -> tuple[float, float]:
    """Seconds for ``n_batches`` forward passes of ``batch`` (already on the device) and the peak MiB."""
    from sourcetracing.features.store import to_store_dtype

    def work() -> None:
        for _ in range(n_batches):
            to_store_dtype(frontend(batch))

    with peak_memory(device) as peak:
        seconds = timed(device, work)
    return seconds, peak.mib


def full_path(
    corpus_overrides: list[str],
    model_dir: Path,
    args: argparse.Namespace,
    precision: str,
    exp: Path,
    device: torch.device,
) -> tuple[float, float, float]:
    """``run_extraction`` on the generated corpus: (rows/s, peak MiB, stored bytes per row)."""
    from sourcetracing.config import load_config
    from sourcetracing.features.extract import run_extraction
    from sourcetracing.features.store import FeatureStore

    cfg = load_config(
        None,
        [
            *corpus_overrides,
            f"exp_dir={exp}",
            f"device={device}",
            f"data.max_len_s={args.seconds}",
            "frontend.name=hf_ssl",
            f"frontend.hf_ssl.model={model_dir}",
            f"frontend.hf_ssl.layer={args.layer}",
            f"frontend.hf_ssl.precision={precision}",
            f"features.batch_size={args.batch_size}",
            f"features.num_workers={args.workers}",
        ],
    )
    stats: list = []
    with peak_memory(device) as peak:
        directory = run_extraction(cfg, stats=stats)
    store = FeatureStore(directory)
    stored = sum(p.stat().st_size for p in (directory / "shards").glob("*.npy")) / max(len(store.index), 1)
    return stats[0].rows_per_s, peak.mib, stored


def _defaults(args: argparse.Namespace, device: torch.device) -> None:
    cuda = device.type == "cuda"
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    for name, on_cuda, on_cpu in (
        ("clips", 2048, 16),
        ("ref_clips", 128, 8),
        ("full_clips", 2000, 10),
        ("batch_size", 64, 8),
        ("workers", max(1, cpus - 2), min(2, cpus)),
    ):
        if getattr(args, name) is None:
            setattr(args, name, on_cuda if cuda else on_cpu)
    if args.precisions is None:
        args.precisions = list(CUDA_PRECISIONS if cuda else CPU_PRECISIONS)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmark.py extract", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA when present) | cpu | cuda | cuda:N")
    parser.add_argument(
        "--precisions",
        action=ListOption,
        choices=CUDA_PRECISIONS,
        default=None,
        metavar="PRECISION",
        help="precisions to measure, comma-separated (default: all four on CUDA, float32 on CPU)",
    )
    parser.add_argument("--clips", type=int, default=None, help="clips through the model-only ceiling")
    parser.add_argument("--ref-clips", type=int, default=None, help="clips through the original style")
    parser.add_argument(
        "--full-clips", type=int, default=None, help="corpus clips for the full path (0: skip)"
    )
    parser.add_argument("--batch-size", type=int, default=None, help="toolkit batch (features.batch_size)")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers of the full path")
    parser.add_argument(
        "--layer",
        type=int,
        default=5,
        help="hidden layer whose states are extracted (frontend.hf_ssl.layer, default 5)",
    )
    parser.add_argument("--seconds", type=float, default=4.0, help="clip length in seconds (default 4)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--dir", type=Path, default=None, help="scratch folder (default: a temp folder)")
    parser.add_argument("--out", type=Path, default=None, help="also write the report (Markdown) here")
    parser.add_argument(
        "--rates",
        type=Path,
        default=RATES_FILE,
        help=f"record the full path's rows/s here for preprocess_dataset.py --check (default {RATES_FILE})",
    )
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="a 2-layer, 32-dim model: checks this script runs, measures nothing",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = pick_device(args.device)
    _defaults(args, device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tiny:
        args.layer = min(args.layer, TINY_CONFIG["num_hidden_layers"])
    precisions = args.precisions
    default_precision = "bf16" if device.type == "cuda" else "float32"
    num_samples = int(args.seconds * 16000)
    unique = make_waves(min(args.batch_size, max(args.clips, args.ref_clips)), args.seconds)
    batch_np = np.resize(unique, (args.batch_size, num_samples)).astype(np.float32)
    n_batches = max(1, math.ceil(args.clips / args.batch_size))
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        tmp = Path(tmp)
        model_dir = save_random_wav2vec2_base(tmp / "wav2vec2-base-random", tiny=args.tiny)

        # the reference output for the relative errors: the toolkit in (IEEE) float32
        reference_fe = _frontend(model_dir, args.layer, "float32", device)
        check = torch.from_numpy(batch_np[: min(4, args.batch_size)]).to(device)
        reference = reference_fe(check).cpu()
        del reference_fe
        free_device_memory(device)

        original = OriginalStyle(model_dir, args.layer, device, tmp / "original")
        original.run(unique[:1])  # warm-up
        waves = np.resize(unique, (args.ref_clips, num_samples))
        with peak_memory(device) as peak:
            seconds = timed(device, lambda: original.run(waves))
        original_rate = args.ref_clips / seconds
        last = original.run(batch_np[:1])
        pt_bytes = (original.out / f"clip_{original.count - 1:06d}.pt").stat().st_size
        rows.append(
            {
                "method": "original style (batch 1, full model, one .pt per clip)",
                "precision": "float32 (PyTorch defaults)",
                "batch": 1,
                "clips/s": original_rate,
                "× original": 1.0,
                "peak GPU MiB": peak.mib,
                "bytes/clip": pt_bytes,
                "rel.err": rel_err(last.float().cpu(), reference[0]),
            }
        )
        original = None  # frees the full model
        free_device_memory(device)

        ceilings: dict[str, float] = {}
        batch = torch.from_numpy(batch_np).to(device)
        for precision in precisions:
            frontend = _frontend(model_dir, args.layer, precision, device)
            model_only(frontend, batch, 2, device)  # warm-up (and cuDNN autotuning)
            seconds, mib = model_only(frontend, batch, n_batches, device)
            ceilings[precision] = n_batches * args.batch_size / seconds
            rows.append(
                {
                    "method": "toolkit model-only ceiling (batches on the device)",
                    "precision": precision,
                    "batch": args.batch_size,
                    "clips/s": ceilings[precision],
                    "× original": ceilings[precision] / original_rate,
                    "peak GPU MiB": mib,
                    "rel.err": rel_err(frontend(check).cpu(), reference),
                }
            )
            del frontend
            free_device_memory(device)
        from sourcetracing.features.frontends import build_frontend

        lfcc = build_frontend({"name": "lfcc"}, device)
        model_only(lfcc, batch, 1, device)
        seconds, mib = model_only(lfcc, batch, n_batches, device)
        rows.append(
            {
                "method": "LFCC front end (the demo's), model only",
                "precision": "float32",
                "batch": args.batch_size,
                "clips/s": n_batches * args.batch_size / seconds,
                "× original": n_batches * args.batch_size / seconds / original_rate,
                "peak GPU MiB": mib,
            }
        )
        del batch, lfcc
        free_device_memory(device)

        full_rates: dict[str, float] = {}
        full_peaks: dict[str, float] = {}
        if args.full_clips > 0:
            corpus = write_bench_corpus(tmp / "corpus", args.full_clips, args.seconds)
            for precision in precisions:
                rate, mib, stored = full_path(
                    corpus.overrides(), model_dir, args, precision, tmp / f"exp_{precision}", device
                )
                full_rates[precision] = rate
                full_peaks[precision] = mib
                rows.append(
                    {
                        "method": "toolkit full path (decode + augment + model + store)",
                        "precision": precision,
                        "batch": args.batch_size,
                        "clips/s": rate,
                        "× original": rate / original_rate,
                        "% of ceiling": 100 * rate / ceilings[precision],
                        "peak GPU MiB": mib,
                        "bytes/clip": stored,
                    }
                )
                free_device_memory(device)

    cuda = device.type == "cuda"
    ours = full_rates.get(default_precision, math.nan)
    targets = [
        Target(
            f"full path ({default_precision}) vs original style",
            ours / original_rate,
            TARGET_VS_ORIGINAL,
            cuda,
        ),
        Target(
            f"full path ({default_precision}) / model-only ceiling",
            ours / ceilings.get(default_precision, math.nan),
            TARGET_SHARE_OF_CEILING,
            cuda,
            percent=True,
        ),
    ]
    columns = ["method", "precision", "batch", "clips/s", "× original", "% of ceiling", "peak GPU MiB"]
    columns += ["bytes/clip", "rel.err"]
    formats = {
        "clips/s": fmt_rate,
        "× original": ".2f",
        "% of ceiling": ".0f",
        "peak GPU MiB": ",.0f",
        "bytes/clip": ",.0f",
        "rel.err": ".1e",
    }
    full_note = (
        f"full path: {args.full_clips} generated clips (train {corpus.clips['train']} x 5 versions, dev "
        f"{corpus.clips['dev']}, eval {corpus.clips['eval']}), {args.workers} DataLoader worker(s)"
        if args.full_clips > 0
        else "full path skipped (--full-clips 0)"
    )
    text = "\n".join(
        [
            f"## Feature extraction on {device} ({'a TINY smoke-test model' if args.tiny else 'wav2vec2-base architecture'}, "
            f"random weights, layer {args.layer})",
            "",
            machine_line(device),
            "",
            f"{args.seconds:g} s clips; original style {args.ref_clips} clips; ceiling {n_batches} batches of "
            f"{args.batch_size}; {full_note}. A clip is one wave through the model (one stored row). "
            "rel.err: front-end output vs the toolkit in float32 (float16 storage adds ~2e-4).",
            "",
            markdown_table(rows, columns, formats),
            "",
            targets_table(targets),
        ]
    )
    emit(text, args.out)
    if full_rates and not args.tiny:
        record_rates(args, device, full_rates, full_peaks)
    return 0


def record_rates(
    args: argparse.Namespace, device: torch.device, rates: dict[str, float], peaks: dict[str, float]
) -> None:
    """Save the full path's rows/s and peak GPU MiB per precision for ``preprocess_dataset.py --check``."""
    from sourcetracing.provenance import machine_description

    values = {
        "rows_per_s": rates,
        "peak_gpu_mib": {k: v for k, v in peaks.items() if math.isfinite(v)},
        "batch_size": args.batch_size,
        "model": f"the wav2vec2-base architecture, layer {args.layer}",
    }
    path = save_rates(args.rates, machine_description(), device.type, "extract", values)
    print(f"rates recorded: {path}")
