"""Score-level fusion of systems and scorers: a logistic regression fitted on dev, judged like any system.

It reads the per-clip OOD scores the OOD steps of the other systems wrote
(``<exp>/<system>/ood_step/scores_{dev,eval}.tsv``: one column per scorer, higher = more OOD),
standardises each member score with dev's mean and spread, and fits a logistic regression
(unseen vs known) on dev. With ``fusion.weights: nonnegative`` (the default) every member's weight
is kept ≥ 0: each member score already says "higher = more OOD", so a negative weight would turn a
member's evidence upside down, which only fitting dev's noise does (``free``: unconstrained). Members are ``fusion.members`` (``system:scorer`` names) or, with
``auto``, chosen by greedy forward selection on **dev only**: at each step the candidate that
lowers the pooled out-of-fold EER most is added, the folds leaving out one dev-unseen system at
a time (with a share of the known clips), so the choice rewards what generalises to unseen
systems not seen by the fit, never what fits the dev systems themselves (with a single dev-unseen
system the folds are random shares of the clips). Eval is only scored.

The fused score is exported as a ``score_fused`` column in the file contract (``fusion/outputs/``),
with the closed-set decision of the member system whose dev known-class macro-F1 is best, so the
judges, the summary and the reports treat it like every other system. Its **dev scores are
out-of-fold** (cross-fitted with the same folds as the member selection): each dev clip is scored
by a fusion fitted without its unseen system (or its share of the known clips), so the fusion's
dev EER, the dev threshold, the calibration and its rank in every dev choice are judged on clips
the fit did not see, as every other system's are. Eval is scored by the fit on all of dev.

    python scripts/fusion.py --config configs/demo_hard.yaml
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from sourcetracing.config import Config
from sourcetracing.errors import DataError, MissingInputError
from sourcetracing.layout import ExperimentLayout
from sourcetracing.ood.metrics import auroc, eer
from sourcetracing.ood.step import OODStep
from sourcetracing.provenance import data_digest, step_lock
from sourcetracing.systems.outputs import KEY_COLUMNS, SplitOutputs, SystemOutputs

SYSTEM = "fusion"
SCORE_FILE_KEYS = ("clip_id", "model_name", "known", "cell", "language", "predicted")


def candidate_scores(cfg: Config, split: str) -> pd.DataFrame:
    """Every judged system's OOD scores of one split, one column per ``system:scorer``, aligned by clip
    (reference systems, reported but never chosen, are left out)."""
    from sourcetracing.systems.plain_reference import is_reference

    layout = ExperimentLayout.of(cfg)
    frames = []
    for system in layout.systems():
        path = system.scores(split)
        if system.name == SYSTEM or not path.is_file() or is_reference(layout, system.name):
            continue
        table = pd.read_csv(path, sep="\t", keep_default_na=False, dtype={"clip_id": str})
        scores = table.drop(columns=[c for c in SCORE_FILE_KEYS if c in table]).set_index(table["clip_id"])
        frames.append(scores.add_prefix(f"{system.name}:"))
    if not frames:
        raise MissingInputError(
            f"no system has an OOD step in {layout.root}: run the systems' steps before fusing them"
        )
    joined = pd.concat(frames, axis=1, join="inner")
    return joined


def _standardise(dev: pd.DataFrame, other: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, dict]:
    mean, std = dev.mean(), dev.std(ddof=0).replace(0.0, 1.0)
    return (
        ((dev - mean) / std).to_numpy(),
        ((other - mean) / std).to_numpy(),
        {"mean": mean.to_dict(), "std": std.to_dict()},
    )


class NonNegativeLogistic:
    """Logistic regression whose weights are all ≥ 0 (the intercept is free), fitted by L-BFGS-B.

    The objective is scikit-learn's ``LogisticRegression(C, class_weight="balanced")``: ``C`` times
    the class-balanced log loss plus half the squared weights, so where the unconstrained fit's
    weights are already non-negative both give the same model.
    """

    def __init__(self, C: float = 1.0):
        self.C = C

    def fit(self, x: np.ndarray, y: np.ndarray) -> NonNegativeLogistic:
        from scipy.optimize import minimize
        from scipy.special import expit

        y = np.asarray(y, dtype=bool)
        sign = np.where(y, 1.0, -1.0)
        weight = np.where(y, len(y) / (2.0 * y.sum()), len(y) / (2.0 * (~y).sum()))
        d = x.shape[1]

        def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
            margin = sign * (x @ theta[:d] + theta[d])
            value = np.logaddexp(0.0, -margin)  # log(1 + exp(-m)), stable for any m
            g = -self.C * weight * sign * expit(-margin)
            grad = np.r_[x.T @ g + theta[:d], g.sum()]
            return float(self.C * (weight * value).sum() + 0.5 * theta[:d] @ theta[:d]), grad

        bounds = [(0.0, None)] * d + [(None, None)]
        res = minimize(
            loss, np.zeros(d + 1), jac=True, method="L-BFGS-B", bounds=bounds, options={"maxiter": 2000}
        )
        self.coef_ = res.x[None, :d]
        self.intercept_ = res.x[d:]
        return self

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        return x @ self.coef_[0] + self.intercept_[0]


def _fit(x: np.ndarray, y: np.ndarray, nonnegative: bool = False):
    """The fusion's logistic regression (``nonnegative``: every member's weight ≥ 0)."""
    from sklearn.linear_model import LogisticRegression

    if nonnegative:
        return NonNegativeLogistic(C=1.0).fit(x, y)
    return LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000).fit(x, y)


FOLDS_RULE = "leave one dev-unseen system out, with a random share of the known clips"


def out_of_fold_scores(
    x: np.ndarray, is_ood: np.ndarray, groups: np.ndarray, seed: int = 0, nonnegative: bool = False
) -> np.ndarray:
    """Fused dev scores, each predicted by a fit that did not see its unseen system (or its known fold).

    With fewer than 2 unseen systems in dev the folds are 5 random shares of the clips instead.
    """
    unseen = sorted(set(groups[is_ood]))
    rng = np.random.default_rng(seed)
    fold = np.empty(len(groups), dtype=int)
    if len(unseen) >= 2:
        fold[~is_ood] = rng.integers(0, len(unseen), size=int((~is_ood).sum()))
        fold[is_ood] = [unseen.index(g) for g in groups[is_ood]]
    else:
        fold[:] = rng.permutation(np.arange(len(groups)) % 5)
    out = np.empty(len(groups))
    for k in np.unique(fold):
        test = fold == k
        if is_ood[~test].all() or not is_ood[~test].any():
            raise DataError("fusion needs known and unseen dev clips outside every fold")
        out[test] = _fit(x[~test], is_ood[~test], nonnegative=nonnegative).decision_function(x[test])
    return out


def select_members(
    dev: pd.DataFrame, is_ood: np.ndarray, groups: np.ndarray, max_members: int, nonnegative: bool = False
) -> tuple[list[str], list[dict]]:
    """Greedy forward selection of member scores by pooled out-of-fold EER on dev; returns (members, trace)."""
    chosen: list[str] = []
    trace: list[dict] = []
    best = (np.inf, -np.inf)
    while len(chosen) < max_members:
        results = []
        for name in dev.columns:
            if name in chosen:
                continue
            x, _, _ = _standardise(dev[[*chosen, name]], dev[[*chosen, name]])
            fused = out_of_fold_scores(x, is_ood, groups, nonnegative=nonnegative)
            results.append((eer(fused, is_ood)[0], -auroc(fused, is_ood), name))
        if not results:
            break
        e, neg_auc, name = min(results)
        if (e, neg_auc) >= (best[0] - 1e-9, best[1]) and chosen:
            break
        best = (e, neg_auc)
        chosen.append(name)
        trace.append({"member": name, "oof_dev_eer": e, "oof_dev_auroc": -neg_auc})
    return chosen, trace


def _closed_set_source(cfg: Config, members: list[str]) -> str:
    """The member system with the best dev known-class macro-F1 (its predictions are the fusion's)."""
    layout = ExperimentLayout.of(cfg)
    best, best_f1 = members[0].split(":")[0], -1.0
    for system in dict.fromkeys(m.split(":")[0] for m in members):
        metrics = layout.system(system).known_metrics
        if metrics.is_file():
            f1 = json.loads(metrics.read_text()).get("dev", {}).get("macro_f1", -1.0)
            if f1 > best_f1:
                best, best_f1 = system, f1
    return best


def export_fusion(cfg: Config) -> Path:
    """Fit the fusion on dev, export its outputs (dev and eval) with the fused score."""
    f = cfg.fusion
    layout = ExperimentLayout.of(cfg)
    system = layout.system(SYSTEM)
    dev_all, eval_all = candidate_scores(cfg, "dev"), candidate_scores(cfg, "eval")
    key_dev = _key(cfg, "dev", dev_all.index)
    is_ood = ~key_dev["known"].to_numpy(bool)
    groups = key_dev["model_name"].to_numpy()
    nonnegative = f.weights == "nonnegative"
    if f.members == "auto" or f.members == ["auto"]:
        members, selection = select_members(dev_all, is_ood, groups, int(f.max_members), nonnegative)
    else:
        members = [m for m in f.members]
        missing = [m for m in members if m not in dev_all.columns]
        if missing:
            raise DataError(f"fusion.members {missing} not found; available: {sorted(dev_all.columns)}")
        selection = []
    x_dev, x_eval, scaling = _standardise(dev_all[members], eval_all[members])
    model = _fit(x_dev, is_ood, nonnegative=nonnegative)
    fused = {
        "dev": out_of_fold_scores(x_dev, is_ood, groups, nonnegative=nonnegative),  # never in-sample
        "eval": model.decision_function(x_eval),
    }
    source = _closed_set_source(cfg, members)
    splits = {}
    for split, index in (("dev", dev_all.index), ("eval", eval_all.index)):
        rows = _key(cfg, split, index)
        predicted = pd.read_csv(
            layout.system(source).scores(split),
            sep="\t",
            keep_default_na=False,
            dtype={"clip_id": str},
        )
        rows["predicted"] = rows["clip_id"].map(
            dict(zip(predicted["clip_id"], predicted["predicted"], strict=True))
        )
        rows["score_fused"] = fused[split]
        splits[split] = SplitOutputs(rows)
    weights = dict(zip(members, model.coef_[0].tolist(), strict=True))
    meta = {
        "task": "fusion", "members": members, "weights": weights, "weight_rule": str(f.weights), "intercept": float(model.intercept_[0]),
        "scaling": {k: {m: v[m] for m in members} for k, v in scaling.items()}, "selection": selection,
        "closed_set_from": source, "dev_scores": "out-of-fold", "folds": FOLDS_RULE,
        "description": f"logistic fusion of {', '.join(members)} (fitted on dev; dev scores out-of-fold)",
    }  # fmt: skip
    class_names = SystemOutputs.read(layout.system(source).outputs).class_names
    with step_lock(layout.locks / f"export-{SYSTEM}.lock", "the outputs of fusion"):
        inputs = {m.split(":")[0]: _ood_id(layout, m.split(":")[0]) for m in members}
        SystemOutputs(SYSTEM, class_names, splits, meta).write(
            system.outputs, {**inputs, "members": data_digest(members)}
        )
    print(
        f"fusion of {members} (weights {', '.join(f'{w:+.2f}' for w in weights.values())}; "
        f"out-of-fold dev EER {100 * eer(fused['dev'], is_ood)[0]:.2f}%) written to {system.outputs}"
    )
    return system.outputs


def _ood_id(layout: ExperimentLayout, system: str) -> str:
    step = OODStep.find(layout.system(system))
    return step.id if step is not None else ""


def _key(cfg: Config, split: str, clip_ids: pd.Index) -> pd.DataFrame:
    """The key columns of the clips (from the member systems' exported outputs)."""
    layout = ExperimentLayout.of(cfg)
    for system in layout.systems():
        if system.name == SYSTEM:
            continue
        outputs = SystemOutputs.read(system.outputs)
        if split in outputs.splits:
            rows = outputs.splits[split].rows.set_index("clip_id")
            if set(clip_ids) <= set(rows.index):
                return rows.loc[list(clip_ids)].reset_index()[KEY_COLUMNS]
    raise MissingInputError(f"no member system's outputs hold every {split} clip of the fusion")
