"""OOD scorers behind one registry and one interface.

Every scorer is fitted on the training clips' outputs and scores new clips; **higher = more likely
OOD** for every scorer, so one threshold rule (``score >= threshold`` means OOD) holds everywhere.

    scorer = build_scorer("knn", k=5, chunk_size=4096)
    scorer.fit(train_emb, train_logits, train_labels)
    ood_scores = scorer.score(emb, logits)

A new scorer is one small class::

    @register("myscore")
    class MyScorer(Scorer):
        def fit(self, train_emb, train_logits, train_labels): ...; return self
        def score(self, emb, logits): return ...

Memory: nothing here builds an eval x train matrix. ``nsd`` reduces the training bank to one mean
vector (a mean of dot products is a dot with the mean); ``knn`` and ``mahalanobis`` work on chunks
of ``chunk_size`` rows (``knn`` also chunks the bank), so the extra memory is about
``chunk_size x chunk_size`` floats (64 MB at the default 4096).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

SCORERS: dict[str, type[Scorer]] = {}


def register(name: str) -> Callable[[type[Scorer]], type[Scorer]]:
    """Class decorator adding a scorer to :data:`SCORERS` under ``name``."""

    def wrap(cls: type[Scorer]) -> type[Scorer]:
        if name in SCORERS:
            raise ValueError(f"OOD scorer '{name}' registered twice")
        cls.name = name
        SCORERS[name] = cls
        return cls

    return wrap


def build_scorer(name: str, **options: Any) -> Scorer:
    """Instantiate a registered scorer; options it does not take are ignored.

    >>> build_scorer("knn", k=3, chunk_size=10, unused=1).k
    3
    >>> build_scorer("nope")
    Traceback (most recent call last):
    ...
    KeyError: "unknown OOD scorer 'nope'; choose from: energy, knn, mahalanobis, maxlogit, msp, nsd"
    """
    if name not in SCORERS:
        raise KeyError(f"unknown OOD scorer '{name}'; choose from: {', '.join(sorted(SCORERS))}")
    cls = SCORERS[name]
    accepted = inspect.signature(cls.__init__).parameters
    return cls(**{k: v for k, v in options.items() if k in accepted})


def scorer_options(ood_cfg: Any) -> dict[str, Any]:
    """Scorer options from the config's ``ood`` section."""
    return {"k": int(ood_cfg["knn_k"]), "chunk_size": int(ood_cfg["chunk_size"])}


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

    def fit(self, train_emb: np.ndarray, train_logits: np.ndarray, train_labels: np.ndarray) -> Scorer:
        return self

    def score(self, emb: np.ndarray, logits: np.ndarray) -> np.ndarray:
        raise NotImplementedError

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

    def score(self, emb: np.ndarray, logits: np.ndarray) -> np.ndarray:
        return (1.0 - torch.softmax(_f32(logits), dim=1).max(dim=1).values).numpy()


@register("maxlogit")
class MaxLogitScorer(Scorer):
    """Negative maximum logit."""

    def score(self, emb: np.ndarray, logits: np.ndarray) -> np.ndarray:
        return (-_f32(logits).max(dim=1).values).numpy()


@register("energy")
class EnergyScorer(Scorer):
    """Negative free energy: ``-logsumexp(logits)``."""

    def score(self, emb: np.ndarray, logits: np.ndarray) -> np.ndarray:
        return (-torch.logsumexp(_f32(logits), dim=1)).numpy()


@register("nsd")
class NSDScorer(Scorer):
    """REFD's NSD with the sign fixed.

    In-distribution score: ``energy(x) * mean_i cos(x, e_i)`` where ``e_i`` are the training
    embeddings, L2-normalised then scaled by their own energy (logsumexp of logits). The mean of
    the dot products equals a dot with the mean of the scaled bank, kept as one vector
    (``bank_mean``). The OOD score is the negative.
    """

    state_keys = ("bank_mean",)

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


