"""The OOD report: thresholds fitted on dev, applied to eval, metrics over all scorers and cells.

Files written to ``out_dir``:

- ``OOD_eval_results.txt``: the original step's file: known-vs-OOD classification report on eval
  for the default scorer at the dev-EER threshold, with the EER and threshold lines;
- ``ood_summary.csv``: one row per scorer x split x subset (``all``, ``seen_lang``,
  ``unseen_lang``, the four fine-grained cells, ``language:<code>`` per language and
  ``unseen_system:<name>`` per unseen system: that system's clips against all known clips);
  metrics that a subset cannot define (an EER where all clips are known, say, or the open-set
  F1 of a system without closed-set decisions) are NaN. ``cllr``
  is the Cllr (bits) of the scores calibrated on dev (:mod:`sourcetracing.ood.calibration`),
  ``min_cllr`` the best any monotone calibration could reach on that subset;
- ``scores_dev.tsv`` / ``scores_eval.tsv``: one row per clip, one column per scorer (full precision:
  re-evaluated as a score file they give this report again);
- ``thresholds.json``: per scorer the dev-EER threshold and EER and the dev-fitted calibration
  (score -> log-likelihood ratio OOD vs known);
- ``roc_<split>.png`` / ``det_<split>.png``: every scorer on one plot.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import classification_report, roc_curve

from sourcetracing.layout import OOD_SUMMARY, THRESHOLDS
from sourcetracing.ood.calibration import LogisticCalibration, cllr, min_cllr
from sourcetracing.ood.metrics import (
    auroc,
    eer,
    fpr_at_tpr,
    open_set_macro_f1,
    rates_at_threshold,
)

CELLS = (
    "seen_lang/seen_model",
    "seen_lang/unseen_model",
    "unseen_lang/seen_model",
    "unseen_lang/unseen_model",
)
SUMMARY_COLUMNS = [
    "scorer",
    "split",
    "subset",
    "n",
    "n_known",
    "n_ood",
    "eer",
    "eer_threshold",
    "auroc",
    "fpr_at_95tpr",
    "threshold",
    "fpr",
    "fnr",
    "error_rate",
    "precision",
    "recall",
    "f1",
    "open_set_macro_f1",
    "cllr",
    "min_cllr",
]
UNSEEN_SYSTEM = "unseen_system:"
LANGUAGE = "language:"


def _subsets(frame: pd.DataFrame) -> list[tuple[str, np.ndarray]]:
    """(name, boolean mask): the whole split, language halves, cells, each language, each unseen system."""
    out = [("all", np.ones(len(frame), dtype=bool))]
    cell = frame["cell"].astype(str).to_numpy()
    for lang in ("seen_lang", "unseen_lang"):
        out.append((lang, np.char.startswith(cell.astype(str), lang + "/")))
    for name in CELLS:
        out.append((name, cell == name))
    language = frame["language"].astype(str).to_numpy()
    for lang in sorted(set(language)):
        out.append((LANGUAGE + lang, language == lang))
    known = frame["known"].to_numpy(bool)
    systems = frame["model_name"].astype(str).to_numpy()
    for system in sorted(set(systems[~known])):
        out.append((UNSEEN_SYSTEM + system, known | (systems == system)))
    return [(name, mask) for name, mask in out if mask.any()]


def subset_metrics(
    scores: np.ndarray,
    is_ood: np.ndarray,
    labels: np.ndarray,
    closed_pred: np.ndarray,
    threshold: float,
    calibration: LogisticCalibration | None = None,
) -> dict[str, float]:
    """Every summary metric on one subset; ROC and Cllr metrics are NaN when it holds only one class."""
    both = bool(is_ood.any()) and bool((~is_ood).any())
    row: dict[str, float] = {
        "n": len(scores),
        "n_known": int((~is_ood).sum()),
        "n_ood": int(is_ood.sum()),
        "eer": math.nan,
        "eer_threshold": math.nan,
        "auroc": math.nan,
        "fpr_at_95tpr": math.nan,
        "threshold": threshold,
    }
    if both:
        row["eer"], row["eer_threshold"] = eer(scores, is_ood)
        row["auroc"] = auroc(scores, is_ood)
        row["fpr_at_95tpr"] = fpr_at_tpr(scores, is_ood, 0.95)
    row.update(rates_at_threshold(scores, is_ood, threshold))
    # open-set F1 needs closed-set decisions: NaN for a system that makes none (a score file without
    # a ``predicted`` column gives -1 everywhere)
    decided = bool((np.asarray(closed_pred) >= 0).any())
    row["open_set_macro_f1"] = (
        open_set_macro_f1(labels, closed_pred, scores, threshold) if decided else math.nan
    )
    row["cllr"] = row["min_cllr"] = math.nan
    if both:
        if calibration is not None:
            row["cllr"] = cllr(calibration.llr(scores), is_ood)
        row["min_cllr"] = min_cllr(scores, is_ood)
    return row


def fit_calibration(
    dev_scores: np.ndarray, dev_is_ood: np.ndarray, dev_systems: np.ndarray | None = None
) -> LogisticCalibration:
    """The score -> llr calibration of one scorer, fitted on dev (warnings of degenerate dev data silenced);
    with ``dev_systems`` its confidence is bounded by how many systems dev holds, not how many clips."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return LogisticCalibration().fit(dev_scores, dev_is_ood, dev_systems)


