"""OOD scorers behind one registry and one interface.

Every scorer is fitted on the training clips' outputs and scores new clips; **higher = more likely
OOD** for every scorer, so one threshold rule (``score >= threshold`` means OOD) holds everywhere.

    scorer = build_scorer("knn", k=5, chunk_size=4096)
    scorer.fit(train_emb, train_logits, train_labels)
    ood_scores = scorer.score(emb, logits)

A new scorer is one small class (in any module imported before the config is read; its settings
section is ``ood.myscore``)::

    @register("myscore", defaults={"alpha": 1.0})
    class MyScorer(Scorer):
        needs = ("embeddings",)
        def fit(self, train_emb, train_logits, train_labels): ...; return self
        def score(self, emb, logits): return ...

Memory: nothing here builds an eval x train matrix. ``nsd`` reduces the training bank to one mean
vector (a mean of dot products is a dot with the mean); ``knn`` and ``mahalanobis`` work on chunks
of ``chunk_size`` rows (``knn`` also chunks the bank), so the extra memory is about
``chunk_size x chunk_size`` floats (64 MB at the default 4096).
"""

from __future__ import annotations

import copy
import inspect
import itertools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sourcetracing.components import SCORERS


def register(name: str, defaults: dict[str, Any] | None = None) -> Callable[[type[Scorer]], type[Scorer]]:
    """Class decorator adding a scorer to :data:`SCORERS` under ``name`` (its config section: ``ood.<name>``)."""

    def wrap(cls: type[Scorer]) -> type[Scorer]:
        cls.name = name
        return SCORERS.register(name, defaults=defaults)(cls)

    return wrap


def build_scorer(name: str, **options: Any) -> Scorer:
    """Instantiate a registered scorer with its defaults updated by ``options`` (others are ignored).

    >>> build_scorer("knn", k=3, chunk_size=10, unused=1).k
    3
    >>> build_scorer("knn").k
    5
    """
    cls = SCORERS.get(name)
    accepted = inspect.signature(cls.__init__).parameters
    merged = {**SCORERS.defaults(name), **options}
    return cls(**{k: v for k, v in merged.items() if k in accepted})


def scorer_options(ood_cfg: Any, name: str) -> dict[str, Any]:
    """Options of one scorer from the config's ``ood`` section: its own section plus ``chunk_size``."""
    return {**dict(ood_cfg.get(name) or {}), "chunk_size": int(ood_cfg["chunk_size"])}


LOG_PROBABILITIES = (
    "log_probabilities"  # outputs meta ``logits``: the logits are normalised log-probabilities
)


def tunable_grid(name: str) -> dict[str, list]:
    """The candidate values of each setting ``ood.tune`` may choose for scorer ``name`` (empty for a
    scorer without any and for a name that is not a registered scorer, e.g. a precomputed score).

    >>> tunable_grid("knn")["k"]
    [1, 2, 3, 5, 10, 20]
    >>> tunable_grid("centroid"), tunable_grid("fused")
    ({}, {})
    """
    if name not in SCORERS:
        return {}
    return dict(getattr(SCORERS.get(name), "tunable", {}) or {})


def candidates(name: str, options: dict[str, Any]) -> list[dict[str, Any]]:
    """Every combination of the scorer's tunable settings, on top of ``options``."""
    grid = tunable_grid(name)
    if not grid:
        return [dict(options)]
    keys = sorted(grid)
    return [
        {**options, **dict(zip(keys, values, strict=True))}
        for values in itertools.product(*(grid[k] for k in keys))
    ]


def applicable(name: str, has: set[str], logits: str | None = None) -> bool:
    """Whether a scorer can run on a system that exports ``has`` (``{"embeddings", "logits"}``) and
    whose logits are of kind ``logits`` (outputs meta; :data:`LOG_PROBABILITIES` rules out the
    scorers that are constant on them)."""
    scorer = SCORERS.get(name)
    if logits == LOG_PROBABILITIES and getattr(scorer, "needs_raw_logits", False):
        return False
    return set(scorer.needs) <= has


