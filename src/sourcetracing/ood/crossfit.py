"""Train-side cross-fitting: unseen-system evidence from the known systems themselves.

Dev holds only a handful of unseen systems; a choice ranked on them alone rewards whatever separates
those few. A system that can be refitted cheaply (the statistics systems: a standardiser, a shrinkage
LDA and a logistic regression; the hybrid network: a small MLP on pooled vectors) gives more
evidence from the training side: each known system in turn
is **held out of the fit entirely** (all its clips and augmented copies) together with a seeded fifth
of the other known systems' clips; the system is refitted on what is left, and every OOD scorer
(each candidate setting) is fitted on the refitted system's train outputs and scores the held-out
clips: the held-out system's originals are pseudo-unseen, the fifth's originals pseudo-known. One
AUROC per (scorer, setting, held-out system), written as ``crossfit.csv`` beside the outputs
(:data:`sourcetracing.systems.outputs.CROSSFIT_FILE`).

Unlike ``ood.tune: holdout`` (which holds systems out of the scorer but not of the embedding, so a
learned projection has already seen them), nothing fitted in a fold has seen its pseudo-unseen
system. ``ood.tune: crossfit`` picks scorer settings on this evidence and ``ood.select:
unseen_auroc`` weighs every held-out system like a dev-unseen one when choosing the scorer and the
dev-chosen system (:func:`sourcetracing.ood.report.select_on_dev`). Eval is never read.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from sourcetracing.ood.metrics import auroc

COLUMNS = ["scorer", "setting", "held_out", "auroc", "n_unseen", "n_known"]
KNOWN_SHARE = 0.2  # of the other known systems' clips, held out as pseudo-known

FitApply = Callable[
    [np.ndarray, np.ndarray, pd.DataFrame], Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]
]


@dataclass(frozen=True)
class Fold:
    """One held-out known system: which train rows the refit sees and which it is tested on."""

    held_out: int  # the class id held out
    fit: np.ndarray  # bool over rows: fitted on (every version)
    unseen: np.ndarray  # bool over rows: the held-out system's originals
    known: np.ndarray  # bool over rows: the pseudo-known share's originals


def folds(labels: np.ndarray, clip_ids: np.ndarray, original: np.ndarray, seed: int = 0) -> Iterator[Fold]:
    """One fold per known class with at least one original clip; the pseudo-known share is drawn per
    clip (all versions of a clip go together), seeded, the same for every fold.

    >>> labels = np.repeat([0, 1, 2], 10); ids = np.arange(30).astype(str)
    >>> [f.held_out for f in folds(labels, ids, np.ones(30, bool))]
    [0, 1, 2]
    """
    uniq, inverse = np.unique(clip_ids, return_inverse=True)
    share = np.random.default_rng(seed).random(len(uniq)) < KNOWN_SHARE
    in_share = share[inverse]
    for held in np.unique(labels[labels >= 0]):
        out = labels == held
        fit = ~out & ~in_share & (labels >= 0)
        known = in_share & ~out & original
        if len(np.unique(labels[fit])) < 2 or not known.any():
            continue
        yield Fold(int(held), fit, out & original, known)


def setting_key(name: str, setting: dict[str, Any]) -> str:
    """The tunable part of a setting of scorer ``name`` as one comparable string.

    >>> setting_key("knn", {"k": 5, "chunk_size": 4096})
    '{"k": 5}'
    """
    from sourcetracing.ood.scorers import tunable_grid

    tunable = sorted(tunable_grid(name))
    return json.dumps({k: setting[k] for k in tunable if k in setting}, sort_keys=True, default=str)


def crossfit_table(
    fit_apply: FitApply,
    x: np.ndarray,
    rows: pd.DataFrame,
    scorers: dict[str, list[dict[str, Any]]],
    class_names: list[str],
    seed: int = 0,
) -> pd.DataFrame:
    """The AUROC of every scorer setting on every held-out known system (:data:`COLUMNS`).

    ``fit_apply(x_fit, y_fit, rows_fit)`` refits the system on classes ``0..K'-1`` (``rows_fit``: the
    fitted rows of ``rows``) and returns a function mapping features to ``(embeddings, logits or
    None)``; ``rows`` (train, row-aligned with ``x``)
    needs ``label`` and ``clip_id`` (and ``version``: only ``original`` rows are tested);
    ``scorers`` maps a scorer name to its candidate settings.
    """
    from sourcetracing.ood.scorers import applicable, build_scorer
    from sourcetracing.progress import progress

    labels = rows["label"].to_numpy(int)
    original = (rows["version"] == "original").to_numpy() if "version" in rows else np.ones(len(rows), bool)
    out = []
    all_folds = list(folds(labels, rows["clip_id"].astype(str).to_numpy(), original, seed))
    for fold in progress(all_folds, desc="cross-fitting (known systems held out)", leave=False):
        remaining = np.unique(labels[fold.fit])
        relabel = np.searchsorted(remaining, labels[fold.fit])
        apply = fit_apply(x[fold.fit], relabel, rows[fold.fit])
        bank_emb, bank_logits = apply(x[fold.fit])
        test = fold.unseen | fold.known
        test_emb, test_logits = apply(x[test])
        is_unseen = fold.unseen[test]
        has = {"embeddings"} if bank_logits is None else {"embeddings", "logits"}
        for name, grid in scorers.items():
            if not applicable(name, has):
                continue
            for setting in grid:
                try:
                    scorer = build_scorer(name, **setting).fit(bank_emb, bank_logits, relabel)
                    value = auroc(scorer.score(test_emb, test_logits), is_unseen)
                except ValueError:
                    value = float("nan")
                out.append(
                    {
                        "scorer": name, "setting": setting_key(name, setting),
                        "held_out": class_names[fold.held_out], "auroc": float(value),
                        "n_unseen": int(is_unseen.sum()), "n_known": int((~is_unseen).sum()),
                    }
                )  # fmt: skip
    return pd.DataFrame(out, columns=COLUMNS)


def crossfit_scorers(ood_cfg: Any, logits: str | None) -> dict[str, list[dict[str, Any]]]:
    """Scorer name -> every candidate setting of the configured scorers that apply to a system
    exporting embeddings and logits of kind ``logits``."""
    from sourcetracing.ood.scorers import applicable, candidates, scorer_options

    return {
        name: candidates(name, scorer_options(ood_cfg, name))
        for name in ood_cfg.scorers
        if applicable(name, {"embeddings", "logits"}, logits)
    }


def aurocs_of(table: pd.DataFrame | None, name: str, setting: dict[str, Any]) -> dict[str, float]:
    """Held-out system -> AUROC of scorer ``name`` at ``setting`` (empty without evidence for it)."""
    if table is None or table.empty:
        return {}
    part = table[(table["scorer"] == name) & (table["setting"] == setting_key(name, setting))]
    return {str(h): float(a) for h, a in zip(part["held_out"], part["auroc"], strict=True)}


def mean_auroc(values: dict[str, float]) -> float:
    """The mean over held-out systems (NaN when there are none)."""
    finite = [v for v in values.values() if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")
