"""PNG plots (matplotlib, Agg backend): training curves and confusion matrices."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """Lay out, write as PNG (creating the folder) and close a figure; returns the path."""
    path = Path(path)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def plot_training_curves(
    metrics: pd.DataFrame, path: str | Path, title: str = "training", extras: Sequence[str] = ()
) -> Path:
    """Per epoch: the losses (``*_loss``), accuracies / F1 (``*_acc*``, ``*_f1``), and the learning rate
    (or the ``extras`` columns, e.g. GE2E's w and b) from a ``metrics.csv`` frame."""
    path = Path(path)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    ep = metrics["epoch"]
    losses = [c for c in metrics.columns if c.endswith("_loss")]
    scores = [c for c in metrics.columns if "_acc" in c or c.endswith("_f1")]
    for ax, cols, name in ((axes[0], losses, "loss"), (axes[1], scores, "accuracy / F1")):
        for col in cols:
            ax.plot(ep, metrics[col], marker="o", ms=3, label=col.replace("_", " "))
        ax.set_title(name)
        if cols:
            ax.legend()
    axes[1].set_ylim(0, 1.02)
    ax = axes[2]
    if extras:
        for col in extras:
            ax.plot(ep, metrics[col], marker="o", ms=3, label=col)
        ax.set_title(" / ".join(extras))
        ax.legend()
    elif "lr" in metrics:
        ax.plot(ep, metrics["lr"], marker="o", ms=3, drawstyle="steps-post")
        ax.set_yscale("log")
        ax.set_title("learning rate")
    for a in axes:
        a.grid(alpha=0.3)
        a.set_xlabel("epoch")
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title)
    return save_figure(fig, path)


def plot_confusion(
    matrix: np.ndarray, names: Sequence[str], path: str | Path, title: str = "", normalize: bool = True
) -> Path:
    """A confusion matrix (rows true, columns predicted); cells show counts, colours row-normalised rates."""
    path = Path(path)
    matrix = np.asarray(matrix)
    n = len(names)
    size = max(4.0, 0.45 * n + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    rows = matrix.sum(axis=1, keepdims=True) if n else np.ones((0, 1))
    rates = matrix / np.maximum(rows, 1) if normalize else matrix
    im = ax.imshow(rates if n else np.zeros((1, 1)), cmap="Blues", vmin=0, vmax=1 if normalize else None)
    short = [s if len(s) <= 32 else "…" + s[-31:] for s in names]
    ax.set_xticks(range(n), short, rotation=70, ha="right", fontsize=7)
    ax.set_yticks(range(n), short, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    colour = "white" if rates[i, j] > 0.5 else "black"
                    ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=6, color=colour)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="row rate" if normalize else "count")
    ax.set_title(title)
    return save_figure(fig, path)
