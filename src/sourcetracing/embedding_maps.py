"""Embeddings of any system, from its exported outputs: the original's per-file layout and 2-D maps.

* ``scripts/generate_embeddings.py --config X --system ge2e [--layout original]`` writes, from
  ``<exp>/<system>/outputs/``, ``<exp>/<system>/embeddings/<split>.npz`` + ``<split>.csv`` and with
  ``--layout original`` also the original baseline's ``<root>/<split>/<system_id>/<file>.npy``
  (one float32 vector per clip; ``system_id`` as in ``label_map.csv``).
* ``scripts/plot_embeddings.py --config X --system ge2e`` draws ``embedding_map.png``: UMAP when
  ``umap-learn`` is installed, t-SNE otherwise; colour per system, marker per split, unseen systems
  outlined in black.

No model runs here: the embeddings come from the outputs every system exported once.
"""

from __future__ import annotations

import logging
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from sourcetracing.data.protocols import LabelMap
from sourcetracing.errors import ConfigError, DataError, MissingInputError
from sourcetracing.systems.outputs import SystemOutputs, systems_with

log = logging.getLogger(__name__)

INDEX_COLUMNS = ["clip_id", "model_name", "label", "system_id", "known", "language", "cell"]
SPLIT_MARKERS = {"train": "o", "dev": "^", "eval": "s"}


def chosen_systems(cfg, name: str) -> list[str]:
    """``[name]``, or for ``all`` every system of the experiment whose exported outputs carry
    embeddings, whatever its name (stage 9 maps them all)."""
    from sourcetracing.layout import ExperimentLayout

    if name != "all":
        return [name]
    systems = [s.name for s in systems_with(ExperimentLayout.of(cfg), "embeddings")]
    if not systems:
        raise MissingInputError(
            f"no system in {cfg.exp_dir} has exported embeddings: run the training or export steps first"
        )
    return systems


def system_ids(models: pd.Series, label_map: LabelMap) -> np.ndarray:
    """label_map.csv's ``system_id`` of each system: the class id (known) or ``num_classes + i`` (OOD); -1 if absent.

    >>> lm = LabelMap(known=["a", "b"], ood=["x", "y"])
    >>> system_ids(pd.Series(["b", "y", "q"]), lm).tolist()
    [1, 3, -1]
    """
    ids = {name: i for i, name in enumerate(label_map.known)}
    ids.update({name: label_map.num_classes + i for i, name in enumerate(label_map.ood)})
    return np.array([ids.get(m, -1) for m in models], dtype=int)


def write_split(
    out_dir: Path,
    split: str,
    emb: np.ndarray,
    rows: pd.DataFrame,
    label_map: LabelMap,
    logits: np.ndarray | None = None,
) -> pd.DataFrame:
    """Write ``<split>.npz`` (embeddings, labels, system_ids, logits) + ``<split>.csv``; returns the index."""
    out_dir.mkdir(parents=True, exist_ok=True)
    index = rows.reset_index(drop=True).copy()
    index["system_id"] = system_ids(index["model_name"], label_map)
    missing = sorted(set(index.loc[index["system_id"] < 0, "model_name"]))
    if missing:
        log.warning("%s: system(s) not in the label map get system_id -1: %s", split, missing[:10])
    arrays = {
        "embeddings": np.asarray(emb, dtype=np.float32),
        "labels": index["label"].to_numpy(dtype=int),
        "system_ids": index["system_id"].to_numpy(dtype=int),
    }
    if logits is not None:
        arrays["logits"] = np.asarray(logits, dtype=np.float32)
    np.savez(out_dir / f"{split}.npz", **arrays)
    index[INDEX_COLUMNS].to_csv(out_dir / f"{split}.csv", index=False)
    return index


def write_original_layout(root: Path, split: str, emb: np.ndarray, index: pd.DataFrame) -> int:
    """``<root>/<split>/<system_id>/<file>.npy``, the original baseline's layout; returns the file count.

    The file name is the clip's file stem; a stem seen twice in one folder gets the flattened clip id.
    """
    used: set[Path] = set()
    for vec, clip_id, sys_id in zip(emb, index["clip_id"], index["system_id"], strict=True):
        folder = root / split / str(int(sys_id))
        path = folder / f"{PurePosixPath(str(clip_id)).stem}.npy"
        if path in used:
            path = folder / (str(clip_id).replace("/", "__").rsplit(".", 1)[0] + ".npy")
        used.add(path)
        folder.mkdir(parents=True, exist_ok=True)
        np.save(path, np.asarray(vec, dtype=np.float32))
    return len(used)


def export_embeddings(
    outputs: SystemOutputs, label_map: LabelMap, out: Path, original_root: Path | None = None
) -> dict[str, int]:
    """Write every split's embeddings (and the original layout under ``original_root``); returns row counts."""
    counts = {}
    for split, part in outputs.splits.items():
        if part.embeddings is None:
            raise DataError(f"{outputs.system} exports no embeddings")
        index = write_split(out, split, part.embeddings, part.rows, label_map, part.logits)
        if original_root is not None:
            write_original_layout(original_root, split, part.embeddings, index)
        counts[split] = len(index)
    return counts


# ----------------------------------------------------------------------------------------------
# 2-D map


