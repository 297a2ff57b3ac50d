"""How far apart a few systems are under whole-clip statistics: a diagnostic for a benchmark's design
and for reading a system's confusions.

Given the statistics of the clean clips of two or more systems (the statistics system's groups,
:mod:`sourcetracing.systems.utterance_features`), it reports the stratified k-fold accuracy of a
standardised logistic regression at a few regularisation strengths against the majority-class
rate (chance), and the statistics that differ most between the systems: for two systems the
sensitivity index d′ = |mean difference| / pooled standard deviation, for more the ratio of
between-system to within-system variance (Fisher's ratio; for two equal-sized systems it is d′²/4).
When a logistic regression on every statistic stays near chance, no linear read-out of those
statistics can tell the systems apart, and a macro-F1 that includes both is capped accordingly.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> x = np.concatenate([rng.normal(0, 1, (40, 3)), rng.normal(0, 1, (40, 3)) + [6, 0, 0]])
>>> report = separability(x, np.repeat(["a", "b"], 40), ["far", "same1", "same2"])
>>> report.top[0][0], report.best_accuracy > 0.95, report.chance
('far', True, 0.5)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sourcetracing.errors import DataError

DEFAULT_CS: tuple[float, ...] = (0.01, 0.1, 1.0)


@dataclass(frozen=True)
class SeparabilityReport:
    """Cross-validated accuracy per regularisation strength and the most separating statistics."""

    systems: tuple[str, ...]
    counts: tuple[int, ...]
    n_folds: int
    accuracy: dict[float, float]  # C -> mean accuracy over folds
    chance: float
    index_name: str  # "d'" (two systems) or "Fisher ratio"
    top: list[tuple[str, float, list[float]]]  # (statistic, index, per-system means)

    @property
    def best_accuracy(self) -> float:
        return max(self.accuracy.values())

    def to_markdown(self) -> str:
        lines = [
            "| system | clips |",
            "| --- | --- |",
            *[f"| {s} | {n} |" for s, n in zip(self.systems, self.counts, strict=True)],
            "",
            f"Logistic regression on every statistic (standardised), {self.n_folds}-fold accuracy "
            f"(chance {self.chance:.3f}):",
            "",
            "| C | accuracy |",
            "| --- | --- |",
            *[f"| {c:g} | {a:.3f} |" for c, a in self.accuracy.items()],
            "",
            f"Statistics that differ most ({self.index_name}; per-system means in the order above):",
            "",
            f"| statistic | {self.index_name} | means |",
            "| --- | --- | --- |",
            *[f"| {n} | {v:.2f} | {' / '.join(f'{m:.4g}' for m in means)} |" for n, v, means in self.top],
        ]
        return "\n".join(lines) + "\n"


def _index(x: np.ndarray, y: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, str, np.ndarray]:
    """Per statistic: d′ (two systems) or Fisher's ratio, its name, and the per-system means."""
    groups = [x[y == c] for c in classes]
    means = np.stack([g.mean(axis=0) for g in groups])
    within = np.stack([g.var(axis=0, ddof=1) for g in groups])
    if len(classes) == 2:
        pooled = np.sqrt(within.mean(axis=0))
        return np.abs(means[0] - means[1]) / np.maximum(pooled, 1e-12), "d'", means
    sizes = np.array([len(g) for g in groups], dtype=float)
    between = (sizes[:, None] * (means - x.mean(axis=0)) ** 2).sum(axis=0) / sizes.sum()
    within_pooled = (sizes[:, None] * within).sum(axis=0) / sizes.sum()
    return between / np.maximum(within_pooled, 1e-12), "Fisher ratio", means


def separability(
    x: np.ndarray,
    labels: Sequence[str],
    names: Sequence[str],
    n_folds: int = 5,
    cs: Sequence[float] = DEFAULT_CS,
    top: int = 8,
    seed: int = 0,
) -> SeparabilityReport:
    """Separability of the systems in ``labels`` under the statistics ``x`` (one row per clip)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(labels)
    if x.ndim != 2 or len(x) != len(y) or x.shape[1] != len(names):
        raise DataError(f"statistics {x.shape}, {len(y)} labels and {len(names)} names do not match")
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise DataError("separability needs clips of at least two systems")
    if counts.min() < n_folds:
        raise DataError(
            f"{classes[counts.argmin()]} has {counts.min()} clip(s), fewer than the {n_folds} folds"
        )
    folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    accuracy = {}
    for c in cs:
        model = make_pipeline(StandardScaler(), LogisticRegression(C=float(c), max_iter=5000))
        accuracy[float(c)] = float(cross_val_score(model, x, y, cv=folds).mean())
    index, index_name, means = _index(x, y, classes)
    order = np.argsort(-np.nan_to_num(index, nan=-1.0))[:top]
    ranked = [(str(names[i]), float(index[i]), means[:, i].tolist()) for i in order]
    return SeparabilityReport(
        systems=tuple(str(c) for c in classes),
        counts=tuple(int(n) for n in counts),
        n_folds=n_folds,
        accuracy=accuracy,
        chance=float(counts.max() / counts.sum()),
        index_name=index_name,
        top=ranked,
    )