def _plot_curves(out_dir: Path, split: str, scores: Mapping[str, np.ndarray], is_ood: np.ndarray) -> None:
    from scipy.stats import norm

    from sourcetracing.plots import plt, save_figure

    if not (is_ood.any() and (~is_ood).any()):
        return
    fig_roc, ax_roc = plt.subplots(figsize=(5.5, 5))
    fig_det, ax_det = plt.subplots(figsize=(5.5, 5))
    eps = 1e-4
    for name, s in scores.items():
        fpr, tpr, _ = roc_curve(is_ood, s, pos_label=True)
        e, _ = eer(s, is_ood)
        ax_roc.plot(fpr, tpr, label=f"{name} (AUROC {auroc(s, is_ood):.3f})")
        fnr = 1.0 - tpr
        ax_det.plot(
            norm.ppf(np.clip(fpr, eps, 1 - eps)),
            norm.ppf(np.clip(fnr, eps, 1 - eps)),
            label=f"{name} (EER {100 * e:.1f}%)",
        )
    ax_roc.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax_roc.set(
        xlabel="FPR (known clips flagged OOD)", ylabel="TPR (OOD clips flagged)", title=f"OOD ROC ({split})"
    )
    ticks = np.array([0.001, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95, 0.99])
    ax_det.set_xticks(norm.ppf(ticks), [f"{100 * t:g}" for t in ticks])
    ax_det.set_yticks(norm.ppf(ticks), [f"{100 * t:g}" for t in ticks])
    lim = norm.ppf([0.0005, 0.9995])
    ax_det.set(xlim=lim, ylim=lim, xlabel="False positive rate (%)", ylabel="False negative rate (%)")
    ax_det.set_title(f"OOD DET ({split})")
    ax_det.plot(lim, lim, color="grey", lw=0.8, ls="--")
    for fig, ax, name in ((fig_roc, ax_roc, "roc"), (fig_det, ax_det, "det")):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right" if name == "roc" else "upper right")
        save_figure(fig, out_dir / f"{name}_{split}.png", dpi=120)


def _write_eval_text(
    path: Path,
    scorer: str,
    summary: pd.DataFrame,
    scores_eval: np.ndarray,
    is_ood_eval: np.ndarray,
    threshold: float,
) -> None:
    def get(split: str, col: str) -> float:
        row = summary[(summary.scorer == scorer) & (summary.split == split) & (summary.subset == "all")]
        return float(row[col].iloc[0]) if len(row) else math.nan

    pred = scores_eval >= threshold
    report = classification_report(
        is_ood_eval.astype(int),
        pred.astype(int),
        labels=[0, 1],
        target_names=["known", "OOD"],
        digits=4,
        zero_division=0,
    )
    lines = [
        f"OOD detector: {scorer} (higher score = more likely OOD; score >= threshold => OOD)",
        f"Dev EER: {100 * get('dev', 'eer'):.2f}% at threshold {threshold:.6g}",
        f"Eval EER: {100 * get('eval', 'eer'):.2f}% (at the eval's own threshold {get('eval', 'eer_threshold'):.6g})",
        f"Eval AUROC: {get('eval', 'auroc'):.4f}  FPR@95%TPR: {100 * get('eval', 'fpr_at_95tpr'):.2f}%",
        f"Eval at the dev threshold: FPR {100 * get('eval', 'fpr'):.2f}%  FNR {100 * get('eval', 'fnr'):.2f}%  "
        f"OOD F1 {get('eval', 'f1'):.4f}  open-set macro-F1 {get('eval', 'open_set_macro_f1'):.4f}",
        "",
        "Eval classification report (known vs OOD, at the dev-EER threshold):",
        report,
    ]
    path.write_text("\n".join(lines))


