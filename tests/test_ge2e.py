"""GE2E: the vectorised loss against the paper's formulas, what b does, the sampler, the raw-audio encoder.

(Training, resume and DDP run through the one training loop: tests/test_training.py.)
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from sourcetracing.data.samplers import ClassBalancedBatchSampler
from sourcetracing.models.ge2e import FeatureEncoder, GE2ELoss, GE2EModel
from sourcetracing_tools.bench.ge2e_loss import ge2e_loss_loop

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
    assert e1.grad.abs().sum() > 0 and abs(fast.w.grad.item()) > 1e-8
    if variant == "contrast":
        assert abs(fast.b.grad.item() - b.grad.item()) < 1e-5
        assert abs(fast.b.grad.item()) > 1e-8
    else:  # b cancels in the softmax loss: not a parameter here, and the loop's gradient is round-off
        assert "b" not in dict(fast.named_parameters())
        assert abs(b.grad.item()) < 1e-9


@pytest.mark.parametrize("b0", [-5.0, 0.0, 3.0])
def test_b_has_no_effect_on_the_softmax_loss(b0: float) -> None:
    emb = torch.randn(4, 3, 8, generator=torch.Generator().manual_seed(1))
    reference = GE2ELoss(7.0, 0.0, variant="softmax")(emb).item()
    assert GE2ELoss(7.0, b0, variant="softmax")(emb).item() == pytest.approx(reference, rel=1e-6, abs=1e-6)
    contrast = [GE2ELoss(7.0, v, variant="contrast")(emb).item() for v in (0.0, b0)]
    if b0 != 0.0:  # ... but it does change the contrast loss
        assert abs(contrast[0] - contrast[1]) > 1e-3


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


def test_the_optimiser_trains_w_and_only_the_contrast_variant_trains_b() -> None:
    torch.manual_seed(0)
    x = torch.randn(3 * 4, 12, 6) + torch.arange(3).repeat_interleave(4).view(-1, 1, 1).float()
    for variant in ("softmax", "contrast"):
        model = GE2EModel(
            FeatureEncoder(input_dim=6, hidden_dims=[8], channels=8), GE2ELoss(10.0, -5.0, variant)
        )
        names = {n for n, _ in model.named_parameters()}
        assert "loss.w" in names and ("loss.b" in names) == (variant == "contrast")
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(5):
            opt.zero_grad()
            model(x, n_systems=3).backward()
            opt.step()
        assert abs(model.loss.w.item() - 10.0) > 1e-4
        assert (abs(model.loss.b.item() + 5.0) > 1e-4) == (variant == "contrast")


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


def test_sampler_original_epoch_runs_until_a_drawn_system_is_exhausted() -> None:
    labels = np.repeat([0, 1, 2, 3], [8, 12, 9, 20])
    sampler = ClassBalancedBatchSampler(labels, n_systems=2, n_clips=4, steps_per_epoch=0, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) >= 2
    used = np.concatenate([[p for p, _ in b] for b in batches])
    assert len(used) == len(set(used.tolist()))  # clips are used without replacement within the epoch
    counts = np.bincount(labels[used], minlength=4)
    assert (counts <= np.bincount(labels)).all() and (counts % 4 == 0).all()
    # two ranks deal out the same epoch: equal step counts, disjoint batches
    r0 = list(ClassBalancedBatchSampler(labels, 2, 4, 0, seed=1, rank=0, world_size=2))
    r1 = list(ClassBalancedBatchSampler(labels, 2, 4, 0, seed=1, rank=1, world_size=2))
    assert (
        len(r0) == len(r1) == len(batches) // 2
        and r0 == batches[0 : 2 * len(r0) : 2]
        and r1 == batches[1 : 2 * len(r1) : 2]
    )


@pytest.mark.slow
def test_hf_ssl_encoder_on_raw_audio(tmp_path: Path, caplog) -> None:
    """The hf_ssl encoder fine-tunes a (tiny, random) wav2vec2 on raw waveforms; bad clips are skipped."""
    from corpus_fixtures import add_bad_clips, make_tiny_corpus, save_tiny_wav2vec2

    from sourcetracing.config import load_config
    from sourcetracing.judge import judge_system
    from sourcetracing.layout import ExperimentLayout
    from sourcetracing.training.checkpoint import read_checkpoint
    from sourcetracing.training.ge2e import train_ge2e

    model = save_tiny_wav2vec2(tmp_path / "w2v", num_layers=2)
    ge2e = {
        "encoder": {"name": "hf_ssl", "hf_ssl": {"model": str(model), "layer": -1, "hidden_dims": [16, 8]}},
        "n_systems": 3, "n_clips": 2, "epochs": 1, "steps_per_epoch": 2, "lr": 1e-3, "batch_size": 4,
        "select_clips_per_system": 2,
    }  # fmt: skip
    corpus = make_tiny_corpus(
        tmp_path / "c", clips_per_system=4, max_len_s=0.5, overrides={"ge2e": ge2e, "ood": {"knn": {"k": 2}}}
    )
    add_bad_clips(corpus, "train", kinds=("unreadable",))
    cfg = load_config(corpus.config_path)
    with caplog.at_level(logging.WARNING):
        train_ge2e(cfg)
    system = ExperimentLayout.of(cfg).system("ge2e")
    ckpt = read_checkpoint(system.best)
    assert ckpt["model_config"]["name"] == "hf_ssl" and ckpt["input_dim"] is None
    assert any(k.startswith("ssl.") for k in ckpt["model_state"])
    assert any("unreadable" in r.getMessage() for r in caplog.records)
    results, summary = judge_system(cfg, "ge2e")
    assert "eval" in results and (system.ood / "scores_eval.tsv").is_file()
    assert set(summary["scorer"]) == {"knn", "mahalanobis", "centroid"}  # embedding scorers only


def test_aam_softmax_margin_and_training_through_the_embedding_task(tmp_path) -> None:
    from sourcetracing.models.ge2e import AAMSoftmaxLoss

    torch.manual_seed(0)
    loss = AAMSoftmaxLoss(3, 4, margin=0.0, scale=10.0)
    emb, labels = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    plain = torch.nn.functional.cross_entropy(
        10.0
        * torch.nn.functional.normalize(emb, dim=-1)
        @ torch.nn.functional.normalize(loss.weight, dim=-1).t(),
        labels,
    )
    assert loss(emb, labels=labels).item() == pytest.approx(
        plain.item(), rel=1e-5
    )  # margin 0: scaled cosine softmax
    loss.margin = 0.3
    assert loss(emb, labels=labels).item() > plain.item()  # the margin makes the target harder
    with pytest.raises(ValueError, match="labels"):
        loss(emb)

    from toy_store import write_toy_experiment

    from sourcetracing.config import load_config
    from sourcetracing.layout import ExperimentLayout
    from sourcetracing.training.checkpoint import read_checkpoint
    from sourcetracing.training.ge2e import train_ge2e

    path = write_toy_experiment(tmp_path, {"ge2e": {"loss": "aam", "epochs": 2}})
    cfg = load_config(path)
    train_ge2e(cfg)
    system = ExperimentLayout.of(cfg).system("ge2e")
    best = read_checkpoint(system.best)
    assert best["extra_state"]["weight"].shape == (4, 8)  # the class directions are saved beside the encoder
    import pandas as pd

    metrics = pd.read_csv(system.metrics)
    assert metrics["train_loss"].notna().all() and metrics["dev_macro_f1"].max() > 0.5


def test_the_original_cosine_floor_stops_gradients_through_negative_cosines() -> None:
    emb = torch.tensor([[[1.0, 0.0], [0.9, 0.1]], [[-1.0, 0.0], [-0.9, -0.1]]], requires_grad=True)
    floored = GE2ELoss(10.0, -5.0, cos_floor=1e-6)
    sim = floored.similarity(emb)
    assert float(sim.min().detach()) == pytest.approx(10.0 * 1e-6 - 5.0)  # negative cosines clamped
    plain = GE2ELoss(10.0, -5.0).similarity(emb)
    assert float(plain.min().detach()) < -14.0  # about 10 * (-1) - 5 without the floor
