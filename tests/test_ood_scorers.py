"""OOD scorers: direction on synthetic clusters, equality with naive implementations, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sourcetracing.ood.metrics import auroc
from sourcetracing.ood.scorers import SCORERS, Scorer, build_scorer, register

DIM, K = 32, 4


def _clusters(seed: int = 0):
    """Known classes: tight clusters at radius 8; OOD: clusters near the origin in other directions.

    Logits come from a linear classifier whose weights are the class directions, so OOD clips get
    flat, small logits (as a trained model would on unfamiliar input).
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((K, DIM))
    centres = 8 * centres / np.linalg.norm(centres, axis=1, keepdims=True)
    ood_centres = rng.standard_normal((3, DIM))
    ood_centres = 1.5 * ood_centres / np.linalg.norm(ood_centres, axis=1, keepdims=True)
    w = centres / 8

    def sample(c: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        lab = rng.integers(0, len(c), n)
        return (c[lab] + rng.standard_normal((n, DIM))).astype(np.float32), lab

    train, train_lab = sample(centres, 200)
    known, _ = sample(centres, 100)
    ood, _ = sample(ood_centres, 100)
    logits = lambda x: (x @ w.T).astype(np.float32)  # noqa: E731
    return train, logits(train), train_lab, known, logits(known), ood, logits(ood)


@pytest.mark.parametrize("name", sorted(SCORERS))
def test_direction_higher_is_more_ood(name: str) -> None:
    train, train_logits, train_lab, known, known_logits, ood, ood_logits = _clusters()
    scorer = build_scorer(name, k=5, chunk_size=64).fit(train, train_logits, train_lab)
    s_known = scorer.score(known, known_logits)
    s_ood = scorer.score(ood, ood_logits)
    assert s_known.shape == (len(known),) and s_ood.shape == (len(ood),)
    assert np.isfinite(s_known).all() and np.isfinite(s_ood).all()
    scores = np.concatenate([s_known, s_ood])
    is_ood = np.r_[np.zeros(len(known), bool), np.ones(len(ood), bool)]
    assert auroc(scores, is_ood) > 0.9, f"{name}: OOD clips should score higher"


def test_nsd_equals_naive_dense() -> None:
    rng = np.random.default_rng(1)
    train, train_logits = rng.standard_normal((57, 12)), rng.standard_normal((57, 5))
    x, x_logits = rng.standard_normal((23, 12)), rng.standard_normal((23, 5))
    scorer = build_scorer("nsd", chunk_size=7).fit(train, train_logits, np.zeros(57, int))
    # naive: energy-scaled normalised bank, full similarity matrix, mean over the bank
    energy = lambda z: np.log(np.exp(z).sum(axis=1))  # noqa: E731
    norm = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    bank = norm(train) * energy(train_logits)[:, None]
    dense = norm(x) @ bank.T  # [23, 57]
    naive_in_dist = energy(x_logits) * dense.mean(axis=1)
    np.testing.assert_allclose(scorer.score(x, x_logits), -naive_in_dist, rtol=1e-4, atol=1e-5)


def test_knn_chunked_equals_brute_force() -> None:
    rng = np.random.default_rng(2)
    train, x = rng.standard_normal((101, 9)), rng.standard_normal((37, 9))
    k = 4
    scorer = build_scorer("knn", k=k, chunk_size=8).fit(train, np.zeros((101, 2)), np.zeros(101, int))
    norm = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    sims = norm(x) @ norm(train).T
    kth = -np.sort(-sims, axis=1)[:, k - 1]
    np.testing.assert_allclose(scorer.score(x, np.zeros((37, 2))), 1 - kth, rtol=1e-5, atol=1e-5)


def test_mahalanobis_equals_brute_force() -> None:
    rng = np.random.default_rng(3)
    train = rng.standard_normal((90, 6))
    labels = np.repeat(np.arange(3), 30)
    x = rng.standard_normal((11, 6))
    scorer = build_scorer("mahalanobis", chunk_size=4, reg=0.0).fit(train, np.zeros((90, 3)), labels)
    means = np.stack([train[labels == c].mean(0) for c in range(3)])
    centred = train - means[labels]
    prec = np.linalg.inv(centred.T @ centred / len(train))
    d = np.stack([np.sqrt(np.einsum("nd,de,ne->n", x - m, prec, x - m)) for m in means], 1).min(1)
    np.testing.assert_allclose(scorer.score(x, np.zeros((11, 3))), d, rtol=1e-3, atol=1e-3)


def test_mahalanobis_fewer_clips_than_dims() -> None:
    rng = np.random.default_rng(4)
    scorer = build_scorer("mahalanobis").fit(
        rng.standard_normal((5, 20)), np.zeros((5, 2)), np.array([0, 0, 1, 1, 1])
    )
    assert np.isfinite(scorer.score(rng.standard_normal((3, 20)), np.zeros((3, 2)))).all()


@pytest.mark.parametrize("name", sorted(SCORERS))
def test_save_load_roundtrip(name: str, tmp_path) -> None:
    train, train_logits, train_lab, known, known_logits, *_ = _clusters(5)
    scorer = build_scorer(name, k=3, chunk_size=50).fit(train, train_logits, train_lab)
    scorer.save(tmp_path / "s.npz")
    again = Scorer.load(tmp_path / "s.npz")
    assert type(again) is type(scorer)
    np.testing.assert_allclose(again.score(known, known_logits), scorer.score(known, known_logits), rtol=1e-6)


def test_torch_inputs_accepted() -> None:
    train, train_logits, train_lab, known, known_logits, *_ = _clusters(6)
    scorer = build_scorer("nsd").fit(torch.from_numpy(train), torch.from_numpy(train_logits), train_lab)
    np.testing.assert_allclose(
        scorer.score(torch.from_numpy(known), torch.from_numpy(known_logits)),
        scorer.score(known, known_logits),
    )


def test_registry_and_errors() -> None:
    with pytest.raises(KeyError, match="unknown OOD scorer"):
        build_scorer("does-not-exist")
    with pytest.raises(RuntimeError, match="fit"):
        build_scorer("knn").score(np.zeros((2, 3)), np.zeros((2, 2)))

    @register("_test_norm")
    class NormScorer(Scorer):
        def score(self, emb, logits):
            return -np.linalg.norm(emb, axis=1)

    try:
        assert isinstance(build_scorer("_test_norm"), NormScorer)
        with pytest.raises(ValueError, match="twice"):
            register("_test_norm")(NormScorer)
    finally:
        SCORERS.pop("_test_norm")
