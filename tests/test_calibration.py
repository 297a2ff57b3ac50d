"""Calibration of OOD scores (logistic llr, Cllr, PAV) and closed-set probabilities (temperature, ECE)."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from scipy import integrate, stats
from scipy.special import expit, logit, softmax

from sourcetracing.ood.calibration import (
    LogisticCalibration,
    TemperatureScaling,
    actual_dcf,
    bayes_llr_threshold,
    cllr,
    effective_prior,
    expected_calibration_error,
    min_cllr,
    min_dcf,
    pav_llr,
    plot_reliability,
    reliability_bins,
    softmax_nll,
)

D = 2.0  # known ~ N(0, 1), OOD ~ N(D, 1): the true llr is D*s - D^2/2


def gaussian_scores(seed: int = 0, n_known: int = 6000, n_ood: int = 14000) -> tuple[np.ndarray, np.ndarray]:
    """Scores with a known llr; unequal class counts so that the prior weighting matters."""
    rng = np.random.default_rng(seed)
    scores = np.concatenate([rng.normal(0.0, 1.0, n_known), rng.normal(D, 1.0, n_ood)])
    is_ood = np.concatenate([np.zeros(n_known, bool), np.ones(n_ood, bool)])
    return scores, is_ood


def true_llr(scores: np.ndarray) -> np.ndarray:
    return D * scores - D * D / 2


def theoretical_cllr(d: float) -> float:
    """Cllr of the true llr: for OOD clips llr ~ N(d^2/2, d^2); known clips mirror it, so both halves are equal."""

    def integrand(v: float) -> float:
        return np.logaddexp(0.0, -v) / math.log(2) * stats.norm.pdf(v, d * d / 2, d)

    return integrate.quad(integrand, -np.inf, np.inf)[0]


def sample_labels(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One class id per row drawn from that row's probabilities."""
    u = rng.random((probs.shape[0], 1))
    return np.minimum((u > probs.cumsum(axis=1)).sum(axis=1), probs.shape[1] - 1)


# ----------------------------------------------------------------------------- logistic calibration


def test_logistic_calibration_recovers_known_llr() -> None:
    scores, is_ood = gaussian_scores()
    cal = LogisticCalibration().fit(scores, is_ood)
    assert cal.slope == pytest.approx(D, abs=0.1)
    assert cal.offset == pytest.approx(-D * D / 2, abs=0.1)
    assert (cal.n_known, cal.n_ood) == (6000, 14000)


@pytest.mark.parametrize("train_prior", [0.2, 0.8])
def test_training_prior_is_removed_from_the_llr(train_prior: float) -> None:
    scores, is_ood = gaussian_scores(seed=1)
    cal = LogisticCalibration(train_prior=train_prior).fit(scores, is_ood)
    assert cal.slope == pytest.approx(D, abs=0.1)
    assert cal.offset == pytest.approx(-D * D / 2, abs=0.1)


def test_unweighted_class_counts_would_shift_the_offset() -> None:
    # sanity check of the test data: the empirical log prior-odds is far from 0, so a fit that
    # left it in the offset would miss the -D^2/2 target by about log(14000/6000) = 0.85
    _, is_ood = gaussian_scores()
    assert abs(math.log(is_ood.sum() / (~is_ood).sum())) > 0.5


def test_calibrated_cllr_matches_theory_and_min_cllr_is_lower() -> None:
    scores, is_ood = gaussian_scores(seed=2)
    theory = theoretical_cllr(D)
    assert theory == pytest.approx(0.514, abs=0.002)  # the integral itself, d = 2
    cal = LogisticCalibration().fit(scores, is_ood)
    fitted = cllr(cal.llr(scores), is_ood)
    assert fitted == pytest.approx(theory, abs=0.025)
    assert cllr(true_llr(scores), is_ood) == pytest.approx(theory, abs=0.025)
    assert min_cllr(scores, is_ood) <= fitted


