"""Closed-set (known-system) classification metrics and report files.

Per-class scores use ``zero_division=0``: a class that is never predicted gets precision 0, never
the inflated 1.0 of the original baseline.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import classification_report, confusion_matrix, f1_score


def classification_metrics(
    y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[int] | None = None
) -> dict:
    """Accuracy, balanced accuracy (mean per-class recall) and macro-F1 over ``labels``.

    ``labels`` defaults to the classes present in ``y_true``; predictions of other classes count as
    errors but those classes do not enter the averages.

    >>> m = classification_metrics([0, 0, 1, 1], [0, 0, 0, 1])
    >>> m["accuracy"], m["balanced_accuracy"], round(m["macro_f1"], 4), m["n"]
    (0.75, 0.75, 0.7333, 4)
    >>> round(classification_metrics([0, 0, 1, 1], [0, 0, 0, 0])["macro_f1"], 4)  # class 1 never predicted
    0.3333
    """
    y_true = np.asarray(y_true, dtype=int)
    y_pred = np.asarray(y_pred, dtype=int)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {len(y_true)} items but y_pred has {len(y_pred)}")
    if len(y_true) == 0:
        return {"accuracy": float("nan"), "balanced_accuracy": float("nan"), "macro_f1": float("nan"), "n": 0}
    labels = np.unique(y_true) if labels is None else np.asarray(list(labels), dtype=int)
    recalls = [float(np.mean(y_pred[y_true == c] == c)) for c in labels if np.any(y_true == c)]
    return {
        "accuracy": float(np.mean(y_true == y_pred)),
        "balanced_accuracy": float(np.mean(recalls)) if recalls else float("nan"),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "n": int(len(y_true)),
    }


def write_classification_outputs(
    out_dir: str | Path,
    split: str,
    y_true: Sequence[int],
    y_pred: Sequence[int],
    class_names: Sequence[str],
) -> dict:
    """Write ``<split>_in_domain_results.txt``, ``confusion_<split>.csv`` and ``confusion_<split>.png``.

    ``class_names[i]`` names class id ``i``. The report and the confusion matrix cover every class that
    occurs in ``y_true`` or ``y_pred``; the returned metrics average over the classes in ``y_true``.
    """
    from sourcetracing.plots import plot_confusion

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    y_true = np.asarray(y_true, dtype=int)
    y_pred = np.asarray(y_pred, dtype=int)
    metrics = classification_metrics(y_true, y_pred)
    used = sorted(set(y_true.tolist()) | set(y_pred.tolist()))
    bad = [c for c in used if not 0 <= c < len(class_names)]
    if bad:
        raise ValueError(f"class ids {bad[:5]} have no name ({len(class_names)} class names given)")
    names = [class_names[c] for c in used]

    lines = [
        f"Known-system classification on {split} ({metrics['n']} clips, {len(set(y_true.tolist()))} systems)",
        f"accuracy          {metrics['accuracy']:.4f}",
        f"balanced accuracy {metrics['balanced_accuracy']:.4f}",
        f"macro-F1          {metrics['macro_f1']:.4f}",
        "",
    ]
    if len(y_true):
        lines.append(
            classification_report(y_true, y_pred, labels=used, target_names=names, digits=4, zero_division=0)
        )
    (out_dir / f"{split}_in_domain_results.txt").write_text("\n".join(lines) + "\n")

    matrix = confusion_matrix(y_true, y_pred, labels=used) if len(y_true) else np.zeros((0, 0), dtype=int)
    frame = pd.DataFrame(matrix, index=pd.Index(names, name="true \\ predicted"), columns=names)
    frame.to_csv(out_dir / f"confusion_{split}.csv")
    plot_confusion(matrix, names, out_dir / f"confusion_{split}.png", title=f"{split}: known systems")
    return metrics


def write_metrics_json(path: str | Path, results: dict) -> None:
    """Write ``{"dev": {...}, "eval": {...}}`` metrics as indented JSON."""
    Path(path).write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