@register("knn")
class KNNScorer(Scorer):
    """Cosine distance to the k-th nearest training embedding (Sun et al. 2022), in chunks."""

    state_keys = ("bank",)

    def __init__(self, k: int = 5, chunk_size: int = 4096):
        self.k = int(k)
        self.chunk_size = int(chunk_size)
        self.bank: np.ndarray | None = None

    def fit(self, train_emb: np.ndarray, train_logits: np.ndarray, train_labels: np.ndarray) -> KNNScorer:
        if len(train_emb) < self.k:
            raise ValueError(f"knn: k={self.k} but only {len(train_emb)} training embeddings")
        self.bank = _normalize(_f32(train_emb)).numpy()
        return self

    def score(self, emb: np.ndarray, logits: np.ndarray) -> np.ndarray:
        if self.bank is None:
            raise RuntimeError("knn: call fit() before score()")
        bank = torch.from_numpy(np.asarray(self.bank, dtype=np.float32))
        step = self.chunk_size
        out = np.empty(len(emb), dtype=np.float32)
        for start in range(0, len(emb), step):
            q = _normalize(_f32(emb[start : start + step]))
            best = None  # running top-k similarities of this query chunk, [chunk, k]
            for b0 in range(0, len(bank), step):
                sim = q @ bank[b0 : b0 + step].T  # chunk x chunk block: chunk_size^2 floats at most
                top = torch.topk(sim, min(self.k, sim.shape[1]), dim=1).values
                best = top if best is None else torch.topk(torch.cat([best, top], 1), self.k, dim=1).values
            out[start : start + len(q)] = (1.0 - best[:, self.k - 1]).numpy()
        return out


@register("mahalanobis")
class MahalanobisScorer(Scorer):
    """Minimum Mahalanobis distance to the class means (shared covariance, Lee et al. 2018).

    The covariance is shrunk slightly (``reg`` times its mean variance on the diagonal) and
    inverted with a pseudo-inverse, so it works with fewer clips than dimensions.
    """

    state_keys = ("means", "precision")

    def __init__(self, chunk_size: int = 4096, reg: float = 1e-6):
        self.chunk_size = int(chunk_size)
        self.reg = float(reg)
        self.means: np.ndarray | None = None
        self.precision: np.ndarray | None = None

    def fit(
        self, train_emb: np.ndarray, train_logits: np.ndarray, train_labels: np.ndarray
    ) -> MahalanobisScorer:
        labels = np.asarray(train_labels)
        classes = np.unique(labels[labels >= 0])
        if len(classes) == 0:
            raise ValueError("mahalanobis: no labelled training embeddings")
        x = np.asarray(train_emb, dtype=np.float64)
        dim = x.shape[1]
        means = np.zeros((len(classes), dim))
        cov = np.zeros((dim, dim))
        n = 0
        for i, c in enumerate(classes):
            xc = x[labels == c]
            means[i] = xc.mean(axis=0)
            centred = xc - means[i]
            cov += centred.T @ centred
            n += len(xc)
        cov /= max(n, 1)
        cov += np.eye(dim) * self.reg * max(float(np.trace(cov)) / dim, 1e-12)
        self.means = means.astype(np.float32)
        self.precision = np.linalg.pinv(cov, hermitian=True).astype(np.float32)
        return self

    def score(self, emb: np.ndarray, logits: np.ndarray) -> np.ndarray:
        if self.means is None or self.precision is None:
            raise RuntimeError("mahalanobis: call fit() before score()")
        means = torch.from_numpy(np.asarray(self.means, dtype=np.float32))
        prec = torch.from_numpy(np.asarray(self.precision, dtype=np.float32))
        pm = means @ prec  # [C, D]
        m_term = (pm * means).sum(dim=1)  # mu^T P mu
        out = np.empty(len(emb), dtype=np.float32)
        for start in range(0, len(emb), self.chunk_size):
            x = _f32(emb[start : start + self.chunk_size])
            x_term = ((x @ prec) * x).sum(dim=1)  # x^T P x
            d2 = x_term[:, None] - 2.0 * (x @ pm.T) + m_term[None, :]
            out[start : start + len(x)] = d2.min(dim=1).values.clamp_min(0).sqrt().numpy()
        return out
