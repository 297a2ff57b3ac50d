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
    from sourcetracing.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown OOD scorer"):
        build_scorer("does-not-exist")
    with pytest.raises(RuntimeError, match="fit"):
        build_scorer("knn").score(np.zeros((2, 3)), np.zeros((2, 2)))

    @register("_test_norm")
    class NormScorer(Scorer):
        def score(self, emb, logits):
            return -np.linalg.norm(emb, axis=1)

    class OtherScorer(NormScorer):
        pass

    try:
        assert isinstance(build_scorer("_test_norm"), NormScorer)
        with pytest.raises(ValueError, match="twice"):
            register("_test_norm")(OtherScorer)
    finally:
        SCORERS.unregister("_test_norm")


def _offset_case(seed: int = 0):
    """Embeddings far from the origin (offset 10) with 20 near-constant dimensions: float32 expansion fails here."""
    rng = np.random.default_rng(seed)
    dim, near_constant = 40, 20
    scale = np.r_[np.ones(dim - near_constant), np.full(near_constant, 1e-3)]
    centres = rng.standard_normal((3, dim)) * scale * 3

    def sample(c: np.ndarray, n: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        lab = rng.integers(0, len(c), n)
        x = 10.0 + c[lab] + rng.standard_normal((n, dim)) * scale + shift * scale
        return x.astype(np.float32), lab

    train, lab = sample(centres, 400)
    known, _ = sample(centres, 200)
    ood, _ = sample(centres, 200, shift=0.8)  # OOD: shifted, also along the near-constant directions
    return train, lab, known, ood


def _float64_mahalanobis(train: np.ndarray, lab: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Reference in float64 with explicit differences."""
    t = train.astype(np.float64)
    means = np.stack([t[lab == c].mean(0) for c in np.unique(lab)])
    centred = t - means[np.searchsorted(np.unique(lab), lab)]
    cov = centred.T @ centred / len(t)
    cov += np.eye(len(cov)) * 1e-6 * np.trace(cov) / len(cov)
    prec = np.linalg.inv(cov)
    d = x.astype(np.float64)[:, None, :] - means[None]
    return np.sqrt(np.einsum("ncd,de,nce->nc", d, prec, d).min(1))


def test_mahalanobis_keeps_its_precision_far_from_the_origin() -> None:
    train, lab, known, ood = _offset_case()
    is_ood = np.r_[np.zeros(len(known), bool), np.ones(len(ood), bool)]
    x = np.concatenate([known, ood])
    reference = _float64_mahalanobis(train, lab, x)
    got = build_scorer("mahalanobis").fit(train, None, lab).score(x, None)
    np.testing.assert_allclose(got, reference, rtol=1e-4)
    assert auroc(got, is_ood) == pytest.approx(auroc(reference, is_ood), abs=1e-3)
    assert auroc(reference, is_ood) > 0.85
    # what the float32 quadratic expansion x'Px - 2x'Pm + m'Pm gives on the same data: near chance
    means = np.stack([train[lab == c].mean(0) for c in range(3)])
    cov = np.cov((train - means[lab]).T, bias=True)
    cov += np.eye(len(cov)) * 1e-6 * np.trace(cov) / len(cov)
    prec, m = np.linalg.pinv(cov).astype(np.float32), means.astype(np.float32)
    expanded = ((x @ prec) * x).sum(1)[:, None] - 2 * x @ (m @ prec).T + ((m @ prec) * m).sum(1)[None]
    naive = np.sqrt(np.clip(expanded, 0, None).min(1))
    assert auroc(naive, is_ood) < auroc(got, is_ood) - 0.2


def test_centroid_scorer_is_cosine_distance_to_the_nearest_class_mean() -> None:
    train, train_logits, train_lab, known, known_logits, ood, ood_logits = _clusters(3)
    scorer = build_scorer("centroid").fit(train, None, train_lab)
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    centroids = unit(np.stack([unit(train[train_lab == c]).mean(0) for c in range(K)]))
    expected = 1 - (unit(known) @ centroids.T).max(1)
    np.testing.assert_allclose(scorer.score(known, None), expected, rtol=1e-6, atol=1e-7)
    assert SCORERS.get("centroid").needs == ("embeddings",) and SCORERS.get("msp").needs == ("logits",)


def test_energy_scorers_are_left_out_for_log_probability_logits() -> None:
    from sourcetracing.ood.scorers import LOG_PROBABILITIES, applicable, build_scorer

    rng = np.random.default_rng(0)
    log_probs = torch.log_softmax(torch.from_numpy(rng.normal(0, 3, (50, 6))), dim=1).numpy()
    energy = build_scorer("energy").score(None, log_probs)
    assert np.ptp(energy) < 1e-5  # constant up to float32 round-off: no information
    has = {"embeddings", "logits"}
    for name in ("energy", "nsd"):
        assert applicable(name, has) and not applicable(name, has, LOG_PROBABILITIES)
    for name in ("msp", "maxlogit", "knn", "mahalanobis", "centroid"):
        assert applicable(name, has, LOG_PROBABILITIES)


def test_softmax_energy_is_the_energy_of_the_probabilities() -> None:
    logits = np.array([[4.0, 0.0, 0.0], [0.0, 0.0, 0.0], [40.0, 0.0, 0.0]], dtype=np.float32)
    for t in (0.1, 1.0):
        got = build_scorer("sme", temperature=t).score(None, logits)
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        np.testing.assert_allclose(got, -t * np.log(np.exp(p / t).sum(1)), rtol=1e-6)
        assert got[0] < got[1]  # a confident clip is more known than a uniform one
    energy = build_scorer("energy").score(None, logits)
    sme = build_scorer("sme").score(None, logits)
    assert energy[2] < energy[0] - 30 and abs(sme[2] - sme[0]) < 0.1  # bounded: no growth with the scale
    with pytest.raises(ValueError, match="temperature"):
        build_scorer("sme", temperature=0.0)


def test_entropy_is_the_shannon_entropy_of_the_softmax() -> None:
    logits = np.array([[5.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(
        build_scorer("entropy").score(None, logits), -(p * np.log(p)).sum(1), rtol=1e-6
    )
    assert build_scorer("entropy").score(None, logits[1:])[0] == pytest.approx(np.log(3))
