"""Benchmark: feature extraction the original's way vs this toolkit's, on the same clips and model.

    python scripts/benchmark.py extract [--clips 24] [--batch-size 8] [--threads 2] [--audio-dir DIR]

Both sides use one randomly initialised wav2vec2-base-architecture model (``Wav2Vec2Config()``
defaults: 12 layers, 768 dims; pretrained weights are not needed to measure speed), saved with
``save_pretrained`` and loaded by path.

- reference (the original): batch 1, the full model with ``output_hidden_states=True``, take
  ``hidden_states[layer]``, one float32 ``.pt`` per clip (``torch.save``);
- toolkit: the truncated model (only the first ``layer`` transformer layers), batched, written as a
  float16 shard of the feature store; in float32 and with bf16 autocast.

Printed: clips/s and bytes per clip of each, the ratios, and the relative error ``||a-b||/||b||``
of each toolkit precision against the reference output (front-end output and after float16
storage). The LFCC front end's clips/s is printed too. Audio decoding is excluded on both sides
(the waves are in memory; in the pipeline DataLoader workers decode in parallel).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from sourcetracing.config import load_config
from sourcetracing.data.audio import crop_or_pad, load_audio
from sourcetracing.features.frontends import build_frontend
from sourcetracing.features.store import FeatureStore, finalize_store, write_shard


def make_waves(n: int, seconds: float, sample_rate: int = 16000, seed: int = 0) -> np.ndarray:
    """``n`` speech-like test signals: harmonic tones with vibrato and chirps, plus noise, ``[n, samples]``."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    waves = []
    for i in range(n):
        f0 = rng.uniform(90, 260) * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(2, 6) * t))
        if i % 3 == 2:  # a chirp
            f0 = f0 * (1 + t / seconds)
        phase = 2 * np.pi * np.cumsum(f0) / sample_rate
        wave = sum(rng.uniform(0.2, 1.0) / h * np.sin(h * phase) for h in range(1, 8))
        wave = wave * (0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(1, 4) * t)) + 0.05 * rng.standard_normal(
            len(t)
        )
        waves.append(0.3 * wave / np.max(np.abs(wave)))
    return np.stack(waves).astype(np.float32)


def read_waves(folder: Path, n: int, seconds: float, sample_rate: int = 16000) -> np.ndarray:
    """Up to ``n`` clips from a folder (any rate; resampled), cut or wrap-padded to ``seconds``."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".wav", ".flac"))[:n]
    if not files:
        raise SystemExit(f"no .wav/.flac files under {folder}")
    num = int(seconds * sample_rate)
    return np.stack([crop_or_pad(load_audio(p, sample_rate), num) for p in files])


def _dir_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


class Reference:
    """The original way: batch 1, full model, ``hidden_states[layer]``, one float32 ``.pt`` per clip."""

    def __init__(self, model_dir: Path, layer: int, out: Path):
        from transformers import AutoFeatureExtractor, AutoModel

        self.model = AutoModel.from_pretrained(model_dir, local_files_only=True).eval()
        self.fe = AutoFeatureExtractor.from_pretrained(model_dir, local_files_only=True)
        self.layer = layer
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.count = 0

    def run(self, waves: np.ndarray) -> None:
        for wave in waves:
            inputs = self.fe(wave, sampling_rate=16000, return_tensors="pt")
            with torch.no_grad():
                hidden = self.model(inputs["input_values"], output_hidden_states=True).hidden_states[
                    self.layer
                ]
            torch.save(hidden[0].float(), self.out / f"clip_{self.count:05d}.pt")
            self.count += 1

    def outputs(self) -> np.ndarray:
        return np.stack(
            [torch.load(self.out / f"clip_{i:05d}.pt", weights_only=True).numpy() for i in range(self.count)]
        )


class Toolkit:
    """This toolkit's way: truncated model, one batch per call, written as a float16 store shard."""

    def __init__(self, model_dir: Path, layer: int, precision: str, out: Path):
        self.frontend = build_frontend(
            {"name": "hf_ssl", "model": str(model_dir), "layer": layer, "precision": precision}, "cpu"
        )
        self.out = out
        self.shards: list[str] = []
        self.feats: list[np.ndarray] = []

    def run(self, waves: np.ndarray) -> None:
        feats = self.frontend(torch.from_numpy(waves)).numpy()
        n0 = sum(len(f) for f in self.feats)
        rows = pd.DataFrame(
            {
                "clip_id": [f"clip_{n0 + i:05d}" for i in range(len(waves))],
                "split": "bench", "model_name": "bench", "label": 0, "known": True, "language": "xx",
                "language_seen": True, "cell": "seen_lang/seen_model", "version": "original", "path": "",
            }
        )  # fmt: skip
        name = f"bench-{len(self.shards):05d}"
        write_shard(self.out, name, feats.astype(np.float16), rows)
        self.shards.append(name)
        self.feats.append(feats)

    def outputs(self) -> tuple[np.ndarray, np.ndarray]:
        """(front-end outputs float32, what the store gives back as float32)."""
        feats = np.concatenate(self.feats)
        finalize_store(
            self.out, self.shards, {"shape": list(feats.shape[1:]), "frontend": {"name": "hf_ssl"}}
        )
        store = FeatureStore(self.out)
        return feats, store.load(store.index).astype(np.float32)


