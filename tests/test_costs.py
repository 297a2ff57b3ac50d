"""The cost before the work: ``preprocess_dataset.py --check``'s store size, stage times and GPU memory."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from corpus_fixtures import make_tiny_corpus, save_tiny_wav2vec2

from sourcetracing.costs import UNKNOWN, cost_lines, machine_rates, save_rates, store_size
from sourcetracing.data.protocols import prepare_splits

REPO = Path(__file__).resolve().parents[1]
UNITS = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}


def _check(config: Path, rates: Path) -> str:
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "preprocess_dataset.py"), "--config", str(config), "--check",
         "--rates", str(rates)],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("frontend", ["lfcc", "hf_ssl"])
def test_check_estimates_the_store_it_then_writes(tmp_path, frontend):
    overrides = {"augment": {"versions": ["original", "noise", "reverb"]}}
    if frontend == "hf_ssl":
        model = save_tiny_wav2vec2(tmp_path / "w2v", num_layers=2)
        overrides["frontend"] = {"name": "hf_ssl", "hf_ssl": {"model": str(model), "layer": 2}}
    corpus = make_tiny_corpus(tmp_path / "c", frontend=frontend, overrides=overrides)
    out = _check(corpus.config_path, tmp_path / "no_rates.json")
    match = re.search(r"feature store: ([\d.]+) (B|KiB|MiB|GiB) on disk \(([\d,]+) rows", out)
    assert match, out
    estimate = float(match.group(1)) * UNITS[match.group(2)]
    assert "stage 2 (train aasist): " + UNKNOWN in out
    assert "GPU memory per batch: n/a on CPU" in out

    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "preprocess_dataset.py"), "--config", str(corpus.config_path)],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    shards = list((corpus.root / "exp" / "features").glob("*/shards/*.npy"))
    written = sum(p.stat().st_size for p in shards)
    assert shards and abs(estimate - written) <= 0.1 * written
    train_clips = len(corpus.protocols.joinpath("train.csv").read_text().splitlines()) - 1
    assert f"train {train_clips * 3}," in out  # three versions of each train clip


def test_times_and_gpu_memory_come_from_this_machines_rates(tmp_path):
    corpus = make_tiny_corpus(tmp_path / "c")
    cfg = corpus.cfg
    cfg.frontend.name = "hf_ssl"
    cfg.frontend.hf_ssl = {"model": str(save_tiny_wav2vec2(tmp_path / "w2v", num_layers=2)), "layer": 1}
    splits, _ = prepare_splits(cfg)
    size = store_size(cfg, splits)
    rates = tmp_path / "rates.json"
    extract = {"rows_per_s": {"bf16": size.total_rows / 600.0}, "peak_gpu_mib": {"bf16": 1000.0}}
    save_rates(rates, "box A", "cuda", "extract", {**extract, "batch_size": int(cfg.features.batch_size) * 2})
    train = {"samples_per_s": {"float32": 1.0}, "peak_gpu_mib": {"float32": 2048.0}, "batch_size": 64}
    save_rates(rates, "box A", "cuda", "train", {**train, "frames": size.frames, "dim": size.dim})
    assert set(machine_rates(rates, "box A", "cuda")) == {"extract", "train"}

    text = "\n".join(cost_lines(cfg, splits, rates, device_type="cuda", machine="box A"))
    assert "stage 1 (features): ~10 min" in text  # precision auto = bf16 on CUDA
    epochs, train_rows = int(cfg.train.epochs), size.rows["train"]
    assert f"{epochs} epoch(s) of {train_rows:,} rows" in text
    assert "extraction ~500.0 MiB at batch 4" in text  # measured at twice the batch, scaled
    scaled = 2048 * int(cfg.train.batch_size) / 64
    assert f"training ~{scaled:.1f} MiB" in text or f"training ~{scaled / 1024:.1f} GiB" in text

    other = "\n".join(cost_lines(cfg, splits, rates, device_type="cuda", machine="box B"))
    assert f"stage 1 (features): {UNKNOWN}" in other
    assert f"stage 2 (train aasist): {UNKNOWN}" in other
    assert "for the batch alone" in other  # a bound without a measured peak


def test_benchmarks_record_rates_per_machine(tmp_path):
    from sourcetracing.provenance import machine_description
    from sourcetracing_tools.bench import extract, train

    rates = tmp_path / "rates.json"
    args = argparse.Namespace(rates=rates, batch_size=8, layer=5, frames=199, dim=768)
    extract.record_rates(args, torch.device("cpu"), {"float32": 12.5}, {"float32": float("nan")})
    train.record_rates(args, torch.device("cpu"), {"float32": 30.0, "bf16": 40.0}, {})
    found = machine_rates(rates, machine_description(), "cpu")
    assert found["extract"]["rows_per_s"] == {"float32": 12.5}
    assert found["extract"]["peak_gpu_mib"] == {}
    assert found["train"]["samples_per_s"]["bf16"] == 40.0
    assert found["train"]["frames"] == 199 and "measured" in found["train"]
