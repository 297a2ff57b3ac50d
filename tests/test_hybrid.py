"""The hybrid network and its objectives: proxy-anchor against its formula, the gate, the outlier terms."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from sourcetracing.models.hybrid import GatedHybrid, hybrid_loss, proxy_anchor_loss


def _proxy_anchor_by_the_formula(
    cos: torch.Tensor, labels: list[int], alpha: float, delta: float
) -> torch.Tensor:
    """Kim et al. (2020), eq. 4, written out with loops over proxies and clips."""
    n, c = cos.shape
    with_pos = [p for p in range(c) if p in labels]
    pos = cos.new_zeros(())
    for p in with_pos:
        inner = sum(torch.exp(-alpha * (cos[i, p] - delta)) for i in range(n) if labels[i] == p)
        pos = pos + torch.log(1 + inner)
    neg = cos.new_zeros(())
    for p in range(c):
        terms = [torch.exp(alpha * (cos[i, p] + delta)) for i in range(n) if labels[i] != p]
        neg = neg + torch.log(1 + sum(terms)) if terms else neg
    return pos / len(with_pos) + neg / c


def test_proxy_anchor_value_and_gradient_match_the_formula() -> None:
    torch.manual_seed(0)
    raw = torch.randn(7, 4, dtype=torch.float64)
    labels = [0, 0, 1, 2, 2, 2, 1]  # class 3 has no positive in the batch
    a = raw.clone().tanh().requires_grad_(True)
    b = raw.clone().tanh().requires_grad_(True)
    mine = proxy_anchor_loss(a, torch.tensor(labels), alpha=32.0, delta=0.1)
    ref = _proxy_anchor_by_the_formula(b, labels, alpha=32.0, delta=0.1)
    assert float(mine) == pytest.approx(float(ref), rel=1e-10)
    mine.backward()
    ref.backward()
    np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-8, atol=1e-12)
    assert float(a.grad[:, 3].abs().max()) > 0  # a proxy without positives still gets its negatives' pull


def test_gate_lies_between_the_branches_and_every_input_mode_runs() -> None:
    torch.manual_seed(1)
    frames, stats = torch.randn(5, 12), torch.randn(5, 9)
    for inputs in ("both", "stats", "frames"):
        for fusion in ("gated", "concat"):
            model = GatedHybrid(
                12, 9, 3, hidden=16, embedding_dim=8, fusion=fusion, inputs=inputs, dropout=0.0
            )
            emb, scores = model(frames, stats)
            assert emb.shape == (5, 8) and scores.shape == (5, 3)
            np.testing.assert_allclose(emb.norm(dim=1).detach().numpy(), 1.0, atol=1e-5)
            assert float(scores.abs().max()) <= model.scale + 1e-4
    model = GatedHybrid(12, 9, 3, hidden=16, embedding_dim=8, dropout=0.0).eval()
    a, b = model.frames(frames), model.stats(stats)
    g = torch.sigmoid(model.merge(torch.cat([a, b], 1)))
    z = g * a + (1 - g) * b
    lo, hi = torch.minimum(a, b), torch.maximum(a, b)
    assert bool(((z >= lo - 1e-6) & (z <= hi + 1e-6)).all())  # a convex mix of the two branches
    np.testing.assert_allclose(
        model.embedding(frames, stats).detach().numpy(),
        torch.nn.functional.normalize(model.embed(z), dim=1).detach().numpy(), atol=1e-6,
    )  # fmt: skip


def test_outlier_terms_push_outliers_towards_uniform_or_high_energy() -> None:
    torch.manual_seed(2)
    model = GatedHybrid(6, 4, 3, hidden=8, embedding_dim=4, dropout=0.0)
    scores = torch.tensor([[10.0, -5.0, -5.0], [-5.0, 10.0, -5.0]])
    labels = torch.tensor([0, 1])
    confident_outliers = torch.tensor([[12.0, -6.0, -6.0]])
    uniform_outliers = torch.zeros(1, 3)
    base = hybrid_loss(model, scores, labels)
    for kind in ("uniform", "energy"):
        bad = hybrid_loss(model, scores, labels, outlier_scores=confident_outliers, outlier_loss=kind)
        good = hybrid_loss(model, scores, labels, outlier_scores=uniform_outliers, outlier_loss=kind)
        assert bad > good >= base - 1e-6
    # the uniform term of a uniform outlier is log(C), its lowest value
    term = hybrid_loss(model, scores, labels, outlier_scores=uniform_outliers, outlier_weight=1.0) - base
    assert float(term) == pytest.approx(math.log(3), rel=1e-6)
    with pytest.raises(ValueError, match="loss must be"):
        hybrid_loss(model, scores, labels, loss="triplet")


def test_held_out_classes_become_the_steps_outliers_scored_against_the_other_classes() -> None:
    import torch.nn.functional as F

    torch.manual_seed(3)
    model = GatedHybrid(6, 4, 4, hidden=8, embedding_dim=4, dropout=0.0)
    scores = torch.randn(6, 4) * 5
    labels = torch.tensor([0, 1, 2, 3, 1, 2])
    held = torch.tensor([False, True, False, False])
    synthetic = torch.randn(2, 4)
    got = hybrid_loss(model, scores, labels, outlier_scores=synthetic, outlier_weight=0.7, held_out=held)
    keep = torch.tensor([0, 2, 3])
    known = torch.tensor([0, 2, 3, 5])  # rows of classes 0, 2, 3; their labels among the kept classes
    ce = F.cross_entropy(scores[known][:, keep], torch.tensor([0, 1, 2, 1]))
    outliers = torch.cat([synthetic[:, keep], scores[torch.tensor([1, 4])][:, keep]])
    uniform = -F.log_softmax(outliers, dim=1).mean(dim=1).mean()
    assert float(got) == pytest.approx(float(ce + 0.7 * uniform), rel=1e-6)
    # no class held out: the plain objective
    none = torch.zeros(4, dtype=torch.bool)
    assert float(hybrid_loss(model, scores, labels, held_out=none)) == pytest.approx(
        float(hybrid_loss(model, scores, labels)), rel=1e-6
    )


def test_hybrid_system_end_to_end_on_a_tiny_corpus(tmp_path) -> None:
    """Store + statistics -> the gated network with synthesised outliers -> outputs judged like any
    system; the saved weights give the exported numbers again, and nothing is read from eval."""
    from test_reference import _corpus

    from sourcetracing.config import load_config
    from sourcetracing.features.extract import run_extraction
    from sourcetracing.judge import judge_system
    from sourcetracing.systems.handle import export_system, system_kind
    from sourcetracing.systems.hybrid import SYSTEM, export_hybrid
    from sourcetracing.systems.outputs import SystemOutputs

    root = tmp_path / "data"
    proto = _corpus(root, np.random.default_rng(0))
    cfg = load_config(
        None,
        [f"exp_dir={tmp_path / 'exp'}", f"data.root={root}", f"data.protocols={proto}", "data.max_len_s=0.5",
         "frontend.name=lfcc", "augment.versions=[original, codec]", "stats.augment=[codec]", "stats.jobs=1",
         "hybrid.enabled=true", "hybrid.epochs=40", "hybrid.outliers=[pitch_up, slower]", "ood.knn.k=3",
         "hybrid.held_out_classes=1",
         "ood.scorers=[knn, msp, energy]"],
    )  # fmt: skip
    run_extraction(cfg)
    assert system_kind(cfg, SYSTEM) == "hybrid"
    export_hybrid(cfg, n_jobs=1)
    outputs = SystemOutputs.read(tmp_path / "exp" / SYSTEM / "outputs")
    train, dev, ev = outputs.split("train"), outputs.split("dev"), outputs.split("eval")
    assert set(train.rows["version"]) == {"original", "codec"} and len(train.rows) == 2 * 18
    assert len(ev.rows) == 20 and outputs.has == {"embeddings", "logits"}  # the broken clip left out
    assert outputs.meta["settings"]["outliers"] == ["pitch_up", "slower"]
    assert outputs.meta["settings"]["held_out_classes"] == 1
    from sourcetracing.systems.hybrid import assemble, outlier_features, outlier_sources

    train_rows = assemble(cfg)["train"][2]
    sources = outlier_sources(cfg, train_rows)  # one source clip per synthesised outlier, in order
    assert len(sources) == len(outlier_features(cfg, train_rows)[0]) == 2 * 18  # 18 originals, 2 kinds
    assert list(sources[:2]) == [train_rows["clip_id"].iloc[0]] * 2
    results, summary = judge_system(cfg, SYSTEM)
    assert results["eval"]["accuracy"] >= 0.9  # sine "systems": easy to tell apart
    assert set(summary["scorer"]) == {"knn", "msp", "energy"}
    # eval is never read by the fit: other eval clips change no train or dev number
    first = dev.embeddings.copy()
    ev_csv = proto / "eval.csv"
    table = pd.read_csv(ev_csv)
    table.iloc[:-4].to_csv(ev_csv, index=False)
    export_system(cfg, SYSTEM, n_jobs=1)
    again = SystemOutputs.read(tmp_path / "exp" / SYSTEM / "outputs")
    np.testing.assert_allclose(again.split("dev").embeddings, first, atol=1e-6)
    from sourcetracing.errors import ConfigError

    with pytest.raises(ConfigError, match="fewer than 2 of the 3 known systems"):
        bad = cfg.clone()
        bad.hybrid.held_out_classes = 2
        export_hybrid(bad, n_jobs=1)


def test_user_outlier_clips_are_used_as_they_are_and_never_from_a_protocol_system(tmp_path) -> None:
    import soundfile as sf
    from test_reference import _corpus

    from sourcetracing.config import load_config
    from sourcetracing.errors import DataError
    from sourcetracing.systems.hybrid import outlier_features

    root = tmp_path / "data"
    proto = _corpus(root, np.random.default_rng(0))
    rng = np.random.default_rng(3)
    rows = []
    for i in range(3):  # an auxiliary "system" that no split holds
        rel = f"./aux/en/aux_tone/{i}.wav"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        t = np.arange(8000) / 16000
        sf.write(
            root / rel,
            (0.3 * np.sin(2 * np.pi * 5200 * t) + 0.01 * rng.standard_normal(8000)).astype(np.float32),
            16000,
        )
        rows.append({"path": rel, "model_name": "aux/tone"})
    good = tmp_path / "outliers.csv"
    pd.DataFrame(rows).to_csv(good, index=False)
    base = [f"exp_dir={tmp_path / 'exp'}", f"data.root={root}", f"data.protocols={proto}", "data.max_len_s=0.5",
            "frontend.name=lfcc", "hybrid.enabled=true"]  # fmt: skip
    train = pd.DataFrame({"path": ["./fake/en/sys_a/train_1.wav"], "version": ["original"]})
    cfg = load_config(None, [*base, f"hybrid.outlier_clips={good}", "hybrid.outliers=[faster]"])
    frames, stats = outlier_features(cfg, train)
    assert len(frames) == len(stats) == 1 + 3  # one synthesised copy, three clips as they are
    bad = tmp_path / "bad.csv"
    pd.DataFrame([*rows, {"path": "./fake/en/other_x/eval_0.wav", "model_name": "other/x"}]).to_csv(
        bad, index=False
    )
    with pytest.raises(DataError, match="other/x is a system of the (dev|eval) split"):
        outlier_features(load_config(None, [*base, f"hybrid.outlier_clips={bad}"]), train)


def test_an_anchor_is_fixed_and_weighted_beside_the_learned_part() -> None:
    torch.manual_seed(0)
    net = GatedHybrid(6, 5, 3, hidden=8, embedding_dim=4, inputs="stats", anchor_dim=2, anchor_weight=0.5)
    mean, matrix = torch.randn(5), torch.randn(5, 2)
    net.set_anchor(mean, matrix)
    stats = torch.randn(7, 5)
    emb, scores = net(torch.zeros(7, 6), stats)
    assert emb.shape == (7, 6) and scores.shape == (7, 3) and net.proxies.shape == (3, 6)
    anchor = torch.nn.functional.normalize((stats - mean) @ matrix, dim=1)
    head, tail = emb[:, :2], emb[:, 2:]
    # the anchor block points along the fixed projection; the learned block is w times as long
    np.testing.assert_allclose(torch.nn.functional.normalize(head, dim=1).detach(), anchor, atol=1e-5)
    np.testing.assert_allclose((tail.norm(dim=1) / head.norm(dim=1)).detach(), 0.5, rtol=1e-4)
    assert "anchor_matrix" in net.state_dict() and all(p is not net.anchor_matrix for p in net.parameters())
    with pytest.raises(ValueError, match="does not fit"):
        net.set_anchor(mean, torch.randn(5, 3))


def test_the_anchored_statistics_hybrid_runs_on_audio_and_keeps_the_statistics_lda(tmp_path) -> None:
    """hybrid.anchor=lda with hybrid.inputs=stats: the saved anchor is the shrinkage LDA of the train
    statistics (untouched by training), the network runs on audio and gives its exported numbers
    again, and a hybrid that takes frame features says why it cannot."""
    from test_reference import _corpus

    from sourcetracing.config import load_config
    from sourcetracing.errors import BundleError, MissingInputError
    from sourcetracing.features.extract import run_extraction
    from sourcetracing.systems.handle import open_system, why_not_runnable
    from sourcetracing.systems.hybrid import SavedHybrid, assemble, export_hybrid
    from sourcetracing.systems.mfcc import lda_projection

    root = tmp_path / "data"
    proto = _corpus(root, np.random.default_rng(0))
    overrides = [
        f"exp_dir={tmp_path / 'exp'}", f"data.root={root}", f"data.protocols={proto}", "data.max_len_s=0.5",
        "frontend.name=lfcc", "augment.versions=[original, codec]", "stats.augment=[codec]", "stats.jobs=1",
        "hybrid.enabled=true", "hybrid.epochs=20",
        "hybrid.loss=proxy_anchor", "ood.knn.k=3", "ood.scorers=[knn, centroid]",
    ]  # fmt: skip
    cfg = load_config(
        None,
        [*overrides, "hybrid.inputs=stats", "hybrid.anchor=lda", "hybrid.name=anchored", "ood.tune=crossfit",
         "ood.select=unseen_auroc"],
    )  # fmt: skip
    run_extraction(cfg)
    export_hybrid(cfg, n_jobs=1)
    from sourcetracing.judge import judge_system

    judge_system(cfg, "anchored")
    saved = SavedHybrid.load(tmp_path / "exp" / "anchored" / "trained_models" / "hybrid.pt")
    _, stats, rows = assemble(cfg)["train"]
    mean, matrix = lda_projection(saved.stats(stats).numpy().astype(np.float64), rows["label"].to_numpy(int))
    assert saved.model.anchor_matrix.shape == (stats.shape[1], 2)  # 3 known systems: 2 directions
    np.testing.assert_allclose(saved.model.anchor_matrix.numpy(), matrix, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(saved.model.anchor_mean.numpy(), mean, rtol=1e-4, atol=1e-5)

    handle = open_system(cfg, "anchored")
    # cross-fitted: retrained with each known system held out, every scorer judged on its clips
    table = handle.outputs.crossfit
    assert set(table["held_out"]) == set(handle.meta.class_names) and set(table["scorer"]) == {
        "knn",
        "centroid",
    }
    finite = table.dropna(subset=["auroc"])  # a k larger than a fold's bank has no value
    assert finite["auroc"].between(0, 1).all() and set(finite["held_out"]) == set(handle.meta.class_names)
    assert (table["n_unseen"] > 0).all()
    assert set(handle.ood.entry("knn").raw["crossfit_aurocs"]) == set(handle.meta.class_names)
    assert why_not_runnable(cfg, "anchored") is None
    runner = handle.runner("cpu")
    dev = handle.outputs.split("dev")
    again = runner.run_rows(cfg, "dev", dev.rows)
    assert list(again.rows["clip_id"]) == list(dev.rows["clip_id"])
    np.testing.assert_allclose(again.embeddings, dev.embeddings, atol=1e-4)
    np.testing.assert_allclose(again.logits, dev.logits, atol=1e-3)
    with pytest.raises(BundleError, match="cannot be bundled yet"):
        handle.kind.bundle_model(runner)
    # the cross-fitted evidence and the scorer chosen on it never read eval: other eval clips, same table
    chosen = handle.ood.default
    ev_csv = proto / "eval.csv"
    pd.read_csv(ev_csv).iloc[:-4].to_csv(ev_csv, index=False)
    export_hybrid(cfg, n_jobs=1)
    judge_system(cfg, "anchored")
    again_handle = open_system(cfg, "anchored")
    pd.testing.assert_frame_equal(again_handle.outputs.crossfit, table)
    assert again_handle.ood.default == chosen

    both = load_config(None, [*overrides, "hybrid.name=frames_too"])
    export_hybrid(both, n_jobs=1)
    judge_system(both, "frames_too")
    assert "takes frame features" in why_not_runnable(both, "frames_too")
    with pytest.raises(MissingInputError, match="cannot run on audio"):
        open_system(both, "frames_too").runner("cpu")