def test_badly_scaled_score_is_fixed_by_calibration() -> None:
    scores, is_ood = gaussian_scores(seed=3)
    bad = 10.0 * true_llr(scores)  # right direction, ten times too confident
    good = cllr(true_llr(scores), is_ood)
    assert cllr(bad, is_ood) > good + 1.0
    recalibrated = LogisticCalibration().fit(bad, is_ood).llr(bad)
    after = cllr(recalibrated, is_ood)
    best = min_cllr(bad, is_ood)
    assert best <= after <= best + 0.02
    assert after == pytest.approx(good, abs=0.01)


def test_probability_and_bayes_threshold() -> None:
    scores, is_ood = gaussian_scores(seed=4)
    cal = LogisticCalibration().fit(scores, is_ood)
    neutral = -cal.offset / cal.slope  # llr 0: the posterior equals the prior
    for prior in (0.1, 0.5, 0.9):
        assert cal.probability([neutral], prior=prior)[0] == pytest.approx(prior, abs=1e-9)
    p = cal.probability(scores, prior=0.3)
    assert np.allclose(p, expit(cal.llr(scores) + logit(0.3)))
    # Bayes thresholds of the true llr: s = D/2 at prior 0.5, (log 9 + D^2/2) / D at prior 0.1
    assert cal.threshold(prior=0.5) == pytest.approx(D / 2, abs=0.05)
    assert cal.threshold(prior=0.1) == pytest.approx((math.log(9) + D * D / 2) / D, abs=0.08)
    # a cost of 9 for a miss at prior 0.1 is the same decision as prior 0.5
    assert cal.threshold(prior=0.1, cost_miss=9.0) == pytest.approx(cal.threshold(prior=0.5), abs=1e-9)
    llr = cal.llr(scores)
    for prior in (0.5, 0.1):
        act, best = actual_dcf(llr, is_ood, prior=prior), min_dcf(scores, is_ood, prior=prior)
        assert best <= act <= best + 0.02


def test_bayes_helpers_by_hand() -> None:
    assert effective_prior(0.25, cost_miss=3.0) == pytest.approx(0.5)
    assert bayes_llr_threshold(0.5) == 0.0
    assert bayes_llr_threshold(0.2) == pytest.approx(math.log(4))
    with pytest.raises(ValueError, match="between 0 and 1"):
        bayes_llr_threshold(1.0)
    with pytest.raises(ValueError, match="positive"):
        effective_prior(0.5, cost_false_alarm=0.0)


def test_dcf_by_hand() -> None:
    llr = [-1.0, 1.0, -1.0, 2.0, 3.0]
    is_ood = [0, 0, 1, 1, 1]
    # at prior 0.5: flags llr >= 0 -> Pfa = 1/2, Pmiss = 1/3; normalised by 0.5
    assert actual_dcf(llr, is_ood) == pytest.approx(1 / 2 + 1 / 3)
    # best threshold 2.0: Pfa 0, Pmiss 1/3
    assert min_dcf(llr, is_ood) == pytest.approx(1 / 3)


def test_fit_depends_only_on_the_arrays_passed() -> None:
    dev_scores, dev_is_ood = gaussian_scores(seed=5, n_known=500, n_ood=700)
    eval_scores, _ = gaussian_scores(seed=6, n_known=900, n_ood=900)
    cal = LogisticCalibration().fit(dev_scores, dev_is_ood)
    fitted = cal.to_dict()
    cal.llr(eval_scores)
    cal.probability(eval_scores, prior=0.2)
    cal.threshold(prior=0.2)
    assert cal.to_dict() == fitted  # applying to eval changes nothing
    assert LogisticCalibration().fit(dev_scores, dev_is_ood).to_dict() == fitted  # deterministic
    order = np.random.default_rng(0).permutation(dev_scores.size)
    shuffled = LogisticCalibration().fit(dev_scores[order], dev_is_ood[order])
    assert shuffled.slope == pytest.approx(cal.slope, rel=1e-6)
    assert shuffled.offset == pytest.approx(cal.offset, rel=1e-6, abs=1e-9)
    with pytest.raises(ValueError, match="numeric array"):
        LogisticCalibration().fit("dev", [1])  # arrays, not split names


