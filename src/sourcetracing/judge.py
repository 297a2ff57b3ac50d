"""Judging a system from its exported outputs alone: known-class metrics and the OOD step.

    known_class_metrics(cfg, "aasist")   # -> <exp>/aasist/results/
    ood_step(cfg, "aasist")              # -> <exp>/aasist/ood_step/

Nothing here loads a checkpoint or a feature store: everything comes from
``<exp>/<system>/outputs/`` (:mod:`sourcetracing.systems.outputs`). The closed-set decision is the
arg-max of the logits when a system has them, else its ``predicted`` column, else the nearest
class centroid of its train embeddings (cosine). Every registered OOD scorer that the outputs
support runs (logit scorers need logits, embedding scorers embeddings), and so does every
precomputed ``score_<name>`` column. Thresholds and calibrations are fitted on dev; eval is only
scored. Each result folder is written atomically with a manifest naming the outputs it read.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from sourcetracing.components import SCORERS
from sourcetracing.config import Config
from sourcetracing.data.protocols import label_level
from sourcetracing.errors import ConfigError, DataError
from sourcetracing.layout import KNOWN_METRICS, THRESHOLDS, ExperimentLayout, scorer_state_file
from sourcetracing.metrics import write_classification_outputs, write_metrics_json
from sourcetracing.ood.report import write_ood_report
from sourcetracing.ood.scorers import (
    applicable,
    build_scorer,
    centroid_similarities,
    class_centroids,
    scorer_options,
)
from sourcetracing.ood.step import OODStep, read_thresholds
from sourcetracing.provenance import atomic_dir, step_lock, write_manifest
from sourcetracing.systems.handle import read_outputs
from sourcetracing.systems.outputs import SystemOutputs

log = logging.getLogger(__name__)

FRAME_COLUMNS = ["clip_id", "model_name", "label", "known", "language", "language_seen", "cell"]


def load_outputs(cfg: Config, system: str) -> SystemOutputs:
    """The system's outputs, checked for staleness against what made them (when that is at hand)."""
    return read_outputs(cfg, system)


def class_scores(outputs: SystemOutputs) -> dict[str, np.ndarray] | None:
    """Closed-set class scores per split: the logits, else the cosine to each train centroid; None without either."""
    if "logits" in outputs.has:
        return {split: part.logits for split, part in outputs.splits.items()}
    if "embeddings" not in outputs.has:
        return None
    train = outputs.split("train")
    centroids = class_centroids(train.embeddings, train.rows["label"].to_numpy(), len(outputs.class_names))
    return {
        split: centroid_similarities(part.embeddings, centroids) for split, part in outputs.splits.items()
    }


def closed_set_predictions(outputs: SystemOutputs) -> dict[str, np.ndarray]:
    """Predicted class ids per split (arg-max of :func:`class_scores`, else the ``predicted`` column)."""
    scores = class_scores(outputs)
    if scores is not None:
        return {split: s.argmax(axis=1) for split, s in scores.items()}
    names = {n: i for i, n in enumerate(outputs.class_names)}
    preds = {}
    for split, part in outputs.splits.items():
        column = part.rows["predicted"] if "predicted" in part.rows else pd.Series(["?"] * len(part.rows))
        preds[split] = column.map(lambda p: names.get(p, -1)).to_numpy(int)
    return preds


