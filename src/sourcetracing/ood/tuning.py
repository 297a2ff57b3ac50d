"""Choosing a scorer's settings (k of k-NN, a temperature) without ever looking at eval.

``ood.tune`` picks how:

- ``none``: the config's settings (``ood.<scorer>``) as they are;
- ``dev``: every candidate setting (the scorer class's ``tunable`` grid) is fitted on train and the
  one with the lowest dev EER (ties: the higher dev AUROC) is kept;
- ``holdout``: training-time hold-out of known systems as pseudo-unseen, so not even dev's unseen
  systems are looked at: for each known system in turn, the scorer is fitted on the train clips of
  the *other* known systems minus a fifth of them, and scores the held-out system's clips
  (pseudo-unseen) against that fifth (pseudo-known); the setting with the best mean AUROC over the
  held-out systems wins. Only scorers fitted on embeddings can be tuned this way (a logit scorer
  would need the model retrained without the held-out system); the others keep their settings.
  The held-out system is out of the scorer's fit but not out of the embedding's.
- ``crossfit``: where the system's outputs carry train-side cross-fitted evidence (the statistics
  systems refit without each held-out known system, :mod:`sourcetracing.ood.crossfit`), the setting
  with the best mean AUROC over those held-out systems, logit scorers included; elsewhere as
  ``holdout``.

The chosen settings and the table of candidates are recorded in the OOD step's ``thresholds.json``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sourcetracing.components import SCORERS
from sourcetracing.ood.metrics import auroc, eer
from sourcetracing.ood.scorers import candidates, tunable_grid

MODES = ("none", "dev", "holdout", "crossfit")


def _holdout_auroc(
    name: str, options: dict, emb: np.ndarray, logits, labels: np.ndarray, seed: int = 0
) -> float:
    from sourcetracing.ood.scorers import build_scorer

    rng = np.random.default_rng(seed)
    known_share = rng.random(len(labels)) < 0.2
    aucs = []
    for held in np.unique(labels[labels >= 0]):
        out = labels == held
        bank = ~out & ~known_share
        test = out | (known_share & ~out)
        remaining = np.unique(labels[bank])
        if len(remaining) < 2 or not (known_share & ~out).any():
            continue
        relabel = np.searchsorted(remaining, labels[bank])  # the fitted scorer sees classes 0..K-2
        bank_logits = None if logits is None else logits[bank]
        try:
            scorer = build_scorer(name, **options).fit(emb[bank], bank_logits, relabel)
        except ValueError:
            return float("nan")
        test_logits = None if logits is None else logits[test]
        scores = scorer.score(emb[test], test_logits)
        aucs.append(auroc(scores, out[test]))
    return float(np.nanmean(aucs)) if aucs else float("nan")


def _crossfit_choice(name: str, grid: list[dict[str, Any]], crossfit) -> tuple[dict, list[dict]] | None:
    """The setting with the best mean cross-fitted AUROC and the table (None without evidence)."""
    from sourcetracing.ood.crossfit import aurocs_of, mean_auroc

    tunable = tunable_grid(name)
    table = []
    for setting in grid:
        values = aurocs_of(crossfit, name, setting)
        if values:
            row = {k: setting[k] for k in sorted(tunable) if k in setting}
            table.append({**row, "crossfit_auroc": mean_auroc(values), "_setting": setting})
    if not table:
        return None
    best = max(table, key=lambda r: -np.inf if np.isnan(r["crossfit_auroc"]) else r["crossfit_auroc"])
    return dict(best["_setting"]), [{k: v for k, v in r.items() if k != "_setting"} for r in table]


def tune(
    name: str, options: dict[str, Any], mode: str, train, dev, crossfit=None
) -> tuple[dict[str, Any], list[dict]]:
    """The settings to use for scorer ``name`` and the table of what each candidate scored.

    ``train`` and ``dev`` are :class:`~sourcetracing.systems.outputs.SplitOutputs`; eval is never
    passed. ``crossfit``: the outputs' cross-fitted evidence table (mode ``crossfit``).
    """
    from sourcetracing.ood.scorers import build_scorer

    if mode not in MODES:
        raise ValueError(f"ood.tune must be one of {MODES}, got {mode!r}")
    grid = candidates(name, options)
    if mode == "crossfit":
        chosen = _crossfit_choice(name, grid, crossfit)
        if chosen is not None:
            return chosen
        mode = "holdout"
    needs = set(SCORERS.get(name).needs)
    if mode == "none" or len(grid) == 1 or (mode == "holdout" and "logits" in needs):
        return dict(options), []
    labels = train.rows["label"].to_numpy(int)
    tunable = tunable_grid(name)
    table = []
    for setting in grid:  # each row names its tunable settings, also where they equal the options
        tuned = {k: v for k, v in setting.items() if k in tunable or k not in options or options[k] != v}
        if mode == "dev":
            scorer = build_scorer(name, **setting).fit(train.embeddings, train.logits, labels)
            s = scorer.score(dev.embeddings, dev.logits)
            is_ood = dev.is_ood
            table.append(
                {**tuned, "dev_eer": eer(s, is_ood)[0], "dev_auroc": auroc(s, is_ood), "_setting": setting}
            )
        else:
            value = _holdout_auroc(name, setting, train.embeddings, train.logits, labels)
            table.append({**tuned, "holdout_auroc": value, "_setting": setting})
    if mode == "dev":
        best = min(table, key=lambda r: (r["dev_eer"], -r["dev_auroc"]))
    else:
        best = max(table, key=lambda r: -np.inf if np.isnan(r["holdout_auroc"]) else r["holdout_auroc"])
    chosen = best["_setting"]
    return dict(chosen), [{k: v for k, v in r.items() if k != "_setting"} for r in table]
