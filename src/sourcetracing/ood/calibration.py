"""Calibration: what an OOD score or a class probability means, and where to put the threshold.

Two sides, both fitted on dev arrays only (the caller passes dev; nothing here knows about splits)
and saved as plain JSON-able dicts to be applied to eval:

- **OOD scores** (higher = more likely from an unseen system; OOD is the positive class).
  :class:`LogisticCalibration` maps a raw score ``s`` to a natural-log likelihood ratio
  ``llr = slope * s + offset`` (OOD vs known) with the dev class proportions removed, as in the
  BOSARIS / Brümmer recipe: the two classes are weighted so that the effective prior is
  ``train_prior`` and ``logit(train_prior)`` is subtracted afterwards. The posterior at any stated
  prior is then ``sigmoid(llr + logit(prior))`` and the Bayes decision is ``llr >= -logit(prior')``
  with ``prior'`` the cost-weighted effective prior.
  Metrics: :func:`cllr` (bits; 0 = perfect, 1 = an uninformative llr of 0), :func:`min_cllr`
  (the Cllr after the best monotone calibration, by the PAV algorithm), :func:`actual_dcf` and
  :func:`min_dcf`.
- **Closed-set probabilities** over the known systems. :class:`TemperatureScaling` divides the
  logits by one scalar ``T > 0`` fitted by minimising the dev negative log-likelihood;
  :func:`expected_calibration_error` is the standard equal-width confidence-bin ECE.

:func:`plot_reliability` draws both as one PNG per system.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from scipy.special import expit, log_softmax, logit, softmax
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import roc_curve

LOG2 = math.log(2.0)
PAV_EPS = 1e-12  # PAV posteriors are clipped to [eps, 1 - eps] before they become llrs


# ----------------------------------------------------------------------------- input checks


def _as_scores(scores: Any, name: str = "scores") -> np.ndarray:
    try:
        arr = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a 1-D numeric array, got {type(scores).__name__}") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contain NaN or Inf ({int((~np.isfinite(arr)).sum())} of {arr.size})")
    return arr


def _as_is_ood(is_ood: Any, n: int) -> np.ndarray:
    arr = np.asarray(is_ood)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"is_ood has shape {arr.shape} but there are {n} scores")
    if arr.dtype != bool:
        if not np.isin(arr, (0, 1)).all():
            raise ValueError("is_ood must hold booleans or 0/1 (1 = OOD, from an unseen system)")
        arr = arr.astype(bool)
    return arr


def _scores_and_labels(scores: Any, is_ood: Any, need_both: bool = True) -> tuple[np.ndarray, np.ndarray]:
    s = _as_scores(scores)
    y = _as_is_ood(is_ood, s.shape[0])
    if need_both and (y.all() or not y.any()):
        which = "OOD" if y.any() else "known"
        raise ValueError(f"need both known and OOD clips, got only {which} ones ({y.size} clips)")
    return s, y


def _check_prior(prior: float, name: str = "prior") -> float:
    prior = float(prior)
    if not 0.0 < prior < 1.0:
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {prior}")
    return prior


# ----------------------------------------------------------------------------- Bayes decisions


def effective_prior(prior: float = 0.5, cost_miss: float = 1.0, cost_false_alarm: float = 1.0) -> float:
    """The one prior that folds the costs in: ``p*Cmiss / (p*Cmiss + (1-p)*Cfa)``.

    A *miss* is an OOD clip accepted as known, a *false alarm* a known clip flagged OOD.

    >>> effective_prior(0.5, cost_miss=3.0)
    0.75
    """
    prior = _check_prior(prior)
    if cost_miss <= 0 or cost_false_alarm <= 0:
        raise ValueError(
            f"costs must be positive, got cost_miss={cost_miss}, cost_false_alarm={cost_false_alarm}"
        )
    return prior * cost_miss / (prior * cost_miss + (1.0 - prior) * cost_false_alarm)


def bayes_llr_threshold(prior: float = 0.5, cost_miss: float = 1.0, cost_false_alarm: float = 1.0) -> float:
    """The llr above which the Bayes decision is "OOD": ``llr >= -logit(effective prior)``.

    >>> bayes_llr_threshold(0.5)
    0.0
    >>> round(bayes_llr_threshold(0.1), 4)  # a rare OOD class needs more evidence
    2.1972
    """
    return 0.0 - float(logit(effective_prior(prior, cost_miss, cost_false_alarm)))  # 0.0 - x: no -0.0


# ----------------------------------------------------------------------------- OOD score calibration


class LogisticCalibration:
    """Affine map of a raw OOD score to a log-likelihood ratio, ``llr = slope * s + offset``.

    Fitted by prior-weighted logistic regression: known and OOD clips are weighted so that the
    effective prior is ``train_prior`` whatever the dev class counts, and ``logit(train_prior)`` is
    taken out of the offset, so ``llr`` holds the evidence of the score alone (natural log,
    positive = favours OOD). Two things keep it sane when dev separates the classes perfectly (a
    few unseen systems often do): the targets are Platt's, ``(n_ood + 1) / (n_ood + 2)`` for an
    OOD clip and ``1 / (n_known + 2)`` for a known one instead of 1 and 0 (``smoothing: platt``,
    the default; ``none``: hard targets), which bounds the fitted confidence by how much dev saw;
    and ``l2``, a penalty on the slope in units of the score's standard deviation.

    >>> cal = LogisticCalibration().fit([0.1, 0.3, 0.5, 0.2, 0.4, 0.9], [0, 0, 0, 1, 1, 1])
    >>> p_low, p_high = cal.probability([0.1, 0.9], prior=0.5)
    >>> bool(cal.slope > 0), bool(p_low < 0.5 < p_high)
    (True, True)
    """

    kind = "LogisticCalibration"

    SMOOTHING = ("platt", "none")

    def __init__(self, train_prior: float = 0.5, l2: float = 1e-6, smoothing: str = "platt") -> None:
        self.train_prior = _check_prior(train_prior, "train_prior")
        if l2 < 0:
            raise ValueError(f"l2 must be >= 0, got {l2}")
        if smoothing not in self.SMOOTHING:
            raise ValueError(f"smoothing must be one of {self.SMOOTHING}, got {smoothing!r}")
        self.l2 = float(l2)
        self.smoothing = smoothing
        self.slope: float | None = None
        self.offset: float | None = None
        self.n_known = 0
        self.n_ood = 0

    @property
    def fitted(self) -> bool:
        return self.slope is not None and self.offset is not None

    def fit(self, scores: Any, is_ood: Any, groups: Any = None) -> LogisticCalibration:
        """Fit on dev scores and labels (``is_ood`` true / 1 for clips from unseen systems).

        ``groups`` (the system of each clip), when given, sets Platt's counts to the number of
        distinct systems of each class instead of clips: clips of one system are not independent
        evidence, so a dev split with five unseen systems earns the confidence of five examples.
        """
        s, y = _scores_and_labels(scores, is_ood)
        centre, spread = float(s.mean()), float(s.std())
        if not spread > 0:
            raise ValueError("all scores are equal: a constant score cannot be calibrated")
        x = (s - centre) / spread
        x_ood, x_known = x[y], x[~y]
        p = self.train_prior
        w_ood, w_known = p / x_ood.size, (1.0 - p) / x_known.size

        # target probability of "OOD" for each class's clips (Platt 1999: never exactly 1 or 0)
        n_ood, n_known = x_ood.size, x_known.size
        if groups is not None:
            g = np.asarray(groups)
            if len(g) != len(s):
                raise ValueError(f"{len(g)} groups for {len(s)} scores")
            n_ood, n_known = len(set(g[y].tolist())), len(set(g[~y].tolist()))
        t_ood, t_known = (
            ((n_ood + 1.0) / (n_ood + 2.0), 1.0 / (n_known + 2.0))
            if self.smoothing == "platt"
            else (1.0, 0.0)
        )

        def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
            a, c = theta
            z_ood, z_known = a * x_ood + c, a * x_known + c
            # prior-weighted cross-entropy against the targets (nats): for target t,
            # t * softplus(-z) + (1 - t) * softplus(z), whose derivative is sigmoid(z) - t
            loss = (
                w_ood * (t_ood * np.logaddexp(0.0, -z_ood) + (1 - t_ood) * np.logaddexp(0.0, z_ood)).sum()
                + w_known
                * (t_known * np.logaddexp(0.0, -z_known) + (1 - t_known) * np.logaddexp(0.0, z_known)).sum()
            )
            g_ood, g_known = w_ood * (expit(z_ood) - t_ood), w_known * (expit(z_known) - t_known)
            grad_a = (g_ood * x_ood).sum() + (g_known * x_known).sum() + 2.0 * self.l2 * a
            grad_c = g_ood.sum() + g_known.sum()
            return float(loss + self.l2 * a * a), np.array([grad_a, grad_c])

        res = minimize(objective, np.zeros(2), jac=True, method="L-BFGS-B", options={"gtol": 1e-10})
        a, c = (float(v) for v in res.x)
        if x_ood.min() > x_known.max():
            warnings.warn(
                "dev scores separate known and OOD clips perfectly: the calibration's confidence "
                f"is bounded only by its smoothing ({self.smoothing}) and the l2 penalty",
                stacklevel=2,
            )
        if a <= 0:
            warnings.warn(
                f"fitted slope {a / spread:.4g} is not positive: higher scores do not mean OOD on these "
                "clips (inverted or uninformative scorer)",
                stacklevel=2,
            )
        self.slope = a / spread
        self.offset = c - a * centre / spread - float(logit(p))
        self.n_known, self.n_ood = int(x_known.size), int(x_ood.size)
        return self

    def _require_fit(self) -> tuple[float, float]:
        if not self.fitted:
            raise RuntimeError("LogisticCalibration is not fitted: call fit(dev_scores, dev_is_ood) first")
        return float(self.slope), float(self.offset)  # type: ignore[arg-type]

    def llr(self, scores: Any) -> np.ndarray:
        """Natural-log likelihood ratio (OOD vs known) of each score."""
        a, b = self._require_fit()
        return a * _as_scores(scores) + b

    def probability(self, scores: Any, prior: float = 0.5) -> np.ndarray:
        """Posterior P(OOD | score) when a fraction ``prior`` of the clips is expected to be OOD."""
        return expit(self.llr(scores) + logit(_check_prior(prior)))

    def threshold(self, prior: float = 0.5, cost_miss: float = 1.0, cost_false_alarm: float = 1.0) -> float:
        """Raw-score threshold of the Bayes decision (``score >= threshold`` means OOD)."""
        a, b = self._require_fit()
        if a <= 0:
            raise ValueError(
                "the fitted slope is not positive: no 'score >= threshold' rule is a Bayes decision"
            )
        return (bayes_llr_threshold(prior, cost_miss, cost_false_alarm) - b) / a

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able parameters."""
        a, b = self._require_fit()
        return {
            "type": self.kind,
            "slope": a,
            "offset": b,
            "train_prior": self.train_prior,
            "l2": self.l2,
            "smoothing": self.smoothing,
            "n_known": self.n_known,
            "n_ood": self.n_ood,
            "llr": "natural log, OOD vs known: llr = slope * score + offset",
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LogisticCalibration:
        """Rebuild from :meth:`to_dict` output."""
        _check_type(data, cls.kind)
        missing = [k for k in ("slope", "offset") if k not in data]
        if missing:
            raise ValueError(f"{cls.kind} data lacks {missing}")
        cal = cls(
            train_prior=data.get("train_prior", 0.5),
            l2=data.get("l2", 1e-6),
            smoothing=data.get("smoothing", "none"),  # files written before smoothing existed
        )
        cal.slope, cal.offset = float(data["slope"]), float(data["offset"])
        if not (math.isfinite(cal.slope) and math.isfinite(cal.offset)):
            raise ValueError(f"{cls.kind} data holds non-finite parameters")
        cal.n_known, cal.n_ood = int(data.get("n_known", 0)), int(data.get("n_ood", 0))
        return cal


def _check_type(data: Mapping[str, Any], kind: str) -> None:
    if not isinstance(data, Mapping):
        raise ValueError(f"expected a dict for {kind}, got {type(data).__name__}")
    if data.get("type") != kind:
        raise ValueError(f"expected data of type '{kind}', got type {data.get('type')!r}")


# ----------------------------------------------------------------------------- OOD metrics


def cllr(llr: Any, is_ood: Any) -> float:
    """Cost of the log-likelihood ratio in bits (lower is better; an llr of 0 everywhere scores 1).

    The mean over the two classes of their mean ``log2(1 + exp(-llr))`` (OOD clips) and
    ``log2(1 + exp(llr))`` (known clips), so class counts do not matter.

    >>> cllr([0.0, 0.0, 0.0], [0, 1, 1])
    1.0
    >>> round(cllr([-2.0, 2.0], [0, 1]), 4)
    0.1831
    """
    lr, y = _llr_and_labels(llr, is_ood)
    ood_cost = np.logaddexp(0.0, -lr[y]).mean()
    known_cost = np.logaddexp(0.0, lr[~y]).mean()
    return float((ood_cost + known_cost) / (2.0 * LOG2))


def _llr_and_labels(llr: Any, is_ood: Any) -> tuple[np.ndarray, np.ndarray]:
    """Like the score check, but +-inf llrs are allowed (an infinite llr is a legal, if rash, claim)."""
    try:
        lr = np.asarray(llr, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"llr must be a 1-D numeric array, got {type(llr).__name__}") from None
    if lr.ndim != 1:
        raise ValueError(f"llr must be a 1-D array, got shape {lr.shape}")
    if np.isnan(lr).any():
        raise ValueError(f"llr contain NaN ({int(np.isnan(lr).sum())} of {lr.size})")
    y = _as_is_ood(is_ood, lr.shape[0])
    if y.all() or not y.any():
        which = "OOD" if y.any() else "known"
        raise ValueError(f"need both known and OOD clips, got only {which} ones ({y.size} clips)")
    return lr, y


def pav_llr(scores: Any, is_ood: Any, eps: float = PAV_EPS) -> np.ndarray:
    """The optimal monotone (non-decreasing) llr of each score on these very clips.

    The PAV algorithm (isotonic regression of ``is_ood`` on the score) gives the posterior of each
    clip; tied scores are pooled into one value, as in BOSARIS. Posteriors are clipped to
    ``[eps, 1 - eps]``, turned into log-odds, and the empirical log prior-odds
    ``log(n_ood / n_known)`` is subtracted to leave a likelihood ratio.

    >>> pav_llr([1.0, 2.0, 3.0, 4.0], [0, 1, 0, 1]).round(4).tolist()
    [-27.631, 0.0, 0.0, 27.631]
    """
    s, y = _scores_and_labels(scores, is_ood)
    posterior = IsotonicRegression(increasing=True, out_of_bounds="clip").fit_transform(
        s, y.astype(np.float64)
    )
    posterior = np.clip(posterior, eps, 1.0 - eps)
    return logit(posterior) - math.log(y.sum() / (~y).sum())


def min_cllr(scores: Any, is_ood: Any) -> float:
    """Cllr after the best monotone calibration (PAV): the discrimination part of :func:`cllr`.

    Unchanged by any strictly increasing transform of the scores; ``cllr - min_cllr`` is the
    calibration loss.

    >>> round(min_cllr([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]), 6)
    0.0
    """
    return cllr(pav_llr(scores, is_ood), is_ood)


def actual_dcf(
    llr: Any, is_ood: Any, prior: float = 0.5, cost_miss: float = 1.0, cost_false_alarm: float = 1.0
) -> float:
    """Normalised detection cost of the Bayes decisions ``llr >= -logit(effective prior)``.

    ``(p*Cmiss*Pmiss + (1-p)*Cfa*Pfa) / min(p*Cmiss, (1-p)*Cfa)``: 1.0 is the cost of always
    taking the cheaper fixed decision.

    >>> actual_dcf([-1.0, 1.0, -1.0, 2.0], [0, 0, 1, 1])  # Pfa = 1/2, Pmiss = 1/2
    1.0
    """
    lr, y = _llr_and_labels(llr, is_ood)
    flag = lr >= bayes_llr_threshold(prior, cost_miss, cost_false_alarm)
    p_miss, p_fa = float((~flag[y]).mean()), float(flag[~y].mean())
    return float(_normalised_dcf(p_miss, p_fa, prior, cost_miss, cost_false_alarm))


def min_dcf(
    scores: Any, is_ood: Any, prior: float = 0.5, cost_miss: float = 1.0, cost_false_alarm: float = 1.0
) -> float:
    """Normalised detection cost at the best threshold on these very clips (the lower bound of
    :func:`actual_dcf`).

    >>> min_dcf([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1])
    0.0
    """
    s, y = _scores_and_labels(scores, is_ood)
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    return float(_normalised_dcf(1.0 - tpr, fpr, prior, cost_miss, cost_false_alarm).min())


def _normalised_dcf(p_miss, p_fa, prior: float, cost_miss: float, cost_fa: float):
    """Works on floats and on arrays of operating points alike."""
    prior = _check_prior(prior)
    effective_prior(prior, cost_miss, cost_fa)  # checks the costs
    dcf = prior * cost_miss * p_miss + (1.0 - prior) * cost_fa * p_fa
    return dcf / min(prior * cost_miss, (1.0 - prior) * cost_fa)


# ----------------------------------------------------------------------------- closed-set probabilities


def _as_logits(logits: Any, name: str = "logits") -> np.ndarray:
    try:
        arr = np.asarray(logits, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a numeric (clips, classes) array") from None
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise ValueError(f"{name} must have shape (clips, classes) with >= 2 classes, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contain NaN or Inf")
    return arr


def _as_labels(labels: Any, n: int, n_classes: int) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"labels have shape {arr.shape} but there are {n} rows")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.issubdtype(arr.dtype, np.floating) or not np.equal(np.mod(arr, 1), 0).all():
            raise ValueError("labels must be integer class ids")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= n_classes):
        raise ValueError(
            f"labels must be class ids in [0, {n_classes}) (known systems only), got {arr.min()}..{arr.max()}"
        )
    return arr