def fit_temperature(outputs: SystemOutputs) -> dict | None:
    """Temperature scaling of the closed-set class scores, fitted on dev's known clips (eval never read).

    Returns ``{"temperature": <TemperatureScaling dict>, "ece": {split: {"raw", "calibrated"}}, "nll": ...}``
    or None when the system has no class scores or dev has no known clips.
    """
    import warnings

    from scipy.special import softmax

    from sourcetracing.ood.calibration import TemperatureScaling, expected_calibration_error, softmax_nll

    scores = class_scores(outputs)
    if scores is None or "dev" not in outputs.splits:
        return None
    dev = outputs.splits["dev"].rows
    known = dev["known"].to_numpy(bool)
    if known.sum() < 2:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ts = TemperatureScaling().fit(scores["dev"][known], dev["label"].to_numpy(int)[known])
    report: dict = {"temperature": ts.to_dict(), "fitted_on": "dev known clips", "ece": {}, "nll": {}}
    for split, part in outputs.splits.items():
        k = part.rows["known"].to_numpy(bool)
        if split == "train" or not k.any():
            continue
        y = part.rows["label"].to_numpy(int)[k]
        raw = softmax(scores[split][k], axis=1)
        report["ece"][split] = {
            "raw": expected_calibration_error(raw, y),
            "calibrated": expected_calibration_error(ts.probabilities(scores[split][k]), y),
        }
        report["nll"][split] = {
            "raw": softmax_nll(scores[split][k], y),
            "calibrated": softmax_nll(ts.scale(scores[split][k]), y),
        }
    return report


def note_label_level(level: str, files: list[Path]) -> None:
    """At the architecture level, start each results text with a line saying what its classes are."""
    if level == "system":
        return  # the original's files, unchanged
    line = (
        f"label level: {level} (data.label={level}: classes and unseen classes are {level}s, not systems)\n"
    )
    for path in files:
        if path.is_file():
            path.write_text(line + path.read_text())


def known_class_metrics(cfg: Config, system: str, outputs: SystemOutputs | None = None) -> dict:
    """Write ``results/``: the original's ``{dev,eval}_in_domain_results.txt``, ``metrics.json``, confusions."""
    outputs = outputs or load_outputs(cfg, system)
    target = ExperimentLayout.of(cfg).system(system).results
    preds = closed_set_predictions(outputs)
    results: dict[str, dict] = {}
    with atomic_dir(target) as tmp:
        for split in [s for s in outputs.splits if s != "train"]:
            rows = outputs.splits[split].rows
            known = rows["known"].to_numpy(bool)
            if not known.any():
                continue
            results[split] = write_classification_outputs(
                tmp, split, rows["label"].to_numpy(int)[known], preds[split][known], outputs.class_names
            )
        calibration = fit_temperature(outputs)
        if calibration is not None:
            (tmp / "calibration.json").write_text(json.dumps(calibration, indent=2))
            for split, ece in calibration["ece"].items():
                if split in results:
                    results[split]["ece"] = ece["calibrated"]
                    results[split]["ece_raw"] = ece["raw"]
        write_metrics_json(tmp / KNOWN_METRICS, results)
        level = label_level(cfg)
        note_label_level(level, [tmp / f"{split}_in_domain_results.txt" for split in results])
        write_manifest(
            tmp, "known_class_metrics", {"outputs": outputs.outputs_id}, system=system, label_level=level
        )
    return results


def scorer_names(cfg: Config, outputs: SystemOutputs, requested: list[str] | None = None) -> list[str]:
    """The registered scorers to run on these outputs (those it supports), plus its precomputed scores."""
    names = list(requested) if requested else list(cfg.ood.scorers)
    for name in names:
        SCORERS.entry(name)
    has, kind = outputs.has, outputs.meta.get("logits")
    run = [n for n in names if applicable(n, has, kind)]
    constant = [n for n in names if n not in run and applicable(n, has)]
    if constant:
        print(f"note: {outputs.system}: {', '.join(constant)} left out: constant on its logits ({kind})")
    skipped = [n for n in names if n not in run and n not in constant]
    if skipped:
        log.info("%s: scorers %s need what the outputs lack (%s)", outputs.system, skipped, sorted(has))
    precomputed = [n for n in outputs.split("dev").scores if n not in run]
    return run + precomputed


