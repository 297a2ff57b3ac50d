"""OOD metrics on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sourcetracing.ood.metrics import (
    auroc,
    eer,
    fpr_at_tpr,
    open_set_macro_f1,
    open_set_predictions,
    rates_at_threshold,
)


def test_eer_perfect_separation() -> None:
    e, t = eer([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1])
    assert e == 0.0
    assert 0.2 < t <= 0.8
    assert rates_at_threshold([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1], t)["error_rate"] == 0.0


def test_eer_inverted_scores_is_one() -> None:
    e, _ = eer([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1])
    assert e == 1.0


def test_eer_is_mean_of_fpr_and_fnr() -> None:
    # known: 0.1 0.2 0.3 0.8 ; OOD: 0.4 0.5 0.9. Thresholds (score >= t => OOD):
    #   t=0.9: FPR 0/4, FNR 2/3 ; t=0.8: 1/4, 2/3 ; t=0.5: 1/4, 1/3 ; t=0.4: 1/4, 0
    # closest |FNR-FPR| at t=0.5 -> EER = (1/4 + 1/3) / 2 = 7/24 (the original reported FPR = 1/4)
    scores = [0.1, 0.2, 0.3, 0.8, 0.4, 0.5, 0.9]
    is_ood = [0, 0, 0, 0, 1, 1, 1]
    e, t = eer(scores, is_ood)
    assert t == 0.5
    assert e == pytest.approx(7 / 24)
    r = rates_at_threshold(scores, is_ood, t)
    assert r["fpr"] == pytest.approx(0.25) and r["fnr"] == pytest.approx(1 / 3)


def test_eer_exact_crossing() -> None:
    e, t = eer([0.1, 0.2, 0.6, 0.3, 0.5, 0.7], [0, 0, 0, 1, 1, 1])
    assert e == pytest.approx(1 / 3) and t == 0.5


def test_eer_random_scores_near_half() -> None:
    rng = np.random.default_rng(0)
    e, _ = eer(rng.random(4000), rng.random(4000) < 0.4)
    assert abs(e - 0.5) < 0.05


def test_eer_needs_both_classes_and_finite() -> None:
    with pytest.raises(ValueError, match="both"):
        eer([0.1, 0.2], [0, 0])
    with pytest.raises(ValueError, match="NaN"):
        eer([0.1, np.nan], [0, 1])


def test_auroc_and_fpr_at_tpr() -> None:
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    assert math.isnan(auroc([0.1, 0.2], [1, 1]))
    # 95% TPR needs all 3 OOD clips flagged: t = 0.4 -> known flagged: 0.8 -> FPR 1/4
    assert fpr_at_tpr([0.1, 0.2, 0.3, 0.8, 0.4, 0.5, 0.9], [0, 0, 0, 0, 1, 1, 1], 0.95) == 0.25
    assert fpr_at_tpr([0.1, 0.2, 0.9, 0.95], [0, 0, 1, 1], 0.95) == 0.0


def test_rates_and_prf() -> None:
    # pred OOD: 0.6, 0.7 -> TP 1 (0.7), FP 1 (0.6), FN 1 (0.2)
    r = rates_at_threshold([0.1, 0.6, 0.7, 0.2], [0, 0, 1, 1], 0.5)
    assert (r["precision"], r["recall"], r["f1"]) == (0.5, 0.5, 0.5)
    assert (r["fpr"], r["fnr"], r["error_rate"]) == (0.5, 0.5, 0.5)
    only_ood = rates_at_threshold([0.6, 0.2], [1, 1], 0.5)
    assert math.isnan(only_ood["fpr"]) and only_ood["fnr"] == 0.5 and only_ood["recall"] == 0.5
    only_known = rates_at_threshold([0.6, 0.2, 0.1, 0.0], [0, 0, 0, 0], 0.5)
    assert only_known["fpr"] == 0.25 and math.isnan(only_known["fnr"]) and math.isnan(only_known["f1"])


def test_open_set_macro_f1() -> None:
    y_true = [0, 0, 1, -1, -1]
    closed = [0, 1, 1, 0, 1]
    scores = [0.1, 0.2, 0.3, 0.9, 0.8]
    assert open_set_predictions(closed, scores, 0.5).tolist() == [0, 1, 1, -1, -1]
    # class 0: P 1, R 1/2 -> F1 2/3 ; class 1: P 1/2, R 1 -> 2/3 ; unknown: 1
    assert open_set_macro_f1(y_true, closed, scores, 0.5) == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    # threshold too high: nothing flagged, predictions = closed set [0, 1, 1, 0, 1]
    # class 0: P 1/2, R 1/2 -> 1/2 ; class 1: P 1/3, R 1 -> 1/2 ; unknown: 0
    assert open_set_macro_f1(y_true, closed, scores, 2.0) == pytest.approx(1 / 3)
