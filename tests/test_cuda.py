"""The CUDA paths, against the CPU: front-end equality in float32, bf16/fp16/tf32 within stated
tolerances, sdpa = eager, extraction through pinned memory and asynchronous copies equal to the CPU
store, a real out-of-memory error, two-process NCCL extraction and training, and mixed-precision
training. Every test here is marked ``cuda`` and skipped where torch sees no CUDA device.

Run them alone with ``pytest -m cuda`` (``scripts/gpu_check.sh`` does, then benchmarks).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from corpus_fixtures import make_tiny_corpus, save_tiny_wav2vec2
from toy_store import write_toy_experiment

from sourcetracing.config import load_config
from sourcetracing.data.protocols import LabelMap
from sourcetracing.features import extract
from sourcetracing.features.extract import ExtractionError, run_extraction
from sourcetracing.features.frontends import build_frontend
from sourcetracing.features.store import FeatureStore
from sourcetracing.training.checkpoint import read_checkpoint

pytestmark = pytest.mark.cuda

REPO = Path(__file__).resolve().parents[1]
# Relative errors ||a - b|| / ||b|| of the front end against float32 on the CPU that we accept:
FLOAT32_TOLERANCE = 1e-5  # IEEE float32 on both sides; only the summation order differs
TF32_TOLERANCE = 5e-3  # 10-bit mantissa in matrix products and convolutions
FP16_TOLERANCE = 1e-2  # 10-bit mantissa in autocast ops
BF16_TOLERANCE = 5e-2  # 7-bit mantissa in autocast ops (1.3e-2 measured for wav2vec2-base on CPU)
NCCL_ONE_GPU = "Duplicate GPU detected"  # NCCL refuses two ranks on one device


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module", params=["wav2vec2", "wavlm"])
def tiny_model(request, tmp_path_factory) -> Path:
    """A tiny random wav2vec2 (sdpa attention) and WavLM (eager attention only)."""
    return save_tiny_wav2vec2(tmp_path_factory.mktemp("ssl") / "model", architecture=request.param)


def _hf(path: Path, device: str, precision: str = "float32", attention: str = "auto", layer: int = 3):
    settings = {"name": "hf_ssl", "model": str(path), "layer": layer, "precision": precision}
    return build_frontend({**settings, "attention": attention}, device)


@pytest.fixture(scope="module")
def waves() -> torch.Tensor:
    return 0.1 * torch.randn(6, 24000, generator=torch.Generator().manual_seed(0))


def test_frontend_float32_on_cuda_equals_cpu_and_restores_the_math_flags(tiny_model, waves):
    cpu = _hf(tiny_model, "cpu")(waves)
    flags = (torch.get_float32_matmul_precision, lambda: torch.backends.cudnn.conv.fp32_precision)
    before = [f() for f in flags]
    fe = _hf(tiny_model, "cuda")
    gpu = fe(waves)
    assert gpu.device.type == "cuda" and gpu.dtype == torch.float32 and gpu.shape == cpu.shape
    assert rel_err(gpu, cpu) < FLOAT32_TOLERANCE, rel_err(gpu, cpu)
    assert rel_err(fe(waves.cuda()), cpu) < FLOAT32_TOLERANCE  # a batch already on the GPU
    assert [f() for f in flags] == before  # the process's math settings are left as they were


@pytest.mark.parametrize(
    "precision,tolerance", [("tf32", TF32_TOLERANCE), ("fp16", FP16_TOLERANCE), ("bf16", BF16_TOLERANCE)]
)
def test_reduced_precision_on_cuda_stays_within_its_tolerance(tiny_model, waves, precision, tolerance):
    cpu = _hf(tiny_model, "cpu")(waves)
    fe = _hf(tiny_model, "cuda", precision)
    out = fe(waves)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert rel_err(out, cpu) < tolerance, (precision, rel_err(out, cpu))


def test_auto_precision_is_bf16_on_cuda(tiny_model):
    assert _hf(tiny_model, "cuda", "auto").autocast_dtype == torch.bfloat16


def test_sdpa_equals_eager_on_cuda(tiny_model, waves):
    auto, eager = _hf(tiny_model, "cuda"), _hf(tiny_model, "cuda", attention="eager")
    assert eager.attention == "eager" and auto.attention in ("sdpa", "eager")
    assert rel_err(auto(waves), eager(waves)) < FLOAT32_TOLERANCE


# -- extraction ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_corpus(tmp_path_factory):
    """A tiny corpus with the hf_ssl front end (tiny wav2vec2, float32): several batches per shard."""
    root = tmp_path_factory.mktemp("cuda_corpus")
    model = save_tiny_wav2vec2(root / "w2v")
    frontend = {"name": "hf_ssl", "hf_ssl": {"model": str(model), "layer": 2, "precision": "float32"}}
    return make_tiny_corpus(root / "c", overrides={"frontend": frontend, "features": {"batch_size": 3}})


def _load_all(directory: Path) -> tuple[pd.DataFrame, np.ndarray]:
    store = FeatureStore(directory)
    return store.index, store.load(store.index).astype(np.float32)


@pytest.fixture(scope="module")
def cpu_store(hf_corpus) -> Path:
    return run_extraction(load_config(hf_corpus.config_path, [f"features.dir={hf_corpus.root / 'cpu'}"]))


@pytest.fixture(scope="module")
def cuda_store(hf_corpus) -> Path:
    cfg = load_config(hf_corpus.config_path, [f"features.dir={hf_corpus.root / 'cuda'}", "device=cuda"])
    return run_extraction(cfg)


def test_extraction_on_cuda_equals_the_cpu_store(cpu_store, cuda_store):
    cpu_index, cpu_feats = _load_all(cpu_store)
    cuda_index, cuda_feats = _load_all(cuda_store)
    pd.testing.assert_frame_equal(cpu_index, cuda_index)
    assert len(cuda_feats) > 2 * 3  # several batches of 3 went through the asynchronous copies
    # both are rounded to float16 (rel. 5e-4) after a float32 computation
    np.testing.assert_allclose(cuda_feats, cpu_feats, rtol=2e-3, atol=2e-3)
    assert rel_err(torch.from_numpy(cuda_feats), torch.from_numpy(cpu_feats)) < 1e-3


def test_bf16_extraction_on_cuda_is_close_to_float32(hf_corpus, cpu_store):
    cfg = load_config(
        hf_corpus.config_path,
        [f"features.dir={hf_corpus.root / 'bf16'}", "device=cuda", "frontend.hf_ssl.precision=auto"],
    )
    _, bf16 = _load_all(run_extraction(cfg))
    _, reference = _load_all(cpu_store)
    assert rel_err(torch.from_numpy(bf16), torch.from_numpy(reference)) < BF16_TOLERANCE


def test_cuda_out_of_memory_names_a_smaller_batch_size(tiny_model):
    fe = _hf(tiny_model, "cuda")
    plan = extract.ShardPlan("train-00000", "train", pd.DataFrame(), ["original"], False)
    state = extract._ShardState(plan)
    state.pending = [np.zeros((2048, 64000), dtype=np.float32)]  # 500 MiB of waves in one batch
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(64 * 2**20 / total)
    try:
        with pytest.raises(ExtractionError, match=r"features.batch_size=2048 .*try features.batch_size=1024"):
            extract._run_frontend(fe, state, batch_size=2048, final=True)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()


# -- two processes (NCCL) ---------------------------------------------------------------------------


def _torchrun(script: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    # NCCL_DEBUG=WARN: NCCL names the reason when it refuses two ranks on one GPU
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", NCCL_DEBUG="WARN")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
    proc = subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, timeout=400, cwd=cwd)
    if proc.returncode != 0 and NCCL_ONE_GPU in proc.stdout + proc.stderr:
        pytest.skip(f"NCCL does not run two ranks on one GPU here ({torch.cuda.device_count()} GPU(s))")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_two_process_nccl_extraction_equals_one_process(hf_corpus, cuda_store, tmp_path):
    features = tmp_path / "ddp_features"
    _torchrun(
        REPO / "scripts" / "preprocess_dataset.py", "--config", str(hf_corpus.config_path), "device=cuda",
        f"features.dir={features}", f"exp_dir={tmp_path / 'exp'}", cwd=tmp_path,
    )  # fmt: skip
    index, feats = _load_all(features / cuda_store.name)
    one_index, one_feats = _load_all(cuda_store)
    pd.testing.assert_frame_equal(index, one_index)
    np.testing.assert_allclose(feats, one_feats, rtol=2e-3, atol=2e-3)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("cuda_train")
    path = write_toy_experiment(root, {"features": {"dir": str(root / "features")}, "device": "cuda"})
    return root, path


def _exp(toy, name: str, *overrides: str):
    root, path = toy
    cfg = load_config(path, [f"exp_dir={root / name}", *overrides])
    LabelMap.read(root / "exp").write(cfg.exp_dir)
    return cfg


def test_two_process_nccl_training(toy):
    root, path = toy
    exp = root / "ddp"
    LabelMap.read(root / "exp").write(exp)
    proc = _torchrun(
        REPO / "train_refd.py", "--config", str(path), f"exp_dir={exp}", "train.epochs=1", "train.precision=bf16",
        cwd=root,
    )  # fmt: skip
    metrics = pd.read_csv(exp / "aasist" / "trained_models" / "metrics.csv")
    assert len(metrics) == 1 and math.isfinite(metrics["train_loss"].iloc[0])
    assert "2 processes" in proc.stdout and "device cuda" in proc.stdout
    assert proc.stdout.count("epoch   1/1") == 1  # only rank 0 logs


# -- mixed-precision training ---------------------------------------------------------------------


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_short_mixed_precision_training_on_cuda(toy, precision, capsys):
    from sourcetracing.training.classifier import train_classifier

    reference = _exp(toy, f"f32-{precision}")
    train_classifier(reference)
    low = _exp(toy, precision, f"train.precision={precision}")
    train_classifier(low)
    assert "device cuda" in capsys.readouterr().out
    root = Path(low.exp_dir) / "aasist" / "trained_models"
    a = pd.read_csv(Path(reference.exp_dir) / "aasist" / "trained_models" / "metrics.csv")[
        "train_loss"
    ].to_numpy()
    b = pd.read_csv(root / "metrics.csv")["train_loss"].to_numpy()
    assert np.isfinite(b).all() and b[-1] < b[0]  # it learns
    assert np.allclose(a, b, rtol=0.15, atol=0.05), (a, b)
    ckpt = read_checkpoint(root / "best.pt")
    assert all(t.device.type == "cpu" for t in ckpt["model_state"].values())  # loads anywhere
    if precision == "fp16":
        assert read_checkpoint(root / "last.pt")["scaler"]["scale"] > 0  # the gradient scaler ran


def test_short_bf16_ge2e_training_on_cuda(toy):
    from sourcetracing.training.ge2e import train_ge2e

    cfg = _exp(toy, "ge2e-bf16", "ge2e.precision=bf16")
    train_ge2e(cfg)
    losses = pd.read_csv(Path(cfg.exp_dir) / "ge2e" / "trained_models" / "metrics.csv")[
        "train_loss"
    ].to_numpy()
    assert np.isfinite(losses).all()