SELECTION_RULES = ("dev_eer", "dev_worst_unseen_auroc", "unseen_auroc")
# what each rule picks among the systems' own dev-chosen scorers (the dev-chosen system), in words
RULE_DESCRIPTIONS = {
    "dev_eer": "lowest dev EER among the systems' dev-chosen scorers, ties: higher dev AUROC",
    "dev_worst_unseen_auroc": "highest AUROC on the worst-separated dev-unseen system among the systems' "
    "dev-chosen scorers",
    "unseen_auroc": "highest mean AUROC over dev's unseen and the train-side held-out systems among the "
    "systems' dev-chosen scorers",
}


def _auroc_or_worst(entry: Mapping[str, float], key: str) -> float:
    """``entry[key]``, or -inf where it is missing or NaN (such a candidate ranks last)."""
    value = entry.get(key, float("nan"))
    return -math.inf if value is None or math.isnan(value) else float(value)


def select_on_dev(thresholds: Mapping[str, Mapping[str, float]], rule: str = "dev_eer") -> str:
    """The scorer a dev-only rule picks; eval is never looked at.

    ``dev_eer``: the lowest pooled dev EER (ties: the higher dev AUROC). ``dev_worst_unseen_auroc``:
    the highest AUROC on the dev-unseen system it separates worst from the known clips (ties: the
    lower dev EER, then the higher dev AUROC), which rewards a scorer that misses no unseen system
    over one that wins the pooled number by separating most of them very well. ``unseen_auroc``: the
    highest mean AUROC over every unseen system the candidate has evidence on, each weighing the
    same — dev's unseen systems and, where the outputs carry them, the known systems held out of a
    train-side refit (:mod:`sourcetracing.ood.crossfit`) — (ties: the lower dev EER, then the higher
    dev AUROC).

    >>> select_on_dev({"a": {"dev_eer": 0.2, "dev_auroc": 0.8}, "b": {"dev_eer": 0.2, "dev_auroc": 0.9}})
    'b'
    >>> select_on_dev({"a": {"dev_eer": 0.1, "dev_auroc": 0.95, "dev_worst_unseen_auroc": 0.6},
    ...                "b": {"dev_eer": 0.2, "dev_auroc": 0.9, "dev_worst_unseen_auroc": 0.8}},
    ...               "dev_worst_unseen_auroc")
    'b'
    >>> select_on_dev({"a": {"dev_eer": 0.1, "dev_auroc": 0.95, "unseen_auroc": 0.8},
    ...                "b": {"dev_eer": 0.2, "dev_auroc": 0.9, "unseen_auroc": 0.9}}, "unseen_auroc")
    'b'
    """
    if rule == "dev_eer":
        return min(thresholds, key=lambda n: (thresholds[n]["dev_eer"], -thresholds[n]["dev_auroc"]))
    if rule in ("dev_worst_unseen_auroc", "unseen_auroc"):  # each names the entry's AUROC it ranks by
        return min(
            thresholds,
            key=lambda n: (
                -_auroc_or_worst(thresholds[n], rule),
                thresholds[n]["dev_eer"],
                -thresholds[n]["dev_auroc"],
            ),
        )
    raise ValueError(f"selection rule must be one of {SELECTION_RULES}, got {rule!r}")