def softmax_nll(logits: Any, labels: Any, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood (nats) of the labels under ``softmax(logits / temperature)``.

    >>> round(softmax_nll([[0.0, 0.0]], [1]), 4)
    0.6931
    """
    z = _as_logits(logits)
    y = _as_labels(labels, z.shape[0], z.shape[1])
    if z.shape[0] == 0:
        raise ValueError("no clips")
    return float(-log_softmax(z / temperature, axis=1)[np.arange(z.shape[0]), y].mean())


class TemperatureScaling:
    """Closed-set probabilities ``softmax(logits / T)`` with one scalar ``T > 0`` fitted on dev.

    ``T > 1`` softens an over-confident model, ``T < 1`` sharpens an under-confident one; the
    predicted class never changes. ``T`` is searched on ``log T`` within ``[1/max_temperature,
    max_temperature]`` (the NLL is unimodal in ``log T``).

    >>> ts = TemperatureScaling().fit([[4.0, 0.0], [0.0, 4.0], [4.0, 0.0]], [0, 1, 1])
    >>> ts.temperature > 1
    True
    """

    kind = "TemperatureScaling"

    def __init__(self, max_temperature: float = 100.0) -> None:
        if not max_temperature > 1:
            raise ValueError(f"max_temperature must be > 1, got {max_temperature}")
        self.max_temperature = float(max_temperature)
        self.temperature: float | None = None
        self.n_clips = 0

    def fit(self, logits: Any, labels: Any) -> TemperatureScaling:
        """Fit ``T`` on dev logits (known systems) and their class ids."""
        z = _as_logits(logits)
        y = _as_labels(labels, z.shape[0], z.shape[1])
        if z.shape[0] == 0:
            raise ValueError("no clips to fit a temperature on")
        rows = np.arange(z.shape[0])

        def nll(log_t: float) -> float:
            return float(-log_softmax(z * math.exp(-log_t), axis=1)[rows, y].mean())

        bound = math.log(self.max_temperature)
        res = minimize_scalar(nll, bounds=(-bound, bound), method="bounded", options={"xatol": 1e-7})
        log_t = float(res.x)
        others = np.where(np.arange(z.shape[1]) == y[:, None], -np.inf, z).max(axis=1)
        if (z[rows, y] > others).all():
            warnings.warn(
                "every dev clip is classified correctly: the NLL keeps falling as T -> 0, so the "
                f"temperature ({math.exp(log_t):.4g}) is undetermined",
                stacklevel=2,
            )
        elif abs(abs(log_t) - bound) < 1e-3:
            warnings.warn(
                f"temperature {math.exp(log_t):.4g} is at the search limit (max_temperature="
                f"{self.max_temperature:g}): dev logits look uninformative or near-perfect",
                stacklevel=2,
            )
        self.temperature = math.exp(log_t)
        self.n_clips = int(z.shape[0])
        return self

    def _require_fit(self) -> float:
        if self.temperature is None:
            raise RuntimeError("TemperatureScaling is not fitted: call fit(dev_logits, dev_labels) first")
        return self.temperature

    def scale(self, logits: Any) -> np.ndarray:
        """The logits divided by the fitted temperature."""
        return _as_logits(logits) / self._require_fit()

    def probabilities(self, logits: Any) -> np.ndarray:
        """Calibrated class probabilities, one row per clip."""
        return softmax(self.scale(logits), axis=1)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able parameters."""
        return {
            "type": self.kind,
            "temperature": self._require_fit(),
            "max_temperature": self.max_temperature,
            "n_clips": self.n_clips,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TemperatureScaling:
        """Rebuild from :meth:`to_dict` output."""
        _check_type(data, cls.kind)
        if "temperature" not in data:
            raise ValueError(f"{cls.kind} data lacks 'temperature'")
        t = float(data["temperature"])
        if not (math.isfinite(t) and t > 0):
            raise ValueError(f"temperature must be a positive finite number, got {t}")
        ts = cls(max_temperature=data.get("max_temperature", 100.0))
        ts.temperature, ts.n_clips = t, int(data.get("n_clips", 0))
        return ts


def _as_probs(probs: Any) -> np.ndarray:
    arr = _as_logits(probs, "probs")
    if arr.min() < 0 or arr.max() > 1:
        raise ValueError("probs must lie in [0, 1]")
    if not np.allclose(arr.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError("each row of probs must sum to 1 (pass softmax outputs, not logits)")
    return arr


def reliability_bins(values: Any, hits: Any, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Equal-width bins over ``[0, 1]``, right-closed (``(lo, hi]``; the first also holds 0).

    ``values`` are the predicted probabilities of the event, ``hits`` whether it happened. Returns
    per bin: ``edges`` (``n_bins + 1``), ``count``, ``mean_value`` and ``rate`` (NaN where empty).

    >>> b = reliability_bins([0.5, 0.55, 0.9], [1, 0, 1], n_bins=2)
    >>> b["count"].tolist(), b["rate"].tolist()
    ([1, 2], [1.0, 0.5])
    """
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins}")
    v = _as_scores(values, "values")
    h = np.asarray(hits, dtype=np.float64)
    if h.shape != v.shape:
        raise ValueError(f"values {v.shape} and hits {h.shape} differ in shape")
    if v.size and (v.min() < 0 or v.max() > 1):
        raise ValueError("values must be probabilities in [0, 1]")
    edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    index = np.clip(np.searchsorted(edges, v, side="left") - 1, 0, int(n_bins) - 1)
    count = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_value = np.bincount(index, weights=v, minlength=n_bins) / count
        rate = np.bincount(index, weights=h, minlength=n_bins) / count
    return {"edges": edges, "count": count, "mean_value": mean_value, "rate": rate}


def expected_calibration_error(probs: Any, labels: Any, n_bins: int = 15) -> float:
    """ECE of the top-class confidence: ``sum_b |B|/N * |accuracy(B) - confidence(B)|`` over
    ``n_bins`` equal-width confidence bins (Guo et al., 2017).

    One bin (0.8, 1] holds both clips: confidence 0.9, accuracy 0.5.

    >>> round(expected_calibration_error([[0.95, 0.05], [0.85, 0.15]], [0, 1], n_bins=5), 6)
    0.4
    """
    p = _as_probs(probs)
    y = _as_labels(labels, p.shape[0], p.shape[1])
    if p.shape[0] == 0:
        raise ValueError("no clips")
    bins = reliability_bins(p.max(axis=1), p.argmax(axis=1) == y, n_bins)
    used = bins["count"] > 0
    gaps = np.abs(bins["rate"][used] - bins["mean_value"][used])
    return float((bins["count"][used] * gaps).sum() / p.shape[0])


# ----------------------------------------------------------------------------- plot


def plot_reliability(
    path: str | Path,
    title: str = "",
    probs: Any = None,
    labels: Any = None,
    ood_llr: Any = None,
    is_ood: Any = None,
    ood_prior: float | None = None,
    n_bins: int = 15,
) -> Path:
    """One PNG with a closed-set reliability diagram and/or an OOD calibration curve.

    - ``probs`` (clips x classes) + ``labels``: accuracy per confidence bin (bars), the gap to the
      diagonal (red), ECE in the legend.
    - ``ood_llr`` (e.g. :meth:`LogisticCalibration.llr` on eval) + ``is_ood``: P(OOD) at
      ``ood_prior`` against the observed OOD rate per bin, with Cllr and min Cllr. ``ood_prior``
      defaults to the OOD fraction of these clips, the prior at which a calibrated llr lies on
      the diagonal.
    """
    from sourcetracing.plots import plt, save_figure

    closed = probs is not None or labels is not None
    ood = ood_llr is not None or is_ood is not None
    if closed and (probs is None or labels is None):
        raise ValueError("the closed-set panel needs both probs and labels")
    if ood and (ood_llr is None or is_ood is None):
        raise ValueError("the OOD panel needs both ood_llr and is_ood")
    if not (closed or ood):
        raise ValueError("nothing to plot: pass probs + labels and/or ood_llr + is_ood")
    fig, axes = plt.subplots(1, int(closed) + int(ood), figsize=(5.2 * (int(closed) + int(ood)), 4.6))
    axes = np.atleast_1d(axes)
    if closed:
        p = _as_probs(probs)
        y = _as_labels(labels, p.shape[0], p.shape[1])
        bins = reliability_bins(p.max(axis=1), p.argmax(axis=1) == y, n_bins)
        ece = expected_calibration_error(p, y, n_bins)
        _reliability_panel(
            axes[0], bins, f"accuracy (ECE {100 * ece:.2f}%)", "confidence (top-class probability)"
        )
        axes[0].set_ylabel("accuracy")
        axes[0].set_title(f"closed set, {p.shape[0]} clips, {p.shape[1]} classes")
    if ood:
        lr, yo = _scores_and_labels(_as_scores(ood_llr, "ood_llr"), is_ood)
        prior = float(yo.mean()) if ood_prior is None else _check_prior(ood_prior, "ood_prior")
        p_ood = expit(lr + logit(prior))
        bins = reliability_bins(p_ood, yo, n_bins)
        label = f"observed OOD rate (Cllr {cllr(lr, yo):.3f}, min {min_cllr(lr, yo):.3f} bits)"
        ax = axes[-1]
        _reliability_panel(ax, bins, label, f"P(OOD) at prior {prior:.3g}")
        ax.set_ylabel("observed OOD rate")
        ax.set_title(f"OOD, {int(yo.sum())} unseen / {int((~yo).sum())} known clips")
    fig.suptitle(title)
    return save_figure(fig, path)


def _reliability_panel(ax, bins: dict[str, np.ndarray], rate_label: str, xlabel: str) -> None:
    edges, count = bins["edges"], bins["count"]
    used = count > 0
    centres = (edges[:-1] + edges[1:]) / 2
    width = edges[1] - edges[0]
    rate = np.where(used, bins["rate"], 0.0)
    mean_value = np.where(used, bins["mean_value"], 0.0)
    ax.bar(
        centres[used],
        rate[used],
        width=width,
        edgecolor="black",
        color="tab:blue",
        alpha=0.8,
        label=rate_label,
    )
    gap_bottom = np.minimum(rate, mean_value)[used]
    gap_height = np.abs(mean_value - rate)[used]
    ax.bar(
        centres[used],
        gap_height,
        bottom=gap_bottom,
        width=width,
        color="tab:red",
        alpha=0.35,
        edgecolor="tab:red",
        hatch="//",
        label="gap to the mean predicted value",
    )
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    twin = ax.twinx()
    twin.plot(centres[used], count[used], "o:", color="tab:gray", ms=3)
    twin.set_yscale("log")
    twin.set_ylabel("clips per bin (grey dots)", color="tab:gray")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=7)
