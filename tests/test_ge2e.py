"""GE2E: the vectorised loss against the paper's formulas, the sampler, training and evaluation."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from ge2e_helpers import KNOWN, write_synthetic_experiment

from sourcetracing_tools.bench.ge2e_loss import ge2e_loss_loop
from sourcetracing.data.samplers import ClassBalancedBatchSampler
from sourcetracing.models.ge2e import FeatureEncoder, GE2ELoss, GE2EModel

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------- loss


@pytest.mark.parametrize("variant", ["softmax", "contrast"])
@pytest.mark.parametrize("shape", [(2, 2, 3), (5, 4, 16), (7, 3, 9)])
def test_vectorised_loss_equals_loop_with_gradients(variant: str, shape: tuple[int, int, int]) -> None:
    gen = torch.Generator().manual_seed(sum(shape))
    emb = torch.randn(*shape, generator=gen, dtype=torch.float64)
    w0, b0 = float(torch.rand(1, generator=gen)) * 10 + 0.5, float(torch.randn(1, generator=gen)) * 3

    fast = GE2ELoss(w0, b0, variant=variant).double()
    e1 = emb.clone().requires_grad_(True)
    loss1 = fast(e1)
    loss1.backward()

    w = torch.tensor(w0, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(b0, dtype=torch.float64, requires_grad=True)
    e2 = emb.clone().requires_grad_(True)
    loss2 = ge2e_loss_loop(e2, w, b, variant)
    loss2.backward()

    assert abs(loss1.item() - loss2.item()) < 1e-5
    assert torch.allclose(e1.grad, e2.grad, atol=1e-5)
    assert abs(fast.w.grad.item() - w.grad.item()) < 1e-5
    assert abs(fast.b.grad.item() - b.grad.item()) < 1e-5
    assert e1.grad.abs().sum() > 0 and abs(fast.w.grad.item()) > 1e-8
    if variant == "contrast":
        assert abs(fast.b.grad.item()) > 1e-8
    else:  # b cancels in the softmax loss: its gradient is zero up to round-off
        assert abs(fast.b.grad.item()) < 1e-9


@pytest.mark.parametrize("variant", ["softmax", "contrast"])
def test_loss_float32_flat_input_and_sum_reduction(variant: str) -> None:
    emb = torch.randn(4, 3, 8)
    fast = GE2ELoss(7.0, -2.0, variant=variant, reduction="sum")
    ref = ge2e_loss_loop(emb, fast.w.detach(), fast.b.detach(), variant, reduction="sum")
    assert abs(fast(emb.view(12, 8), n_systems=4).item() - ref.item()) < 1e-5 * max(1.0, abs(ref.item()))


def test_exclusive_centroid_is_used() -> None:
    # With 2 clips the own exclusive centroid is the other clip: identical clips give cos = 1.
    emb = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]])
    sim = GE2ELoss(1.0, 0.0).similarity(emb)
    assert torch.allclose(sim, torch.tensor([[[1.0, 0.0]] * 2, [[0.0, 1.0]] * 2]))


def test_w_kept_positive_and_errors() -> None:
    loss = GE2ELoss(1.0, 0.0)
    with torch.no_grad():
        loss.w.fill_(-3.0)
    assert loss.scale().item() == pytest.approx(1e-6)
    with pytest.raises(ValueError, match="variant"):
        GE2ELoss(variant="triplet")
    with pytest.raises(ValueError, match="at least 2 clips"):
        GE2ELoss()(torch.randn(3, 1, 4))
    with pytest.raises(ValueError, match="n_systems"):
        GE2ELoss()(torch.randn(6, 4))


def test_w_and_b_are_trained_by_the_optimiser() -> None:
    torch.manual_seed(0)
    model = GE2EModel(FeatureEncoder(input_dim=6, hidden_dims=[8], channels=8), GE2ELoss(10.0, -5.0))
    names = {n for n, _ in model.named_parameters()}
    assert {"loss.w", "loss.b"} <= names
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.randn(3 * 4, 12, 6) + torch.arange(3).repeat_interleave(4).view(-1, 1, 1).float()
    for _ in range(5):
        opt.zero_grad()
        model(x, n_systems=3).backward()
        opt.step()
    assert model.loss.w.item() != pytest.approx(10.0, abs=1e-4)
    assert model.loss.b.item() != pytest.approx(-5.0, abs=1e-4)


# ---------------------------------------------------------------------------------------------- sampler


def test_sampler_batches_of_distinct_systems_and_small_systems_left_out(caplog) -> None:
    labels = np.array([0] * 6 + [1] * 5 + [2] * 2 + [3] * 8 + [4] * 4 + [-1] * 9)
    groups = np.arange(len(labels)) // 1
    with caplog.at_level(logging.WARNING):
        sampler = ClassBalancedBatchSampler(
            labels, n_systems=3, n_clips=4, steps_per_epoch=6, seed=3, groups=groups, names={2: "tiny"}
        )
    warnings = [r.getMessage() for r in caplog.records if "fewer than 4 clips" in r.getMessage()]
    assert len(warnings) == 1 and "tiny (2)" in warnings[0]
    assert sampler.systems == [0, 1, 3, 4]
    batches = list(sampler)
    assert len(batches) == 6
    for batch in batches:
        pos = [p for p, _ in batch]
        assert len(pos) == 12 and len(set(pos)) == 12
        sys_of = labels[pos].reshape(3, 4)
        assert (sys_of == sys_of[:, :1]).all()  # system-major blocks of M
        assert len(set(sys_of[:, 0])) == 3  # distinct systems
        assert 2 not in sys_of and -1 not in sys_of
    again = list(ClassBalancedBatchSampler(labels, 3, 4, 6, seed=3, groups=groups))
    assert again == batches  # seeded
    sampler.set_epoch(1)
    assert list(sampler) != batches


def test_sampler_caps_systems_groups_versions_and_ranks(caplog) -> None:
    # 3 systems, 4 clips each, 2 versions per clip: the M clips of a system are distinct clips.
    labels = np.repeat([0, 1, 2], 8)
    groups = np.repeat(np.arange(12), 2)
    with caplog.at_level(logging.WARNING):
        sampler = ClassBalancedBatchSampler(labels, n_systems=10, n_clips=4, steps_per_epoch=5, groups=groups)
    assert sampler.n_systems == 3 and any("capped" in r.getMessage() for r in caplog.records)
    for batch in sampler:
        pos = [p for p, _ in batch]
        assert len(set(groups[pos])) == 12
    r0 = list(ClassBalancedBatchSampler(labels, 2, 2, 5, groups=groups, rank=0, world_size=2))
    r1 = list(ClassBalancedBatchSampler(labels, 2, 2, 5, groups=groups, rank=1, world_size=2))
    assert r0 != r1
    with pytest.raises(ValueError, match="at least 2 systems"):
        ClassBalancedBatchSampler(np.array([0] * 5 + [1]), 2, 2, 3)


# ---------------------------------------------------------------------------------------------- training


def test_train_resume_checkpoint_contents(tmp_path: Path) -> None:
    from sourcetracing.config import load_config
    from sourcetracing.ge2e.train import train

    cfg_path = write_synthetic_experiment(tmp_path)
    cfg = load_config(cfg_path, ["ge2e.epochs=1"])
    out = train(cfg)
    first = torch.load(out / "last.pt", weights_only=True)
    assert first["epoch"] == 1 and "optimizer_state" in first and "rng_state" in first
    cfg2 = load_config(cfg_path, ["ge2e.epochs=2", "ge2e.select_by=dev_loss"])
    train(cfg2, resume=True)
    last = torch.load(out / "last.pt", weights_only=True)
    best = torch.load(out / "best.pt", weights_only=True)
    assert last["epoch"] == 2 and len(last["history"]) == 2
    assert last["label_map"]["known"] == KNOWN
    assert set(best) >= {"model_state", "loss_state", "config", "label_map", "encoder_config", "epoch"}
    metrics = pd.read_csv(out / "metrics.csv")
    assert list(metrics["epoch"]) == [1, 2]
    assert {"train_loss", "w", "b", "dev_loss", "dev_macro_f1"} <= set(metrics.columns)
    # w and b moved away from their initial values (they are trained)
    assert abs(last["loss_state"]["w"].item() - 10.0) > 1e-4
    assert abs(last["loss_state"]["b"].item() + 5.0) > 1e-4
    assert (out / "curves.png").stat().st_size > 0


def _run(args: list[str], cwd: Path, env_extra: dict | None = None) -> str:
    import os
    import subprocess

    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **(env_extra or {}))
    proc = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_train_evaluate_generate_plot_end_to_end(tmp_path: Path) -> None:
    cfg = write_synthetic_experiment(tmp_path)
    exp = tmp_path / "exp"
    out = _run([str(REPO / "train_ge2e.py"), "--config", str(cfg), "ge2e.epochs=2"], tmp_path)
    assert "nearest centroid" in out and "centroid" in out and "knn" in out
    g = exp / "ge2e"
    for name in ("best.pt", "last.pt", "metrics.csv", "curves.png"):
        assert (g / name).is_file(), name
    for name in ("dev_in_domain_results.txt", "eval_in_domain_results.txt", "metrics.json"):
        assert (g / "results" / name).is_file(), name
    for name in (
        "OOD_eval_results.txt",
        "ood_summary.csv",
        "scores_dev.tsv",
        "scores_eval.tsv",
        "thresholds.json",
    ):
        assert (g / "ood_step" / name).is_file(), name
    summary = pd.read_csv(g / "ood_step" / "ood_summary.csv")
    assert set(summary["scorer"]) == {"centroid", "knn"}
    allrows = summary[(summary["subset"] == "all") & (summary["split"] == "eval")]
    assert (allrows["auroc"] > 0.7).all()  # learnable synthetic classes: OOD well separated
    import json

    known = json.loads((g / "results" / "metrics.json").read_text())
    assert known["eval"]["accuracy"] > 0.7
    scores = pd.read_csv(g / "ood_step" / "scores_eval.tsv", sep="\t")
    assert len(scores) == 60 and {"centroid", "knn"} <= set(scores.columns)

    _run(
        [str(REPO / "scripts/generate_embeddings.py"), "--config", str(cfg), "--layout", "original"], tmp_path
    )
    emb_dir = g / "embeddings"
    for split, n in (("train", 40), ("dev", 60), ("eval", 60)):
        data = np.load(emb_dir / f"{split}.npz")
        assert data["embeddings"].shape == (n, 8)
        index = pd.read_csv(emb_dir / f"{split}.csv")
        assert len(index) == n
        assert len(list((emb_dir / "original" / split).glob("*/*.npy"))) == n
    # OOD systems go to their label_map.csv id: sys_z is the 3rd OOD system -> 4 + 2
    assert len(list((emb_dir / "original" / "eval" / "6").glob("*.npy"))) == 10
    vec = np.load(next((emb_dir / "original" / "train" / "0").glob("*.npy")))
    assert vec.shape == (8,)

    png = tmp_path / "map.png"
    _run(
        [
            str(REPO / "scripts/plot_embeddings.py"),
            "--embeddings",
            str(emb_dir),
            "--out",
            str(png),
            "--method",
            "tsne",
            "--max-points",
            "120",
        ],
        tmp_path,
    )
    assert png.stat().st_size > 5000


@pytest.mark.slow
def test_ddp_two_processes_gloo(tmp_path: Path) -> None:
    cfg = write_synthetic_experiment(tmp_path)
    _run(
        [
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(REPO / "train_ge2e.py"),
            "--config",
            str(cfg),
            "ge2e.epochs=1",
            "--no-eval",
        ],
        tmp_path,
    )
    ckpt = torch.load(tmp_path / "exp" / "ge2e" / "best.pt", weights_only=True)
    assert ckpt["epoch"] == 1
    assert len(pd.read_csv(tmp_path / "exp" / "ge2e" / "metrics.csv")) == 1


@pytest.mark.slow
def test_hf_ssl_encoder_on_raw_audio(tmp_path: Path, caplog) -> None:
    """The hf_ssl encoder fine-tunes a (tiny, random) wav2vec2 on raw waveforms; bad clips are skipped."""
    from corpus_fixtures import add_bad_clips, make_tiny_corpus, save_tiny_wav2vec2

    from sourcetracing.config import load_config
    from sourcetracing.ge2e.train import train

    model = save_tiny_wav2vec2(tmp_path / "w2v", num_layers=2)
    ge2e = {
        "encoder": "hf_ssl",
        "model": str(model),
        "layer": -1,
        "hidden_dims": [16, 8],
        "n_systems": 3,
        "n_clips": 2,
        "epochs": 1,
        "steps_per_epoch": 2,
        "lr": 1e-3,
        "batch_size": 4,
        "select_clips_per_system": 2,
        "knn_k": 2,
    }
    corpus = make_tiny_corpus(tmp_path / "c", clips_per_system=4, max_len_s=0.5, overrides={"ge2e": ge2e})
    add_bad_clips(corpus, "train", kinds=("unreadable",))
    cfg = load_config(corpus.config_path)
    with caplog.at_level(logging.WARNING):
        out = train(cfg)
    ckpt = torch.load(out / "best.pt", weights_only=True)
    assert ckpt["encoder_config"]["name"] == "hf_ssl" and ckpt["input_dim"] is None
    assert any(k.startswith("ssl.") for k in ckpt["model_state"])

    pytest.importorskip("sourcetracing.metrics")
    from sourcetracing.ge2e.evaluate import evaluate

    with caplog.at_level(logging.WARNING):
        summary = evaluate(cfg)
    assert any("unreadable" in r.getMessage() for r in caplog.records)
    assert "eval" in summary["known"]
    assert (out / "ood_step" / "scores_eval.tsv").is_file()