def ood_scores(
    cfg: Config,
    outputs: SystemOutputs,
    names: list[str],
    save_dir: Path | None = None,
    tuning: dict | None = None,
    evidence: dict | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """``scores[name][split]`` for dev/eval: registered scorers fitted on train, precomputed ones as given.

    Registered scorers' settings are chosen by ``ood.tune`` (:mod:`sourcetracing.ood.tuning`, never on
    eval); what was chosen is recorded in ``tuning`` when a dict is given, and in ``evidence`` the
    train-side cross-fitted AUROC per held-out known system of the chosen setting, where the outputs
    carry it (:mod:`sourcetracing.ood.crossfit`).
    """
    from sourcetracing.ood.crossfit import aurocs_of
    from sourcetracing.ood.tuning import tune

    out: dict[str, dict[str, np.ndarray]] = {}
    has = outputs.has
    for name in names:
        if name in SCORERS and applicable(name, has, outputs.meta.get("logits")):  # else a precomputed column
            train = outputs.split("train")
            options, table = tune(
                name, scorer_options(cfg.ood, name), str(cfg.ood.tune), train, outputs.splits.get("dev"),
                crossfit=outputs.crossfit,
            )  # fmt: skip
            if evidence is not None:
                evidence[name] = aurocs_of(outputs.crossfit, name, options)
            if tuning is not None:
                tuning[name] = {
                    "mode": str(cfg.ood.tune),
                    "settings": {k: v for k, v in options.items() if k != "chunk_size"},
                    "candidates": table,
                }
            scorer = build_scorer(name, **options).fit(
                train.embeddings, train.logits, train.rows["label"].to_numpy(int)
            )
            if save_dir is not None:
                scorer.save(save_dir / scorer_state_file(name))
            out[name] = {
                split: scorer.score(part.embeddings, part.logits)
                for split, part in outputs.splits.items()
                if split != "train"
            }
        else:
            out[name] = {
                split: part.scores[name] for split, part in outputs.splits.items() if split != "train"
            }
    return out


def ood_step(
    cfg: Config, system: str, requested: list[str] | None = None, outputs: SystemOutputs | None = None
) -> pd.DataFrame:
    """Fit every applicable scorer on train, thresholds and calibrations on dev, report on every split."""
    outputs = outputs or load_outputs(cfg, system)
    layout = ExperimentLayout.of(cfg)
    target = layout.system(system).ood
    names = scorer_names(cfg, outputs, requested)
    if not names:
        raise ConfigError(
            f"{system}: none of the OOD scorers {requested or list(cfg.ood.scorers)} fits its outputs ({sorted(outputs.has)})"
        )
    default = cfg.ood.default
    if default != "auto" and default not in names:
        print(
            f"note: {system}: default scorer '{default}' does not apply; the one with the lowest dev EER is used"
        )
        default = "auto"
    if "dev" not in outputs.splits:
        raise DataError(f"{system}: the outputs have no dev split to fit thresholds on")
    eval_splits = [s for s in outputs.splits if s != "train"]
    frames = {s: outputs.splits[s].rows[FRAME_COLUMNS] for s in eval_splits}
    preds = closed_set_predictions(outputs)
    with (
        step_lock(layout.locks / f"ood-{system}.lock", f"the OOD step of {system}"),
        atomic_dir(target) as tmp,
    ):
        tuning: dict = {}
        evidence: dict = {}
        scores = ood_scores(cfg, outputs, names, save_dir=tmp, tuning=tuning, evidence=evidence)
        summary = write_ood_report(
            tmp, scores, frames, {s: preds[s] for s in eval_splits}, outputs.class_names, default,
            rule=str(cfg.ood.select), crossfit=evidence,
        )  # fmt: skip
        info = read_thresholds(tmp)
        level = label_level(cfg)
        info.update(
            system=system, outputs_id=outputs.outputs_id, class_names=outputs.class_names, label_level=level
        )
        note_label_level(level, [tmp / "OOD_eval_results.txt"])
        for name, record in tuning.items():
            info["scorers"][name]["tuning"] = record
        (tmp / THRESHOLDS).write_text(json.dumps(info, indent=2))
        _reliability_png(tmp / "reliability.png", outputs, info, scores)
        write_manifest(tmp, "ood_step", {"outputs": outputs.outputs_id}, system=system)
    return summary


def _reliability_png(path: Path, outputs: SystemOutputs, info: dict, scores: dict) -> None:
    """Eval reliability diagram: closed-set probabilities (temperature from dev) and P(unseen) of the default scorer."""
    from sourcetracing.ood.calibration import LogisticCalibration, TemperatureScaling, plot_reliability

    if "eval" not in outputs.splits:
        return
    ev = outputs.splits["eval"]
    kwargs: dict = {}
    calibration = fit_temperature(outputs)
    class_s = class_scores(outputs)
    known = ev.rows["known"].to_numpy(bool)
    if calibration is not None and class_s is not None and known.sum() > 1:
        ts = TemperatureScaling.from_dict(calibration["temperature"])
        kwargs.update(
            probs=ts.probabilities(class_s["eval"][known]), labels=ev.rows["label"].to_numpy(int)[known]
        )
    default = info["default"]
    entry = info["scorers"][default]
    if entry.get("calibration") and known.any() and (~known).any():
        cal = LogisticCalibration.from_dict(entry["calibration"])
        kwargs.update(ood_llr=cal.llr(np.asarray(scores[default]["eval"], dtype=np.float64)), is_ood=~known)
    if kwargs:
        plot_reliability(
            path, title=f"{outputs.system} on eval (fitted on dev; OOD scorer {default})", **kwargs
        )


def summary_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The compact per-scorer table printed at the end (percentages for rates)."""
    allrows = summary[summary["subset"] == "all"]
    out = []
    for name in dict.fromkeys(allrows["scorer"]):
        dev = allrows[(allrows.scorer == name) & (allrows.split == "dev")]
        ev = allrows[(allrows.scorer == name) & (allrows.split == "eval")]

        def val(df: pd.DataFrame, col: str, scale: float = 1.0) -> float:
            return float(df[col].iloc[0]) * scale if len(df) else float("nan")

        out.append(
            {
                "scorer": name,
                "dev_eer_%": val(dev, "eer", 100),
                "eval_eer_%": val(ev, "eer", 100),
                "eval_auroc": val(ev, "auroc"),
                "eval_cllr": val(ev, "cllr"),
                "eval_f1": val(ev, "f1"),
                "eval_open_set_f1": val(ev, "open_set_macro_f1"),
            }
        )
    return pd.DataFrame(out)


def print_known(system: str, results: dict) -> None:
    print(f"{system}: known systems only, clean clips")
    print(f"{'split':6s} {'clips':>6s} {'accuracy':>9s} {'bal.acc':>8s} {'macro-F1':>9s}")
    for split, m in results.items():
        print(
            f"{split:6s} {m['n']:6d} {m['accuracy']:9.4f} {m['balanced_accuracy']:8.4f} {m['macro_f1']:9.4f}"
        )


def print_ood(system: str, summary: pd.DataFrame, default: str | None = None) -> None:
    print(
        f"{system}: OOD detection (threshold at the dev EER; higher score = more OOD)"
        + (f"; default {default}" if default else "")
    )
    print(summary_table(summary).to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def judge_system(cfg: Config, system: str, requested: list[str] | None = None) -> tuple[dict, pd.DataFrame]:
    """Known-class metrics and the OOD step of one system, printed."""
    outputs = load_outputs(cfg, system)
    results = known_class_metrics(cfg, system, outputs)
    print_known(system, results)
    summary = ood_step(cfg, system, requested, outputs)
    sys_layout = ExperimentLayout.of(cfg).system(system)
    default = OODStep.read_folder(sys_layout.ood).default
    print_ood(system, summary, default)
    print(f"results in {sys_layout.results} and {sys_layout.ood}")
    return results, summary