def load_embeddings(directory: Path) -> tuple[np.ndarray, pd.DataFrame]:
    """All ``<split>.npz`` + ``<split>.csv`` pairs in a folder, stacked, with a ``split`` column."""
    embs, frames = [], []
    order = {"train": 0, "dev": 1, "eval": 2}
    for npz in sorted(Path(directory).glob("*.npz"), key=lambda p: (order.get(p.stem, 3), p.stem)):
        csv = npz.with_suffix(".csv")
        if not csv.is_file():
            continue
        emb = np.load(npz)["embeddings"]
        frame = pd.read_csv(csv, keep_default_na=False)
        if len(frame) != len(emb):
            raise DataError(f"{npz}: {len(emb)} embeddings but {len(frame)} index rows")
        frame["split"] = npz.stem
        frame["known"] = frame["known"].astype(str).str.lower() == "true"
        embs.append(emb)
        frames.append(frame)
    if not embs:
        raise MissingInputError(
            f"no <split>.npz + <split>.csv embeddings in {directory}: run scripts/generate_embeddings.py"
        )
    return np.concatenate(embs).astype(np.float32), pd.concat(frames, ignore_index=True)


def project_2d(emb: np.ndarray, method: str = "auto", seed: int = 0) -> tuple[np.ndarray, str]:
    """2-D coordinates by UMAP (when installed) or t-SNE (scikit-learn), on unit-length embeddings."""
    x = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    if method in ("auto", "umap"):
        try:
            import umap  # type: ignore[import-not-found]

            reducer = umap.UMAP(
                n_components=2, metric="cosine", random_state=seed, n_neighbors=min(15, len(x) - 1)
            )
            return reducer.fit_transform(x), "umap"
        except ImportError:
            if method == "umap":
                raise ImportError(
                    "--method umap needs umap-learn (pip install umap-learn); or use --method tsne"
                ) from None
    if method not in ("auto", "umap", "tsne"):
        raise ConfigError(f"unknown method {method!r}; choose auto, umap or tsne")
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3.0)))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", metric="cosine", random_state=seed)
    return tsne.fit_transform(x), "tsne"


def plot_map(
    emb: np.ndarray,
    frame: pd.DataFrame,
    out: Path,
    method: str = "auto",
    max_points: int = 3000,
    seed: int = 0,
    title: str | None = None,
) -> Path:
    """Draw the 2-D map as a PNG; subsamples to ``max_points`` (seeded)."""
    from matplotlib.lines import Line2D

    from sourcetracing.plots import plt, save_figure

    rng = np.random.default_rng(seed)
    if len(emb) > max_points:
        keep = np.sort(rng.choice(len(emb), size=max_points, replace=False))
        emb, frame = emb[keep], frame.iloc[keep].reset_index(drop=True)
    if len(emb) < 4:
        raise DataError(f"need at least 4 points to draw a map, got {len(emb)}")
    xy, used = project_2d(emb, method, seed)

    systems = sorted(
        frame["model_name"].unique(), key=lambda s: (not frame.loc[frame.model_name == s, "known"].iloc[0], s)
    )
    cmap = plt.get_cmap("tab20")
    colour = {s: cmap(i % 20) for i, s in enumerate(systems)}
    fig, ax = plt.subplots(figsize=(11, 8))
    for split in dict.fromkeys(frame["split"]):
        marker = SPLIT_MARKERS.get(split, "D")
        for known in (True, False):
            sel = ((frame["split"] == split) & (frame["known"] == known)).to_numpy()
            if not sel.any():
                continue
            ax.scatter(
                xy[sel, 0],
                xy[sel, 1],
                s=22 if known else 34,
                marker=marker,
                alpha=0.75,
                c=[colour[m] for m in frame.loc[sel, "model_name"]],
                edgecolors="black" if not known else "none",
                linewidths=0.9 if not known else 0.0,
            )
    handles = [
        Line2D([], [], marker=SPLIT_MARKERS.get(s, "D"), ls="", color="grey", label=s)
        for s in dict.fromkeys(frame["split"])
    ]
    handles.append(
        Line2D(
            [],
            [],
            marker="o",
            ls="",
            color="white",
            markeredgecolor="black",
            label="unseen system (outlined)",
        )
    )
    if len(systems) <= 30:
        handles += [
            Line2D(
                [],
                [],
                marker="o",
                ls="",
                color=colour[s],
                label=s + ("" if frame.loc[frame.model_name == s, "known"].iloc[0] else " (unseen)"),
            )
            for s in systems
        ]
    ax.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.set_title(title or f"embeddings ({used}, {len(emb)} points)")
    ax.set_xticks([])
    ax.set_yticks([])
    return save_figure(fig, out)


def map_from_outputs(
    outputs: SystemOutputs,
    out: Path,
    method: str = "auto",
    max_points: int = 3000,
    seed: int = 0,
    splits=None,
) -> Path:
    """Draw the 2-D map of a system's exported embeddings."""
    embs, frames = [], []
    for split, part in outputs.splits.items():
        if splits and split not in splits:
            continue
        if part.embeddings is None:
            raise DataError(f"{outputs.system} exports no embeddings to map")
        embs.append(part.embeddings)
        frames.append(part.rows.assign(split=split))
    frame = pd.concat(frames, ignore_index=True)
    return plot_map(
        np.concatenate(embs), frame, out, method, max_points, seed, title=f"{outputs.system} embeddings"
    )