def _f32(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float32)
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def _normalize(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=-1, eps=1e-10)


class Scorer:
    """Base class: ``fit`` on training outputs, ``score`` new outputs (higher = more OOD).

    A fitted scorer's state is the dict of plain arrays named in ``state_keys``; ``save`` and
    ``load`` store it as ``.npz`` (used by ``trace.py``).
    """

    name: str = "base"
    state_keys: tuple[str, ...] = ()
    tunable: dict[str, list] = {}  # candidate settings for ood.tune (sourcetracing.ood.tuning)
    needs: tuple[str, ...] = ("embeddings", "logits")  # what the system must export
    # True: the score is constant when the logits are normalised log-probabilities (logsumexp = 0),
    # as the statistics systems export them; such systems are not scored by it
    needs_raw_logits: bool = False

    def fit(self, train_emb: np.ndarray, train_logits: np.ndarray, train_labels: np.ndarray) -> Scorer:
        return self

    def score(self, emb: np.ndarray, logits: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def with_enrolled(self, groups: Sequence[np.ndarray]) -> Scorer:
        """A copy whose fitted state also covers systems enrolled later (one embedding array per system).

        Only embedding scorers whose state is made of the training embeddings can do this
        (``centroid``: one centroid more per system; ``knn``: the clips join the bank).
        """
        raise NotImplementedError(
            f"the {self.name} scorer cannot take enrolled systems (embedding scorers that can: centroid, knn)"
        )

    def options(self) -> dict[str, Any]:
        """Constructor arguments, to rebuild the scorer when loading."""
        params = inspect.signature(type(self).__init__).parameters
        return {k: getattr(self, k) for k in params if k != "self" and hasattr(self, k)}

    def save(self, path: str | Path) -> None:
        """Save the fitted state (plain arrays) and the options to a ``.npz`` file."""
        arrays = {f"state_{k}": np.asarray(getattr(self, k)) for k in self.state_keys}
        opts = {f"opt_{k}": np.asarray(v) for k, v in self.options().items()}
        np.savez(path, scorer_name=np.asarray(self.name), **arrays, **opts)

    @staticmethod
    def load(path: str | Path) -> Scorer:
        """Rebuild a fitted scorer saved with :meth:`save`."""
        with np.load(path, allow_pickle=False) as data:
            name = str(data["scorer_name"])
            opts = {k[4:]: data[k].item() for k in data.files if k.startswith("opt_")}
            scorer = build_scorer(name, **opts)
            for k in scorer.state_keys:
                setattr(scorer, k, data[f"state_{k}"])
        return scorer


@register("msp")
class MSPScorer(Scorer):
    """1 - maximum softmax probability."""

    needs = ("logits",)

    def score(self, emb: np.ndarray, logits: np.ndarray) -> np.ndarray:
        return (1.0 - torch.softmax(_f32(logits), dim=1).max(dim=1).values).numpy()


@register("maxlogit")
class MaxLogitScorer(Scorer):
    """Negative maximum logit."""

    needs = ("logits",)

    def score(self, emb: np.ndarray, logits: np.ndarray) -> np.ndarray:
        return (-_f32(logits).max(dim=1).values).numpy()


@register("energy")
class EnergyScorer(Scorer):
    """Negative free energy: ``-logsumexp(logits)``."""

    needs = ("logits",)
    needs_raw_logits = True

    def score(self, emb: np.ndarray, logits: np.ndarray) -> np.ndarray:
        return (-torch.logsumexp(_f32(logits), dim=1)).numpy()


@register("entropy")
class EntropyScorer(Scorer):
    """Shannon entropy of the softmax probabilities (nats): spread-out class evidence = more OOD."""

    needs = ("logits",)

    def score(self, emb: np.ndarray, logits: np.ndarray) -> np.ndarray:
        logp = torch.log_softmax(_f32(logits).double(), dim=1)
        return (-(logp.exp() * logp).sum(dim=1)).numpy()


@register("sme", defaults={"temperature": 1.0})
class SoftmaxEnergyScorer(Scorer):
    """Softmax energy (Klein, Tak and Khoury, Interspeech 2025): the energy of the softmax
    probabilities instead of the logits, ``-T * logsumexp(softmax(logits) / T)``.

    Unlike ``energy`` it is bounded and does not grow with the logits' scale (a clip far from every
    class with one large logit is not "very known"); small ``T`` approaches ``1 - max prob`` (MSP)
    up to a constant, large ``T`` the negated mean probability (a constant). Not in ``ood.scorers``
    by default: add ``sme`` to run it.
    """

    needs = ("logits",)
    tunable = {"temperature": [0.05, 0.1, 0.5, 1.0]}

    def __init__(self, temperature: float = 1.0):
        if not temperature > 0:
            raise ValueError(f"sme: temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def score(self, emb: np.ndarray, logits: np.ndarray) -> np.ndarray:
        p = torch.softmax(_f32(logits).double(), dim=1)
        t = self.temperature
        return (-t * torch.logsumexp(p / t, dim=1)).numpy()


@register("nsd")
class NSDScorer(Scorer):
    """REFD's NSD with the sign fixed.

    In-distribution score: ``energy(x) * mean_i cos(x, e_i)`` where ``e_i`` are the training
    embeddings, L2-normalised then scaled by their own energy (logsumexp of logits). The mean of
    the dot products equals a dot with the mean of the scaled bank, kept as one vector
    (``bank_mean``). The OOD score is the negative.
    """

    state_keys = ("bank_mean",)
    needs_raw_logits = True

    def __init__(self, chunk_size: int = 4096):
        self.chunk_size = int(chunk_size)
        self.bank_mean: np.ndarray | None = None

    def fit(self, train_emb: np.ndarray, train_logits: np.ndarray, train_labels: np.ndarray) -> NSDScorer:
        total = None
        n = len(train_emb)
        if n == 0:
            raise ValueError("nsd: empty training bank")
        for start in range(0, n, self.chunk_size):
            e = _normalize(_f32(train_emb[start : start + self.chunk_size])).double()
            energy = torch.logsumexp(_f32(train_logits[start : start + self.chunk_size]), dim=1).double()
            part = (e * energy[:, None]).sum(dim=0)
            total = part if total is None else total + part
        self.bank_mean = (total / n).float().numpy()
        return self

    def score(self, emb: np.ndarray, logits: np.ndarray) -> np.ndarray:
        if self.bank_mean is None:
            raise RuntimeError("nsd: call fit() before score()")
        mean = torch.from_numpy(np.asarray(self.bank_mean, dtype=np.float32))
        out = np.empty(len(emb), dtype=np.float32)
        for start in range(0, len(emb), self.chunk_size):
            e = _normalize(_f32(emb[start : start + self.chunk_size]))
            energy = torch.logsumexp(_f32(logits[start : start + self.chunk_size]), dim=1)
            out[start : start + len(e)] = (-(energy * (e @ mean))).numpy()
        return out


@register("knn", defaults={"k": 5})
class KNNScorer(Scorer):
    """Cosine distance to the k-th nearest training embedding (Sun et al. 2022), in chunks."""

    state_keys = ("bank",)
    needs = ("embeddings",)
    tunable = {"k": [1, 2, 3, 5, 10, 20]}

    def __init__(self, k: int = 5, chunk_size: int = 4096):
        self.k = int(k)
        self.chunk_size = int(chunk_size)
        self.bank: np.ndarray | None = None

    def fit(self, train_emb: np.ndarray, train_logits: np.ndarray, train_labels: np.ndarray) -> KNNScorer:
        if len(train_emb) < self.k:
            raise ValueError(f"knn: k={self.k} but only {len(train_emb)} training embeddings")
        self.bank = _normalize(_f32(train_emb)).numpy()
        return self

    def top_similarities(self, emb: np.ndarray) -> np.ndarray:
        """The ``k`` highest cosine similarities to the bank per row, ``[n, k]`` float32, highest first."""
        if self.bank is None:
            raise RuntimeError("knn: call fit() before score()")
        bank = torch.from_numpy(np.asarray(self.bank, dtype=np.float32))
        step = self.chunk_size
        out = np.empty((len(emb), self.k), dtype=np.float32)
        for start in range(0, len(emb), step):
            q = _normalize(_f32(emb[start : start + step]))
            best = None  # running top-k similarities of this query chunk, [chunk, k]
            for b0 in range(0, len(bank), step):
                sim = q @ bank[b0 : b0 + step].T  # chunk x chunk block: chunk_size^2 floats at most
                top = torch.topk(sim, min(self.k, sim.shape[1]), dim=1).values
                best = top if best is None else torch.topk(torch.cat([best, top], 1), self.k, dim=1).values
            out[start : start + len(q)] = best.numpy()
        return out

    def score(self, emb: np.ndarray, logits: np.ndarray) -> np.ndarray:
        return 1.0 - self.top_similarities(emb)[:, self.k - 1]

    def with_enrolled(self, groups: Sequence[np.ndarray]) -> KNNScorer:
        """A copy whose bank also holds the enrolled clips (normalised as the training bank)."""
        if self.bank is None:
            raise RuntimeError("knn: call fit() before with_enrolled()")
        out = copy.copy(self)
        extra = [_normalize(_f32(np.asarray(g).reshape(len(g), -1))).numpy() for g in groups]
        out.bank = np.concatenate([np.asarray(self.bank, dtype=np.float32), *extra])
        return out


@register("mahalanobis", defaults={"reg": 1e-6})
class MahalanobisScorer(Scorer):
    """Minimum Mahalanobis distance to the class means (shared covariance, Lee et al. 2018).

    Everything is computed in float64 on embeddings centred on the training mean: the shared
    covariance is shrunk slightly (``reg`` times its mean variance on the diagonal), factored
    as ``V diag(s) V^T`` and turned into a whitening ``W = diag(s^-1/2) V^T`` (directions with
    ``s`` below ``1e-12 * max(s)`` are dropped, as a pseudo-inverse would), and the distance to
    each class mean is the squared norm of the *difference* of the whitened vectors, never
    ``x'Px - 2x'Pm + m'Pm`` (which loses all precision when the embeddings sit far from the origin
    along near-constant directions).
    """

    state_keys = ("center", "whitening", "means")
    needs = ("embeddings",)
    tunable = {"reg": [1e-6, 1e-3, 1e-2, 1e-1]}

    def __init__(self, chunk_size: int = 4096, reg: float = 1e-6):
        self.chunk_size = int(chunk_size)
        self.reg = float(reg)
        self.center: np.ndarray | None = None
        self.whitening: np.ndarray | None = None
        self.means: np.ndarray | None = None  # class means, already whitened [C, D']

    def fit(
        self, train_emb: np.ndarray, train_logits: np.ndarray, train_labels: np.ndarray
    ) -> MahalanobisScorer:
        labels = np.asarray(train_labels)
        classes = np.unique(labels[labels >= 0])
        if len(classes) == 0:
            raise ValueError("mahalanobis: no labelled training embeddings")
        x = np.asarray(train_emb, dtype=np.float64)
        keep = labels >= 0
        center = x[keep].mean(axis=0)
        x = x - center
        dim = x.shape[1]
        means = np.zeros((len(classes), dim))
        cov = np.zeros((dim, dim))
        for i, c in enumerate(classes):
            xc = x[labels == c]
            means[i] = xc.mean(axis=0)
            centred = xc - means[i]
            cov += centred.T @ centred
        cov /= max(int(keep.sum()), 1)
        cov += np.eye(dim) * self.reg * max(float(np.trace(cov)) / dim, 1e-300)
        s, v = np.linalg.eigh(cov)
        usable = s > 1e-12 * max(float(s.max()), 1e-300)
        whitening = (v[:, usable] / np.sqrt(s[usable])).T  # [D', D]
        self.center = center
        self.whitening = whitening
        self.means = means @ whitening.T
        return self

    def score(self, emb: np.ndarray, logits: np.ndarray) -> np.ndarray:
        if self.means is None or self.whitening is None or self.center is None:
            raise RuntimeError("mahalanobis: call fit() before score()")
        w = np.asarray(self.whitening, dtype=np.float64)
        means = np.asarray(self.means, dtype=np.float64)
        center = np.asarray(self.center, dtype=np.float64)
        out = np.empty(len(emb), dtype=np.float64)
        for start in range(0, len(emb), self.chunk_size):
            z = (np.asarray(emb[start : start + self.chunk_size], dtype=np.float64) - center) @ w.T
            best = np.full(len(z), np.inf)
            for m in means:
                d = z - m
                np.minimum(best, np.einsum("ij,ij->i", d, d), out=best)
            out[start : start + len(z)] = np.sqrt(best)
        return out


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero).

    >>> l2_normalise(np.array([[3.0, 4.0], [0.0, 0.0]])).tolist()
    [[0.6, 0.8], [0.0, 0.0]]
    """
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def class_centroids(emb: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Unit-length mean of the unit-length embeddings of each class ``[K, E]`` (NaN row for a class with no rows)."""
    emb = l2_normalise(np.asarray(emb, dtype=np.float64))
    labels = np.asarray(labels)
    out = np.full((num_classes, emb.shape[1]), np.nan)
    for k in range(num_classes):
        sel = labels == k
        if sel.any():
            mean = emb[sel].mean(axis=0)
            out[k] = mean / max(float(np.linalg.norm(mean)), 1e-12)
    return out


def centroid_similarities(emb: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Cosine similarity ``[n, K]`` to each centroid (``-inf`` for classes without a centroid)."""
    sim = l2_normalise(np.asarray(emb, dtype=np.float64)) @ np.nan_to_num(centroids).T
    return np.where(np.isnan(centroids).any(axis=1)[None, :], -np.inf, sim)


@register("centroid")
class CentroidScorer(Scorer):
    """``1 - max_k cos(e, c_k)``: cosine distance to the nearest class centroid of the train embeddings."""

    state_keys = ("centroids",)
    needs = ("embeddings",)

    def __init__(self) -> None:
        self.centroids: np.ndarray | None = None

    def fit(
        self, train_emb: np.ndarray, train_logits: np.ndarray, train_labels: np.ndarray
    ) -> CentroidScorer:
        labels = np.asarray(train_labels).astype(int)
        if not (labels >= 0).any():
            raise ValueError("centroid: no labelled training embeddings")
        self.centroids = class_centroids(train_emb, labels, int(labels.max()) + 1)
        return self

    def score(self, emb: np.ndarray, logits: np.ndarray) -> np.ndarray:
        if self.centroids is None:
            raise RuntimeError("centroid: call fit() before score()")
        return 1.0 - centroid_similarities(emb, np.asarray(self.centroids)).max(axis=1)

    def with_enrolled(self, groups: Sequence[np.ndarray]) -> CentroidScorer:
        """A copy with one more centroid per enrolled system (computed as the training centroids)."""
        if self.centroids is None:
            raise RuntimeError("centroid: call fit() before with_enrolled()")
        out = copy.copy(self)
        extra = [class_centroids(g, np.zeros(len(g), dtype=int), 1) for g in groups]
        out.centroids = np.concatenate([np.asarray(self.centroids, dtype=np.float64), *extra])
        return out
