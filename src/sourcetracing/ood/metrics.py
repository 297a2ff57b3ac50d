"""OOD detection metrics. OOD is the positive class and ``score >= threshold`` means "predicted OOD".

EER is the mean of the false-positive rate (known clips flagged OOD) and the false-negative rate
(OOD clips accepted as known) at the ROC point where the two are closest.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import f1_score, roc_auc_score, roc_curve

UNKNOWN = -1  # the open-set "unknown" class id


def _check(scores: np.ndarray, is_ood: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    is_ood = np.asarray(is_ood, dtype=bool)
    if scores.shape != is_ood.shape:
        raise ValueError(f"scores {scores.shape} and labels {is_ood.shape} differ in shape")
    if not np.isfinite(scores).all():
        raise ValueError("OOD scores contain NaN or Inf")
    return scores, is_ood


def _both_classes(is_ood: np.ndarray) -> bool:
    return bool(is_ood.any()) and bool((~is_ood).any())


def _roc(scores: np.ndarray, is_ood: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    scores, is_ood = _check(scores, is_ood)
    if not _both_classes(is_ood):
        raise ValueError("need both known and OOD clips for a ROC-based metric")
    fpr, tpr, thr = roc_curve(is_ood, scores, pos_label=True, drop_intermediate=False)
    return fpr, tpr, thr


def eer(scores: np.ndarray, is_ood: np.ndarray) -> tuple[float, float]:
    """Equal error rate and its threshold (``score >= threshold`` means OOD).

    EER = (FPR + FNR) / 2 at the ROC point where they are closest.

    >>> eer([0.1, 0.2, 0.3, 0.4], [0, 0, 1, 1])
    (0.0, 0.3)
    >>> e, t = eer([0.1, 0.2, 0.6, 0.3, 0.5, 0.7], [0, 0, 0, 1, 1, 1])
    >>> round(e, 4), t
    (0.3333, 0.5)

    Here FPR = 1/4 and FNR = 1/3 at the crossing; the EER is their mean, not the FPR alone:

    >>> e, t = eer([0.1, 0.2, 0.3, 0.8, 0.4, 0.5, 0.9], [0, 0, 0, 0, 1, 1, 1])
    >>> round(e, 4), t
    (0.2917, 0.5)
    """
    fpr, tpr, thr = _roc(scores, is_ood)
    fnr = 1.0 - tpr
    finite = np.isfinite(thr)
    fpr, fnr, thr = fpr[finite], fnr[finite], thr[finite]
    i = int(np.argmin(np.abs(fnr - fpr)))
    return float((fpr[i] + fnr[i]) / 2.0), float(thr[i])


def auroc(scores: np.ndarray, is_ood: np.ndarray) -> float:
    """Area under the ROC curve with OOD positive (1.0 = perfect, 0.5 = chance).

    >>> auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    0.75
    """
    scores, is_ood = _check(scores, is_ood)
    if not _both_classes(is_ood):
        return math.nan
    return float(roc_auc_score(is_ood, scores))


def fpr_at_tpr(scores: np.ndarray, is_ood: np.ndarray, tpr_level: float = 0.95) -> float:
    """FPR on known clips at the first threshold that flags ``tpr_level`` of the OOD clips.

    >>> fpr_at_tpr([0.1, 0.2, 0.3, 0.8, 0.4, 0.5, 0.9], [0, 0, 0, 0, 1, 1, 1], 0.95)
    0.25
    >>> fpr_at_tpr([0.1, 0.2, 0.3, 0.8, 0.4, 0.5, 0.9], [0, 0, 0, 0, 1, 1, 1], 0.5)
    0.25
    """
    fpr, tpr, _ = _roc(scores, is_ood)
    i = int(np.searchsorted(tpr, tpr_level - 1e-12, side="left"))
    return float(fpr[min(i, len(fpr) - 1)])


def rates_at_threshold(scores: np.ndarray, is_ood: np.ndarray, threshold: float) -> dict[str, float]:
    """FPR, FNR, error rate and OOD precision/recall/F1 at a fixed threshold (NaN where undefined).

    >>> r = rates_at_threshold([0.1, 0.6, 0.7, 0.2], [0, 0, 1, 1], 0.5)
    >>> r["fpr"], r["fnr"], r["error_rate"], r["precision"], r["recall"], r["f1"]
    (0.5, 0.5, 0.5, 0.5, 0.5, 0.5)
    >>> rates_at_threshold([0.1, 0.9], [0, 0], 0.5)["fnr"]
    nan
    """
    scores, is_ood = _check(scores, is_ood)
    pred = scores >= threshold
    tp = int((pred & is_ood).sum())
    fp = int((pred & ~is_ood).sum())
    fn = int((~pred & is_ood).sum())
    n_known, n_ood = int((~is_ood).sum()), int(is_ood.sum())
    nan = math.nan
    precision = tp / (tp + fp) if tp + fp else (nan if n_ood == 0 else 0.0)
    recall = tp / n_ood if n_ood else nan
    if n_ood == 0:
        f1 = nan
    elif tp == 0:
        f1 = 0.0
    else:
        f1 = 2 * precision * recall / (precision + recall)
    return {
        "fpr": fp / n_known if n_known else nan,
        "fnr": fn / n_ood if n_ood else nan,
        "error_rate": (fp + fn) / len(scores) if len(scores) else nan,
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
    }


def open_set_predictions(closed_pred: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Closed-set prediction where ``score < threshold``, :data:`UNKNOWN` (-1) otherwise.

    >>> open_set_predictions([0, 1, 2], [0.1, 0.9, 0.4], 0.5).tolist()
    [0, -1, 2]
    """
    closed_pred = np.asarray(closed_pred).astype(int)
    return np.where(np.asarray(scores) >= threshold, UNKNOWN, closed_pred)


def open_set_macro_f1(
    y_true: np.ndarray, closed_pred: np.ndarray, scores: np.ndarray, threshold: float
) -> float:
    """(K+1)-way macro-F1 over the classes present in ``y_true``: known systems plus "unknown" (-1).

    ``y_true`` holds class ids for known clips and -1 for OOD clips. A subset without OOD clips
    (a fine-grained cell of known systems) is averaged over its known classes only; wrongly
    rejected clips still count, as misses of their class.

    >>> round(open_set_macro_f1([0, 0, 1, -1, -1], [0, 1, 1, 0, 1], [.1, .2, .3, .9, .8], 0.5), 4)
    0.7778
    >>> open_set_macro_f1([0, 1], [0, 1], [0.1, 0.9], 0.5)  # one known clip rejected: class 1 missed
    0.5
    """
    y_true = np.asarray(y_true).astype(int)
    if len(y_true) == 0:
        return math.nan
    pred = open_set_predictions(closed_pred, scores, threshold)
    labels = sorted(set(y_true.tolist()))
    return float(f1_score(y_true, pred, labels=labels, average="macro", zero_division=0))