def write_ood_report(
    out_dir: str | Path,
    scores: Mapping[str, Mapping[str, np.ndarray]],
    frames: Mapping[str, pd.DataFrame],
    preds: Mapping[str, np.ndarray],
    class_names: Sequence[str],
    default_scorer: str,
    plots: bool = True,
    rule: str = "dev_eer",
    crossfit: Mapping[str, Mapping[str, float]] | None = None,
) -> pd.DataFrame:
    """Fit each scorer's threshold at the dev EER, apply it to every split, write the report files;
    with ``default_scorer`` auto the scorer is picked by the dev-only ``rule`` (:func:`select_on_dev`).
    ``crossfit[scorer]``: held-out known system -> AUROC from a train-side refit, recorded and counted
    by the ``unseen_auroc`` rule beside dev's unseen systems.

    ``scores[scorer][split]``, ``frames[split]`` (columns clip_id, model_name, label, known,
    language, cell) and ``preds[split]`` (closed-set predicted class ids) are row-aligned.
    Returns the summary frame (also written as ``ood_summary.csv``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if "dev" not in frames:
        raise ValueError("write_ood_report needs a 'dev' split to fit the thresholds on")
    if default_scorer != "auto" and default_scorer not in scores:
        raise ValueError(f"default scorer '{default_scorer}' not among the scored: {sorted(scores)}")
    for name, per_split in scores.items():
        for split, frame in frames.items():
            if len(per_split[split]) != len(frame) or len(preds[split]) != len(frame):
                raise ValueError(
                    f"{name}/{split}: {len(per_split[split])} scores, {len(preds[split])} predictions "
                    f"but {len(frame)} clips"
                )
    dev_ood = ~frames["dev"]["known"].to_numpy(bool)
    if dev_ood.all() or not dev_ood.any():
        raise ValueError("the dev split needs both known and OOD clips to fit an EER threshold")

    thresholds: dict[str, dict] = {}
    rows = []
    for name, per_split in scores.items():
        dev_eer, thr = eer(per_split["dev"], dev_ood)
        calibration = fit_calibration(
            np.asarray(per_split["dev"], dtype=np.float64), dev_ood, frames["dev"]["model_name"].to_numpy()
        )
        thresholds[name] = {
            "threshold": thr,
            "dev_eer": dev_eer,
            "dev_auroc": auroc(per_split["dev"], dev_ood),
            "calibration": calibration.to_dict(),
        }
        for split, frame in frames.items():
            s = np.asarray(per_split[split], dtype=np.float64)
            is_ood = ~frame["known"].to_numpy(bool)
            labels = frame["label"].to_numpy(int)
            pred = np.asarray(preds[split]).astype(int)
            for subset, mask in _subsets(frame):
                row = subset_metrics(s[mask], is_ood[mask], labels[mask], pred[mask], thr, calibration)
                rows.append({"scorer": name, "split": split, "subset": subset, **row})
        per_unseen = [
            r["auroc"]
            for r in rows
            if r["scorer"] == name and r["split"] == "dev" and r["subset"].startswith(UNSEEN_SYSTEM)
        ]
        thresholds[name]["dev_worst_unseen_auroc"] = float(np.nanmin(per_unseen)) if per_unseen else math.nan
        held_out = dict((crossfit or {}).get(name) or {})
        pooled = [a for a in [*per_unseen, *held_out.values()] if not math.isnan(a)]
        thresholds[name]["crossfit_aurocs"] = held_out
        thresholds[name]["unseen_auroc"] = float(np.mean(pooled)) if pooled else math.nan
        thresholds[name]["unseen_systems"] = {"dev": len(per_unseen), "train_held_out": len(held_out)}
    if default_scorer == "auto":
        default_scorer = select_on_dev(thresholds, rule)
    summary = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    summary.to_csv(out / OOD_SUMMARY, index=False)
    (out / THRESHOLDS).write_text(
        json.dumps(
            {
                "default": default_scorer,
                "rule": "score >= threshold => OOD",
                "select": rule,
                "scorers": thresholds,
            },
            indent=2,
        )
    )

    names = list(class_names)
    for split, frame in frames.items():
        pred = np.asarray(preds[split]).astype(int)
        table = pd.DataFrame(
            {
                "clip_id": frame["clip_id"].to_numpy(),
                "model_name": frame["model_name"].to_numpy(),
                "known": frame["known"].to_numpy(bool),
                "cell": frame["cell"].to_numpy(),
                "language": frame["language"].to_numpy(),
                "predicted": [names[p] if 0 <= p < len(names) else str(p) for p in pred],
            }
        )
        for name, per_split in scores.items():
            table[name] = np.asarray(per_split[split], dtype=np.float64)
        # full precision (shortest round-trip repr): a score file made from these columns gives the
        # same report again (scripts/evaluate_scores.py)
        table.to_csv(out / f"scores_{split}.tsv", sep="\t", index=False)
        if plots:
            _plot_curves(
                out,
                split,
                {n: np.asarray(v[split]) for n, v in scores.items()},
                ~frame["known"].to_numpy(bool),
            )

    if "eval" in frames:
        _write_eval_text(
            out / "OOD_eval_results.txt",
            default_scorer,
            summary,
            np.asarray(scores[default_scorer]["eval"], dtype=np.float64),
            ~frames["eval"]["known"].to_numpy(bool),
            thresholds[default_scorer]["threshold"],
        )
    return summary