def run_lfcc(waves: np.ndarray, batch_size: int) -> float:
    frontend = build_frontend(load_config(None, ["frontend.name=lfcc"]).frontend, "cpu")
    frontend(torch.from_numpy(waves[:batch_size]))
    start = time.perf_counter()
    for i in range(0, len(waves), batch_size):
        frontend(torch.from_numpy(waves[i : i + batch_size]))
    return time.perf_counter() - start


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """``||a - b|| / ||b||``.

    >>> rel_err(np.array([1.0, 1.0]), np.array([1.0, 1.0]))
    0.0
    """
    b64 = np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(np.asarray(a, dtype=np.float64) - b64) / np.linalg.norm(b64))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--layer", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument(
        "--audio-dir", type=Path, default=None, help="read clips from here instead of generating"
    )
    parser.add_argument("--no-bf16", action="store_true", help="skip the bf16 autocast run")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    if args.audio_dir:
        waves = read_waves(args.audio_dir, args.clips, args.seconds)
    else:
        waves = make_waves(args.clips, args.seconds)
    n = len(waves)
    print(
        f"{n} clips of {args.seconds:g} s, layer {args.layer}, batch {args.batch_size}, "
        f"{torch.get_num_threads()} torch thread(s), {os.cpu_count()} CPU(s), load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        model_dir = tmp / "wav2vec2-base-random"
        Wav2Vec2Model(Wav2Vec2Config()).save_pretrained(model_dir)
        Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(model_dir)

        methods: dict[str, Reference | Toolkit] = {"reference": Reference(model_dir, args.layer, tmp / "ref")}
        for precision in ["float32"] + ([] if args.no_bf16 else ["bf16"]):
            methods[precision] = Toolkit(model_dir, args.layer, precision, tmp / f"store_{precision}")
        for method in methods.values():  # warm-up, not stored
            if isinstance(method, Toolkit):
                method.frontend(torch.from_numpy(waves[: args.batch_size]))
            else:
                Reference(model_dir, args.layer, tmp / "warmup").run(waves[:1])
        # interleave the methods chunk by chunk (rotating their order) so that load changes on a
        # shared machine hit all of them alike
        seconds = dict.fromkeys(methods, 0.0)
        names = list(methods)
        for c, start in enumerate(tqdm(range(0, n, args.batch_size), desc="benchmark", unit="batch")):
            chunk = waves[start : start + args.batch_size]
            for name in names[c % len(names) :] + names[: c % len(names)]:
                t0 = time.perf_counter()
                methods[name].run(chunk)
                seconds[name] += time.perf_counter() - t0
        ref = methods["reference"].outputs()
        ref_s = seconds["reference"]
        ref_bytes = _dir_bytes(tmp / "ref") / n
        results = [
            ("reference (batch 1, full model, .pt float32)", ref_s, ref_bytes, float("nan"), float("nan"))
        ]
        for precision in names[1:]:
            feats, stored = methods[precision].outputs()
            results.append(
                (
                    f"toolkit {precision} (truncated, batched, float16 store)",
                    seconds[precision],
                    _dir_bytes(tmp / f"store_{precision}" / "shards") / n,
                    rel_err(feats, ref),
                    rel_err(stored, ref),
                )
            )
        lfcc_s = run_lfcc(waves, args.batch_size)

    table = pd.DataFrame(
        [
            {
                "method": name,
                "clips/s": n / sec,
                "speed-up": ref_s / sec,
                "bytes/clip": int(round(size)),
                "bytes ratio": size / ref_bytes,
                "rel.err front end": err,
                "rel.err stored": err_stored,
            }
            for name, sec, size, err, err_stored in results
        ]
    )
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(index=False, float_format=lambda x: f"{x:.3g}"))
    print(f"lfcc front end: {n / lfcc_s:.1f} clips/s (batch {args.batch_size})")
    return 0