def test_logistic_calibration_round_trip_through_json() -> None:
    scores, is_ood = gaussian_scores(seed=7, n_known=400, n_ood=600)
    cal = LogisticCalibration(train_prior=0.3).fit(scores, is_ood)
    data = json.loads(json.dumps(cal.to_dict()))
    again = LogisticCalibration.from_dict(data)
    assert again.to_dict() == cal.to_dict()
    assert np.array_equal(again.llr(scores), cal.llr(scores))


def test_logistic_calibration_errors() -> None:
    cal = LogisticCalibration()
    with pytest.raises(RuntimeError, match="not fitted"):
        cal.llr([0.0])
    with pytest.raises(ValueError, match="only known"):
        cal.fit([0.1, 0.2, 0.3], [0, 0, 0])
    with pytest.raises(ValueError, match="only OOD"):
        cal.fit([0.1, 0.2], [True, True])
    with pytest.raises(ValueError, match="NaN"):
        cal.fit([0.1, float("nan"), 0.3], [0, 1, 1])
    with pytest.raises(ValueError, match="3 scores"):
        cal.fit([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(ValueError, match="0/1"):
        cal.fit([0.1, 0.2, 0.3], [0, 1, 2])
    with pytest.raises(ValueError, match="constant"):
        cal.fit([0.5, 0.5, 0.5], [0, 1, 1])
    with pytest.raises(ValueError, match="train_prior"):
        LogisticCalibration(train_prior=0.0)
    with pytest.raises(ValueError, match="type 'LogisticCalibration'"):
        LogisticCalibration.from_dict({"type": "TemperatureScaling", "temperature": 1.0})
    with pytest.raises(ValueError, match="lacks"):
        LogisticCalibration.from_dict({"type": "LogisticCalibration", "slope": 1.0})
    with pytest.raises(ValueError, match="non-finite"):
        LogisticCalibration.from_dict({"type": "LogisticCalibration", "slope": 1.0, "offset": float("nan")})


def test_inverted_scores_warn_and_have_no_threshold() -> None:
    scores, is_ood = gaussian_scores(seed=8, n_known=300, n_ood=300)
    with pytest.warns(UserWarning, match="not positive"):
        cal = LogisticCalibration().fit(-scores, is_ood)
    assert cal.slope < 0
    with pytest.raises(ValueError, match="slope is not positive"):
        cal.threshold()


def test_separable_scores_warn_but_stay_finite() -> None:
    with pytest.warns(UserWarning, match="separate"):
        cal = LogisticCalibration().fit([0.1, 0.2, 0.3, 0.7, 0.8, 0.9], [0, 0, 0, 1, 1, 1])
    llr = cal.llr([0.0, 0.5, 1.0])
    assert np.isfinite(llr).all()
    assert llr[0] < 0 < llr[2]


# ----------------------------------------------------------------------------- Cllr and PAV


def test_cllr_by_hand() -> None:
    assert cllr([0.0, 0.0, 0.0, 0.0], [0, 1, 1, 1]) == pytest.approx(1.0)
    assert cllr([-2.0, 2.0], [0, 1]) == pytest.approx(math.log2(1 + math.exp(-2)))
    # classes are averaged, not clips: 1 known clip at llr 0 and 3 perfect OOD clips -> (1 + 0) / 2
    assert cllr([0.0, np.inf, np.inf, np.inf], [0, 1, 1, 1]) == pytest.approx(0.5)
    assert cllr([0.0, -np.inf], [0, 1]) == np.inf  # a certain and wrong claim costs everything
    with pytest.raises(ValueError, match="NaN"):
        cllr([0.0, float("nan")], [0, 1])
    with pytest.raises(ValueError, match="only known"):
        cllr([0.0, 1.0], [0, 0])
    with pytest.raises(ValueError, match="2 scores"):
        min_cllr([0.0, 1.0], [0, 1, 1])


def test_pav_llr_by_hand_and_ties_pooled() -> None:
    # PAV posteriors: 0, (1 + 0) / 2 pooled, 1; the empirical prior odds are 1
    llr = pav_llr([1.0, 2.0, 3.0, 4.0], [0, 1, 0, 1])
    assert llr[1] == pytest.approx(0.0, abs=1e-9) and llr[2] == pytest.approx(0.0, abs=1e-9)
    assert llr[0] < -20 and llr[3] > 20  # clipped posteriors: large but finite
    assert min_cllr([1.0, 2.0, 3.0, 4.0], [0, 1, 0, 1]) == pytest.approx(0.5, abs=1e-6)
    # tied scores get one posterior whatever the order of their labels
    tied = pav_llr([1.0, 2.0, 2.0, 2.0, 3.0], [0, 1, 0, 0, 1])
    assert tied[1] == tied[2] == tied[3]
    assert tied[1] == pytest.approx(math.log((1 / 3) / (2 / 3)) - math.log(2 / 3), abs=1e-9)
    assert pav_llr([1.0, 2.0, 2.0, 2.0, 3.0], [0, 0, 0, 1, 1])[1] == pytest.approx(tied[1], abs=1e-12)
    # all scores tied: no information, exactly 1 bit
    assert min_cllr([5.0, 5.0, 5.0], [0, 1, 1]) == pytest.approx(1.0, abs=1e-9)


def test_min_cllr_invariant_to_monotone_transforms() -> None:
    scores, is_ood = gaussian_scores(seed=9, n_known=1500, n_ood=2500)
    base = min_cllr(scores, is_ood)
    assert 0.4 < base < 0.6
    for transformed in (np.exp(scores), scores**3, 7.0 * scores - 3.0, np.arctan(scores)):
        assert min_cllr(transformed, is_ood) == pytest.approx(base, abs=1e-9)


def test_min_cllr_extremes() -> None:
    rng = np.random.default_rng(10)
    is_ood = rng.random(4000) < 0.4
    separated = np.where(is_ood, 1.0, 0.0) + rng.random(4000) * 0.5
    assert min_cllr(separated, is_ood) == pytest.approx(0.0, abs=1e-6)
    random = rng.normal(size=4000)
    assert 0.98 < min_cllr(random, is_ood) <= 1.0 + 1e-9


# ----------------------------------------------------------------------------- temperature scaling and ECE


def temperature_data(temperature: float, seed: int = 0, n: int = 10000, classes: int = 8):
    """Logits whose labels are drawn from softmax(logits / temperature)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, classes)) * 3.0
    return logits, sample_labels(softmax(logits / temperature, axis=1), rng)


@pytest.mark.parametrize("temperature", [0.5, 2.5])
def test_temperature_scaling_recovers_known_temperature(temperature: float) -> None:
    logits, labels = temperature_data(temperature, seed=11)
    ts = TemperatureScaling().fit(logits, labels)
    assert ts.temperature == pytest.approx(temperature, rel=0.05)


def test_temperature_scaling_fixes_over_confident_logits() -> None:
    logits, labels = temperature_data(2.5, seed=12)  # the raw logits are 2.5x too sharp
    dev, test = slice(0, 5000), slice(5000, None)
    ts = TemperatureScaling().fit(logits[dev], labels[dev])
    raw_probs, cal_probs = softmax(logits[test], axis=1), ts.probabilities(logits[test])
    assert (
        softmax_nll(logits[test], labels[test], ts.temperature)
        < softmax_nll(logits[test], labels[test]) - 0.3
    )
    assert expected_calibration_error(raw_probs, labels[test]) > 0.2
    assert expected_calibration_error(cal_probs, labels[test]) < 0.03
    assert np.array_equal(cal_probs.argmax(axis=1), raw_probs.argmax(axis=1))  # predictions unchanged


def test_temperature_scaling_round_trip_and_errors() -> None:
    logits, labels = temperature_data(1.5, seed=13, n=500, classes=4)
    ts = TemperatureScaling().fit(logits, labels)
    again = TemperatureScaling.from_dict(json.loads(json.dumps(ts.to_dict())))
    assert again.to_dict() == ts.to_dict()
    assert np.array_equal(again.probabilities(logits), ts.probabilities(logits))
    with pytest.raises(RuntimeError, match="not fitted"):
        TemperatureScaling().probabilities(logits)
    with pytest.raises(ValueError, match="NaN"):
        TemperatureScaling().fit([[0.0, float("nan")]], [0])
    with pytest.raises(ValueError, match="500 rows"):
        TemperatureScaling().fit(logits, labels[:-1])
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        TemperatureScaling().fit(logits[:2], [0, 4])
    with pytest.raises(ValueError, match="integer class ids"):
        TemperatureScaling().fit(logits[:2], [0.5, 1.0])
    with pytest.raises(ValueError, match="clips, classes"):
        TemperatureScaling().fit(np.zeros(5), np.zeros(5, int))
    with pytest.raises(ValueError, match="positive"):
        TemperatureScaling.from_dict({"type": "TemperatureScaling", "temperature": -1.0})
    with pytest.raises(ValueError, match="lacks"):
        TemperatureScaling.from_dict({"type": "TemperatureScaling"})


def test_temperature_warns_when_undetermined() -> None:
    logits = np.array([[5.0, 0.0], [0.0, 5.0]] * 10)
    labels = np.array([0, 1] * 10)  # always right: the NLL keeps falling as T -> 0
    with pytest.warns(UserWarning, match="classified correctly"):
        TemperatureScaling().fit(logits, labels)
    rng = np.random.default_rng(18)
    noise, random_labels = rng.normal(size=(2000, 3)), rng.integers(0, 3, 2000)
    with pytest.warns(UserWarning, match="search limit"):  # logits unrelated to labels: T -> infinity
        ts = TemperatureScaling(max_temperature=10.0).fit(noise, random_labels)
    assert ts.temperature == pytest.approx(10.0, rel=0.01)


def test_ece_small_for_calibrated_probabilities() -> None:
    rng = np.random.default_rng(14)
    probs = rng.dirichlet(np.full(5, 0.5), size=20000)
    labels = sample_labels(probs, rng)  # labels drawn from the probabilities: calibrated by construction
    assert expected_calibration_error(probs, labels) < 0.02


def test_ece_by_hand() -> None:
    probs = [[0.95, 0.05], [0.85, 0.15], [0.35, 0.65], [0.25, 0.75]]
    labels = [0, 1, 1, 0]
    # bins of width 0.2: (0.8, 1] holds 0.95 (right) and 0.85 (wrong): confidence 0.9, accuracy 0.5;
    # (0.6, 0.8] holds 0.65 (right) and 0.75 (wrong): confidence 0.7, accuracy 0.5
    assert expected_calibration_error(probs, labels, n_bins=5) == pytest.approx(0.5 * 0.4 + 0.5 * 0.2)
    # one bin: confidence 0.8 against accuracy 0.5; with a wrong 0.55 added, bins of 0.2 keep it apart
    assert expected_calibration_error(probs, labels, n_bins=1) == pytest.approx(0.3)
    more = [*probs, [0.55, 0.45]]
    assert expected_calibration_error(more, [*labels, 1], n_bins=5) == pytest.approx(
        (2 * 0.4 + 2 * 0.2 + 1 * 0.55) / 5
    )
    assert expected_calibration_error([[1.0, 0.0], [0.0, 1.0]], [0, 1]) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="sum to 1"):
        expected_calibration_error([[0.6, 0.6]], [0])
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        expected_calibration_error([[2.0, -1.0]], [0])
    with pytest.raises(ValueError, match="n_bins"):
        expected_calibration_error(probs, labels, n_bins=0)


def test_reliability_bins_are_right_closed() -> None:
    bins = reliability_bins([0.0, 0.5, 0.5000001, 1.0], [1, 1, 0, 0], n_bins=2)
    assert bins["count"].tolist() == [2, 2]  # 0 and 0.5 in (., 0.5]; the rest in (0.5, 1]
    assert bins["rate"].tolist() == [1.0, 0.0]
    empty = reliability_bins([0.05], [1], n_bins=4)
    assert np.isnan(empty["rate"][1:]).all() and empty["count"].tolist() == [1, 0, 0, 0]


# ----------------------------------------------------------------------------- plot


def test_plot_reliability_writes_pngs(tmp_path) -> None:
    import matplotlib.image as mpimg

    logits, labels = temperature_data(2.0, seed=15, n=800, classes=5)
    scores, is_ood = gaussian_scores(seed=16, n_known=300, n_ood=500)
    llr = LogisticCalibration().fit(scores, is_ood).llr(scores)
    both = plot_reliability(
        tmp_path / "sys" / "both.png", "AASIST", softmax(logits, axis=1), labels, llr, is_ood
    )
    closed = plot_reliability(tmp_path / "closed.png", "AASIST", probs=softmax(logits, axis=1), labels=labels)
    ood = plot_reliability(tmp_path / "ood.png", "AASIST", ood_llr=llr, is_ood=is_ood, ood_prior=0.5)
    for path in (both, closed, ood):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert mpimg.imread(both).shape[1] > 1.5 * mpimg.imread(closed).shape[1]  # two panels side by side
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_reliability(tmp_path / "none.png")
    with pytest.raises(ValueError, match="needs both ood_llr and is_ood"):
        plot_reliability(tmp_path / "half.png", ood_llr=llr)
    assert not (tmp_path / "none.png").exists()


def test_no_warning_on_ordinary_fit() -> None:
    scores, is_ood = gaussian_scores(seed=17, n_known=200, n_ood=200)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LogisticCalibration().fit(scores, is_ood)


def test_calibration_stays_sane_when_dev_separates_perfectly() -> None:
    """Five unseen systems that dev separates perfectly must not make a calibration that costs many
    bits on eval, where an unseen system can sit among the known ones."""
    from sourcetracing.ood.calibration import cllr

    rng = np.random.default_rng(0)
    known = rng.normal(0.0, 1.0, 200)
    unseen = rng.normal(8.0, 1.0, 200)  # far apart: perfectly separated on dev
    scores = np.concatenate([known, unseen])
    is_ood = np.r_[np.zeros(200, bool), np.ones(200, bool)]
    systems = np.r_[np.repeat([f"k{i}" for i in range(4)], 50), np.repeat([f"u{i}" for i in range(5)], 40)]
    # eval: half of the unseen clips look exactly like known ones (a system dev never showed)
    ev = np.concatenate([rng.normal(0.0, 1.0, 200), rng.normal(8.0, 1.0, 100), rng.normal(0.0, 1.0, 100)])
    ev_ood = np.r_[np.zeros(200, bool), np.ones(200, bool)]
    with pytest.warns(UserWarning, match="separate"):
        hard = LogisticCalibration(smoothing="none").fit(scores, is_ood)
    with pytest.warns(UserWarning, match="separate"):
        sane = LogisticCalibration().fit(scores, is_ood, systems)
    assert cllr(hard.llr(ev), ev_ood) > 5.0  # hard targets: overconfident, many bits lost
    assert cllr(sane.llr(ev), ev_ood) < 1.5  # bounded by five unseen and four known systems
    assert 0 < sane.slope < hard.slope
    assert abs(sane.llr(np.array([0.0]))[0]) < np.log(6.0) + 0.5  # about log(n_known + 1) at most
    again = LogisticCalibration.from_dict(sane.to_dict())
    assert again.smoothing == "platt" and again.llr(ev) == pytest.approx(sane.llr(ev))
